//! RELIABILITY C2 in its simplest form: a subscription driving a
//! transactional read model (a projection sink) is aborted at random
//! moments while a writer appends, on memory and SQLite (the scenario is
//! `eskit_testing::processor::exactly_once`'s, which PostgreSQL runs too).
//! Each page's effects and its cursor commit together, so the read model
//! holds every event's effect exactly once: 0 redelivered effects, 0 lost.
//! A second test does the same on SQLite with a child process (this test
//! binary, run again) killed with SIGKILL.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use eskit_core::{
    error::BoxError,
    event::{EventType, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName},
    rt::block_on,
    store::{AppendOptions, EventStore, GlobalReader, ProjectionSink, ReadOptions},
};
use eskit_processor::{Subscription, SubscriptionOptions, SubscriptionState};
use eskit_sqlite::{SqliteStore, WriteTx};
use eskit_testing::processor::exactly_once::{
    Rng, a_subscriber_aborted_at_random_applies_every_event_exactly_once as aborted_at_random,
};

type TestResult = Result<(), BoxError>;

const EVENTS_PER_APPEND: usize = 4;
const NAME: &str = "effects";

fn all_events(store: &SqliteStore) -> Result<Vec<RawEvent>, BoxError> {
    let mut out = Vec::new();
    let mut after = GlobalCursor::START;
    loop {
        let page = block_on(store.read(ReadOptions::new(after, 1000)))?;
        if page.events.is_empty() {
            return Ok(out);
        }
        after = page.next;
        out.extend(page.events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_subscriber_aborted_at_random_applies_every_event_exactly_once() -> TestResult {
    aborted_at_random(&common::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_subscriber_aborted_at_random_applies_every_event_exactly_once() -> TestResult {
    aborted_at_random(&common::Sqlite::new("c2-aborted")?).await
}

/// Set in the child process of the multi-process test: the database it
/// subscribes to.
const CHILD_DB: &str = "ESKIT_C2_CHILD_DB";
const MP_EVENTS: usize = 2_000;
const MP_KILLS: usize = 20;

/// The child: applies pages slowly (three milliseconds each, on the writer
/// thread) until it is killed.
async fn child(db: &str) -> TestResult {
    let store = SqliteStore::open(db)?;
    let slow = |tx: &mut WriteTx<'_>, events: &[RawEvent]| -> Result<(), BoxError> {
        eskit_sqlite::SqliteProjection::apply(&common::Effects, tx, events)?;
        std::thread::sleep(Duration::from_millis(3));
        Ok(())
    };
    let options = SubscriptionOptions::new(NAME)?.with_batch_size(7)?;
    Subscription::with_sink(store.clone(), store.projection_sink(slow), options)
        .run(std::future::pending())
        .await?;
    Ok(())
}

/// The same check with a real crash: a child process running the
/// subscription is killed with SIGKILL at random moments, 20 times; a last
/// in-process run finishes the log. Every event's effect is on the read
/// model exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_process_killed_at_random_applies_every_event_exactly_once() -> TestResult {
    if let Ok(db) = std::env::var(CHILD_DB) {
        return child(&db).await;
    }
    let (mut rng, seed) = Rng::from_env_or_clock();
    let dir = std::env::temp_dir().join(format!("eskit-processor-c2p-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("events.db");
    let store = SqliteStore::open(&db)?;
    store
        .write_transaction(|tx| {
            tx.connection().execute_batch(
                "CREATE TABLE effects (event_id BLOB NOT NULL, position INTEGER NOT NULL)",
            )
        })
        .await?;
    for i in 0..MP_EVENTS / EVENTS_PER_APPEND {
        let s = StreamName::new("order", format!("o-{i}"))?;
        let events = (0..EVENTS_PER_APPEND)
            .map(|_| Ok(NewEvent::new(EventType::new("Placed")?, b"{}".to_vec())))
            .collect::<Result<Vec<_>, eskit_core::event::InvalidName>>()?;
        store
            .append(&s, ExpectedVersion::NoStream, events, AppendOptions::new())
            .await?;
    }
    let exe = std::env::current_exe()?;
    let sink = store.projection_sink(common::Effects);
    let mut cursors = Vec::new();
    for _ in 0..MP_KILLS {
        let mut child = std::process::Command::new(&exe)
            .args([
                "a_subscriber_process_killed_at_random_applies_every_event_exactly_once",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_DB, &db)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        tokio::time::sleep(Duration::from_millis(10 + rng.next_u64() % 70)).await;
        // SIGKILL on Unix: no destructor, no rollback by the child.
        child.kill()?;
        child.wait()?;
        cursors.push(sink.cursor(NAME).await?.map_or(0, |c| c.position().get()));
    }
    println!("cursor after each kill: {cursors:?}");

    let head = all_events(&store)?
        .last()
        .map(RawEvent::cursor)
        .ok_or("no events")?;
    let options = SubscriptionOptions::new(NAME)?.with_batch_size(7)?;
    let sub = Subscription::with_sink(
        store.clone(),
        store.projection_sink(common::Effects),
        options,
    );
    let health = sub.health();
    let stop = async move {
        loop {
            let h = health.snapshot();
            if h.state == SubscriptionState::Live && h.cursor >= head {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    sub.run(stop).await?;

    let events = all_events(&store)?;
    assert_eq!(events.len(), MP_EVENTS);
    let counts: HashMap<Vec<u8>, i64> = store
        .write_transaction(|tx| {
            let mut s = tx
                .connection()
                .prepare("SELECT event_id, count(*) FROM effects GROUP BY event_id")?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<HashMap<_, _>, _>>()
        })
        .await?;
    let redelivered: i64 = counts.values().map(|c| c - 1).filter(|c| *c > 0).sum();
    let lost = events
        .iter()
        .filter(|e| !counts.contains_key(&e.id.to_bytes()[..]))
        .count();
    println!("events {MP_EVENTS}, kills {MP_KILLS}, redelivered {redelivered}, lost {lost}");
    assert_eq!(redelivered, 0, "an effect was applied twice (seed {seed})");
    assert_eq!(lost, 0, "an event's effect is missing (seed {seed})");
    assert_eq!(counts.len(), events.len(), "unexpected effects");
    let integrity = store.integrity_check().await?;
    assert!(integrity.is_empty(), "{integrity:?}");
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
