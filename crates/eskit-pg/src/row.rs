//! Decoding stored rows into core types; anything out of shape is
//! [`StoreError::Corrupt`], never a panic.

use eskit_core::error::StoreError;
use eskit_core::event::{
    CodecName, EventHeader, EventId, EventType, GlobalCursor, Position, RawEvent, StreamName, Tag,
    Tags, TenantId, Timestamp, Version,
};
use eskit_core::store::StreamState;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueFormat};
use sqlx::{Column, Row, Type};

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

/// A transaction id sent back as text (the horizon and head columns).
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

/// The object id of PostgreSQL's `xid8`, which sqlx has no type for: its
/// binary form is the 64-bit transaction id, big-endian.
const XID8: Oid = Oid(5069);

/// What one event column holds, as the decoder reads its binary form.
#[derive(Clone, Copy)]
enum Kind {
    Int8,
    Xid8,
    Bytea,
    Text,
    TextArray,
}

impl Kind {
    fn accepts(self, ty: &PgTypeInfo) -> bool {
        match self {
            Self::Int8 => <i64 as Type<sqlx::Postgres>>::compatible(ty),
            Self::Xid8 => ty.oid() == Some(XID8),
            Self::Bytea => <&[u8] as Type<sqlx::Postgres>>::compatible(ty),
            Self::Text => <&str as Type<sqlx::Postgres>>::compatible(ty),
            Self::TextArray => <Vec<String> as Type<sqlx::Postgres>>::compatible(ty),
        }
    }
}

/// The columns of [`LOAD_COLUMNS`](crate::sql::LOAD_COLUMNS), in order.
const LOAD_KINDS: [Kind; 11] = [
    Kind::Int8,
    Kind::Xid8,
    Kind::Int8,
    Kind::Bytea,
    Kind::Text,
    Kind::Int8,
    Kind::Text,
    Kind::Bytea,
    Kind::Int8,
    Kind::Bytea,
    Kind::TextArray,
];

/// The columns [`EVENT_COLUMNS`](crate::sql::EVENT_COLUMNS) adds after
/// [`LOAD_KINDS`]: stream type, stream id, tenant.
const NAME_KINDS: [Kind; 3] = [Kind::Text, Kind::Text, Kind::Text];

/// Checks that the columns from `at` on have the types the decoder reads
/// and come in binary form. All rows of one result share their columns
/// and format, so this runs once per result, on its first row.
fn check_columns(row: &PgRow, at: usize, full: bool) -> Result<(), StoreError> {
    let names: &[Kind] = if full { &NAME_KINDS } else { &[] };
    for (n, kind) in LOAD_KINDS.iter().chain(names).enumerate() {
        let column = row
            .columns()
            .get(at + n)
            .ok_or_else(|| StoreError::internal(format!("an event row lacks column {}", at + n)))?;
        if !kind.accepts(column.type_info()) {
            return Err(corrupt(format!(
                "stored column {} has type {}",
                column.name(),
                column.type_info()
            )));
        }
    }
    let value = row.try_get_raw(at).map_err(store_error)?;
    if value.format() != PgValueFormat::Binary {
        return Err(StoreError::internal("event rows came in text format"));
    }
    Ok(())
}

/// The bytes of column `i` of `row`; `None` when SQL `NULL`.
fn raw(row: &PgRow, i: usize) -> Result<Option<&[u8]>, StoreError> {
    let value = row.try_get_raw(i).map_err(store_error)?;
    // `as_bytes` fails only on `NULL`.
    Ok(value.as_bytes().ok())
}

/// The bytes of column `i`, which must not be `NULL`.
fn bytes<'r>(row: &'r PgRow, i: usize, what: &str) -> Result<&'r [u8], StoreError> {
    raw(row, i)?.ok_or_else(|| corrupt(format!("stored {what} is null")))
}

/// A binary `int8` or `xid8` (both 8 bytes, big-endian).
fn int8(row: &PgRow, i: usize, what: &str) -> Result<i64, StoreError> {
    let b: [u8; 8] = bytes(row, i, what)?
        .try_into()
        .map_err(|_| corrupt(format!("stored {what} is not 8 bytes")))?;
    Ok(i64::from_be_bytes(b))
}

fn utf8<'r>(b: &'r [u8], what: &str) -> Result<&'r str, StoreError> {
    std::str::from_utf8(b).map_err(|_| corrupt(format!("stored {what} is not UTF-8")))
}

/// Decodes [`EVENT_COLUMNS`](crate::sql::EVENT_COLUMNS) starting at column `at`.
pub(crate) fn event(row: &PgRow, at: usize) -> Result<RawEvent, StoreError> {
    Names::default().event(row, at)
}

/// The names met by the previous rows of one result, so that rows of the
/// same stream, type, codec, tenant and tags share them: a value whose
/// bytes equal the previous row's is neither copied out of the row nor
/// validated again (names are shared, cloning one never allocates). A
/// 1,000-event load otherwise allocated and checked six strings per row.
/// One `Names` decodes the rows of one result only: the column types are
/// checked on its first row.
#[derive(Default)]
pub(crate) struct Names {
    checked: bool,
    stream: Option<StreamName>,
    event_type: Option<EventType>,
    codec: Option<CodecName>,
    tenant: Option<Option<TenantId>>,
    tags: Option<(Vec<u8>, Tags)>,
}

/// `cached` when its text has the bytes `raw`, else `make(raw as text)`
/// kept in it.
fn reuse<T: Clone>(
    cached: &mut Option<T>,
    raw: &[u8],
    what: &str,
    text: impl Fn(&T) -> &str,
    make: impl FnOnce(&str) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let Some(c) = cached.as_ref()
        && text(c).as_bytes() == raw
    {
        return Ok(c.clone());
    }
    let v = make(utf8(raw, what)?)?;
    *cached = Some(v.clone());
    Ok(v)
}

/// The elements of a binary one-dimensional `text[]` without `NULL`s (the
/// only shape the store writes); anything else is corrupt. Allocates
/// nothing for an empty array.
fn text_array(b: &[u8]) -> Result<Vec<&str>, StoreError> {
    fn int4(b: &[u8], at: usize) -> Result<i32, StoreError> {
        b.get(at..at + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(i32::from_be_bytes)
            .ok_or_else(|| corrupt("stored tags are cut short"))
    }
    match int4(b, 0)? {
        0 => return Ok(Vec::new()),
        1 => {}
        _ => return Err(corrupt("stored tags are not a one-dimensional array")),
    }
    // Header: dimensions, null flag, element type, then length and lower
    // bound of the one dimension.
    if int4(b, 4)? != 0 {
        return Err(corrupt("stored tags hold a null"));
    }
    let len = usize::try_from(int4(b, 12)?).map_err(|_| corrupt("stored tags are malformed"))?;
    let mut at = 20;
    let mut out = Vec::with_capacity(len.min(eskit_core::limits::MAX_TAGS_PER_EVENT));
    for _ in 0..len {
        let n = usize::try_from(int4(b, at)?).map_err(|_| corrupt("stored tags hold a null"))?;
        let s = b
            .get(at + 4..at + 4 + n)
            .ok_or_else(|| corrupt("stored tags are cut short"))?;
        out.push(utf8(s, "tag")?);
        at += 4 + n;
    }
    if at != b.len() {
        return Err(corrupt("stored tags are malformed"));
    }
    Ok(out)
}

impl Names {
    /// Names for the rows of one stream's load, of `tenant`, decoded with
    /// [`Names::loaded`].
    pub(crate) fn of_stream(stream: StreamName, tenant: Option<TenantId>) -> Self {
        Self {
            stream: Some(stream),
            tenant: Some(tenant),
            ..Self::default()
        }
    }

    /// Decodes [`EVENT_COLUMNS`](crate::sql::EVENT_COLUMNS) starting at
    /// column `at`, reusing the names of the previous rows.
    pub(crate) fn event(&mut self, row: &PgRow, at: usize) -> Result<RawEvent, StoreError> {
        if !self.checked {
            check_columns(row, at, true)?;
            self.checked = true;
        }
        let n = at + LOAD_KINDS.len();
        let stream_type = bytes(row, n, "stream type")?;
        let stream_id = bytes(row, n + 1, "stream id")?;
        let tenant = bytes(row, n + 2, "tenant")?;
        let tenant = reuse(
            &mut self.tenant,
            tenant,
            "tenant",
            |t| t.as_ref().map_or("", TenantId::as_str),
            |s| match s {
                "" => Ok(None),
                t => TenantId::new(t)
                    .map(Some)
                    .map_err(|e| corrupt(format!("stored tenant is invalid: {e}"))),
            },
        )?;
        let stream = match self.stream.as_ref() {
            Some(s)
                if s.stream_type().as_str().as_bytes() == stream_type
                    && s.stream_id().as_str().as_bytes() == stream_id =>
            {
                s.clone()
            }
            _ => {
                let s = StreamName::new(
                    utf8(stream_type, "stream type")?,
                    utf8(stream_id, "stream id")?,
                )
                .map_err(|e| corrupt(format!("stored stream name is invalid: {e}")))?;
                self.stream = Some(s.clone());
                s
            }
        };
        self.common(row, at, stream, tenant)
    }

    /// Decodes [`LOAD_COLUMNS`](crate::sql::LOAD_COLUMNS) starting at
    /// column `at`: rows of the stream and tenant given to
    /// [`Names::of_stream`] (the statement selected only those).
    pub(crate) fn loaded(&mut self, row: &PgRow, at: usize) -> Result<RawEvent, StoreError> {
        if !self.checked {
            check_columns(row, at, false)?;
            self.checked = true;
        }
        let (Some(stream), Some(tenant)) = (self.stream.clone(), self.tenant.clone()) else {
            return Err(StoreError::internal("a load decoded rows of no stream"));
        };
        self.common(row, at, stream, tenant)
    }

    /// The columns every event row has, in [`LOAD_KINDS`]' order.
    fn common(
        &mut self,
        row: &PgRow,
        at: usize,
        stream: StreamName,
        tenant: Option<TenantId>,
    ) -> Result<RawEvent, StoreError> {
        let position = int8(row, at, "position")?;
        let tx = int8(row, at + 1, "transaction id")?;
        let version = int8(row, at + 2, "stream version")?;
        let id: [u8; 16] = bytes(row, at + 3, "event id")?
            .try_into()
            .map_err(|_| corrupt("stored event id is not 16 bytes"))?;
        let event_type = reuse(
            &mut self.event_type,
            bytes(row, at + 4, "event type")?,
            "event type",
            EventType::as_str,
            |s| {
                EventType::new(s).map_err(|e| corrupt(format!("stored event type is invalid: {e}")))
            },
        )?;
        let schema_version = u32::try_from(int8(row, at + 5, "schema version")?)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| corrupt("stored schema version is not positive"))?;
        let codec = reuse(
            &mut self.codec,
            bytes(row, at + 6, "codec name")?,
            "codec name",
            CodecName::as_str,
            |s| {
                CodecName::new(s).map_err(|e| corrupt(format!("stored codec name is invalid: {e}")))
            },
        )?;
        let payload = bytes(row, at + 7, "payload")?.to_vec();
        let recorded_at = int8(row, at + 8, "recording time")?;
        let metadata = raw(row, at + 9)?;
        // The column is `NOT NULL`: the statements send an empty array as
        // `NULL` (see `LOAD_COLUMNS`).
        let tags = match raw(row, at + 10)? {
            Some(b) => self.tags(b)?,
            None => Tags::new(),
        };
        Ok(RawEvent {
            header: EventHeader {
                id: EventId::from_bytes(id),
                stream,
                version: to_version(version)?,
                position: Position::new(to_u64(position, "position")?),
                // The binary form is unsigned; no stored id reaches 2^63.
                tx: to_u64(tx, "transaction id")?,
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

    /// The tags of a binary `text[]`: the previous row's when the bytes
    /// are the same, checked, sorted and deduplicated otherwise.
    fn tags(&mut self, b: &[u8]) -> Result<Tags, StoreError> {
        if let Some((last, tags)) = &self.tags
            && last.as_slice() == b
        {
            return Ok(tags.clone());
        }
        let mut tags = text_array(b)?
            .into_iter()
            .map(Tag::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(format!("stored tag is invalid: {e}")))?;
        tags.sort_unstable();
        tags.dedup();
        let tags = Tags::from(tags);
        if !tags.is_empty() {
            self.tags = Some((b.to_vec(), tags.clone()));
        }
        Ok(tags)
    }
}
