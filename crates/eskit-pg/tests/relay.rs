//! The change relay across handles (as across processes): a broadcast
//! wakes another handle's commit-feed listener, readers page through the
//! changes by id and never miss one under concurrent broadcasts, pruning
//! keeps the newest, bad input never reaches the server.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use eskit_core::store::CommitFeed;
use eskit_pg::{PgOptions, PgStore};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A guard against a hang, not a timing goal.
const GUARD: Duration = Duration::from_secs(30);

/// Concurrent broadcasters and broadcasts each in the ordering test.
const BROADCASTERS: usize = 4;
const BROADCASTS_EACH: usize = 100;

async fn open(schema: &str) -> Result<PgStore, Box<dyn std::error::Error + Send + Sync>> {
    Ok(PgStore::connect(PgOptions::new(common::url()?).with_schema(schema)).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_other_handles_and_prune_keeps_the_newest() -> TestResult {
    let schema = common::fresh_schema("relay");
    let a = open(&schema).await?;
    let b = open(&schema).await?;
    let mut listener = b.listen()?;
    let relay_a = a.change_relay();
    let relay_b = b.change_relay();
    assert_ne!(relay_a.origin(), relay_b.origin());

    let id = relay_a.broadcast("orders", Some("o-1")).await?;
    tokio::time::timeout(GUARD, listener.changed()).await??;
    let seen = relay_b.changes_after(0, 100).await?;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (
            seen[0].id,
            seen[0].origin.as_str(),
            seen[0].topic.as_str(),
            seen[0].key.as_deref()
        ),
        (id, relay_a.origin(), "orders", Some("o-1"))
    );
    assert!(relay_b.changes_after(id, 100).await?.is_empty());

    let second = relay_b.broadcast("orders", None).await?;
    let third = relay_b.broadcast("stock", None).await?;
    assert!(id < second && second < third);
    let page = relay_a.changes_after(0, 2).await?;
    assert_eq!(page.iter().map(|c| c.id).collect::<Vec<_>>(), [id, second]);
    assert_eq!(relay_a.prune(1).await?, 2);
    let left = relay_a.changes_after(0, 100).await?;
    assert_eq!(left.iter().map(|c| c.id).collect::<Vec<_>>(), [third]);
    // Ids are not reused after pruning.
    assert!(relay_a.broadcast("stock", None).await? > third);

    // Bad input is refused before any SQL runs.
    for (topic, key) in [
        ("", None),
        ("x\0y", None),
        ("ok", Some("")),
        ("ok", Some("a\0b")),
    ] {
        let refused = relay_a.broadcast(topic, key).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.is_validation()),
            "{topic:?} {key:?}: {refused:?}"
        );
    }
    assert!(
        relay_a
            .changes_after(0, 0)
            .await
            .is_err_and(|e| e.is_validation())
    );
    assert!(
        relay_a
            .changes_after(0, eskit_core::limits::MAX_READ_LIMIT + 1)
            .await
            .is_err_and(|e| e.is_validation())
    );
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_following_concurrent_broadcasts_misses_none() -> TestResult {
    let schema = common::fresh_schema("relay_order");
    let writer = open(&schema).await?;
    let reader = open(&schema).await?;
    let mut tasks = Vec::new();
    for w in 0..BROADCASTERS {
        let relay = writer.change_relay();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..BROADCASTS_EACH {
                ids.push(relay.broadcast("t", Some(&format!("{w}-{i}"))).await?);
            }
            Ok::<_, eskit_core::error::StoreError>(ids)
        }));
    }
    let relay = reader.change_relay();
    let mut cursor = 0;
    let mut seen = Vec::new();
    let total = BROADCASTERS * BROADCASTS_EACH;
    // A reader that skipped an id waits here for changes that never come
    // (they are behind its cursor): the guard then fails the test.
    tokio::time::timeout(GUARD, async {
        while seen.len() < total {
            for c in relay.changes_after(cursor, 7).await? {
                assert!(c.id > cursor, "ids go backwards: {} after {cursor}", c.id);
                cursor = c.id;
                seen.push(c.id);
            }
            tokio::task::yield_now().await;
        }
        Ok::<_, eskit_core::error::StoreError>(())
    })
    .await
    .map_err(|_| {
        format!(
            "the reader saw {} of {total} changes: it skipped some",
            seen.len()
        )
    })??;
    let mut written = BTreeSet::new();
    for t in tasks {
        written.extend(t.await??);
    }
    // Every broadcast seen once, none skipped by the cursor.
    assert_eq!(seen.len(), total);
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), written);
    writer.close().await;
    reader.close().await;
    Ok(())
}
