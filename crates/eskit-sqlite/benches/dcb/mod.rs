//! DCB workloads on SQLite, each next to a hand-written rusqlite baseline
//! doing the same check and writes in one transaction on the caller's
//! thread (prepared statements, the same WAL and synchronous settings, a
//! `(tag, position)` index like the store's):
//!
//! - **D1 conditional append**: one ~200-byte event with one tag (100 tags
//!   in turn), appended only if no event with that tag follows the last
//!   one this writer saw. The baseline runs `BEGIN IMMEDIATE`, the
//!   condition (`SELECT` on the tag index), the stream row, the event row,
//!   its tag row, the stream's new version, `COMMIT`.
//! - **D2 query read**: all events of one tag (50 of 5,000, interleaved),
//!   with their payloads. The baseline joins the tag index to the events
//!   by position and builds owned rows; the store also reads its horizon
//!   and checks every row's checksum and the query match.
//! - **D3 query page**: a page of 1,000 events of a tag every event carries
//!   (the same 5,000 events). D2 and D3 together show what is per read (the
//!   hop to the store's reader thread, which the baseline, running on the
//!   caller's thread, does not make) and what is per event.
//!
//! Each round runs the store, then the baseline; the reported ratio is the
//! median over rounds of the per-round events/s ratio.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eskit_core::{
    dcb::{AppendCondition, EventQuery, EventQueryReader, QueryItem, QueryOptions, QueryPager},
    error::BoxError,
    event::{EventType, ExpectedVersion, GlobalCursor, NewEvent, StreamName, Tag},
    rt::block_on,
    store::{AppendOptions, EventStore},
};
use eskit_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::hop::Hop;

/// Tags the writers cycle through.
const TAGS: u64 = 100;
/// Events per tag seeded for D2.
const PER_TAG: u64 = 50;
/// The pause between seeding D2's data and timing D2 and D3 (as W6 pauses
/// after its seeding).
const SETTLE: Duration = Duration::from_millis(300);

/// One measured side of one round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
}

impl Measured {
    pub(crate) fn per_sec(self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A DCB workload's rounds: events/s of the store and the baseline.
#[derive(Debug)]
pub(crate) struct DcbRow {
    pub(crate) id: &'static str,
    pub(crate) what: &'static str,
    pub(crate) eskit: Vec<f64>,
    pub(crate) baseline: Vec<f64>,
    /// The same baseline behind one thread hop (see the `hop` module).
    pub(crate) hop: Vec<f64>,
    /// The store with its calls on the caller's thread
    /// (`SqliteOptions::with_calls_on_caller_thread`).
    pub(crate) caller: Vec<f64>,
}

impl DcbRow {
    /// A row named `id` with no rounds yet.
    pub(crate) fn new(id: &'static str, what: &'static str) -> Self {
        Self {
            id,
            what,
            eskit: Vec::new(),
            baseline: Vec::new(),
            hop: Vec::new(),
            caller: Vec::new(),
        }
    }

    /// The median over rounds of eskit's events/s over the baseline's.
    pub(crate) fn median_ratio(&self) -> f64 {
        Self::median_ratio_to(&self.eskit, &self.baseline)
    }

    fn median_ratio_to(eskit: &[f64], other: &[f64]) -> f64 {
        let mut r: Vec<f64> = eskit
            .iter()
            .zip(other)
            .map(|(a, b)| a / b.max(1e-9))
            .collect();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    }

    fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    pub(crate) fn table(rows: &[Self]) -> String {
        let mut t = String::from(
            "| workload | eskit events/s | baseline events/s | ratio (median of per-round) \
             | baseline behind a hop, events/s | ratio to it \
             | eskit, calls on the caller's thread, events/s | its ratio to the baseline |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in rows {
            let caller = if r.caller.is_empty() {
                "- | -".to_owned()
            } else {
                format!(
                    "{:.0} | {:.2}",
                    Self::median(&r.caller),
                    Self::median_ratio_to(&r.caller, &r.baseline)
                )
            };
            t.push_str(&format!(
                "| {} {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {caller} |\n",
                r.id,
                r.what,
                Self::median(&r.eskit),
                Self::median(&r.baseline),
                r.median_ratio(),
                Self::median(&r.hop),
                Self::median_ratio_to(&r.eskit, &r.hop),
            ));
        }
        t
    }
}

fn payload(i: u64) -> Vec<u8> {
    // About 200 bytes of JSON, as the other workloads' peers are measured on.
    format!(
        "{{\"student\":\"s-{i:08}\",\"course\":\"c-{:04}\",\"at\":\"2026-12-01T10:00:00Z\",\
         \"note\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\
         0123456789abcdef0123456789abcdef0123456789\"}}",
        i % TAGS
    )
    .into_bytes()
}

fn tag(t: u64) -> Result<Tag, BoxError> {
    Ok(Tag::new(format!("course:c-{t:04}"))?)
}

/// Runs until `ops` operations or the time budget, whichever comes first.
fn timed(
    budget: Duration,
    ops: u64,
    mut op: impl FnMut(u64) -> Result<u64, BoxError>,
) -> Result<Measured, BoxError> {
    let start = Instant::now();
    let mut events = 0;
    for i in 0..ops {
        events += op(i)?;
        if start.elapsed() >= budget {
            break;
        }
    }
    Ok(Measured {
        events,
        elapsed: start.elapsed(),
    })
}

/// The rusqlite baseline's schema: the existing baseline's tables plus a tag
/// index shaped like the store's.
fn baseline_conn(path: &Path, sync: Synchronous) -> Result<Connection, BoxError> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(60))?;
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    c.pragma_update(None, "synchronous", sync.as_str())?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS streams (sid INTEGER PRIMARY KEY, stream_id TEXT NOT NULL UNIQUE,
             version INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY AUTOINCREMENT,
             stream INTEGER NOT NULL, version INTEGER NOT NULL, event_id TEXT NOT NULL,
             event_type TEXT NOT NULL, schema_version INTEGER NOT NULL, codec TEXT NOT NULL,
             payload BLOB NOT NULL, timestamp INTEGER NOT NULL, UNIQUE (stream, version));
         CREATE TABLE IF NOT EXISTS tags (tag TEXT NOT NULL, position INTEGER NOT NULL,
             PRIMARY KEY (tag, position)) WITHOUT ROWID;",
    )?;
    Ok(c)
}

/// Appends `events` (payload, tag) to `stream` in one transaction if no
/// event tagged `cond.0` follows position `cond.1`; returns the last
/// position, or `None` when the condition failed.
fn baseline_append(
    c: &mut Connection,
    stream: &str,
    events: &[(Vec<u8>, String)],
    cond: Option<(&str, i64)>,
) -> Result<Option<i64>, BoxError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some((tag, after)) = cond {
        let hit: Option<i64> = tx
            .prepare_cached("SELECT position FROM tags WHERE tag = ?1 AND position > ?2 LIMIT 1")?
            .query_row((tag, after), |r| r.get(0))
            .optional()?;
        if hit.is_some() {
            return Ok(None);
        }
    }
    let row: Option<(i64, i64)> = tx
        .prepare_cached("SELECT sid, version FROM streams WHERE stream_id = ?1")?
        .query_row([stream], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (sid, version) = match row {
        Some(r) => r,
        None => {
            tx.prepare_cached("INSERT INTO streams (stream_id, version) VALUES (?1, 0)")?
                .execute([stream])?;
            (tx.last_insert_rowid(), 0)
        }
    };
    let now = eskit_core::event::Timestamp::now().as_unix_micros();
    let mut last = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (stream, version, event_id, event_type, schema_version, codec, payload, timestamp)
             VALUES (?1, ?2, ?3, 'Enrolled', 1, 'json', ?4, ?5)",
        )?;
        let mut insert_tag =
            tx.prepare_cached("INSERT INTO tags (tag, position) VALUES (?1, ?2)")?;
        for (i, (p, tag)) in events.iter().enumerate() {
            let id = eskit_core::event::EventId::new().to_string();
            insert.execute(rusqlite::params![sid, version + 1 + i as i64, id, p, now])?;
            last = tx.last_insert_rowid();
            insert_tag.execute((tag, last))?;
            if cond.is_none() {
                insert_tag.execute((ALL_TAG, last))?;
            }
        }
    }
    tx.prepare_cached("UPDATE streams SET version = ?1 WHERE sid = ?2")?
        .execute((version + events.len() as i64, sid))?;
    tx.commit()?;
    Ok(Some(last))
}

/// What the baseline builds per event read: the owned fields a store read
/// returns.
#[allow(dead_code)]
struct Row {
    position: i64,
    version: i64,
    event_id: String,
    event_type: String,
    payload: Vec<u8>,
    timestamp: i64,
    stream_id: String,
}

/// Every seeded event also carries this tag (D3).
const ALL_TAG: &str = "term:2026";

fn baseline_query(c: &Connection, tag: &str) -> Result<u64, BoxError> {
    Ok(std::hint::black_box(query_rows(c, tag)?).len() as u64)
}

/// The events of `tag` as owned rows.
fn query_rows(c: &Connection, tag: &str) -> Result<Vec<Row>, BoxError> {
    let mut stmt = c.prepare_cached(
        "SELECT e.position, e.version, e.event_id, e.event_type, e.payload, e.timestamp, s.stream_id
         FROM tags t JOIN events e ON e.position = t.position JOIN streams s ON s.sid = e.stream
         WHERE t.tag = ?1 AND t.position > 0 ORDER BY t.position LIMIT 1000",
    )?;
    let rows: Vec<Row> = stmt
        .query_map([tag], |r| {
            Ok(Row {
                position: r.get(0)?,
                version: r.get(1)?,
                event_id: r.get(2)?,
                event_type: r.get(3)?,
                payload: r.get(4)?,
                timestamp: r.get(5)?,
                stream_id: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn query_of(t: u64) -> Result<EventQuery, BoxError> {
    Ok(QueryItem::new().with_tags([tag(t)?]).into())
}

/// D1 on `store`: each decision on its tag, after the last event of the
/// tag this writer saw.
fn conditional_appends(
    store: &SqliteStore,
    enrolled: &EventType,
    budget: Duration,
    ops: u64,
) -> Result<Measured, BoxError> {
    let mut seen = vec![GlobalCursor::START; TAGS as usize];
    timed(budget, ops, |i| {
        let t = i % TAGS;
        let stream = StreamName::new("course", format!("c-{t:04}"))?;
        let event = NewEvent::new(enrolled.clone(), payload(i))
            .with_codec("json")
            .with_tags([tag(t)?]);
        let options = AppendOptions::new()
            .with_condition(AppendCondition::new(query_of(t)?, seen[t as usize]));
        let r = block_on(store.append(&stream, ExpectedVersion::Any, vec![event], options))?;
        seen[t as usize] = r.last_cursor();
        Ok(1)
    })
}

/// D2 and D3 on `store`, seeded by [`round`]: every event of one tag at a
/// time, then pages of the tag all events carry.
fn query_reads(store: &SqliteStore, budget: Duration, ops: u64) -> Result<[Measured; 2], BoxError> {
    let d2 = timed(budget, ops / 10, |i| {
        let options = QueryOptions::from_start(query_of(i % TAGS)?, 1000);
        let events = block_on(QueryPager::new(store, options).collect())?;
        if events.len() as u64 != PER_TAG {
            return Err(format!("read {} events of a tag", events.len()).into());
        }
        Ok(events.len() as u64)
    })?;
    let all: EventQuery = QueryItem::new().with_tags([Tag::new(ALL_TAG)?]).into();
    let d3 = timed(budget, ops / 10, |_| {
        let options = QueryOptions::from_start(all.clone(), 1000);
        let page = block_on(store.query(options))?;
        Ok(std::hint::black_box(page).events.len() as u64)
    })?;
    Ok([d2, d3])
}

/// One round of D1 and D2 on fresh files in `dir`.
fn round(
    dir: &Path,
    n: u32,
    sync: Synchronous,
    budget: Duration,
    ops: u64,
) -> Result<([[Measured; 3]; 3], [Measured; 3]), BoxError> {
    let enrolled = EventType::new("Enrolled")?;
    let store_path: PathBuf = dir.join(format!("dcb-eskit-{n}.db"));
    let base_path: PathBuf = dir.join(format!("dcb-baseline-{n}.db"));
    let store = SqliteStore::open_with(SqliteOptions::file(&store_path).with_synchronous(sync))?;
    let mut base = baseline_conn(&base_path, sync)?;

    // D1: each writer decision on its tag, after the last event it saw.
    let d1_eskit = conditional_appends(&store, &enrolled, budget, ops)?;
    let mut seen = vec![0i64; TAGS as usize];
    let d1_base = timed(budget, ops, |i| {
        let t = i % TAGS;
        let tag = format!("course:c-{t:04}");
        let stream = format!("course/c-{t:04}");
        let last = baseline_append(
            &mut base,
            &stream,
            &[(payload(i), tag.clone())],
            Some((&tag, seen[t as usize])),
        )?
        .ok_or("the baseline's condition failed")?;
        seen[t as usize] = last;
        Ok(1)
    })?;
    let hop = Hop::new(baseline_conn(&dir.join(format!("dcb-hop-{n}.db")), sync)?)?;
    let mut seen = vec![0i64; TAGS as usize];
    let d1_hop = timed(budget, ops, |i| {
        let t = i % TAGS;
        let tag = format!("course:c-{t:04}");
        let stream = format!("course/c-{t:04}");
        let after = seen[t as usize];
        let event = payload(i);
        let last = block_on(hop.call(move |c| {
            baseline_append(c, &stream, &[(event, tag.clone())], Some((&tag, after)))
        }))?
        .ok_or("the hop baseline's condition failed")?;
        seen[t as usize] = last;
        Ok(1)
    })?;
    drop(hop);
    let caller_store = SqliteStore::open_with(
        SqliteOptions::file(dir.join(format!("dcb-caller-{n}.db")))
            .with_synchronous(sync)
            .with_calls_on_caller_thread(true),
    )?;
    let d1_caller = conditional_appends(&caller_store, &enrolled, budget, ops)?;
    block_on(caller_store.close());

    // D1's store is done: its checkpoint thread must not copy D1's log
    // while D2 and D3 are timed.
    block_on(store.close());
    drop(store);

    // D2 on its own data: PER_TAG events per tag, interleaved, in batches
    // of one event per tag.
    let seed_path = dir.join(format!("dcb-eskit-read-{n}.db"));
    let seed_base = dir.join(format!("dcb-baseline-read-{n}.db"));
    let reader = SqliteStore::open_with(SqliteOptions::file(&seed_path).with_synchronous(sync))?;
    let mut read_base = baseline_conn(&seed_base, sync)?;
    for b in 0..PER_TAG {
        let stream = StreamName::new("seed", b.to_string())?;
        let events = (0..TAGS)
            .map(|t| {
                Ok(NewEvent::new(enrolled.clone(), payload(b * TAGS + t))
                    .with_codec("json")
                    .with_tags([tag(t)?, Tag::new(ALL_TAG)?]))
            })
            .collect::<Result<Vec<_>, BoxError>>()?;
        block_on(store_append(&reader, &stream, events))?;
        let rows: Vec<(Vec<u8>, String)> = (0..TAGS)
            .map(|t| (payload(b * TAGS + t), format!("course:c-{t:04}")))
            .collect();
        baseline_append(&mut read_base, &format!("seed/{b}"), &rows, None)?;
    }
    // Work the store left running after the seeding appends (its
    // checkpoint thread copying the log) finishes before the timer starts,
    // as the baseline's checkpoints ran inside its (untimed) seeding.
    std::thread::sleep(SETTLE);
    let [d2_eskit, d3_eskit] = query_reads(&reader, budget, ops)?;
    let d2_base = timed(budget, ops / 10, |i| {
        let read = baseline_query(&read_base, &format!("course:c-{:04}", i % TAGS))?;
        if read != PER_TAG {
            return Err(format!("the baseline read {read} events of a tag").into());
        }
        Ok(read)
    })?;
    let read_hop = Hop::new(baseline_conn(&seed_base, sync)?)?;
    let d2_hop = timed(budget, ops / 10, |i| {
        let tag = format!("course:c-{:04}", i % TAGS);
        let rows = block_on(read_hop.call(move |c| query_rows(c, &tag)))?;
        if rows.len() as u64 != PER_TAG {
            return Err(format!("the hop baseline read {} events of a tag", rows.len()).into());
        }
        Ok(rows.len() as u64)
    })?;
    let d3_base = timed(budget, ops / 10, |_| baseline_query(&read_base, ALL_TAG))?;
    let d3_hop = timed(budget, ops / 10, |_| {
        let rows = block_on(read_hop.call(|c| query_rows(c, ALL_TAG)))?;
        Ok(std::hint::black_box(rows).len() as u64)
    })?;
    block_on(reader.close());
    drop(reader);
    // D2 and D3 again on the same data, with calls on this thread.
    let caller = SqliteStore::open_with(
        SqliteOptions::file(&seed_path)
            .with_synchronous(sync)
            .with_calls_on_caller_thread(true),
    )?;
    let [d2_caller, d3_caller] = query_reads(&caller, budget, ops)?;
    block_on(caller.close());
    Ok((
        [
            [d1_eskit, d1_base, d1_hop],
            [d2_eskit, d2_base, d2_hop],
            [d3_eskit, d3_base, d3_hop],
        ],
        [d1_caller, d2_caller, d3_caller],
    ))
}

async fn store_append(
    store: &SqliteStore,
    stream: &StreamName,
    events: Vec<NewEvent>,
) -> Result<(), BoxError> {
    store
        .append(stream, ExpectedVersion::Any, events, AppendOptions::new())
        .await?;
    Ok(())
}

/// Runs `rounds` rounds of D1 and D2.
pub(crate) fn run(
    dir: &Path,
    sync: Synchronous,
    budget: Duration,
    ops: u64,
    rounds: u32,
) -> Result<Vec<DcbRow>, BoxError> {
    let mut rows = [
        DcbRow::new("D1", "conditional append (DCB), one tagged event"),
        DcbRow::new("D2", "query read by tag (DCB), 50 of 5,000 events"),
        DcbRow::new("D3", "query page by tag (DCB), 1,000 of 5,000 events"),
    ];
    for n in 0..rounds {
        let (measured, caller) = round(dir, n, sync, budget, ops)?;
        for (row, [eskit, baseline, hop]) in rows.iter_mut().zip(measured) {
            row.eskit.push(eskit.per_sec());
            row.baseline.push(baseline.per_sec());
            row.hop.push(hop.per_sec());
        }
        for (row, m) in rows.iter_mut().zip(caller) {
            row.caller.push(m.per_sec());
        }
    }
    Ok(rows.into())
}
