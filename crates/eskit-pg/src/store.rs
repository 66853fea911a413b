//! [`PgStore`]: the event store, global reader, stream lifecycle, commit
//! feed and DCB query reader over one connection pool.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eskit_core::backend::{
    CommitNotifier, idempotent_retry, validate_append, validate_idempotency_key, validate_reason,
};
use eskit_core::dcb::{EventQueryReader, QueryOptions};
use eskit_core::error::{LifecycleOp, StoreError};
use eskit_core::event::{
    AppendResult, EventRecord, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName,
    TenantId, Timestamp, Version,
};
use eskit_core::store::{
    AppendOptions, CommitFeed, EventStore, FeedError, GlobalBatch, GlobalReader, Listener,
    LoadOptions, ReadOptions, StreamLifecycle, StreamState, StreamStatus, TenantScoped,
};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Row};
use tracing::Instrument;

use crate::dcb::{LockPlan, match_clause, tag_namespace};
use crate::error::{PgError, UNIQUE_VIOLATION, constraint, corrupt, sqlstate, store_error};
use crate::options::{PgOptions, SchemaName};
use crate::row::{
    self, STATE_ARCHIVED, STATE_DELETED, STATE_TOMBSTONED, cursor_of, state_of, to_sql, to_version,
};
use crate::runtime::Runtime;
use crate::sql::{HORIZON_COLUMN, Sql};

/// How "no tenant" is stored (a `TenantId` is never empty).
pub(crate) const NO_TENANT: &str = "";

/// The stored form of a handle's tenant.
pub(crate) fn tenant_key(tenant: Option<&TenantId>) -> String {
    tenant.map_or(NO_TENANT, TenantId::as_str).to_owned()
}

/// What an operation runs with: the shared state and the handle's tenant.
pub(crate) struct Scoped {
    inner: Arc<Inner>,
    /// The handle's tenant as stored (`''` for none).
    pub(crate) tenant: String,
}

impl Scoped {
    /// Whether this handle's transactions must name their tenant for the
    /// policies: the role is bound by them and the handle has a tenant (an
    /// unset setting already means "no tenant", and a pooled connection is
    /// never left with one set: the setting is transaction-local).
    pub(crate) fn needs_scope(&self) -> bool {
        self.inner.row_security && !self.tenant.is_empty()
    }

    /// A connection for statements on tenant rows: a pooled connection as
    /// is, or for a tenant handle under row-level security a transaction
    /// that named the tenant (one statement more). Finish a write with
    /// [`Session::commit`]; a read's session may simply be dropped (its
    /// transaction then rolls back, which changes nothing).
    pub(crate) async fn session(&self) -> Result<Session, StoreError> {
        if self.needs_scope() {
            let mut tx = self.inner.pool.begin().await.map_err(store_error)?;
            set_tenant(&mut tx, &self.tenant).await?;
            Ok(Session::Scoped(tx))
        } else {
            Ok(Session::Plain(
                self.inner.pool.acquire().await.map_err(store_error)?,
            ))
        }
    }

    /// Names the handle's tenant on a connection the store just began a
    /// transaction on, when the policies need it.
    pub(crate) async fn scope(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        if self.needs_scope() {
            set_tenant(conn, &self.tenant).await?;
        }
        Ok(())
    }
}

/// Names `tenant` (`''` for none) as the transaction's tenant for the
/// row-level security policies: transaction-local (`SET LOCAL` semantics),
/// the value a bind parameter. Must run inside a transaction.
pub(crate) async fn set_tenant(conn: &mut PgConnection, tenant: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(crate::schema::TENANT_SETTING)
        .bind(tenant)
        .execute(conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// A connection scoped for one operation (see [`Scoped::session`]).
pub(crate) enum Session {
    /// No setting needed: the pooled connection, outside a transaction.
    Plain(sqlx::pool::PoolConnection<sqlx::Postgres>),
    /// A transaction with the tenant named.
    Scoped(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Session {
    /// Commits the transaction of a scoped session (nothing for a plain one).
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Plain(_) => Ok(()),
            Self::Scoped(tx) => tx.commit().await.map_err(store_error),
        }
    }
}

impl std::ops::Deref for Session {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Self::Plain(c) => c,
            Self::Scoped(t) => t,
        }
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Plain(c) => c,
            Self::Scoped(t) => t,
        }
    }
}

impl std::ops::Deref for Scoped {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// An event store on PostgreSQL. Cloning is cheap and shares the pool.
///
/// Work runs on a Tokio runtime: the one current when
/// [`connect`](Self::connect) was called, or else a small one the store
/// starts for itself. The store's futures therefore complete under any
/// executor, Tokio or not.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
    tenant: Option<TenantId>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.schema.as_str())
            .field("tenant", &self.tenant)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) schema: SchemaName,
    pub(crate) sql: Sql,
    /// The `LISTEN`/`NOTIFY` channel of the schema.
    pub(crate) channel: String,
    pub(crate) notifier: CommitNotifier,
    pub(crate) closed: AtomicBool,
    pub(crate) runtime: Runtime,
    /// Set to `true` by [`PgStore::close`]; lock holders watch it.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// The newest transaction id this store committed an append in.
    pub(crate) last_commit: std::sync::atomic::AtomicU64,
    /// Lock releases of this process still under way, by advisory key.
    pub(crate) releasing: crate::locks::Releasing,
    /// Whether PostgreSQL applies the tenant policies to the store's role
    /// (it is no superuser and has no `BYPASSRLS`): then every transaction
    /// of a tenant handle names its tenant first.
    pub(crate) row_security: bool,
    /// Wakes the task that announces this store's commits to other
    /// processes (see `crate::feed::announce`).
    pub(crate) announce: Arc<tokio::sync::Notify>,
    /// The group commit task's queue, when group commit is on.
    group: Option<tokio::sync::mpsc::Sender<crate::group::Request>>,
    tag_ns: i32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stops the feed task and lock holders of a store dropped unclosed.
        self.closing.send_replace(true);
    }
}

impl PgStore {
    /// Connects, creates the schema if it is missing and applies the
    /// migrations it lacks.
    ///
    /// # Errors
    /// [`PgError::InvalidSchema`], [`PgError::InvalidUrl`] or
    /// [`PgError::InvalidPoolSize`] before anything is sent to the server;
    /// [`PgError::SchemaTooNew`] for a schema a newer release migrated;
    /// [`PgError::Store`] when the server cannot be reached or refuses.
    pub async fn connect(options: PgOptions) -> Result<Self, PgError> {
        let (schema, connect) = options.check()?;
        let runtime = Runtime::new(options.runtime()).map_err(|e| {
            PgError::Store(StoreError::internal(format!(
                "cannot start a runtime for the store: {e}"
            )))
        })?;
        let pool_size = options.pool_size();
        let task_schema = schema.clone();
        let required = options.row_security_required();
        // The commit feed's `LISTEN` session holds its connection for good:
        // it gets a pool of its own, so it never takes one of the store's
        // (with a pool of one, every operation would wait for it).
        let feed_pool = {
            let _on_runtime = runtime.handle().enter();
            PgPoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(connect.clone())
        };
        let pool = runtime
            .run(async move {
                let pool = PgPoolOptions::new()
                    .max_connections(pool_size)
                    .connect_with(connect)
                    .await
                    .map_err(|e| PgError::Store(store_error(e)))?;
                let conn = pool
                    .acquire()
                    .await
                    .map_err(|e| PgError::Store(store_error(e)))?;
                crate::schema::migrate(conn, task_schema).await?;
                let row = sqlx::query(
                    "SELECT current_user::text, r.rolsuper OR r.rolbypassrls FROM pg_roles r \
                     WHERE r.rolname = current_user",
                )
                .fetch_optional(&pool)
                .await
                .map_err(|e| PgError::Store(store_error(e)))?;
                let (role, bypass) = match row {
                    Some(r) => (
                        r.try_get::<String, _>(0)
                            .map_err(|e| PgError::Store(store_error(e)))?,
                        r.try_get::<bool, _>(1)
                            .map_err(|e| PgError::Store(store_error(e)))?,
                    ),
                    None => (String::new(), false),
                };
                if bypass && required {
                    pool.close().await;
                    return Err(PgError::RowSecurityBypassed { role });
                }
                Ok::<_, PgError>((pool, bypass))
            })
            .await
            .map_err(PgError::Store)??;
        let (pool, bypass) = pool;
        let sql = Sql::new(&schema);
        let tag_ns = tag_namespace(schema.as_str());
        let notifier = CommitNotifier::new();
        let closing = tokio::sync::watch::Sender::new(false);
        // The feed task holds no handle of the store: dropping the last one
        // stops it (through `closing`). Once `connect` returns, the feed
        // hears every later commit (or reports itself broken).
        let (ready, listening) = tokio::sync::oneshot::channel();
        let _feed = runtime.handle().spawn(crate::feed::listen(
            feed_pool,
            crate::feed::channel(schema.as_str()),
            notifier.clone(),
            closing.subscribe(),
            ready,
        ));
        let _ = listening.await;
        let announce = Arc::new(tokio::sync::Notify::new());
        drop(runtime.handle().spawn(crate::feed::announce(
            pool.clone(),
            crate::feed::channel(schema.as_str()),
            notifier.clone(),
            Arc::clone(&announce),
            closing.subscribe(),
        )));
        let group_commit = options.group_commit();
        let handle = runtime.handle().clone();
        let inner = Arc::new_cyclic(|weak| {
            let group = group_commit.then(|| {
                let (tx, rx) = tokio::sync::mpsc::channel(crate::group::GROUP_QUEUE);
                drop(handle.spawn(crate::group::writer(rx, weak.clone())));
                tx
            });
            Inner {
                pool,
                channel: crate::feed::channel(schema.as_str()),
                schema,
                sql,
                notifier,
                closed: AtomicBool::new(false),
                runtime,
                closing,
                releasing: crate::locks::Releasing::default(),
                last_commit: std::sync::atomic::AtomicU64::new(0),
                row_security: !bypass,
                announce,
                group,
                tag_ns,
            }
        });
        Ok(Self {
            inner,
            tenant: None,
        })
    }

    /// Whether PostgreSQL enforces the tenant policies for the role this
    /// store connected as: `false` for a superuser or a `BYPASSRLS` role,
    /// whose tenant isolation rests on the store's own filters alone. See
    /// the crate docs, "Row-level security".
    pub fn row_security(&self) -> bool {
        self.inner.row_security
    }

    /// Grants `role` what an application role needs to use this store's
    /// schema, and nothing more: `USAGE` on the schema, `SELECT` on
    /// `eskit_migrations`, `SELECT`, `INSERT`, `UPDATE` and `DELETE` on the
    /// store's tables, `USAGE` on its sequences and `EXECUTE` on its
    /// functions (no DDL, no `TRUNCATE`).
    /// Call it on a store connected as the schema's owner (which applied
    /// the migrations); the role itself must exist and should be neither a
    /// superuser nor `BYPASSRLS`, nor own the tables. Grants are per table:
    /// call it again after an upgrade added tables.
    ///
    /// # Errors
    /// [`PgError::InvalidRole`] before anything is sent for a bad name;
    /// [`PgError::Store`] when the server refuses (no such role, or this
    /// store's role may not grant).
    pub async fn grant_access(&self, role: &str) -> Result<(), PgError> {
        self.check_open()?;
        let role = crate::options::RoleName::new(role)?;
        let inner = Arc::clone(&self.inner);
        self.inner
            .runtime
            .run(async move {
                let mut conn = inner.pool.acquire().await.map_err(store_error)?;
                crate::schema::grant(&mut conn, &inner.schema, &role).await
            })
            .await
            .map_err(PgError::Store)?
    }

    /// The schema the store's tables are in.
    pub fn schema(&self) -> &SchemaName {
        &self.inner.schema
    }

    /// The connection pool (for the caller's own transactions: see
    /// [`append_in`](Self::append_in)).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Closes the store for every handle: from now on every call through
    /// any clone fails with [`StoreError::Closed`], the commit feed ends
    /// its listeners with [`FeedError::Closed`], and the pool's connections
    /// are closed (awaiting this waits for that).
    ///
    /// # Cancel safety
    /// The store is closed when this is called; awaiting only waits for the
    /// connections to close.
    pub fn close(&self) -> impl Future<Output = ()> + Send + use<> {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.notifier.close();
        self.inner.closing.send_replace(true);
        let pool = self.inner.pool.clone();
        let task = self.inner.runtime.run(async move { pool.close().await });
        async move {
            let _ = task.await;
        }
    }

    pub(crate) fn check_open(&self) -> Result<(), StoreError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// The handle's tenant as stored.
    pub(crate) fn tenant_key(&self) -> String {
        tenant_key(self.tenant.as_ref())
    }

    /// Runs `f` with the store's state and the handle's tenant on its runtime.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Scoped) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.check_open()?;
        let scoped = Scoped {
            inner: Arc::clone(&self.inner),
            tenant: self.tenant_key(),
        };
        let fut = f(scoped).in_current_span();
        self.inner.runtime.run(fut).await?
    }

    /// Appends inside the caller's own transaction (or on any connection
    /// already in a transaction): the events commit or roll back with it,
    /// together with whatever else the caller wrote. Takes the same locks
    /// and makes the same checks as [`EventStore::append`].
    ///
    /// Listeners of this store's commit feed are not woken (the commit is
    /// the caller's); a subscription polling sees the events once the
    /// transaction committed.
    ///
    /// **Stream order:** a transaction gets its id at its first write. When
    /// this transaction wrote something before, and another append to the
    /// same stream committed since, this transaction's id is the lower one:
    /// its events would be read before that stream's earlier version. Such
    /// an append is refused with [`StoreError::WrongExpectedVersion`]
    /// (see `docs/ordering.md`); roll back and run the transaction again.
    ///
    /// Must be called from a Tokio runtime (the connection's).
    ///
    /// # Errors
    /// As [`EventStore::append`]. After an error the transaction may be
    /// aborted: roll it back.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        self.check_open()?;
        validate_append(&events, &options)?;
        let span = op_span("append");
        let tenant = self.tenant_key();
        append_in_tx(
            &self.inner,
            &tenant,
            self.tenant.as_ref(),
            conn,
            stream,
            expected,
            &events,
            &options,
            true,
        )
        .instrument(span)
        .await
        .map_err(|f| f.into_error(&events))
    }

    async fn transition(
        &self,
        stream: &StreamName,
        op: LifecycleOp,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(r) = reason {
            validate_reason(r)?;
        }
        let stream = stream.clone();
        let reason = reason.map(str::to_owned);
        let span = op_span(match op {
            LifecycleOp::Tombstone => "tombstone",
            LifecycleOp::Archive => "archive",
            LifecycleOp::Restore => "restore",
            _ => "delete",
        });
        self.run(move |inner| {
            async move {
                let mut tx = inner.pool.begin().await.map_err(store_error)?;
                inner.scope(&mut tx).await?;
                let (t, i) = parts(&stream);
                let row = sqlx::query(&inner.sql.lock_stream)
                    .bind(inner.tenant.as_str())
                    .bind(t)
                    .bind(i)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let state = match &row {
                    Some(r) => state_of(r.try_get::<i16, _>(1).map_err(store_error)?)?,
                    None => StreamState::NotFound,
                };
                state.transition(&stream, op)?;
                let now = Timestamp::now().as_unix_micros();
                match op {
                    LifecycleOp::Tombstone | LifecycleOp::Archive => {
                        let code = if op == LifecycleOp::Archive {
                            STATE_ARCHIVED
                        } else {
                            STATE_TOMBSTONED
                        };
                        sqlx::query(&inner.sql.set_state)
                            .bind(inner.tenant.as_str())
                            .bind(t)
                            .bind(i)
                            .bind(code)
                            .bind(&reason)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(store_error)?;
                    }
                    LifecycleOp::Restore => {
                        sqlx::query(&inner.sql.restore)
                            .bind(inner.tenant.as_str())
                            .bind(t)
                            .bind(i)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(store_error)?;
                    }
                    _ => {
                        for sql in [
                            &inner.sql.keep_deleted_high,
                            &inner.sql.delete_events,
                            &inner.sql.delete_keys,
                            &inner.sql.delete_snapshot,
                        ] {
                            sqlx::query(sql)
                                .bind(inner.tenant.as_str())
                                .bind(t)
                                .bind(i)
                                .execute(&mut *tx)
                                .await
                                .map_err(store_error)?;
                        }
                        sqlx::query(&inner.sql.mark_deleted)
                            .bind(inner.tenant.as_str())
                            .bind(t)
                            .bind(i)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(store_error)?;
                    }
                }
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(&inner.channel)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                // Lifecycle changes wake listeners too.
                inner.notifier.notify(inner.notifier.latest());
                Ok(())
            }
            .instrument(span)
        })
        .await
    }
}

/// A span for one public operation: OpenTelemetry's database fields, never
/// a payload.
pub(crate) fn op_span(operation: &'static str) -> tracing::Span {
    tracing::debug_span!(
        "eskit_pg",
        db.system = "postgresql",
        db.system.name = "postgresql",
        db.operation = operation,
        db.operation.name = operation,
    )
}

fn parts(stream: &StreamName) -> (&str, &str) {
    (stream.stream_type().as_str(), stream.stream_id().as_str())
}

/// Why an append inside a transaction failed: most reasons are final;
/// a duplicate event id is found out from the violated constraint.
pub(crate) enum AppendFail {
    Store(StoreError),
    /// The unique index of event ids refused the insert; the detail names
    /// the id when the server sent it.
    DuplicateId(Option<String>),
    /// The expected version matched, but the stream's last event was
    /// written by a transaction with a higher id than this one: appending
    /// would break stream order in cursor order. A transaction of the
    /// store's own is retried afresh; a caller's gets a conflict.
    Behind {
        stream: StreamName,
        expected: ExpectedVersion,
        actual: Version,
    },
}

/// Most times a standalone append starts over in a new transaction after
/// finding its stream's last event written by a transaction with a higher
/// id (appending would break stream order in cursor order, see
/// `docs/ordering.md`) before it reports a conflict. An append inside the
/// caller's transaction gets the conflict at once.
pub const MAX_STREAM_ORDER_RETRIES: usize = 16;

impl From<StoreError> for AppendFail {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl AppendFail {
    pub(crate) fn into_error(self, events: &[NewEvent]) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Behind {
                stream,
                expected,
                actual,
            } => StoreError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            },
            Self::DuplicateId(detail) => {
                let id = detail
                    .and_then(|d| {
                        events
                            .iter()
                            .find(|e| d.contains(&hex(&e.id().to_bytes())))
                            .map(NewEvent::id)
                    })
                    .or_else(|| events.first().map(NewEvent::id));
                match id {
                    Some(id) => StoreError::DuplicateEventId { id },
                    None => StoreError::internal("a duplicate event id in an empty append"),
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Appends on a connection that is inside a transaction; writes nothing
/// when it returns an error or a deduplicated result.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn append_in_tx(
    inner: &Inner,
    tenant: &str,
    tenant_id: Option<&TenantId>,
    conn: &mut PgConnection,
    stream: &StreamName,
    expected: ExpectedVersion,
    events: &[NewEvent],
    options: &AppendOptions,
    notify: bool,
) -> Result<AppendResult, AppendFail> {
    let (t, i) = parts(stream);
    let plan = LockPlan::new(inner.tag_ns, tenant, events, options.condition());
    let ids: Vec<Vec<u8>> = events.iter().map(|e| e.id().to_bytes().to_vec()).collect();
    let head = sqlx::query(&inner.sql.lock_head)
        .bind(tenant)
        .bind(t)
        .bind(i)
        .bind(&plan.k1)
        .bind(&plan.k2)
        .bind(&plan.exclusive)
        .bind(&ids)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_error)?;
    // No row: the stream is another tenant's (the head upsert leaves such a
    // row alone, and row-level security hides it). Refused before anything
    // else, an idempotent retry included, without telling what it holds.
    let owned = match &head {
        Some(h) => h.try_get::<bool, _>(2).map_err(store_error)?,
        None => false,
    };
    let Some(head) = head.filter(|_| owned) else {
        return Err(StoreError::WrongTenant {
            stream: stream.clone(),
        }
        .into());
    };
    let version: i64 = head.try_get(0).map_err(store_error)?;
    let state: i16 = head.try_get(1).map_err(store_error)?;
    let behind: bool = head.try_get(3).map_err(store_error)?;
    let duplicate: Option<Vec<u8>> = head.try_get(4).map_err(store_error)?;
    let key = options.idempotency_key();
    if let Some(key) = key
        && let Some(found) = idempotent_in(inner, tenant, conn, stream, key).await?
    {
        return idempotent_retry(stream, key, &found, events, tenant_id, || {
            found.iter().map(RawEvent::record).collect()
        })
        .map_err(AppendFail::from);
    }
    let state = if version == 0 && state == row::STATE_ACTIVE {
        StreamState::NotFound
    } else {
        state_of(state)?
    };
    state.check_append(stream)?;
    let current = if state == StreamState::Deleted {
        Version::ZERO
    } else {
        to_version(version)?
    };
    if !expected.matches(current) {
        return Err(StoreError::WrongExpectedVersion {
            stream: stream.clone(),
            expected,
            actual: current,
        }
        .into());
    }
    if behind {
        // The stream's last event was written by a transaction with a
        // higher id than ours; appending would break stream order in
        // cursor order (see docs/ordering.md).
        return Err(AppendFail::Behind {
            stream: stream.clone(),
            expected,
            actual: current,
        });
    }
    if let Some(condition) = options.condition() {
        if plan.table {
            sqlx::query(&inner.sql.lock_events)
                .execute(&mut *conn)
                .await
                .map_err(store_error)?;
        }
        if duplicate.is_some() {
            // A failed condition is reported before a duplicate id: check
            // it on its own first (the duplicate is refused either way).
            let (matches, binds) = match_clause(condition.query(), 4);
            let sql = inner.sql.first_match(&matches);
            let after = condition.after();
            let mut q = sqlx::query(&sql)
                .bind(after.tx().to_string())
                .bind(to_sql(after.position().get()))
                .bind(tenant);
            for a in binds.arrays {
                q = q.bind(a);
            }
            if let Some(r) = q.fetch_optional(&mut *conn).await.map_err(store_error)? {
                let tx: &str = r.try_get(0).map_err(store_error)?;
                let position: i64 = r.try_get(1).map_err(store_error)?;
                return Err(StoreError::ConditionFailed {
                    cursor: cursor_of(tx, position)?,
                }
                .into());
            }
        }
    }
    if let Some(id) = duplicate {
        let id = events
            .iter()
            .map(NewEvent::id)
            .find(|e| e.to_bytes()[..] == id[..])
            .ok_or_else(|| corrupt("a duplicate event id not in the append"))?;
        return Err(StoreError::DuplicateEventId { id }.into());
    }
    let batch = Batch::new(events, options)?;
    i64::from(batch.count)
        .checked_add(version)
        .ok_or_else(|| corrupt("version overflow"))?;
    // Otherwise the condition is checked by the write itself, one round
    // trip less (`Sql::write_checked`).
    let checked = options
        .condition()
        .map(|c| (c, match_clause(c.query(), 20)));
    let checked_sql;
    let write = match &checked {
        Some((_, (matches, _))) => {
            checked_sql = inner.sql.write_checked(matches, notify);
            &checked_sql
        }
        None if notify => &inner.sql.write,
        None => &inner.sql.write_quiet,
    };
    let mut q = sqlx::query(write)
        .bind(tenant)
        .bind(t)
        .bind(i)
        .bind(version)
        .bind(batch.timestamp)
        .bind(&batch.meta)
        .bind(&batch.all_tags)
        .bind(&ids)
        .bind(&batch.types)
        .bind(&batch.schema_versions)
        .bind(&batch.codecs)
        .bind(&batch.payloads)
        .bind(&batch.t0)
        .bind(&batch.t1)
        .bind(batch.count)
        .bind(key)
        .bind(&inner.channel);
    if let Some((condition, (_, binds))) = checked.as_ref() {
        let after = condition.after();
        q = q
            .bind(after.tx().to_string())
            .bind(to_sql(after.position().get()));
        for a in &binds.arrays {
            q = q.bind(a);
        }
    }
    let rows = q.fetch_all(&mut *conn).await.map_err(|e| {
        if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) {
            match constraint(&e).as_deref() {
                Some("events_event_id") => {
                    let detail = match &e {
                        sqlx::Error::Database(db) => db
                            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                            .and_then(|p| p.detail().map(str::to_owned)),
                        _ => None,
                    };
                    return AppendFail::DuplicateId(detail);
                }
                Some("events_stream_version") => {
                    return AppendFail::Store(StoreError::WrongExpectedVersion {
                        stream: stream.clone(),
                        expected,
                        actual: current,
                    });
                }
                _ => {}
            }
        }
        AppendFail::Store(store_error(e))
    })?;
    let at = if checked.is_some() {
        if let Some(r) = rows.first() {
            let tx: Option<&str> = r.try_get(0).map_err(store_error)?;
            let position: Option<i64> = r.try_get(1).map_err(store_error)?;
            if let (Some(tx), Some(position)) = (tx, position) {
                return Err(StoreError::ConditionFailed {
                    cursor: cursor_of(tx, position)?,
                }
                .into());
            }
        }
        2
    } else {
        0
    };
    Ok(AppendResult {
        records: records(&rows, at, events, batch.timestamp)?,
        deduplicated: false,
        tenant: tenant_id.cloned(),
    })
}

/// The bind values of a batch's events, in the parallel arrays the insert
/// statements `UNNEST`.
struct Batch<'a> {
    count: i32,
    timestamp: i64,
    meta: Option<Vec<u8>>,
    /// Every event's tags in one flat array; event `n`'s are
    /// `all_tags[t0[n]..=t1[n]]` (1-based, as SQL slices).
    all_tags: Vec<String>,
    t0: Vec<i32>,
    t1: Vec<i32>,
    types: Vec<&'a str>,
    schema_versions: Vec<i64>,
    codecs: Vec<&'a str>,
    payloads: Vec<&'a [u8]>,
}

impl<'a> Batch<'a> {
    fn new(events: &'a [NewEvent], options: &AppendOptions) -> Result<Self, StoreError> {
        let count = i32::try_from(events.len()).map_err(|_| corrupt("append too long"))?;
        let timestamp = options
            .timestamp()
            .unwrap_or_else(Timestamp::now)
            .as_unix_micros();
        let meta = crate::meta::encode(&options.stored_metadata());
        let mut all_tags = Vec::new();
        let (mut t0, mut t1) = (Vec::with_capacity(events.len()), Vec::new());
        for e in events {
            let start = all_tags.len() + 1;
            all_tags.extend(e.tags().iter().map(|t| t.as_str().to_owned()));
            t0.push(i32::try_from(start).map_err(|_| corrupt("too many tags"))?);
            t1.push(i32::try_from(all_tags.len()).map_err(|_| corrupt("too many tags"))?);
        }
        Ok(Self {
            count,
            timestamp,
            meta,
            all_tags,
            t0,
            t1,
            types: events.iter().map(|e| e.event_type().as_str()).collect(),
            schema_versions: events
                .iter()
                .map(|e| i64::from(e.schema_version()))
                .collect(),
            codecs: events.iter().map(NewEvent::codec).collect(),
            payloads: events.iter().map(NewEvent::payload).collect(),
        })
    }
}

/// The records of an append from the one row its write returned: from
/// column `at` on, the transaction id as text, the positions in version
/// order and the first version (null when nothing was inserted).
fn records(
    rows: &[PgRow],
    at: usize,
    events: &[NewEvent],
    timestamp: i64,
) -> Result<Vec<EventRecord>, StoreError> {
    let [r] = rows else {
        return Err(corrupt("an append's write returned another number of rows"));
    };
    let tx: &str = r.try_get(at).map_err(store_error)?;
    let positions: Option<Vec<i64>> = r.try_get(at + 1).map_err(store_error)?;
    let first: Option<i64> = r.try_get(at + 2).map_err(store_error)?;
    let (Some(positions), Some(first)) = (positions, first) else {
        return Err(corrupt("an append's insert wrote no event"));
    };
    if positions.len() != events.len() {
        return Err(corrupt("the insert returned another number of positions"));
    }
    let mut records = Vec::with_capacity(events.len());
    for ((position, e), v) in positions.iter().zip(events).zip(first..) {
        let cursor = cursor_of(tx, *position)?;
        records.push(EventRecord {
            id: e.id(),
            version: to_version(v)?,
            position: cursor.position(),
            tx: cursor.tx(),
            timestamp: Timestamp::from_unix_micros(timestamp),
        });
    }
    Ok(records)
}

/// The code of [`ExpectedVersion`] in [`Sql::append_one`] (`$6`, `$7`).
fn expected_code(expected: ExpectedVersion) -> (i16, i64) {
    match expected {
        ExpectedVersion::Any => (0, 0),
        ExpectedVersion::NoStream => (1, 0),
        ExpectedVersion::Exact(v) if v == Version::ZERO => (1, 0),
        ExpectedVersion::StreamExists => (2, 0),
        ExpectedVersion::Exact(v) => (3, to_sql(v.get())),
    }
}

/// What the one-statement append ([`Sql::append_one`]) did.
enum OneStatement {
    /// Committed.
    Appended(AppendResult),
    /// Wrote nothing: the full transaction finds out why (a conflict,
    /// another tenant's stream, a stream not active, stream order, a
    /// duplicate id, an idempotent retry). `empty_head` when the statement
    /// left the empty head row of a stream it refused to create.
    Refused { empty_head: bool },
}

/// SQLSTATE classes of a one-statement append that wrote nothing and
/// leaves the reason to the full transaction: integrity constraint
/// violations (a duplicate event id or idempotency key) and
/// `insufficient_privilege` (a row-level security policy).
fn refused_by_server(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|c| c.starts_with("23") || c == "42501")
}

/// A standalone append without a condition in one autocommit statement.
#[allow(clippy::too_many_arguments)]
async fn append_one(
    inner: &Inner,
    tenant: &str,
    tenant_id: Option<&TenantId>,
    conn: &mut PgConnection,
    stream: &StreamName,
    expected: ExpectedVersion,
    events: &[NewEvent],
    options: &AppendOptions,
) -> Result<OneStatement, StoreError> {
    let (t, i) = parts(stream);
    let plan = LockPlan::new(inner.tag_ns, tenant, events, None);
    let ids: Vec<Vec<u8>> = events.iter().map(|e| e.id().to_bytes().to_vec()).collect();
    let batch = Batch::new(events, options)?;
    let (code, exact) = expected_code(expected);
    let rows = sqlx::query(&inner.sql.append_one)
        .bind(tenant)
        .bind(t)
        .bind(i)
        .bind(&plan.k1)
        .bind(&plan.k2)
        .bind(code)
        .bind(exact)
        .bind(i64::from(batch.count))
        .bind(batch.timestamp)
        .bind(&batch.meta)
        .bind(&batch.all_tags)
        .bind(&ids)
        .bind(&batch.types)
        .bind(&batch.schema_versions)
        .bind(&batch.codecs)
        .bind(&batch.payloads)
        .bind(&batch.t0)
        .bind(&batch.t1)
        .bind(options.idempotency_key())
        .fetch_all(&mut *conn)
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) if refused_by_server(&e) => return Ok(OneStatement::Refused { empty_head: false }),
        Err(e) => return Err(store_error(e)),
    };
    let Some(first) = rows.first() else {
        return Ok(OneStatement::Refused { empty_head: false });
    };
    if !first.try_get::<bool, _>(0).map_err(store_error)? {
        return Ok(OneStatement::Refused { empty_head: true });
    }
    let timestamp = batch.timestamp;
    Ok(OneStatement::Appended(AppendResult {
        records: records(&rows, 1, events, timestamp)?,
        deduplicated: false,
        tenant: tenant_id.cloned(),
    }))
}

/// A standalone append in a transaction of its own, started over (up to
/// [`MAX_STREAM_ORDER_RETRIES`] times) when the stream's last event was
/// written by a transaction with a higher id.
pub(crate) async fn append_alone(
    inner: &Inner,
    tenant: &str,
    tenant_id: Option<&TenantId>,
    stream: &StreamName,
    expected: ExpectedVersion,
    events: &[NewEvent],
    options: &AppendOptions,
) -> Result<AppendResult, StoreError> {
    let mut conn = inner.pool.acquire().await.map_err(store_error)?;
    let mut empty_head = false;
    if options.condition().is_none() {
        match append_one(
            inner, tenant, tenant_id, &mut conn, stream, expected, events, options,
        )
        .await?
        {
            OneStatement::Appended(r) => {
                committed(inner, &r);
                return Ok(r);
            }
            OneStatement::Refused { empty_head: false } if options.idempotency_key().is_none() => {
                if let Some(conflict) =
                    version_conflict(inner, tenant, &mut conn, stream, expected).await?
                {
                    return Err(conflict);
                }
            }
            OneStatement::Refused { empty_head: e } => empty_head = e,
        }
    }
    let outcome = append_full(
        inner, tenant, tenant_id, &mut conn, stream, expected, events, options,
    )
    .await;
    if empty_head {
        // The head row the one statement created for a stream it refused
        // to create (the full transaction refused it too, or wrote to it:
        // then the row is no longer empty and stays).
        let (t, i) = parts(stream);
        sqlx::query(&inner.sql.drop_empty_head)
            .bind(tenant)
            .bind(t)
            .bind(i)
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
    }
    outcome
}

/// The conflict of an append the one statement refused, when the stream's
/// head row (read afresh) shows an active stream of this tenant whose
/// version the expectation does not match: one round trip, where the full
/// transaction takes three. `None` leaves the reason to the full
/// transaction (another tenant's stream or one hidden by row-level
/// security, a stream not active, a matching version refused for stream
/// order or a duplicate id). Only for appends without an idempotency key
/// (a keyed retry is answered from the key, whatever the version).
async fn version_conflict(
    inner: &Inner,
    tenant: &str,
    conn: &mut PgConnection,
    stream: &StreamName,
    expected: ExpectedVersion,
) -> Result<Option<StoreError>, StoreError> {
    let Some((version, state)) = head_row(inner, tenant, conn, stream).await? else {
        return Ok(None);
    };
    let actual = to_version(version)?;
    if state != row::STATE_ACTIVE || expected.matches(actual) {
        return Ok(None);
    }
    Ok(Some(StoreError::WrongExpectedVersion {
        stream: stream.clone(),
        expected,
        actual,
    }))
}

/// The `(version, state)` of the stream's head row of `tenant`, read on
/// `conn`; `None` when there is none (or row-level security hides it).
async fn head_row(
    inner: &Inner,
    tenant: &str,
    conn: &mut PgConnection,
    stream: &StreamName,
) -> Result<Option<(i64, i16)>, StoreError> {
    let (t, i) = parts(stream);
    let Some(row) = sqlx::query(&inner.sql.stream_row)
        .bind(tenant)
        .bind(t)
        .bind(i)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    Ok(Some((
        row.try_get(0).map_err(store_error)?,
        row.try_get(1).map_err(store_error)?,
    )))
}

/// What a commit of a standalone append tells this process and others.
fn committed(inner: &Inner, r: &AppendResult) {
    if let Some(rec) = r.records.last() {
        inner.last_commit.fetch_max(rec.tx, Ordering::AcqRel);
    }
    inner.notifier.notify(r.last_position());
    inner.announce.notify_one();
}

/// [`append_alone`]'s full transaction: `BEGIN`, [`append_in_tx`],
/// `COMMIT`, started over on a stream-order refusal.
#[allow(clippy::too_many_arguments)]
async fn append_full(
    inner: &Inner,
    tenant: &str,
    tenant_id: Option<&TenantId>,
    conn: &mut PgConnection,
    stream: &StreamName,
    expected: ExpectedVersion,
    events: &[NewEvent],
    options: &AppendOptions,
) -> Result<AppendResult, StoreError> {
    let mut retries = 0;
    loop {
        let mut tx = conn.begin().await.map_err(store_error)?;
        match append_in_tx(
            inner, tenant, tenant_id, &mut tx, stream, expected, events, options, false,
        )
        .await
        {
            Ok(r) if r.deduplicated => {
                tx.rollback().await.map_err(store_error)?;
                return Ok(r);
            }
            Ok(r) => {
                tx.commit().await.map_err(store_error)?;
                committed(inner, &r);
                return Ok(r);
            }
            // A new transaction gets a newer id than the one that wrote the
            // stream's last event (it committed before our head lock was
            // granted): start over.
            Err(AppendFail::Behind { .. }) if retries < MAX_STREAM_ORDER_RETRIES => {
                let _ = tx.rollback().await;
                retries += 1;
            }
            Err(f) => {
                let _ = tx.rollback().await;
                return Err(f.into_error(events));
            }
        }
    }
}

/// The events the keyed append to `stream` wrote, read on `conn`.
async fn idempotent_in(
    inner: &Inner,
    tenant: &str,
    conn: &mut PgConnection,
    stream: &StreamName,
    key: &str,
) -> Result<Option<Vec<RawEvent>>, StoreError> {
    let (t, i) = parts(stream);
    let Some(entry) = sqlx::query(&inner.sql.idempotency)
        .bind(tenant)
        .bind(t)
        .bind(i)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let first: i64 = entry.try_get(0).map_err(store_error)?;
    let count: i32 = entry.try_get(1).map_err(store_error)?;
    let last = first
        .checked_add(i64::from(count) - 1)
        .filter(|l| *l >= first)
        .ok_or_else(|| corrupt("an idempotency entry is out of range"))?;
    let rows = sqlx::query(&inner.sql.versions)
        .bind(tenant)
        .bind(t)
        .bind(i)
        .bind(first)
        .bind(last)
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    if rows.len() != usize::try_from(count).unwrap_or(usize::MAX) {
        return Err(corrupt(format!(
            "idempotency entry of stream {} names missing events",
            stream.quoted()
        )));
    }
    rows.iter()
        .map(|r| row::event(r, 0))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The longest a read waits for the horizon to pass this store's own
/// newest commit (read-your-writes): transactions older than that commit
/// still running hold the horizon back. Past it the read returns what is
/// below the horizon, which is correct, only older.
pub const READ_YOUR_WRITES_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a read waiting for the horizon asks again.
const HORIZON_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Runs a read statement until its horizon passes the store's newest own
/// commit, or [`READ_YOUR_WRITES_WAIT`] has passed.
async fn read_rows<'q>(
    inner: &Inner,
    query: impl Fn() -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Vec<PgRow>, StoreError> {
    let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES_WAIT;
    loop {
        // The statement names the tenant itself under row-level security
        // (`sql::scoped_read`): autocommit, one round trip.
        let rows = query().fetch_all(&inner.pool).await.map_err(store_error)?;
        let own = inner.last_commit.load(Ordering::Acquire);
        let horizon = match rows.first() {
            Some(r) => row::parse_tx(
                &r.try_get::<String, _>(HORIZON_COLUMN)
                    .map_err(store_error)?,
            )?,
            None => return Err(StoreError::internal("a read returned no row")),
        };
        if own < horizon || tokio::time::Instant::now() >= deadline {
            return Ok(rows);
        }
        tokio::time::sleep(HORIZON_POLL).await;
    }
}

/// Builds a page from a read's rows: column 0-1 the head, then the event
/// (absent on the single row of an empty page).
fn page(rows: &[PgRow], after: GlobalCursor, limit: usize) -> Result<GlobalBatch, StoreError> {
    let mut head = GlobalCursor::START;
    let mut events = Vec::with_capacity(rows.len());
    let mut names = row::Names::default();
    for (n, r) in rows.iter().enumerate() {
        if n == 0 {
            let htx: Option<String> = r.try_get(0).map_err(store_error)?;
            let hpos: Option<i64> = r.try_get(1).map_err(store_error)?;
            if let (Some(tx), Some(p)) = (htx, hpos) {
                head = cursor_of(&tx, p)?;
            }
        }
        let position: Option<i64> = r.try_get(2).map_err(store_error)?;
        if position.is_some() {
            events.push(names.event(r, 2)?);
        }
    }
    // The global read's statement leaves the order to the client (see
    // `sql::global_read`); on rows already in order this is one pass.
    events.sort_by_key(RawEvent::cursor);
    // A full page resumes after its last event; a short one scanned
    // everything below the horizon, whose newest event is the head.
    let scanned = match events.last() {
        Some(last) if events.len() >= limit => last.cursor(),
        _ => head,
    };
    Ok(GlobalBatch {
        next: scanned.max(after),
        head,
        events,
    })
}

impl EventStore for PgStore {
    /// Appends in one transaction at READ COMMITTED: the head row lock
    /// decides the version check, one `UNNEST` statement writes the batch.
    ///
    /// # Cancel safety
    /// The append runs to its end on the store's runtime even when this
    /// future is dropped; retry with the same idempotency key to learn its
    /// outcome.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        self.check_open()?;
        validate_append(&events, &options)?;
        let span = op_span("append");
        if let Some(queue) = &self.inner.group {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let request = crate::group::Request {
                tenant: self.tenant_key(),
                tenant_id: self.tenant.clone(),
                stream: stream.clone(),
                expected,
                events,
                options,
                reply,
            };
            return async move {
                queue.send(request).await.map_err(|_| StoreError::Closed)?;
                answer.await.map_err(|_| StoreError::Closed)?
            }
            .instrument(span)
            .await;
        }
        let stream = stream.clone();
        let tenant_id = self.tenant.clone();
        self.run(move |inner| {
            async move {
                append_alone(
                    &inner,
                    &inner.tenant,
                    tenant_id.as_ref(),
                    &stream,
                    expected,
                    &events,
                    &options,
                )
                .await
            }
            .instrument(span)
        })
        .await
    }

    async fn load(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RawEvent>, StoreError> {
        options.validate()?;
        let stream = stream.clone();
        let tenant = self.tenant.clone();
        let span = op_span("load");
        self.run(move |inner| {
            async move {
                let (t, i) = parts(&stream);
                let types: Vec<String> = options
                    .event_types()
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect();
                // Under row-level security the statement names the tenant
                // itself (no round trip more, see `sql::scoped_read`).
                let sql = if inner.needs_scope() {
                    &inner.sql.load_scoped
                } else {
                    &inner.sql.load
                };
                let rows = sqlx::query(sql)
                    .bind(inner.tenant.as_str())
                    .bind(t)
                    .bind(i)
                    .bind(options.from().map_or(0, |v| to_sql(v.get())))
                    .bind(options.to().map_or(i64::MAX, |v| to_sql(v.get())))
                    .bind(types)
                    .bind(
                        options
                            .limit()
                            .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX)),
                    )
                    .fetch_all(&inner.pool)
                    .await
                    .map_err(store_error)?;
                // The statement selects only the rows of this stream and
                // tenant, and not those columns.
                let mut names = row::Names::of_stream(stream, tenant);
                rows.iter().map(|r| names.loaded(r, 0)).collect()
            }
            .instrument(span)
        })
        .await
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        let stream = stream.clone();
        let span = op_span("stream_version");
        self.run(move |inner| {
            async move {
                let mut session = inner.session().await?;
                match head_row(&inner, &inner.tenant, &mut session, &stream).await? {
                    None | Some((_, STATE_DELETED)) => Ok(Version::ZERO),
                    Some((version, _)) => to_version(version),
                }
            }
            .instrument(span)
        })
        .await
    }

    async fn find_idempotent(
        &self,
        stream: &StreamName,
        key: &str,
    ) -> Result<Option<Vec<RawEvent>>, StoreError> {
        validate_idempotency_key(key)?;
        let stream = stream.clone();
        let key = key.to_owned();
        let span = op_span("find_idempotent");
        self.run(move |inner| {
            async move {
                // One repeatable-read transaction: the entry and the events
                // it names are read from the same snapshot.
                let mut conn = inner.pool.acquire().await.map_err(store_error)?;
                let mut tx = conn.begin().await.map_err(store_error)?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                inner.scope(&mut tx).await?;
                let found = idempotent_in(&inner, &inner.tenant, &mut tx, &stream, &key).await;
                let _ = tx.rollback().await;
                found
            }
            .instrument(span)
        })
        .await
    }
}

impl GlobalReader for PgStore {
    /// Reads in (transaction id, position) order below the horizon: only
    /// events whose transaction is older than every transaction still
    /// running, so nothing before the page can still commit (see
    /// `docs/ordering.md`).
    async fn read(&self, options: ReadOptions) -> Result<GlobalBatch, StoreError> {
        options.validate()?;
        let span = op_span("read");
        self.run(move |inner| {
            async move {
                let after = options.after();
                let types: Vec<String> = options
                    .event_types()
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect();
                let limit = options.limit();
                let stream_type = options.stream_type().map(|t| t.as_str().to_owned());
                let sql = if inner.needs_scope() {
                    &inner.sql.read_scoped
                } else {
                    &inner.sql.read
                };
                let rows = read_rows(&inner, || {
                    sqlx::query(sql)
                        .bind(after.tx().to_string())
                        .bind(to_sql(after.position().get()))
                        .bind(types.clone())
                        .bind(stream_type.clone())
                        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                        .bind(inner.tenant.as_str())
                })
                .await?;
                page(&rows, after, limit)
            }
            .instrument(span)
        })
        .await
    }

    async fn head(&self) -> Result<GlobalCursor, StoreError> {
        let span = op_span("head");
        self.run(move |inner| {
            async move {
                let mut session = inner.session().await?;
                let row = sqlx::query(&inner.sql.head)
                    .bind(inner.tenant.as_str())
                    .fetch_optional(&mut *session)
                    .await
                    .map_err(store_error)?;
                match row {
                    None => Ok(GlobalCursor::START),
                    Some(r) => cursor_of(
                        &r.try_get::<String, _>(0).map_err(store_error)?,
                        r.try_get(1).map_err(store_error)?,
                    ),
                }
            }
            .instrument(span)
        })
        .await
    }
}

impl EventQueryReader for PgStore {
    /// Reads the matching events with the global read's horizon rule; the
    /// tag filter is served by the GIN index on `tags`.
    async fn query(&self, options: QueryOptions) -> Result<GlobalBatch, StoreError> {
        options.validate()?;
        let span = op_span("query");
        self.run(move |inner| {
            async move {
                let after = options.after();
                let limit = options.limit();
                let (matches, binds) = match_clause(options.query(), 5);
                let sql = if inner.needs_scope() {
                    inner.sql.query_scoped(&matches)
                } else {
                    inner.sql.query(&matches)
                };
                let rows = read_rows(&inner, || {
                    let mut q = sqlx::query(&sql)
                        .bind(after.tx().to_string())
                        .bind(to_sql(after.position().get()))
                        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                        .bind(inner.tenant.as_str());
                    for a in &binds.arrays {
                        q = q.bind(a.clone());
                    }
                    q
                })
                .await?;
                page(&rows, after, limit)
            }
            .instrument(span)
        })
        .await
    }
}

impl TenantScoped for PgStore {
    /// A handle that sees and writes only `tenant`'s streams, reads,
    /// queries, lifecycle, snapshots, checkpoints and dead letters, sharing
    /// the pool, the feed and the locks.
    fn for_tenant(&self, tenant: TenantId) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            tenant: Some(tenant),
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }
}

impl CommitFeed for PgStore {
    /// Listens to every commit to the schema: this store's at once (before
    /// its append returns), others' (other handles, other processes,
    /// caller transactions) through `LISTEN`/`NOTIFY` when they commit.
    /// The tenants of a schema share it: a tenant-scoped handle's listener
    /// is [`for_part_of_the_feed`](Listener::for_part_of_the_feed).
    fn listen(&self) -> Result<Listener, FeedError> {
        self.inner.notifier.listen_as(self.tenant.as_ref())
    }
}

impl StreamLifecycle for PgStore {
    async fn tombstone(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        self.transition(stream, LifecycleOp::Tombstone, Some(reason))
            .await
    }

    async fn archive(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        self.transition(stream, LifecycleOp::Archive, Some(reason))
            .await
    }

    async fn restore(&self, stream: &StreamName) -> Result<(), StoreError> {
        self.transition(stream, LifecycleOp::Restore, None).await
    }

    /// Removes the stream's events, idempotency keys and snapshot in one
    /// transaction; the stream stays as `Deleted`. Positions come from a
    /// sequence and are never reused.
    async fn delete(&self, stream: &StreamName) -> Result<(), StoreError> {
        self.transition(stream, LifecycleOp::Delete, None).await
    }

    async fn status(&self, stream: &StreamName) -> Result<StreamStatus, StoreError> {
        let stream = stream.clone();
        let span = op_span("status");
        self.run(move |inner| {
            async move {
                let (t, i) = parts(&stream);
                let mut session = inner.session().await?;
                let row = sqlx::query(&inner.sql.status)
                    .bind(inner.tenant.as_str())
                    .bind(t)
                    .bind(i)
                    .fetch_optional(&mut *session)
                    .await
                    .map_err(store_error)?;
                let Some(r) = row else {
                    return Ok(StreamStatus::not_found());
                };
                let version: i64 = r.try_get(0).map_err(store_error)?;
                let state: i16 = r.try_get(1).map_err(store_error)?;
                let reason: Option<String> = r.try_get(2).map_err(store_error)?;
                let changed_at: Option<i64> = r.try_get(3).map_err(store_error)?;
                Ok(StreamStatus {
                    state: state_of(state)?,
                    version: to_version(version)?,
                    reason,
                    changed_at: changed_at.map(Timestamp::from_unix_micros),
                })
            }
            .instrument(span)
        })
        .await
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod plan_tests;
