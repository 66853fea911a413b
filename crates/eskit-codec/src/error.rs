//! Errors of this crate, reported as the `source` of a
//! [`CodecError`](eskit_core::CodecError).

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
