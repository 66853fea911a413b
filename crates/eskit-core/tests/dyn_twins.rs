//! Every backend trait works through `Arc`, `Box` and `&`, both of a
//! concrete backend and of its object-safe `Dyn` twin.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eskit_core::prelude::*;
use eskit_core::{
    event::AppendResult,
    memory::{MemoryCheckpointStore, MemoryLockRegistry, MemorySnapshotStore, MemoryStore},
    rt::block_on,
    store::{
        DynCheckpointStore, DynEventQueryReader, DynEventStore, DynGlobalReader, DynLockRegistry,
        DynSnapshotStore, DynStreamLifecycle,
    },
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn is_event_store<T: EventStore>() {}
fn is_global_reader<T: GlobalReader>() {}
fn is_query_reader<T: EventQueryReader>() {}
fn is_lifecycle<T: StreamLifecycle>() {}
fn is_snapshot_store<T: SnapshotStore>() {}
fn is_checkpoint_store<T: CheckpointStore>() {}
fn is_lock_registry<T: LockRegistry>() {}

macro_rules! wrapped {
    ($check:ident, $concrete:ty, $dyn:ident) => {
        $check::<Arc<$concrete>>();
        $check::<Box<$concrete>>();
        $check::<&$concrete>();
        $check::<Arc<dyn $dyn>>();
        $check::<Box<dyn $dyn>>();
        $check::<&dyn $dyn>();
    };
}

#[test]
fn every_trait_is_implemented_by_every_wrapper() {
    wrapped!(is_event_store, MemoryStore, DynEventStore);
    wrapped!(is_global_reader, MemoryStore, DynGlobalReader);
    wrapped!(is_query_reader, MemoryStore, DynEventQueryReader);
    wrapped!(is_lifecycle, MemoryStore, DynStreamLifecycle);
    wrapped!(is_snapshot_store, MemorySnapshotStore, DynSnapshotStore);
    wrapped!(
        is_checkpoint_store,
        MemoryCheckpointStore,
        DynCheckpointStore
    );
    wrapped!(is_lock_registry, MemoryLockRegistry, DynLockRegistry);
}

/// Appends one event through `store` and returns the stream's version.
fn append_one(store: impl EventStore, stream: &StreamName) -> Result<u64, StoreError> {
    let event = NewEvent::new(EventType::new("E")?, b"x".to_vec());
    block_on(store.append(
        stream,
        ExpectedVersion::Any,
        vec![event],
        AppendOptions::new(),
    ))?;
    Ok(block_on(store.stream_version(stream))?.get())
}

#[test]
fn appends_reach_the_backend_through_every_wrapper() -> TestResult {
    let memory = MemoryStore::new();
    let s = StreamName::new("t", "1")?;
    assert_eq!(append_one(&memory, &s)?, 1);
    assert_eq!(append_one(Arc::new(memory.clone()), &s)?, 2);
    assert_eq!(append_one(Box::new(memory.clone()), &s)?, 3);
    let erased: Arc<dyn DynEventStore> = Arc::new(memory.clone());
    assert_eq!(append_one(Arc::clone(&erased), &s)?, 4);
    assert_eq!(append_one(&*erased, &s)?, 5);
    let boxed: Box<dyn DynEventStore> = Box::new(memory.clone());
    assert_eq!(append_one(boxed, &s)?, 6);
    assert_eq!(block_on(memory.load(&s, LoadOptions::new()))?.len(), 6);
    Ok(())
}

/// A store that overrides the defaulted `find_idempotent` and counts calls.
struct Counting {
    inner: MemoryStore,
    lookups: Arc<AtomicUsize>,
}

impl EventStore for Counting {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        self.inner.append(stream, expected, events, options).await
    }
    async fn load(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RawEvent>, StoreError> {
        self.inner.load(stream, options).await
    }
    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.inner.stream_version(stream).await
    }
    async fn find_idempotent(
        &self,
        _stream: &StreamName,
        _key: &str,
    ) -> Result<Option<Vec<RawEvent>>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    }
}

fn lookup(store: impl EventStore, stream: &StreamName) -> Result<(), StoreError> {
    block_on(store.find_idempotent(stream, "k")).map(|_| ())
}

#[test]
fn wrappers_keep_a_backends_override_of_a_defaulted_method() -> TestResult {
    let lookups = Arc::new(AtomicUsize::new(0));
    let counting = || Counting {
        inner: MemoryStore::new(),
        lookups: Arc::clone(&lookups),
    };
    let s = StreamName::new("t", "1")?;
    let plain = counting();
    lookup(&plain, &s)?;
    lookup(Arc::new(counting()), &s)?;
    lookup(Box::new(counting()), &s)?;
    let erased: Arc<dyn DynEventStore> = Arc::new(counting());
    lookup(Arc::clone(&erased), &s)?;
    lookup(&*erased, &s)?;
    lookup(Box::new(counting()) as Box<dyn DynEventStore>, &s)?;
    assert_eq!(lookups.load(Ordering::SeqCst), 6);
    Ok(())
}
