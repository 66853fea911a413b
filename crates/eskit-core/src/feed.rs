//! The commit feed: how a subscriber learns that the log changed without
//! polling. Every backend implements [`CommitFeed`]; [`CommitNotifier`] is the
//! in-process implementation backends build theirs on.
//!
//! A wake-up is a hint, never data: after it, read from your cursor to see
//! what changed. Signals coalesce (ten commits while nobody listened give one
//! wake-up), so a listener can never fall behind the feed.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::limits::MAX_LISTENERS;
use crate::version::Position;

/// Why a listener did not get a change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedError {
    /// [`MAX_LISTENERS`] listeners are live; drop one first.
    TooManyListeners {
        /// The cap.
        max: usize,
    },
    /// The feed cannot see commits for now (a lost connection, a stopped
    /// watcher): poll the store until the feed works again. Reported once
    /// per breakage; the next `changed()` waits again and resolves when the
    /// feed is repaired (which also counts as a change) or a commit arrives.
    Broken {
        /// What broke.
        reason: String,
    },
    /// The store was closed; no change will ever come.
    Closed,
}

impl FeedError {
    /// Whether polling the store (and listening again later) can work
    /// around the failure.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Broken { .. } | Self::TooManyListeners { .. })
    }
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyListeners { max } => {
                write!(f, "the commit feed already serves {max} listeners")
            }
            Self::Broken { reason } => write!(f, "the commit feed is broken: {reason}"),
            Self::Closed => f.write_str("the store is closed"),
        }
    }
}

impl std::error::Error for FeedError {}

/// A source of commit wake-ups: every backend's store implements it.
///
/// # Contract
/// - An append (or lifecycle change) whose future returned has already
///   woken every listener that existed when it committed.
/// - A listener's [`Listener::changed`] resolves after a commit it has not
///   seen, with the newest position known to the feed.
/// - Signals coalesce; a dropped `changed()` future loses none.
/// - At most [`MAX_LISTENERS`] live listeners, then
///   [`FeedError::TooManyListeners`].
/// - A feed that cannot see commits says so with [`FeedError::Broken`]
///   (retryable: the subscriber polls meanwhile).
pub trait CommitFeed: Send + Sync {
    /// A new listener; its first [`Listener::changed`] waits for the next
    /// commit after this call.
    ///
    /// # Errors
    /// [`FeedError::TooManyListeners`] or [`FeedError::Closed`].
    fn listen(&self) -> Result<Listener, FeedError>;
}

impl<T: CommitFeed + ?Sized> CommitFeed for Arc<T> {
    fn listen(&self) -> Result<Listener, FeedError> {
        (**self).listen()
    }
}

impl<T: CommitFeed + ?Sized> CommitFeed for &T {
    fn listen(&self) -> Result<Listener, FeedError> {
        (**self).listen()
    }
}

/// The in-process commit feed: a backend calls [`notify`](Self::notify)
/// right after each commit (before the append's future completes), and
/// [`listen`](Self::listen) hands out listeners. Cloning shares it.
///
/// ```
/// use eskit_core::{backend::CommitNotifier, event::Position, rt::block_on};
/// let feed = CommitNotifier::new();
/// let mut listener = feed.listen()?;
/// feed.notify(Position::new(3));
/// feed.notify(Position::new(4)); // coalesced with the first
/// assert_eq!(block_on(listener.changed()), Ok(Position::new(4)));
/// # Ok::<(), eskit_core::store::FeedError>(())
/// ```
#[derive(Clone, Default)]
pub struct CommitNotifier {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    position: Position,
    /// Bumped by every signal (commit, repair, close).
    generation: u64,
    /// Bumped by every breakage.
    breakage: u64,
    broken: Option<String>,
    closed: bool,
    next_id: u64,
    wakers: HashMap<u64, Option<Waker>>,
}

impl fmt::Debug for CommitNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("CommitNotifier")
            .field("position", &s.position)
            .field("generation", &s.generation)
            .field("broken", &s.broken)
            .field("closed", &s.closed)
            .field("listeners", &s.wakers.len())
            .finish()
    }
}

impl CommitNotifier {
    /// A feed with no listeners.
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

    /// How many listeners are live.
    pub fn listeners(&self) -> usize {
        self.lock().wakers.len()
    }

    /// Signals a change: the newest position is now at least `position`.
    /// Every listener wakes, also when the position did not move (a
    /// lifecycle change, a write seen from another process).
    pub fn notify(&self, position: Position) {
        self.wake_all(|s| {
            s.position = s.position.max(position);
            s.generation = s.generation.wrapping_add(1);
        });
    }

    /// Reports that the feed cannot see commits: every listener gets one
    /// [`FeedError::Broken`] and should poll. A later [`repair`](Self::repair)
    /// or commit wakes them again.
    pub fn break_feed(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.wake_all(|s| {
            s.broken = Some(reason);
            s.breakage = s.breakage.wrapping_add(1);
        });
    }

    /// The feed sees commits again; every listener wakes (it may have
    /// missed commits while the feed was broken).
    pub fn repair(&self) {
        self.wake_all(|s| {
            s.broken = None;
            s.generation = s.generation.wrapping_add(1);
        });
    }

    /// Closes the feed for good: listeners get [`FeedError::Closed`], and
    /// [`listen`](Self::listen) refuses new ones.
    pub fn close(&self) {
        self.wake_all(|s| s.closed = true);
    }

    fn wake_all(&self, change: impl FnOnce(&mut State)) {
        let wakers: Vec<Waker> = {
            let mut s = self.lock();
            change(&mut s);
            s.wakers.values_mut().filter_map(Option::take).collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// A listener for a handle scoped to `tenant` (`None`: unscoped): a
    /// tenant's handle reads only part of what the feed signals, so its
    /// listener is [`for_part_of_the_feed`](Listener::for_part_of_the_feed).
    ///
    /// # Errors
    /// As [`listen`](Self::listen).
    pub fn listen_as(
        &self,
        tenant: Option<&crate::event::TenantId>,
    ) -> Result<Listener, FeedError> {
        let l = self.listen()?;
        Ok(if tenant.is_some() {
            l.for_part_of_the_feed()
        } else {
            l
        })
    }

    /// A new listener; its first [`Listener::changed`] waits for the next signal.
    ///
    /// # Errors
    /// [`FeedError::TooManyListeners`] when [`MAX_LISTENERS`] are live,
    /// [`FeedError::Closed`] after [`close`](Self::close).
    pub fn listen(&self) -> Result<Listener, FeedError> {
        let mut s = self.lock();
        if s.closed {
            return Err(FeedError::Closed);
        }
        if s.wakers.len() >= MAX_LISTENERS {
            return Err(FeedError::TooManyListeners { max: MAX_LISTENERS });
        }
        let id = s.next_id;
        s.next_id += 1;
        s.wakers.insert(id, None);
        Ok(Listener {
            feed: self.clone(),
            id,
            seen: s.generation,
            seen_breakage: s.breakage,
            positions_readable: true,
        })
    }
}

impl CommitFeed for CommitNotifier {
    fn listen(&self) -> Result<Listener, FeedError> {
        CommitNotifier::listen(self)
    }
}

/// One listener of a commit feed; dropping it frees its slot.
#[derive(Debug)]
pub struct Listener {
    feed: CommitNotifier,
    id: u64,
    seen: u64,
    seen_breakage: u64,
    /// Whether the positions the feed signals are ones the listening
    /// handle reads (false for a handle that sees one tenant of a shared
    /// feed).
    positions_readable: bool,
}

impl Listener {
    /// Waits for the next signal after the last one this listener saw and
    /// returns the newest position. Signals that arrive while nobody waits
    /// coalesce into one wake-up.
    ///
    /// # Errors
    /// [`FeedError::Broken`] once per breakage of the feed (poll the store,
    /// then call again), [`FeedError::Closed`] once the store is closed.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses no signal; the next call
    /// returns at once if a signal arrived meanwhile.
    pub fn changed(&mut self) -> Changed<'_> {
        Changed { listener: self }
    }

    /// The newest position the feed has signalled.
    pub fn latest(&self) -> Position {
        self.feed.latest()
    }

    /// The same listener for a handle that reads only part of what the
    /// feed signals (one tenant of a feed its store's tenants share): its
    /// wake-ups still come, but [`readable_latest`](Self::readable_latest)
    /// no longer offers the signalled positions as a measure of how far
    /// behind that handle's reader is.
    ///
    /// ```
    /// use eskit_core::{backend::CommitNotifier, event::Position};
    /// let feed = CommitNotifier::new();
    /// let whole = feed.listen()?;
    /// let part = feed.listen()?.for_part_of_the_feed();
    /// feed.notify(Position::new(7));
    /// assert_eq!(whole.readable_latest(), Some(Position::new(7)));
    /// assert_eq!(part.readable_latest(), None);
    /// assert_eq!(part.latest(), Position::new(7));
    /// # Ok::<(), eskit_core::store::FeedError>(())
    /// ```
    pub fn for_part_of_the_feed(mut self) -> Self {
        self.positions_readable = false;
        self
    }

    /// The newest signalled position, when the listening handle reads every
    /// position the feed signals (see
    /// [`for_part_of_the_feed`](Self::for_part_of_the_feed)); a reader
    /// whose reads stay below it is behind.
    pub fn readable_latest(&self) -> Option<Position> {
        self.positions_readable.then(|| self.feed.latest())
    }

    /// Whether the feed is broken now (a breakage was reported and not yet
    /// repaired). A wake-up while it is broken came from a commit of this
    /// process, not through the feed.
    pub fn is_broken(&self) -> bool {
        self.feed.lock().broken.is_some()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.feed.lock().wakers.remove(&self.id);
    }
}

/// The future of [`Listener::changed`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Changed<'a> {
    listener: &'a mut Listener,
}

impl Future for Changed<'_> {
    type Output = Result<Position, FeedError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let feed = this.listener.feed.clone();
        let mut s = feed.lock();
        if s.closed {
            return Poll::Ready(Err(FeedError::Closed));
        }
        if s.breakage != this.listener.seen_breakage {
            this.listener.seen_breakage = s.breakage;
            if let Some(reason) = &s.broken {
                return Poll::Ready(Err(FeedError::Broken {
                    reason: reason.clone(),
                }));
            }
        }
        if s.generation != this.listener.seen {
            this.listener.seen = s.generation;
            return Poll::Ready(Ok(s.position));
        }
        s.wakers.insert(this.listener.id, Some(cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::block_on;

    #[test]
    fn a_break_is_reported_once_then_a_repair_wakes() {
        let feed = CommitNotifier::new();
        let mut l = feed.listen().unwrap_or_else(|e| panic!("{e}"));
        feed.break_feed("connection lost");
        assert_eq!(
            block_on(l.changed()),
            Err(FeedError::Broken {
                reason: "connection lost".into()
            })
        );
        assert!(l.is_broken());
        feed.repair();
        assert_eq!(block_on(l.changed()), Ok(Position::ZERO));
        assert!(!l.is_broken());
    }

    #[test]
    fn close_ends_every_listener_and_refuses_new_ones() {
        let feed = CommitNotifier::new();
        let mut l = feed.listen().unwrap_or_else(|e| panic!("{e}"));
        feed.close();
        assert_eq!(block_on(l.changed()), Err(FeedError::Closed));
        assert!(matches!(feed.listen(), Err(FeedError::Closed)));
    }
}
