//! Subscription checkpoints in the store's database.

use eskit_core::{
    backend::{validate_cursor, validate_name},
    error::StoreError,
    event::{GlobalCursor, NameKind, Position, Timestamp},
    store::CheckpointStore,
};
use rusqlite::{Connection, OptionalExtension};

use crate::error::store_error;
use crate::store::SqliteStore;

/// Named cursors in the `eskit_checkpoints` table of the store's database.
/// Get one with [`SqliteStore::checkpoints`].
#[derive(Debug, Clone)]
pub struct SqliteCheckpointStore {
    store: SqliteStore,
}

impl SqliteCheckpointStore {
    pub(crate) fn new(store: SqliteStore) -> Self {
        Self { store }
    }
}

// Cursor parts above MAX_POSITION are refused before storage, so every
// stored one fits SQLite's signed 64-bit integer; a negative one was not
// written by this crate.
fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql((tx, position): (i64, i64)) -> Result<GlobalCursor, StoreError> {
    match (u64::try_from(tx), u64::try_from(position)) {
        (Ok(tx), Ok(p)) => Ok(GlobalCursor::new(tx, Position::new(p))),
        _ => Err(crate::error::corrupt(format!(
            "negative checkpoint cursor {tx}:{position}"
        ))),
    }
}

impl CheckpointStore for SqliteCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        let name = name.to_owned();
        let tenant = self.store.tenant_key();
        self.store
            .workers()
            .read(move |c| read_checkpoint(c, &tenant, &name))
            .await
    }

    async fn save(&self, name: &str, cursor: GlobalCursor) -> Result<(), StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        validate_cursor(cursor)?;
        let name = name.to_owned();
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| write_checkpoint(tx, &tenant, &name, cursor))
            .await
    }
}

/// The cursor `tenant` (`''` for none) saved under `name` (already
/// validated), read on `conn`.
pub(crate) fn read_checkpoint(
    conn: &Connection,
    tenant: &str,
    name: &str,
) -> Result<Option<GlobalCursor>, StoreError> {
    conn.prepare_cached(
        "SELECT tx, position FROM eskit_checkpoints WHERE tenant = ?1 AND name = ?2",
    )
    .and_then(|mut s| {
        s.query_row([tenant, name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    })
    .map_err(store_error)?
    .map(from_sql)
    .transpose()
}

/// Saves `cursor` under `name` (both already validated) inside the
/// transaction open on `conn`.
pub(crate) fn write_checkpoint(
    conn: &Connection,
    tenant: &str,
    name: &str,
    cursor: GlobalCursor,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO eskit_checkpoints (tenant, name, tx, position, updated_at) \
         VALUES (?5, ?1, ?2, ?3, ?4) \
         ON CONFLICT (tenant, name) DO UPDATE SET tx = ?2, position = ?3, updated_at = ?4",
    )
    .and_then(|mut s| {
        s.execute((
            name,
            to_sql(cursor.tx()),
            to_sql(cursor.position().get()),
            Timestamp::now().as_unix_micros(),
            tenant,
        ))
    })
    .map_err(store_error)?;
    Ok(())
}
