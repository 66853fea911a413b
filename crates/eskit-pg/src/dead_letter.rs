//! The dead-letter store in the schema's `dead_letters` table.

use eskit_core::backend::{bounded_error, validate_name};
use eskit_core::error::{StoreError, ValidationError};
use eskit_core::event::{NameKind, RawEvent, Timestamp};
use eskit_core::limits::MAX_READ_LIMIT;
use eskit_core::store::{DeadLetter, DeadLetterStore};
use sqlx::Row;
use sqlx::postgres::PgRow;
use std::borrow::Cow;
use tracing::Instrument;

use crate::error::{corrupt, store_error};
use crate::row::{self, to_sql, to_u64};
use crate::sql::EVENT_COLUMNS;
use crate::store::{PgStore, op_span};

/// The [`DeadLetterStore`] of a [`PgStore`]: letters get increasing ids and
/// keep a copy of their event. Get it with [`PgStore::dead_letters`].
#[derive(Debug, Clone)]
pub struct PgDeadLetterStore {
    store: PgStore,
}

impl PgStore {
    /// The dead-letter store over the same schema and pool.
    pub fn dead_letters(&self) -> PgDeadLetterStore {
        PgDeadLetterStore {
            store: self.clone(),
        }
    }
}

fn letter(r: &PgRow) -> Result<DeadLetter, StoreError> {
    let id: i64 = r.try_get(0).map_err(store_error)?;
    let attempts: i64 = r.try_get(3).map_err(store_error)?;
    Ok(DeadLetter {
        id: to_u64(id, "dead letter id")?,
        subscription: r.try_get(1).map_err(store_error)?,
        error: r.try_get(2).map_err(store_error)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| corrupt("dead letter attempts out of range"))?,
        at: Timestamp::from_unix_micros(r.try_get(4).map_err(store_error)?),
        event: row::event(r, 5)?,
    })
}

/// An error text as stored: within the bound, each NUL replaced by U+FFFD.
/// PostgreSQL text cannot hold NUL, and refusing the text would stop the
/// subscription or worker reporting its failure; the text is a diagnostic,
/// so a visible stand-in is better.
pub(crate) fn stored_error(error: &str) -> String {
    let text = if error.contains('\0') {
        Cow::Owned(error.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(error)
    };
    bounded_error(&text).to_owned()
}

impl DeadLetterStore for PgDeadLetterStore {
    async fn put(
        &self,
        subscription: &str,
        event: &RawEvent,
        error: &str,
        attempts: u32,
    ) -> Result<u64, StoreError> {
        validate_name(NameKind::Checkpoint, subscription)?;
        let subscription = subscription.to_owned();
        let error = stored_error(error);
        let event = event.clone();
        let span = op_span("dead_letter_put");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let tags: Vec<String> = event.tags.iter().map(|t| t.as_str().to_owned()).collect();
                let mut session = inner.session().await?;
                let r = sqlx::query(&format!(
                    "INSERT INTO {s}.dead_letters (tenant, subscription, error, attempts, failed_at, \
                     position, tx, stream_type, stream_id, version, event_id, event_type, \
                     schema_version, codec, payload, recorded_at, metadata, tags) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7::text::xid8, $8, $9, $10, $11, $12, $13, \
                     $14, $15, $16, $17, $18) RETURNING id"
                ))
                .bind(inner.tenant.as_str())
                .bind(&subscription)
                .bind(&error)
                .bind(i64::from(attempts))
                .bind(Timestamp::now().as_unix_micros())
                .bind(to_sql(event.position.get()))
                .bind(event.tx.to_string())
                .bind(event.stream.stream_type().as_str())
                .bind(event.stream.stream_id().as_str())
                .bind(to_sql(event.version.get()))
                .bind(event.id.to_bytes().to_vec())
                .bind(event.event_type.as_str())
                .bind(i64::from(event.schema_version))
                .bind(event.codec.as_str())
                .bind(&event.payload)
                .bind(event.timestamp.as_unix_micros())
                .bind(crate::meta::encode(&event.metadata))
                .bind(tags)
                .fetch_one(&mut *session)
                .await
                .map_err(store_error)?;
                session.commit().await?;
                to_u64(r.try_get(0).map_err(store_error)?, "dead letter id")
            })
            .instrument(span)
            .await
    }

    async fn list(
        &self,
        subscription: &str,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        validate_name(NameKind::Checkpoint, subscription)?;
        if limit == 0 || limit > MAX_READ_LIMIT {
            return Err(ValidationError::InvalidLimit { limit }.into());
        }
        let subscription = subscription.to_owned();
        let span = op_span("dead_letter_list");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let mut session = inner.session().await?;
                let rows = sqlx::query(&format!(
                    "SELECT e.id, e.subscription, e.error, e.attempts, e.failed_at, {EVENT_COLUMNS} \
                     FROM {s}.dead_letters e WHERE e.tenant = $1 AND e.subscription = $2 \
                     AND e.id > $3 ORDER BY e.id LIMIT $4"
                ))
                .bind(inner.tenant.as_str())
                .bind(&subscription)
                .bind(to_sql(after_id))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&mut *session)
                .await
                .map_err(store_error)?;
                rows.iter().map(letter).collect()
            })
            .instrument(span)
            .await
    }

    async fn get(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let span = op_span("dead_letter_get");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let mut session = inner.session().await?;
                let row = sqlx::query(&format!(
                    "SELECT e.id, e.subscription, e.error, e.attempts, e.failed_at, {EVENT_COLUMNS} \
                     FROM {s}.dead_letters e WHERE e.tenant = $1 AND e.id = $2"
                ))
                .bind(inner.tenant.as_str())
                .bind(to_sql(id))
                .fetch_optional(&mut *session)
                .await
                .map_err(store_error)?;
                row.as_ref().map(letter).transpose()
            })
            .instrument(span)
            .await
    }

    async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        let span = op_span("dead_letter_delete");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let mut session = inner.session().await?;
                let done = sqlx::query(&format!(
                    "DELETE FROM {s}.dead_letters WHERE tenant = $1 AND id = $2"
                ))
                .bind(inner.tenant.as_str())
                .bind(to_sql(id))
                .execute(&mut *session)
                .await
                .map_err(store_error)?;
                session.commit().await?;
                Ok(done.rows_affected() > 0)
            })
            .instrument(span)
            .await
    }
}
