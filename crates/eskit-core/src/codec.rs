//! Codecs turn values into bytes and back. The core defines the traits; the
//! JSON, CBOR and Protobuf codecs live in `eskit-codec`.

use crate::error::CodecError;
use crate::metadata::Metadata;
use crate::name::{StreamName, TenantId};

/// What an event codec may know about the event beyond its value: the
/// stream, the tenant, the metadata stored with it, and its event type.
///
/// [`EventSchema`](crate::typed::EventSchema) builds one for every event it
/// encodes or decodes and passes it to [`EventCodec::encode_with`] and
/// [`EventCodec::decode_with`], so a codec can depend on the data subject:
/// an encrypting codec picks the key of the stream's owner, or of a
/// metadata entry naming the subject, and forgetting that key makes the
/// subject's events unreadable (crypto-shredding).
///
/// The encode side sees the stream and the metadata the append will store
/// (with its idempotency key); the decode side sees the stored event's
/// stream and metadata, so a codec that keys on them reads back what it
/// wrote.
///
/// ```
/// use eskit_core::event::{Metadata, StreamName};
/// use eskit_core::typed::CodecContext;
/// let stream = StreamName::new("patient", "p-7")?;
/// let meta = Metadata::new().with_extra("subject", "p-7");
/// let cx = CodecContext::new(&stream, "Admitted", &meta);
/// assert_eq!(cx.stream().stream_id().as_str(), "p-7");
/// assert_eq!(cx.metadata().extra_value("subject"), Some("p-7"));
/// assert_eq!(cx.tenant(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecContext<'a> {
    stream: &'a StreamName,
    tenant: Option<&'a TenantId>,
    metadata: &'a Metadata,
    event_type: &'a str,
}

impl<'a> CodecContext<'a> {
    /// The context of an event of type `event_type` in `stream` with
    /// `metadata`, without a tenant.
    pub fn new(stream: &'a StreamName, event_type: &'a str, metadata: &'a Metadata) -> Self {
        Self {
            stream,
            tenant: None,
            metadata,
            event_type,
        }
    }

    /// Sets the tenant the event belongs to.
    #[must_use]
    pub fn with_tenant(mut self, tenant: Option<&'a TenantId>) -> Self {
        self.tenant = tenant;
        self
    }

    /// The stream the event is appended to or was read from.
    pub fn stream(&self) -> &'a StreamName {
        self.stream
    }

    /// The tenant the event belongs to; `None` outside tenant-scoped stores.
    pub fn tenant(&self) -> Option<&'a TenantId> {
        self.tenant
    }

    /// The metadata stored with the event.
    pub fn metadata(&self) -> &'a Metadata {
        self.metadata
    }

    /// The event's wire type name (for decoding, after alias resolution).
    pub fn event_type(&self) -> &'a str {
        self.event_type
    }
}

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
///
/// A codec that depends on where the event lives (an encrypting codec with
/// a key per data subject) overrides [`encode_with`](Self::encode_with) and
/// [`decode_with`](Self::decode_with), which get a [`CodecContext`]; every
/// typed path ([`EventSchema`](crate::typed::EventSchema) and what is built
/// on it) calls those. Their defaults call [`encode`](Self::encode) and
/// [`decode`](Self::decode), so a codec that does not care implements only
/// those two. A codec that cannot work without its context returns an error
/// from the plain methods.
///
/// ```
/// use eskit_core::prelude::*;
/// use eskit_core::{memory::MemoryStore, rt::block_on, typed::CodecContext};
///
/// #[derive(Debug, PartialEq)]
/// struct Noted(String);
/// impl DomainEvent for Noted {
///     fn event_type(&self) -> &'static str { "Noted" }
///     fn event_types() -> &'static [&'static str] { &["Noted"] }
/// }
///
/// /// Toy encryption: XOR with a key derived from the stream id.
/// struct Sealed;
/// fn key(cx: &CodecContext<'_>) -> u8 {
///     cx.stream().stream_id().as_str().bytes().fold(0x5a, |k, b| k.rotate_left(3) ^ b)
/// }
/// impl EventCodec<Noted> for Sealed {
///     fn name(&self) -> &'static str { "sealed" }
///     fn encode(&self, _: &Noted, _: &mut Vec<u8>) -> Result<(), CodecError> {
///         Err(CodecError::encode(Some("Noted"), "sealed events need their context"))
///     }
///     fn decode(&self, ty: &str, _: &[u8]) -> Result<Noted, CodecError> {
///         Err(CodecError::decode(Some(ty), "sealed events need their context"))
///     }
///     fn encode_with(&self, e: &Noted, cx: &CodecContext<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
///         let k = key(cx);
///         out.extend(e.0.bytes().map(|b| b ^ k));
///         Ok(())
///     }
///     fn decode_with(&self, cx: &CodecContext<'_>, payload: &[u8]) -> Result<Noted, CodecError> {
///         let k = key(cx);
///         let plain = payload.iter().map(|b| b ^ k).collect();
///         String::from_utf8(plain)
///             .map(Noted)
///             .map_err(|e| CodecError::decode(Some(cx.event_type()), e))
///     }
/// }
///
/// let store = TypedStore::new(MemoryStore::new(), EventSchema::new(Sealed));
/// let stream = StreamName::new("note", "n-1")?;
/// block_on(store.append(&stream, ExpectedVersion::NoStream, vec![Noted("hi".into())]))?;
/// let raw = block_on(store.load_raw(&stream, LoadOptions::new()))?;
/// assert_ne!(raw[0].payload, b"hi", "stored sealed");
/// assert_eq!(block_on(store.load(&stream))?[0].data, Noted("hi".into()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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

    /// Appends the payload of `event`, which is to be stored as `cx`
    /// describes. The default ignores `cx` and calls [`encode`](Self::encode).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    fn encode_with(
        &self,
        event: &E,
        cx: &CodecContext<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let _ = cx;
        self.encode(event, out)
    }

    /// Decodes a payload stored as `cx` describes, under
    /// [`cx.event_type()`](CodecContext::event_type). The default calls
    /// [`decode`](Self::decode) with that type.
    ///
    /// # Errors
    /// As [`decode`](Self::decode). Never panics on any input.
    fn decode_with(&self, cx: &CodecContext<'_>, payload: &[u8]) -> Result<E, CodecError> {
        self.decode(cx.event_type(), payload)
    }
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
