//! Subscription checkpoints in the store's database.

use eskit_core::{
    CheckpointStore, NameKind, Position, StoreError, Timestamp, validate_in_range, validate_name,
};
use rusqlite::OptionalExtension;

use crate::error::store_error;
use crate::store::SqliteStore;

/// Named positions in the `eskit_checkpoints` table of the store's database.
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

// Positions above MAX_POSITION are refused before storage, so every stored
// one fits SQLite's signed 64-bit integer; a negative one was not written by
// this crate.
fn to_sql(p: Position) -> i64 {
    i64::try_from(p.get()).unwrap_or(i64::MAX)
}

fn from_sql(v: i64) -> Result<Position, StoreError> {
    u64::try_from(v)
        .map(Position::new)
        .map_err(|_| crate::error::corrupt(format!("negative checkpoint position {v}")))
}

impl CheckpointStore for SqliteCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<Position>, StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        let name = name.to_owned();
        self.store
            .workers()
            .read(move |c| {
                c.prepare_cached("SELECT position FROM eskit_checkpoints WHERE name = ?1")
                    .and_then(|mut s| s.query_row([&name], |r| r.get(0)).optional())
                    .map_err(store_error)?
                    .map(from_sql)
                    .transpose()
            })
            .await
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        validate_in_range(position.get())?;
        let name = name.to_owned();
        self.store
            .write_tx(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO eskit_checkpoints (name, position, updated_at) \
                     VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET position = ?2, updated_at = ?3",
                )
                .and_then(|mut s| {
                    s.execute((&name, to_sql(position), Timestamp::now().as_unix_micros()))
                })
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }
}
