//! Gap-free global reads on PostgreSQL (RELIABILITY B5) and the stream
//! order case of transaction-id cursors, against the server named by
//! `ESKIT_PG_URL` (a missing URL fails loudly).
//!
//! The tests run one after the other inside one test function: a
//! transaction held open on purpose holds the horizon back for every reader
//! of the cluster, so nothing else of this binary may run meanwhile.

mod common;

use std::collections::HashSet;

use eskit_core::error::StoreError;
use eskit_core::event::{EventId, EventType, ExpectedVersion, GlobalCursor, NewEvent, StreamName};
use eskit_core::store::{AppendOptions, EventStore, GlobalReader, LoadOptions, ReadOptions};
use eskit_pg::{PgOptions, PgStore};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Appends committed while the late transaction is open (B5: 1,000).
const LATER_APPENDS: usize = 1_000;
/// Concurrent writers making them.
const WRITERS: usize = 4;
/// Runs of the late-commit test; half commit, half roll back (B5: 20).
const RUNS: usize = 20;
/// Polls a reader makes while the late transaction is open.
const POLLS_WHILE_OPEN: usize = 5;

async fn open(schema: &str) -> Result<PgStore, Box<dyn std::error::Error + Send + Sync>> {
    Ok(PgStore::connect(PgOptions::new(common::url()?).with_schema(schema)).await?)
}

fn event(payload: String) -> Result<NewEvent, Box<dyn std::error::Error + Send + Sync>> {
    Ok(NewEvent::new(
        EventType::new("Happened")?,
        payload.into_bytes(),
    ))
}

/// Reads every event after `after` in pages of `limit`, once each page
/// (one poll = one page read).
async fn poll(
    store: &PgStore,
    after: GlobalCursor,
    limit: usize,
) -> Result<eskit_core::store::GlobalBatch, StoreError> {
    store.read(ReadOptions::new(after, limit)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering() -> TestResult {
    stream_order_with_an_early_transaction_id().await?;
    late_commit().await?;
    Ok(())
}

/// A caller's transaction got its id (by an earlier write) before another
/// append to stream S committed; its own append to S would sort before
/// that one in cursor order, so it is refused as a conflict, and stream
/// order holds in the global read.
async fn stream_order_with_an_early_transaction_id() -> TestResult {
    let schema = common::fresh_schema("order");
    let store = open(&schema).await?;
    let s = StreamName::new("account", "a-1")?;
    let other = StreamName::new("audit", "x")?;
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![event("v1".into())?],
            AppendOptions::new(),
        )
        .await?;

    let mut tx = store.pool().begin().await?;
    // The caller's transaction writes first: it gets its id now.
    store
        .append_in(
            &mut tx,
            &other,
            ExpectedVersion::Any,
            vec![event("early".into())?],
            AppendOptions::new(),
        )
        .await?;
    // Meanwhile another append to S commits, with a higher id.
    store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![event("v2".into())?],
            AppendOptions::new(),
        )
        .await?;
    // The caller's append to S comes after v2 in version order but would
    // sort before it by transaction id: refused, retryable.
    let refused = store
        .append_in(
            &mut tx,
            &s,
            ExpectedVersion::Any,
            vec![event("v3".into())?],
            AppendOptions::new(),
        )
        .await;
    match refused {
        Err(e @ StoreError::WrongExpectedVersion { .. }) => assert!(e.is_conflict()),
        other => {
            return Err(
                format!("expected a conflict for the out-of-order append, got {other:?}").into(),
            );
        }
    }
    tx.rollback().await?;

    // Run again as a new transaction: it gets a new id and succeeds.
    let mut tx = store.pool().begin().await?;
    store
        .append_in(
            &mut tx,
            &other,
            ExpectedVersion::Any,
            vec![event("early".into())?],
            AppendOptions::new(),
        )
        .await?;
    store
        .append_in(
            &mut tx,
            &s,
            ExpectedVersion::Any,
            vec![event("v3".into())?],
            AppendOptions::new(),
        )
        .await?;
    tx.commit().await?;

    let versions: Vec<u64> = store
        .load(&s, LoadOptions::new())
        .await?
        .iter()
        .map(|e| e.version.get())
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    // Global (cursor) order is consistent with stream order.
    let all = eskit_core::store::GlobalPager::new(&store, ReadOptions::from_start(100))
        .collect()
        .await?;
    let in_s: Vec<String> = all
        .iter()
        .filter(|e| e.stream == s)
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    assert_eq!(in_s, vec!["v1", "v2", "v3"]);
    store.close().await;
    Ok(())
}

/// RELIABILITY B5: a transaction takes a position and stays open while
/// 1,000 later appends commit. No reader passes it while it is open; after
/// it commits its event is delivered in cursor order (first, as its
/// transaction is the oldest); after a rollback the reader moves on within
/// one poll. Every run: 0 skipped, 0 duplicated.
async fn late_commit() -> TestResult {
    let schema = common::fresh_schema("late");
    let writer = open(&schema).await?;
    // The reader is another handle, as another process would be.
    let reader = open(&schema).await?;
    let (mut skipped, mut duplicated, mut delivered) = (0usize, 0usize, 0usize);
    let mut after = reader.head().await?;
    for run in 0..RUNS {
        let commit = run % 2 == 0;
        let late_stream = StreamName::new("late", format!("r{run}"))?;
        let late_id = EventId::new();
        let mut tx = writer.pool().begin().await?;
        let late = writer
            .append_in(
                &mut tx,
                &late_stream,
                ExpectedVersion::NoStream,
                vec![event(format!("late-{run}"))?.with_id(late_id)],
                AppendOptions::new(),
            )
            .await?;
        let late_cursor = late.last_cursor();

        // 1,000 later appends commit, from concurrent writers.
        let mut expected: HashSet<EventId> = HashSet::new();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = writer.clone();
            let ids: Vec<EventId> = (0..LATER_APPENDS / WRITERS)
                .map(|_| EventId::new())
                .collect();
            expected.extend(ids.iter().copied());
            tasks.push(tokio::spawn(async move {
                let s = StreamName::new("later", format!("r{run}-w{w}"))?;
                for (i, id) in ids.into_iter().enumerate() {
                    store
                        .append(
                            &s,
                            ExpectedVersion::Any,
                            vec![event(format!("{run}-{w}-{i}"))?.with_id(id)],
                            AppendOptions::new(),
                        )
                        .await?;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        // While it is open, no reader passes it: nothing after the cursor
        // the reader holds is delivered, and `next` stays before it.
        for _ in 0..POLLS_WHILE_OPEN {
            let page = poll(&reader, after, LATER_APPENDS + 10).await?;
            assert!(
                page.events.is_empty(),
                "run {run}: {} events delivered past an open transaction",
                page.events.len()
            );
            assert!(
                page.next < late_cursor,
                "run {run}: next passed the open transaction"
            );
            after = page.next;
        }
        if commit {
            tx.commit().await?;
            expected.insert(late_id);
        } else {
            tx.rollback().await?;
        }
        // One poll delivers everything: the late event first (its
        // transaction is the oldest), then the 1,000.
        let page = poll(&reader, after, LATER_APPENDS + 10).await?;
        let got: Vec<EventId> = page.events.iter().map(|e| e.id).collect();
        if commit {
            assert_eq!(
                got.first(),
                Some(&late_id),
                "run {run}: the late event is not first"
            );
        }
        assert!(
            page.events
                .windows(2)
                .all(|w| w[0].cursor() < w[1].cursor()),
            "run {run}: events out of cursor order"
        );
        let mut seen = HashSet::new();
        for id in &got {
            if !seen.insert(*id) {
                duplicated += 1;
            }
        }
        skipped += expected.difference(&seen).count();
        delivered += got.len();
        assert_eq!(
            seen.len(),
            expected.len(),
            "run {run}: delivered set differs"
        );
        after = page.next;
        let again = poll(&reader, after, 10).await?;
        assert!(again.events.is_empty(), "run {run}: events delivered twice");
    }
    assert_eq!((skipped, duplicated), (0, 0));
    // One line for the report: runs, events delivered, skipped, duplicated.
    #[allow(clippy::print_stdout)]
    {
        println!(
            "late commit: {RUNS} runs, {delivered} delivered, {skipped} skipped, {duplicated} duplicated"
        );
    }
    writer.close().await;
    reader.close().await;
    Ok(())
}
