//! Public futures are `Send`, so they run on multi-threaded executors.
#![allow(clippy::expect_used, clippy::panic)] // test fixtures

mod common;

use std::sync::Arc;

use common::{Counter, CounterCommand, TextCodec};
use eskit_core::prelude::*;
use eskit_core::{
    memory::{MemoryCheckpointStore, MemoryLockRegistry, MemorySnapshotStore, MemoryStore},
    rt::{block_on, sleep},
    store::DynEventStore,
};

fn assert_send<T: Send>(_: &T) {}

#[test]
fn public_futures_are_send() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let stream = StreamName::new("t", "1")?;
    let ev = || vec![NewEvent::new(EventType::new("E").expect("valid"), vec![])];

    assert_send(&store.append(&stream, ExpectedVersion::Any, ev(), AppendOptions::new()));
    assert_send(&store.load(&stream, LoadOptions::new()));
    assert_send(&store.stream_version(&stream));
    assert_send(&store.read(ReadOptions::from_start(1)));
    assert_send(&store.head());
    assert_send(&store.tombstone(&stream, ""));
    assert_send(&store.archive(&stream, ""));
    assert_send(&store.restore(&stream));
    assert_send(&store.delete(&stream));
    assert_send(&store.status(&stream));

    let snaps = MemorySnapshotStore::new();
    assert_send(&SnapshotStore::load(&snaps, &stream));
    assert_send(&snaps.invalidate_all());
    let cps = MemoryCheckpointStore::new();
    assert_send(&CheckpointStore::load(&cps, "x"));
    assert_send(&cps.save("x", eskit_core::event::GlobalCursor::START));
    let locks = MemoryLockRegistry::new();
    assert_send(&locks.acquire("k"));
    assert_send(&locks.try_acquire("k"));
    let guard = block_on(locks.acquire("k"))?;
    assert_send(&guard.lost());
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    assert_send_sync(&guard);

    let dyn_store: Arc<dyn DynEventStore> = Arc::new(store.clone());
    assert_send(&dyn_store.append(&stream, ExpectedVersion::Any, ev(), AppendOptions::new()));
    assert_send(&dyn_store.dyn_load(&stream, LoadOptions::new()));
    let arc_store = Arc::new(store.clone());
    assert_send(&arc_store.load(&stream, LoadOptions::new()));

    let typed = TypedStore::new(store.clone(), EventSchema::new(TextCodec));
    assert_send(&typed.append(&stream, ExpectedVersion::Any, vec![]));
    assert_send(&typed.load(&stream));
    assert_send(&typed.read(ReadOptions::from_start(1)));

    let handler = CommandHandler::new(Counter, typed);
    let cmd = CounterCommand::Add(1);
    assert_send(&handler.handle(&stream, &cmd));
    assert_send(&handler.load_state(&stream));
    assert_send(&handler.rebuild_snapshot(&stream));
    assert_send(&sleep(std::time::Duration::ZERO));
    Ok(())
}
