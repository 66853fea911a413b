//! Codecs turn values into bytes and back. The core defines the traits; the
//! JSON, CBOR and Protobuf codecs live in `eskit-codec`.

use crate::error::CodecError;

/// A domain event that knows its stable wire names.
///
/// For an enum of events, return the variant's name; for a plain struct, a
/// constant. The name is stored beside the payload, so it must not change when
/// the Rust type is renamed (register a legacy alias instead).
///
/// [`event_types`](Self::event_types) lists every name without a value, so a
/// subscription can ask the backend for these types only, and a global read
/// can tell "not mine" from "broken". Encoding an event whose name is not in
/// the list fails with [`CodecError::UnknownEventType`].
///
/// ```
/// use eskit_core::typed::DomainEvent;
/// enum Account { Opened { owner: String }, Closed }
/// impl DomainEvent for Account {
///     fn event_type(&self) -> &'static str {
///         match self { Self::Opened { .. } => "AccountOpened", Self::Closed => "AccountClosed" }
///     }
///     fn event_types() -> &'static [&'static str] {
///         &["AccountOpened", "AccountClosed"]
///     }
/// }
/// assert_eq!(Account::Closed.event_type(), "AccountClosed");
/// assert_eq!(Account::event_types().len(), 2);
/// ```
pub trait DomainEvent: Send + Sync + 'static {
    /// The wire name of this event value.
    fn event_type(&self) -> &'static str;

    /// Every wire name a value of this type can have.
    fn event_types() -> &'static [&'static str]
    where
        Self: Sized;
}

/// Encodes events of type `E` to payload bytes and decodes them back, given
/// the stored event type name.
///
/// For an enum, the payload is the variant's content and the type name
/// selects the variant, so stored payloads stay readable without Rust types.
pub trait EventCodec<E>: Send + Sync + 'static {
    /// The codec's stable name, stored with every event it encodes (`json`, `cbor`, ...).
    fn name(&self) -> &'static str;

    /// Appends the payload of `event` to `out`.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when the value cannot be encoded.
    fn encode(&self, event: &E, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes a payload stored under `event_type`.
    ///
    /// # Errors
    /// [`CodecError::UnknownEventType`] for a type `E` has no variant for,
    /// [`CodecError::Decode`] for malformed bytes. Never panics on any input.
    fn decode(&self, event_type: &str, payload: &[u8]) -> Result<E, CodecError>;
}

/// Encodes single values such as snapshot states.
pub trait Codec<T>: Send + Sync + 'static {
    /// The codec's stable name, stored beside what it encodes.
    fn name(&self) -> &'static str;

    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when the value cannot be encoded.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes a value.
    ///
    /// # Errors
    /// [`CodecError::Decode`] for malformed bytes. Never panics on any input.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}
