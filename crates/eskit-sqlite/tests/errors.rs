//! SQLite failures reach callers as the core's backend-neutral kinds, with
//! the SQLite cause as their source.

mod common;

use std::time::Duration;

use common::{TempDir, TestResult, event, stream};
use eskit_core::{
    event::ExpectedVersion,
    rt::block_on,
    store::{AppendOptions, EventStore, LoadOptions},
};
use eskit_sqlite::{SqliteError, SqliteOptions, SqliteStore};

/// Another process holds the write lock past the busy timeout: the append
/// is refused as overloaded (transient, nothing written), and goes through
/// once the lock is free.
#[test]
fn an_append_blocked_by_another_writer_is_overloaded_and_writes_nothing() -> TestResult {
    let dir = TempDir::new("busy")?;
    let path = dir.file("events.db");
    let store = SqliteStore::open_with(
        SqliteOptions::file(&path).with_busy_timeout(Duration::from_millis(10)),
    )?;
    let s = stream("account", "a")?;
    let blocker = rusqlite::Connection::open(&path)?;
    blocker.execute_batch("BEGIN IMMEDIATE")?;
    let e = block_on(store.append(
        &s,
        ExpectedVersion::NoStream,
        vec![event("Opened", "{}")?],
        AppendOptions::new(),
    ))
    .err()
    .ok_or("an append went through a held write lock")?;
    blocker.execute_batch("ROLLBACK")?;
    assert!(e.is_overloaded(), "{e:?}");
    assert!(e.is_transient() && !e.is_outcome_unknown(), "{e:?}");
    assert!(
        matches!(SqliteError::of(&e), Some(SqliteError::Busy(_))),
        "{e:?}"
    );
    assert!(block_on(store.load(&s, LoadOptions::new()))?.is_empty());
    // The same append, retried: nothing was written, so it applies once.
    block_on(store.append(
        &s,
        ExpectedVersion::NoStream,
        vec![event("Opened", "{}")?],
        AppendOptions::new(),
    ))?;
    assert_eq!(block_on(store.load(&s, LoadOptions::new()))?.len(), 1);
    block_on(store.close());
    Ok(())
}
