//! RELIABILITY C1 on memory and SQLite (the scenario is
//! `eskit_testing::processor::delivery`'s): concurrent writers while several
//! subscriptions (two filtered) run from empty; each sees exactly its part
//! of the final log, in cursor order, each event once. Plus resume from a
//! checkpoint, the poll fallback of a broken feed and a cursor that goes
//! back.

mod common;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eskit_core::{
    event::{EventType, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName},
    memory::{MemoryCheckpointStore, MemoryStore},
    store::{AppendOptions, CheckpointStore, CommitFeed, EventStore, GlobalReader, ReadOptions},
};
use eskit_processor::{Subscription, SubscriptionError, SubscriptionOptions, SubscriptionState};
use eskit_testing::processor::delivery::c1_every_subscription_sees_its_part_once_in_order;

type TestResult = Result<(), eskit_core::error::BoxError>;

/// What a subscription saw of one event.
type Seen = (GlobalCursor, String, u64);

fn key(e: &RawEvent) -> Seen {
    (e.cursor(), e.stream.to_string(), e.version.get())
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn push_all(&self, events: &[RawEvent]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(events.iter().map(key));
    }
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c1_memory_every_subscription_sees_its_part_once_in_order() -> TestResult {
    c1_every_subscription_sees_its_part_once_in_order(&common::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c1_sqlite_every_subscription_sees_its_part_once_in_order() -> TestResult {
    c1_every_subscription_sees_its_part_once_in_order(&common::Sqlite::new("c1")?).await
}

/// A run that stops resumes from its checkpoint: the second run sees only
/// what came after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_resumes_from_the_checkpoint() -> TestResult {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpointStore::new();
    let s = StreamName::new("order", "o-1")?;
    let ty = EventType::new("Placed")?;
    let append = |n: usize| {
        let events = (0..n)
            .map(|i| NewEvent::new(ty.clone(), vec![i as u8]))
            .collect();
        store.append(&s, ExpectedVersion::Any, events, AppendOptions::new())
    };
    append(10).await?;
    for (round, want) in [(0, 10usize), (1, 5)] {
        if round == 1 {
            append(5).await?;
        }
        let log = Log::default();
        let sink = log.clone();
        let sub = Subscription::new(
            store.clone(),
            checkpoints.clone(),
            SubscriptionOptions::new("resume")?.with_batch_size(3)?,
            move |events: &[RawEvent]| {
                sink.push_all(events);
                Ok(())
            },
        );
        let health = sub.health();
        sub.run(async move {
            while health.snapshot().state != SubscriptionState::Live {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await?;
        assert_eq!(log.take().len(), want, "events delivered in run {round}");
    }
    Ok(())
}

/// With the feed broken, a caught-up subscription still sees new commits
/// by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_feed_falls_back_to_polling() -> TestResult {
    let store = MemoryStore::new();
    let log = Log::default();
    let sink = log.clone();
    let sub = Subscription::new(
        BrokenFeed(store.clone()),
        MemoryCheckpointStore::new(),
        SubscriptionOptions::new("polling")?.with_poll_interval(Duration::from_millis(5))?,
        move |events: &[RawEvent]| {
            sink.push_all(events);
            Ok(())
        },
    );
    let health = sub.health();
    let task = tokio::spawn(sub.run(std::future::pending()));
    let s = StreamName::new("order", "o-2")?;
    store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new(EventType::new("Placed")?, vec![])],
            AppendOptions::new(),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while log
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "polling never read the commit"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!health.snapshot().feed_ok);
    task.abort();
    Ok(())
}

/// A feed that breaks and is repaired (PostgreSQL's LISTEN connection lost
/// with a server restart, then reconnected): health reports the feed down
/// while it is broken, and working again once it is repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_repaired_feed() -> TestResult {
    let feed = RepairableFeed {
        store: MemoryStore::new(),
        notifier: eskit_core::backend::CommitNotifier::new(),
    };
    let sub = Subscription::new(
        feed.clone(),
        MemoryCheckpointStore::new(),
        SubscriptionOptions::new("repaired")?.with_poll_interval(Duration::from_millis(5))?,
        |_: &[RawEvent]| Ok(()),
    );
    let health = sub.health();
    let task = tokio::spawn(sub.run(std::future::pending()));
    let wait_for = |want: bool| {
        let health = health.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while health.snapshot().feed_ok != want {
                if tokio::time::Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            true
        }
    };
    // Live and listening first, so the breakage reaches its listener.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while health.snapshot().state != SubscriptionState::Live || feed.notifier.listeners() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never went live");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    feed.notifier.break_feed("connection lost");
    assert!(wait_for(false).await, "a broken feed was not reported");
    // A commit of this process wakes the listener while the feed is still
    // down: that is no repair.
    feed.notifier.notify(eskit_core::event::Position::new(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !health.snapshot().feed_ok,
        "a local commit was taken for a repair"
    );
    feed.notifier.repair();
    assert!(
        wait_for(true).await,
        "the repaired feed is still reported down"
    );
    task.abort();
    Ok(())
}

/// A memory store with a commit feed the test breaks and repairs.
#[derive(Clone)]
struct RepairableFeed {
    store: MemoryStore,
    notifier: eskit_core::backend::CommitNotifier,
}

impl GlobalReader for RepairableFeed {
    async fn read(
        &self,
        o: ReadOptions,
    ) -> Result<eskit_core::store::GlobalBatch, eskit_core::error::StoreError> {
        self.store.read(o).await
    }
    async fn head(&self) -> Result<GlobalCursor, eskit_core::error::StoreError> {
        self.store.head().await
    }
}

impl CommitFeed for RepairableFeed {
    fn listen(&self) -> Result<eskit_core::store::Listener, eskit_core::store::FeedError> {
        self.notifier.listen()
    }
}

/// A store whose commit feed is always broken.
#[derive(Clone)]
struct BrokenFeed(MemoryStore);

impl GlobalReader for BrokenFeed {
    async fn read(
        &self,
        o: ReadOptions,
    ) -> Result<eskit_core::store::GlobalBatch, eskit_core::error::StoreError> {
        self.0.read(o).await
    }
    async fn head(&self) -> Result<GlobalCursor, eskit_core::error::StoreError> {
        self.0.head().await
    }
}

impl CommitFeed for BrokenFeed {
    fn listen(&self) -> Result<eskit_core::store::Listener, eskit_core::store::FeedError> {
        Err(eskit_core::store::FeedError::Broken {
            reason: "no connection".into(),
        })
    }
}

/// A backend whose `next` goes back is reported, not skipped over.
#[tokio::test(flavor = "current_thread")]
async fn a_cursor_that_goes_back_is_an_error() -> TestResult {
    let store = MemoryStore::new();
    let s = StreamName::new("order", "o-3")?;
    store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new(EventType::new("Placed")?, vec![])],
            AppendOptions::new(),
        )
        .await?;
    let checkpoints = MemoryCheckpointStore::new();
    checkpoints
        .save(
            "back",
            GlobalCursor::at(eskit_core::event::Position::new(5)),
        )
        .await?;
    let sub = Subscription::new(
        Backwards(store),
        checkpoints,
        SubscriptionOptions::new("back")?,
        |_: &[RawEvent]| Ok(()),
    );
    match sub.run(std::future::pending()).await {
        Err(SubscriptionError::CursorWentBack { from, .. }) => {
            assert_eq!(from.position().get(), 5);
            Ok(())
        }
        other => Err(format!("expected CursorWentBack, got {other:?}").into()),
    }
}

/// A broken backend: its pages always resume from the start.
struct Backwards(MemoryStore);

impl GlobalReader for Backwards {
    async fn read(
        &self,
        o: ReadOptions,
    ) -> Result<eskit_core::store::GlobalBatch, eskit_core::error::StoreError> {
        let mut page = self.0.read(o).await?;
        page.next = GlobalCursor::START;
        Ok(page)
    }
    async fn head(&self) -> Result<GlobalCursor, eskit_core::error::StoreError> {
        self.0.head().await
    }
}

impl CommitFeed for Backwards {
    fn listen(&self) -> Result<eskit_core::store::Listener, eskit_core::store::FeedError> {
        self.0.listen()
    }
}

/// A backend that holds later commits back on its first read (as
/// PostgreSQL does behind a transaction still open): one event, not caught
/// up. The subscription then asks for what is left of its checkpoint
/// interval, so it never handles more than `checkpoint_every` events past
/// the saved checkpoint, the most a crash delivers again.
#[tokio::test(flavor = "current_thread")]
async fn a_short_page_does_not_stretch_the_checkpoint_interval() -> TestResult {
    const EVERY: usize = 10;
    const EVENTS: usize = 45;
    let store = MemoryStore::new();
    let s = StreamName::new("order", "o-4")?;
    for _ in 0..EVENTS / 5 {
        let events = (0..5)
            .map(|_| Ok(NewEvent::new(EventType::new("Placed")?, vec![])))
            .collect::<Result<Vec<_>, eskit_core::error::ValidationError>>()?;
        store
            .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
    }
    let reader = HoldsBackOnce {
        store,
        limits: Arc::new(Mutex::new(Vec::new())),
    };
    let limits = Arc::clone(&reader.limits);
    let log = Log::default();
    let seen = log.clone();
    let done = Arc::new(tokio::sync::Notify::new());
    let all_seen = Arc::clone(&done);
    let sub = Subscription::new(
        reader,
        MemoryCheckpointStore::new(),
        SubscriptionOptions::new("held")?
            .with_batch_size(EVERY)?
            .with_checkpoint_every(EVERY as u64)?,
        move |events: &[RawEvent]| {
            seen.push_all(events);
            if seen.0.lock().unwrap_or_else(PoisonError::into_inner).len() >= EVENTS {
                all_seen.notify_one();
            }
            Ok(())
        },
    );
    tokio::time::timeout(Duration::from_secs(10), sub.run(done.notified())).await??;
    let handled = log.take();
    assert_eq!(handled.len(), EVENTS, "every event once");
    let limits = limits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    // The short page left 9 of the interval: the next read asks for 9, and
    // only the read after the save for a whole batch again.
    assert_eq!(
        limits.get(..3),
        Some(&[EVERY, EVERY - 1, EVERY][..]),
        "{limits:?}"
    );
    Ok(())
}

/// Returns a single event, not caught up, on its first read; then reads
/// as the store does. Records the limit of every read.
struct HoldsBackOnce {
    store: MemoryStore,
    limits: Arc<Mutex<Vec<usize>>>,
}

impl GlobalReader for HoldsBackOnce {
    async fn read(
        &self,
        o: ReadOptions,
    ) -> Result<eskit_core::store::GlobalBatch, eskit_core::error::StoreError> {
        let first = {
            let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
            limits.push(o.limit());
            limits.len() == 1
        };
        let mut page = self.store.read(o).await?;
        if first {
            page.events.truncate(1);
            if let Some(e) = page.events.last() {
                page.next = e.cursor();
            }
        }
        Ok(page)
    }
    async fn head(&self) -> Result<GlobalCursor, eskit_core::error::StoreError> {
        self.store.head().await
    }
}

impl CommitFeed for HoldsBackOnce {
    fn listen(&self) -> Result<eskit_core::store::Listener, eskit_core::store::FeedError> {
        self.store.listen()
    }
}
