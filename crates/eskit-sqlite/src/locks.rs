//! Named locks shared by every process that opens the same database file:
//! leases in the `eskit_locks` table.
//!
//! **Invariant**: a key has at most one unexpired row; a holder owns its
//! key while its row names its fencing token and has not expired. Tokens come
//! from the `locks` row of `eskit_sequence`, raised in the transaction that
//! takes the key, so they grow across processes and are never reused after a
//! row is deleted. Holders renew their leases in the background, so a lock
//! outlives its holder's process by at most [`LOCK_LEASE`].

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak, mpsc};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use eskit_core::{
    backend::validate_name,
    error::StoreError,
    event::{EventId, NameKind, Timestamp},
    store::{FencingToken, Lease, LeaseLost, LockGuard, LockRegistry},
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

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
///
/// Acquiring and releasing are writes on the store's writer thread, queued
/// with appends; a waiter retries when a lock of the same registry is
/// released, and every [`LOCK_POLL_INTERVAL`] for other processes' locks.
///
/// # Fencing tokens
/// Every acquisition takes the next number of a counter stored in the
/// database, in the same transaction that writes the lease: tokens grow
/// across every process sharing the file, survive restarts and are never
/// handed out twice, also after a released lock's row is gone.
///
/// # Lost leases
/// A guard reports its lease lost ([`LockGuard::lost`] completes,
/// [`LockGuard::is_held`] turns false) with the reason:
/// - [`LeaseLost::Expired`]: the lease ran out by this process's clock
///   before a renewal reached the database (the writer was stalled, for
///   instance by another process holding the write lock), or a renewal found
///   it already expired. Reported by the renewal thread within a renewal
///   period (a third of the lease) after the lease ran out, and never before.
/// - [`LeaseLost::RenewalFailed`]: the same, when the last renewal failed with
///   an error; a failed renewal alone loses nothing, the next one retries.
/// - [`LeaseLost::TakenOver`]: a renewal found the row holding another token.
/// - [`LeaseLost::Closed`]: the store's threads stopped, so nothing renews.
///
/// # Clocks
/// Expiry is stored as wall-clock time ([`Timestamp::now`]) and compared with
/// the wall clock of whichever process looks, which all processes on one
/// machine share. The holder also tracks its own deadline on the monotonic
/// clock, which clock changes do not move. A wall clock set *forward* by
/// more than the lease minus a renewal period makes live leases look expired:
/// another process may take the key, and the old holder learns of it at its
/// next renewal ([`LeaseLost::Expired`] or [`LeaseLost::TakenOver`]), up to a
/// renewal period later, so for that long two holders may each believe they
/// hold the key; fence writes with the token. A wall clock set *back* makes
/// the leases of dead holders last that much longer.
///
/// ```
/// use eskit_core::{rt::block_on, store::LockRegistry};
/// use eskit_sqlite::SqliteStore;
///
/// let store = SqliteStore::open_in_memory()?;
/// let (this_node, other_node) = (store.locks(), store.locks());
/// let leader = block_on(this_node.acquire("processor:send-emails"))?;
/// assert!(leader.is_held());
/// // Another owner cannot take it while it is held...
/// assert!(block_on(other_node.try_acquire("processor:send-emails"))?.is_none());
/// let token = leader.fencing_token();
/// drop(leader);
/// // ...and can once it is released, with a larger fencing token.
/// let next = block_on(other_node.try_acquire("processor:send-emails"))?;
/// assert!(next.is_some_and(|g| g.fencing_token() > token));
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
    /// The leases of the guards alive; the keeper renews these.
    kept: Mutex<Kept>,
    /// Bumped after every release this registry commits.
    releases: AtomicU64,
    waiters: Mutex<Waiters>,
    /// Dropping the sender (with the registry) stops the keeper thread.
    keeper: Mutex<Option<mpsc::Sender<()>>>,
}

#[derive(Default)]
struct Kept {
    /// By fencing token, which is unique in the database.
    leases: HashMap<i64, KeptLease>,
    /// A renewal is queued or running; the keeper queues no second one.
    renewing: bool,
}

struct KeptLease {
    key: String,
    lease: Lease,
    /// When the lease runs out by this process's monotonic clock: the
    /// start of the acquisition or of the last renewal that extended it,
    /// plus the lease. Never later than the expiry stored in the row.
    until: Instant,
    /// The error of the latest renewal; a successful renewal clears it.
    failure: Option<Arc<StoreError>>,
}

#[derive(Default)]
struct Waiters {
    next_id: u64,
    wakers: HashMap<u64, Waker>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `start + lease`; a lease is at most [`MAX_LOCK_LEASE`], so this only
/// falls back to `start` (an already expired lease) on an absurd clock.
fn deadline(start: Instant, lease: Duration) -> Instant {
    start.checked_add(lease).unwrap_or(start)
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
                kept: Mutex::new(Kept::default()),
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
                let started = Instant::now();
                let Some(token) = take_row(c, &key, &shared)? else {
                    return Ok(None);
                };
                Ok(Some(Shared::guard(&shared, key, token, started)))
            })
            .await
    }
}

/// Writes the lease row for `key` if the key is free or its lease expired,
/// with the next fencing token, and commits; `None` when another holder has
/// it. Starts the keeper before committing: a lease nothing would renew is
/// refused rather than handed out.
fn take_row(
    c: &mut Connection,
    key: &str,
    shared: &Arc<Shared>,
) -> Result<Option<(i64, FencingToken)>, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    let now = Timestamp::now().as_unix_micros();
    let last: i64 = tx
        .prepare_cached(
            "SELECT coalesce((SELECT high_water FROM eskit_sequence WHERE name = 'locks'), 0)",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(store_error)?;
    let token = last
        .checked_add(1)
        .and_then(|t| u64::try_from(t).ok().map(|u| (t, u)))
        .filter(|(_, u)| *u >= 1 && *u <= FencingToken::MAX.get())
        .ok_or_else(|| StoreError::Corrupt {
            detail: format!("the lock token counter holds {last}, it cannot grow further"),
        })?;
    let taken = tx
        .prepare_cached(
            "INSERT INTO eskit_locks (key, owner, expires_at, token) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at, token = excluded.token \
             WHERE eskit_locks.expires_at <= ?5",
        )
        .and_then(|mut s| {
            s.execute((
                key,
                &shared.owner,
                now.saturating_add(micros(shared.lease)),
                token.0,
                now,
            ))
        })
        .map_err(store_error)?;
    if taken == 0 {
        return Ok(None);
    }
    tx.prepare_cached(
        "INSERT INTO eskit_sequence (name, high_water) VALUES ('locks', ?1) \
         ON CONFLICT (name) DO UPDATE SET high_water = excluded.high_water",
    )
    .and_then(|mut s| s.execute([token.0]))
    .map_err(store_error)?;
    Shared::start_keeper(shared)?;
    tx.commit().map_err(store_error)?;
    Ok(Some((token.0, FencingToken::new(token.1))))
}

/// What one renewal found for one lease: `None` when it was extended.
type Renewal = (i64, Option<LeaseLost>);

/// Extends every lease in `targets` (token, key) that is still this
/// owner's and unexpired, in one transaction.
fn renew_rows(
    c: &mut Connection,
    owner: &str,
    targets: &[(i64, String)],
    lease: Duration,
) -> Result<Vec<Renewal>, StoreError> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    // Read after BEGIN: the wait for the write lock must not make an
    // expired row look alive.
    let now = Timestamp::now().as_unix_micros();
    let mut out = Vec::with_capacity(targets.len());
    for (token, key) in targets {
        let renewed = tx
            .prepare_cached(
                "UPDATE eskit_locks SET expires_at = ?1 \
                 WHERE key = ?2 AND owner = ?3 AND token = ?4 AND expires_at > ?5",
            )
            .and_then(|mut s| {
                s.execute((now.saturating_add(micros(lease)), key, owner, token, now))
            })
            .map_err(store_error)?;
        let lost = if renewed == 1 {
            None
        } else {
            let holder: Option<i64> = tx
                .prepare_cached("SELECT token FROM eskit_locks WHERE key = ?1")
                .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
                .map_err(store_error)?;
            Some(if holder == Some(*token) {
                LeaseLost::Expired
            } else {
                LeaseLost::TakenOver
            })
        };
        out.push((*token, lost));
    }
    tx.commit().map_err(store_error)?;
    Ok(out)
}

impl Shared {
    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The guard for a lease just committed, registered with the keeper.
    fn guard(
        this: &Arc<Self>,
        key: String,
        (row_token, token): (i64, FencingToken),
        started: Instant,
    ) -> LockGuard {
        let lease = Lease::new();
        this.kept().leases.insert(
            row_token,
            KeptLease {
                key: key.clone(),
                lease: lease.clone(),
                until: deadline(started, this.lease),
                failure: None,
            },
        );
        LockGuard::new(
            token,
            lease,
            Held {
                shared: Arc::clone(this),
                key,
                token: row_token,
            },
        )
    }

    fn start_keeper(this: &Arc<Self>) -> Result<(), StoreError> {
        let mut keeper = this.keeper.lock().unwrap_or_else(PoisonError::into_inner);
        if keeper.is_some() {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel::<()>();
        let weak = Arc::downgrade(this);
        let every = this.lease / 3;
        thread::Builder::new()
            .name("eskit-sqlite-locks".into())
            .spawn(move || keep_leases(&weak, &rx, every))
            .map_err(StoreError::backend)?;
        *keeper = Some(tx);
        Ok(())
    }

    /// One round of the keeper: reports leases that ran out, queues a
    /// renewal when one is due, and returns how long to sleep.
    fn tick(
        this: &Arc<Self>,
        now: Instant,
        next_renewal: &mut Instant,
        every: Duration,
    ) -> Duration {
        let mut lost = Vec::new();
        let (renew, earliest) = {
            let mut kept = this.kept();
            kept.leases.retain(|_, k| {
                if k.until > now {
                    return true;
                }
                let reason = k
                    .failure
                    .take()
                    .map_or(LeaseLost::Expired, LeaseLost::RenewalFailed);
                lost.push((k.lease.clone(), reason));
                false
            });
            let renew = now >= *next_renewal && !kept.renewing && !kept.leases.is_empty();
            if renew {
                kept.renewing = true;
            }
            (renew, kept.leases.values().map(|k| k.until).min())
        };
        for (lease, reason) in lost {
            lease.lose(reason);
        }
        if now >= *next_renewal {
            *next_renewal = now + every;
        }
        if renew {
            Self::renew(this);
        }
        let wait = next_renewal.saturating_duration_since(now);
        earliest.map_or(wait, |e| wait.min(e.saturating_duration_since(now)))
    }

    /// Queues a renewal of every kept lease on the writer thread.
    fn renew(this: &Arc<Self>) {
        let shared = Arc::clone(this);
        // Queued with the writes, like every other statement.
        let sent = this.store.workers().submit(move |c| {
            let targets: Vec<(i64, String)> = shared
                .kept()
                .leases
                .iter()
                .map(|(t, k)| (*t, k.key.clone()))
                .collect();
            let started = Instant::now();
            let outcome = renew_rows(c, &shared.owner, &targets, shared.lease);
            shared.renewed(started, outcome);
        });
        if let Err(e) = sent {
            this.renewed(Instant::now(), Err(e));
        }
    }

    /// Applies a renewal's outcome to the kept leases.
    fn renewed(&self, started: Instant, outcome: Result<Vec<Renewal>, StoreError>) {
        let mut lost = Vec::new();
        {
            let mut kept = self.kept();
            kept.renewing = false;
            match outcome {
                Ok(renewals) => {
                    for (token, found) in renewals {
                        // A lease no longer kept was dropped (its release is
                        // queued behind this renewal) or already reported
                        // lost (its guard's drop deletes the row).
                        match found {
                            None => {
                                if let Some(k) = kept.leases.get_mut(&token) {
                                    k.until = deadline(started, self.lease);
                                    k.failure = None;
                                }
                            }
                            Some(reason) => {
                                if let Some(k) = kept.leases.remove(&token) {
                                    lost.push((k.lease, reason));
                                }
                            }
                        }
                    }
                }
                Err(StoreError::Closed) => {
                    lost.extend(
                        kept.leases
                            .drain()
                            .map(|(_, k)| (k.lease, LeaseLost::Closed)),
                    );
                }
                Err(e) => {
                    // The leases last until they run out; the keeper reports
                    // them with this error unless a later renewal succeeds.
                    let e = Arc::new(e);
                    for k in kept.leases.values_mut() {
                        k.failure = Some(Arc::clone(&e));
                    }
                }
            }
        }
        for (lease, reason) in lost {
            lease.lose(reason);
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
        let mut sleep = std::pin::pin!(eskit_core::rt::sleep(timeout));
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

/// The keeper thread: renews every third of the lease and reports leases
/// that ran out, waking early for the next deadline. It holds the registry
/// only while it works, so dropping the registry ends it.
fn keep_leases(shared: &Weak<Shared>, stop: &mpsc::Receiver<()>, every: Duration) {
    let mut next_renewal = Instant::now() + every;
    loop {
        let wait = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            Shared::tick(&shared, Instant::now(), &mut next_renewal, every)
        };
        if let Err(mpsc::RecvTimeoutError::Disconnected) | Ok(()) = stop.recv_timeout(wait) {
            return;
        }
    }
}

/// What a [`LockGuard`] of this registry holds; dropping it queues the
/// release.
struct Held {
    shared: Arc<Shared>,
    key: String,
    token: i64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shared.kept().leases.remove(&self.token);
        let shared = Arc::clone(&self.shared);
        let (key, token) = (std::mem::take(&mut self.key), self.token);
        // If the store is closed the job is refused and the lease runs out
        // on its own.
        let _ = self.shared.store.workers().submit(move |c| {
            // Only our own row: after an expired lease another holder, or
            // another guard of this registry, may hold the key now.
            let _ = c
                .prepare_cached("DELETE FROM eskit_locks WHERE key = ?1 AND token = ?2")
                .and_then(|mut s| s.execute((&key, token)));
            shared.released();
        });
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
