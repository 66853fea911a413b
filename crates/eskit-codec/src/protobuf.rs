//! The Protobuf codec, through prost.
//!
//! Events are prost messages. A set of events is a `oneof` in an envelope
//! message; the payload stored is the chosen message alone and the event type
//! is that message's name, so the envelope never reaches the store:
//!
//! ```proto
//! message AccountEvent {
//!   oneof event {
//!     AccountOpened account_opened = 1;
//!     MoneyDeposited money_deposited = 2;
//!   }
//! }
//! ```
//!
//! `cargo xtask codegen` runs prost-build (with a pure-Rust proto compiler,
//! no `protoc` needed) and, for every `oneof event`, also writes the
//! [`DomainEvent`] and [`ProstEvent`] impls of the generated enum. A single
//! message works as an event on its own too: every `prost::Message` that is
//! a [`DomainEvent`] is a [`ProstEvent`].

use eskit_core::{
    error::CodecError,
    typed::{Codec, DomainEvent, EventCodec},
};
use prost::Message;

use crate::error::{EncodeError, check_len};
use crate::limits::{MAX_EVENT_BYTES, MAX_PROTOBUF_DEPTH, MAX_VALUE_BYTES};

/// An event whose content is a prost message.
///
/// Implemented by `cargo xtask codegen` for `oneof event` enums, and for
/// every prost message that is also a [`DomainEvent`].
#[cfg_attr(docsrs, doc(cfg(feature = "protobuf")))]
pub trait ProstEvent: DomainEvent + Sized {
    /// Appends the content message, without any envelope, to `out`.
    fn encode_content(&self, out: &mut Vec<u8>);

    /// Decodes content stored under `event_type`; `Ok(None)` when `Self`
    /// has no event of that type.
    ///
    /// # Errors
    /// [`prost::DecodeError`] for malformed bytes.
    fn decode_content(event_type: &str, content: &[u8])
    -> Result<Option<Self>, prost::DecodeError>;
}

/// A single message is an event of its own; it accepts whichever event type
/// it is stored under (the [`EventRegistry`](eskit_core::typed::EventRegistry)
/// decides which types reach it).
impl<M: Message + Default + DomainEvent> ProstEvent for M {
    fn encode_content(&self, out: &mut Vec<u8>) {
        self.encode_raw(out);
    }

    fn decode_content(
        _event_type: &str,
        content: &[u8],
    ) -> Result<Option<Self>, prost::DecodeError> {
        M::decode(content).map(Some)
    }
}

/// Protobuf payloads through prost; stored under the codec name `protobuf`.
///
/// Decoding rejects input over [`MAX_EVENT_BYTES`] (events) or
/// [`MAX_VALUE_BYTES`] (values); nesting is bounded by prost at
/// [`MAX_PROTOBUF_DEPTH`] and every declared length is checked against the
/// bytes that remain.
///
/// # Refused values
/// prost writes every field so that it reads back, floats included (NaN and
/// infinities bit for bit), except in two cases:
///
/// - a recursive message nested deeper than [`MAX_PROTOBUF_DEPTH`] levels,
///   which prost writes but will not read. Encoding refuses it with
///   [`EncodeError::TooDeep`] (without a path: the codec sees only bytes) as
///   the source of [`CodecError::Encode`], and appends nothing. The check
///   costs nothing for payloads under 202 bytes and a scan of the bytes
///   above that;
/// - `-0.0` in a proto3 `float` or `double` field without `optional` reads
///   back as `0.0`: prost skips it as if it were the default (prost issue
///   1177), and the codec cannot see fields to refuse it. Declare the field
///   `optional`, or `repeated`, to keep the sign.
///
/// ```
/// use eskit_codec::ProstCodec;
/// use eskit_core::typed::{DomainEvent, EventCodec};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct MoneyDeposited {
///     #[prost(uint64, tag = "1")]
///     amount: u64,
/// }
/// impl DomainEvent for MoneyDeposited {
///     fn event_type(&self) -> &'static str { "MoneyDeposited" }
///     fn event_types() -> &'static [&'static str] { &["MoneyDeposited"] }
/// }
///
/// let mut payload = Vec::new();
/// EventCodec::encode(&ProstCodec, &MoneyDeposited { amount: 5 }, &mut payload)?;
/// assert_eq!(payload, [0x08, 0x05]);
/// let back: MoneyDeposited = EventCodec::decode(&ProstCodec, "MoneyDeposited", &payload)?;
/// assert_eq!(back.amount, 5);
/// # Ok::<(), eskit_core::error::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(docsrs, doc(cfg(feature = "protobuf")))]
pub struct ProstCodec;

impl ProstCodec {
    /// The codec name stored with every event this codec writes.
    pub const NAME: &'static str = "protobuf";
}

impl<E: ProstEvent> EventCodec<E> for ProstCodec {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn encode(&self, event: &E, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        event.encode_content(out);
        let written = &out[start..];
        if may_nest_too_deep(written) && E::decode_content(event.event_type(), written).is_err() {
            out.truncate(start);
            return Err(CodecError::encode(Some(event.event_type()), too_deep()));
        }
        Ok(())
    }

    fn decode(&self, event_type: &str, payload: &[u8]) -> Result<E, CodecError> {
        check_len(payload, MAX_EVENT_BYTES).map_err(|e| CodecError::decode(Some(event_type), e))?;
        match E::decode_content(event_type, payload) {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(CodecError::UnknownEventType {
                event_type: event_type.to_owned(),
            }),
            Err(e) => Err(CodecError::decode(Some(event_type), e)),
        }
    }
}

impl<T: Message + Default + 'static> Codec<T> for ProstCodec {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        value.encode_raw(out);
        let written = &out[start..];
        if may_nest_too_deep(written) && T::decode(written).is_err() {
            out.truncate(start);
            return Err(CodecError::encode(None, too_deep()));
        }
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        check_len(bytes, MAX_VALUE_BYTES).map_err(|e| CodecError::decode(None, e))?;
        T::decode(bytes).map_err(|e| CodecError::decode(None, e))
    }
}

fn too_deep() -> EncodeError {
    EncodeError::TooDeep {
        max: MAX_PROTOBUF_DEPTH,
        path: None,
    }
}

/// Whether the message in `bytes` might nest more than
/// [`MAX_PROTOBUF_DEPTH`] levels of messages, which prost would refuse to
/// decode.
///
/// prost writes messages of recursive types at any depth, so the encoders
/// check what they wrote. Without the schema a length-delimited field may be
/// a message, a string, bytes or a packed array: every one whose content
/// parses as fields counts as a level, and so does every group. That bounds
/// the true depth from above; a real check (decoding) runs only when the
/// bound is over the limit. A chain of `n` levels needs at least `2 * n`
/// bytes, so most payloads are dismissed by their length alone.
fn may_nest_too_deep(bytes: &[u8]) -> bool {
    holds_levels(bytes, MAX_PROTOBUF_DEPTH + 1)
}

/// Whether `bytes`, read as a message's fields, may hold `need` nested
/// levels.
fn holds_levels(bytes: &[u8], need: usize) -> bool {
    if need == 0 {
        return true;
    }
    if bytes.len() < 2 * need {
        return false;
    }
    let mut rest = bytes;
    matches!(scan_fields(&mut rest, need, None), Scan::Reached)
}

/// What [`scan_fields`] found.
enum Scan {
    /// `need` levels may be nested.
    Reached,
    /// The fields ended (at the end of the bytes, or of the group) first.
    Ended,
    /// The bytes are not fields, so not a message.
    Invalid,
}

/// Reads fields from `rest` up to its end, or up to the end-group of field
/// `group`, looking for `need` (at least 1) nested levels.
fn scan_fields(rest: &mut &[u8], need: usize, group: Option<u64>) -> Scan {
    while !rest.is_empty() {
        let Some(key) = read_varint(rest) else {
            return Scan::Invalid;
        };
        let field = key >> 3;
        let ok = match key & 7 {
            0 => read_varint(rest).is_some(),
            1 => skip(rest, 8),
            5 => skip(rest, 4),
            2 => {
                let Some(len) = read_varint(rest).and_then(|l| usize::try_from(l).ok()) else {
                    return Scan::Invalid;
                };
                let Some((content, tail)) = rest.split_at_checked(len) else {
                    return Scan::Invalid;
                };
                *rest = tail;
                if holds_levels(content, need - 1) {
                    return Scan::Reached;
                }
                true
            }
            3 => {
                if need == 1 {
                    return Scan::Reached;
                }
                match scan_fields(rest, need - 1, Some(field)) {
                    Scan::Ended => true,
                    other => return other,
                }
            }
            4 => {
                return if group == Some(field) {
                    Scan::Ended
                } else {
                    Scan::Invalid
                };
            }
            _ => false,
        };
        if !ok {
            return Scan::Invalid;
        }
    }
    if group.is_some() {
        Scan::Invalid
    } else {
        Scan::Ended
    }
}

/// Reads a base-128 varint of at most 10 bytes.
fn read_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &b) in rest.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7F) << (7 * i);
        if b < 0x80 {
            *rest = &rest[i + 1..];
            return Some(value);
        }
    }
    None
}

fn skip(rest: &mut &[u8], n: usize) -> bool {
    match rest.get(n..) {
        Some(tail) => {
            *rest = tail;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `levels` messages nested in field 1, innermost empty.
    fn nested(levels: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..levels {
            let mut outer = vec![0x0A];
            prost::encoding::encode_varint(bytes.len() as u64, &mut outer);
            outer.extend_from_slice(&bytes);
            bytes = outer;
        }
        bytes
    }

    /// `levels` groups nested in field 1.
    fn groups(levels: usize) -> Vec<u8> {
        [vec![0x0B; levels], vec![0x0C; levels]].concat()
    }

    #[test]
    fn depth_bound_counts_nested_messages_and_groups() {
        assert!(!may_nest_too_deep(&nested(MAX_PROTOBUF_DEPTH)));
        assert!(may_nest_too_deep(&nested(MAX_PROTOBUF_DEPTH + 1)));
        assert!(!may_nest_too_deep(&groups(MAX_PROTOBUF_DEPTH)));
        assert!(may_nest_too_deep(&groups(MAX_PROTOBUF_DEPTH + 1)));
        // Scalars around the chain change nothing.
        let mut padded = vec![0x10, 0x96, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0];
        padded.extend(nested(MAX_PROTOBUF_DEPTH + 1));
        assert!(may_nest_too_deep(&padded));
    }

    #[test]
    fn depth_bound_stops_at_malformed_fields() {
        let long_text = vec![b'a'; 4096];
        let mut field = vec![0x0A];
        prost::encoding::encode_varint(long_text.len() as u64, &mut field);
        field.extend(long_text);
        assert!(!may_nest_too_deep(&field));
        assert!(!may_nest_too_deep(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]));
        assert!(!may_nest_too_deep(&[0x0C; 300]));
    }
}
