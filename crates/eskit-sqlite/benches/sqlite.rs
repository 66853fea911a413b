//! SQLite backend benchmarks: the shared workloads of `eskit-testing`, each
//! next to the leanest correct rusqlite code a user would write for the same
//! durable work, on the caller's thread, in the same run (same WAL and
//! synchronous settings).
//!
//! The baseline, statement by statement (all prepared and cached):
//! - append: `BEGIN IMMEDIATE`; `SELECT coalesce(max(version), 0) FROM
//!   events WHERE stream = ?` (the version check; W1 expects 0, a new
//!   stream); one `INSERT INTO events (stream, version, event_id,
//!   event_type, payload, timestamp)` per event; `COMMIT`. One table, the
//!   stream name in every row, positions from the `INTEGER PRIMARY KEY`
//!   rowid (no `AUTOINCREMENT`, no streams table, no checksums, no
//!   metadata, no idempotency table);
//! - load: `SELECT ... FROM events WHERE stream = ? ORDER BY version` into
//!   owned rows;
//! - global read: `SELECT ... FROM events WHERE position >= ? ORDER BY
//!   position LIMIT ?` into owned rows;
//! - snapshots: one `WITHOUT ROWID` table, `INSERT OR REPLACE` and a point
//!   `SELECT`.
//!
//! What the store does beyond that, and pays for: a streams table with the
//! lifecycle state, an event-kinds table, a row checksum, metadata, the
//! idempotency table, positions that are never reused after a delete, and
//! every SQLite call on its own threads (none on the caller's executor).
//!
//! Runs every workload with `synchronous = NORMAL` (backend `sqlite`), the
//! append workloads W1 and W2 again with `FULL` (backend `sqlite-full`), and
//! every workload but W6 against the same baseline behind a thread hop
//! (backend `sqlite-hop`, see the `hop` module), every workload again with
//! the store's calls on the caller's thread (backend `sqlite-caller-thread`,
//! `SqliteOptions::with_calls_on_caller_thread`, against the lean
//! baseline), the appends W1, W2, W3 and W5 once more with the store on the
//! caller's thread against the lean append over the store's own tables and
//! indexes (backend `sqlite-indexed`, see the `indexed` module: how much of
//! the gap is the data the contract keeps), then prints W2's speed-up
//! over W1 per mode, which is what group commit buys. The DCB and command
//! workloads report their own baseline behind a hop in extra columns.
//! `--workload W` selects workloads; sizes come from the `ESKIT_BENCH_*`
//! variables described in `eskit_testing::bench`.
//!
//! Without a selection, or with `--dcb`, it also runs the DCB workloads D1
//! (conditional append), D2 and D3 (query reads by tag) next to their own
//! rusqlite baseline (see the `dcb` module) and prints their ratios; without
//! a selection, or with `--command`, the command workload C1 (a command
//! handler on a 1,000-event stream against rusqlite and serde_json, see the
//! `command` module).

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod command;
mod dcb;
mod hop;
mod indexed;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eskit_core::{error::BoxError, store::BoxFuture};
use eskit_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use eskit_testing::bench::{
    Baseline, Bench, BenchRow, Impl, Workload, markdown_table, median_ratio,
};
use eskit_testing::conformance::Fixture;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// Plain rusqlite on the calling thread, one connection per concurrent
/// caller, with the leanest table a user would write (see the crate docs).
struct RusqliteBaseline {
    path: PathBuf,
    sync: Synchronous,
    pool: Mutex<Vec<Connection>>,
}

impl RusqliteBaseline {
    fn create(path: PathBuf, sync: Synchronous) -> Result<Self, BoxError> {
        Self::create_with(
            path,
            sync,
            "CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY,
                 stream TEXT NOT NULL, version INTEGER NOT NULL, event_id BLOB NOT NULL,
                 event_type TEXT NOT NULL, payload BLOB NOT NULL, timestamp INTEGER NOT NULL,
                 UNIQUE (stream, version));
             CREATE TABLE IF NOT EXISTS snapshots (stream_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
                 state BLOB NOT NULL) WITHOUT ROWID;",
        )
    }

    /// The pool's first connection, over the tables `schema` creates (the
    /// lean ones, or the `indexed` module's).
    fn create_with(path: PathBuf, sync: Synchronous, schema: &str) -> Result<Self, BoxError> {
        let c = Self::connect(&path, sync)?;
        c.execute_batch(schema)?;
        Ok(Self {
            path,
            sync,
            pool: Mutex::new(vec![c]),
        })
    }

    fn connect(path: &Path, sync: Synchronous) -> Result<Connection, BoxError> {
        let c = Connection::open(path)?;
        c.busy_timeout(Duration::from_secs(60))?;
        c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        c.pragma_update(None, "synchronous", sync.as_str())?;
        // As the store does: without the planner stability guarantee the
        // bound `LIMIT ?2` of `read_all` makes SQLite compile the statement
        // again for every page, which would slow the baseline down.
        c.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        Ok(c)
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, BoxError>,
    ) -> Result<R, BoxError> {
        let taken = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut c = match taken {
            Some(c) => c,
            None => Self::connect(&self.path, self.sync)?,
        };
        let r = f(&mut c);
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(c);
        r
    }
}

fn append_sync(
    c: &mut Connection,
    stream: &str,
    expected: Option<u64>,
    payloads: &[Vec<u8>],
) -> Result<bool, BoxError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx
        .prepare_cached("SELECT coalesce(max(version), 0) FROM events WHERE stream = ?1")?
        .query_row([stream], |r| r.get(0))?;
    if expected.is_some_and(|v| i64::try_from(v).ok() != Some(version)) {
        return Ok(false);
    }
    let now = eskit_core::event::Timestamp::now().as_unix_micros();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (stream, version, event_id, event_type, payload, timestamp)
             VALUES (?1, ?2, ?3, 'OrderPlaced', ?4, ?5)",
        )?;
        for (i, p) in payloads.iter().enumerate() {
            let id = eskit_core::event::EventId::new().to_bytes();
            insert.execute(rusqlite::params![
                stream,
                version + 1 + i as i64,
                &id[..],
                p,
                now
            ])?;
        }
    }
    tx.commit()?;
    Ok(true)
}

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
    timestamp: i64,
}

fn loaded(r: &rusqlite::Row<'_>) -> rusqlite::Result<LoadedEvent> {
    Ok(LoadedEvent {
        position: r.get(0)?,
        stream: r.get(1)?,
        version: r.get(2)?,
        event_id: r.get(3)?,
        event_type: r.get(4)?,
        payload: r.get(5)?,
        timestamp: r.get(6)?,
    })
}

const EVENT_COLUMNS: &str = "position, stream, version, event_id, event_type, payload, timestamp";

impl Baseline for RusqliteBaseline {
    fn append<'a>(
        &'a self,
        stream: &'a str,
        expected: Option<u64>,
        payloads: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(async move { self.with(|c| append_sync(c, stream, expected, payloads)) })
    }

    fn version<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, BoxError>> {
        Box::pin(async move {
            self.with(|c| {
                let v: i64 = c
                    .prepare_cached(
                        "SELECT coalesce(max(version), 0) FROM events WHERE stream = ?1",
                    )?
                    .query_row([stream], |r| r.get(0))?;
                Ok(u64::try_from(v)?)
            })
        })
    }

    fn load<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<usize, BoxError>> {
        Box::pin(async move {
            self.with(|c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream = ?1 ORDER BY version"
                ))?;
                let events: Vec<LoadedEvent> = stmt
                    .query_map([stream], loaded)?
                    .collect::<Result<_, _>>()?;
                Ok(std::hint::black_box(events).len())
            })
        })
    }

    fn read_all(&self, from: u64, limit: usize) -> BoxFuture<'_, Result<Vec<u64>, BoxError>> {
        Box::pin(async move {
            self.with(|c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position >= ?1 ORDER BY position LIMIT ?2"
                ))?;
                let rows = stmt.query_map((i64::try_from(from)?, i64::try_from(limit)?), loaded)?;
                let mut out = Vec::new();
                for row in rows {
                    let e = std::hint::black_box(row?);
                    out.push(u64::try_from(e.position)?);
                }
                Ok(out)
            })
        })
    }

    fn save_snapshot<'a>(
        &'a self,
        stream: &'a str,
        version: u64,
        state: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            self.with(|c| {
                c.prepare_cached("INSERT OR REPLACE INTO snapshots (stream_id, version, state) VALUES (?1, ?2, ?3)")?
                    .execute((stream, i64::try_from(version)?, state))?;
                Ok(())
            })
        })
    }

    fn load_snapshot<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BoxError>> {
        Box::pin(async move {
            self.with(|c| {
                Ok(
                    c.prepare_cached("SELECT state FROM snapshots WHERE stream_id = ?1")?
                        .query_row([stream], |r| r.get(0))
                        .optional()?,
                )
            })
        })
    }
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which hand-written code a backend row set compares the store with.
#[derive(Clone, Copy)]
enum BaselineKind {
    /// The lean baseline on the caller's thread.
    Lean,
    /// The lean baseline behind a thread hop (the `hop` module).
    Hop,
    /// The lean append over the store's tables and indexes (the `indexed`
    /// module).
    Indexed,
}

/// The bench of one backend row set against the baseline `kind`.
fn bench(
    name: &str,
    dir: &Arc<PathBuf>,
    sync: Synchronous,
    kind: BaselineKind,
    caller_thread: bool,
    workloads: Vec<Workload>,
) -> Bench {
    let n = Arc::new(AtomicU64::new(0));
    let (d1, n1) = (Arc::clone(dir), Arc::clone(&n));
    let (d2, n2) = (Arc::clone(dir), n);
    // Every measurement gets a new file: the names carry the bench's name.
    let (name1, name2) = (name.to_owned(), name.to_owned());
    Bench::new(name, move || {
        let path = d1.join(format!(
            "{name1}-eskit-{}.db",
            n1.fetch_add(1, Ordering::Relaxed)
        ));
        async move {
            let options = SqliteOptions::file(path)
                .with_synchronous(sync)
                .with_calls_on_caller_thread(caller_thread);
            let store = SqliteStore::connect(options).await?;
            Ok::<_, BoxError>(Fixture::store(store.clone()).with_snapshots(store.snapshots()))
        }
    })
    .baseline(move || {
        let path = d2.join(format!(
            "{name2}-baseline-{}.db",
            n2.fetch_add(1, Ordering::Relaxed)
        ));
        async move {
            let base: Arc<dyn Baseline> = match kind {
                BaselineKind::Lean => Arc::new(RusqliteBaseline::create(path, sync)?),
                BaselineKind::Hop => Arc::new(hop::HopBaseline::create(path, sync)?),
                BaselineKind::Indexed => Arc::new(indexed::IndexedBaseline::create(path, sync)?),
            };
            Ok::<_, BoxError>(base)
        }
    })
    .workloads(workloads)
}

fn eskit_row<'a>(rows: &'a [BenchRow], backend: &str, w: Workload) -> Option<&'a BenchRow> {
    rows.iter()
        .find(|r| r.backend == backend && r.workload == w && r.implementation == Impl::Eskit)
}

fn main() -> ExitCode {
    let dcb_asked = std::env::args().any(|a| a == "--dcb");
    let command_asked = std::env::args().any(|a| a == "--command");
    let (selected, run_dcb, run_command) = match eskit_testing::bench::workloads_from_args() {
        Ok(Some(ws)) => (ws, dcb_asked, command_asked),
        Ok(None) if dcb_asked || command_asked => (Vec::new(), dcb_asked, command_asked),
        Ok(None) => (
            Workload::ALL
                .iter()
                .copied()
                .filter(|w| *w != Workload::W8)
                .collect(),
            true,
            true,
        ),
        Err(e) => {
            eprintln!("bench sqlite: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = std::env::temp_dir().join(format!("eskit-sqlite-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("bench sqlite: {e}");
        return ExitCode::FAILURE;
    }
    let _scratch = Scratch(dir.clone());
    let dir = Arc::new(dir);
    let full: Vec<Workload> = selected
        .iter()
        .copied()
        .filter(|w| matches!(w, Workload::W1 | Workload::W2))
        .collect();
    // Every workload but W6 (whose seeding of 100,000 events would double
    // the run for a read the hop costs little of) also runs against the
    // baseline behind a hop.
    let hopped: Vec<Workload> = selected
        .iter()
        .copied()
        .filter(|w| *w != Workload::W6)
        .collect();
    // Every workload runs again with the store's calls on the caller's
    // thread, against the same lean baseline.
    let caller = selected.clone();
    // The appends run once more, the store on the caller's thread against
    // the lean append over the store's own tables and indexes.
    let indexed_appends: Vec<Workload> = selected
        .iter()
        .copied()
        .filter(|w| matches!(w, Workload::W1 | Workload::W2 | Workload::W3 | Workload::W5))
        .collect();
    let mut rows = Vec::new();
    for (name, sync, kind, caller_thread, ws) in [
        (
            "sqlite",
            Synchronous::Normal,
            BaselineKind::Lean,
            false,
            selected,
        ),
        (
            "sqlite-full",
            Synchronous::Full,
            BaselineKind::Lean,
            false,
            full,
        ),
        (
            "sqlite-hop",
            Synchronous::Normal,
            BaselineKind::Hop,
            false,
            hopped,
        ),
        (
            "sqlite-caller-thread",
            Synchronous::Normal,
            BaselineKind::Lean,
            true,
            caller,
        ),
        (
            "sqlite-indexed",
            Synchronous::Normal,
            BaselineKind::Indexed,
            true,
            indexed_appends,
        ),
    ] {
        if ws.is_empty() {
            continue;
        }
        match bench(name, &dir, sync, kind, caller_thread, ws).run() {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("bench {name}: {}", eskit_core::error::error_chain(&e));
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", markdown_table(&rows));
    for name in ["sqlite", "sqlite-full"] {
        if let (Some(w1), Some(w2)) = (
            eskit_row(&rows, name, Workload::W1),
            eskit_row(&rows, name, Workload::W2),
        ) && let Some(ratio) = median_ratio(w2, w1)
        {
            println!(
                "\n{name}: W2 (8 writers, group commit) = {ratio:.2}x W1 events/s \
                 (median of the per-round ratios over {} rounds)",
                w1.rounds.len().min(w2.rounds.len())
            );
        }
    }
    let sizes = eskit_testing::bench::Sizes::from_env();
    if run_command {
        match command::run(&dir, Synchronous::Normal, sizes.budget, sizes.rounds) {
            Ok(row) => {
                println!(
                    "\nCommand handler on sqlite ({} rounds, eskit then baseline in each):\n",
                    sizes.rounds
                );
                print!("{}", dcb::DcbRow::table(&[row]));
            }
            Err(e) => {
                eprintln!(
                    "bench sqlite command: {}",
                    eskit_core::error::error_chain(e.as_ref())
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if run_dcb {
        match dcb::run(
            &dir,
            Synchronous::Normal,
            sizes.budget,
            sizes.ops,
            sizes.rounds,
        ) {
            Ok(dcb_rows) => {
                println!(
                    "\nDCB on sqlite ({} rounds, eskit then baseline in each):\n",
                    sizes.rounds
                );
                print!("{}", dcb::DcbRow::table(&dcb_rows));
            }
            Err(e) => {
                eprintln!(
                    "bench sqlite dcb: {}",
                    eskit_core::error::error_chain(e.as_ref())
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = eskit_testing::bench::append_json_lines(&rows) {
        eprintln!("bench sqlite: cannot write the JSON rows: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
