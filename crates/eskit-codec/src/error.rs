//! Errors of this crate, reported as the `source` of a
//! [`CodecError`](eskit_core::error::CodecError).

use crate::limits::MAX_DEPTH;

/// Untrusted input broke one of the bounds in [`limits`](crate::limits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The input is larger than the decoder accepts.
    #[error("input is {len} bytes, the maximum is {max}")]
    TooLarge {
        /// The input's size in bytes.
        len: usize,
        /// The bound in force.
        max: usize,
    },
    /// Arrays or maps are nested deeper than [`MAX_DEPTH`].
    #[error("input nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Bytes follow the end of the encoded value.
    #[error("{count} trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes follow the value.
        count: usize,
    },
}

/// A codec refused to encode a value it could not read back as it was.
///
/// Reported as the `source` of [`CodecError::Encode`](eskit_core::error::CodecError::Encode),
/// so nothing is stored: a payload that encodes but does not decode would
/// break every later load of its stream. Which codec refuses what is listed
/// on [`JsonCodec`], [`CborCodec`] and [`ProstCodec`].
///
/// `path` says where in the value the refusal happened: `$` is the value
/// itself (an event's content, for an enum event), then `.field`, `.Variant`,
/// `[index]` or `[key]` per level, outermost first, as in
/// `$.lines[2].price`. A map key the codec cannot name (one that is not a
/// string, number, bool or unit variant, or one a hand-written `Serialize`
/// sends apart from its value) shows as `[?]`.
///
#[cfg_attr(feature = "json", doc = "[`JsonCodec`]: crate::JsonCodec")]
#[cfg_attr(feature = "cbor", doc = "[`CborCodec`]: crate::CborCodec")]
#[cfg_attr(feature = "protobuf", doc = "[`ProstCodec`]: crate::ProstCodec")]
#[cfg_attr(not(feature = "json"), doc = "[`JsonCodec`]: crate#feature-flags")]
#[cfg_attr(not(feature = "cbor"), doc = "[`CborCodec`]: crate#feature-flags")]
#[cfg_attr(not(feature = "protobuf"), doc = "[`ProstCodec`]: crate#feature-flags")]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A NaN or an infinity, which the format cannot write (JSON has no
    /// spelling for them: serde_json would write `null`).
    #[error("non-finite float {value} refused at {path}")]
    NonFiniteFloat {
        /// The refused value.
        value: f64,
        /// Where it is in the encoded value.
        path: String,
    },
    /// The value nests deeper than the codec's decoder accepts.
    #[error("value nests deeper than {max} levels{}", at(path.as_deref()))]
    TooDeep {
        /// The decoder's bound: [`MAX_DEPTH`] for JSON and CBOR,
        /// [`MAX_PROTOBUF_DEPTH`](crate::limits::MAX_PROTOBUF_DEPTH) for
        /// Protobuf.
        max: usize,
        /// Where the level past the bound starts; `None` where the codec
        /// cannot tell (Protobuf).
        path: Option<String>,
    },
    /// `Some` of a value the format writes as null (`Some(None)`,
    /// `Some(())`, `Some` of a unit struct): it would read back as `None`.
    #[error("`Some` of a null value refused at {path}: it would read back as `None`")]
    NullInSome {
        /// Where the `Some` is in the encoded value.
        path: String,
    },
}

/// ` at {path}`, or nothing.
fn at(path: Option<&str>) -> String {
    path.map(|p| format!(" at {p}")).unwrap_or_default()
}

#[cfg(any(feature = "json", feature = "cbor", feature = "protobuf"))]
/// Fails with [`LimitError::TooLarge`] when `bytes` is longer than `max`.
pub(crate) fn check_len(bytes: &[u8], max: usize) -> Result<(), LimitError> {
    if bytes.len() > max {
        Err(LimitError::TooLarge {
            len: bytes.len(),
            max,
        })
    } else {
        Ok(())
    }
}
