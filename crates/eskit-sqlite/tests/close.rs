//! `SqliteStore::close` closes the store for every handle, and returns once
//! the files are released.

mod common;

use common::{TempDir, TestResult, event, stream};
use eskit_core::{
    error::StoreError,
    event::{ExpectedVersion, GlobalCursor},
    rt::block_on,
    store::{AppendOptions, CheckpointStore, EventStore, LoadOptions, LockRegistry, SnapshotStore},
};
use eskit_sqlite::SqliteStore;

fn expect_closed<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) -> TestResult {
    match r {
        Err(StoreError::Closed) => Ok(()),
        other => Err(format!("{what} after close: expected Closed, got {other:?}").into()),
    }
}

#[test]
fn closing_one_handle_closes_every_handle_and_releases_the_files() -> TestResult {
    let dir = TempDir::new("close-all")?;
    let path = dir.file("events.db");
    let store = SqliteStore::open(&path)?;
    let other = store.clone();
    let (snapshots, checkpoints, locks) = (store.snapshots(), store.checkpoints(), store.locks());
    let s = stream("account", "a")?;
    block_on(store.append(
        &s,
        ExpectedVersion::NoStream,
        vec![event("Opened", "{}")?],
        AppendOptions::new(),
    ))?;
    let wal = dir.file("events.db-wal");
    assert!(wal.exists(), "an open store in WAL mode has its log");

    // Close through the clone; every other handle stays alive.
    block_on(other.close());
    expect_closed(
        block_on(store.append(
            &s,
            ExpectedVersion::Any,
            vec![event("Late", "{}")?],
            AppendOptions::new(),
        )),
        "append",
    )?;
    expect_closed(block_on(store.load(&s, LoadOptions::new())), "load")?;
    expect_closed(block_on(snapshots.load(&s)), "snapshot load")?;
    expect_closed(
        block_on(checkpoints.save("projection", GlobalCursor::START)),
        "checkpoint save",
    )?;
    expect_closed(block_on(locks.try_acquire("leader")), "lock")?;

    // Every connection is closed: the last one checkpointed the log into
    // the database and removed it, with handles still alive.
    assert!(!wal.exists(), "the log outlived close");
    // Closing again, from another handle, returns as well.
    block_on(store.close());

    let reopened = SqliteStore::open(&path)?;
    assert_eq!(block_on(reopened.load(&s, LoadOptions::new()))?.len(), 1);
    block_on(reopened.close());
    Ok(())
}
