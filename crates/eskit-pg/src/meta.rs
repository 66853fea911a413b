//! Metadata as stored: a JSON object in a `bytea` column, `NULL` when empty.

use eskit_core::error::StoreError;
use eskit_core::event::{Metadata, Principal, PrincipalKind};
use serde_json::{Map, Value};

use crate::error::corrupt;

fn principal(p: &Principal) -> Value {
    let mut o = Map::new();
    o.insert("kind".into(), p.kind().as_str().into());
    o.insert("id".into(), p.id().into());
    Value::Object(o)
}

/// The stored form of `m`; `None` for empty metadata.
pub(crate) fn encode(m: &Metadata) -> Option<Vec<u8>> {
    if m.is_empty() {
        return None;
    }
    let mut o = Map::new();
    let mut text = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            o.insert(k.to_owned(), v.into());
        }
    };
    text("correlation_id", m.correlation_id());
    text("causation_id", m.causation_id());
    text("idempotency_key", m.idempotency_key());
    if let Some(p) = m.initiator() {
        o.insert("initiator".into(), principal(p));
    }
    if let Some(p) = m.originator() {
        o.insert("originator".into(), principal(p));
    }
    if !m.extra().is_empty() {
        let extra: Map<String, Value> = m
            .extra()
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        o.insert("extra".into(), Value::Object(extra));
    }
    // A map of strings always serializes.
    serde_json::to_vec(&Value::Object(o)).ok()
}

/// Parses stored metadata; anything but the shape [`encode`] writes is
/// [`StoreError::Corrupt`].
pub(crate) fn decode(bytes: Option<&[u8]>) -> Result<Metadata, StoreError> {
    let Some(bytes) = bytes else {
        return Ok(Metadata::new());
    };
    parse(bytes).ok_or_else(|| corrupt("stored metadata is not in the expected shape"))
}

fn parse(bytes: &[u8]) -> Option<Metadata> {
    let Value::Object(o) = serde_json::from_slice::<Value>(bytes).ok()? else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_shapes() {
        let m = Metadata::new_chain(Principal::user("ada"))
            .with_causation_id("c")
            .with_idempotency_key("k")
            .with_extra("a", "\"q\"\n\u{0}");
        let bytes = encode(&m);
        assert_eq!(decode(bytes.as_deref()).ok(), Some(m));
        assert_eq!(encode(&Metadata::new()), None);
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            b"{\"x\":\"y\"}",
            b"{\"extra\":[1]}",
            b"{\"initiator\":{\"kind\":\"user\"}}",
            b"\xff",
        ] {
            assert!(decode(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(decode(Some("[".repeat(100_000).as_bytes())).is_err());
    }
}
