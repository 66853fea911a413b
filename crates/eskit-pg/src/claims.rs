//! The claim store: work queues in the `work_items` table, claimed with
//! `FOR UPDATE SKIP LOCKED` so concurrent workers never wait on each
//! other's rows and never take the same item.

use std::time::Duration;

use eskit_core::backend::validate_name;
use eskit_core::error::StoreError;
use eskit_core::event::{NameKind, Timestamp};
use eskit_core::store::{
    AfterFailure, Claim, ClaimOptions, ClaimStore, ClaimedItem, Enqueued, NewWorkItem, WorkItem,
    WorkState,
};
use sqlx::postgres::PgRow;
use sqlx::{Connection, Row};
use tracing::Instrument;

use crate::error::{corrupt, store_error};
use crate::row::{to_sql, to_u64};
use crate::store::{PgStore, op_span};

const PENDING: i16 = 1;
const CLAIMED: i16 = 2;
const DONE: i16 = 3;
const DEAD: i16 = 4;

/// The [`ClaimStore`] of a [`PgStore`]. Get it with [`PgStore::claims`].
/// Times (not-before, leases) are this process's clock, as the memory
/// store's.
#[derive(Debug, Clone)]
pub struct PgClaimStore {
    store: PgStore,
}

impl PgStore {
    /// The claim store over the same schema and pool.
    pub fn claims(&self) -> PgClaimStore {
        PgClaimStore {
            store: self.clone(),
        }
    }
}

fn attempts_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt("work item attempts out of range"))
}

/// `id, queue, key, payload, metadata, state, due, owner, attempts, last_error`.
const ITEM_COLUMNS: &str =
    "id, queue, key, payload, metadata, state, due, owner, attempts, last_error";

fn item(r: &PgRow) -> Result<WorkItem, StoreError> {
    let state: i16 = r.try_get(5).map_err(store_error)?;
    let due: Option<i64> = r.try_get(6).map_err(store_error)?;
    let owner: Option<String> = r.try_get(7).map_err(store_error)?;
    let state = match (state, due, owner) {
        (PENDING, Some(d), _) => WorkState::Pending {
            not_before: Timestamp::from_unix_micros(d),
        },
        (CLAIMED, Some(d), Some(owner)) => WorkState::Claimed {
            owner,
            until: Timestamp::from_unix_micros(d),
        },
        (DONE, _, _) => WorkState::Done,
        (DEAD, _, _) => WorkState::Dead,
        (other, ..) => return Err(corrupt(format!("work item in an unknown state {other}"))),
    };
    let metadata: Option<Vec<u8>> = r.try_get(4).map_err(store_error)?;
    Ok(WorkItem {
        id: to_u64(r.try_get(0).map_err(store_error)?, "work item id")?,
        queue: r.try_get(1).map_err(store_error)?,
        key: r.try_get(2).map_err(store_error)?,
        payload: r.try_get(3).map_err(store_error)?,
        metadata: crate::meta::decode(metadata.as_deref())?,
        state,
        attempts: attempts_of(r.try_get(8).map_err(store_error)?)?,
        last_error: r.try_get(9).map_err(store_error)?,
    })
}

impl ClaimStore for PgClaimStore {
    async fn enqueue(
        &self,
        queue: &str,
        items: Vec<NewWorkItem>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        eskit_core::backend::validate_enqueue(queue, &items)?;
        let queue = queue.to_owned();
        let tenant = self.store.tenant_key();
        let span = op_span("claim_enqueue");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let now = Timestamp::now().as_unix_micros();
                let keys: Vec<&str> = items.iter().map(NewWorkItem::key).collect();
                let payloads: Vec<&[u8]> = items.iter().map(NewWorkItem::payload).collect();
                let metas: Vec<Option<Vec<u8>>> = items
                    .iter()
                    .map(|i| crate::meta::encode(i.metadata()))
                    .collect();
                let due: Vec<i64> = items
                    .iter()
                    .map(|i| i.not_before().map_or(now, Timestamp::as_unix_micros))
                    .collect();
                // One statement: new keys are inserted in item order (ids
                // grow with it), existing ones left alone.
                let mut session = inner.session().await?;
                let added = sqlx::query(&format!(
                    "INSERT INTO {s}.work_items (tenant, queue, key, payload, metadata, state, due) \
                     SELECT $6, $1, u.key, u.payload, u.metadata, {PENDING}, u.due \
                     FROM unnest($2::text[], $3::bytea[], $4::bytea[], $5::int8[]) \
                     WITH ORDINALITY AS u(key, payload, metadata, due, ord) ORDER BY u.ord \
                     ON CONFLICT (tenant, queue, key) DO NOTHING RETURNING id, key"
                ))
                .bind(&queue)
                .bind(&keys)
                .bind(&payloads)
                .bind(&metas)
                .bind(&due)
                .bind(&tenant)
                .fetch_all(&mut *session)
                .await
                .map_err(store_error)?;
                session.commit().await?;
                let mut ids = std::collections::HashMap::new();
                for r in &added {
                    let id: i64 = r.try_get(0).map_err(store_error)?;
                    let key: String = r.try_get(1).map_err(store_error)?;
                    ids.insert(key, Enqueued::Added(to_u64(id, "work item id")?));
                }
                if ids.len() < items.len() {
                    // The others existed (perhaps committed by a concurrent
                    // enqueue this statement waited for): read them now.
                    let mut session = inner.session().await?;
                    let existing = sqlx::query(&format!(
                        "SELECT id, key FROM {s}.work_items \
                         WHERE tenant = $3 AND queue = $1 AND key = ANY($2::text[])"
                    ))
                    .bind(&queue)
                    .bind(&keys)
                    .bind(&tenant)
                    .fetch_all(&mut *session)
                    .await
                    .map_err(store_error)?;
                    for r in &existing {
                        let id: i64 = r.try_get(0).map_err(store_error)?;
                        let key: String = r.try_get(1).map_err(store_error)?;
                        ids.entry(key)
                            .or_insert(Enqueued::Existing(to_u64(id, "work item id")?));
                    }
                }
                items
                    .iter()
                    .map(|i| {
                        ids.get(i.key())
                            .copied()
                            .ok_or_else(|| corrupt("an enqueued work item is missing"))
                    })
                    .collect()
            })
            .instrument(span)
            .await
    }

    async fn claim(
        &self,
        queue: &str,
        options: ClaimOptions,
    ) -> Result<Vec<ClaimedItem>, StoreError> {
        validate_name(NameKind::Queue, queue)?;
        let queue = queue.to_owned();
        let tenant = self.store.tenant_key();
        let span = op_span("claim");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let now = Timestamp::now();
                let until = eskit_core::backend::timestamp_after(now, options.lease()).as_unix_micros();
                let max = i64::from(options.max_attempts());
                let mut conn = inner.pool.acquire().await.map_err(store_error)?;
                let mut tx = conn.begin().await.map_err(store_error)?;
                inner.scope(&mut tx).await?;
                let mut out = Vec::new();
                // Items whose lease ran out on their last attempt die and
                // take no slot, so take candidates until the batch is full.
                loop {
                    let want = options.limit() - out.len();
                    let candidates = sqlx::query(&format!(
                        "SELECT id, state, attempts FROM {s}.work_items \
                         WHERE tenant = $4 AND queue = $1 AND due IS NOT NULL AND due <= $2 \
                         ORDER BY due, id LIMIT $3 FOR UPDATE SKIP LOCKED"
                    ))
                    .bind(&queue)
                    .bind(now.as_unix_micros())
                    .bind(i64::try_from(want).unwrap_or(i64::MAX))
                    .bind(&tenant)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(store_error)?;
                    if candidates.is_empty() {
                        break;
                    }
                    let (mut take, mut dead, mut errors) = (Vec::new(), Vec::new(), Vec::new());
                    for r in &candidates {
                        let id: i64 = r.try_get(0).map_err(store_error)?;
                        let state: i16 = r.try_get(1).map_err(store_error)?;
                        let attempts: i64 = r.try_get(2).map_err(store_error)?;
                        if state == CLAIMED && attempts >= max {
                            dead.push(id);
                            errors.push(eskit_core::backend::lease_expired_error(attempts_of(
                                attempts,
                            )?));
                        } else {
                            take.push(id);
                        }
                    }
                    if !dead.is_empty() {
                        sqlx::query(&format!(
                            "UPDATE {s}.work_items w SET state = {DEAD}, due = NULL, \
                             owner = NULL, last_error = u.error \
                             FROM unnest($1::int8[], $2::text[]) AS u(id, error) WHERE w.id = u.id"
                        ))
                        .bind(&dead)
                        .bind(&errors)
                        .execute(&mut *tx)
                        .await
                        .map_err(store_error)?;
                    }
                    if !take.is_empty() {
                        let rows = sqlx::query(&format!(
                            "UPDATE {s}.work_items SET state = {CLAIMED}, due = $2, owner = $3, \
                             attempts = attempts + 1, token = token + 1 WHERE id = ANY($1::int8[]) \
                             RETURNING id, queue, key, payload, metadata, attempts, last_error, token"
                        ))
                        .bind(&take)
                        .bind(until)
                        .bind(options.owner())
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(store_error)?;
                        let mut claimed = std::collections::HashMap::new();
                        for r in &rows {
                            let id: i64 = r.try_get(0).map_err(store_error)?;
                            let metadata: Option<Vec<u8>> = r.try_get(4).map_err(store_error)?;
                            let token: i64 = r.try_get(7).map_err(store_error)?;
                            claimed.insert(
                                id,
                                ClaimedItem {
                                    claim: Claim {
                                        id: to_u64(id, "work item id")?,
                                        token: to_u64(token, "claim token")?,
                                    },
                                    queue: r.try_get(1).map_err(store_error)?,
                                    key: r.try_get(2).map_err(store_error)?,
                                    payload: r.try_get(3).map_err(store_error)?,
                                    metadata: crate::meta::decode(metadata.as_deref())?,
                                    attempt: attempts_of(r.try_get(5).map_err(store_error)?)?,
                                    last_error: r.try_get(6).map_err(store_error)?,
                                    lease_until: Timestamp::from_unix_micros(until),
                                },
                            );
                        }
                        // In due order, as the candidates came.
                        for id in &take {
                            if let Some(c) = claimed.remove(id) {
                                out.push(c);
                            }
                        }
                    }
                    if out.len() >= options.limit() || candidates.len() < want {
                        break;
                    }
                }
                tx.commit().await.map_err(store_error)?;
                Ok(out)
            })
            .instrument(span)
            .await
    }

    async fn renew(&self, claim: Claim, lease: Duration) -> Result<bool, StoreError> {
        eskit_core::backend::validate_lease(lease)?;
        let until = eskit_core::backend::timestamp_after(Timestamp::now(), lease).as_unix_micros();
        self.held_update("claim_renew", claim, "due = $4".to_owned(), Some(until))
            .await
    }

    async fn complete(&self, claim: Claim) -> Result<bool, StoreError> {
        self.held_update(
            "claim_complete",
            claim,
            format!("state = {DONE}, due = NULL, owner = NULL"),
            None,
        )
        .await
    }

    async fn fail(
        &self,
        claim: Claim,
        error: &str,
        then: AfterFailure,
    ) -> Result<bool, StoreError> {
        let error = crate::dead_letter::stored_error(error);
        let (state, due) = match then {
            AfterFailure::RetryAt(t) => (PENDING, Some(t.as_unix_micros())),
            AfterFailure::Dead => (DEAD, None),
        };
        let span = op_span("claim_fail");
        let tenant = self.store.tenant_key();
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let mut session = inner.session().await?;
                let done = sqlx::query(&format!(
                    "UPDATE {s}.work_items SET state = $3, due = $4, owner = NULL, last_error = $5 \
                     WHERE id = $1 AND token = $2 AND state = {CLAIMED} AND tenant = $6"
                ))
                .bind(to_sql(claim.id))
                .bind(to_sql(claim.token))
                .bind(state)
                .bind(due)
                .bind(&error)
                .bind(&tenant)
                .execute(&mut *session)
                .await
                .map_err(store_error)?;
                session.commit().await?;
                Ok(done.rows_affected() > 0)
            })
            .instrument(span)
            .await
    }

    async fn get(&self, id: u64) -> Result<Option<WorkItem>, StoreError> {
        let span = op_span("claim_get");
        let tenant = self.store.tenant_key();
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let mut session = inner.session().await?;
                let row = sqlx::query(&format!(
                    "SELECT {ITEM_COLUMNS} FROM {s}.work_items WHERE id = $1 AND tenant = $2"
                ))
                .bind(to_sql(id))
                .bind(&tenant)
                .fetch_optional(&mut *session)
                .await
                .map_err(store_error)?;
                row.as_ref().map(item).transpose()
            })
            .instrument(span)
            .await
    }

    async fn dead(
        &self,
        queue: &str,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<WorkItem>, StoreError> {
        eskit_core::backend::validate_dead_list(queue, limit)?;
        let queue = queue.to_owned();
        let tenant = self.store.tenant_key();
        let span = op_span("claim_dead");
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let mut session = inner.session().await?;
                let rows = sqlx::query(&format!(
                    "SELECT {ITEM_COLUMNS} FROM {s}.work_items \
                     WHERE tenant = $4 AND queue = $1 AND state = {DEAD} AND id > $2 \
                     ORDER BY id LIMIT $3"
                ))
                .bind(&queue)
                .bind(to_sql(after_id))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .bind(&tenant)
                .fetch_all(&mut *session)
                .await
                .map_err(store_error)?;
                rows.iter().map(item).collect()
            })
            .instrument(span)
            .await
    }

    async fn requeue(&self, id: u64) -> Result<bool, StoreError> {
        let span = op_span("claim_requeue");
        let tenant = self.store.tenant_key();
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let mut session = inner.session().await?;
                let done = sqlx::query(&format!(
                    "UPDATE {s}.work_items SET state = {PENDING}, due = $2, attempts = 0 \
                     WHERE id = $1 AND state = {DEAD} AND tenant = $3"
                ))
                .bind(to_sql(id))
                .bind(Timestamp::now().as_unix_micros())
                .bind(&tenant)
                .execute(&mut *session)
                .await
                .map_err(store_error)?;
                session.commit().await?;
                Ok(done.rows_affected() > 0)
            })
            .instrument(span)
            .await
    }

    async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        let span = op_span("claim_delete");
        let tenant = self.store.tenant_key();
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let mut session = inner.session().await?;
                let done = sqlx::query(&format!(
                    "DELETE FROM {s}.work_items WHERE id = $1 AND tenant = $2"
                ))
                .bind(to_sql(id))
                .bind(&tenant)
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

impl PgClaimStore {
    /// Updates an item only while `claim` holds it (its token, claimed).
    /// `set` is built from constants only (one statement text per
    /// operation, so the server can reuse its plan); a new due time is
    /// bound as `$4`.
    async fn held_update(
        &self,
        operation: &'static str,
        claim: Claim,
        set: String,
        due: Option<i64>,
    ) -> Result<bool, StoreError> {
        let span = op_span(operation);
        let tenant = self.store.tenant_key();
        self.store
            .run(move |inner| async move {
                let s = &inner.sql.schema;
                let sql = format!(
                    "UPDATE {s}.work_items SET {set} \
                     WHERE id = $1 AND token = $2 AND state = {CLAIMED} AND tenant = $3"
                );
                let mut q = sqlx::query(&sql)
                    .bind(to_sql(claim.id))
                    .bind(to_sql(claim.token))
                    .bind(&tenant);
                if let Some(due) = due {
                    q = q.bind(due);
                }
                let mut session = inner.session().await?;
                let done = q.execute(&mut *session).await.map_err(store_error)?;
                session.commit().await?;
                Ok(done.rows_affected() > 0)
            })
            .instrument(span)
            .await
    }
}
