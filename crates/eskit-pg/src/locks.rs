//! Named locks on PostgreSQL session advisory locks, with fencing tokens.
//!
//! **Invariant**: a guard's lock is a session advisory lock held by one
//! connection taken out of the pool for as long as the guard lives; the
//! server releases it when that session ends, so a lock never outlives its
//! holder's process or connection. Fencing tokens come from the
//! `lock_tokens` row of the key, raised by the holder right after it got
//! the lock, so they grow across every process sharing the schema.

use std::collections::HashMap;
use std::time::Duration;

use eskit_core::backend::validate_name;
use eskit_core::error::StoreError;
use eskit_core::event::NameKind;
use eskit_core::store::{FencingToken, Lease, LeaseLost, LockGuard, LockRegistry};
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::oneshot;

use crate::dcb::fnv1a;
use crate::error::{corrupt, store_error};
use crate::store::{PgStore, op_span};

/// How often a holder checks that its session (and so its lock) is alive.
/// A lost connection is reported through the guard's lease within this.
pub const LOCK_PING_INTERVAL: Duration = Duration::from_secs(2);

/// The [`LockRegistry`] of a [`PgStore`]: advisory locks shared by every
/// process using the same database and schema. Get it with
/// [`PgStore::locks`].
///
/// # Keys
/// A key is hashed (64 bits, with the schema name) into the advisory lock
/// space; two different keys with the same hash exclude each other, which
/// is safe (never two holders of one key), only slower.
///
/// # Lost leases
/// A guard reports [`LeaseLost::RenewalFailed`] when its session stops
/// answering (the server then released the lock, or will once it notices
/// the dead connection), and [`LeaseLost::Closed`] when the store closes.
#[derive(Debug, Clone)]
pub struct PgLockRegistry {
    store: PgStore,
}

impl PgStore {
    /// The lock registry over the same database and schema.
    pub fn locks(&self) -> PgLockRegistry {
        PgLockRegistry {
            store: self.clone(),
        }
    }
}

fn lock_key(schema: &str, key: &str) -> i64 {
    i64::from_ne_bytes(fnv1a(&[b"eskit-lock", schema.as_bytes(), key.as_bytes()]).to_ne_bytes())
}

/// What the holding task hands the caller.
struct Granted {
    token: FencingToken,
    lease: Lease,
    release: oneshot::Sender<()>,
}

/// Releases of this process that a guard's drop started and its holding
/// task has not finished: a later acquisition of the same key in this
/// process waits for them, so "dropped, then taken again" never fails
/// because the unlock had not reached the server yet.
#[derive(Default)]
pub(crate) struct Releasing {
    counts: std::sync::Mutex<HashMap<i64, usize>>,
    done: tokio::sync::Notify,
    locals: std::sync::Mutex<HashMap<i64, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl Releasing {
    /// The in-process mutex of a key (one per key ever used by this store;
    /// keys are few: they name processors and leaders).
    fn local(&self, key: i64) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locals = self
            .locals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::sync::Arc::clone(locals.entry(key).or_default())
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, usize>> {
        // Critical sections only change counters: a poisoned lock still
        // guards consistent data.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start(&self, key: i64) {
        *self.counts().entry(key).or_insert(0) += 1;
    }

    fn finish(&self, key: i64) {
        {
            let mut counts = self.counts();
            if let Some(n) = counts.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&key);
                }
            }
        }
        self.done.notify_waiters();
    }

    async fn wait(&self, key: i64) {
        loop {
            // Created before the check, so a finish in between still wakes it.
            let notified = self.done.notified();
            if !self.counts().contains_key(&key) {
                return;
            }
            notified.await;
        }
    }
}

/// The value a [`LockGuard`] holds: dropping it tells the holding task to
/// unlock.
struct Release {
    key: i64,
    signal: Option<oneshot::Sender<()>>,
    inner: std::sync::Arc<crate::store::Inner>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.inner.releasing.start(self.key);
        let sent = self.signal.take().is_some_and(|s| s.send(()).is_ok());
        if !sent {
            // The holding task is gone (the lease was lost): nothing to wait for.
            self.inner.releasing.finish(self.key);
        }
    }
}

impl PgLockRegistry {
    async fn take(&self, key: &str, wait: bool) -> Result<Option<LockGuard>, StoreError> {
        validate_name(NameKind::Lock, key)?;
        self.store.check_open()?;
        let inner = std::sync::Arc::clone(self.store.inner());
        let name = key.to_owned();
        let id = lock_key(inner.schema.as_str(), key);
        // Releases this process started finish first, then this process's
        // holders and waiters of the key queue on its local mutex; only its
        // holder talks to the server. A waiter dropped here leaves nothing
        // behind.
        inner.releasing.wait(id).await;
        let mutex = inner.releasing.local(id);
        let local = if wait {
            mutex.lock_owned().await
        } else {
            match mutex.try_lock_owned() {
                Ok(g) => g,
                Err(_) => return Ok(None),
            }
        };
        let (reply, granted) = oneshot::channel::<Result<Option<Granted>, StoreError>>();
        let span = op_span(if wait {
            "lock_acquire"
        } else {
            "lock_try_acquire"
        });
        let _task = inner.runtime.handle().spawn({
            let inner = std::sync::Arc::clone(&inner);
            tracing::Instrument::instrument(
                async move {
                    // The task keeps the local mutex until the server lock is
                    // released (or was never taken), also when the caller
                    // gave up meanwhile.
                    let local = local;
                    let mut conn = match inner.pool.acquire().await {
                        Ok(c) => c.detach(),
                        Err(e) => {
                            let _ = reply.send(Err(store_error(e)));
                            return;
                        }
                    };
                    match lock_and_token(&inner.sql.schema, &mut conn, id, &name, wait).await {
                        Ok(Some(token)) => {
                            let lease = Lease::new();
                            let (release, released) = oneshot::channel();
                            let granted = Granted {
                                token,
                                lease: lease.clone(),
                                release,
                            };
                            if reply.send(Ok(Some(granted))).is_err() {
                                // The caller gave up: never keep the lock.
                                unlock(&mut conn, id).await;
                                let _ = conn.close().await;
                                return;
                            }
                            hold(&inner, conn, id, lease, released, local).await;
                        }
                        Ok(None) => {
                            let _ = reply.send(Ok(None));
                            let _ = conn.close().await;
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            let _ = conn.close().await;
                        }
                    }
                },
                span,
            )
        });
        let granted = granted
            .await
            .map_err(|_| StoreError::internal("the lock task ended without an answer"))??;
        Ok(granted.map(|g| {
            LockGuard::new(
                g.token,
                g.lease,
                Release {
                    key: id,
                    signal: Some(g.release),
                    inner,
                },
            )
        }))
    }
}

/// Takes the advisory lock (waiting or not), then the next fencing token.
async fn lock_and_token(
    schema: &str,
    conn: &mut PgConnection,
    id: i64,
    name: &str,
    wait: bool,
) -> Result<Option<FencingToken>, StoreError> {
    if wait {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
    } else {
        let got: bool = sqlx::query("SELECT pg_try_advisory_lock($1)")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(store_error)?;
        if !got {
            return Ok(None);
        }
    }
    let token: i64 = sqlx::query(&format!(
        "INSERT INTO {schema}.lock_tokens (name, token) VALUES ($1, 1) \
         ON CONFLICT (name) DO UPDATE SET token = lock_tokens.token + 1 RETURNING token"
    ))
    .bind(name)
    .fetch_one(&mut *conn)
    .await
    .and_then(|r| r.try_get(0))
    .map_err(store_error)?;
    let token = u64::try_from(token).map_err(|_| corrupt("negative fencing token"))?;
    if token > FencingToken::MAX.get() {
        return Err(corrupt("the fencing token counter is exhausted"));
    }
    Ok(Some(FencingToken::new(token)))
}

/// Releases the session lock; errors are moot, as closing the session
/// releases it too.
async fn unlock(conn: &mut PgConnection, id: i64) {
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(id)
        .execute(&mut *conn)
        .await;
}

/// Holds the lock's session until the guard is dropped, the session stops
/// answering or the store closes.
async fn hold(
    inner: &crate::store::Inner,
    mut conn: PgConnection,
    id: i64,
    lease: Lease,
    mut released: oneshot::Receiver<()>,
    local: tokio::sync::OwnedMutexGuard<()>,
) {
    let mut closing = inner.closing.subscribe();
    let lost = loop {
        if *closing.borrow() {
            break LeaseLost::Closed;
        }
        tokio::select! {
            signal = &mut released => {
                // Unlock first, so the next holder need not wait for the
                // server to notice the closed session.
                unlock(&mut conn, id).await;
                let _ = conn.close().await;
                drop(local);
                // A guard's drop counted this release (a guard never built,
                // its value dropped unread, counted nothing).
                if signal.is_ok() {
                    inner.releasing.finish(id);
                }
                return;
            }
            _ = closing.changed() => {}
            () = tokio::time::sleep(LOCK_PING_INTERVAL) => {
                if let Err(e) = conn.ping().await {
                    break LeaseLost::RenewalFailed(std::sync::Arc::new(store_error(e)));
                }
            }
        }
    };
    lease.lose(lost);
    let _ = conn.close().await;
    drop(local);
    // A guard dropped meanwhile counted a release this task must finish.
    released.close();
    if released.try_recv().is_ok() {
        inner.releasing.finish(id);
    }
}

impl LockRegistry for PgLockRegistry {
    /// Waits on `pg_advisory_lock` in a task of the store's runtime.
    ///
    /// # Cancel safety
    /// A dropped acquisition never keeps the lock: the task that waits
    /// releases it as soon as it gets it.
    async fn acquire(&self, key: &str) -> Result<LockGuard, StoreError> {
        self.take(key, true)
            .await?
            .ok_or_else(|| StoreError::internal("a waiting lock acquisition came back empty"))
    }

    async fn try_acquire(&self, key: &str) -> Result<Option<LockGuard>, StoreError> {
        self.take(key, false).await
    }
}
