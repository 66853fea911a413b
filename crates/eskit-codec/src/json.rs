//! The JSON codec, through serde_json.

use std::cell::Cell;

use eskit_core::{
    error::CodecError,
    typed::{Codec, DomainEvent, EventCodec},
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::adapter::{Tagged, UntaggedValue};
use crate::error::{LimitError, check_len};
use crate::guard::{self, Checked, Json};
use crate::limits::{MAX_DEPTH, MAX_EVENT_BYTES, MAX_VALUE_BYTES};

/// JSON payloads through serde_json; stored under the codec name `json`.
///
/// As an [`EventCodec`], an enum event is stored as its variant's content
/// (`{"amount":5}` under the event type `Deposited`), a struct event as
/// itself. As a [`Codec`], any serde value is stored as serde_json writes it.
///
/// Decoding rejects input over [`MAX_EVENT_BYTES`] (events) or
/// [`MAX_VALUE_BYTES`] (values), nested deeper than [`MAX_DEPTH`], with
/// trailing bytes, or with invalid UTF-8. Floats are parsed exactly, so
/// every finite `f64` and `f32` reads back bit for bit.
///
/// # Refused values
/// Encoding refuses, with an [`EncodeError`](crate::EncodeError) as the source of
/// [`CodecError::Encode`], every value it could not read back as it was,
/// wherever it sits in the value (fields, sequences, map keys and values,
/// enum variants, options):
///
/// - a NaN or an infinity, `f32` or `f64` ([`EncodeError::NonFiniteFloat`](crate::EncodeError::NonFiniteFloat)):
///   JSON has no spelling for them, and serde_json would write `null`, which
///   fails to decode as a float, so one such event would make its stream
///   unreadable. Store a sentinel or an `Option` instead, or use
///   [`CborCodec`], which keeps them;
/// - nesting deeper than [`MAX_DEPTH`] arrays and objects
///   ([`EncodeError::TooDeep`](crate::EncodeError::TooDeep));
/// - `Some` of a value written as `null`, such as `Some(None)` or
///   `Some(())` ([`EncodeError::NullInSome`](crate::EncodeError::NullInSome)): it would read back as `None`.
///
/// Nothing is appended to the output when encoding fails. The checks ride
/// along with serde_json's serializer, without an intermediate value.
///
/// ```
/// use eskit_codec::{EncodeError, JsonCodec};
/// use eskit_core::{error::CodecError, typed::EventCodec};
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// enum Reading { Taken { celsius: f64 } }
/// eskit_codec::serde_domain_event!(Reading);
///
/// let mut payload = Vec::new();
/// let err = EventCodec::encode(&JsonCodec, &Reading::Taken { celsius: f64::NAN }, &mut payload)
///     .unwrap_err();
/// let CodecError::Encode { source, .. } = err else { panic!("{err}") };
/// assert!(matches!(
///     source.downcast_ref(),
///     Some(EncodeError::NonFiniteFloat { path, .. }) if path == "$.celsius"
/// ));
/// assert!(payload.is_empty());
/// ```
///
/// ```
/// use eskit_codec::JsonCodec;
/// use eskit_core::typed::EventCodec;
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum Account { Opened { owner: String }, Deposited(u64) }
/// eskit_codec::serde_domain_event!(Account);
///
/// let mut payload = Vec::new();
/// // `JsonCodec` is both an `EventCodec` and a `Codec`: name the trait.
/// EventCodec::encode(&JsonCodec, &Account::Opened { owner: "ada".into() }, &mut payload)?;
/// assert_eq!(payload, br#"{"owner":"ada"}"#);
/// let back: Account = EventCodec::decode(&JsonCodec, "Opened", &payload)?;
/// assert_eq!(back, Account::Opened { owner: "ada".into() });
/// # Ok::<(), eskit_core::error::CodecError>(())
/// ```
///
#[cfg_attr(feature = "cbor", doc = "[`CborCodec`]: crate::CborCodec")]
#[cfg_attr(not(feature = "cbor"), doc = "[`CborCodec`]: crate#feature-flags")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub struct JsonCodec;

impl JsonCodec {
    /// The codec name stored with every event this codec writes.
    pub const NAME: &'static str = "json";
}

impl<E> EventCodec<E> for JsonCodec
where
    E: DomainEvent + Serialize + DeserializeOwned,
{
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn encode(&self, event: &E, out: &mut Vec<u8>) -> Result<(), CodecError> {
        encode_json(&UntaggedValue(event), out)
            .map_err(|e| CodecError::encode(Some(event.event_type()), e))
    }

    fn decode(&self, event_type: &str, payload: &[u8]) -> Result<E, CodecError> {
        decode_event(event_type, payload)
    }
}

impl<T> Codec<T> for JsonCodec
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        encode_json(value, out).map_err(|e| CodecError::encode(None, e))
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let fail = |e: serde_json::Error| CodecError::decode(None, e);
        check_len(bytes, MAX_VALUE_BYTES).map_err(|e| CodecError::decode(None, e))?;
        check_depth(bytes).map_err(|e| CodecError::decode(None, e))?;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = T::deserialize(&mut de).map_err(fail)?;
        de.end().map_err(fail)?;
        Ok(value)
    }
}

/// Appends `value` to `out` through the [`guard`], so nothing is written
/// that [`decode_event`] or [`Codec::decode`] could not read back; on
/// failure `out` is left as it was.
fn encode_json<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), eskit_core::error::BoxError> {
    let start = out.len();
    let result = guard::run(|refusal| {
        Checked::<T, Json>::root(value, refusal)
            .serialize(&mut serde_json::Serializer::new(&mut *out))
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Non-generic checks first, then the generic decode (thin generic shim).
fn decode_event<E: DeserializeOwned>(event_type: &str, payload: &[u8]) -> Result<E, CodecError> {
    check_len(payload, MAX_EVENT_BYTES)
        .and_then(|()| check_depth(payload))
        .map_err(|e| CodecError::decode(Some(event_type), e))?;
    let unknown = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(payload);
    let result = E::deserialize(Tagged::new(event_type, &mut de, &unknown))
        .and_then(|value| de.end().map(|()| value));
    result.map_err(|e| {
        if unknown.get() {
            CodecError::UnknownEventType {
                event_type: event_type.to_owned(),
            }
        } else {
            CodecError::decode(Some(event_type), e)
        }
    })
}

/// Rejects JSON nested deeper than [`MAX_DEPTH`].
///
/// serde_json's own limit (128) is fixed, so ours is checked up front. Most
/// payloads hold fewer brackets in total than the limit, which a vectorised
/// count proves in a few nanoseconds; only the rest get the exact scan, which
/// skips brackets inside strings. Malformed JSON is left to serde_json.
fn check_depth(bytes: &[u8]) -> Result<(), LimitError> {
    if count_opens(bytes) <= MAX_DEPTH {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(LimitError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// How many `[` and `{` bytes `bytes` holds, strings included.
///
/// `[` is 0x5B and `{` 0x7B: one compare after setting bit 5 finds both.
/// Counting into `u8` lanes over chunks of 255 bytes lets the loop run 16 or
/// 32 bytes per instruction.
fn count_opens(bytes: &[u8]) -> usize {
    bytes
        .chunks(255)
        .map(|chunk| {
            let n = chunk
                .iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from(b | 0x20 == b'{')));
            usize::from(n)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_open_brackets_in_long_input() {
        let input = "[{x".repeat(1000);
        assert_eq!(count_opens(input.as_bytes()), 2000);
        assert_eq!(count_opens(b"]}[{ab"), 2);
    }

    #[test]
    fn depth_check_counts_only_structure() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check_depth(ok.as_bytes()), Ok(()));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(check_depth(deep.as_bytes()), Err(LimitError::TooDeep));
        let quoted = format!(r#"["{}\"{}"]"#, "[".repeat(100), "{".repeat(100));
        assert_eq!(check_depth(quoted.as_bytes()), Ok(()));
        let siblings = "[[],".repeat(100) + &"]".repeat(100);
        assert_eq!(check_depth(siblings.as_bytes()), Err(LimitError::TooDeep));
        let flat = format!("[{}[]]", "[],".repeat(100));
        assert_eq!(check_depth(flat.as_bytes()), Ok(()));
    }
}
