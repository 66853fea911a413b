//! Change notification: an in-process signal raised right after each commit,
//! and a watcher that polls `PRAGMA data_version` for commits made by other
//! processes to the same file.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use eskit_core::Position;
use rusqlite::Connection;

use crate::oneshot;

/// Most live [`Subscription`]s one notifier serves.
pub const MAX_SUBSCRIBERS: usize = 1024;

/// Shortest poll interval [`SqliteStore::watch_external_writes`](crate::SqliteStore::watch_external_writes) accepts.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Wakes subscribers when the store changes. Cloning shares the notifier.
///
/// Every commit through the store signals it with the newest position before
/// the append's future completes, so a subscriber never polls in the common
/// case. A wake-up is a hint: read from your checkpoint to see what changed.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    position: Position,
    generation: u64,
    next_id: u64,
    wakers: HashMap<u64, Option<Waker>>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("Notifier")
            .field("position", &s.position)
            .field("generation", &s.generation)
            .field("subscribers", &s.wakers.len())
            .finish()
    }
}

/// [`Notifier::subscribe`] was refused: [`MAX_SUBSCRIBERS`] are live.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the notifier already serves {MAX_SUBSCRIBERS} subscribers")]
pub struct TooManySubscribers;

impl Notifier {
    /// A notifier with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections only assign plain values; a poisoned lock still
        // guards consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest position signalled so far.
    pub fn latest(&self) -> Position {
        self.lock().position
    }

    /// Signals a change: the newest position is now at least `position`.
    /// Every subscriber wakes, also when the position did not move (a change
    /// relay entry, a write seen from another process).
    pub fn notify(&self, position: Position) {
        let wakers: Vec<Waker> = {
            let mut s = self.lock();
            s.position = s.position.max(position);
            s.generation = s.generation.wrapping_add(1);
            s.wakers.values_mut().filter_map(Option::take).collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// A new subscriber; its first [`Subscription::changed`] waits for the
    /// next signal.
    ///
    /// # Errors
    /// [`TooManySubscribers`] when [`MAX_SUBSCRIBERS`] are live.
    pub fn subscribe(&self) -> Result<Subscription, TooManySubscribers> {
        let mut s = self.lock();
        if s.wakers.len() >= MAX_SUBSCRIBERS {
            return Err(TooManySubscribers);
        }
        let id = s.next_id;
        s.next_id += 1;
        s.wakers.insert(id, None);
        Ok(Subscription {
            notifier: self.clone(),
            id,
            seen: s.generation,
        })
    }
}

/// One subscriber of a [`Notifier`]; dropping it frees its slot.
#[derive(Debug)]
pub struct Subscription {
    notifier: Notifier,
    id: u64,
    seen: u64,
}

impl Subscription {
    /// Waits for the next signal after the last one this subscription saw
    /// and returns the newest position. Signals that arrive while nobody
    /// waits are coalesced into one wake-up.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses no signal; the next call
    /// returns at once if a signal arrived meanwhile.
    pub fn changed(&mut self) -> Changed<'_> {
        Changed { sub: self }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.notifier.lock().wakers.remove(&self.id);
    }
}

/// The future of [`Subscription::changed`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Changed<'a> {
    sub: &'a mut Subscription,
}

impl Future for Changed<'_> {
    type Output = Position;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Position> {
        let this = self.get_mut();
        let notifier = this.sub.notifier.clone();
        let mut s = notifier.lock();
        if s.generation != this.sub.seen {
            this.sub.seen = s.generation;
            return Poll::Ready(s.position);
        }
        s.wakers.insert(this.sub.id, Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// Polls `PRAGMA data_version` on its own connection and signals the store's
/// [`Notifier`] when another process committed to the same file. Dropping it
/// stops the thread without waiting; [`ExternalWatcher::shutdown`] waits.
#[derive(Debug)]
pub struct ExternalWatcher {
    stop: Option<mpsc::Sender<()>>,
    exited: Option<oneshot::Receiver<()>>,
}

impl ExternalWatcher {
    pub(crate) fn idle() -> Self {
        Self {
            stop: None,
            exited: None,
        }
    }

    pub(crate) fn start(
        conn: Connection,
        interval: Duration,
        notifier: Notifier,
    ) -> std::io::Result<Self> {
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (exit_tx, exited) = oneshot::channel();
        thread::Builder::new()
            .name("eskit-sqlite-watch".into())
            .spawn(move || {
                watch(&conn, interval, &notifier, &stop_rx);
                drop(conn);
                exit_tx.send(());
            })?;
        Ok(Self {
            stop: Some(stop),
            exited: Some(exited),
        })
    }

    /// Stops polling and waits until the thread has ended.
    ///
    /// # Cancel safety
    /// Cancel safe: the thread stops either way.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(exited) = self.exited.take() {
            // The thread ending without a signal also means it stopped.
            let _ = exited.await;
        }
    }
}

fn watch(conn: &Connection, interval: Duration, notifier: &Notifier, stop: &mpsc::Receiver<()>) {
    let probe = |conn: &Connection| -> rusqlite::Result<(i64, i64, i64)> {
        let dv: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let (pos, change): (i64, i64) = conn.query_row(
            "SELECT coalesce((SELECT max(position) FROM eskit_events), 0), \
             coalesce((SELECT max(id) FROM eskit_changes), 0)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((dv, pos, change))
    };
    let mut last = probe(conn).ok();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        // A failed probe (the file is locked or damaged) is retried at the
        // next tick; readers see the failure themselves.
        let Ok(now) = probe(conn) else { continue };
        let changed = match last {
            None => true,
            Some((dv, pos, change)) => {
                now.0 != dv
                    && (now.1 != pos
                        || now.2 != change
                        || u64::try_from(now.1).unwrap_or(0) > notifier.latest().get())
            }
        };
        last = Some(now);
        if changed {
            notifier.notify(Position::new(u64::try_from(now.1).unwrap_or(0)));
        }
    }
}
