//! Dead letters in the store's database (`eskit_dead_letters`).

use eskit_core::{
    backend::{bounded_error, validate_name},
    error::{StoreError, ValidationError},
    event::{
        CodecName, EventHeader, EventId, EventType, Metadata, NameKind, Position, RawEvent,
        StreamName, Tags, TenantId, Timestamp, Version,
    },
    limits::MAX_READ_LIMIT,
    store::{DeadLetter, DeadLetterStore},
};
use rusqlite::{OptionalExtension, Row};

use crate::error::{corrupt, store_error};
use crate::row::{StoredMetadata, parse_metadata, parse_tags, tags_blob};
use crate::store::SqliteStore;

/// Dead letters kept in the store's file, so they survive restarts and are
/// shared by every process on the file. Get one with
/// [`SqliteStore::dead_letters`]; one from a tenant's handle
/// ([`TenantScoped::for_tenant`](eskit_core::store::TenantScoped::for_tenant))
/// keeps and sees that tenant's letters only.
#[derive(Debug, Clone)]
pub struct SqliteDeadLetterStore {
    store: SqliteStore,
}

impl SqliteDeadLetterStore {
    pub(crate) fn new(store: SqliteStore) -> Self {
        Self { store }
    }
}

const COLUMNS: &str = "id, subscription, tx, position, stream_type, stream_id, version, event_id, \
    event_type, schema_version, codec, payload, timestamp, metadata, tags, error, attempts, at, \
    tenant";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn letter(r: &Row<'_>) -> rusqlite::Result<Result<DeadLetter, StoreError>> {
    let id: i64 = r.get(0)?;
    let subscription: String = r.get(1)?;
    let (tx, position, version): (i64, i64, i64) = (r.get(2)?, r.get(3)?, r.get(6)?);
    let (stream_type, stream_id): (String, String) = (r.get(4)?, r.get(5)?);
    let event_id: Vec<u8> = r.get(7)?;
    let (event_type, schema_version, codec): (String, i64, String) =
        (r.get(8)?, r.get(9)?, r.get(10)?);
    let payload: Vec<u8> = r.get(11)?;
    let timestamp: i64 = r.get(12)?;
    let metadata: Option<String> = r.get(13)?;
    let tags: Option<Vec<u8>> = r.get(14)?;
    let (error, attempts, at): (String, i64, i64) = (r.get(15)?, r.get(16)?, r.get(17)?);
    let tenant: String = r.get(18)?;
    let bad = |what: &str| corrupt(format!("invalid {what} in dead letter {id}"));
    Ok((|| {
        let num = |v: i64, what: &str| u64::try_from(v).map_err(|_| bad(what));
        let event = RawEvent {
            header: EventHeader {
                id: EventId::from_bytes(
                    <[u8; 16]>::try_from(event_id.as_slice()).map_err(|_| bad("event id"))?,
                ),
                stream: StreamName::new(stream_type, stream_id).map_err(|_| bad("stream"))?,
                version: Version::new(num(version, "version")?),
                position: Position::new(num(position, "position")?),
                tx: num(tx, "transaction key")?,
                event_type: EventType::new(event_type).map_err(|_| bad("event type"))?,
                schema_version: u32::try_from(schema_version).map_err(|_| bad("schema version"))?,
                timestamp: Timestamp::from_unix_micros(timestamp),
                metadata: match metadata {
                    None => Metadata::new(),
                    Some(t) => parse_metadata(&t).ok_or_else(|| bad("metadata"))?,
                },
                tags: match tags {
                    None => Tags::new(),
                    Some(b) => parse_tags(&b).ok_or_else(|| bad("tags"))?,
                },
                tenant: match tenant.as_str() {
                    "" => None,
                    t => Some(TenantId::new(t).map_err(|_| bad("tenant"))?),
                },
            },
            codec: CodecName::new(codec).map_err(|_| bad("codec"))?,
            payload,
        };
        Ok(DeadLetter {
            id: num(id, "id")?,
            subscription,
            event,
            error,
            attempts: u32::try_from(attempts).map_err(|_| bad("attempts"))?,
            at: Timestamp::from_unix_micros(at),
        })
    })())
}

impl DeadLetterStore for SqliteDeadLetterStore {
    async fn put(
        &self,
        subscription: &str,
        event: &RawEvent,
        error: &str,
        attempts: u32,
    ) -> Result<u64, StoreError> {
        validate_name(NameKind::Checkpoint, subscription)?;
        let subscription = subscription.to_owned();
        let event = event.clone();
        let error = bounded_error(error).to_owned();
        let metadata = StoredMetadata::of(&event.metadata);
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                let id = event.id.to_bytes();
                tx.prepare_cached(&format!(
                    "INSERT INTO eskit_dead_letters ({COLUMNS}) VALUES \
                     (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
                     ?18)"
                ))
                .and_then(|mut s| {
                    s.execute(rusqlite::params![
                        subscription,
                        to_i64(event.tx),
                        to_i64(event.position.get()),
                        event.stream.stream_type().as_str(),
                        event.stream.stream_id().as_str(),
                        to_i64(event.version.get()),
                        &id[..],
                        event.event_type.as_str(),
                        i64::from(event.schema_version),
                        event.codec.as_str(),
                        event.payload,
                        event.timestamp.as_unix_micros(),
                        metadata.text(),
                        tags_blob(&event.tags),
                        error,
                        i64::from(attempts),
                        Timestamp::now().as_unix_micros(),
                        tenant,
                    ])
                })
                .map_err(store_error)?;
                u64::try_from(tx.last_insert_rowid()).map_err(|_| corrupt("negative dead letter id"))
            })
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
        let tenant = self.store.tenant_key();
        self.store
            .workers()
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM eskit_dead_letters \
                         WHERE subscription = ?1 AND id > ?2 AND tenant = ?4 ORDER BY id LIMIT ?3"
                    ))
                    .map_err(store_error)?;
                let rows = stmt
                    .query_map(
                        rusqlite::params![
                            subscription,
                            to_i64(after_id),
                            i64::try_from(limit).unwrap_or(i64::MAX),
                            tenant,
                        ],
                        letter,
                    )
                    .map_err(store_error)?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(r.map_err(store_error)??);
                }
                Ok(out)
            })
            .await
    }

    async fn get(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let tenant = self.store.tenant_key();
        self.store
            .workers()
            .read(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM eskit_dead_letters WHERE id = ?1 AND tenant = ?2"
                ))
                .and_then(|mut s| {
                    s.query_row(rusqlite::params![to_i64(id), tenant], letter)
                        .optional()
                })
                .map_err(store_error)?
                .transpose()
            })
            .await
    }

    async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                tx.prepare_cached("DELETE FROM eskit_dead_letters WHERE id = ?1 AND tenant = ?2")
                    .and_then(|mut s| s.execute(rusqlite::params![to_i64(id), tenant]))
                    .map(|n| n > 0)
                    .map_err(store_error)
            })
            .await
    }
}
