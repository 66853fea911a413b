use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::error::StoreError;
use crate::name::{NameKind, validate_name};
use crate::store::{LockGuard, LockRegistry};

/// In-process named locks: single-writer per stream, or leader election among
/// tasks of one process. Cloning shares the same locks.
///
/// Waiters are served first come, first served. Runtime-agnostic: waiting
/// uses wakers, no executor-specific primitives.
#[derive(Debug, Clone, Default)]
pub struct MemoryLockRegistry {
    inner: Arc<Mutex<Locks>>,
}

#[derive(Debug, Default)]
struct Locks {
    next_ticket: u64,
    /// A key is present while it is held or handed to a waiter.
    keys: HashMap<String, KeyState>,
}

#[derive(Debug, Default)]
struct KeyState {
    waiters: VecDeque<(u64, Waker)>,
    /// The waiter the lock was handed to, which has not yet taken it.
    granted: Option<u64>,
}

fn lock(m: &Mutex<Locks>) -> MutexGuard<'_, Locks> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Releases `key`: hands it to the first waiter, or frees it.
fn release(locks: &mut Locks, key: &str) {
    let Some(state) = locks.keys.get_mut(key) else {
        return;
    };
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

impl MemoryLockRegistry {
    /// A registry with no locks held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `key` is held (or handed to a waiter) right now.
    pub fn is_held(&self, key: &str) -> bool {
        lock(&self.inner).keys.contains_key(key)
    }

    fn guard(&self, key: String) -> LockGuard {
        LockGuard::new(Release {
            inner: Arc::clone(&self.inner),
            key,
        })
    }
}

struct Release {
    inner: Arc<Mutex<Locks>>,
    key: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        release(&mut lock(&self.inner), &self.key);
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
    type Output = LockGuard;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LockGuard> {
        let this = &mut *self;
        let mut locks = lock(&this.registry.inner);
        let Locks { next_ticket, keys } = &mut *locks;
        let Some(state) = keys.get_mut(&this.key) else {
            keys.insert(this.key.clone(), KeyState::default());
            drop(locks);
            this.ticket = None;
            return Poll::Ready(this.registry.guard(this.key.clone()));
        };
        match this.ticket {
            Some(t) if state.granted == Some(t) => {
                state.granted = None;
                drop(locks);
                this.ticket = None;
                Poll::Ready(this.registry.guard(this.key.clone()))
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
    async fn acquire(&self, key: &str) -> Result<LockGuard, StoreError> {
        validate_name(NameKind::Lock, key)?;
        Ok(Acquire {
            registry: self.clone(),
            key: key.to_owned(),
            ticket: None,
        }
        .await)
    }

    async fn try_acquire(&self, key: &str) -> Result<Option<LockGuard>, StoreError> {
        validate_name(NameKind::Lock, key)?;
        let mut locks = lock(&self.inner);
        if locks.keys.contains_key(key) {
            return Ok(None);
        }
        locks.keys.insert(key.to_owned(), KeyState::default());
        drop(locks);
        Ok(Some(self.guard(key.to_owned())))
    }
}
