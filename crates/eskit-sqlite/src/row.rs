//! Turning stored rows into events, defensively, and the row checksum.
//!
//! **Invariant**: no event leaves this module unless its checksum matches and
//! every field parses; anything else is [`StoreError::Corrupt`].

use eskit_core::{
    EventId, Metadata, NewEvent, Position, Principal, PrincipalKind, RawEvent, StoreError, Stream,
    Timestamp, Version,
};
use rusqlite::{Connection, Row};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use crate::error::{corrupt, store_error};
use crate::kinds::KindReader;

/// The event columns, in the order [`decode_event`] reads them (from index 0).
pub(crate) const EVENT_COLUMNS: &str =
    "e.position, e.version, e.event_id, e.kind, e.payload, e.timestamp, e.metadata, e.checksum";

/// Number of columns in [`EVENT_COLUMNS`].
pub(crate) const EVENT_COLUMN_COUNT: usize = 8;

/// Tails up to this size are copied next to the small fields and hashed in
/// one call; longer ones are streamed, without a copy. Both give the same sum.
const INLINE_TAIL: usize = 4096;

/// An XXH3-64 over a length-prefixed encoding of every field, so that a
/// value moved between fields changes the sum too. The small fields are
/// gathered in a reused buffer; the large one (payload or snapshot state)
/// comes last.
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

    /// The sum over the gathered fields followed by `tail` with its length,
    /// as the bits of an SQLite integer.
    pub(crate) fn finish(&mut self, tail: &[u8]) -> i64 {
        self.buf
            .extend_from_slice(&(tail.len() as u64).to_le_bytes());
        let sum = if tail.len() <= INLINE_TAIL {
            self.buf.extend_from_slice(tail);
            xxh3_64(self.buf)
        } else {
            let mut h = Xxh3Default::new();
            h.update(self.buf);
            h.update(tail);
            h.digest()
        };
        i64::from_le_bytes(sum.to_le_bytes())
    }
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

/// What one read reuses across its rows: the checksum buffer and the kinds
/// it has met.
pub(crate) struct Scratch<'a> {
    buf: Vec<u8>,
    kinds: KindReader<'a>,
}

impl<'a> Scratch<'a> {
    pub(crate) fn new(kinds: KindReader<'a>) -> Self {
        Self {
            buf: Vec::new(),
            kinds,
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
    event_id: &[u8; 16],
    event_type: &str,
    schema_version: u32,
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
        .bytes(event_id)
        .bytes(event_type.as_bytes())
        .int(i64::from(schema_version))
        .bytes(codec.as_bytes())
        .int(timestamp);
    c.opt(meta);
    c.finish(payload)
}

/// Decodes one row selected with [`EVENT_COLUMNS`] belonging to `stream`,
/// read through `conn` (which resolves kinds the scratch has not met).
pub(crate) fn decode_event(
    conn: &Connection,
    row: &Row<'_>,
    stream: &Stream,
    scratch: &mut Scratch<'_>,
) -> Result<RawEvent, StoreError> {
    let position: i64 = row.get(0).map_err(store_error)?;
    let version: i64 = row.get(1).map_err(store_error)?;
    let event_id: &[u8] = row
        .get_ref(2)
        .and_then(|v| Ok(v.as_blob()?))
        .map_err(store_error)?;
    let kind: i64 = row.get(3).map_err(store_error)?;
    let payload: &[u8] = row
        .get_ref(4)
        .and_then(|v| Ok(v.as_blob()?))
        .map_err(store_error)?;
    let timestamp: i64 = row.get(5).map_err(store_error)?;
    let metadata_text: Option<&str> = row
        .get_ref(6)
        .and_then(|v| Ok(v.as_str_or_null()?))
        .map_err(store_error)?;
    let checksum: i64 = row.get(7).map_err(store_error)?;
    let bad = |what: &str| corrupt(format!("invalid {what} at position {position}"));
    let event_id: [u8; 16] = event_id.try_into().map_err(|_| bad("event id"))?;
    let kind = scratch.kinds.resolve(conn, kind)?;
    let expected = event_checksum(
        &mut scratch.buf,
        position,
        stream,
        version,
        &event_id,
        kind.event_type.as_str(),
        kind.schema_version,
        kind.codec.as_str(),
        payload,
        timestamp,
        metadata_text,
    );
    if checksum != expected {
        return Err(corrupt(format!(
            "checksum mismatch for the event at position {position}"
        )));
    }
    let metadata = match metadata_text {
        None => Metadata::new(),
        Some(t) => parse_metadata(t).ok_or_else(|| bad("metadata"))?,
    };
    let to_u64 = |v: i64, what: &str| u64::try_from(v).map_err(|_| bad(what));
    Ok(RawEvent {
        id: EventId::from_bytes(event_id),
        stream: stream.clone(),
        version: Version::new(to_u64(version, "version")?),
        position: Position::new(to_u64(position, "position")?),
        event_type: kind.event_type.clone(),
        schema_version: kind.schema_version,
        timestamp: Timestamp::from_unix_micros(timestamp),
        metadata,
        codec: kind.codec.clone(),
        payload: payload.to_vec(),
    })
}

/// Whether a stored event carries the same content as a retried one.
pub(crate) fn same_content(stored: &RawEvent, new: &NewEvent) -> bool {
    stored.event_type == *new.event_type()
        && stored.schema_version == new.schema_version()
        && stored.codec.as_str() == new.codec()
        && stored.payload == new.payload()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
