//! The CBOR codec, through ciborium.

use std::cell::{Cell, RefCell};

use eskit_core::{
    error::CodecError,
    typed::{Codec, DomainEvent, EventCodec},
};
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

use crate::adapter::{Tagged, UntaggedValue};
use crate::error::{LimitError, check_len};
use crate::guard::{self, Cbor, Checked};
use crate::limits::{MAX_DEPTH, MAX_EVENT_BYTES, MAX_VALUE_BYTES};

/// CBOR payloads (RFC 8949) through ciborium; stored under the codec name
/// `cbor`.
///
/// Payloads have the same shape as the [`JsonCodec`]'s:
/// an enum event is stored as its variant's content, a struct event as
/// itself, so a store can move from one to the other event by event.
///
/// Decoding rejects input over [`MAX_EVENT_BYTES`] (events) or
/// [`MAX_VALUE_BYTES`] (values), nested deeper than [`MAX_DEPTH`], with
/// trailing bytes, or with invalid UTF-8. Declared lengths are never trusted
/// for allocation: strings grow chunk by chunk as bytes arrive and sequences
/// preallocate at most serde's cautious bound.
///
/// # Refused values
/// CBOR has a spelling for every float (NaN and the infinities included),
/// every integer up to `i128`/`u128` and any map key, and keeps them bit for
/// bit, apart from the payload bits of a NaN. Encoding refuses, with an
/// [`EncodeError`](crate::EncodeError) as the source of [`CodecError::Encode`], only what its
/// decoder could not read back as it was:
///
/// - nesting deeper than [`MAX_DEPTH`] levels, where each array, map and
///   enum value (a unit variant too) is a level, as ciborium's decoder counts
///   them ([`EncodeError::TooDeep`](crate::EncodeError::TooDeep));
/// - `Some` of a value written as null, such as `Some(None)` or `Some(())`
///   ([`EncodeError::NullInSome`](crate::EncodeError::NullInSome)): it would read back as `None`.
///
/// Nothing is appended to the output when encoding fails.
///
/// One limit cannot be seen at encode: ciborium reads a text or byte string
/// longer than 4096 bytes only into an owned buffer, so a type whose
/// `Deserialize` asks for a borrowed `&str` or `&[u8]` (`deserialize_str`,
/// `deserialize_bytes`, as some `FromStr`-based impls do) fails on longer
/// ones. `String`, `Vec<u8>` and the serde derives are not affected.
///
/// ```
/// use eskit_codec::CborCodec;
/// use eskit_core::typed::EventCodec;
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum Account { Opened { owner: String }, Deposited(u64) }
/// eskit_codec::serde_domain_event!(Account);
///
/// let mut payload = Vec::new();
/// EventCodec::encode(&CborCodec, &Account::Deposited(5), &mut payload)?;
/// assert_eq!(payload, [0x05]);
/// let back: Account = EventCodec::decode(&CborCodec, "Deposited", &payload)?;
/// assert_eq!(back, Account::Deposited(5));
/// # Ok::<(), eskit_core::error::CodecError>(())
/// ```
///
#[cfg_attr(feature = "json", doc = "[`JsonCodec`]: crate::JsonCodec")]
#[cfg_attr(not(feature = "json"), doc = "[`JsonCodec`]: crate#feature-flags")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(docsrs, doc(cfg(feature = "cbor")))]
pub struct CborCodec;

impl CborCodec {
    /// The codec name stored with every event this codec writes.
    pub const NAME: &'static str = "cbor";
}

impl<E> EventCodec<E> for CborCodec
where
    E: DomainEvent + Serialize + DeserializeOwned,
{
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn encode(&self, event: &E, out: &mut Vec<u8>) -> Result<(), CodecError> {
        encode_cbor(&UntaggedValue(event), out)
            .map_err(|e| CodecError::encode(Some(event.event_type()), e))
    }

    fn decode(&self, event_type: &str, payload: &[u8]) -> Result<E, CodecError> {
        check_len(payload, MAX_EVENT_BYTES).map_err(|e| CodecError::decode(Some(event_type), e))?;
        EVENT_TYPE.with(|t| {
            let mut t = t.borrow_mut();
            t.clear();
            t.push_str(event_type);
        });
        UNKNOWN.set(false);
        let result = from_slice::<WithEventType<E>>(payload);
        if UNKNOWN.get() {
            return Err(CodecError::UnknownEventType {
                event_type: event_type.to_owned(),
            });
        }
        result
            .map(|w| w.0)
            .map_err(|e| CodecError::decode(Some(event_type), e))
    }
}

impl<T> Codec<T> for CborCodec
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        encode_cbor(value, out).map_err(|e| CodecError::encode(None, e))
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        check_len(bytes, MAX_VALUE_BYTES).map_err(|e| CodecError::decode(None, e))?;
        from_slice(bytes).map_err(|e| CodecError::decode(None, e))
    }
}

/// Appends `value` to `out` through the [`guard`], so nothing is written
/// that the decoders could not read back; on failure `out` is left as it
/// was.
fn encode_cbor<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), eskit_core::error::BoxError> {
    let start = out.len();
    let result = guard::run(|refusal| {
        ciborium::into_writer(&Checked::<T, Cbor>::root(value, refusal), &mut *out)
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Why a CBOR decode failed.
#[derive(Debug)]
enum CborError {
    Format(ciborium::de::Error<std::io::Error>),
    Limit(LimitError),
}

impl From<ciborium::de::Error<std::io::Error>> for CborError {
    fn from(e: ciborium::de::Error<std::io::Error>) -> Self {
        Self::Format(e)
    }
}

impl From<LimitError> for CborError {
    fn from(e: LimitError) -> Self {
        Self::Limit(e)
    }
}

impl From<CborError> for eskit_core::error::BoxError {
    /// The cause itself, so callers can downcast to [`LimitError`].
    fn from(e: CborError) -> Self {
        match e {
            CborError::Format(e) => Box::new(e),
            CborError::Limit(e) => Box::new(e),
        }
    }
}

/// Decodes one value that must span all of `bytes`, nested at most
/// [`MAX_DEPTH`] deep.
fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CborError> {
    let mut rest = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(LimitError::TrailingBytes { count: rest.len() }.into())
    }
}

thread_local! {
    /// The event type of the decode running on this thread.
    ///
    /// ciborium's deserializer is private: the only way in is a
    /// `DeserializeOwned` type, which takes no arguments, so the event type
    /// travels beside it. The buffer is reused, so this costs no allocation
    /// after a thread's first decode.
    static EVENT_TYPE: RefCell<String> = const { RefCell::new(String::new()) };
    /// Whether the last decode on this thread failed on an unknown variant.
    static UNKNOWN: Cell<bool> = const { Cell::new(false) };
}

/// `E` decoded as the content of the variant named by [`EVENT_TYPE`].
struct WithEventType<E>(E);

impl<'de, E: Deserialize<'de>> Deserialize<'de> for WithEventType<E> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Taken, not borrowed, so a nested decode on this thread (a
        // `Deserialize` impl that decodes embedded CBOR) sets its own.
        let event_type = EVENT_TYPE.with(RefCell::take);
        let unknown = Cell::new(false);
        let result = E::deserialize(Tagged::new(&event_type, deserializer, &unknown));
        UNKNOWN.set(unknown.get());
        EVENT_TYPE.with(|t| t.replace(event_type));
        result.map(WithEventType)
    }
}
