//! Named locks shared by every process that opens the same database file:
//! leases in the `eskit_locks` table.
//!
//! **Invariant**: a key has at most one unexpired row; a holder owns its
//! key while its row names it and has not expired. Holders renew their
//! leases in the background, so a lock outlives its holder's process by at
//! most [`LOCK_LEASE`].

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak, mpsc};
use std::task::{Poll, Waker};
use std::thread;
use std::time::Duration;

use eskit_core::{
    EventId, LockGuard, LockRegistry, NameKind, StoreError, Timestamp, validate_name,
};

use crate::error::{OpenError, store_error};
use crate::store::SqliteStore;

/// How long a lock stays held without renewal: the longest a crashed
/// process keeps others waiting.
pub const LOCK_LEASE: Duration = Duration::from_secs(30);

/// Shortest lease [`SqliteStore::locks_with_lease`] accepts: renewals are
/// writes queued with appends and need room to be late.
pub const MIN_LOCK_LEASE: Duration = Duration::from_millis(300);

/// Longest lease [`SqliteStore::locks_with_lease`] accepts.
pub const MAX_LOCK_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

const _: () = assert!(
    LOCK_LEASE.as_nanos() >= MIN_LOCK_LEASE.as_nanos()
        && LOCK_LEASE.as_nanos() <= MAX_LOCK_LEASE.as_nanos(),
    "the default lease must be an accepted one"
);

/// How often a waiter retries a lock held by another process. Releases in
/// the same registry wake waiters at once.
pub const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A [`LockRegistry`] in the store's database, for single-writer locks and
/// leader election across the processes that share the file. Get one with
/// [`SqliteStore::locks`]; each registry is one owner, so two registries
/// exclude each other like two processes do.
///
/// A held lock is a lease of [`LOCK_LEASE`] (or the lease given to
/// [`SqliteStore::locks_with_lease`]), renewed every third of the lease by a
/// background thread while any lock is held, so two renewals can be late
/// before a lease runs out. A process that dies holding a lock blocks others
/// for at most the lease.
/// Leases are compared with the system clock, which all processes on one
/// machine share; a clock set forward by more than the lease minus the
/// renewal period can end a live lease early.
///
/// Acquiring and releasing are writes on the store's writer thread, queued
/// with appends; a waiter retries when a lock of the same registry is
/// released, and every [`LOCK_POLL_INTERVAL`] for other processes' locks.
///
/// ```
/// use eskit_core::{LockRegistry, block_on};
/// use eskit_sqlite::SqliteStore;
///
/// let store = SqliteStore::open_in_memory()?;
/// let (this_node, other_node) = (store.locks(), store.locks());
/// let leader = block_on(this_node.acquire("processor:send-emails"))?;
/// // Another owner cannot take it while it is held...
/// assert!(block_on(other_node.try_acquire("processor:send-emails"))?.is_none());
/// drop(leader);
/// // ...and can once it is released.
/// assert!(block_on(other_node.try_acquire("processor:send-emails"))?.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SqliteLockRegistry {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteLockRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLockRegistry")
            .field("owner", &self.shared.owner)
            .finish_non_exhaustive()
    }
}

struct Shared {
    store: SqliteStore,
    owner: String,
    lease: Duration,
    /// Guards alive; the keeper renews only while some are.
    held: AtomicUsize,
    /// Bumped after every release this registry commits.
    releases: AtomicU64,
    waiters: Mutex<Waiters>,
    /// Dropping the sender (with the registry) stops the keeper thread.
    keeper: Mutex<Option<mpsc::Sender<()>>>,
}

#[derive(Default)]
struct Waiters {
    next_id: u64,
    wakers: HashMap<u64, Waker>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl SqliteLockRegistry {
    pub(crate) fn new(store: SqliteStore, lease: Duration) -> Result<Self, OpenError> {
        if !(MIN_LOCK_LEASE..=MAX_LOCK_LEASE).contains(&lease) {
            return Err(OpenError::InvalidOption {
                name: "lock lease",
                reason: "must be between MIN_LOCK_LEASE and MAX_LOCK_LEASE",
            });
        }
        Ok(Self::with_lease(store, lease))
    }

    /// A registry with the default [`LOCK_LEASE`].
    pub(crate) fn with_default_lease(store: SqliteStore) -> Self {
        Self::with_lease(store, LOCK_LEASE)
    }

    fn with_lease(store: SqliteStore, lease: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                owner: EventId::new().to_string(),
                lease,
                held: AtomicUsize::new(0),
                releases: AtomicU64::new(0),
                waiters: Mutex::new(Waiters::default()),
                keeper: Mutex::new(None),
            }),
        }
    }

    async fn try_take(&self, key: &str) -> Result<Option<LockGuard>, StoreError> {
        let shared = Arc::clone(&self.shared);
        let key = key.to_owned();
        // The guard is built on the writer thread right after the row is
        // written: if this future is dropped meanwhile, the reply is dropped
        // with its guard, and that releases the lock.
        self.shared
            .store
            .workers()
            .write(move |c| {
                let now = Timestamp::now().as_unix_micros();
                let taken = c
                    .prepare_cached(
                        "INSERT INTO eskit_locks (key, owner, expires_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, \
                         expires_at = excluded.expires_at WHERE eskit_locks.expires_at <= ?4",
                    )
                    .and_then(|mut s| {
                        s.execute((
                            &key,
                            &shared.owner,
                            now.saturating_add(micros(shared.lease)),
                            now,
                        ))
                    })
                    .map_err(store_error)?;
                if taken == 0 {
                    return Ok(None);
                }
                shared.held.fetch_add(1, Ordering::AcqRel);
                let guard = LockGuard::new(Held {
                    shared: Arc::clone(&shared),
                    key,
                });
                Shared::start_keeper(&shared);
                Ok(Some(guard))
            })
            .await
    }
}

impl Shared {
    fn start_keeper(this: &Arc<Self>) {
        let mut keeper = this.keeper.lock().unwrap_or_else(PoisonError::into_inner);
        if keeper.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let weak = Arc::downgrade(this);
        let every = this.lease / 3;
        let started = thread::Builder::new()
            .name("eskit-sqlite-locks".into())
            .spawn(move || keep_leases(&weak, &rx, every));
        // Without a keeper a lease still lasts LOCK_LEASE; the next
        // acquire tries to start one again.
        if started.is_ok() {
            *keeper = Some(tx);
        }
    }

    fn released(&self) {
        self.releases.fetch_add(1, Ordering::AcqRel);
        let wakers: Vec<Waker> = {
            let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            w.wakers.drain().map(|(_, w)| w).collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Waits until a release after `seen` or until `timeout`.
    async fn wait_release(&self, seen: u64, timeout: Duration) {
        let id = {
            let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            w.next_id += 1;
            w.next_id
        };
        let _registered = Deregister { shared: self, id };
        let mut sleep = std::pin::pin!(eskit_core::sleep(timeout));
        poll_fn(|cx| {
            if self.releases.load(Ordering::Acquire) != seen {
                return Poll::Ready(());
            }
            self.waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wakers
                .insert(id, cx.waker().clone());
            // A release between the first check and the insert drained
            // the map before our waker was in it.
            if self.releases.load(Ordering::Acquire) != seen {
                return Poll::Ready(());
            }
            sleep.as_mut().poll(cx)
        })
        .await;
    }
}

struct Deregister<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wakers
            .remove(&self.id);
    }
}

fn keep_leases(shared: &Weak<Shared>, stop: &mpsc::Receiver<()>, every: Duration) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.held.load(Ordering::Acquire) == 0 {
            continue;
        }
        let (owner, lease) = (shared.owner.clone(), shared.lease);
        // Queued with the writes, like every other statement; a store that
        // is closing refuses it and the leases run out.
        let _ = shared.store.workers().submit(move |c| {
            let expires = Timestamp::now()
                .as_unix_micros()
                .saturating_add(micros(lease));
            let _ = c
                .prepare_cached("UPDATE eskit_locks SET expires_at = ?1 WHERE owner = ?2")
                .and_then(|mut s| s.execute((expires, &owner)));
        });
    }
}

/// What a [`LockGuard`] of this registry holds; dropping it queues the
/// release.
struct Held {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let shared = Arc::clone(&self.shared);
        let key = std::mem::take(&mut self.key);
        let sent = self.shared.store.workers().submit(move |c| {
            // Only our own row: after an expired lease another owner may
            // hold the key now.
            let _ = c
                .prepare_cached("DELETE FROM eskit_locks WHERE key = ?1 AND owner = ?2")
                .and_then(|mut s| s.execute((&key, &shared.owner)));
            shared.held.fetch_sub(1, Ordering::AcqRel);
            shared.released();
        });
        if sent.is_err() {
            // The store is closed: the lease runs out on its own.
            self.shared.held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl LockRegistry for SqliteLockRegistry {
    /// Takes the lock, waiting while another holder has it.
    ///
    /// # Cancel safety
    /// Dropping the future never leaves the lock held: a lock taken for a
    /// dropped future is released at once.
    async fn acquire(&self, key: &str) -> Result<LockGuard, StoreError> {
        validate_name(NameKind::Lock, key)?;
        loop {
            let seen = self.shared.releases.load(Ordering::Acquire);
            if let Some(guard) = self.try_take(key).await? {
                return Ok(guard);
            }
            self.shared.wait_release(seen, LOCK_POLL_INTERVAL).await;
        }
    }

    async fn try_acquire(&self, key: &str) -> Result<Option<LockGuard>, StoreError> {
        validate_name(NameKind::Lock, key)?;
        self.try_take(key).await
    }
}
