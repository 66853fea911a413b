use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::error::StoreError;
use crate::name::{NameKind, validate_name};
use crate::store::{FencingToken, Lease, LeaseLost, LockGuard, LockRegistry};

/// In-process named locks: single-writer per stream, or leader election among
/// tasks of one process. Cloning shares the same locks.
///
/// Waiters are served first come, first served. Runtime-agnostic: waiting
/// uses wakers, no executor-specific primitives.
///
/// # Leases and tokens
/// Fencing tokens count acquisitions of the whole registry, starting at 1,
/// so they also grow with every acquisition of one key. A memory lock has no
/// time in it, so it never expires and no clock matters: its lease is lost
/// only when [`close`](Self::close) is called, with [`LeaseLost::Closed`].
/// Dropping every handle of the registry ends nothing, since each guard
/// keeps the registry's state alive until it is dropped.
#[derive(Debug, Clone, Default)]
pub struct MemoryLockRegistry {
    inner: Arc<Mutex<Locks>>,
}

#[derive(Debug, Default)]
struct Locks {
    next_ticket: u64,
    /// The token of the latest acquisition; the next one gets one more.
    last_token: u64,
    closed: bool,
    /// A key is present while it is held or handed to a waiter.
    keys: HashMap<String, KeyState>,
}

#[derive(Debug, Default)]
struct KeyState {
    waiters: VecDeque<(u64, Waker)>,
    /// The waiter the lock was handed to, which has not yet taken it.
    granted: Option<u64>,
    /// The holding guard's token and lease.
    holder: Option<(FencingToken, Lease)>,
}

fn lock(m: &Mutex<Locks>) -> MutexGuard<'_, Locks> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Releases `key`: hands it to the first waiter, or frees it.
fn release(locks: &mut Locks, key: &str) {
    let Some(state) = locks.keys.get_mut(key) else {
        return;
    };
    state.holder = None;
    match state.waiters.pop_front() {
        Some((ticket, waker)) => {
            state.granted = Some(ticket);
            waker.wake();
        }
        None => {
            locks.keys.remove(key);
        }
    }
}

fn closed() -> StoreError {
    StoreError::backend(LeaseLost::Closed)
}

impl MemoryLockRegistry {
    /// A registry with no locks held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `key` is held (or handed to a waiter) right now.
    pub fn is_held(&self, key: &str) -> bool {
        lock(&self.inner).keys.contains_key(key)
    }

    /// Closes the registry for every handle: each held guard reports
    /// [`LeaseLost::Closed`], waiting acquisitions and later ones fail.
    /// Closing twice does nothing more.
    pub fn close(&self) {
        let (leases, wakers): (Vec<Lease>, Vec<Waker>) = {
            let mut locks = lock(&self.inner);
            locks.closed = true;
            let mut leases = Vec::new();
            let mut wakers = Vec::new();
            for (_, state) in locks.keys.drain() {
                leases.extend(state.holder.map(|(_, lease)| lease));
                wakers.extend(state.waiters.into_iter().map(|(_, w)| w));
            }
            (leases, wakers)
        };
        for lease in leases {
            lease.lose(LeaseLost::Closed);
        }
        for w in wakers {
            w.wake();
        }
    }

    /// Makes the guard for `key`, which the caller has just taken (the key is
    /// in the map with no holder). On failure the key is released again.
    fn guard(&self, locks: &mut Locks, key: &str) -> Result<LockGuard, StoreError> {
        let token = match locks.last_token.checked_add(1) {
            Some(t) if t <= FencingToken::MAX.get() => t,
            _ => {
                release(locks, key);
                return Err(StoreError::backend("fencing tokens are exhausted"));
            }
        };
        locks.last_token = token;
        let token = FencingToken::new(token);
        let lease = Lease::new();
        if let Some(state) = locks.keys.get_mut(key) {
            state.holder = Some((token, lease.clone()));
        }
        Ok(LockGuard::new(
            token,
            lease,
            Release {
                inner: Arc::clone(&self.inner),
                key: key.to_owned(),
                token,
            },
        ))
    }
}

struct Release {
    inner: Arc<Mutex<Locks>>,
    key: String,
    token: FencingToken,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut locks = lock(&self.inner);
        // After `close` the key may be gone; only the holder releases.
        let holds = locks
            .keys
            .get(&self.key)
            .and_then(|s| s.holder.as_ref())
            .is_some_and(|(t, _)| *t == self.token);
        if holds {
            release(&mut locks, &self.key);
        }
    }
}

struct Acquire {
    registry: MemoryLockRegistry,
    key: String,
    /// Our place in the queue once we had to wait; `None` before the first
    /// poll and after the lock was taken.
    ticket: Option<u64>,
}

impl Future for Acquire {
    type Output = Result<LockGuard, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let registry = this.registry.clone();
        let mut locks = lock(&registry.inner);
        if locks.closed {
            this.ticket = None;
            return Poll::Ready(Err(closed()));
        }
        let Locks {
            next_ticket, keys, ..
        } = &mut *locks;
        let Some(state) = keys.get_mut(&this.key) else {
            keys.insert(this.key.clone(), KeyState::default());
            this.ticket = None;
            return Poll::Ready(registry.guard(&mut locks, &this.key));
        };
        match this.ticket {
            Some(t) if state.granted == Some(t) => {
                state.granted = None;
                this.ticket = None;
                Poll::Ready(registry.guard(&mut locks, &this.key))
            }
            Some(t) => {
                if let Some(entry) = state.waiters.iter_mut().find(|(w, _)| *w == t) {
                    entry.1 = cx.waker().clone();
                }
                Poll::Pending
            }
            None => {
                let t = *next_ticket;
                *next_ticket += 1;
                state.waiters.push_back((t, cx.waker().clone()));
                this.ticket = Some(t);
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        // Cancel safety: a waiter that goes away gives up its place, and if the
        // lock had already been handed to it, passes the lock on.
        let Some(ticket) = self.ticket else { return };
        let mut locks = lock(&self.registry.inner);
        let Some(state) = locks.keys.get_mut(&self.key) else {
            return;
        };
        state.waiters.retain(|(t, _)| *t != ticket);
        if state.granted == Some(ticket) {
            state.granted = None;
            release(&mut locks, &self.key);
        }
    }
}

impl LockRegistry for MemoryLockRegistry {
    /// Takes the lock, waiting in line while another guard holds it.
    ///
    /// # Cancel safety
    /// Dropping the future gives up its place in line; a lock already
    /// handed to it passes on to the next waiter.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad key; a backend error once the
    /// registry is [closed](MemoryLockRegistry::close).
    async fn acquire(&self, key: &str) -> Result<LockGuard, StoreError> {
        validate_name(NameKind::Lock, key)?;
        Acquire {
            registry: self.clone(),
            key: key.to_owned(),
            ticket: None,
        }
        .await
    }

    async fn try_acquire(&self, key: &str) -> Result<Option<LockGuard>, StoreError> {
        validate_name(NameKind::Lock, key)?;
        let mut locks = lock(&self.inner);
        if locks.closed {
            return Err(closed());
        }
        if locks.keys.contains_key(key) {
            return Ok(None);
        }
        locks.keys.insert(key.to_owned(), KeyState::default());
        self.guard(&mut locks, key).map(Some)
    }
}
