//! Snapshots and checkpoints in the store's schema.

use eskit_core::backend::{validate_cursor, validate_name};
use eskit_core::error::StoreError;
use eskit_core::event::{GlobalCursor, NameKind, Position, StreamName, Timestamp};
use eskit_core::store::{CheckpointStore, Snapshot, SnapshotStore};
use sqlx::{PgConnection, Row};
use tracing::Instrument;

use crate::error::{corrupt, store_error};
use crate::row::{to_sql, to_u64, to_version};
use crate::store::{PgStore, op_span};

/// The snapshot store of a [`PgStore`]: one snapshot per stream, removed
/// with the stream by a hard delete. Get it with [`PgStore::snapshots`].
#[derive(Debug, Clone)]
pub struct PgSnapshotStore {
    store: PgStore,
}

/// The checkpoint store of a [`PgStore`]: one cursor per subscription
/// name. Get it with [`PgStore::checkpoints`].
#[derive(Debug, Clone)]
pub struct PgCheckpointStore {
    store: PgStore,
}

impl PgCheckpointStore {
    pub(crate) fn store(&self) -> &PgStore {
        &self.store
    }
}

impl PgStore {
    /// The snapshot store over the same schema and pool.
    pub fn snapshots(&self) -> PgSnapshotStore {
        PgSnapshotStore {
            store: self.clone(),
        }
    }

    /// The checkpoint store over the same schema and pool.
    pub fn checkpoints(&self) -> PgCheckpointStore {
        PgCheckpointStore {
            store: self.clone(),
        }
    }
}

fn stream_parts(stream: &StreamName) -> (String, String) {
    (
        stream.stream_type().as_str().to_owned(),
        stream.stream_id().as_str().to_owned(),
    )
}

impl PgSnapshotStore {
    /// Saves a snapshot inside the caller's transaction (for example with
    /// the append whose state it captures), as [`SnapshotStore::save`] does
    /// standalone: it commits or rolls back with the caller's transaction.
    ///
    /// # Errors
    /// As [`SnapshotStore::save`]: [`StoreError::WrongTenant`] for another
    /// tenant's stream. After an error the transaction may be aborted: roll
    /// it back.
    pub async fn save_in(
        &self,
        conn: &mut PgConnection,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        snapshot.validate()?;
        self.store.check_open()?;
        let tenant = self.store.tenant_key();
        let schema = &self.store.inner().sql.schema;
        save_snapshot_on(schema, &tenant, &mut *conn, snapshot)
            .instrument(op_span("snapshot_save"))
            .await
    }
}

/// The one snapshot upsert, on the pool or on a caller's connection.
async fn save_snapshot_on<'e, E: sqlx::PgExecutor<'e>>(
    s: &str,
    tenant: &str,
    exec: E,
    snapshot: Snapshot,
) -> Result<(), StoreError> {
    let (t, i) = stream_parts(&snapshot.stream);
    let schema_version = i64::from(snapshot.schema_version);
    // Only for a stream of this handle's tenant (or none yet): another
    // tenant's stream, or its snapshot, writes nothing.
    let done = sqlx::query(&format!(
        "INSERT INTO {s}.snapshots AS x (tenant, stream_type, stream_id, version, \
         schema_version, codec, state, created_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS (\
         SELECT 1 FROM {s}.streams h WHERE h.stream_type = $2 AND h.stream_id = $3 \
         AND h.tenant <> $1) \
         ON CONFLICT (stream_type, stream_id) DO UPDATE SET \
         version = $4, schema_version = $5, codec = $6, state = $7, created_at = $8 \
         WHERE x.tenant = excluded.tenant"
    ))
    .bind(tenant)
    .bind(t)
    .bind(i)
    .bind(to_sql(snapshot.version.get()))
    .bind(schema_version)
    .bind(&snapshot.codec)
    .bind(&snapshot.state)
    .bind(snapshot.created_at.as_unix_micros())
    .execute(exec)
    .await
    .map_err(store_error)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::WrongTenant {
            stream: snapshot.stream,
        });
    }
    Ok(())
}

impl SnapshotStore for PgSnapshotStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        snapshot.validate()?;
        let span = op_span("snapshot_save");
        self.store
            .run(move |inner| async move {
                save_snapshot_on(&inner.sql.schema, &inner.tenant, &inner.pool, snapshot).await
            })
            .instrument(span)
            .await
    }

    async fn load(&self, stream: &StreamName) -> Result<Option<Snapshot>, StoreError> {
        let owned = stream.clone();
        let span = op_span("snapshot_load");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let (t, i) = stream_parts(&owned);
                let row = sqlx::query(&format!(
                    "SELECT version, schema_version, codec, state, created_at FROM {s}.snapshots \
                     WHERE tenant = $1 AND stream_type = $2 AND stream_id = $3"
                ))
                .bind(inner.tenant.as_str())
                .bind(t)
                .bind(i)
                .fetch_optional(&inner.pool)
                .await
                .map_err(store_error)?;
                let Some(r) = row else { return Ok(None) };
                let schema_version: i64 = r.try_get(1).map_err(store_error)?;
                Ok(Some(Snapshot {
                    stream: owned,
                    version: to_version(r.try_get(0).map_err(store_error)?)?,
                    schema_version: u32::try_from(schema_version)
                        .map_err(|_| corrupt("negative snapshot schema version"))?,
                    codec: r.try_get(2).map_err(store_error)?,
                    state: r.try_get(3).map_err(store_error)?,
                    created_at: Timestamp::from_unix_micros(r.try_get(4).map_err(store_error)?),
                }))
            })
            .instrument(span)
            .await
    }

    async fn invalidate(&self, stream: &StreamName) -> Result<(), StoreError> {
        let (t, i) = stream_parts(stream);
        let span = op_span("snapshot_invalidate");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                sqlx::query(&format!(
                    "DELETE FROM {s}.snapshots WHERE tenant = $1 AND stream_type = $2 AND stream_id = $3"
                ))
                .bind(inner.tenant.as_str())
                .bind(t)
                .bind(i)
                .execute(&inner.pool)
                .await
                .map_err(store_error)?;
                Ok(())
            })
            .instrument(span)
            .await
    }

    async fn invalidate_all(&self) -> Result<(), StoreError> {
        let span = op_span("snapshot_invalidate_all");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                sqlx::query(&format!("DELETE FROM {s}.snapshots WHERE tenant = $1"))
                    .bind(inner.tenant.as_str())
                    .execute(&inner.pool)
                    .await
                    .map_err(store_error)?;
                Ok(())
            })
            .instrument(span)
            .await
    }
}

impl CheckpointStore for PgCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        let name = name.to_owned();
        let span = op_span("checkpoint_load");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let row = sqlx::query(&format!(
                    "SELECT tx, position FROM {s}.checkpoints WHERE tenant = $1 AND name = $2"
                ))
                .bind(inner.tenant.as_str())
                .bind(&name)
                .fetch_optional(&inner.pool)
                .await
                .map_err(store_error)?;
                let Some(r) = row else { return Ok(None) };
                let tx = to_u64(r.try_get(0).map_err(store_error)?, "checkpoint tx")?;
                let p = to_u64(r.try_get(1).map_err(store_error)?, "checkpoint position")?;
                Ok(Some(GlobalCursor::new(tx, Position::new(p))))
            })
            .instrument(span)
            .await
    }

    async fn save(&self, name: &str, cursor: GlobalCursor) -> Result<(), StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        validate_cursor(cursor)?;
        let name = name.to_owned();
        let span = op_span("checkpoint_save");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                sqlx::query(&format!(
                    "INSERT INTO {s}.checkpoints (tenant, name, tx, position, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, name) DO UPDATE SET \
                     tx = $3, position = $4, updated_at = $5"
                ))
                .bind(inner.tenant.as_str())
                .bind(&name)
                .bind(to_sql(cursor.tx()))
                .bind(to_sql(cursor.position().get()))
                .bind(Timestamp::now().as_unix_micros())
                .execute(&inner.pool)
                .await
                .map_err(store_error)?;
                Ok(())
            })
            .instrument(span)
            .await
    }
}
