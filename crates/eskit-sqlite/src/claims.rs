//! The claim store in the store's database (`eskit_work_items`).
//!
//! **Invariant**: every claim runs in one `BEGIN IMMEDIATE` transaction on
//! the writer connection, so claims from every handle and every process on
//! the file are serialised by SQLite's write lock: two claims never both see
//! an item as due.

use std::time::Duration;

use eskit_core::{
    backend::{
        bounded_error, lease_expired_error, timestamp_after, validate_dead_list, validate_enqueue,
        validate_lease, validate_name,
    },
    error::StoreError,
    event::{Metadata, NameKind, Timestamp},
    store::{
        AfterFailure, Claim, ClaimOptions, ClaimStore, ClaimedItem, Enqueued, NewWorkItem,
        WorkItem, WorkState,
    },
};
use rusqlite::{OptionalExtension, Row, Transaction};

use crate::error::{corrupt, store_error};
use crate::row::{StoredMetadata, parse_metadata};
use crate::store::SqliteStore;

/// Work queues kept in the store's file, shared by every process on it.
/// Get one with [`SqliteStore::claims`].
#[derive(Debug, Clone)]
pub struct SqliteClaimStore {
    store: SqliteStore,
}

impl SqliteClaimStore {
    pub(crate) fn new(store: SqliteStore) -> Self {
        Self { store }
    }
}

// Item states as stored.
const PENDING: i64 = 0;
const CLAIMED: i64 = 1;
const DONE: i64 = 2;
const DEAD: i64 = 3;

const COLUMNS: &str =
    "id, queue, key, payload, metadata, state, due_at, owner, attempts, token, last_error";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The due items of a queue in claim order. `state < 2` (pending or
/// claimed) is spelled as in the partial index `eskit_work_items_due`, so
/// the claim walks that index in order and stops at the limit.
fn due_sql() -> String {
    const _: () = assert!(PENDING < 2 && CLAIMED < 2 && DONE >= 2 && DEAD >= 2);
    format!(
        "SELECT {COLUMNS} FROM eskit_work_items \
         WHERE tenant = ?4 AND queue = ?1 AND state < 2 AND due_at <= ?2 \
         ORDER BY due_at, id LIMIT ?3"
    )
}

/// A queue's dead items after an id, in id order, from the index
/// `eskit_work_items_by_state`.
fn dead_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM eskit_work_items \
         WHERE tenant = ?4 AND queue = ?1 AND state = {DEAD} AND id > ?2 ORDER BY id LIMIT ?3"
    )
}

/// A stored item and its claim token.
struct StoredItem {
    item: WorkItem,
    token: u64,
}

fn item_row(r: &Row<'_>) -> rusqlite::Result<Result<StoredItem, StoreError>> {
    let id: i64 = r.get(0)?;
    let (queue, key): (String, String) = (r.get(1)?, r.get(2)?);
    let payload: Vec<u8> = r.get(3)?;
    let metadata: Option<String> = r.get(4)?;
    let (state, due_at): (i64, i64) = (r.get(5)?, r.get(6)?);
    let owner: Option<String> = r.get(7)?;
    let (attempts, token): (i64, i64) = (r.get(8)?, r.get(9)?);
    let last_error: Option<String> = r.get(10)?;
    let bad = |what: &str| corrupt(format!("invalid {what} in work item {id}"));
    Ok((|| {
        let due = Timestamp::from_unix_micros(due_at);
        let state = match state {
            PENDING => WorkState::Pending { not_before: due },
            CLAIMED => WorkState::Claimed {
                owner: owner.ok_or_else(|| bad("owner"))?,
                until: due,
            },
            DONE => WorkState::Done,
            DEAD => WorkState::Dead,
            _ => return Err(bad("state")),
        };
        Ok(StoredItem {
            item: WorkItem {
                id: u64::try_from(id).map_err(|_| bad("id"))?,
                queue,
                key,
                payload,
                metadata: match metadata {
                    None => Metadata::new(),
                    Some(t) => parse_metadata(&t).ok_or_else(|| bad("metadata"))?,
                },
                state,
                attempts: u32::try_from(attempts).map_err(|_| bad("attempts"))?,
                last_error,
            },
            token: u64::try_from(token).map_err(|_| bad("token"))?,
        })
    })())
}

/// Runs `f` on the item when `claim` holds it (the token matches and the
/// item is claimed); `false` otherwise.
fn with_held(
    tx: &Transaction<'_>,
    tenant: &str,
    claim: Claim,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<bool, StoreError> {
    let mut all: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(params.len() + 3);
    let (id, token) = (to_i64(claim.id), to_i64(claim.token));
    all.push(&id);
    all.push(&token);
    all.extend_from_slice(params);
    all.push(&tenant);
    let n = tx
        .prepare_cached(&format!(
            "{sql} WHERE id = ?1 AND token = ?2 AND state = {CLAIMED} AND tenant = ?{}",
            all.len()
        ))
        .and_then(|mut s| s.execute(all.as_slice()))
        .map_err(store_error)?;
    Ok(n > 0)
}

impl ClaimStore for SqliteClaimStore {
    async fn enqueue(
        &self,
        queue: &str,
        items: Vec<NewWorkItem>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        validate_enqueue(queue, &items)?;
        let queue = queue.to_owned();
        let tenant = self.store.tenant_key();
        let metadata = items
            .iter()
            .map(|i| StoredMetadata::of(i.metadata()))
            .collect::<Vec<_>>();
        self.store
            .write_tx(move |tx| {
                let now = Timestamp::now().as_unix_micros();
                let mut find = tx
                    .prepare_cached(
                        "SELECT id FROM eskit_work_items \
                         WHERE tenant = ?3 AND queue = ?1 AND key = ?2",
                    )
                    .map_err(store_error)?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO eskit_work_items (queue, key, payload, metadata, state, \
                         due_at, attempts, token, enqueued_at, updated_at, tenant) \
                         VALUES (?1, ?2, ?3, ?4, 0, ?5, 0, 0, ?6, ?6, ?7)",
                    )
                    .map_err(store_error)?;
                let mut out = Vec::with_capacity(items.len());
                for (item, meta) in items.iter().zip(&metadata) {
                    let existing: Option<i64> = find
                        .query_row((&queue, item.key(), &tenant), |r| r.get(0))
                        .optional()
                        .map_err(store_error)?;
                    if let Some(id) = existing {
                        out.push(Enqueued::Existing(
                            u64::try_from(id).map_err(|_| corrupt("negative work item id"))?,
                        ));
                        continue;
                    }
                    let due = item.not_before().map_or(now, Timestamp::as_unix_micros);
                    insert
                        .execute(rusqlite::params![
                            queue,
                            item.key(),
                            item.payload(),
                            meta.text(),
                            due,
                            now,
                            tenant
                        ])
                        .map_err(store_error)?;
                    out.push(Enqueued::Added(
                        u64::try_from(tx.last_insert_rowid())
                            .map_err(|_| corrupt("negative work item id"))?,
                    ));
                }
                Ok(out)
            })
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
        self.store
            .write_tx(move |tx| {
                // The time is read inside the write lock, so claims of every
                // process are ordered with the times they use.
                let now = Timestamp::now();
                let until = timestamp_after(now, options.lease());
                let mut due = tx.prepare_cached(&due_sql()).map_err(store_error)?;
                let mut kill = tx
                    .prepare_cached(&format!(
                        "UPDATE eskit_work_items SET state = {DEAD}, owner = NULL, \
                         last_error = ?2, updated_at = ?3 WHERE id = ?1"
                    ))
                    .map_err(store_error)?;
                let mut take = tx
                    .prepare_cached(&format!(
                        "UPDATE eskit_work_items SET state = {CLAIMED}, owner = ?2, due_at = ?3, \
                         attempts = attempts + 1, token = token + 1, updated_at = ?4 WHERE id = ?1"
                    ))
                    .map_err(store_error)?;
                let mut out = Vec::new();
                // Items past their attempts go to dead on the way and do not
                // count against the limit, so look again until the limit is
                // met or nothing is due.
                loop {
                    let want = options.limit() - out.len();
                    let rows = due
                        .query_map(
                            rusqlite::params![
                                queue,
                                now.as_unix_micros(),
                                i64::try_from(want).unwrap_or(i64::MAX),
                                tenant
                            ],
                            item_row,
                        )
                        .map_err(store_error)?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(store_error)?;
                    if rows.is_empty() {
                        break;
                    }
                    let mut killed = false;
                    for row in rows {
                        let StoredItem { item, token } = row?;
                        let id = to_i64(item.id);
                        if matches!(item.state, WorkState::Claimed { .. })
                            && item.attempts >= options.max_attempts()
                        {
                            kill.execute(rusqlite::params![
                                id,
                                lease_expired_error(item.attempts),
                                now.as_unix_micros()
                            ])
                            .map_err(store_error)?;
                            killed = true;
                            continue;
                        }
                        take.execute(rusqlite::params![
                            id,
                            options.owner(),
                            until.as_unix_micros(),
                            now.as_unix_micros()
                        ])
                        .map_err(store_error)?;
                        let attempt = item.attempts.saturating_add(1);
                        out.push(ClaimedItem {
                            claim: Claim {
                                id: item.id,
                                token: token + 1,
                            },
                            queue: item.queue,
                            key: item.key,
                            payload: item.payload,
                            metadata: item.metadata,
                            attempt,
                            last_error: item.last_error,
                            lease_until: until,
                        });
                    }
                    if !killed || out.len() >= options.limit() {
                        break;
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn renew(&self, claim: Claim, lease: Duration) -> Result<bool, StoreError> {
        validate_lease(lease)?;
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                let now = Timestamp::now();
                let until = timestamp_after(now, lease).as_unix_micros();
                with_held(
                    tx,
                    &tenant,
                    claim,
                    "UPDATE eskit_work_items SET due_at = ?3, updated_at = ?4",
                    &[&until, &now.as_unix_micros()],
                )
            })
            .await
    }

    async fn complete(&self, claim: Claim) -> Result<bool, StoreError> {
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                let now = Timestamp::now().as_unix_micros();
                with_held(
                    tx,
                    &tenant,
                    claim,
                    &format!(
                        "UPDATE eskit_work_items SET state = {DONE}, owner = NULL, updated_at = ?3"
                    ),
                    &[&now],
                )
            })
            .await
    }

    async fn fail(
        &self,
        claim: Claim,
        error: &str,
        then: AfterFailure,
    ) -> Result<bool, StoreError> {
        let error = bounded_error(error).to_owned();
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                let now = Timestamp::now().as_unix_micros();
                let (state, due) = match then {
                    AfterFailure::RetryAt(at) => (PENDING, at.as_unix_micros()),
                    AfterFailure::Dead => (DEAD, now),
                };
                with_held(
                    tx,
                    &tenant,
                    claim,
                    "UPDATE eskit_work_items SET state = ?3, due_at = ?4, owner = NULL, \
                     last_error = ?5, updated_at = ?6",
                    &[&state, &due, &error, &now],
                )
            })
            .await
    }

    async fn get(&self, id: u64) -> Result<Option<WorkItem>, StoreError> {
        let tenant = self.store.tenant_key();
        self.store
            .workers()
            .read(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM eskit_work_items WHERE id = ?1 AND tenant = ?2"
                ))
                .and_then(|mut s| {
                    s.query_row(rusqlite::params![to_i64(id), tenant], item_row)
                        .optional()
                })
                .map_err(store_error)?
                .transpose()?
                .map(|r| r.item))
            })
            .await
    }

    async fn dead(
        &self,
        queue: &str,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<WorkItem>, StoreError> {
        validate_dead_list(queue, limit)?;
        let queue = queue.to_owned();
        let tenant = self.store.tenant_key();
        self.store
            .workers()
            .read(move |c| {
                let mut stmt = c.prepare_cached(&dead_sql()).map_err(store_error)?;
                let rows = stmt
                    .query_map(
                        rusqlite::params![
                            queue,
                            to_i64(after_id),
                            i64::try_from(limit).unwrap_or(i64::MAX),
                            tenant
                        ],
                        item_row,
                    )
                    .map_err(store_error)?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(r.map_err(store_error)??.item);
                }
                Ok(out)
            })
            .await
    }

    async fn requeue(&self, id: u64) -> Result<bool, StoreError> {
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                let now = Timestamp::now().as_unix_micros();
                tx.prepare_cached(&format!(
                    "UPDATE eskit_work_items SET state = {PENDING}, due_at = ?2, attempts = 0, \
                     updated_at = ?2 WHERE id = ?1 AND state = {DEAD} AND tenant = ?3"
                ))
                .and_then(|mut s| s.execute(rusqlite::params![to_i64(id), now, tenant]))
                .map(|n| n > 0)
                .map_err(store_error)
            })
            .await
    }

    async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                tx.prepare_cached("DELETE FROM eskit_work_items WHERE id = ?1 AND tenant = ?2")
                    .and_then(|mut s| s.execute(rusqlite::params![to_i64(id), tenant]))
                    .map(|n| n > 0)
                    .map_err(store_error)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn plan(c: &Connection, sql: &str) -> String {
        let mut stmt = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
        let rows = stmt
            .query_map(rusqlite::params!["q", 0i64, 10i64, "tenant"], |r| {
                r.get::<_, String>(3)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        rows.map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_claim_walks_the_due_index_in_order_without_sorting() {
        let dir = std::env::temp_dir().join(format!(
            "eskit-sqlite-claims-plan-{}-{}",
            std::process::id(),
            Timestamp::now().as_unix_micros()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("events.db");
        let store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        eskit_core::rt::block_on(store.close());
        let c = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let due = plan(&c, &due_sql());
        assert!(due.contains("USING INDEX eskit_work_items_due"), "{due}");
        assert!(!due.contains("TEMP B-TREE"), "the claim sorts: {due}");
        let dead = plan(&c, &dead_sql());
        assert!(
            dead.contains("USING INDEX eskit_work_items_by_state"),
            "{dead}"
        );
        assert!(
            !dead.contains("TEMP B-TREE"),
            "the dead listing sorts: {dead}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
