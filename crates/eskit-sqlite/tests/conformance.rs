//! The store conformance suite on SQLite, on a file database and on
//! `:memory:`. Prints one line per scenario and ends with
//! `conformance sqlite: N passed, M failed`; exits non-zero on a failure.
//!
//! A name filter can be given as the first argument or in
//! `ESKIT_CONFORMANCE_FILTER`.

#![allow(clippy::print_stdout)]

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::TempDir;
use eskit_core::error::BoxError;
use eskit_core::event::{EventId, RawEvent};
use eskit_core::store::TenantScoped;
use eskit_sqlite::{SqliteOptions, SqliteStore, WriteTx};
use eskit_testing::conformance::{Fixture, Suite};

/// The store's handles: its events, queries, snapshots and checkpoints,
/// all scoped like `store` (unscoped, or one tenant's).
fn scoped(store: SqliteStore) -> Fixture {
    Fixture::store(store.clone())
        .with_queries(store.clone())
        .with_snapshots(store.snapshots())
        .with_checkpoints(store.checkpoints())
        .with_claims(store.claims())
}

/// The sink scenarios' projection: each event's id into a table of the
/// read model, in the page's transaction; a `refuse` payload refuses the page.
fn record_ids(tx: &mut WriteTx<'_>, events: &[RawEvent]) -> Result<(), BoxError> {
    let c = tx.connection();
    c.execute(
        "CREATE TABLE IF NOT EXISTS sink_effects (n INTEGER PRIMARY KEY, id BLOB NOT NULL)",
        [],
    )?;
    for e in events {
        if e.payload == b"refuse" {
            return Err("the sink scenarios refuse this event".into());
        }
        c.execute(
            "INSERT INTO sink_effects (id) VALUES (?1)",
            [&e.id.to_bytes()[..]],
        )?;
    }
    Ok(())
}

/// The ids [`record_ids`] stored, in order.
async fn recorded(store: SqliteStore) -> Result<Vec<EventId>, BoxError> {
    let ids = store
        .write_transaction(|tx| {
            let c = tx.connection();
            c.execute(
                "CREATE TABLE IF NOT EXISTS sink_effects (n INTEGER PRIMARY KEY, id BLOB NOT NULL)",
                [],
            )?;
            let mut stmt = c.prepare("SELECT id FROM sink_effects ORDER BY n")?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = Vec::new();
            for r in rows {
                let bytes: [u8; 16] = r?.try_into().map_err(|_| "an id of 16 bytes")?;
                out.push(EventId::from_bytes(bytes));
            }
            Ok::<_, BoxError>(out)
        })
        .await
        .map_err(|e| -> BoxError { e.to_string().into() })?;
    Ok(ids)
}

fn fixture(store: SqliteStore) -> Fixture {
    let closer = store.clone();
    let tenants = store.clone();
    let effects = store.clone();
    scoped(store.clone())
        .with_sink(store.projection_sink(record_ids), move || {
            recorded(effects.clone())
        })
        .with_locks(store.locks())
        .with_other_locks(store.locks())
        .with_tenants(move |t| scoped(tenants.for_tenant(t)))
        .with_close(move || {
            let closer = closer.clone();
            async move { closer.close().await }
        })
}

/// The suite on a file in `dir` (on `:memory:` without one); with
/// `caller_reads`, reads run on the awaiting thread.
fn suite(name: &str, dir: Option<Arc<PathBuf>>, caller_reads: bool) -> Suite {
    let counter = Arc::new(AtomicU64::new(0));
    let prefix = name.to_owned();
    let mut suite = Suite::new(name, move || {
        let options = match &dir {
            Some(dir) => SqliteOptions::file(dir.join(format!(
                "{prefix}-{}.db",
                counter.fetch_add(1, Ordering::Relaxed)
            )))
            .with_calls_on_caller_thread(caller_reads),
            None => SqliteOptions::in_memory(),
        };
        async move { Ok::<_, BoxError>(fixture(SqliteStore::connect(options).await?)) }
    });
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for a in args {
        suite = suite.filter(a);
    }
    if let Ok(f) = std::env::var("ESKIT_CONFORMANCE_FILTER")
        && !f.is_empty()
    {
        suite = suite.filter(f);
    }
    suite
}

fn main() -> ExitCode {
    let dir = match TempDir::new("conformance") {
        Ok(d) => d,
        Err(e) => {
            println!("conformance sqlite: cannot create a temporary directory: {e}");
            println!("conformance sqlite: 0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed, mut not_run) = (0, 0, 0);
    let mut out = std::io::stdout();
    let file = Arc::new(dir.path().to_path_buf());
    for (name, dir, caller_reads) in [
        ("sqlite-file", Some(Arc::clone(&file)), false),
        ("sqlite-caller-thread", Some(file), true),
        ("sqlite-memory", None, false),
    ] {
        let report = suite(name, dir, caller_reads).run_with(|r| {
            let _ = writeln!(out, "{}", r.line(name));
            let _ = out.flush();
        });
        let _ = writeln!(out, "{}", report.summary());
        if let Err(e) = report.write_requested() {
            let _ = writeln!(out, "cannot write the conformance report: {e}");
            failed += 1;
        }
        passed += report.passed();
        failed += report.failed();
        not_run += report.not_run();
    }
    // The store offers every capability, so every scenario must run.
    if not_run > 0 {
        let _ = writeln!(
            out,
            "conformance sqlite: {not_run} scenarios not run: a capability is missing from the fixture"
        );
        failed += not_run;
    }
    let _ = writeln!(out, "conformance sqlite: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
