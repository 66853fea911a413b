//! A change relay: projections in other processes hear about changes through
//! a shared table (SQLite has no LISTEN/NOTIFY).

use eskit_core::backend::{validate_change, validate_change_limit};
use eskit_core::error::StoreError;
use eskit_core::event::{EventId, Timestamp};
pub use eskit_core::store::RelayedChange;

use crate::error::{corrupt, store_error};
use crate::store::SqliteStore;

/// Broadcasts changes (for example "projection `orders` updated entity `o-1`")
/// to every process using the same database file, through the
/// `eskit_changes` table.
///
/// A writer calls [`broadcast`](Self::broadcast); the store's
/// commit feed ([`SqliteStore::notifier`](crate::SqliteStore::notifier)) wakes local listeners at once, and other
/// processes that run
/// [`watch_external_writes`](SqliteStore::watch_external_writes) wake within
/// one poll interval and call [`changes_after`](Self::changes_after) with
/// their cursor. [`prune`](Self::prune) bounds the table.
#[derive(Debug, Clone)]
pub struct ChangeRelay {
    store: SqliteStore,
    origin: String,
}

impl ChangeRelay {
    pub(crate) fn new(store: SqliteStore) -> Self {
        Self {
            store,
            origin: EventId::new().to_string(),
        }
    }

    /// This relay's origin id, stored with each change it broadcasts, so a
    /// reader can skip its own.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Records a change and signals local subscribers; returns its id.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for an empty, oversized or NUL-containing
    /// topic or key; a backend failure.
    ///
    /// # Cancel safety
    /// Once polled, the change is recorded whether or not the future is kept.
    pub async fn broadcast(&self, topic: &str, key: Option<&str>) -> Result<u64, StoreError> {
        validate_change(topic, key)?;
        let origin = self.origin.clone();
        let topic = topic.to_owned();
        let key = key.map(str::to_owned);
        let id = self
            .store
            .write_tx(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO eskit_changes (origin, topic, key, created_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| {
                    s.execute((&origin, &topic, &key, Timestamp::now().as_unix_micros()))
                })
                .map_err(store_error)?;
                u64::try_from(tx.last_insert_rowid()).map_err(|_| corrupt("negative change id"))
            })
            .await?;
        self.store.signal();
        Ok(id)
    }

    /// Changes with ids greater than `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`StoreError::Validation`] unless `1 <= limit <= MAX_READ_LIMIT`;
    /// [`StoreError::Corrupt`] for a damaged row; a backend failure.
    pub async fn changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RelayedChange>, StoreError> {
        validate_change_limit(limit)?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.store
            .workers()
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT id, origin, topic, key, created_at FROM eskit_changes \
                         WHERE id > ?1 ORDER BY id LIMIT ?2",
                    )
                    .map_err(store_error)?;
                let rows = stmt
                    .query_map((after, limit), |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .map_err(store_error)?;
                let mut out = Vec::new();
                for row in rows {
                    let (id, origin, topic, key, created) = row.map_err(store_error)?;
                    out.push(RelayedChange {
                        id: u64::try_from(id).map_err(|_| corrupt("negative change id"))?,
                        origin,
                        topic,
                        key,
                        created_at: Timestamp::from_unix_micros(created),
                    });
                }
                Ok(out)
            })
            .await
    }

    /// Deletes all but the newest `keep` changes; returns how many went.
    /// Ids stay unique after pruning.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn prune(&self, keep: usize) -> Result<u64, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.store
            .write_tx(move |tx| {
                let n = tx
                    .execute(
                        "DELETE FROM eskit_changes WHERE id <= \
                         (SELECT coalesce(max(id), 0) FROM eskit_changes) - ?1",
                        [keep],
                    )
                    .map_err(store_error)?;
                Ok(n as u64)
            })
            .await
    }
}
