//! Metadata as stored: the core's flat wire shape
//! ([`metadata_to_json`](eskit_core::backend::metadata_to_json)) as UTF-8 in
//! a `bytea` column, `NULL` when empty.
//!
//! Not `jsonb`: every read would pay to turn it back into text (a
//! 1,000-event load measured about twice as slow with a `::text` cast in
//! the peer comparison), and the store never queries inside metadata.

use eskit_core::backend::{metadata_from_json, metadata_to_json};
use eskit_core::error::StoreError;
use eskit_core::event::Metadata;

use crate::error::corrupt;

/// The stored form of `m`; `None` for empty metadata.
pub(crate) fn encode(m: &Metadata) -> Option<Vec<u8>> {
    metadata_to_json(m).map(String::into_bytes)
}

/// Parses stored metadata; anything but the wire shape is
/// [`StoreError::Corrupt`].
pub(crate) fn decode(bytes: Option<&[u8]>) -> Result<Metadata, StoreError> {
    let Some(bytes) = bytes else {
        return Ok(Metadata::new());
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("stored metadata is not UTF-8"))?;
    metadata_from_json(text).map_err(|e| corrupt(format!("stored metadata is malformed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eskit_core::event::Principal;

    #[test]
    fn round_trips_and_refuses_other_shapes() {
        let m = Metadata::new_chain(Principal::user("ada"))
            .with_causation_id("c")
            .with_idempotency_key("k")
            .with_extra("a", "\"q\"\n\\");
        let bytes = encode(&m);
        let back = decode(bytes.as_deref());
        assert_eq!(back.as_ref().ok(), Some(&m), "{back:?}");
        assert_eq!(encode(&Metadata::new()), None);
        for bad in [&b""[..], b"{", b"[]", b"null", b"{\"x\":1}", b"\xff"] {
            assert!(decode(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(decode(Some("[".repeat(100_000).as_bytes())).is_err());
    }
}
