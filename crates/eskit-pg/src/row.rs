//! Decoding stored rows into core types; anything out of shape is
//! [`StoreError::Corrupt`], never a panic.

use eskit_core::error::StoreError;
use eskit_core::event::{
    CodecName, EventHeader, EventId, EventType, GlobalCursor, Position, RawEvent, StreamName, Tag,
    TenantId, Timestamp, Version,
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
    Names::default().event(row, at)
}

/// The names met by the previous rows of one read, so that rows of the
/// same stream, type, codec and tenant share them: a name equal to the
/// previous row's is neither copied out of the row nor validated again
/// (names are shared, cloning one never allocates). A 1,000-event load
/// otherwise allocated and checked six strings per row.
#[derive(Default)]
pub(crate) struct Names {
    stream: Option<StreamName>,
    event_type: Option<EventType>,
    codec: Option<CodecName>,
    tenant: Option<Option<TenantId>>,
}

/// `cached` when it holds `text`, else `make(text)` kept in it.
fn reuse<T: Clone>(
    cached: &mut Option<T>,
    text: &str,
    same: impl Fn(&T, &str) -> bool,
    make: impl FnOnce(&str) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let Some(c) = cached.as_ref()
        && same(c, text)
    {
        return Ok(c.clone());
    }
    let v = make(text)?;
    *cached = Some(v.clone());
    Ok(v)
}

impl Names {
    /// Decodes [`EVENT_COLUMNS`](crate::sql::EVENT_COLUMNS) starting at
    /// column `at`, reusing the names of the previous rows.
    pub(crate) fn event(&mut self, row: &PgRow, at: usize) -> Result<RawEvent, StoreError> {
        let position: i64 = get(row, at)?;
        let tx: &str = get(row, at + 1)?;
        let stream_type: &str = get(row, at + 2)?;
        let stream_id: &str = get(row, at + 3)?;
        let version: i64 = get(row, at + 4)?;
        let id: &[u8] = get(row, at + 5)?;
        let event_type: &str = get(row, at + 6)?;
        let schema_version: i64 = get(row, at + 7)?;
        let codec: &str = get(row, at + 8)?;
        let payload: Vec<u8> = get(row, at + 9)?;
        let recorded_at: i64 = get(row, at + 10)?;
        let metadata: Option<&[u8]> = get(row, at + 11)?;
        let tags: Vec<String> = get(row, at + 12)?;
        let tenant: &str = get(row, at + 13)?;

        let tenant = reuse(
            &mut self.tenant,
            tenant,
            |t, s| t.as_ref().map_or("", TenantId::as_str) == s,
            |s| match s {
                "" => Ok(None),
                t => TenantId::new(t)
                    .map(Some)
                    .map_err(|e| corrupt(format!("stored tenant is invalid: {e}"))),
            },
        )?;
        let stream = match self.stream.as_ref() {
            Some(s)
                if s.stream_type().as_str() == stream_type
                    && s.stream_id().as_str() == stream_id =>
            {
                s.clone()
            }
            _ => {
                let s = StreamName::new(stream_type, stream_id)
                    .map_err(|e| corrupt(format!("stored stream name is invalid: {e}")))?;
                self.stream = Some(s.clone());
                s
            }
        };
        let id: [u8; 16] = id
            .try_into()
            .map_err(|_| corrupt("stored event id is not 16 bytes"))?;
        let event_type = reuse(
            &mut self.event_type,
            event_type,
            |t, s| t.as_str() == s,
            |s| {
                EventType::new(s).map_err(|e| corrupt(format!("stored event type is invalid: {e}")))
            },
        )?;
        let schema_version = u32::try_from(schema_version)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| corrupt("stored schema version is not positive"))?;
        let codec = reuse(
            &mut self.codec,
            codec,
            |c, s| c.as_str() == s,
            |s| {
                CodecName::new(s).map_err(|e| corrupt(format!("stored codec name is invalid: {e}")))
            },
        )?;
        let mut tags = tags
            .iter()
            .map(Tag::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(format!("stored tag is invalid: {e}")))?;
        tags.sort_unstable();
        tags.dedup();
        Ok(RawEvent {
            header: EventHeader {
                id: EventId::from_bytes(id),
                stream,
                version: to_version(version)?,
                position: Position::new(to_u64(position, "position")?),
                tx: parse_tx(tx)?,
                event_type,
                schema_version,
                timestamp: Timestamp::from_unix_micros(recorded_at),
                metadata: meta::decode(metadata)?,
                tags,
                tenant,
            },
            codec,
            payload,
        })
    }
}
