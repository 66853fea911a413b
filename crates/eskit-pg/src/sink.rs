//! SQL read models kept exactly once: a page's effects and the cursor
//! after it commit in one transaction.

use std::sync::Arc;

use eskit_core::backend::{validate_cursor, validate_name};
use eskit_core::error::{BoxError, StoreError};
use eskit_core::event::{GlobalCursor, NameKind, Position, RawEvent, Timestamp};
use eskit_core::store::{BoxFuture, CheckpointStore, ProjectionSink, SinkError};
use sqlx::{Connection, PgConnection, Row};

use crate::dcb::fnv1a;
use crate::error::store_error;
use crate::row::{to_sql, to_u64};
use crate::store::{Inner, PgStore, op_span};

/// A read model in the same database, applied page by page inside the
/// transaction that also stores its cursor. Wrap it with
/// [`PgStore::projection_sink`].
///
/// ```no_run
/// use eskit_core::error::BoxError;
/// use eskit_core::event::RawEvent;
/// use eskit_core::store::BoxFuture;
/// use eskit_pg::PgProjection;
/// use sqlx::PgConnection;
///
/// struct Counter;
///
/// impl PgProjection for Counter {
///     fn apply<'a>(
///         &'a self,
///         conn: &'a mut PgConnection,
///         events: &'a [RawEvent],
///     ) -> BoxFuture<'a, Result<(), BoxError>> {
///         Box::pin(async move {
///             sqlx::query("UPDATE counter SET n = n + $1")
///                 .bind(events.len() as i64)
///                 .execute(&mut *conn)
///                 .await?;
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait PgProjection: Send + Sync + 'static {
    /// Applies one page (in cursor order, possibly empty) through `conn`,
    /// which is inside the page's transaction. Returning `Err` rolls the
    /// page back, cursor included.
    ///
    /// # Errors
    /// Whatever the projection refuses; the subscription retries the page.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}

/// A [`ProjectionSink`] applying a [`PgProjection`] and storing its cursor
/// in the `checkpoints` table in one transaction. Get one with
/// [`PgStore::projection_sink`].
pub struct PgSink<P> {
    store: PgStore,
    projection: Arc<P>,
}

impl<P> std::fmt::Debug for PgSink<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSink")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<P> Clone for PgSink<P> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            projection: Arc::clone(&self.projection),
        }
    }
}

impl PgStore {
    /// A [`ProjectionSink`] over this store's database: `projection`
    /// applies each page in the transaction that also stores the cursor,
    /// so every event's effect on the read model lands exactly once.
    pub fn projection_sink<P: PgProjection>(&self, projection: P) -> PgSink<P> {
        PgSink {
            store: self.clone(),
            projection: Arc::new(projection),
        }
    }
}

/// Takes the transaction-scoped advisory lock of the projection `name`:
/// every transaction that applies a page to it, or swaps a shadow in,
/// holds it, so they take turns.
pub(crate) async fn lock_projection(
    inner: &Inner,
    conn: &mut PgConnection,
    name: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(i64::from_ne_bytes(
            fnv1a(&[
                b"eskit-sink",
                inner.schema.as_str().as_bytes(),
                name.as_bytes(),
            ])
            .to_ne_bytes(),
        ))
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// Reads a checkpoint on `conn`.
pub(crate) async fn checkpoint_on(
    inner: &Inner,
    tenant: &str,
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<GlobalCursor>, StoreError> {
    let s = &inner.sql.schema;
    let row = sqlx::query(&format!(
        "SELECT tx, position FROM {s}.checkpoints WHERE tenant = $1 AND name = $2"
    ))
    .bind(tenant)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(store_error)?;
    let Some(r) = row else { return Ok(None) };
    let tx = to_u64(r.try_get(0).map_err(store_error)?, "checkpoint tx")?;
    let p = to_u64(r.try_get(1).map_err(store_error)?, "checkpoint position")?;
    Ok(Some(GlobalCursor::new(tx, Position::new(p))))
}

/// Saves a checkpoint on `conn`.
pub(crate) async fn save_checkpoint_on(
    inner: &Inner,
    tenant: &str,
    conn: &mut PgConnection,
    name: &str,
    cursor: GlobalCursor,
) -> Result<(), StoreError> {
    let s = &inner.sql.schema;
    sqlx::query(&format!(
        "INSERT INTO {s}.checkpoints (tenant, name, tx, position, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, name) DO UPDATE SET \
         tx = $3, position = $4, updated_at = $5"
    ))
    .bind(tenant)
    .bind(name)
    .bind(to_sql(cursor.tx()))
    .bind(to_sql(cursor.position().get()))
    .bind(Timestamp::now().as_unix_micros())
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

impl crate::PgCheckpointStore {
    /// Saves a cursor inside the caller's transaction (with the read-model
    /// writes it covers), as [`CheckpointStore::save`] does standalone.
    ///
    /// # Errors
    /// As [`CheckpointStore::save`].
    pub async fn save_in(
        &self,
        conn: &mut PgConnection,
        name: &str,
        cursor: GlobalCursor,
    ) -> Result<(), StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        validate_cursor(cursor)?;
        self.store().check_open()?;
        let tenant = self.store().tenant_key();
        // The caller's transaction may carry another handle's tenant:
        // always name this one.
        if self.store().inner().row_security {
            crate::store::set_tenant(conn, &tenant).await?;
        }
        save_checkpoint_on(self.store().inner(), &tenant, conn, name, cursor).await
    }
}

async fn apply_page<P: PgProjection>(
    inner: Arc<Inner>,
    tenant: String,
    projection: Arc<P>,
    name: String,
    events: Vec<RawEvent>,
    next: GlobalCursor,
) -> Result<(), SinkError> {
    let mut conn = inner.pool.acquire().await.map_err(store_error)?;
    let mut tx = conn.begin().await.map_err(store_error)?;
    if inner.row_security && !tenant.is_empty() {
        crate::store::set_tenant(&mut tx, &tenant).await?;
    }
    // Two applies of one sink at once (two runs of a subscription) take
    // turns here; the second then skips what the first stored.
    lock_projection(&inner, &mut tx, &name).await?;
    let stored = checkpoint_on(&inner, &tenant, &mut tx, &name).await?;
    let fresh = match stored {
        Some(c) => events
            .iter()
            .position(|e| e.cursor() > c)
            .unwrap_or(events.len()),
        None => 0,
    };
    if stored.is_some_and(|c| c >= next) && fresh == events.len() {
        let _ = tx.rollback().await;
        return Ok(());
    }
    if let Err(e) = projection.apply(&mut tx, &events[fresh..]).await {
        let _ = tx.rollback().await;
        return Err(SinkError::Projection(e));
    }
    save_checkpoint_on(
        &inner,
        &tenant,
        &mut tx,
        &name,
        stored.map_or(next, |c| c.max(next)),
    )
    .await?;
    tx.commit().await.map_err(store_error)?;
    Ok(())
}

impl<P: PgProjection> ProjectionSink for PgSink<P> {
    async fn cursor(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        self.store.checkpoints().load(name).await
    }

    /// Runs the projection and stores the cursor in one transaction.
    /// Events at or before the stored cursor are skipped and the cursor
    /// never moves back, so a page applied twice has its effect once.
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
        self.store.check_open()?;
        let inner = Arc::clone(self.store.inner());
        let projection = Arc::clone(&self.projection);
        let (name, events) = (name.to_owned(), events.to_vec());
        let span = op_span("projection_apply");
        let task = inner.runtime.run(tracing::Instrument::instrument(
            apply_page(
                Arc::clone(&inner),
                self.store.tenant_key(),
                projection,
                name,
                events,
                next,
            ),
            span,
        ));
        task.await?
    }
}
