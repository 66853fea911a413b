//! DCB workloads on PostgreSQL, each next to hand-written sqlx code doing
//! the same check and writes, on the same runtime and server:
//!
//! - **D1 conditional append**: one ~200-byte event with one tag (100 tags
//!   in turn), appended only if no event with that tag follows the last
//!   one this writer saw. The baseline runs `BEGIN`; `SELECT
//!   pg_advisory_xact_lock(hashtextextended($1, 0))` on the tag (a
//!   statement of its own: at READ COMMITTED the check's snapshot must be
//!   taken after the lock is granted); the check `SELECT 1 FROM events
//!   WHERE tags @> ARRAY[$1] AND position > $2 LIMIT 1`; one statement
//!   creating or bumping the stream's head row and inserting the event
//!   (`WITH h AS (INSERT INTO streams ... ON CONFLICT DO UPDATE SET
//!   version = version + 1 RETURNING version) INSERT INTO events ...`);
//!   `COMMIT`. A GIN index on the tags, as the store has.
//! - **D2 query read**: all events of one tag (50 of 5,000, interleaved),
//!   with their payloads: the baseline's `SELECT ... WHERE tags @>
//!   ARRAY[$1] ORDER BY position` into owned rows.
//!
//! Each round runs the store, then the baseline, on fresh schemas; the
//! reported ratio is the median over rounds of the per-round events/s
//! ratio.

use std::time::{Duration, Instant};

use eskit_core::{
    dcb::{AppendCondition, EventQuery, QueryItem, QueryOptions, QueryPager},
    error::BoxError,
    event::{EventType, ExpectedVersion, GlobalCursor, NewEvent, StreamName, Tag},
    store::{AppendOptions, EventStore},
};
use eskit_pg::{PgOptions, PgStore};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::runtime::Handle;

/// Tags the writers cycle through.
const TAGS: u64 = 100;
/// Events per tag seeded for D2.
const PER_TAG: u64 = 50;

/// One measured side of one round.
#[derive(Debug, Clone, Copy)]
struct Measured {
    events: u64,
    elapsed: Duration,
}

impl Measured {
    fn per_sec(self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A DCB workload's rounds: events/s of the store and the baseline.
#[derive(Debug)]
pub(crate) struct DcbRow {
    id: &'static str,
    what: &'static str,
    eskit: Vec<f64>,
    baseline: Vec<f64>,
}

impl DcbRow {
    fn median_ratio(&self) -> f64 {
        let mut r: Vec<f64> = self
            .eskit
            .iter()
            .zip(&self.baseline)
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
            "| workload | eskit events/s | baseline events/s | ratio (median of per-round) | rounds (ratio) |\n\
             |---|---:|---:|---:|---|\n",
        );
        for r in rows {
            let rounds: Vec<String> = r
                .eskit
                .iter()
                .zip(&r.baseline)
                .map(|(a, b)| format!("{:.2}", a / b.max(1e-9)))
                .collect();
            t.push_str(&format!(
                "| {} {} | {:.0} | {:.0} | {:.2} | {} |\n",
                r.id,
                r.what,
                Self::median(&r.eskit),
                Self::median(&r.baseline),
                r.median_ratio(),
                rounds.join(" ")
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

fn tag_name(t: u64) -> String {
    format!("course:c-{t:04}")
}

fn tag(t: u64) -> Result<Tag, BoxError> {
    Ok(Tag::new(tag_name(t))?)
}

fn query_of(t: u64) -> Result<EventQuery, BoxError> {
    Ok(QueryItem::new().with_tags([tag(t)?]).into())
}

/// Runs until `ops` operations or the time budget, whichever comes first.
async fn timed<F, Fut>(budget: Duration, ops: u64, mut op: F) -> Result<Measured, BoxError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<u64, BoxError>>,
{
    let start = Instant::now();
    let mut events = 0;
    for i in 0..ops {
        events += op(i).await?;
        if start.elapsed() >= budget {
            break;
        }
    }
    Ok(Measured {
        events,
        elapsed: start.elapsed(),
    })
}

/// The hand-written DCB tables and statements.
struct Base {
    pool: PgPool,
    lock: String,
    check: String,
    insert: String,
    query: String,
}

impl Base {
    async fn create(url: &str, schema: &str) -> Result<Self, BoxError> {
        let pool = PgPoolOptions::new()
            .max_connections(eskit_pg::DEFAULT_POOL_SIZE)
            .connect(url)
            .await?;
        let s = format!("\"{schema}\"");
        for ddl in [
            format!("CREATE SCHEMA {s}"),
            format!("CREATE TABLE {s}.streams (stream text PRIMARY KEY, version bigint NOT NULL)"),
            format!(
                "CREATE TABLE {s}.events (position bigserial PRIMARY KEY, stream text NOT NULL, \
                 version bigint NOT NULL, event_id bytea NOT NULL, event_type text NOT NULL, \
                 payload bytea NOT NULL, recorded_at bigint NOT NULL, \
                 tags text[] NOT NULL, UNIQUE (stream, version))"
            ),
            format!("CREATE INDEX ON {s}.events USING gin (tags)"),
        ] {
            sqlx::query(&ddl).execute(&pool).await?;
        }
        Ok(Self {
            pool,
            lock: "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))".to_owned(),
            check: format!(
                "SELECT 1 FROM {s}.events WHERE tags @> ARRAY[$1::text] AND position > $2 LIMIT 1"
            ),
            insert: format!(
                "WITH h AS (INSERT INTO {s}.streams AS h (stream, version) VALUES ($1, $2) \
                 ON CONFLICT (stream) DO UPDATE SET version = h.version + $2 \
                 RETURNING h.version - $2 AS v) \
                 INSERT INTO {s}.events \
                 (stream, version, event_id, event_type, payload, recorded_at, tags) \
                 SELECT $1, h.v + u.ord, u.id, 'Enrolled', u.payload, $3, ARRAY[u.tag] \
                 FROM h, unnest($4::bytea[], $5::bytea[], $6::text[]) \
                 WITH ORDINALITY AS u(id, payload, tag, ord) \
                 RETURNING position"
            ),
            query: format!(
                "SELECT position, stream, version, event_id, event_type, payload, recorded_at, tags \
                 FROM {s}.events WHERE tags @> ARRAY[$1::text] ORDER BY position LIMIT 1000"
            ),
        })
    }

    /// Appends `events` (payload, tag) to `stream` if no event tagged
    /// `cond.0` follows position `cond.1`; the last position, or `None`
    /// when the condition failed.
    async fn append(
        &self,
        stream: &str,
        events: &[(Vec<u8>, String)],
        cond: Option<(&str, i64)>,
    ) -> Result<Option<i64>, BoxError> {
        let mut tx = self.pool.begin().await?;
        if let Some((tag, after)) = cond {
            sqlx::query(&self.lock).bind(tag).execute(&mut *tx).await?;
            let hit = sqlx::query(&self.check)
                .bind(tag)
                .bind(after)
                .fetch_optional(&mut *tx)
                .await?;
            if hit.is_some() {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        let ids: Vec<Vec<u8>> = events
            .iter()
            .map(|_| eskit_core::event::EventId::new().to_bytes().to_vec())
            .collect();
        let payloads: Vec<&[u8]> = events.iter().map(|e| e.0.as_slice()).collect();
        let tags: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
        let rows = sqlx::query(&self.insert)
            .bind(stream)
            .bind(i64::try_from(events.len())?)
            .bind(eskit_core::event::Timestamp::now().as_unix_micros())
            .bind(&ids)
            .bind(&payloads)
            .bind(&tags)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut last = 0;
        for r in &rows {
            last = last.max(r.try_get::<i64, _>(0)?);
        }
        Ok(Some(last))
    }

    async fn query(&self, tag: &str) -> Result<u64, BoxError> {
        let rows = sqlx::query(&self.query)
            .bind(tag)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push((
                r.try_get::<i64, _>(0)?,
                r.try_get::<String, _>(1)?,
                r.try_get::<i64, _>(2)?,
                r.try_get::<Vec<u8>, _>(3)?,
                r.try_get::<String, _>(4)?,
                r.try_get::<Vec<u8>, _>(5)?,
                r.try_get::<i64, _>(6)?,
                r.try_get::<Vec<String>, _>(7)?,
            ));
        }
        Ok(std::hint::black_box(out).len() as u64)
    }
}

async fn drop_schema(pool: &PgPool, schema: &str) -> Result<(), BoxError> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(pool)
        .await?;
    Ok(())
}

/// One round of D1 and D2 on fresh schemas.
async fn round(url: &str, n: u32, budget: Duration, ops: u64) -> Result<[Measured; 4], BoxError> {
    let pid = std::process::id();
    let (store_schema, base_schema) = (
        format!("bench_dcb_{pid}_{n}"),
        format!("bench_dcbb_{pid}_{n}"),
    );
    let (read_schema, read_base_schema) = (
        format!("bench_dcbr_{pid}_{n}"),
        format!("bench_dcbrb_{pid}_{n}"),
    );
    let enrolled = EventType::new("Enrolled")?;
    let store = PgStore::connect(PgOptions::new(url).with_schema(&store_schema)).await?;
    let base = Base::create(url, &base_schema).await?;

    // D1: each writer decides on its tag, after the last event it saw.
    let mut seen = vec![GlobalCursor::START; TAGS as usize];
    let start = Instant::now();
    let mut done = 0;
    for i in 0..ops {
        let t = i % TAGS;
        let stream = StreamName::new("course", format!("c-{t:04}"))?;
        let event = NewEvent::new(enrolled.clone(), payload(i))
            .with_codec("json")
            .with_tags([tag(t)?]);
        let options = AppendOptions::new()
            .with_condition(AppendCondition::new(query_of(t)?, seen[t as usize]));
        let r = store
            .append(&stream, ExpectedVersion::Any, vec![event], options)
            .await?;
        seen[t as usize] = r.last_cursor();
        done += 1;
        if start.elapsed() >= budget {
            break;
        }
    }
    let d1_eskit = Measured {
        events: done,
        elapsed: start.elapsed(),
    };
    let mut seen = vec![0i64; TAGS as usize];
    let start = Instant::now();
    let mut done = 0;
    for i in 0..ops {
        let t = i % TAGS;
        let tag = tag_name(t);
        let stream = format!("course/c-{t:04}");
        let last = base
            .append(
                &stream,
                &[(payload(i), tag.clone())],
                Some((&tag, seen[t as usize])),
            )
            .await?
            .ok_or("the baseline's condition failed")?;
        seen[t as usize] = last;
        done += 1;
        if start.elapsed() >= budget {
            break;
        }
    }
    let d1_base = Measured {
        events: done,
        elapsed: start.elapsed(),
    };

    // D2 on its own data: PER_TAG events per tag, interleaved, in batches
    // of one event per tag.
    let reader = PgStore::connect(PgOptions::new(url).with_schema(&read_schema)).await?;
    let read_base = Base::create(url, &read_base_schema).await?;
    for b in 0..PER_TAG {
        let stream = StreamName::new("seed", b.to_string())?;
        let events = (0..TAGS)
            .map(|t| {
                Ok(NewEvent::new(enrolled.clone(), payload(b * TAGS + t))
                    .with_codec("json")
                    .with_tags([tag(t)?]))
            })
            .collect::<Result<Vec<_>, BoxError>>()?;
        reader
            .append(&stream, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
        let rows: Vec<(Vec<u8>, String)> = (0..TAGS)
            .map(|t| (payload(b * TAGS + t), tag_name(t)))
            .collect();
        read_base.append(&format!("seed/{b}"), &rows, None).await?;
    }
    sqlx::query("ANALYZE").execute(read_base.pool()).await?;
    let d2_eskit = timed(budget, (ops / 10).max(1), |i| {
        let reader = &reader;
        async move {
            let options = QueryOptions::from_start(query_of(i % TAGS)?, 1000);
            let events = QueryPager::new(reader, options).collect().await?;
            if events.len() as u64 != PER_TAG {
                return Err(format!("read {} events of a tag", events.len()).into());
            }
            Ok(events.len() as u64)
        }
    })
    .await?;
    let d2_base = timed(budget, (ops / 10).max(1), |i| {
        let read_base = &read_base;
        async move {
            let read = read_base.query(&tag_name(i % TAGS)).await?;
            if read != PER_TAG {
                return Err(format!("the baseline read {read} events of a tag").into());
            }
            Ok(read)
        }
    })
    .await?;
    store.close().await;
    reader.close().await;
    for s in [&store_schema, &base_schema, &read_schema, &read_base_schema] {
        drop_schema(&base.pool, s).await?;
    }
    base.pool.close().await;
    read_base.pool.close().await;
    Ok([d1_eskit, d1_base, d2_eskit, d2_base])
}

impl Base {
    fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Runs `rounds` rounds of D1 and D2 on `handle`'s runtime.
pub(crate) fn run(
    url: &str,
    handle: &Handle,
    budget: Duration,
    ops: u64,
    rounds: u32,
) -> Result<Vec<DcbRow>, BoxError> {
    let mut d1 = DcbRow {
        id: "D1",
        what: "conditional append (DCB), one tagged event",
        eskit: Vec::new(),
        baseline: Vec::new(),
    };
    let mut d2 = DcbRow {
        id: "D2",
        what: "query read by tag (DCB), 50 of 5,000 events",
        eskit: Vec::new(),
        baseline: Vec::new(),
    };
    for n in 0..rounds.max(1) {
        let [a, b, c, d] = handle.block_on(round(url, n, budget, ops))?;
        d1.eskit.push(a.per_sec());
        d1.baseline.push(b.per_sec());
        d2.eskit.push(c.per_sec());
        d2.baseline.push(d.per_sec());
    }
    Ok(vec![d1, d2])
}
