//! The leader-lease check of the processor issue (in one process): two
//! instances of one subscription with
//! a leader lease over the same SQLite file. At most one handles events at
//! any moment; when the leader stops, the other takes over from the
//! checkpoint; nothing is lost, and redeliveries stay within one checkpoint
//! interval. Killing the leader's process, so that its lease must expire,
//! is `leader_kill.rs`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eskit_core::{
    event::{EventType, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName},
    store::{AppendOptions, EventStore, GlobalPager, GlobalReader, ReadOptions},
};
use eskit_processor::{Subscription, SubscriptionOptions, SubscriptionState};
use eskit_sqlite::SqliteStore;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const EVENTS: usize = 3_000;
const CHECKPOINT_EVERY: u64 = 100;

#[derive(Default)]
struct Shared {
    active: AtomicUsize,
    most_active: AtomicUsize,
    seen: Mutex<Vec<GlobalCursor>>,
}

fn instance(
    store: &SqliteStore,
    shared: &Arc<Shared>,
) -> Result<
    Subscription<
        SqliteStore,
        eskit_sqlite::SqliteCheckpointStore,
        impl eskit_processor::BatchHandler + use<>,
    >,
    Box<dyn std::error::Error>,
> {
    let shared = Arc::clone(shared);
    let options = SubscriptionOptions::new("leader-test")?
        .with_batch_size(50)?
        .with_checkpoint_every(CHECKPOINT_EVERY)?;
    Ok(Subscription::new(
        store.clone(),
        store.checkpoints(),
        options,
        move |events: &[RawEvent]| {
            let now = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
            shared.most_active.fetch_max(now, Ordering::SeqCst);
            // Long enough for an overlap to show if two instances ran.
            std::thread::sleep(Duration::from_millis(2));
            shared
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(events.iter().map(RawEvent::cursor));
            shared.active.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        },
    )
    .with_leader(store.locks_with_lease(Duration::from_millis(300))?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_at_a_time_and_the_next_resumes_from_the_checkpoint() -> TestResult {
    let dir = std::env::temp_dir().join(format!("eskit-processor-leader-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("events.db");
    // Two handles on one file stand in for two nodes.
    let (node_a, node_b) = (SqliteStore::open(&path)?, SqliteStore::open(&path)?);
    node_a.watch_external_writes(Duration::from_millis(5))?;
    let _watch_b = node_b.watch_external_writes(Duration::from_millis(5))?;
    let shared = Arc::new(Shared::default());
    let a = instance(&node_a, &shared)?;
    let b = instance(&node_b, &shared)?;
    let (health_a, health_b) = (a.health(), b.health());
    let mut task_a = Some(tokio::spawn(a.run(std::future::pending())));
    // A takes the lease first; B waits for it.
    while health_a.snapshot().leader.is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let token_a = health_a.snapshot().leader;
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let task_b = tokio::spawn(b.run(async move {
        let _ = stopped_b.await;
    }));

    let ty = EventType::new("Placed")?;
    for i in 0..EVENTS / 10 {
        let s = StreamName::new("order", format!("o-{}", i % 13))?;
        let events = (0..10)
            .map(|k| NewEvent::new(ty.clone(), vec![k]))
            .collect();
        node_a
            .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
        if i == EVENTS / 40 {
            // A is the leader and busy: stop it mid-stream.
            while health_a.snapshot().handled < 200 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(health_b.snapshot().leader.is_none(), "two leaders");
            if let Some(t) = task_a.take() {
                t.abort();
                let _ = t.await;
            }
        }
    }
    let head = node_a.head().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(health_b.snapshot().cursor >= head
        && health_b.snapshot().state == SubscriptionState::Live)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B did not take over and catch up: {:?}",
            health_b.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let token_b = health_b.snapshot().leader;
    let _ = stop_b.send(());
    task_b.await??;

    assert_eq!(
        shared.most_active.load(Ordering::SeqCst),
        1,
        "instances handling at once"
    );
    assert!(
        token_b > token_a,
        "the new leader's token {token_b:?} is not above {token_a:?}"
    );
    let all: Vec<GlobalCursor> = GlobalPager::new(&node_a, ReadOptions::from_start(1000))
        .collect()
        .await?
        .iter()
        .map(RawEvent::cursor)
        .collect();
    assert_eq!(all.len(), EVENTS);
    let seen = shared
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let unique: HashSet<GlobalCursor> = seen.iter().copied().collect();
    let lost = all.iter().filter(|c| !unique.contains(c)).count();
    let redelivered = seen.len() - unique.len();
    assert_eq!(lost, 0, "events no instance handled");
    assert!(
        redelivered as u64 <= CHECKPOINT_EVERY + 50,
        "{redelivered} events redelivered, more than one checkpoint interval plus a page"
    );
    node_a.close().await;
    node_b.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
