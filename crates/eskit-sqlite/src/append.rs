//! Appends on the writer thread: group commit, each append checked before
//! it writes.
//!
//! **Invariant**: an append's events are written in one transaction together
//! with the stream's new version and its idempotency entry. Every refusal
//! (version conflict, lifecycle state, idempotency) is decided before the
//! append writes anything, so a refused append leaves its batch-mates
//! unharmed without a savepoint; a failure while writing rolls the whole
//! batch back, and each append is then retried alone for its own outcome.
//! An event id already stored is the one refusal found while writing (by
//! the unique index of event ids, which costs no extra lookup per event):
//! it takes that rare path and becomes [`StoreError::DuplicateEventId`].
//! Events are written a few rows per statement (`INSERT_CHUNKS`); the
//! statement that meets a stored id writes none of its rows, and its ids
//! are then looked up to name the one already stored.

use eskit_core::{
    error::StoreError,
    event::{
        AppendResult, EventRecord, NewEvent, Position, RawEvent, StreamName, TenantId, Timestamp,
        Version,
    },
    store::StreamState,
};
use rusqlite::{Connection, OptionalExtension};

use crate::error::{corrupt, store_error};
use crate::kinds::{FreshKinds, KindKeys, KindReader};
use crate::row::{
    BatchBuilder, EVENT_COLUMNS, KindOrPart, StoredMetadata, StreamOrPart, SumFields,
    checksum_scratch, event_checksum, index_tag, tags_blob, tenant_key,
};
use crate::worker::{AppendJob, AppendRequest, rollback_if_open};
use eskit_core::backend::{CommitNotifier, idempotent_retry};

pub(crate) const STATE_ACTIVE: i64 = 1;
pub(crate) const STATE_ARCHIVED: i64 = 2;
pub(crate) const STATE_TOMBSTONED: i64 = 3;
pub(crate) const STATE_DELETED: i64 = 4;

pub(crate) fn state_of(code: i64) -> Result<StreamState, StoreError> {
    match code {
        STATE_ACTIVE => Ok(StreamState::Active),
        STATE_ARCHIVED => Ok(StreamState::Archived),
        STATE_TOMBSTONED => Ok(StreamState::Tombstoned),
        STATE_DELETED => Ok(StreamState::Deleted),
        other => Err(corrupt(format!("unknown stream state {other}"))),
    }
}

pub(crate) fn to_version(v: i64) -> Result<Version, StoreError> {
    u64::try_from(v)
        .map(Version::new)
        .map_err(|_| corrupt(format!("negative stream version {v}")))
}

/// A stream's row, whoever owns it: its key, last version, lifecycle
/// state code and tenant (`''` for none).
pub(crate) fn stream_row_any(
    conn: &Connection,
    stream: &StreamName,
) -> Result<Option<(i64, i64, i64, String)>, StoreError> {
    conn.prepare_cached(
        "SELECT sid, version, state, tenant FROM eskit_streams \
         WHERE stream_type = ?1 AND stream_id = ?2",
    )
    .and_then(|mut s| {
        s.query_row(
            (stream.stream_type().as_str(), stream.stream_id().as_str()),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
    })
    .map_err(store_error)
}

/// A stream's row as `tenant` (`''` for none) sees it: its key, last
/// version and lifecycle state code; `None` for a stream that does not
/// exist or that another tenant owns.
pub(crate) fn stream_row(
    conn: &Connection,
    stream: &StreamName,
    tenant: &str,
) -> Result<Option<(i64, i64, i64)>, StoreError> {
    Ok(stream_row_any(conn, stream)?
        .filter(|row| row.3 == tenant)
        .map(|(sid, version, state, _)| (sid, version, state)))
}

/// The events of stream `sid` with versions in `first..=last`.
pub(crate) fn load_versions(
    conn: &Connection,
    stream: &StreamName,
    tenant: Option<&TenantId>,
    sid: i64,
    first: i64,
    last: i64,
) -> Result<Vec<RawEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM eskit_events e \
         WHERE e.stream = ?1 AND e.version BETWEEN ?2 AND ?3 ORDER BY e.version"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(store_error)?;
    let mut rows = stmt.query((sid, first, last)).map_err(store_error)?;
    // Inside the writer's transaction: kinds read here may not be committed.
    let mut batch = BatchBuilder::new(KindReader::uncommitted(), 0, tenant.cloned());
    let owner = batch.add_stream(stream.clone());
    while let Some(row) = rows.next().map_err(store_error)? {
        batch.push(conn, row, owner)?;
    }
    batch.finish().into_events()
}

/// The next global position: one past the highest ever assigned, also when
/// the newest events were deleted since (a hard delete records the highest
/// position in `eskit_sequence` before it removes events). Unlike an
/// `AUTOINCREMENT` key, this writes no sequence row on every commit.
fn next_position(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "SELECT max(coalesce((SELECT high_water FROM eskit_sequence WHERE name = 'events'), 0), \
                    coalesce((SELECT max(position) FROM eskit_events), 0)) + 1",
    )
    .and_then(|mut s| s.query_row([], |r| r.get(0)))
    .map_err(store_error)
}

/// Removes the tag index rows of stream `sid`'s events, before the events
/// are deleted. Each row is found by its key from the event's stored tags.
pub(crate) fn delete_tags(conn: &Connection, sid: i64, tenant: &str) -> Result<(), StoreError> {
    let mut select = conn
        .prepare_cached(
            "SELECT position, tags FROM eskit_events WHERE stream = ?1 AND tags IS NOT NULL",
        )
        .map_err(store_error)?;
    let mut delete = conn
        .prepare_cached("DELETE FROM eskit_event_tags WHERE tag = ?1 AND position = ?2")
        .map_err(store_error)?;
    let mut rows = select.query([sid]).map_err(store_error)?;
    while let Some(row) = rows.next().map_err(store_error)? {
        let position: i64 = row.get(0).map_err(store_error)?;
        let blob: Vec<u8> = row.get(1).map_err(store_error)?;
        for tag in blob.split(|b| *b == 0) {
            let tag = String::from_utf8_lossy(tag);
            delete
                .execute((index_tag(tenant, &tag).as_ref(), position))
                .map_err(store_error)?;
        }
    }
    Ok(())
}

/// Records the highest position ever assigned, before events are deleted,
/// so that [`next_position`] never hands out a deleted event's position.
pub(crate) fn keep_high_water(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO eskit_sequence (name, high_water) \
         SELECT 'events', coalesce(max(position), 0) FROM eskit_events WHERE true \
         ON CONFLICT (name) DO UPDATE SET high_water = max(high_water, excluded.high_water)",
    )
    .and_then(|mut s| s.execute([]))
    .map(drop)
    .map_err(store_error)
}

/// What the writer thread remembers between batches.
#[derive(Default)]
pub(crate) struct WriterState {
    pub(crate) kinds: KindKeys,
    /// The next global position after the writer's last commit, with the
    /// connection's `PRAGMA data_version` then. While that number stays the
    /// same no other connection has committed, so the position still holds
    /// and the query for it can be skipped.
    pub(crate) next: Option<(i64, i64)>,
    /// The callers of appends wake one another through this.
    pub(crate) chain: std::sync::Arc<crate::oneshot::WakeChain>,
}

/// The next global position inside the writer's open transaction.
pub(crate) fn batch_start(
    conn: &Connection,
    state: &WriterState,
) -> Result<(i64, i64), StoreError> {
    let data_version: i64 = conn
        .prepare_cached("PRAGMA data_version")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(store_error)?;
    match state.next {
        Some((seen, next)) if seen == data_version => Ok((data_version, next)),
        _ => Ok((data_version, next_position(conn)?)),
    }
}

/// Commits a batch of appends and answers each. Called on the writer thread.
pub(crate) fn commit_appends(
    conn: &mut Connection,
    state: &mut WriterState,
    jobs: Vec<AppendJob>,
    notifier: &CommitNotifier,
) {
    let results = match run_batch(conn, state, &jobs) {
        Ok(results) => results,
        Err(_) if jobs.len() > 1 => {
            // The transaction itself failed (BEGIN or COMMIT). Retry each
            // append alone so every caller gets its own outcome.
            rollback_if_open(conn);
            jobs.iter()
                .map(
                    |job| match run_batch(conn, state, std::slice::from_ref(job)) {
                        Ok(mut r) => r.pop().unwrap_or_else(|| Err(corrupt("empty batch"))),
                        Err(e) => {
                            rollback_if_open(conn);
                            Err(e)
                        }
                    },
                )
                .collect()
        }
        Err(e) => {
            rollback_if_open(conn);
            vec![Err(e)]
        }
    };
    let newest = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|r| !r.deduplicated)
        .map(AppendResult::last_position)
        .max();
    // Subscribers hear about the commit before any appender's future
    // completes, so "append returned" implies "notifier signalled".
    if let Some(p) = newest {
        notifier.notify(p);
    }
    let wakers = jobs
        .into_iter()
        .zip(results)
        .filter_map(|(job, result)| job.reply.send_deferred(result))
        .collect();
    state.chain.start(wakers);
}

/// Runs one transaction-control statement, prepared once per connection:
/// parsing `BEGIN` and `COMMIT` again for every append is measurable.
pub(crate) fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(store_error)
}

/// Runs the batch in one IMMEDIATE transaction. `Ok` carries each append's
/// own outcome (all committed); `Err` means nothing was committed. Kinds
/// first written by the batch's successful appends are remembered only
/// after the commit.
fn run_batch(
    conn: &mut Connection,
    state: &mut WriterState,
    jobs: &[AppendJob],
) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
    exec(conn, "BEGIN IMMEDIATE")?;
    // Until this batch commits, the remembered position is in doubt.
    let (data_version, mut next) = batch_start(conn, state)?;
    state.next = None;
    let kinds = &mut state.kinds;
    let mut results = Vec::with_capacity(jobs.len());
    let mut fresh = FreshKinds::new();
    for job in jobs {
        // Every refusal (conflict, lifecycle, idempotency) is decided
        // before the append writes anything, so a refused append needs no
        // savepoint to undo. A failure while writing fails the whole
        // transaction; the caller then runs each append alone.
        let r = match check_append(conn, &job.request, next) {
            Err(e) => Err(e),
            Ok(Checked::Deduplicated(r)) => Ok(r),
            Ok(Checked::Write(plan)) => {
                match write_append(conn, kinds, &job.request, plan, &mut next, &mut fresh) {
                    Ok(r) => Ok(r),
                    Err(e) if jobs.len() == 1 => {
                        exec(conn, "ROLLBACK")?;
                        return Ok(vec![Err(e)]);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        results.push(r);
    }
    exec(conn, "COMMIT")?;
    kinds.committed(fresh);
    state.next = Some((data_version, next));
    Ok(results)
}

/// What checking an append decided, before anything is written.
pub(crate) enum Checked {
    /// A retry of a committed append: its original records.
    Deduplicated(AppendResult),
    /// The append may go ahead as planned.
    Write(Plan),
}

/// What [`write_append`] needs from the check.
pub(crate) struct Plan {
    sid: Option<i64>,
    version: i64,
    new_version: i64,
    count: i64,
    meta: StoredMetadata,
}

/// Decides an append without writing: idempotent retry, lifecycle state,
/// expected version, bounds. An `Err` is this append's own outcome and
/// leaves the transaction untouched.
pub(crate) fn check_append(
    conn: &Connection,
    job: &AppendRequest,
    next_position: i64,
) -> Result<Checked, StoreError> {
    let stream = &job.stream;
    let tenant = tenant_key(job.tenant.as_ref());
    let row = match stream_row_any(conn, stream)? {
        Some((_, _, _, owner)) if owner != tenant => {
            return Err(StoreError::WrongTenant {
                stream: stream.clone(),
            });
        }
        row => row.map(|(sid, version, state, _)| (sid, version, state)),
    };
    let key = job.options.idempotency_key();
    if let (Some(key), Some((sid, _, _))) = (key, row) {
        let previous: Option<(i64, i64)> = conn
            .prepare_cached(
                "SELECT first_version, event_count FROM eskit_idempotency \
                 WHERE stream = ?1 AND key = ?2",
            )
            .and_then(|mut s| {
                s.query_row((sid, key), |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(store_error)?;
        if let Some((first, count)) = previous {
            let last = first.saturating_add(count).saturating_sub(1);
            let stored = load_versions(conn, stream, job.tenant.as_ref(), sid, first, last)?;
            if i64::try_from(stored.len()).ok() != Some(count) {
                return Err(corrupt(format!(
                    "idempotency entry of stream {stream} names missing events"
                )));
            }
            return idempotent_retry(
                stream,
                key,
                &stored,
                &job.events,
                job.tenant.as_ref(),
                || stored.iter().map(RawEvent::record).collect(),
            )
            .map(Checked::Deduplicated);
        }
    }
    let (sid, version) = match row {
        Some((sid, version, state)) => {
            state_of(state)?.check_append(stream)?;
            (Some(sid), version)
        }
        None => (None, 0),
    };
    let current = to_version(version)?;
    if !job.expected.matches(current) {
        return Err(StoreError::WrongExpectedVersion {
            stream: stream.clone(),
            expected: job.expected,
            actual: current,
        });
    }
    // Inside the batch's transaction: appends earlier in the batch count.
    if let Some(condition) = job.options.condition()
        && let Some(cursor) = crate::query::first_match(conn, condition, tenant)?
    {
        return Err(StoreError::ConditionFailed { cursor });
    }
    let count = i64::try_from(job.events.len()).map_err(|_| corrupt("append too long"))?;
    let overflow = || corrupt("version or position overflow");
    let new_version = version.checked_add(count).ok_or_else(overflow)?;
    next_position.checked_add(count).ok_or_else(overflow)?;
    let metadata = job.options.stored_metadata();
    let meta = StoredMetadata::of(&metadata);
    Ok(Checked::Write(Plan {
        sid,
        version,
        new_version,
        count,
        meta,
    }))
}

/// Whether an insert failed on the unique index of event ids.
fn is_event_id_violation(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(message)) => {
            f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && message.contains("eskit_events.event_id")
        }
        _ => false,
    }
}

/// The columns of one event row that differ from row to row.
struct EventRow {
    position: i64,
    version: i64,
    event_id: [u8; 16],
    kind: i64,
    checksum: i64,
    tags: Option<Vec<u8>>,
}

/// The columns every row of one append shares.
struct SharedColumns<'a> {
    sid: i64,
    timestamp: i64,
    metadata: Option<&'a str>,
    tenant: &'a str,
}

/// Columns bound per event row.
const EVENT_INSERT_COLUMNS: usize = 11;

/// The rows one insert statement writes, largest first: an append of `n`
/// events runs a few multi-row statements instead of `n` single-row ones
/// (each statement opens its cursors and seeks from the tables' roots
/// again), and only these few statements are ever prepared.
const INSERT_CHUNKS: [usize; 4] = [64, 16, 4, 1];

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO eskit_events (position, stream, version, event_id, kind, \
         payload, timestamp, metadata, checksum, tags, tenant) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..EVENT_INSERT_COLUMNS {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
            sql.push_str(&(r * EVENT_INSERT_COLUMNS + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// The statement for the next part of `left` rows, and how many it writes.
fn insert_statement(left: usize) -> (&'static str, usize) {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| INSERT_CHUNKS.iter().map(|&n| insert_sql(n)).collect());
    for (i, &n) in INSERT_CHUNKS.iter().enumerate() {
        if left >= n {
            return (sql[i].as_str(), n);
        }
    }
    (sql[INSERT_CHUNKS.len() - 1].as_str(), 1)
}

/// Writes `rows` (the rows of `events`, in order) with one statement.
fn insert_events(
    conn: &Connection,
    sql: &str,
    rows: &[EventRow],
    events: &[NewEvent],
    shared: &SharedColumns<'_>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(store_error)?;
    for (i, (row, event)) in rows.iter().zip(events).enumerate() {
        let at = i * EVENT_INSERT_COLUMNS;
        let bind = |stmt: &mut rusqlite::CachedStatement<'_>| -> rusqlite::Result<()> {
            stmt.raw_bind_parameter(at + 1, row.position)?;
            stmt.raw_bind_parameter(at + 2, shared.sid)?;
            stmt.raw_bind_parameter(at + 3, row.version)?;
            stmt.raw_bind_parameter(at + 4, &row.event_id[..])?;
            stmt.raw_bind_parameter(at + 5, row.kind)?;
            stmt.raw_bind_parameter(at + 6, event.payload())?;
            stmt.raw_bind_parameter(at + 7, shared.timestamp)?;
            stmt.raw_bind_parameter(at + 8, shared.metadata)?;
            stmt.raw_bind_parameter(at + 9, row.checksum)?;
            stmt.raw_bind_parameter(at + 10, row.tags.as_deref())?;
            stmt.raw_bind_parameter(at + 11, shared.tenant)
        };
        bind(&mut stmt).map_err(store_error)?;
    }
    match stmt.raw_execute() {
        Ok(_) => Ok(()),
        Err(e) if is_event_id_violation(&e) => {
            Err(duplicate_among(conn, events).unwrap_or_else(|| store_error(e)))
        }
        Err(e) => Err(store_error(e)),
    }
}

/// The refusal for the first of `events` whose id is already stored (the
/// failed statement wrote none of them), if one is.
fn duplicate_among(conn: &Connection, events: &[NewEvent]) -> Option<StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM eskit_events WHERE event_id = ?1")
        .ok()?;
    events.iter().find_map(|e| {
        let id = e.id().to_bytes();
        match stmt.exists([&id[..]]) {
            Ok(true) => Some(StoreError::DuplicateEventId { id: e.id() }),
            _ => None,
        }
    })
}

/// Writes a checked append. An `Err` may leave part of it written: the
/// caller must roll the transaction back.
pub(crate) fn write_append(
    conn: &Connection,
    kinds: &KindKeys,
    job: &AppendRequest,
    plan: Plan,
    next_position: &mut i64,
    fresh: &mut FreshKinds,
) -> Result<AppendResult, StoreError> {
    let Plan {
        sid,
        version,
        new_version,
        count,
        meta,
    } = plan;
    let stream = &job.stream;
    let tenant = tenant_key(job.tenant.as_ref());
    let key = job.options.idempotency_key();
    let overflow = || corrupt("version or position overflow");
    // A new stream's row is written with its final version at once: the
    // append then runs one statement fewer than an append to an existing
    // stream, which updates the version after the events.
    let (sid, existing) = match sid {
        Some(sid) => (sid, true),
        None => {
            conn.prepare_cached(
                "INSERT INTO eskit_streams (stream_type, stream_id, version, state, tenant) \
                 VALUES (?1, ?2, ?3, 1, ?4)",
            )
            .and_then(|mut s| {
                s.execute((
                    stream.stream_type().as_str(),
                    stream.stream_id().as_str(),
                    new_version,
                    tenant,
                ))
            })
            .map_err(store_error)?;
            (conn.last_insert_rowid(), false)
        }
    };
    let timestamp = job
        .options
        .timestamp()
        .unwrap_or_else(Timestamp::now)
        .as_unix_micros();
    let mut records = Vec::with_capacity(job.events.len());
    let mut rows = Vec::with_capacity(job.events.len());
    let mut scratch = checksum_scratch(
        job.events
            .iter()
            .map(|e| e.payload().len())
            .max()
            .unwrap_or(0),
    );
    let mut v = version;
    for event in &job.events {
        v += 1;
        let position = *next_position;
        *next_position += 1;
        let event_id = event.id().to_bytes();
        let kind = kinds.key_for(conn, event, fresh)?;
        let tags = tags_blob(event.tags());
        let checksum = event_checksum(
            &mut scratch,
            &SumFields {
                position,
                stream: StreamOrPart::Stream(stream),
                version: v,
                event_id: &event_id,
                kind: KindOrPart::Fields {
                    event_type: event.event_type().as_str(),
                    schema_version: event.schema_version(),
                    codec: event.codec(),
                },
                payload: event.payload(),
                timestamp,
                meta: meta.text(),
                tags: tags.as_deref(),
                tenant,
            },
        );
        rows.push(EventRow {
            position,
            version: v,
            event_id,
            kind,
            checksum,
            tags,
        });
        records.push(EventRecord {
            id: event.id(),
            version: to_version(v)?,
            tx: 0,
            position: Position::new(u64::try_from(position).map_err(|_| overflow())?),
            timestamp: Timestamp::from_unix_micros(timestamp),
        });
    }
    let shared = SharedColumns {
        sid,
        timestamp,
        metadata: meta.text(),
        tenant,
    };
    let mut done = 0;
    while done < rows.len() {
        let (sql, n) = insert_statement(rows.len() - done);
        let chunk = &rows[done..done + n];
        let events = &job.events[done..done + n];
        insert_events(conn, sql, chunk, events, &shared)?;
        done += n;
    }
    for (event, row) in job.events.iter().zip(&rows) {
        if event.tags().is_empty() {
            continue;
        }
        let mut tag_insert = conn
            .prepare_cached("INSERT INTO eskit_event_tags (tag, position) VALUES (?1, ?2)")
            .map_err(store_error)?;
        for tag in event.tags() {
            tag_insert
                .execute((index_tag(tenant, tag.as_str()).as_ref(), row.position))
                .map_err(store_error)?;
        }
    }
    if existing {
        conn.prepare_cached("UPDATE eskit_streams SET version = ?1 WHERE sid = ?2")
            .and_then(|mut s| s.execute((new_version, sid)))
            .map_err(store_error)?;
    }
    if let Some(key) = key {
        conn.prepare_cached(
            "INSERT INTO eskit_idempotency (stream, key, first_version, event_count) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute((sid, key, version + 1, count)))
        .map_err(store_error)?;
    }
    Ok(AppendResult {
        records,
        deduplicated: false,
        tenant: job.tenant.clone(),
    })
}
