//! Decoding stored rows into core types; anything out of shape is
//! [`StoreError::Corrupt`], never a panic.

use eskit_core::error::StoreError;
use eskit_core::event::{
    EventId, EventType, GlobalCursor, NewEvent, Position, RawEvent, StreamName, Tag, TenantId,
    Timestamp, Version,
};
use eskit_core::store::StreamState;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{corrupt, store_error};
use crate::meta;

pub(crate) const STATE_ACTIVE: i16 = 1;
pub(crate) const STATE_ARCHIVED: i16 = 2;
pub(crate) const STATE_TOMBSTONED: i16 = 3;
pub(crate) const STATE_DELETED: i16 = 4;

pub(crate) fn state_of(code: i16) -> Result<StreamState, StoreError> {
    match code {
        STATE_ACTIVE => Ok(StreamState::Active),
        STATE_ARCHIVED => Ok(StreamState::Archived),
        STATE_TOMBSTONED => Ok(StreamState::Tombstoned),
        STATE_DELETED => Ok(StreamState::Deleted),
        other => Err(corrupt(format!("unknown stream state {other}"))),
    }
}

pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(format!("negative {what} {v}")))
}

pub(crate) fn to_version(v: i64) -> Result<Version, StoreError> {
    to_u64(v, "stream version").map(Version::new)
}

/// A bind value for a position or version: values above `i64::MAX` (which
/// no stored row reaches) become `i64::MAX`.
pub(crate) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A transaction id sent back as text (`xid8` has no binary decoder here).
pub(crate) fn parse_tx(text: &str) -> Result<u64, StoreError> {
    text.parse()
        .map_err(|_| corrupt("a transaction id is not a number"))
}

/// The cursor of a `(tx::text, position)` pair.
pub(crate) fn cursor_of(tx: &str, position: i64) -> Result<GlobalCursor, StoreError> {
    Ok(GlobalCursor::new(
        parse_tx(tx)?,
        Position::new(to_u64(position, "position")?),
    ))
}

fn get<'r, T>(row: &'r PgRow, i: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(i).map_err(store_error)
}

/// Decodes [`EVENT_COLUMNS`](crate::sql::EVENT_COLUMNS) starting at column `at`.
pub(crate) fn event(row: &PgRow, at: usize) -> Result<RawEvent, StoreError> {
    let position: i64 = get(row, at)?;
    let tx: String = get(row, at + 1)?;
    let stream_type: String = get(row, at + 2)?;
    let stream_id: String = get(row, at + 3)?;
    let version: i64 = get(row, at + 4)?;
    let id: Vec<u8> = get(row, at + 5)?;
    let event_type: String = get(row, at + 6)?;
    let schema_version: i64 = get(row, at + 7)?;
    let codec: String = get(row, at + 8)?;
    let payload: Vec<u8> = get(row, at + 9)?;
    let recorded_at: i64 = get(row, at + 10)?;
    let metadata: Option<Vec<u8>> = get(row, at + 11)?;
    let tags: Vec<String> = get(row, at + 12)?;
    let tenant: String = get(row, at + 13)?;
    let tenant = match tenant.as_str() {
        "" => None,
        t => Some(TenantId::new(t).map_err(|e| corrupt(format!("stored tenant is invalid: {e}")))?),
    };

    let stream = StreamName::new(&stream_type, &stream_id)
        .map_err(|e| corrupt(format!("stored stream name is invalid: {e}")))?;
    let id: [u8; 16] = id
        .try_into()
        .map_err(|_| corrupt("stored event id is not 16 bytes"))?;
    let event_type = EventType::new(&event_type)
        .map_err(|e| corrupt(format!("stored event type is invalid: {e}")))?;
    let schema_version = u32::try_from(schema_version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt("stored schema version is not positive"))?;
    eskit_core::backend::validate_name(eskit_core::event::NameKind::Codec, &codec)
        .map_err(|e| corrupt(format!("stored codec name is invalid: {e}")))?;
    let tags = tags
        .iter()
        .map(Tag::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(format!("stored tag is invalid: {e}")))?;
    let new = NewEvent::new(event_type, payload)
        .with_id(EventId::from_bytes(id))
        .with_schema_version(schema_version)
        .with_codec(codec)
        .with_tags(tags);
    Ok(RawEvent::from_new(
        new,
        stream,
        to_version(version)?,
        Position::new(to_u64(position, "position")?),
        Timestamp::from_unix_micros(recorded_at),
        meta::decode(metadata.as_deref())?,
    )
    .with_tx(parse_tx(&tx)?)
    .with_tenant(tenant))
}
