//! The commit feed across handles (as across processes): `LISTEN`/`NOTIFY`
//! wakes a listener on another handle's commit, a caller transaction's
//! commit, and reports a lost connection once, then recovers.

mod common;

use std::time::Duration;

use eskit_core::event::{EventType, ExpectedVersion, NewEvent, StreamName};
use eskit_core::store::{AppendOptions, CommitFeed, EventStore, FeedError};
use eskit_pg::{PgOptions, PgStore};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A guard against a hang, not a timing goal: every wake-up here is
/// expected within milliseconds.
const GUARD: Duration = Duration::from_secs(30);

/// Wake-ups tolerated before the one a test waits for (hints may repeat).
const MAX_EXTRA_WAKES: usize = 10;

async fn open(schema: &str) -> Result<PgStore, Box<dyn std::error::Error + Send + Sync>> {
    Ok(PgStore::connect(PgOptions::new(common::url()?).with_schema(schema)).await?)
}

fn event() -> Result<NewEvent, Box<dyn std::error::Error + Send + Sync>> {
    Ok(NewEvent::new(EventType::new("Pinged")?, b"{}".to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_across_handles_and_after_a_lost_connection() -> TestResult {
    a_pool_of_one_is_not_taken_by_the_feed().await?;
    let schema = common::fresh_schema("feed");
    let a = open(&schema).await?;
    let b = open(&schema).await?;
    let s = StreamName::new("feed", "1")?;
    // `connect` returns once the feed listens.
    let mut listener = a.listen()?;

    // Another handle's append wakes it.
    b.append(
        &s,
        ExpectedVersion::Any,
        vec![event()?],
        AppendOptions::new(),
    )
    .await?;
    tokio::time::timeout(GUARD, listener.changed()).await??;

    // So does a caller's transaction, when it commits.
    let mut tx = b.pool().begin().await?;
    b.append_in(
        &mut tx,
        &s,
        ExpectedVersion::Any,
        vec![event()?],
        AppendOptions::new(),
    )
    .await?;
    tx.commit().await?;
    tokio::time::timeout(GUARD, listener.changed()).await??;

    // The listening session dies: the feed reports it broken once.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN %eskit_%'",
    )
    .execute(b.pool())
    .await?;
    // Wake-ups are hints: an earlier commit's may still come first.
    let mut broken = false;
    for _ in 0..MAX_EXTRA_WAKES {
        match tokio::time::timeout(GUARD, listener.changed()).await? {
            Err(FeedError::Broken { .. }) => {
                broken = true;
                break;
            }
            Ok(_) => {}
            other => return Err(format!("expected a broken feed, got {other:?}").into()),
        }
    }
    assert!(broken, "the lost connection was never reported");
    // It reconnects and repairs (a wake-up), and commits wake it again.
    tokio::time::timeout(GUARD, listener.changed()).await??;
    b.append(
        &s,
        ExpectedVersion::Any,
        vec![event()?],
        AppendOptions::new(),
    )
    .await?;
    tokio::time::timeout(GUARD, listener.changed()).await??;

    // Closing ends the listener.
    a.close().await;
    match tokio::time::timeout(GUARD, listener.changed()).await? {
        Err(FeedError::Closed) => {}
        other => return Err(format!("expected a closed feed, got {other:?}").into()),
    }
    b.close().await;
    Ok(())
}

/// The feed's `LISTEN` session has a connection of its own: a store with
/// a pool of one still appends, reads, and hears another handle's commit.
/// (Run by the test above: that one ends every `LISTEN` session on the
/// server, this one's included, so the two do not run side by side.)
async fn a_pool_of_one_is_not_taken_by_the_feed() -> TestResult {
    let schema = common::fresh_schema("feed_pool");
    let small = PgStore::connect(
        PgOptions::new(common::url()?)
            .with_schema(schema.as_str())
            .with_pool_size(1),
    )
    .await?;
    let other = open(&schema).await?;
    let s = StreamName::new("feed", "pool")?;
    let mut listener = small.listen()?;
    tokio::time::timeout(
        GUARD,
        small.append(
            &s,
            ExpectedVersion::NoStream,
            vec![event()?],
            AppendOptions::new(),
        ),
    )
    .await??;
    tokio::time::timeout(GUARD, small.stream_version(&s)).await??;
    other
        .append(
            &s,
            ExpectedVersion::Any,
            vec![event()?],
            AppendOptions::new(),
        )
        .await?;
    // The own append's wake-up may come first; the other's follows.
    let mut woken = 0;
    while woken < 2 {
        tokio::time::timeout(GUARD, listener.changed()).await??;
        woken += 1;
    }
    assert_eq!(
        small.stream_version(&s).await?,
        eskit_core::event::Version::new(2)
    );
    small.close().await;
    other.close().await;
    Ok(())
}
