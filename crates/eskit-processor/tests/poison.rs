//! RELIABILITY C3, the poison event: the handler always fails on one event
//! in 10,000. With the dead-letter policy it is retried the configured number
//! of times, dead-lettered with its position and error, and the other 9,999
//! events are handled; with "halt" (the default) the subscription stops on
//! it and never skips it. On memory and SQLite (with each one's dead-letter
//! store).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eskit_core::{
    event::{EventType, ExpectedVersion, NewEvent, Position, RawEvent, StreamName},
    handler::RetryPolicy,
    memory::{MemoryCheckpointStore, MemoryDeadLetterStore, MemoryStore},
    store::{
        AppendOptions, CheckpointStore, CommitFeed, DeadLetterStore, EventStore, GlobalReader,
    },
};
use eskit_processor::{
    ReplayError, Subscription, SubscriptionError, SubscriptionOptions, SubscriptionState,
    replay_dead_letter, replay_dead_letters,
};
use eskit_sqlite::SqliteStore;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const EVENTS: u64 = 10_000;
const POISON: u64 = 4_321;
const RETRIES: u32 = 5;

async fn seed<S: EventStore>(store: &S) -> TestResult {
    let ty = EventType::new("Placed")?;
    let mut i = 0;
    while i < EVENTS {
        let s = StreamName::new("order", format!("o-{}", i % 11))?;
        let events = (0..100)
            .map(|_| NewEvent::new(ty.clone(), vec![]))
            .collect();
        store
            .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
        i += 100;
    }
    Ok(())
}

struct Counts {
    handled: Mutex<Vec<u64>>,
    poison_tries: AtomicU32,
}

fn options(name: &str) -> Result<SubscriptionOptions, Box<dyn std::error::Error>> {
    Ok(SubscriptionOptions::new(name)?
        .with_batch_size(250)?
        .with_retry(RetryPolicy::new(RETRIES)?.with_base_delay(Duration::from_millis(1))))
}

fn handler(
    counts: &Arc<Counts>,
) -> impl Fn(&[RawEvent]) -> Result<(), eskit_core::error::BoxError> + Send + Sync + use<> {
    let counts = Arc::clone(counts);
    move |events: &[RawEvent]| {
        if events.iter().any(|e| e.position.get() == POISON) {
            if events.len() == 1 {
                counts.poison_tries.fetch_add(1, Ordering::SeqCst);
            }
            return Err(format!("cannot price order at {POISON}").into());
        }
        counts
            .handled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(events.iter().map(|e| e.position.get()));
        Ok(())
    }
}

async fn dead_letter<S, L>(store: S, letters: L) -> TestResult
where
    S: EventStore + GlobalReader + CommitFeed + Clone + 'static,
    L: DeadLetterStore + Clone + 'static,
{
    seed(&store).await?;
    let counts = Arc::new(Counts {
        handled: Mutex::new(Vec::new()),
        poison_tries: AtomicU32::new(0),
    });
    let sub = Subscription::new(
        store.clone(),
        MemoryCheckpointStore::new(),
        options("priced")?,
        handler(&counts),
    )
    .with_dead_letters(letters.clone());
    let health = sub.health();
    sub.run(async move {
        while health.snapshot().state != SubscriptionState::Live {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await?;
    assert_eq!(
        counts.poison_tries.load(Ordering::SeqCst),
        1 + RETRIES,
        "the poison event alone: one try and {RETRIES} retries"
    );
    let mut handled = counts
        .handled
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    handled.sort_unstable();
    handled.dedup();
    assert_eq!(
        handled.len() as u64,
        EVENTS - 1,
        "every other event handled"
    );
    assert!(!handled.contains(&POISON));
    let kept = letters.list("priced", 0, 10).await?;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].event.position, Position::new(POISON));
    assert_eq!(kept[0].attempts, 1 + RETRIES);
    assert!(
        kept[0].error.contains("cannot price order"),
        "{}",
        kept[0].error
    );
    // Replayed with the handler still broken: refused, and the letter stays.
    let again = replay_dead_letters(&letters, "priced", &handler(&counts)).await;
    assert!(
        matches!(again, Err(ReplayError::Handler { id, .. }) if id == kept[0].id),
        "{again:?}"
    );
    assert_eq!(letters.list("priced", 0, 10).await?.len(), 1);
    // Once fixed, the replay handles the poison event and removes the letter.
    let fixed_saw = Arc::new(Mutex::new(Vec::new()));
    let saw = Arc::clone(&fixed_saw);
    let fixed = move |events: &[RawEvent]| -> Result<(), eskit_core::error::BoxError> {
        saw.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(events.iter().map(|e| e.position.get()));
        Ok(())
    };
    assert_eq!(replay_dead_letters(&letters, "priced", &fixed).await?, 1);
    assert_eq!(
        *fixed_saw.lock().unwrap_or_else(PoisonError::into_inner),
        vec![POISON]
    );
    assert!(letters.list("priced", 0, 10).await?.is_empty());
    assert!(
        replay_dead_letter(&letters, kept[0].id, &fixed)
            .await?
            .is_none()
    );
    Ok(())
}

async fn halt<S>(store: S) -> TestResult
where
    S: EventStore + GlobalReader + CommitFeed + Clone + 'static,
{
    seed(&store).await?;
    let counts = Arc::new(Counts {
        handled: Mutex::new(Vec::new()),
        poison_tries: AtomicU32::new(0),
    });
    let checkpoints = MemoryCheckpointStore::new();
    let sub = Subscription::new(
        store.clone(),
        checkpoints.clone(),
        options("halting")?.with_checkpoint_every(1)?,
        handler(&counts),
    );
    match sub.run(std::future::pending()).await {
        Err(SubscriptionError::Handler { attempts, .. }) => assert_eq!(attempts, 1 + RETRIES),
        other => return Err(format!("expected the run to halt, got {other:?}").into()),
    }
    let saved = checkpoints.load("halting").await?.ok_or("no checkpoint")?;
    assert!(
        saved.position().get() < POISON,
        "the checkpoint {saved} passed the poison event"
    );
    let handled = counts
        .handled
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(
        handled.iter().all(|p| *p < POISON),
        "events after the poison were handled"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_poison_is_dead_lettered_and_the_rest_handled() -> TestResult {
    dead_letter(MemoryStore::new(), MemoryDeadLetterStore::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_poison_halts_without_skipping() -> TestResult {
    halt(MemoryStore::new()).await
}

fn sqlite(name: &str) -> Result<(SqliteStore, std::path::PathBuf), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("eskit-processor-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok((SqliteStore::open(dir.join("events.db"))?, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_is_dead_lettered_and_the_rest_handled() -> TestResult {
    let (store, dir) = sqlite("poison-dl")?;
    let r = dead_letter(store.clone(), store.dead_letters()).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_halts_without_skipping() -> TestResult {
    let (store, dir) = sqlite("poison-halt")?;
    let r = halt(store.clone()).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    r
}
