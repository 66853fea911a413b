//! The store conformance suite on PostgreSQL, each scenario on a fresh
//! schema of the server named by `ESKIT_PG_URL`. Prints one line per
//! scenario and ends with `conformance postgres: N passed, M failed`.
//!
//! Without `ESKIT_PG_URL` it fails loudly (never skips), saying how to get
//! a server.

#![allow(clippy::print_stdout)]

mod common;

use std::io::Write;
use std::process::ExitCode;

use eskit_core::error::BoxError;
use eskit_core::store::TenantScoped;
use eskit_pg::{PgOptions, PgStore};
use eskit_testing::conformance::{Fixture, Suite};

/// The event store with queries, snapshots and checkpoints, all scoped like
/// `store` (unscoped, or one tenant's).
fn scoped(store: PgStore) -> Fixture {
    Fixture::store(store.clone())
        .with_queries(store.clone())
        .with_snapshots(store.snapshots())
        .with_checkpoints(store.checkpoints())
}

fn fixture(store: PgStore) -> Fixture {
    let closer = store.clone();
    let tenants = store.clone();
    scoped(store.clone())
        .with_locks(store.locks())
        .with_other_locks(store.locks())
        .with_tenants(move |t| scoped(tenants.for_tenant(t)))
        .with_close(move || closer.close())
}

fn main() -> ExitCode {
    let mut out = std::io::stdout();
    let url = match common::url() {
        Ok(u) => u,
        Err(why) => {
            let _ = writeln!(out, "conformance postgres: {why}");
            let _ = writeln!(out, "conformance postgres: 0 passed, 1 failed");
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
            let _ = writeln!(out, "conformance postgres: cannot start a runtime: {e}");
            let _ = writeln!(out, "conformance postgres: 0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    let handle = runtime.handle().clone();
    let code = Suite::new("postgres", move || {
        let options = PgOptions::new(url.clone())
            .with_schema(common::fresh_schema("conf"))
            .with_runtime(handle.clone());
        async move { Ok::<_, BoxError>(fixture(PgStore::connect(options).await?)) }
    })
    .require_all()
    .main();
    runtime.shutdown_background();
    code
}
