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
use eskit_core::event::{EventId, RawEvent};
use eskit_core::store::{BoxFuture, TenantScoped};
use eskit_pg::{PgOptions, PgProjection, PgStore};
use eskit_testing::conformance::{Fixture, Suite};
use sqlx::{PgConnection, Row};
use tokio::runtime::Handle;

/// The event store with queries, snapshots and checkpoints, all scoped like
/// `store` (unscoped, or one tenant's).
fn scoped(store: PgStore) -> Fixture {
    Fixture::store(store.clone())
        .with_queries(store.clone())
        .with_snapshots(store.snapshots())
        .with_checkpoints(store.checkpoints())
        .with_claims(store.claims())
}

/// The sink scenarios' projection: each event's id into a read-model table
/// of the store's schema, in the page's transaction; a `refuse` payload
/// refuses the page.
struct RecordIds {
    table: String,
}

impl PgProjection for RecordIds {
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            for e in events {
                if e.payload == b"refuse" {
                    return Err("the sink scenarios refuse this event".into());
                }
                sqlx::query(&format!("INSERT INTO {} (id) VALUES ($1)", self.table))
                    .bind(e.id.to_bytes().to_vec())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    }
}

/// The ids [`RecordIds`] stored, in order (read on the store's runtime:
/// the suite's executor is not Tokio).
async fn recorded(handle: Handle, store: PgStore, table: String) -> Result<Vec<EventId>, BoxError> {
    let rows = handle
        .spawn(async move {
            sqlx::query(&format!("SELECT id FROM {table} ORDER BY n"))
                .fetch_all(store.pool())
                .await
        })
        .await??;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let bytes: Vec<u8> = r.try_get(0)?;
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| "an id of 16 bytes")?;
        out.push(EventId::from_bytes(bytes));
    }
    Ok(out)
}

fn fixture(store: PgStore, table: String, handle: Handle) -> Fixture {
    let closer = store.clone();
    let tenants = store.clone();
    let effects = store.clone();
    let effects_table = table.clone();
    scoped(store.clone())
        .with_sink(store.projection_sink(RecordIds { table }), move || {
            recorded(handle.clone(), effects.clone(), effects_table.clone())
        })
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
        let schema = common::fresh_schema("conf");
        let table = format!("\"{schema}\".sink_effects");
        let options = PgOptions::new(url.clone())
            .with_schema(schema)
            .with_runtime(handle.clone());
        let handle = handle.clone();
        async move {
            let store = PgStore::connect(options).await?;
            let (pool, create) = (store.pool().clone(), table.clone());
            handle
                .spawn(async move {
                    sqlx::query(&format!(
                        "CREATE TABLE {create} (n bigserial PRIMARY KEY, id bytea NOT NULL)"
                    ))
                    .execute(&pool)
                    .await
                })
                .await??;
            Ok::<_, BoxError>(fixture(store, table, handle))
        }
    })
    .require_all()
    .main();
    runtime.shutdown_background();
    code
}
