//! Turning stored rows into events, defensively, and the row checksum.
//!
//! **Invariant**: no event leaves this module unless its checksum matches and
//! every field parses; anything else is [`StoreError::Corrupt`].

use std::collections::BTreeMap;

use eskit_core::{
    EventId, EventType, Metadata, NewEvent, Position, Principal, PrincipalKind, RawEvent,
    StoreError, Stream, Timestamp, Version,
};
use rusqlite::Row;

use crate::error::{corrupt, store_error};

/// The event columns, in the order [`decode_event`] reads them (from index 0).
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.version, e.event_id, e.event_type, \
    e.schema_version, e.codec, e.payload, e.timestamp, e.correlation_id, e.causation_id, \
    e.initiator_kind, e.initiator_id, e.originator_kind, e.originator_id, e.idempotency_key, \
    e.extra, e.checksum";

/// Number of columns in [`EVENT_COLUMNS`].
pub(crate) const EVENT_COLUMN_COUNT: usize = 17;

/// A CRC-32 over a length-prefixed encoding of every field, so that a value
/// moved between fields changes the sum too. The small fields are gathered
/// in a reused buffer and hashed in one call; the large one (payload or
/// snapshot state) is hashed last, without copying.
pub(crate) struct Checksum<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Checksum<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.clear();
        Self { buf }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.buf.extend_from_slice(b);
        self
    }

    pub(crate) fn int(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn opt(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.buf.push(0),
            Some(s) => {
                self.buf.push(1);
                self.bytes(s.as_bytes());
            }
        }
        self
    }

    /// The sum over the gathered fields followed by `tail` with its length.
    pub(crate) fn finish(&mut self, tail: &[u8]) -> i64 {
        self.buf
            .extend_from_slice(&(tail.len() as u64).to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(self.buf);
        h.update(tail);
        i64::from(h.finalize())
    }
}

/// Parses the hyphenated form this crate stores, without allocating.
fn parse_event_id(s: &str) -> Option<EventId> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(EventId::from_u128(v))
}

/// The stored form of one event's metadata.
pub(crate) struct StoredMetadata<'a> {
    pub(crate) correlation_id: Option<&'a str>,
    pub(crate) causation_id: Option<&'a str>,
    pub(crate) initiator_kind: Option<&'a str>,
    pub(crate) initiator_id: Option<&'a str>,
    pub(crate) originator_kind: Option<&'a str>,
    pub(crate) originator_id: Option<&'a str>,
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) extra: Option<String>,
}

impl<'a> StoredMetadata<'a> {
    pub(crate) fn of(m: &'a Metadata) -> Result<Self, StoreError> {
        let extra = if m.extra().is_empty() {
            None
        } else {
            Some(serde_json::to_string(m.extra()).map_err(StoreError::backend)?)
        };
        Ok(Self {
            correlation_id: m.correlation_id(),
            causation_id: m.causation_id(),
            initiator_kind: m.initiator().map(|p| p.kind().as_str()),
            initiator_id: m.initiator().map(Principal::id),
            originator_kind: m.originator().map(|p| p.kind().as_str()),
            originator_id: m.originator().map(Principal::id),
            idempotency_key: m.idempotency_key(),
            extra,
        })
    }

    fn hash(&self, c: &mut Checksum<'_>) {
        c.opt(self.correlation_id)
            .opt(self.causation_id)
            .opt(self.initiator_kind)
            .opt(self.initiator_id)
            .opt(self.originator_kind)
            .opt(self.originator_id)
            .opt(self.idempotency_key)
            .opt(self.extra.as_deref());
    }
}

/// The checksum of an event row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn event_checksum(
    scratch: &mut Vec<u8>,
    position: i64,
    stream: &Stream,
    version: i64,
    event_id: &str,
    event_type: &str,
    schema_version: i64,
    codec: &str,
    payload: &[u8],
    timestamp: i64,
    meta: &StoredMetadata<'_>,
) -> i64 {
    let mut c = Checksum::new(scratch);
    c.int(position)
        .bytes(stream.stream_type().as_str().as_bytes())
        .bytes(stream.stream_id().as_str().as_bytes())
        .int(version)
        .bytes(event_id.as_bytes())
        .bytes(event_type.as_bytes())
        .int(schema_version)
        .bytes(codec.as_bytes())
        .int(timestamp);
    meta.hash(&mut c);
    c.finish(payload)
}

fn principal(kind: Option<&str>, id: Option<&str>) -> Result<Option<Principal>, StoreError> {
    match (kind, id) {
        (None, None) => Ok(None),
        (Some(k), Some(i)) => Ok(Some(Principal::new(PrincipalKind::parse(k), i))),
        _ => Err(corrupt("principal kind without id")),
    }
}

/// Decodes one row selected with [`EVENT_COLUMNS`] belonging to `stream`.
/// `scratch` is a buffer reused across rows for the checksum.
pub(crate) fn decode_event(
    row: &Row<'_>,
    stream: &Stream,
    scratch: &mut Vec<u8>,
) -> Result<RawEvent, StoreError> {
    let position: i64 = row.get(0).map_err(store_error)?;
    let version: i64 = row.get(1).map_err(store_error)?;
    let event_id: &str = row
        .get_ref(2)
        .and_then(|v| Ok(v.as_str()?))
        .map_err(store_error)?;
    let event_type: &str = row
        .get_ref(3)
        .and_then(|v| Ok(v.as_str()?))
        .map_err(store_error)?;
    let schema_version: i64 = row.get(4).map_err(store_error)?;
    let codec: &str = row
        .get_ref(5)
        .and_then(|v| Ok(v.as_str()?))
        .map_err(store_error)?;
    let payload: &[u8] = row
        .get_ref(6)
        .and_then(|v| Ok(v.as_blob()?))
        .map_err(store_error)?;
    let timestamp: i64 = row.get(7).map_err(store_error)?;
    let opt = |i: usize| -> Result<Option<&str>, StoreError> {
        row.get_ref(i)
            .and_then(|v| Ok(v.as_str_or_null()?))
            .map_err(store_error)
    };
    let meta = StoredMetadata {
        correlation_id: opt(8)?,
        causation_id: opt(9)?,
        initiator_kind: opt(10)?,
        initiator_id: opt(11)?,
        originator_kind: opt(12)?,
        originator_id: opt(13)?,
        idempotency_key: opt(14)?,
        extra: opt(15)?.map(str::to_owned),
    };
    let checksum: i64 = row.get(16).map_err(store_error)?;
    let expected = event_checksum(
        scratch,
        position,
        stream,
        version,
        event_id,
        event_type,
        schema_version,
        codec,
        payload,
        timestamp,
        &meta,
    );
    if checksum != expected {
        return Err(corrupt(format!(
            "checksum mismatch for the event at position {position}"
        )));
    }
    let bad = |what: &str| corrupt(format!("invalid {what} at position {position}"));
    let mut metadata = Metadata::new();
    if let Some(v) = meta.correlation_id {
        metadata = metadata.with_correlation_id(v);
    }
    if let Some(v) = meta.causation_id {
        metadata = metadata.with_causation_id(v);
    }
    if let Some(p) = principal(meta.initiator_kind, meta.initiator_id)? {
        metadata = metadata.with_initiator(p);
    }
    if let Some(p) = principal(meta.originator_kind, meta.originator_id)? {
        metadata = metadata.with_originator(p);
    }
    if let Some(v) = meta.idempotency_key {
        metadata = metadata.with_idempotency_key(v);
    }
    if let Some(extra) = &meta.extra {
        let map: BTreeMap<String, String> =
            serde_json::from_str(extra).map_err(|_| bad("metadata"))?;
        for (k, v) in map {
            metadata = metadata.with_extra(k, v);
        }
    }
    let to_u64 = |v: i64, what: &str| u64::try_from(v).map_err(|_| bad(what));
    Ok(RawEvent {
        id: parse_event_id(event_id).ok_or_else(|| bad("event id"))?,
        stream: stream.clone(),
        version: Version::new(to_u64(version, "version")?),
        position: Position::new(to_u64(position, "position")?),
        event_type: EventType::new(event_type).map_err(|_| bad("event type"))?,
        schema_version: u32::try_from(schema_version)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| bad("schema version"))?,
        timestamp: Timestamp::from_unix_micros(timestamp),
        metadata,
        codec: codec.to_owned(),
        payload: payload.to_vec(),
    })
}

/// Whether a stored event carries the same content as a retried one.
pub(crate) fn same_content(stored: &RawEvent, new: &NewEvent) -> bool {
    stored.event_type == *new.event_type()
        && stored.schema_version == new.schema_version()
        && stored.codec == new.codec()
        && stored.payload == new.payload()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_parse_like_the_core() {
        for _ in 0..1000 {
            let id = EventId::new();
            assert_eq!(parse_event_id(&id.to_string()), Some(id));
        }
        let upper = "0192F4E1-7A00-7000-8000-00000000000A";
        assert_eq!(parse_event_id(upper), upper.parse().ok());
        for bad in [
            "",
            "0192f4e1-7a00-7000-8000-00000000000",
            "0192f4e1x7a00-7000-8000-000000000001",
            "0192f4e1-7a00-7000-8000-00000000000g",
            "0192f4e1-7a00-7000-8000-0000000000\u{e9}",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }
}
