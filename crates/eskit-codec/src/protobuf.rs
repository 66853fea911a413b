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

use eskit_core::{Codec, CodecError, DomainEvent, EventCodec};
use prost::Message;

use crate::error::check_len;
use crate::limits::{MAX_EVENT_BYTES, MAX_VALUE_BYTES};

/// An event whose content is a prost message.
///
/// Implemented by `cargo xtask codegen` for `oneof event` enums, and for
/// every prost message that is also a [`DomainEvent`].
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
/// it is stored under (the [`EventRegistry`](eskit_core::EventRegistry)
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
/// [`MAX_PROTOBUF_DEPTH`](crate::limits::MAX_PROTOBUF_DEPTH) and every
/// declared length is checked against the bytes that remain.
///
/// ```
/// use eskit_codec::ProstCodec;
/// use eskit_core::{DomainEvent, EventCodec};
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
/// # Ok::<(), eskit_core::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
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
        event.encode_content(out);
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
        value.encode_raw(out);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        check_len(bytes, MAX_VALUE_BYTES).map_err(|e| CodecError::decode(None, e))?;
        T::decode(bytes).map_err(|e| CodecError::decode(None, e))
    }
}
