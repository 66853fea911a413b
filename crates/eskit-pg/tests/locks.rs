//! Lock leases on PostgreSQL: a holder whose session dies learns it from
//! its guard, and the lock is free for the next holder with a larger
//! fencing token; closing the store ends every lease.

mod common;

use std::time::Duration;

use eskit_core::store::{LeaseLost, LockRegistry};
use eskit_pg::{LOCK_PING_INTERVAL, PgOptions, PgStore};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A guard against a hang, not a timing goal: the loss is reported within
/// about one ping interval.
const GUARD: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_session_loses_its_lease() -> TestResult {
    let schema = common::fresh_schema("locks");
    let store = PgStore::connect(PgOptions::new(common::url()?).with_schema(&schema)).await?;
    let other = PgStore::connect(PgOptions::new(common::url()?).with_schema(&schema)).await?;
    let key = "leader:mailer";
    let guard = store.locks().acquire(key).await?;
    assert!(other.locks().try_acquire(key).await?.is_none());

    // The holder's session dies (a crashed connection, a restarted server).
    sqlx::query(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()",
    )
    .execute(other.pool())
    .await?;
    let reason = tokio::time::timeout(GUARD + LOCK_PING_INTERVAL, guard.lost()).await?;
    assert!(matches!(reason, LeaseLost::RenewalFailed(_)), "{reason:?}");
    assert!(!guard.is_held());

    let next = other
        .locks()
        .try_acquire(key)
        .await?
        .ok_or("the lock stayed taken after its session died")?;
    assert!(next.fencing_token() > guard.fencing_token());
    drop(guard);

    // Closing the store ends its holders' leases.
    other.close().await;
    let reason = tokio::time::timeout(GUARD, next.lost()).await?;
    assert!(matches!(reason, LeaseLost::Closed), "{reason:?}");
    store.close().await;
    Ok(())
}
