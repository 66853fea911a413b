//! Bounds every decoder enforces on untrusted bytes, as named constants.
//!
//! Stored payloads are untrusted: another service, an old release or an
//! attacker with write access to the database may have written them. Each
//! decoder rejects input over these bounds with [`LimitError`] before or
//! while parsing, so no input can exhaust the stack or the heap.
//!
//! [`LimitError`]: crate::LimitError

/// Largest event payload any decoder accepts, in bytes (1 MiB).
///
/// Twice the core's [`MAX_PAYLOAD_BYTES`](eskit_core::limits::MAX_PAYLOAD_BYTES),
/// so every payload a backend accepts decodes, with room for payloads written
/// by older, laxer writers.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Largest single value (such as a snapshot state) a [`Codec`](eskit_core::typed::Codec)
/// decoder accepts, in bytes: the core's
/// [`MAX_SNAPSHOT_BYTES`](eskit_core::limits::MAX_SNAPSHOT_BYTES) (16 MiB).
pub const MAX_VALUE_BYTES: usize = eskit_core::limits::MAX_SNAPSHOT_BYTES;

/// Deepest nesting of arrays and maps the JSON and CBOR decoders accept.
///
/// Domain events are shallow; 32 levels leave room for any real schema while
/// keeping recursion far from the stack's end (serde_json's own limit is 128,
/// ciborium's default 256).
pub const MAX_DEPTH: usize = 32;

/// Most levels of messages nested inside the top-level message that the
/// Protobuf decoder accepts (101 is an error): prost's fixed recursion limit. Protobuf nesting is bounded by the message types
/// themselves unless a message is recursive, and prost cannot be given a
/// lower limit.
pub const MAX_PROTOBUF_DEPTH: usize = 100;
