//! The command handler: concurrency with conflict retry, snapshots,
//! middleware, idempotent commands.
#![allow(clippy::expect_used, clippy::panic)] // test fixtures

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Counter, CounterCommand, CounterEvent, RacingStore, TextCodec, U64Codec};
use eskit_core::{
    error::StoreError,
    event::{
        EventType, ExpectedVersion, Metadata, NewEvent, Principal, StreamName, Timestamp, Version,
    },
    handler::{
        CommandHandler, CommandOptions, ConfigError, HandleError, LoggingMiddleware, RetryPolicy,
        SingleWriter, SnapshotPolicy,
    },
    memory::{MemoryLockRegistry, MemorySnapshotStore, MemoryStore},
    rt::block_on,
    store::{AppendOptions, EventStore, LoadOptions, Snapshot, SnapshotStore},
    typed::{EventSchema, TypedStore},
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn typed(store: MemoryStore) -> TypedStore<MemoryStore, CounterEvent> {
    TypedStore::new(store, EventSchema::new(TextCodec))
}

fn counter() -> StreamName {
    StreamName::new("counter", "c-1").expect("valid")
}

/// 8 tasks x 1,000 commands on one stream, retrying on conflict: exactly
/// 8,000 events, versions 1..=8000 contiguous, none duplicated.
#[test]
fn concurrent_commands_with_conflict_retry_lose_nothing() -> TestResult {
    const TASKS: usize = 8;
    const COMMANDS: usize = 1_000;
    let store = MemoryStore::new();
    let snapshots = MemorySnapshotStore::new();
    let conflicts = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(
        CommandHandler::builder(Counter, typed(store.clone()))
            .with_snapshots(snapshots.clone(), U64Codec, SnapshotPolicy::every(100)?)
            .with_conflict_retry(
                RetryPolicy::new(1_000)?
                    .with_base_delay(Duration::from_micros(50))
                    .with_max_delay(Duration::from_millis(5)),
            )
            .with_middleware(CountConflicts(Arc::clone(&conflicts)))
            .build()?,
    );
    let threads: Vec<_> = (0..TASKS)
        .map(|t| {
            let handler = Arc::clone(&handler);
            thread::spawn(move || -> Result<(), String> {
                for i in 0..COMMANDS {
                    // Each command adds a distinct amount so duplicates are visible.
                    let amount = (t * COMMANDS + i + 1) as u64;
                    block_on(handler.handle(&counter(), &CounterCommand::Add(amount)))
                        .map_err(|e| eskit_core::error::error_chain(&e))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "worker panicked")??;
    }
    assert!(
        conflicts.load(Ordering::Relaxed) > 0,
        "the writers did contend"
    );

    let events = block_on(store.load(&counter(), LoadOptions::new()))?;
    assert_eq!(events.len(), TASKS * COMMANDS);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.version, Version::new(i as u64 + 1), "versions contiguous");
    }
    let mut amounts: Vec<u64> = events
        .iter()
        .map(|e| std::str::from_utf8(&e.payload).map(|s| s.parse::<u64>()))
        .collect::<Result<Result<_, _>, _>>()??;
    amounts.sort_unstable();
    amounts.dedup();
    assert_eq!(amounts.len(), TASKS * COMMANDS, "no command applied twice");
    let n = (TASKS * COMMANDS) as u64;
    let (state, version) = block_on(handler.load_state(&counter()))?;
    assert_eq!((state, version), (n * (n + 1) / 2, Version::new(n)));
    assert!(!snapshots.is_empty(), "snapshots were taken along the way");
    Ok(())
}

#[test]
fn without_retry_a_conflict_is_returned() -> TestResult {
    let store = MemoryStore::new();
    let handler = CommandHandler::new(Counter, typed(store.clone()));
    block_on(handler.handle(&counter(), &CounterCommand::Add(1)))?;
    // Another writer appends between our load and our append: simulate by
    // a middleware-free race, appending directly after a load.
    let (_, version) = block_on(handler.load_state(&counter()))?;
    block_on(store.append(
        &counter(),
        ExpectedVersion::Exact(version),
        vec![NewEvent::new(EventType::new("Added")?, b"5".to_vec()).with_codec("text")],
        AppendOptions::new(),
    ))?;
    let stale = block_on(handler.store().append(
        &counter(),
        ExpectedVersion::Exact(version),
        vec![CounterEvent::Added(1)],
    ));
    assert!(matches!(stale, Err(e) if e.is_conflict()));
    Ok(())
}

#[test]
fn rejections_and_empty_decisions() -> TestResult {
    let store = MemoryStore::new();
    let handler = CommandHandler::new(Counter, typed(store.clone()));
    block_on(handler.handle(&counter(), &CounterCommand::Add(u64::MAX)))?;
    let r = block_on(handler.handle(&counter(), &CounterCommand::Add(1)));
    assert!(matches!(r, Err(HandleError::Rejected(common::Overflow))));
    let nothing = block_on(handler.handle(&counter(), &CounterCommand::Add(0)))?;
    assert!(nothing.events.is_empty());
    assert_eq!(nothing.version, Version::new(1));
    assert_eq!(block_on(store.stream_version(&counter()))?, Version::new(1));
    Ok(())
}

#[test]
fn snapshots_are_taken_used_invalidated_and_rebuilt() -> TestResult {
    let store = MemoryStore::new();
    let snaps = MemorySnapshotStore::new();
    let handler = CommandHandler::builder(Counter, typed(store.clone()))
        .with_snapshots(
            snaps.clone(),
            U64Codec,
            SnapshotPolicy::every(3)?.with_schema_version(2)?,
        )
        .build()?;
    for _ in 0..7 {
        block_on(handler.handle(&counter(), &CounterCommand::Add(2)))?;
    }
    let snap = block_on(SnapshotStore::load(&snaps, &counter()))?.ok_or("no snapshot")?;
    assert_eq!((snap.version, snap.schema_version), (Version::new(6), 2));
    assert_eq!(U64Codec.decode_u64(&snap.state), 12);

    // The snapshot is used: doctor it, and the loaded state shows it.
    let mut doctored = snap.clone();
    doctored.state = 100u64.to_le_bytes().to_vec();
    block_on(snaps.save(doctored))?;
    assert_eq!(
        block_on(handler.load_state(&counter()))?,
        (102, Version::new(7))
    );

    // A snapshot with another schema version is ignored and removed.
    let mut old = snap.clone();
    old.schema_version = 1;
    block_on(snaps.save(old))?;
    assert_eq!(
        block_on(handler.load_state(&counter()))?,
        (14, Version::new(7))
    );
    assert!(block_on(SnapshotStore::load(&snaps, &counter()))?.is_none());

    // An undecodable snapshot is ignored and removed, never an error.
    block_on(snaps.save(Snapshot {
        state: vec![1, 2, 3],
        ..snap.clone()
    }))?;
    assert_eq!(
        block_on(handler.load_state(&counter()))?,
        (14, Version::new(7))
    );
    assert!(block_on(SnapshotStore::load(&snaps, &counter()))?.is_none());

    // Rebuild writes a fresh snapshot at the current version.
    assert_eq!(
        block_on(handler.rebuild_snapshot(&counter()))?,
        Some(Version::new(7))
    );
    let rebuilt = block_on(SnapshotStore::load(&snaps, &counter()))?.ok_or("no snapshot")?;
    assert_eq!(U64Codec.decode_u64(&rebuilt.state), 14);
    Ok(())
}

#[test]
fn snapshot_ahead_of_the_stream_is_dropped_after_a_conflict() -> TestResult {
    let store = MemoryStore::new();
    let snaps = MemorySnapshotStore::new();
    let handler = CommandHandler::builder(Counter, typed(store.clone()))
        .with_snapshots(snaps.clone(), U64Codec, SnapshotPolicy::every(1)?)
        .build()?;
    let other = StreamName::new("counter", "fresh")?;
    // A snapshot claims version 5 for a stream that has no events.
    block_on(snaps.save(Snapshot {
        stream: other.clone(),
        version: Version::new(5),
        schema_version: 1,
        codec: "u64-le".into(),
        state: 9u64.to_le_bytes().to_vec(),
        created_at: Timestamp::now(),
    }))?;
    let first = block_on(handler.handle(&other, &CounterCommand::Add(1)));
    assert!(matches!(first, Err(e) if e.is_conflict()));
    let second = block_on(handler.handle(&other, &CounterCommand::Add(1)))?;
    assert_eq!((second.state, second.version), (1, Version::new(1)));
    Ok(())
}

#[test]
fn idempotent_commands_and_metadata() -> TestResult {
    let store = MemoryStore::new();
    let handler = CommandHandler::new(Counter, typed(store.clone()));
    let meta = Metadata::new_chain(Principal::user("alice")).with_extra("source", "test");
    let opts = CommandOptions::new()
        .with_metadata(meta.clone())
        .with_idempotency_key("cmd-1");
    let first = block_on(handler.handle_with(&counter(), &CounterCommand::Add(5), &opts))?;
    let again = block_on(handler.handle_with(&counter(), &CounterCommand::Add(5), &opts))?;
    assert_eq!(
        first.events[0].id, again.events[0].id,
        "the original event is returned"
    );
    assert!(again.deduplicated && !first.deduplicated);
    assert_eq!(block_on(store.stream_version(&counter()))?, Version::new(1));
    // Another command moves the stream on; a late retry reports the
    // original outcome (its events and the version after them) with the
    // stream's current state, not as if the command were applied twice.
    block_on(handler.handle(&counter(), &CounterCommand::Add(1)))?;
    let late = block_on(handler.handle_with(&counter(), &CounterCommand::Add(5), &opts))?;
    assert!(late.deduplicated);
    assert_eq!((late.state, late.version), (6, Version::new(1)));
    assert_eq!(late.events[0].version, Version::new(1));
    let loaded = block_on(handler.store().load(&counter()))?;
    assert_eq!(loaded[0].metadata.correlation_id(), meta.correlation_id());
    assert_eq!(loaded[0].metadata.idempotency_key(), Some("cmd-1"));
    assert_eq!(loaded[0].metadata.extra_value("source"), Some("test"));
    Ok(())
}

#[test]
fn logging_middleware_reports_every_command() -> TestResult {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let handler = CommandHandler::builder(Counter, typed(MemoryStore::new()))
        .with_middleware(LoggingMiddleware::new(move |log| {
            sink.lock().expect("not poisoned").push((
                log.stream.to_string(),
                log.command,
                log.outcome.clone(),
            ));
        }))
        .build()?;
    block_on(handler.handle(&counter(), &CounterCommand::Add(1)))?;
    let _ = block_on(handler.handle(&counter(), &CounterCommand::Add(u64::MAX)));
    let seen = seen.lock().expect("not poisoned");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "counter/c-1");
    assert!(seen[0].1.ends_with("CounterCommand"));
    assert_eq!(seen[0].2, Ok((1, Version::new(1))));
    assert_eq!(
        seen[1].2,
        Err("rejected: counter would overflow".to_owned())
    );
    Ok(())
}

#[test]
fn single_writer_serializes_commands_without_conflicts() -> TestResult {
    let store = MemoryStore::new();
    let handler = Arc::new(
        CommandHandler::builder(Counter, typed(store.clone()))
            .with_middleware(SingleWriter::new(MemoryLockRegistry::new()))
            .build()?,
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = Arc::clone(&handler);
            thread::spawn(move || -> Result<(), String> {
                for _ in 0..200 {
                    block_on(h.handle(&counter(), &CounterCommand::Add(1)))
                        .map_err(|e| eskit_core::error::error_chain(&e))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        // No retry is configured: any conflict would surface here.
        t.join().map_err(|_| "worker panicked")??;
    }
    assert_eq!(
        block_on(store.stream_version(&counter()))?,
        Version::new(800)
    );
    Ok(())
}

#[test]
fn configuration_mistakes_are_errors() {
    assert_eq!(
        SnapshotPolicy::every(0),
        Err(ConfigError::ZeroSnapshotInterval)
    );
    assert!(matches!(
        SnapshotPolicy::every(1).and_then(|p| p.with_schema_version(0)),
        Err(ConfigError::ZeroSchemaVersion)
    ));
    assert!(matches!(
        RetryPolicy::new(eskit_core::limits::MAX_CONFLICT_RETRIES + 1),
        Err(ConfigError::TooManyRetries { .. })
    ));
    let layers = |n: usize| {
        (0..n).fold(
            CommandHandler::builder(Counter, typed(MemoryStore::new())),
            |b, _| b.with_middleware(LoggingMiddleware::new(|_| {})),
        )
    };
    let max = eskit_core::limits::MAX_MIDDLEWARE;
    assert!(layers(max).build().is_ok());
    assert!(matches!(
        layers(max + 1).build(),
        Err(ConfigError::TooManyMiddleware)
    ));
    // Conflict retry is one layer and counts toward the bound.
    assert!(matches!(
        layers(max)
            .with_conflict_retry(RetryPolicy::new(1).expect("valid"))
            .build(),
        Err(ConfigError::TooManyMiddleware)
    ));
}

#[test]
fn retry_delays_grow_and_stay_capped() -> TestResult {
    let p = RetryPolicy::new(10)?
        .with_base_delay(Duration::from_millis(2))
        .with_max_delay(Duration::from_millis(50));
    for attempt in 0..10 {
        let full = Duration::from_millis(2 * (1 << attempt)).min(Duration::from_millis(50));
        let d = p.delay(attempt);
        assert!(
            d >= full / 2 && d <= full,
            "attempt {attempt}: {d:?} vs {full:?}"
        );
    }
    assert!(p.delay(u32::MAX) <= Duration::from_millis(50));
    Ok(())
}

#[test]
fn conflict_is_returned_after_retries_run_out() -> TestResult {
    let attempts = Arc::new(AtomicUsize::new(0));
    let racing = RacingStore::new(Arc::clone(&attempts));
    let handler = CommandHandler::builder(
        Counter,
        TypedStore::new(racing, EventSchema::new(TextCodec)),
    )
    .with_conflict_retry(RetryPolicy::new(3)?.with_base_delay(Duration::ZERO))
    .build()?;
    let r = block_on(handler.handle(&counter(), &CounterCommand::Add(1)));
    assert!(matches!(r, Err(e) if e.is_conflict()));
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        4,
        "one try and three retries"
    );
    Ok(())
}

trait DecodeU64 {
    fn decode_u64(&self, b: &[u8]) -> u64;
}

impl DecodeU64 for U64Codec {
    fn decode_u64(&self, b: &[u8]) -> u64 {
        eskit_core::typed::Codec::decode(self, b).expect("valid state")
    }
}

/// Counts conflicts seen by the attempts inside the retry layer.
struct CountConflicts(Arc<AtomicUsize>);

impl eskit_core::handler::Middleware<Counter> for CountConflicts {
    fn handle<'a>(
        &'a self,
        ctx: eskit_core::handler::CommandContext<'a, CounterCommand>,
        next: eskit_core::handler::Next<'a, Counter>,
    ) -> eskit_core::store::BoxFuture<'a, eskit_core::handler::HandleResult<Counter>> {
        Box::pin(async move {
            let r = next.run(ctx).await;
            if matches!(&r, Err(e) if e.is_conflict()) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            r
        })
    }
}

#[test]
fn a_hard_delete_removes_the_snapshot_the_handler_would_load() -> TestResult {
    let store = MemoryStore::new();
    let handler = CommandHandler::builder(Counter, typed(store.clone()))
        .with_snapshots(store.snapshots(), U64Codec, SnapshotPolicy::every(2)?)
        .build()?;
    for _ in 0..4 {
        block_on(handler.handle(&counter(), &CounterCommand::Add(3)))?;
    }
    assert!(block_on(SnapshotStore::load(&store.snapshots(), &counter()))?.is_some());
    block_on(eskit_core::store::StreamLifecycle::delete(
        &store,
        &counter(),
    ))?;
    assert!(block_on(SnapshotStore::load(&store.snapshots(), &counter()))?.is_none());
    // The deleted stream's old state (12 at version 4) is gone with it.
    assert_eq!(
        block_on(handler.load_state(&counter()))?,
        (0, Version::ZERO)
    );
    Ok(())
}

/// A backend that hands a load's events over one by one and refuses to
/// build the whole list.
struct OneByOne {
    inner: MemoryStore,
    handed: Arc<AtomicUsize>,
}

impl EventStore for OneByOne {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<eskit_core::event::AppendResult, StoreError> {
        self.inner.append(stream, expected, events, options).await
    }

    async fn load(
        &self,
        _: &StreamName,
        _: LoadOptions,
    ) -> Result<Vec<eskit_core::event::RawEvent>, StoreError> {
        Err(StoreError::internal(
            "this backend only hands events over one by one",
        ))
    }

    async fn load_each<F>(
        &self,
        stream: &StreamName,
        options: LoadOptions,
        mut each: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(eskit_core::event::RawEvent) -> Result<(), StoreError> + Send,
    {
        for event in self.inner.load(stream, options).await? {
            self.handed.fetch_add(1, Ordering::SeqCst);
            each(event)?;
        }
        Ok(())
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.inner.stream_version(stream).await
    }
}

#[test]
fn the_handler_folds_the_events_as_the_backend_hands_them_over() -> TestResult {
    let handed = Arc::new(AtomicUsize::new(0));
    let store = OneByOne {
        inner: MemoryStore::new(),
        handed: Arc::clone(&handed),
    };
    let handler = CommandHandler::new(Counter, TypedStore::new(store, EventSchema::new(TextCodec)));
    for _ in 0..3 {
        block_on(handler.handle(&counter(), &CounterCommand::Add(2)))?;
    }
    // The loads before the three commands saw 0, 1 and 2 events.
    assert_eq!(handed.load(Ordering::SeqCst), 3);
    assert_eq!(
        block_on(handler.load_state(&counter()))?,
        (6, Version::new(3))
    );
    Ok(())
}
