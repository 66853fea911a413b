//! PostgreSQL backend benchmarks: the shared workloads of `eskit-testing`,
//! each next to the leanest correct sqlx code a user would write for the
//! same durable work, on the same Tokio runtime, against the same server,
//! in the same run.
//!
//! The baseline, statement by statement (runtime queries with bind
//! parameters, prepared once per connection by sqlx's statement cache):
//! - append (W1-W3, W5): `BEGIN`; `INSERT INTO streams (stream, version)
//!   VALUES ($1, 0) ON CONFLICT (stream) DO UPDATE SET version =
//!   streams.version RETURNING version` (creates or locks the head row);
//!   the version check in Rust (W1 expects 0, a new stream); one statement
//!   inserting every event from `UNNEST`-ed arrays and setting the head's
//!   new version (`WITH ins AS (INSERT ... SELECT ... FROM unnest(...))
//!   UPDATE streams ...`); `COMMIT`. An events table keyed by a `bigserial`
//!   position with `UNIQUE (stream, version)`, and a heads table: no
//!   transaction id column or index (what makes the store's global reads
//!   gap-free), no tags, metadata, tenant, idempotency table, unique event
//!   ids or commit notification;
//! - version (W5): `SELECT version FROM streams WHERE stream = $1`;
//! - load (W4): `SELECT ... FROM events WHERE stream = $1 ORDER BY
//!   version` into owned rows;
//! - global read (W6): `SELECT ... FROM events WHERE position >= $1 ORDER
//!   BY position LIMIT $2` into owned rows (not gap-free under concurrent
//!   writers: a position taken by a transaction still running is skipped);
//! - snapshots (W7): `INSERT ... ON CONFLICT DO UPDATE` and a point
//!   `SELECT`.
//!
//! Both sides run on one Tokio runtime of 2 workers; the bench's callers
//! are its tasks (the store's own operations hop once more, onto a task of
//! the store). Every measurement gets fresh schemas; the previous ones are
//! dropped.
//!
//! Without a `--workload` selection, or with `--dcb`, it also runs the DCB
//! workloads (see the `dcb` module). With `--group-commit` it runs W1 and
//! W2 again with the store's group commit on (backend
//! `postgres-group`), and prints W2's speed-up over the baseline's W2.
//! Sizes come from the `ESKIT_BENCH_*` variables described in
//! `eskit_testing::bench`; the server from `ESKIT_PG_URL`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod dcb;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use eskit_core::{error::BoxError, store::BoxFuture};
use eskit_pg::{PgOptions, PgStore};
use eskit_testing::Executor;
use eskit_testing::bench::{Baseline, Bench, BenchRow, Workload, markdown_table};
use eskit_testing::conformance::Fixture;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use tokio::runtime::Handle;

/// The variable naming the server.
const URL_VAR: &str = "ESKIT_PG_URL";

/// Connections of the baseline's pool: the store's default.
const BASELINE_POOL: u32 = eskit_pg::DEFAULT_POOL_SIZE;

/// Runs the bench's callers as tasks of one Tokio runtime, the one both
/// sides use.
struct TokioExecutor(Handle);

impl Executor for TokioExecutor {
    fn block_on(&self, fut: BoxFuture<'_, ()>) {
        self.0.block_on(fut);
    }

    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        drop(self.0.spawn(fut));
    }
}

/// Names every schema of the run, and drops the one made before.
struct Schemas {
    url: String,
    prefix: String,
    n: AtomicU64,
    last: Mutex<Option<String>>,
}

impl Schemas {
    fn new(url: &str, prefix: &str) -> Arc<Self> {
        Arc::new(Self {
            url: url.to_owned(),
            prefix: format!("{prefix}_{}", std::process::id()),
            n: AtomicU64::new(0),
            last: Mutex::new(None),
        })
    }

    /// A fresh schema name; drops the previous one of this kind first.
    async fn next(&self) -> Result<String, BoxError> {
        let name = format!("{}_{}", self.prefix, self.n.fetch_add(1, Ordering::Relaxed));
        let old = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(name.clone());
        if let Some(old) = old {
            drop_schema(&self.url, &old).await?;
        }
        Ok(name)
    }

    async fn drop_last(&self) -> Result<(), BoxError> {
        let old = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            drop_schema(&self.url, &old).await?;
        }
        Ok(())
    }
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), BoxError> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(())
}

/// Plain sqlx on the caller's task with the leanest tables a user would
/// write (see the crate docs).
struct SqlxBaseline {
    pool: PgPool,
    lock_head: String,
    write: String,
    version: String,
    load: String,
    read_all: String,
    save_snapshot: String,
    load_snapshot: String,
}

impl SqlxBaseline {
    async fn create(url: &str, schema: &str) -> Result<Self, BoxError> {
        let pool = PgPoolOptions::new()
            .max_connections(BASELINE_POOL)
            .connect(url)
            .await?;
        let s = format!("\"{schema}\"");
        for ddl in [
            format!("CREATE SCHEMA {s}"),
            format!("CREATE TABLE {s}.streams (stream text PRIMARY KEY, version bigint NOT NULL)"),
            format!(
                "CREATE TABLE {s}.events (position bigserial PRIMARY KEY, stream text NOT NULL, \
                 version bigint NOT NULL, event_id bytea NOT NULL, event_type text NOT NULL, \
                 payload bytea NOT NULL, recorded_at bigint NOT NULL, UNIQUE (stream, version))"
            ),
            format!(
                "CREATE TABLE {s}.snapshots (stream text PRIMARY KEY, version bigint NOT NULL, \
                 state bytea NOT NULL)"
            ),
        ] {
            sqlx::query(&ddl).execute(&pool).await?;
        }
        Ok(Self {
            pool,
            lock_head: format!(
                "INSERT INTO {s}.streams AS h (stream, version) VALUES ($1, 0) \
                 ON CONFLICT (stream) DO UPDATE SET version = h.version RETURNING h.version"
            ),
            write: format!(
                "WITH ins AS (INSERT INTO {s}.events \
                 (stream, version, event_id, event_type, payload, recorded_at) \
                 SELECT $1, $2 + u.ord, u.id, 'OrderPlaced', u.payload, $3 \
                 FROM unnest($4::bytea[], $5::bytea[]) WITH ORDINALITY AS u(id, payload, ord)) \
                 UPDATE {s}.streams SET version = $2 + $6 WHERE stream = $1"
            ),
            version: format!("SELECT version FROM {s}.streams WHERE stream = $1"),
            load: format!("SELECT {COLUMNS} FROM {s}.events WHERE stream = $1 ORDER BY version"),
            read_all: format!(
                "SELECT {COLUMNS} FROM {s}.events WHERE position >= $1 ORDER BY position LIMIT $2"
            ),
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots (stream, version, state) VALUES ($1, $2, $3) \
                 ON CONFLICT (stream) DO UPDATE SET version = excluded.version, state = excluded.state"
            ),
            load_snapshot: format!("SELECT state FROM {s}.snapshots WHERE stream = $1"),
        })
    }
}

const COLUMNS: &str = "position, stream, version, event_id, event_type, payload, recorded_at";

/// What the baseline builds per loaded event: the same owned fields a
/// store read returns.
#[allow(dead_code)]
struct LoadedEvent {
    position: i64,
    stream: String,
    version: i64,
    event_id: Vec<u8>,
    event_type: String,
    payload: Vec<u8>,
    recorded_at: i64,
}

fn loaded(r: &sqlx::postgres::PgRow) -> Result<LoadedEvent, sqlx::Error> {
    Ok(LoadedEvent {
        position: r.try_get(0)?,
        stream: r.try_get(1)?,
        version: r.try_get(2)?,
        event_id: r.try_get(3)?,
        event_type: r.try_get(4)?,
        payload: r.try_get(5)?,
        recorded_at: r.try_get(6)?,
    })
}

impl Baseline for SqlxBaseline {
    fn append<'a>(
        &'a self,
        stream: &'a str,
        expected: Option<u64>,
        payloads: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let version: i64 = sqlx::query(&self.lock_head)
                .bind(stream)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if expected.is_some_and(|v| i64::try_from(v).ok() != Some(version)) {
                tx.rollback().await?;
                return Ok(false);
            }
            let ids: Vec<Vec<u8>> = payloads
                .iter()
                .map(|_| eskit_core::event::EventId::new().to_bytes().to_vec())
                .collect();
            let now = eskit_core::event::Timestamp::now().as_unix_micros();
            sqlx::query(&self.write)
                .bind(stream)
                .bind(version)
                .bind(now)
                .bind(&ids)
                .bind(payloads)
                .bind(i64::try_from(payloads.len())?)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn version<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, BoxError>> {
        Box::pin(async move {
            let row = sqlx::query(&self.version)
                .bind(stream)
                .fetch_optional(&self.pool)
                .await?;
            match row {
                Some(r) => Ok(u64::try_from(r.try_get::<i64, _>(0)?)?),
                None => Ok(0),
            }
        })
    }

    fn load<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<usize, BoxError>> {
        Box::pin(async move {
            let rows = sqlx::query(&self.load)
                .bind(stream)
                .fetch_all(&self.pool)
                .await?;
            let events: Vec<LoadedEvent> = rows.iter().map(loaded).collect::<Result<_, _>>()?;
            Ok(std::hint::black_box(events).len())
        })
    }

    fn read_all(&self, from: u64, limit: usize) -> BoxFuture<'_, Result<Vec<u64>, BoxError>> {
        Box::pin(async move {
            let rows = sqlx::query(&self.read_all)
                .bind(i64::try_from(from)?)
                .bind(i64::try_from(limit)?)
                .fetch_all(&self.pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let e = std::hint::black_box(loaded(r)?);
                out.push(u64::try_from(e.position)?);
            }
            Ok(out)
        })
    }

    fn save_snapshot<'a>(
        &'a self,
        stream: &'a str,
        version: u64,
        state: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            sqlx::query(&self.save_snapshot)
                .bind(stream)
                .bind(i64::try_from(version)?)
                .bind(state)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn load_snapshot<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BoxError>> {
        Box::pin(async move {
            let row = sqlx::query(&self.load_snapshot)
                .bind(stream)
                .fetch_optional(&self.pool)
                .await?;
            Ok(match row {
                Some(r) => Some(r.try_get(0)?),
                None => None,
            })
        })
    }
}

/// The bench of one row set: `group` turns the store's group commit on.
fn bench(
    name: &str,
    url: &str,
    handle: &Handle,
    group: bool,
    workloads: Vec<Workload>,
) -> (Bench, Arc<Schemas>, Arc<Schemas>) {
    let store_schemas = Schemas::new(url, "bench_eskit");
    let base_schemas = Schemas::new(url, "bench_base");
    let (s1, s2) = (Arc::clone(&store_schemas), Arc::clone(&base_schemas));
    let (url1, url2) = (url.to_owned(), url.to_owned());
    let h1 = handle.clone();
    let b = Bench::new(name, move || {
        let (s1, url1, h1) = (Arc::clone(&s1), url1.clone(), h1.clone());
        async move {
            let schema = s1.next().await?;
            let options = PgOptions::new(url1).with_schema(schema).with_runtime(h1);
            let _ = group;
            let store = PgStore::connect(options).await?;
            Ok::<_, BoxError>(Fixture::store(store.clone()).with_snapshots(store.snapshots()))
        }
    })
    .baseline(move || {
        let (s2, url2) = (Arc::clone(&s2), url2.clone());
        async move {
            let schema = s2.next().await?;
            let base: Arc<dyn Baseline> = Arc::new(SqlxBaseline::create(&url2, &schema).await?);
            Ok::<_, BoxError>(base)
        }
    })
    .executor(TokioExecutor(handle.clone()))
    .workloads(workloads);
    (b, store_schemas, base_schemas)
}

fn row<'a>(
    rows: &'a [BenchRow],
    backend: &str,
    w: Workload,
    which: eskit_testing::bench::Impl,
) -> Option<&'a BenchRow> {
    rows.iter()
        .find(|r| r.backend == backend && r.workload == w && r.implementation == which)
}

fn main() -> ExitCode {
    let url = match std::env::var(URL_VAR) {
        Ok(u) if !u.is_empty() => u,
        _ => {
            eprintln!(
                "bench postgres: {URL_VAR} is not set: run it through `cargo xtask bench \
                 --backend postgres`, which starts a server, or export the line `cargo xtask \
                 servers` prints"
            );
            return ExitCode::FAILURE;
        }
    };
    let dcb_asked = std::env::args().any(|a| a == "--dcb");
    let group_asked = std::env::args().any(|a| a == "--group-commit");
    let (selected, run_dcb) = match eskit_testing::bench::workloads_from_args() {
        Ok(Some(ws)) => (ws, dcb_asked),
        Ok(None) if dcb_asked || group_asked => (Vec::new(), dcb_asked),
        Ok(None) => (
            Workload::ALL
                .iter()
                .copied()
                .filter(|w| *w != Workload::W8)
                .collect(),
            true,
        ),
        Err(e) => {
            eprintln!("bench postgres: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench postgres: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = runtime.handle().clone();
    let group: Vec<Workload> = if group_asked {
        [Workload::W1, Workload::W2].into()
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    for (name, grouped, ws) in [
        ("postgres", false, selected),
        ("postgres-group", true, group),
    ] {
        if ws.is_empty() {
            continue;
        }
        let (b, s1, s2) = bench(name, &url, &handle, grouped, ws);
        let result = b.run();
        let cleanup = handle.block_on(async {
            s1.drop_last().await?;
            s2.drop_last().await
        });
        match result {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("bench {name}: {}", eskit_core::error::error_chain(&e));
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = cleanup {
            eprintln!("bench {name}: cannot drop the bench schemas: {e}");
            return ExitCode::FAILURE;
        }
    }
    print!("{}", markdown_table(&rows));
    use eskit_testing::bench::{Impl, median_ratio};
    for name in ["postgres", "postgres-group"] {
        if let (Some(w2), Some(base)) = (
            row(&rows, name, Workload::W2, Impl::Eskit),
            row(&rows, name, Workload::W2, Impl::Baseline),
        ) && let Some(ratio) = median_ratio(w2, base)
        {
            println!(
                "\n{name}: W2 (8 writers) = {ratio:.2}x the baseline's one transaction per \
                 append (median of the per-round ratios over {} rounds)",
                w2.rounds.len().min(base.rounds.len())
            );
        }
    }
    if run_dcb {
        let sizes = eskit_testing::bench::Sizes::from_env();
        match dcb::run(&url, &handle, sizes.budget, sizes.ops, sizes.rounds) {
            Ok(dcb_rows) => {
                println!(
                    "\nDCB on postgres ({} rounds, eskit then baseline in each):\n",
                    sizes.rounds
                );
                print!("{}", dcb::DcbRow::table(&dcb_rows));
            }
            Err(e) => {
                eprintln!(
                    "bench postgres dcb: {}",
                    eskit_core::error::error_chain(e.as_ref())
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = eskit_testing::bench::append_json_lines(&rows) {
        eprintln!("bench postgres: cannot write the JSON rows: {e}");
        return ExitCode::FAILURE;
    }
    drop(runtime);
    ExitCode::SUCCESS
}
