//! Test support: counts how often SQLite compiles a statement on the
//! connections of one database file, so a test can assert that a steady
//! workload runs on cached statements only.
//!
//! SQLite calls the authorizer while it compiles a statement, never while it
//! runs one; a statement that is re-prepared (`SQLITE_STMTSTATUS_REPREPARE`,
//! for example after a new binding of a parameter its plan depended on) is
//! compiled again and calls it too. Counting authorizer calls therefore
//! counts cache misses and re-prepares alike.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use rusqlite::hooks::{AuthContext, Authorization};

/// The files whose connections are watched, with their counters.
static WATCHED: Mutex<Vec<(PathBuf, Arc<AtomicU64>)>> = Mutex::new(Vec::new());

/// The compile counter of `path`: connections opened on it from now on
/// count into it.
pub(crate) fn watch(path: &Path) -> Arc<AtomicU64> {
    let counter = Arc::new(AtomicU64::new(0));
    WATCHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((path.to_path_buf(), Arc::clone(&counter)));
    counter
}

/// Installs the counting authorizer on `conn` when its file is watched.
pub(crate) fn install(conn: &Connection, path: &Path) {
    let counter = WATCHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, c)| Arc::clone(c));
    if let Some(counter) = counter {
        let _ = conn.authorizer(Some(move |_: AuthContext<'_>| {
            counter.fetch_add(1, Ordering::Relaxed);
            Authorization::Allow
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteOptions, SqliteStore};
    use eskit_core::{
        dcb::{AppendCondition, EventQueryReader, QueryItem, QueryOptions},
        error::BoxError,
        event::{
            EventType, ExpectedVersion, GlobalCursor, NewEvent, Position, StreamName, Tag, Version,
        },
        rt::block_on,
        store::{AppendOptions, EventStore, GlobalReader, LoadOptions, ReadOptions},
    };

    /// One pass of every hot path: new streams with the new-stream check,
    /// appends to an existing stream (one event and a batch), conditional
    /// (DCB) appends, loads (whole, bounded, limited, by type), versions,
    /// global reads (with different cursors, limits and filters) and query
    /// reads. `round` changes every bound value.
    async fn pass(store: &SqliteStore, round: u64) -> Result<(), BoxError> {
        let ty = EventType::new("OrderPlaced")?;
        let event = |i: u64| NewEvent::new(ty.clone(), format!("{{\"i\":{i}}}").into_bytes());
        let tag = |i: u64| Tag::new(format!("order:{}", i % 3));
        let long = StreamName::new("order", "long")?;
        for i in 0..3 {
            let s = StreamName::new("order", format!("new-{round}-{i}"))?;
            store
                .append(
                    &s,
                    ExpectedVersion::NoStream,
                    vec![event(i)],
                    AppendOptions::new(),
                )
                .await?;
        }
        let v = store.stream_version(&long).await?;
        store
            .append(
                &long,
                ExpectedVersion::Exact(v),
                vec![event(round)],
                AppendOptions::new(),
            )
            .await?;
        store
            .append(
                &long,
                ExpectedVersion::Any,
                (0..10).map(event).collect(),
                AppendOptions::new(),
            )
            .await?;
        let tagged = StreamName::new("course", format!("c-{round}"))?;
        let query = QueryItem::new().with_tags([tag(round)?]);
        let head = store.head().await?;
        store
            .append(
                &tagged,
                ExpectedVersion::Any,
                vec![event(round).with_tags([tag(round)?])],
                AppendOptions::new()
                    .with_condition(AppendCondition::new(query.clone().into(), head)),
            )
            .await?;
        store.load(&long, LoadOptions::new()).await?;
        store
            .load(&long, LoadOptions::new().with_limit(5 + round as usize))
            .await?;
        store
            .load(
                &long,
                LoadOptions::new()
                    .with_from(Version::new(round + 1))
                    .with_to(Version::new(round + 4)),
            )
            .await?;
        store
            .load(&long, LoadOptions::new().with_event_types([ty.clone()]))
            .await?;
        store.read(ReadOptions::from_start(100)).await?;
        store
            .read(ReadOptions::new(
                GlobalCursor::at(Position::new(round + 1)),
                7 + round as usize,
            ))
            .await?;
        store
            .read(ReadOptions::from_start(50).with_event_types([ty.clone()]))
            .await?;
        store
            .query(QueryOptions::new(
                query.into(),
                GlobalCursor::at(Position::new(round)),
                100,
            ))
            .await?;
        Ok(())
    }

    #[test]
    fn a_steady_workload_compiles_no_statement() -> Result<(), BoxError> {
        let dir = std::env::temp_dir().join(format!(
            "eskit-sqlite-compiles-{}-{}",
            std::process::id(),
            eskit_core::event::Timestamp::now().as_unix_micros()
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("events.db");
        let compiles = watch(&path);
        let store = SqliteStore::open_with(SqliteOptions::file(&path).with_readers(1))?;
        // The first passes fill the statement caches.
        block_on(pass(&store, 0))?;
        block_on(pass(&store, 1))?;
        let warm = compiles.load(Ordering::Relaxed);
        assert!(warm > 0, "the authorizer saw no compile at all");
        for round in 2..6 {
            block_on(pass(&store, round))?;
        }
        let steady = compiles.load(Ordering::Relaxed) - warm;
        block_on(store.close());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            steady, 0,
            "statements compiled (or re-prepared) in a steady workload"
        );
        Ok(())
    }
}
