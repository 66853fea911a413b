//! Group commit (`PgOptions::with_group_commit`): concurrent standalone
//! appends share transactions, and each keeps its own outcome: successes
//! commit, a version conflict writes nothing (not even the head row of the
//! stream it would have created), an idempotent retry is answered from the
//! stored events, a duplicate event id is refused.

mod common;

use std::collections::HashSet;

use eskit_core::error::StoreError;
use eskit_core::event::{EventType, ExpectedVersion, NewEvent, StreamName, Version};
use eskit_core::store::{AppendOptions, EventStore, LoadOptions, StreamLifecycle, StreamState};
use eskit_pg::{PgOptions, PgStore};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Concurrent appends of the test that should succeed.
const WRITERS: usize = 40;

fn event(n: usize) -> Result<NewEvent, Box<dyn std::error::Error + Send + Sync>> {
    Ok(NewEvent::new(
        EventType::new("Grouped")?,
        format!("{{\"n\":{n}}}").into_bytes(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_transactions_and_keep_their_outcomes() -> TestResult {
    let schema = common::fresh_schema("group");
    let store = PgStore::connect(
        PgOptions::new(common::url()?)
            .with_schema(schema)
            .with_group_commit(true),
    )
    .await?;

    // Written before: the idempotent retry's first append, and a stream
    // the duplicate-id append collides with.
    let keyed = StreamName::new("group", "keyed")?;
    let keyed_event = event(1000)?;
    let first = store
        .append(
            &keyed,
            ExpectedVersion::NoStream,
            vec![keyed_event.clone()],
            AppendOptions::new().with_idempotency_key("k-1"),
        )
        .await?;
    let taken = event(2000)?;
    store
        .append(
            &StreamName::new("group", "taken")?,
            ExpectedVersion::Any,
            vec![taken.clone()],
            AppendOptions::new(),
        )
        .await?;

    let mut tasks = Vec::new();
    for n in 0..WRITERS {
        let (store, stream, e) = (
            store.clone(),
            StreamName::new("group", format!("ok-{n}"))?,
            event(n)?,
        );
        tasks.push(tokio::spawn(async move {
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![e],
                    AppendOptions::new(),
                )
                .await
        }));
    }
    let conflict = {
        let store = store.clone();
        let (stream, e) = (StreamName::new("group", "conflict")?, event(3000)?);
        tokio::spawn(async move {
            store
                .append(
                    &stream,
                    ExpectedVersion::Exact(Version::new(5)),
                    vec![e],
                    AppendOptions::new(),
                )
                .await
        })
    };
    let retry = {
        let (store, stream, e) = (store.clone(), keyed.clone(), keyed_event.clone());
        tokio::spawn(async move {
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![e],
                    AppendOptions::new().with_idempotency_key("k-1"),
                )
                .await
        })
    };
    let duplicate = {
        let store = store.clone();
        let stream = StreamName::new("group", "duplicate")?;
        tokio::spawn(async move {
            store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![taken],
                    AppendOptions::new(),
                )
                .await
        })
    };

    let mut txs = HashSet::new();
    for t in tasks {
        let r = t.await??;
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.records[0].version, Version::new(1));
        txs.insert(r.records[0].tx);
    }
    assert!(
        txs.len() < WRITERS,
        "{WRITERS} concurrent appends committed in {} transactions: none were grouped",
        txs.len()
    );
    match conflict.await? {
        Err(StoreError::WrongExpectedVersion { actual, .. }) => {
            assert_eq!(actual, Version::ZERO);
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    let again = retry.await??;
    assert!(again.deduplicated, "{again:?}");
    assert_eq!(again.records, first.records);
    match duplicate.await? {
        Err(StoreError::DuplicateEventId { .. }) => {}
        other => panic!("expected a duplicate event id, got {other:?}"),
    }

    // Nothing of the refused appends is left: no head row, no event.
    for name in ["conflict", "duplicate"] {
        let s = StreamName::new("group", name)?;
        let status = store.status(&s).await?;
        assert_eq!(status.state, StreamState::NotFound, "{name}: {status:?}");
        assert!(store.load(&s, LoadOptions::new()).await?.is_empty());
    }
    // Every success is stored once.
    for n in 0..WRITERS {
        let s = StreamName::new("group", format!("ok-{n}"))?;
        let events = store.load(&s, LoadOptions::new()).await?;
        assert_eq!(events.len(), 1, "ok-{n}");
        assert_eq!(events[0].payload, format!("{{\"n\":{n}}}").into_bytes());
    }
    assert_eq!(store.load(&keyed, LoadOptions::new()).await?.len(), 1);
    store.close().await;
    Ok(())
}
