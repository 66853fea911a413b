//! Turning stored rows into events, defensively, and the row checksum.
//!
//! **Invariant**: no event leaves this module unless its checksum matches and
//! every field parses; anything else is [`StoreError::Corrupt`].

use eskit_core::{
    EventId, EventType, Metadata, NewEvent, Position, Principal, PrincipalKind, RawEvent,
    StoreError, Stream, Timestamp, Version,
};
use rusqlite::Row;

use crate::error::{corrupt, store_error};

/// The event columns, in the order [`decode_event`] reads them (from index 0).
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.version, e.event_id, e.event_type, \
    e.schema_version, e.codec, e.payload, e.timestamp, e.metadata, e.checksum";

/// Number of columns in [`EVENT_COLUMNS`].
pub(crate) const EVENT_COLUMN_COUNT: usize = 10;

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

/// Hex digit values, `0xFF` for anything that is not a hex digit.
const HEX: [u8; 256] = {
    let mut t = [0xFF_u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parses the hyphenated form this crate stores, without allocating: two
/// table lookups per byte of the id, on the read path of every event.
fn parse_event_id(s: &str) -> Option<EventId> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut o = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            i += 1;
            continue;
        }
        let hi = HEX[b[i] as usize];
        let lo = HEX[b[i + 1] as usize];
        if (hi | lo) == 0xFF || hi > 15 || lo > 15 {
            return None;
        }
        out[o] = (hi << 4) | lo;
        o += 1;
        i += 2;
    }
    Some(EventId::from_bytes(out))
}

/// The stored form of one event's metadata: a JSON object in one `TEXT`
/// column (queryable with SQLite's `json_extract`), `NULL` when empty.
pub(crate) struct StoredMetadata(pub(crate) Option<String>);

fn principal_json(p: &Principal) -> serde_json::Value {
    serde_json::json!({ "kind": p.kind().as_str(), "id": p.id() })
}

impl StoredMetadata {
    pub(crate) fn of(m: &Metadata) -> Result<Self, StoreError> {
        if m.is_empty() {
            return Ok(Self(None));
        }
        let mut o = serde_json::Map::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                o.insert(k.to_owned(), v.into());
            }
        };
        put("correlation_id", m.correlation_id());
        put("causation_id", m.causation_id());
        put("idempotency_key", m.idempotency_key());
        if let Some(p) = m.initiator() {
            o.insert("initiator".into(), principal_json(p));
        }
        if let Some(p) = m.originator() {
            o.insert("originator".into(), principal_json(p));
        }
        if !m.extra().is_empty() {
            let extra = m
                .extra()
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                .collect();
            o.insert("extra".into(), serde_json::Value::Object(extra));
        }
        serde_json::to_string(&o)
            .map(|s| Self(Some(s)))
            .map_err(StoreError::backend)
    }

    /// The stored text, as the checksum sees it.
    pub(crate) fn text(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// Buffers reused across the rows of one read: the checksum scratch, and
/// the last event type seen, so runs of one type share one allocation.
#[derive(Default)]
pub(crate) struct Scratch {
    buf: Vec<u8>,
    last_type: Option<EventType>,
}

impl Scratch {
    fn event_type(&mut self, name: &str) -> Option<EventType> {
        match &self.last_type {
            Some(t) if t.as_str() == name => Some(t.clone()),
            _ => {
                let t = EventType::new(name).ok()?;
                self.last_type = Some(t.clone());
                Some(t)
            }
        }
    }
}

/// Parses stored metadata; anything but the shape [`StoredMetadata::of`]
/// writes is `None`.
fn parse_metadata(text: &str) -> Option<Metadata> {
    use serde_json::Value;
    let Value::Object(o) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let principal = |v: &Value| -> Option<Principal> {
        let Value::Object(p) = v else { return None };
        if p.len() != 2 {
            return None;
        }
        Some(Principal::new(
            PrincipalKind::parse(p.get("kind")?.as_str()?),
            p.get("id")?.as_str()?,
        ))
    };
    let mut m = Metadata::new();
    for (k, v) in &o {
        m = match k.as_str() {
            "correlation_id" => m.with_correlation_id(v.as_str()?),
            "causation_id" => m.with_causation_id(v.as_str()?),
            "idempotency_key" => m.with_idempotency_key(v.as_str()?),
            "initiator" => m.with_initiator(principal(v)?),
            "originator" => m.with_originator(principal(v)?),
            "extra" => {
                let Value::Object(extra) = v else { return None };
                let mut m = m;
                for (k, v) in extra {
                    m = m.with_extra(k.clone(), v.as_str()?);
                }
                m
            }
            _ => return None,
        };
    }
    Some(m)
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
    meta: Option<&str>,
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
    c.opt(meta);
    c.finish(payload)
}

/// Decodes one row selected with [`EVENT_COLUMNS`] belonging to `stream`.
/// `scratch` is a buffer reused across rows for the checksum.
pub(crate) fn decode_event(
    row: &Row<'_>,
    stream: &Stream,
    scratch: &mut Scratch,
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
    let metadata_text: Option<&str> = row
        .get_ref(8)
        .and_then(|v| Ok(v.as_str_or_null()?))
        .map_err(store_error)?;
    let checksum: i64 = row.get(9).map_err(store_error)?;
    let expected = event_checksum(
        &mut scratch.buf,
        position,
        stream,
        version,
        event_id,
        event_type,
        schema_version,
        codec,
        payload,
        timestamp,
        metadata_text,
    );
    if checksum != expected {
        return Err(corrupt(format!(
            "checksum mismatch for the event at position {position}"
        )));
    }
    let bad = |what: &str| corrupt(format!("invalid {what} at position {position}"));
    let metadata = match metadata_text {
        None => Metadata::new(),
        Some(t) => parse_metadata(t).ok_or_else(|| bad("metadata"))?,
    };
    let to_u64 = |v: i64, what: &str| u64::try_from(v).map_err(|_| bad(what));
    Ok(RawEvent {
        id: parse_event_id(event_id).ok_or_else(|| bad("event id"))?,
        stream: stream.clone(),
        version: Version::new(to_u64(version, "version")?),
        position: Position::new(to_u64(position, "position")?),
        event_type: scratch
            .event_type(event_type)
            .ok_or_else(|| bad("event type"))?,
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
    fn event_ids_parse_back_and_garbage_is_refused() {
        for _ in 0..1000 {
            let id = EventId::new();
            assert_eq!(parse_event_id(&id.to_string()), Some(id));
            assert_eq!(parse_event_id(&id.to_string().to_uppercase()), Some(id));
        }
        for bad in [
            "",
            "0192f4e1-7a00-7000-8000-00000000000g",
            "0192f4e1x7a00-7000-8000-000000000001",
            "0192f4e1-7a00-7000-8000-0000000000011",
            "0192f4e1-7a00-7000-8000-00000000000\u{e9}",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn metadata_round_trips_and_garbage_is_refused() -> Result<(), StoreError> {
        let m = Metadata::new_chain(Principal::user("ada"))
            .with_causation_id("c")
            .with_idempotency_key("k")
            .with_extra("a", "\"quoted\"\n\u{0}");
        let text = StoredMetadata::of(&m)?.0.unwrap_or_default();
        assert_eq!(parse_metadata(&text), Some(m));
        assert!(StoredMetadata::of(&Metadata::new())?.0.is_none());
        for bad in [
            "",
            "{",
            "[]",
            "null",
            "1e999",
            "{\"correlation_id\":1}",
            "{\"unknown\":\"x\"}",
            "{\"initiator\":{\"kind\":\"user\"}}",
            "{\"initiator\":{\"kind\":\"user\",\"id\":\"a\",\"x\":1}}",
            "{\"extra\":{\"a\":NaN}}",
            "{\"extra\":[1]}",
            "{\"extra\":{\"a\":{}}}",
            "\u{0}",
        ] {
            assert_eq!(parse_metadata(bad), None, "{bad}");
        }
        let deep = "[".repeat(100_000);
        assert_eq!(parse_metadata(&deep), None);
        Ok(())
    }

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
