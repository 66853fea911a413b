//! A change relay over the schema's `NOTIFY` channel, backed by a table so
//! a process that was away misses nothing.

use eskit_core::backend::{validate_change, validate_change_limit};
use eskit_core::error::StoreError;
use eskit_core::event::{EventId, Timestamp};
use eskit_core::store::RelayedChange;
use sqlx::Row;
use tracing::Instrument;

use crate::dcb::fnv1a;
use crate::error::store_error;
use crate::row::to_u64;
use crate::store::{PgStore, op_span};

/// Broadcasts changes (for example "projection `orders` updated entity
/// `o-1`") to every process using the same schema: each change is a row in
/// the schema's `changes` table, and its transaction notifies the schema's
/// channel, so every [`PgStore`] on the schema, in any process, wakes its
/// commit-feed listeners ([`CommitFeed`](eskit_core::store::CommitFeed))
/// when it commits. A woken reader calls
/// [`changes_after`](Self::changes_after) with its cursor;
/// [`prune`](Self::prune) bounds the table.
///
/// Broadcasts take turns on a transaction-scoped advisory lock, so change
/// ids commit in id order: a reader that has seen id `n` never meets a
/// smaller id later. The relay is store-wide (tenants share it), as on
/// the other backends.
///
/// Get it with [`PgStore::change_relay`].
#[derive(Debug, Clone)]
pub struct PgChangeRelay {
    store: PgStore,
    origin: String,
}

impl PgStore {
    /// A change relay over this store's schema, with a new origin id.
    pub fn change_relay(&self) -> PgChangeRelay {
        PgChangeRelay {
            store: self.clone(),
            origin: EventId::new().to_string(),
        }
    }
}

/// The advisory lock key broadcasts of one schema take turns on.
fn relay_lock(schema: &str) -> i64 {
    i64::from_ne_bytes(fnv1a(&[b"eskit-relay", schema.as_bytes()]).to_ne_bytes())
}

impl PgChangeRelay {
    /// This relay's origin id, stored with each change it broadcasts, so a
    /// reader can skip its own.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Records a change and notifies every store on the schema when it
    /// commits; returns its id.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for an empty, oversized or NUL-containing
    /// topic or key (nothing is sent to the server); a backend failure.
    ///
    /// # Cancel safety
    /// A broadcast dropped before it returns may or may not have been
    /// recorded.
    pub async fn broadcast(&self, topic: &str, key: Option<&str>) -> Result<u64, StoreError> {
        validate_change(topic, key)?;
        let origin = self.origin.clone();
        let topic = topic.to_owned();
        let key = key.map(str::to_owned);
        let span = op_span("relay_broadcast");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let mut tx = inner.pool.begin().await.map_err(store_error)?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(relay_lock(s))
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let row = sqlx::query(&format!(
                    "WITH i AS (INSERT INTO {s}.changes (origin, topic, key, created_at) \
                     VALUES ($1, $2, $3, $4) RETURNING id) \
                     SELECT i.id, pg_notify($5, '') FROM i"
                ))
                .bind(&origin)
                .bind(&topic)
                .bind(&key)
                .bind(Timestamp::now().as_unix_micros())
                .bind(&inner.channel)
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
                let id = to_u64(row.try_get(0).map_err(store_error)?, "change id")?;
                tx.commit().await.map_err(store_error)?;
                // This process's listeners hear it at once.
                inner.notifier.notify(inner.notifier.latest());
                Ok(id)
            })
            .instrument(span)
            .await
    }

    /// Changes with ids greater than `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`StoreError::Validation`] unless `1 <= limit <=`
    /// [`MAX_READ_LIMIT`](eskit_core::limits::MAX_READ_LIMIT);
    /// [`StoreError::Corrupt`] for a damaged row; a backend failure.
    pub async fn changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RelayedChange>, StoreError> {
        validate_change_limit(limit)?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let span = op_span("relay_read");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let rows = sqlx::query(&format!(
                    "SELECT id, origin, topic, key, created_at FROM {s}.changes \
                     WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .bind(after)
                .bind(limit)
                .fetch_all(&inner.pool)
                .await
                .map_err(store_error)?;
                rows.iter()
                    .map(|r| {
                        Ok(RelayedChange {
                            id: to_u64(r.try_get(0).map_err(store_error)?, "change id")?,
                            origin: r.try_get(1).map_err(store_error)?,
                            topic: r.try_get(2).map_err(store_error)?,
                            key: r.try_get(3).map_err(store_error)?,
                            created_at: Timestamp::from_unix_micros(
                                r.try_get(4).map_err(store_error)?,
                            ),
                        })
                    })
                    .collect()
            })
            .instrument(span)
            .await
    }

    /// Deletes all but the newest `keep` changes; returns how many went.
    /// Ids stay unique after pruning.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn prune(&self, keep: usize) -> Result<u64, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let span = op_span("relay_prune");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let done = sqlx::query(&format!(
                    "DELETE FROM {s}.changes WHERE id <= \
                     (SELECT coalesce(max(id), 0) FROM {s}.changes) - $1"
                ))
                .bind(keep)
                .execute(&inner.pool)
                .await
                .map_err(store_error)?;
                Ok(done.rows_affected())
            })
            .instrument(span)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_take_turns_on_their_own_lock() {
        assert_eq!(relay_lock("\"a\""), relay_lock("\"a\""));
        assert_ne!(relay_lock("\"a\""), relay_lock("\"b\""));
    }
}
