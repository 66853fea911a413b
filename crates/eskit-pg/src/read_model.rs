//! Read models in the store's own schema: a view whose tables are written
//! in the transaction that stores its cursor, and rebuilt without downtime
//! in shadow tables whose rows are swapped in atomically.
//!
//! **Invariant**: the live tables carry the view's own names, the shadow
//! tables the same names behind [`SHADOW_PREFIX`], all in the store's
//! schema. Every table has a [`TENANT_COLUMN`], like the store's own
//! tables: the tables are shared by the tenants of the schema, each
//! handle reads and writes its tenant's rows only, and a rebuild, reset or
//! swap touches only the handle's tenant's rows. So the swap copies rows
//! (in one transaction: the tenant's live rows are deleted, the shadow's
//! inserted in their place, the shadow's cursor becomes the live one)
//! rather than renaming tables, which would replace every tenant's rows.
//! Readers (MVCC snapshots) see the old rows or the new ones, never a mix,
//! never an empty view.
//!
//! **Invariant**: every transaction that applies a page to the live read
//! model, fills the shadow, or changes both (reset, begin, swap, drop)
//! holds the projection's advisory lock (the live one first, then the
//! shadow's), so they take turns and never deadlock.

use std::fmt;
use std::sync::Arc;

use eskit_core::{
    backend::{TableNaming, ViewTableError, check_view_tables, validate_cursor, validate_name},
    error::{BoxError, StoreError},
    event::{GlobalCursor, InvalidName, NameKind, RawEvent},
    store::{BoxFuture, CheckpointStore, ProjectionSink, ShadowRebuild, SinkError, SwapOutcome},
};
use sqlx::{Connection, PgConnection, Row};
use tracing::Instrument;

use crate::error::store_error;
use crate::sink::{checkpoint_on, lock_projection, save_checkpoint_on};
use crate::store::{Inner, PgStore, op_span};

/// The prefix of a view's shadow tables (and of indexes named through
/// [`Tables::index`]).
pub const SHADOW_PREFIX: &str = "eskit_shadow_";
/// The suffix of the checkpoint name a shadow's subscription uses.
pub const SHADOW_SUFFIX: &str = ".shadow";
pub use eskit_core::limits::{MAX_VIEW_TABLE_NAME, MAX_VIEW_TABLES};
/// The column every view table must have: the tenant of the row (`''` for
/// none), bound from [`Tables::tenant`].
pub const TENANT_COLUMN: &str = "tenant";

const _: () = assert!(
    SHADOW_PREFIX.len() + MAX_VIEW_TABLE_NAME <= crate::MAX_SCHEMA_BYTES,
    "a shadow table name must be a valid identifier"
);

/// Why a read model was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadModelError {
    /// The read model's name (its checkpoint name) is not valid, or is too
    /// long once [`SHADOW_SUFFIX`] is added.
    Name(InvalidName),
    /// A table name the view declares is refused.
    Table {
        /// The name (cut to [`MAX_VIEW_TABLE_NAME`] characters).
        table: String,
        /// Why.
        reason: &'static str,
    },
    /// The view declares no table, or more than [`MAX_VIEW_TABLES`].
    TableCount(usize),
    /// A table the view created has no [`TENANT_COLUMN`] (or was not
    /// created at all).
    NoTenantColumn {
        /// The table, as the view declares it.
        table: String,
    },
}

impl fmt::Display for ReadModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(_) => f.write_str("invalid read model name"),
            Self::Table { table, reason } => {
                write!(f, "invalid view table name `{table}`: {reason}")
            }
            Self::TableCount(n) => {
                write!(f, "a view declares 1 to {MAX_VIEW_TABLES} tables, not {n}")
            }
            Self::NoTenantColumn { table } => {
                write!(
                    f,
                    "the view's table `{table}` has no `{TENANT_COLUMN}` column"
                )
            }
        }
    }
}

impl std::error::Error for ReadModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Name(e) => Some(e),
            _ => None,
        }
    }
}

/// The table names a [`PgView`] writes, and the tenant its rows carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tables {
    schema: Arc<str>,
    prefix: &'static str,
    tenant: Arc<str>,
}

impl Tables {
    /// The name to use in SQL for the view's table `table`: schema
    /// qualified, behind [`SHADOW_PREFIX`] for the shadow.
    pub fn name(&self, table: &str) -> String {
        format!("{}.{}{table}", self.schema, self.prefix)
    }

    /// The name to give the view's index `index` in `CREATE INDEX` (not
    /// schema qualified: an index lives in its table's schema). Index names
    /// are shared by every table of the schema, so prefix them with the
    /// table's name.
    pub fn index(&self, index: &str) -> String {
        format!("{}{index}", self.prefix)
    }

    /// The tenant every row written through these names must carry in its
    /// [`TENANT_COLUMN`], and every read must filter on.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Whether these are the shadow names.
    pub fn is_shadow(&self) -> bool {
        !self.prefix.is_empty()
    }
}

/// A read model kept in tables of the store's schema.
///
/// Write every table name through [`Tables::name`] and index name through
/// [`Tables::index`], so the same code fills the live tables and a shadow.
/// Every table has a [`TENANT_COLUMN`] (`text NOT NULL`), part of its key,
/// set to [`Tables::tenant`] on every row. Table names are lowercase ASCII
/// letters, digits and `_`, so they need no quoting.
pub trait PgView: Send + Sync + 'static {
    /// The view's tables (their live names), 1 to [`MAX_VIEW_TABLES`].
    fn tables(&self) -> &[&'static str];

    /// Creates the tables and their indexes under `tables`' names, with
    /// `IF NOT EXISTS`, in `conn`'s transaction. The live and the shadow
    /// tables must come out alike: a swap copies rows between them.
    ///
    /// # Errors
    /// A failed statement; nothing is created then.
    fn create<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tables: &'a Tables,
    ) -> BoxFuture<'a, Result<(), BoxError>>;

    /// Applies one page (in cursor order, possibly empty) to the tables
    /// named by `tables`, inside the transaction that also stores the
    /// cursor.
    ///
    /// # Errors
    /// Whatever the view refuses; the page is rolled back, cursor included.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tables: &'a Tables,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}

/// A read model in the store's schema: its tables, its checkpoint and its
/// shadow. Made by [`PgStore::read_model`].
///
/// ```no_run
/// use eskit_core::{error::BoxError, event::RawEvent, store::BoxFuture};
/// use eskit_pg::{PgOptions, PgStore, read_model::{PgView, Tables}};
/// use sqlx::PgConnection;
///
/// struct Counts;
///
/// impl PgView for Counts {
///     fn tables(&self) -> &[&'static str] {
///         &["counts"]
///     }
///     fn create<'a>(&'a self, conn: &'a mut PgConnection, t: &'a Tables)
///         -> BoxFuture<'a, Result<(), BoxError>> {
///         Box::pin(async move {
///             sqlx::query(&format!(
///                 "CREATE TABLE IF NOT EXISTS {} (tenant text NOT NULL, stream text NOT NULL, \
///                  n bigint NOT NULL, PRIMARY KEY (tenant, stream))",
///                 t.name("counts")
///             ))
///             .execute(&mut *conn)
///             .await?;
///             Ok(())
///         })
///     }
///     fn apply<'a>(&'a self, conn: &'a mut PgConnection, t: &'a Tables, events: &'a [RawEvent])
///         -> BoxFuture<'a, Result<(), BoxError>> {
///         Box::pin(async move {
///             let sql = format!(
///                 "INSERT INTO {} (tenant, stream, n) VALUES ($1, $2, 1) \
///                  ON CONFLICT (tenant, stream) DO UPDATE SET n = excluded.n + 1",
///                 t.name("counts")
///             );
///             for e in events {
///                 sqlx::query(&sql)
///                     .bind(t.tenant())
///                     .bind(e.stream.to_string())
///                     .execute(&mut *conn)
///                     .await?;
///             }
///             Ok(())
///         })
///     }
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PgStore::connect(PgOptions::new("postgres://app@127.0.0.1/app")).await?;
/// let counts = store.read_model("counts", Counts)?;
/// counts.setup().await?;
/// // Drive it with `Subscription::with_sink(store.clone(), counts.sink(), options)`.
/// # Ok(())
/// # }
/// ```
pub struct PgReadModel<V> {
    shared: Arc<Shared<V>>,
}

struct Shared<V> {
    store: PgStore,
    name: String,
    shadow_name: String,
    view: V,
    live: Tables,
    shadow: Tables,
}

impl<V> fmt::Debug for PgReadModel<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgReadModel")
            .field("name", &self.shared.name)
            .field("tenant", &self.shared.live.tenant)
            .finish_non_exhaustive()
    }
}

impl<V> Clone for PgReadModel<V> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

fn check_tables(tables: &[&str]) -> Result<(), ReadModelError> {
    let own: Vec<&str> = crate::schema::store_tables().collect();
    let naming = TableNaming {
        lowercase_only: true,
        reserved_prefixes: &["eskit_", "pg_"],
        reserved_reason: "the prefixes `eskit_` and `pg_` are reserved",
        reserved_names: &own,
    };
    check_view_tables(tables, &naming).map_err(|e| match e {
        ViewTableError::Count(n) => ReadModelError::TableCount(n),
        ViewTableError::Table { table, reason } => ReadModelError::Table { table, reason },
        _ => ReadModelError::TableCount(tables.len()),
    })
}

impl PgStore {
    /// A read model `name` (also its checkpoint name) kept in this store's
    /// schema by `view`, for this handle's tenant. Create its tables with
    /// [`setup`](PgReadModel::setup) and drive it with a subscription over
    /// [`sink`](PgReadModel::sink).
    ///
    /// # Errors
    /// [`ReadModelError`] for a bad name or table list; no SQL runs then.
    pub fn read_model<V: PgView>(
        &self,
        name: &str,
        view: V,
    ) -> Result<PgReadModel<V>, ReadModelError> {
        validate_name(NameKind::Checkpoint, name).map_err(ReadModelError::Name)?;
        let shadow_name = format!("{name}{SHADOW_SUFFIX}");
        validate_name(NameKind::Checkpoint, &shadow_name).map_err(ReadModelError::Name)?;
        check_tables(view.tables())?;
        let schema: Arc<str> = self.inner().sql.schema.as_str().into();
        let tenant: Arc<str> = self.tenant_key().into();
        Ok(PgReadModel {
            shared: Arc::new(Shared {
                store: self.clone(),
                name: name.to_owned(),
                shadow_name,
                view,
                live: Tables {
                    schema: Arc::clone(&schema),
                    prefix: "",
                    tenant: Arc::clone(&tenant),
                },
                shadow: Tables {
                    schema,
                    prefix: SHADOW_PREFIX,
                    tenant,
                },
            }),
        })
    }
}

/// A transaction on a connection of the pool, holding the advisory locks
/// of the live read model and of its shadow, in that order.
async fn locked<V>(
    inner: &Inner,
    shared: &Shared<V>,
    conn: &mut PgConnection,
) -> Result<(), StoreError> {
    lock_projection(inner, conn, &shared.name).await?;
    lock_projection(inner, conn, &shared.shadow_name).await
}

async fn delete_checkpoint(
    inner: &Inner,
    tenant: &str,
    conn: &mut PgConnection,
    name: &str,
) -> Result<(), StoreError> {
    let s = &inner.sql.schema;
    sqlx::query(&format!(
        "DELETE FROM {s}.checkpoints WHERE tenant = $1 AND name = $2"
    ))
    .bind(tenant)
    .bind(name)
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Deletes the tenant's rows from every table of `tables` that exists.
async fn delete_rows(
    conn: &mut PgConnection,
    view: &[&'static str],
    tables: &Tables,
) -> Result<(), StoreError> {
    for t in view {
        let table = tables.name(t);
        let exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL")
            .bind(&table)
            .fetch_one(&mut *conn)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(store_error)?;
        if exists {
            sqlx::query(&format!("DELETE FROM {table} WHERE {TENANT_COLUMN} = $1"))
                .bind(tables.tenant())
                .execute(&mut *conn)
                .await
                .map_err(store_error)?;
        }
    }
    Ok(())
}

/// Creates `tables` with the view and checks each has a tenant column.
async fn create<V: PgView>(
    inner: &Inner,
    view: &V,
    conn: &mut PgConnection,
    tables: &Tables,
) -> Result<(), StoreError> {
    view.create(conn, tables)
        .await
        .map_err(StoreError::backend)?;
    let names: Vec<String> = view
        .tables()
        .iter()
        .map(|t| format!("{}{t}", tables.prefix))
        .collect();
    let rows = sqlx::query(
        "SELECT table_name::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = ANY($2) AND column_name = $3",
    )
    .bind(inner.schema.as_str())
    .bind(&names)
    .bind(TENANT_COLUMN)
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    let with_tenant: Vec<String> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(store_error)?;
    for (t, name) in view.tables().iter().zip(&names) {
        if !with_tenant.contains(name) {
            return Err(StoreError::backend(ReadModelError::NoTenantColumn {
                table: (*t).to_owned(),
            }));
        }
    }
    Ok(())
}

/// The column names of `table` (a name from [`Tables::name`]), in order.
async fn columns(
    inner: &Inner,
    conn: &mut PgConnection,
    table: &str,
) -> Result<Vec<String>, StoreError> {
    let local = table.rsplit('.').next().unwrap_or(table);
    let rows = sqlx::query(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
    )
    .bind(inner.schema.as_str())
    .bind(local)
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    rows.iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(store_error)
}

impl<V: PgView> PgReadModel<V> {
    /// The read model's name (its checkpoint name).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The view.
    pub fn view(&self) -> &V {
        &self.shared.view
    }

    /// The store (and tenant) the read model lives in.
    pub fn store(&self) -> &PgStore {
        &self.shared.store
    }

    /// The live table names (and tenant), for queries.
    pub fn tables(&self) -> &Tables {
        &self.shared.live
    }

    /// Runs `f` on the store's runtime in one transaction holding the read
    /// model's locks, committed when `f` returns `Ok`.
    async fn transaction<T, F>(&self, operation: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                Arc<Shared<V>>,
                &'c mut PgConnection,
            ) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let store = &self.shared.store;
        store.check_open()?;
        let inner = Arc::clone(store.inner());
        let shared = Arc::clone(&self.shared);
        let task = async move {
            let mut conn = inner.pool.acquire().await.map_err(store_error)?;
            let mut tx = conn.begin().await.map_err(store_error)?;
            name_tenant(&inner, &mut tx, shared.live.tenant()).await?;
            locked(&inner, &shared, &mut tx).await?;
            let out = f(shared, &mut tx).await?;
            tx.commit().await.map_err(store_error)?;
            Ok(out)
        };
        store
            .inner()
            .runtime
            .run(task.instrument(op_span(operation)))
            .await?
    }

    /// Creates the live tables if they do not exist, and checks each has a
    /// [`TENANT_COLUMN`].
    ///
    /// # Errors
    /// A failed statement, or a table without a tenant column
    /// ([`ReadModelError::NoTenantColumn`] as the source of a backend
    /// error); nothing is created then.
    pub async fn setup(&self) -> Result<(), StoreError> {
        self.transaction("read_model_setup", |shared, conn| {
            Box::pin(async move {
                let inner = Arc::clone(shared.store.inner());
                create(&inner, &shared.view, conn, &shared.live).await
            })
        })
        .await
    }

    /// The sink that applies pages to the live tables and stores the
    /// cursor in the same transaction: give it to
    /// `Subscription::with_sink` under the read model's name.
    ///
    /// While a shadow rebuild runs and the shadow has caught up with the
    /// live cursor, each live page is applied to the shadow as well, in the
    /// same transaction, so the shadow stays caught up until the swap.
    pub fn sink(&self) -> PgViewSink<V> {
        PgViewSink {
            model: self.clone(),
            shadow: false,
        }
    }

    /// The live cursor, `None` before the first page.
    ///
    /// # Errors
    /// A failed read.
    pub async fn cursor(&self) -> Result<Option<GlobalCursor>, StoreError> {
        self.shared
            .store
            .checkpoints()
            .load(&self.shared.name)
            .await
    }

    /// Empties the read model for this tenant in one transaction: deletes
    /// its rows from the live and shadow tables, its checkpoint and its
    /// shadow's, so its next subscription replays from the start. Readers
    /// see the view empty until then; for a rebuild that keeps serving,
    /// use the shadow ([`ShadowRebuild`]).
    ///
    /// # Errors
    /// A failed statement or transaction; nothing changed then.
    pub async fn reset(&self) -> Result<(), StoreError> {
        self.transaction("read_model_reset", |shared, conn| {
            Box::pin(async move {
                let inner = Arc::clone(shared.store.inner());
                let tables = shared.view.tables();
                delete_rows(conn, tables, &shared.live).await?;
                delete_rows(conn, tables, &shared.shadow).await?;
                let tenant = shared.live.tenant();
                delete_checkpoint(&inner, tenant, conn, &shared.name).await?;
                delete_checkpoint(&inner, tenant, conn, &shared.shadow_name).await
            })
        })
        .await
    }

    /// Drops the shadow (this tenant's rows in it and its checkpoint), for
    /// a rebuild given up on: a shadow left behind by a crashed rebuild
    /// that had caught up is otherwise fed by every live page until the
    /// next rebuild begins. The live read model is untouched.
    ///
    /// # Errors
    /// A failed statement or transaction; nothing changed then.
    pub async fn drop_shadow(&self) -> Result<(), StoreError> {
        self.transaction("read_model_drop_shadow", |shared, conn| {
            Box::pin(async move {
                let inner = Arc::clone(shared.store.inner());
                delete_rows(conn, shared.view.tables(), &shared.shadow).await?;
                let tenant = shared.live.tenant();
                delete_checkpoint(&inner, tenant, conn, &shared.shadow_name).await
            })
        })
        .await
    }
}

impl<V: PgView> ShadowRebuild for PgReadModel<V> {
    type Shadow = PgViewSink<V>;

    fn shadow_name(&self) -> &str {
        &self.shared.shadow_name
    }

    /// Creates the shadow tables if needed, deletes this tenant's rows
    /// from them and stores the shadow's cursor at the start (which marks
    /// the shadow as begun), in one transaction.
    async fn begin_shadow(&self) -> Result<Self::Shadow, StoreError> {
        self.transaction("read_model_begin_shadow", |shared, conn| {
            Box::pin(async move {
                let inner = Arc::clone(shared.store.inner());
                create(&inner, &shared.view, conn, &shared.shadow).await?;
                delete_rows(conn, shared.view.tables(), &shared.shadow).await?;
                let tenant = shared.live.tenant();
                save_checkpoint_on(
                    &inner,
                    tenant,
                    conn,
                    &shared.shadow_name,
                    GlobalCursor::START,
                )
                .await
            })
        })
        .await?;
        Ok(PgViewSink {
            model: self.clone(),
            shadow: true,
        })
    }

    /// In one transaction: unless the shadow is behind the live cursor,
    /// replaces this tenant's live rows with its shadow rows, table by
    /// table (by column name, so a live table lacking a shadow column
    /// fails the swap rather than losing data), deletes the shadow rows,
    /// stores the shadow's cursor as the live one and deletes the
    /// shadow's checkpoint.
    async fn swap_in_shadow(&self) -> Result<SwapOutcome, StoreError> {
        self.transaction("read_model_swap", |shared, conn| {
            Box::pin(async move {
                let inner = Arc::clone(shared.store.inner());
                let tenant = shared.live.tenant();
                let Some(shadow) = checkpoint_on(&inner, tenant, conn, &shared.shadow_name).await?
                else {
                    return Ok(SwapOutcome::NoShadow);
                };
                let live = checkpoint_on(&inner, tenant, conn, &shared.name).await?;
                if let Some(l) = live.filter(|l| *l > shadow) {
                    return Ok(SwapOutcome::Behind {
                        shadow: (shadow != GlobalCursor::START).then_some(shadow),
                        live: l,
                    });
                }
                for t in shared.view.tables() {
                    let (to, from) = (shared.live.name(t), shared.shadow.name(t));
                    let cols = columns(&inner, conn, &from)
                        .await?
                        .iter()
                        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
                        .collect::<Vec<_>>()
                        .join(", ");
                    for sql in [
                        format!("DELETE FROM {to} WHERE {TENANT_COLUMN} = $1"),
                        format!(
                            "INSERT INTO {to} ({cols}) SELECT {cols} FROM {from} \
                             WHERE {TENANT_COLUMN} = $1"
                        ),
                        format!("DELETE FROM {from} WHERE {TENANT_COLUMN} = $1"),
                    ] {
                        sqlx::query(&sql)
                            .bind(tenant)
                            .execute(&mut *conn)
                            .await
                            .map_err(store_error)?;
                    }
                }
                delete_checkpoint(&inner, tenant, conn, &shared.shadow_name).await?;
                save_checkpoint_on(&inner, tenant, conn, &shared.name, shadow).await?;
                Ok(SwapOutcome::Swapped { cursor: shadow })
            })
        })
        .await
    }
}

/// The [`ProjectionSink`] of a [`PgReadModel`]: its live tables
/// ([`PgReadModel::sink`]) or its shadow
/// ([`ShadowRebuild::begin_shadow`]).
pub struct PgViewSink<V> {
    model: PgReadModel<V>,
    shadow: bool,
}

impl<V> fmt::Debug for PgViewSink<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgViewSink")
            .field("model", &self.model)
            .field("shadow", &self.shadow)
            .finish()
    }
}

impl<V> Clone for PgViewSink<V> {
    fn clone(&self) -> Self {
        Self {
            model: self.model.clone(),
            shadow: self.shadow,
        }
    }
}

/// The events of `events` after `stored`.
fn fresh(events: &[RawEvent], stored: Option<GlobalCursor>) -> &[RawEvent] {
    let from = stored.map_or(0, |c| {
        events
            .iter()
            .position(|e| e.cursor() > c)
            .unwrap_or(events.len())
    });
    &events[from..]
}

/// Under row-level security, names a tenant handle's tenant for the
/// policies on the checkpoints the read model's transactions read and
/// write (the view's own tables are the application's, without policies).
async fn name_tenant(inner: &Inner, tx: &mut PgConnection, tenant: &str) -> Result<(), StoreError> {
    if inner.row_security && !tenant.is_empty() {
        crate::store::set_tenant(tx, tenant).await?;
    }
    Ok(())
}

/// Applies one page under `name` (the live or the shadow checkpoint), and
/// a live page to a caught-up shadow too.
async fn apply_page<V: PgView>(
    shared: Arc<Shared<V>>,
    shadow: bool,
    name: String,
    events: Vec<RawEvent>,
    next: GlobalCursor,
) -> Result<(), SinkError> {
    let inner = Arc::clone(shared.store.inner());
    let tenant = shared.live.tenant();
    let mut conn = inner.pool.acquire().await.map_err(store_error)?;
    let mut tx = conn.begin().await.map_err(store_error)?;
    name_tenant(&inner, &mut tx, tenant).await?;
    if shadow {
        lock_projection(&inner, &mut tx, &name).await?;
    } else {
        lock_projection(&inner, &mut tx, &name).await?;
        lock_projection(&inner, &mut tx, &shared.shadow_name).await?;
    }
    let stored = checkpoint_on(&inner, tenant, &mut tx, &name).await?;
    let page = fresh(&events, stored);
    if stored.is_some_and(|c| c >= next) && page.is_empty() {
        let _ = tx.rollback().await;
        return Ok(());
    }
    let tables = if shadow { &shared.shadow } else { &shared.live };
    if let Err(e) = shared.view.apply(&mut tx, tables, page).await {
        let _ = tx.rollback().await;
        return Err(SinkError::Projection(e));
    }
    if !shadow {
        // A shadow that holds every event before this page (its cursor is
        // at or past the live one before it) gets the page too, so it
        // cannot fall behind the live read model and the swap cannot be
        // refused; a shadow further behind is left to its own
        // subscription, which skips what is fed here.
        // A shadow at the start (begun, nothing stored yet) is its own
        // subscription's to fill, as on the other backends.
        let before = stored.unwrap_or(GlobalCursor::START);
        if let Some(s) = checkpoint_on(&inner, tenant, &mut tx, &shared.shadow_name)
            .await?
            .filter(|s| *s >= before && *s != GlobalCursor::START)
        {
            if let Err(e) = shared
                .view
                .apply(&mut tx, &shared.shadow, fresh(&events, Some(s)))
                .await
            {
                let _ = tx.rollback().await;
                return Err(SinkError::Projection(e));
            }
            if next > s {
                save_checkpoint_on(&inner, tenant, &mut tx, &shared.shadow_name, next).await?;
            }
        }
    }
    save_checkpoint_on(
        &inner,
        tenant,
        &mut tx,
        &name,
        stored.map_or(next, |c| c.max(next)),
    )
    .await?;
    tx.commit().await.map_err(store_error)?;
    Ok(())
}

impl<V: PgView> ProjectionSink for PgViewSink<V> {
    async fn cursor(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        self.model.shared.store.checkpoints().load(name).await
    }

    /// Applies the page and stores the cursor in one transaction. Events
    /// at or before the stored cursor are skipped and the cursor never
    /// moves back, so a page applied twice has its effect once.
    ///
    /// # Cancel safety
    /// The page runs to its end on the store's runtime (applied or rolled
    /// back whole) even if this future is dropped; [`cursor`](Self::cursor)
    /// tells which.
    async fn apply(
        &self,
        name: &str,
        events: &[RawEvent],
        next: GlobalCursor,
    ) -> Result<(), SinkError> {
        validate_name(NameKind::Checkpoint, name).map_err(StoreError::from)?;
        validate_cursor(next).map_err(StoreError::from)?;
        let store = &self.model.shared.store;
        store.check_open()?;
        let task = apply_page(
            Arc::clone(&self.model.shared),
            self.shadow,
            name.to_owned(),
            events.to_vec(),
            next,
        )
        .instrument(op_span("read_model_apply"));
        store.inner().runtime.run(task).await?
    }
}
