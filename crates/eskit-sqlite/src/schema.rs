//! Connection setup, the schema and its migrations.
//!
//! **Invariant**: every eskit database carries `PRAGMA application_id =
//! APPLICATION_ID` and a row per applied migration in `eskit_schema`; a file
//! without the id but with tables belongs to someone else and is never touched.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::error::OpenError;
use crate::options::{Location, SqliteOptions};

/// `PRAGMA application_id` of an eskit store: the bytes `eskt`.
pub const APPLICATION_ID: i32 = 0x6573_6b74;

/// The newest schema version this crate writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

/// Migrations in order; entry `i` brings the schema from version `i` to `i + 1`.
/// Version 2 gives each lock its fencing token (the counter is the `locks`
/// row of `eskit_sequence`), checkpoints their cursor's transaction key,
/// event ids a unique index, events their tags with the tag index, and adds
/// the claim store's work items. Later versions add the command queue.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE eskit_schema (
    version     INTEGER PRIMARY KEY,
    applied_at  INTEGER NOT NULL
);
CREATE TABLE eskit_streams (
    sid          INTEGER PRIMARY KEY,
    stream_type  TEXT NOT NULL,
    stream_id    TEXT NOT NULL,
    version      INTEGER NOT NULL,
    state        INTEGER NOT NULL,
    reason       TEXT,
    changed_at   INTEGER,
    UNIQUE (stream_type, stream_id)
);
CREATE TABLE eskit_event_kinds (
    kind            INTEGER PRIMARY KEY,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    codec           TEXT NOT NULL,
    UNIQUE (event_type, schema_version, codec)
);
CREATE TABLE eskit_events (
    position   INTEGER PRIMARY KEY,
    stream     INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    event_id   BLOB NOT NULL,
    kind       INTEGER NOT NULL,
    payload    BLOB NOT NULL,
    timestamp  INTEGER NOT NULL,
    metadata   TEXT,
    checksum   INTEGER NOT NULL,
    UNIQUE (stream, version)
);
CREATE TABLE eskit_sequence (
    name        TEXT PRIMARY KEY,
    high_water  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE eskit_idempotency (
    stream         INTEGER NOT NULL,
    key            TEXT NOT NULL,
    first_version  INTEGER NOT NULL,
    event_count    INTEGER NOT NULL,
    PRIMARY KEY (stream, key)
) WITHOUT ROWID;
CREATE TABLE eskit_snapshots (
    stream_type     TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    version         INTEGER NOT NULL,
    schema_version  INTEGER NOT NULL,
    codec           TEXT NOT NULL,
    state           BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    checksum        INTEGER NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
) WITHOUT ROWID;
CREATE TABLE eskit_checkpoints (
    name        TEXT PRIMARY KEY,
    position    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE eskit_locks (
    key         TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE eskit_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    origin      TEXT NOT NULL,
    topic       TEXT NOT NULL,
    key         TEXT,
    created_at  INTEGER NOT NULL
);
CREATE VIEW eskit_event_log AS
SELECT e.position, s.stream_type, s.stream_id, e.version, lower(hex(e.event_id)) AS event_id,
       k.event_type, k.schema_version, k.codec, e.payload, e.timestamp, e.metadata
FROM eskit_events e
JOIN eskit_streams s ON s.sid = e.stream
JOIN eskit_event_kinds k ON k.kind = e.kind;
",
    r"
ALTER TABLE eskit_locks ADD COLUMN token INTEGER NOT NULL DEFAULT 0;
-- Checkpoints store cursors (the transaction key beside the position) and
-- belong to a tenant ('' for none): one name per tenant.
CREATE TABLE eskit_checkpoints_v2 (
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    tx          INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
INSERT INTO eskit_checkpoints_v2 (tenant, name, tx, position, updated_at)
    SELECT '', name, 0, position, updated_at FROM eskit_checkpoints;
DROP TABLE eskit_checkpoints;
ALTER TABLE eskit_checkpoints_v2 RENAME TO eskit_checkpoints;
-- Tenants: every stream belongs to one tenant, or to none (''), from its
-- first append; its events carry the same tenant, so reads filter by it
-- without a join, and the tenant is part of an event row's checksum when set.
ALTER TABLE eskit_streams ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE eskit_events ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE eskit_snapshots ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
-- Event ids are unique across the store; an append reusing one is refused.
CREATE UNIQUE INDEX eskit_events_event_id ON eskit_events (event_id);
-- Dead letters: events a subscription gave up on, kept whole (they outlive
-- a later delete of their stream) with the error and the attempt count.
CREATE TABLE eskit_dead_letters (
    id              INTEGER PRIMARY KEY,
    subscription    TEXT NOT NULL,
    tx              INTEGER NOT NULL,
    position        INTEGER NOT NULL,
    stream_type     TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    version         INTEGER NOT NULL,
    event_id        BLOB NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    codec           TEXT NOT NULL,
    payload         BLOB NOT NULL,
    timestamp       INTEGER NOT NULL,
    metadata        TEXT,
    tags            BLOB,
    tenant          TEXT NOT NULL,
    error           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX eskit_dead_letters_by_subscription ON eskit_dead_letters (subscription, id);
-- Tags (DCB): each event's tags joined by NUL bytes, NULL when it has none,
-- covered by the row's checksum; and the index queries by tag read. A
-- tenant's event is indexed under `tenant NUL tag` (neither holds a NUL), so
-- one tenant's queries never meet another's rows.
ALTER TABLE eskit_events ADD COLUMN tags BLOB;
CREATE TABLE eskit_event_tags (
    tag       TEXT NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (tag, position)
) WITHOUT ROWID;
-- The claim store: work items by queue and key (unique over every state,
-- so a redelivered event cannot enqueue the same work twice). `due_at` is
-- the not-before time of a pending item and the lease end of a claimed one;
-- `token` grows with every claim and fences stale claims. AUTOINCREMENT so
-- that a deleted item's id (and with it a stale claim) is never reused.
CREATE TABLE eskit_work_items (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT NOT NULL,
    key          TEXT NOT NULL,
    payload      BLOB NOT NULL,
    metadata     TEXT,
    state        INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    owner        TEXT,
    attempts     INTEGER NOT NULL,
    token        INTEGER NOT NULL,
    last_error   TEXT,
    enqueued_at  INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (queue, key)
);
-- Claims walk the items not yet done or dead in due order and stop at the
-- limit; dead items are listed by id.
CREATE INDEX eskit_work_items_due ON eskit_work_items (queue, due_at, id) WHERE state < 2;
CREATE INDEX eskit_work_items_by_state ON eskit_work_items (queue, state, id);
",
];

fn path_of(options: &SqliteOptions) -> &Path {
    options.path().unwrap_or(Path::new(":memory:"))
}

fn open_conn(options: &SqliteOptions, read_only: bool) -> Result<Connection, OpenError> {
    let path = path_of(options);
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    flags |= if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    };
    let conn = match options.location() {
        Location::Memory => Connection::open_in_memory_with_flags(flags),
        Location::File(p) => Connection::open_with_flags(p, flags),
    }
    .map_err(|e| OpenError::from_sqlite(path, e))?;
    conn.busy_timeout(options.busy_timeout())
        .map_err(|e| OpenError::from_sqlite(path, e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens the writer connection: checks the file is an eskit store (or empty),
/// switches to WAL, sets the durability mode and applies migrations.
pub(crate) fn open_writer(options: &SqliteOptions) -> Result<Connection, OpenError> {
    let path = path_of(options);
    let err = |e| OpenError::from_sqlite(path, e);
    let mut conn = open_conn(options, false)?;
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(err)? {
        return Err(OpenError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    // Reading the header first tells a foreign or damaged file apart before
    // anything is written to it. Both values come from one read
    // transaction: read apart, another process's schema committed in
    // between would pair an unset id with its tables and make a new store
    // look foreign. `migrate` checks again under the write lock.
    let (app_id, objects) = retry_busy(options, || {
        let tx = conn.transaction()?;
        let app_id: i32 = tx.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let objects: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        tx.commit()?;
        Ok((app_id, objects))
    })
    .map_err(err)?;
    if app_id != APPLICATION_ID && (app_id != 0 || objects != 0) {
        return Err(OpenError::NotEskit {
            path: path.to_path_buf(),
        });
    }
    if let Location::File(_) = options.location() {
        // While another process holds a lock on the file (a second process
        // opening the new file at the same moment), SQLite fails this
        // pragma with busy at once, without waiting in its busy handler:
        // retry the whole statement within the busy timeout.
        let mode: String = retry_busy(options, || {
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        })
        .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::WalUnavailable {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    conn.pragma_update(None, "synchronous", options.synchronous().as_str())
        .map_err(err)?;
    let level: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .map_err(err)?;
    if level != options.synchronous().level() {
        return Err(OpenError::InvalidOption {
            name: "synchronous",
            reason: "sqlite did not accept the mode",
        });
    }
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// The first pause before [`retry_busy`] tries again.
const BUSY_RETRY_FIRST_PAUSE: Duration = Duration::from_millis(1);

/// The longest pause between two tries of [`retry_busy`]; pauses double up
/// to it.
const BUSY_RETRY_MAX_PAUSE: Duration = Duration::from_millis(50);

/// Runs `f` until it does not fail with SQLite's busy or locked error, for
/// at most the busy timeout of `options`, pausing between tries; the last
/// error is returned when the time is up. For statements where SQLite
/// returns busy without calling its busy handler.
fn retry_busy<T>(
    options: &SqliteOptions,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let deadline = Instant::now() + options.busy_timeout();
    let mut pause = BUSY_RETRY_FIRST_PAUSE;
    loop {
        match f() {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) =>
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(e);
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(BUSY_RETRY_MAX_PAUSE);
            }
            other => return other,
        }
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let err = |e| OpenError::from_sqlite(path, e);
    // IMMEDIATE so that two processes opening a fresh file do not both
    // create the schema.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let app_id: i32 = tx
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(err)?;
    let current: i64 = if app_id == APPLICATION_ID {
        tx.query_row("SELECT max(version) FROM eskit_schema", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map_err(|e| match e.sqlite_error_code() {
            // The id is set but the table is missing: not a store we wrote.
            None | Some(rusqlite::ErrorCode::Unknown) => OpenError::NotEskit {
                path: path.to_path_buf(),
            },
            _ => err(e),
        })?
        .unwrap_or(0)
    } else {
        let objects: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(err)?;
        if app_id != 0 || objects != 0 {
            return Err(OpenError::NotEskit {
                path: path.to_path_buf(),
            });
        }
        0
    };
    if current > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    let now = eskit_core::event::Timestamp::now().as_unix_micros();
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.execute_batch(sql).map_err(err)?;
        tx.execute(
            "INSERT INTO eskit_schema (version, applied_at) VALUES (?1, ?2)",
            (i as i64 + 1, now),
        )
        .map_err(err)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(err)?;
    tx.commit().map_err(err)
}

/// Opens a reader connection to an already migrated file database.
pub(crate) fn open_reader(options: &SqliteOptions) -> Result<Connection, OpenError> {
    let path = path_of(options);
    let conn = open_conn(options, false)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| OpenError::from_sqlite(path, e))?;
    Ok(conn)
}

/// Opens a connection for polling `PRAGMA data_version`.
pub(crate) fn open_watcher(options: &SqliteOptions) -> Result<Connection, OpenError> {
    open_reader(options)
}
