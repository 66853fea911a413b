//! Change notification beyond the process: a watcher that polls `PRAGMA
//! data_version` for commits made by other processes to the same file and
//! signals the store's commit feed (core's [`CommitNotifier`], raised in
//! process right after each commit).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use eskit_core::{backend::CommitNotifier, event::Position};
use rusqlite::Connection;

use crate::oneshot;

/// Shortest poll interval [`SqliteStore::watch_external_writes`](crate::SqliteStore::watch_external_writes) accepts.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Polls `PRAGMA data_version` on its own connection and signals the store's
/// commit feed when another process committed to the same file. Dropping it
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
        notifier: CommitNotifier,
    ) -> std::io::Result<Self> {
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (exit_tx, exited) = oneshot::channel();
        // The first reading is taken before this returns, so every commit
        // made after `watch_external_writes` returned is heard.
        let first = probe(&conn).ok();
        thread::Builder::new()
            .name("eskit-sqlite-watch".into())
            .spawn(move || {
                watch(&conn, interval, &notifier, &stop_rx, first);
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

/// Consecutive failed probes after which the feed reports itself broken.
const BROKEN_AFTER_FAILED_PROBES: u32 = 3;

/// `PRAGMA data_version`, the newest position and the newest change id.
fn probe(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    let dv: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
    let (pos, change): (i64, i64) = conn.query_row(
        "SELECT coalesce((SELECT max(position) FROM eskit_events), 0), \
         coalesce((SELECT max(id) FROM eskit_changes), 0)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((dv, pos, change))
}

fn watch(
    conn: &Connection,
    interval: Duration,
    notifier: &CommitNotifier,
    stop: &mpsc::Receiver<()>,
    first: Option<(i64, i64, i64)>,
) {
    let mut last = first;
    let mut failures = 0u32;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        // A failed probe (the file is locked or damaged) is retried at the
        // next tick; readers see the failure themselves. Several in a row
        // mean other processes' commits may go unheard: the feed says so,
        // and its repair wakes every listener to read again.
        let now = match probe(conn) {
            Ok(now) => now,
            Err(e) => {
                failures += 1;
                if failures == BROKEN_AFTER_FAILED_PROBES {
                    notifier.break_feed(format!("watching other processes' commits failed: {e}"));
                }
                continue;
            }
        };
        if failures >= BROKEN_AFTER_FAILED_PROBES {
            notifier.repair();
        }
        failures = 0;
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
