//! The lean append with the store's indexes (backend `sqlite-indexed`):
//! hand-written rusqlite on the caller's thread, like the lean baseline,
//! but over the tables and indexes the store's contract needs, so the
//! append writes the same B-trees the store writes:
//!
//! - a streams table (`sid INTEGER PRIMARY KEY`, the stream's names, its
//!   version and state) with a unique index of names: the stream's version
//!   lives in one row, not in `max(version)` over its events;
//! - events keyed by position, with the stream's key instead of its name,
//!   `UNIQUE (stream, version)`, the store's extra columns (kind, metadata,
//!   a checksum, tags, tenant) and a **unique index of event ids** (an
//!   append reusing an id is refused, as the store refuses it).
//!
//! An append: `BEGIN IMMEDIATE`; `SELECT sid, version FROM streams WHERE
//! stream_type = ? AND stream_id = ?`; for a new stream `INSERT INTO
//! streams` with its final version; one `INSERT INTO events` per event (the
//! checksum an XXH3 of the payload); for an existing stream `UPDATE streams
//! SET version`; `COMMIT`. No kinds table, no metadata parsing, no
//! idempotency table, no `PRAGMA data_version` (the store's check for
//! other processes' writes), no thread hop.
//!
//! Next to the store on the caller's thread, this row says how much of the
//! store's gap to the lean baseline is the data the contract keeps (pages
//! written per commit) and how much is the store's code.

use std::path::PathBuf;

use eskit_core::{error::BoxError, store::BoxFuture};
use eskit_sqlite::Synchronous;
use eskit_testing::bench::Baseline;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::RusqliteBaseline;

/// The stream type every bench stream has (as `eskit_testing`'s streams).
const STREAM_TYPE: &str = "bench";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (sid INTEGER PRIMARY KEY, stream_type TEXT NOT NULL,
    stream_id TEXT NOT NULL, version INTEGER NOT NULL, state INTEGER NOT NULL,
    UNIQUE (stream_type, stream_id));
CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY, stream INTEGER NOT NULL,
    version INTEGER NOT NULL, event_id BLOB NOT NULL, kind INTEGER NOT NULL,
    payload BLOB NOT NULL, timestamp INTEGER NOT NULL, metadata TEXT,
    checksum INTEGER NOT NULL, tags BLOB, tenant TEXT NOT NULL,
    UNIQUE (stream, version));
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id);
CREATE TABLE IF NOT EXISTS snapshots (stream_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
    state BLOB NOT NULL) WITHOUT ROWID;";

/// The lean baseline's connections over the indexed tables.
pub(crate) struct IndexedBaseline(RusqliteBaseline);

impl IndexedBaseline {
    pub(crate) fn create(path: PathBuf, sync: Synchronous) -> Result<Self, BoxError> {
        Ok(Self(RusqliteBaseline::create_with(path, sync, SCHEMA)?))
    }
}

fn stream_row(c: &Connection, stream: &str) -> rusqlite::Result<Option<(i64, i64)>> {
    c.prepare_cached("SELECT sid, version FROM streams WHERE stream_type = ?1 AND stream_id = ?2")?
        .query_row((STREAM_TYPE, stream), |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

fn append_sync(
    c: &mut Connection,
    stream: &str,
    expected: Option<u64>,
    payloads: &[Vec<u8>],
) -> Result<bool, BoxError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row = stream_row(&tx, stream)?;
    let version = row.map_or(0, |(_, v)| v);
    if expected.is_some_and(|v| i64::try_from(v).ok() != Some(version)) {
        return Ok(false);
    }
    let new_version = version + i64::try_from(payloads.len())?;
    let sid = match row {
        Some((sid, _)) => sid,
        None => {
            tx.prepare_cached(
                "INSERT INTO streams (stream_type, stream_id, version, state) VALUES (?1, ?2, ?3, 1)",
            )?
            .execute((STREAM_TYPE, stream, new_version))?;
            tx.last_insert_rowid()
        }
    };
    let now = eskit_core::event::Timestamp::now().as_unix_micros();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (stream, version, event_id, kind, payload, timestamp, metadata,
                 checksum, tags, tenant)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, NULL, ?6, NULL, '')",
        )?;
        for (i, p) in payloads.iter().enumerate() {
            let id = eskit_core::event::EventId::new().to_bytes();
            // The bits of the hash as a signed column value, as the store keeps its own.
            let checksum = xxhash_rust::xxh3::xxh3_64(p).cast_signed();
            insert.execute(rusqlite::params![
                sid,
                version + 1 + i as i64,
                &id[..],
                p,
                now,
                checksum
            ])?;
        }
    }
    if row.is_some() {
        tx.prepare_cached("UPDATE streams SET version = ?1 WHERE sid = ?2")?
            .execute((new_version, sid))?;
    }
    tx.commit()?;
    Ok(true)
}

/// The error of a read this baseline does not run: the `sqlite-indexed`
/// rows are the appends only (W1, W2, W3, W5), which need `version` and no
/// other read. A workload added to those rows fails here, loudly.
fn not_measured(what: &str) -> BoxError {
    format!("the indexed baseline runs appends only; {what} is not measured on it").into()
}

impl Baseline for IndexedBaseline {
    fn append<'a>(
        &'a self,
        stream: &'a str,
        expected: Option<u64>,
        payloads: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(async move { self.0.with(|c| append_sync(c, stream, expected, payloads)) })
    }

    fn version<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, BoxError>> {
        Box::pin(async move {
            self.0.with(|c| {
                let v = stream_row(c, stream)?.map_or(0, |(_, v)| v);
                Ok(u64::try_from(v)?)
            })
        })
    }

    fn load<'a>(&'a self, _stream: &'a str) -> BoxFuture<'a, Result<usize, BoxError>> {
        Box::pin(async move { Err(not_measured("a stream load")) })
    }

    fn read_all(&self, _from: u64, _limit: usize) -> BoxFuture<'_, Result<Vec<u64>, BoxError>> {
        Box::pin(async move { Err(not_measured("a global read")) })
    }

    fn save_snapshot<'a>(
        &'a self,
        stream: &'a str,
        version: u64,
        state: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        self.0.save_snapshot(stream, version, state)
    }

    fn load_snapshot<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BoxError>> {
        self.0.load_snapshot(stream)
    }
}
