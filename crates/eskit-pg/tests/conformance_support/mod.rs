//! The store conformance suite on PostgreSQL, shared by the `conformance`
//! target (the store connects as the schema's owner, a superuser on the
//! test server) and `conformance_rls` (it connects as an application role
//! bound by row-level security, after the owner migrated the schema and
//! granted the role access). Each scenario runs on a fresh schema of the
//! server named by `ESKIT_PG_URL`; prints one line per scenario and ends
//! with `conformance <backend>: N passed, M failed`.
//!
//! Without `ESKIT_PG_URL` it fails loudly (never skips), saying how to get
//! a server.

#![allow(dead_code, unreachable_pub, clippy::print_stdout)]

use std::io::Write;
use std::process::ExitCode;

use eskit_core::error::BoxError;
use eskit_core::event::{EventId, RawEvent};
use eskit_core::store::{BoxFuture, TenantScoped};
use eskit_pg::{PgOptions, PgProjection, PgStore};
use eskit_testing::conformance::{Fixture, Suite};
use sqlx::{PgConnection, Row};
use tokio::runtime::Handle;

use crate::common;

/// How the conformance store connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As the URL's role, which owns the schema (and is a superuser on the
    /// test server).
    Owner,
    /// As [`APP_ROLE`]: no superuser, no `BYPASSRLS`, not the tables' owner,
    /// only the grants of `PgStore::grant_access`; the store is opened
    /// with `require_row_security`.
    AppRole,
}

/// The application role of [`Mode::AppRole`].
pub const APP_ROLE: &str = "eskit_conformance_app";

/// Its password (the test server trusts local connections; a server that
/// asks gets this one).
const APP_PASSWORD: &str = "eskit_conformance_app";

/// `url` with its user (and password) replaced by `user:password`.
pub fn url_as(url: &str, user: &str, password: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "the server url has no scheme".to_owned())?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    Ok(format!("{scheme}://{user}:{password}@{host}"))
}

/// Creates `role` (a login role, no superuser, no `BYPASSRLS`) unless it
/// exists, as the owner at `url`.
pub async fn ensure_role(url: &str, role: &str, password: &str) -> Result<(), BoxError> {
    use sqlx::Connection;
    let mut conn = PgConnection::connect(url).await?;
    // Test binaries creating roles at once take turns.
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('eskit-test-roles', 0))")
        .execute(&mut *tx)
        .await?;
    let exists: bool = sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if !exists {
        sqlx::query(&format!(
            "CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}'"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

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

/// Runs the suite as `backend`, the store connecting as `mode` says.
pub fn main(backend: &'static str, mode: Mode) -> ExitCode {
    let mut out = std::io::stdout();
    let fail = |out: &mut std::io::Stdout, why: &str| {
        let _ = writeln!(out, "conformance {backend}: {why}");
        let _ = writeln!(out, "conformance {backend}: 0 passed, 1 failed");
        ExitCode::FAILURE
    };
    let url = match common::url() {
        Ok(u) => u,
        Err(why) => return fail(&mut out, &why),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&mut out, &format!("cannot start a runtime: {e}")),
    };
    let app_url = match url_as(&url, APP_ROLE, APP_PASSWORD) {
        Ok(u) => u,
        Err(why) => return fail(&mut out, &why),
    };
    if mode == Mode::AppRole
        && let Err(e) = runtime.block_on(ensure_role(&url, APP_ROLE, APP_PASSWORD))
    {
        return fail(
            &mut out,
            &format!("cannot create the application role: {e}"),
        );
    }
    let handle = runtime.handle().clone();
    let code = Suite::new(backend, move || {
        let schema = common::fresh_schema("conf");
        let table = format!("\"{schema}\".sink_effects");
        let owner = PgOptions::new(url.clone())
            .with_schema(schema.clone())
            .with_runtime(handle.clone());
        let app = PgOptions::new(app_url.clone())
            .with_schema(schema)
            .with_runtime(handle.clone())
            .require_row_security();
        let handle = handle.clone();
        async move {
            let store = PgStore::connect(owner).await?;
            let (pool, create) = (store.pool().clone(), table.clone());
            handle
                .spawn(async move {
                    sqlx::query(&format!(
                        "CREATE TABLE {create} (n bigserial PRIMARY KEY, id bytea NOT NULL)"
                    ))
                    .execute(&pool)
                    .await?;
                    if mode == Mode::AppRole {
                        sqlx::query(&format!("GRANT SELECT, INSERT ON {create} TO {APP_ROLE}"))
                            .execute(&pool)
                            .await?;
                        sqlx::query(&format!(
                            "GRANT USAGE ON SEQUENCE {create}_n_seq TO {APP_ROLE}"
                        ))
                        .execute(&pool)
                        .await?;
                    }
                    Ok::<_, sqlx::Error>(())
                })
                .await??;
            let store = match mode {
                Mode::Owner => store,
                Mode::AppRole => {
                    store.grant_access(APP_ROLE).await?;
                    store.close().await;
                    let app = PgStore::connect(app).await?;
                    if !app.row_security() {
                        return Err("the application role bypasses row-level security".into());
                    }
                    app
                }
            };
            Ok::<_, BoxError>(fixture(store, table, handle))
        }
    })
    .require_all()
    .main();
    runtime.shutdown_background();
    code
}
