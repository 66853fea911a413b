//! Every bound the core enforces, as named constants.
//!
//! Backends and higher layers use the same constants so that a value accepted
//! by one backend is accepted by all of them.

/// Largest stream type, stream id, event type or other name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Most characters of a user-supplied name that an error message quotes;
/// longer names are cut (see [`quote_name`](crate::backend::quote_name)).
pub const MAX_QUOTED_NAME_CHARS: usize = 128;

/// Most events one append may carry (1,000).
///
/// One answer for every backend: NATS JetStream commits an atomic batch of
/// at most 1,000 messages by default, so a larger append could be accepted
/// by SQLite and refused by JetStream. Split larger imports into several
/// appends with [`ExpectedVersion::Exact`](crate::event::ExpectedVersion::Exact).
pub const MAX_EVENTS_PER_APPEND: usize = 1_000;

/// Largest single event payload, in bytes (512 KiB).
///
/// Chosen so that one event, its metadata and its headers fit in one NATS
/// message under the server's default `max_payload` of 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// Largest sum of payload sizes in one append, in bytes (16 MiB).
pub const MAX_APPEND_BYTES: usize = 16 * 1024 * 1024;

/// Most entries in [`Metadata::extra`](crate::event::Metadata::extra).
pub const MAX_METADATA_ENTRIES: usize = 100;

/// Largest encoded size of one event's metadata, in bytes (64 KiB).
///
/// Counted as the sum of the lengths of every string the metadata holds.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Most pairs in metadata's wire shape
/// ([`Metadata::to_wire`](crate::event::Metadata::to_wire)): the seven named
/// fields and [`MAX_METADATA_ENTRIES`] extra entries.
pub const MAX_METADATA_WIRE_PAIRS: usize = MAX_METADATA_ENTRIES + 7;

/// Largest metadata JSON text a backend reads back
/// ([`metadata_from_json`](crate::backend::metadata_from_json)), in bytes
/// (512 KiB): the JSON of any valid metadata fits, escapes included.
pub const MAX_METADATA_JSON_BYTES: usize = 8 * MAX_METADATA_BYTES;

/// Largest [`Tag`](crate::event::Tag), in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// Most tags one event may carry (after duplicates are removed).
pub const MAX_TAGS_PER_EVENT: usize = 64;

/// Most items one [`EventQuery`](crate::dcb::EventQuery) may hold.
pub const MAX_QUERY_ITEMS: usize = 32;

/// Largest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Largest tombstone or archive reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// Largest global position or stream version a store accepts (`i64::MAX`),
/// so that every backend can hold it (PostgreSQL `BIGINT`).
pub const MAX_POSITION: u64 = i64::MAX as u64;

/// Most events one global read may return.
pub const MAX_READ_LIMIT: usize = 10_000;

/// Most event types one load or read filter may name.
pub const MAX_FILTER_TYPES: usize = 256;

/// Most tables one read model's view may declare.
pub const MAX_VIEW_TABLES: usize = 32;

/// Longest table name a read model's view may declare, in bytes (with a
/// backend's shadow prefix it stays within PostgreSQL's 63-byte
/// identifiers).
pub const MAX_VIEW_TABLE_NAME: usize = 48;

/// Largest encoded snapshot state, in bytes (16 MiB).
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;

/// Most upcasting steps applied to one event.
pub const MAX_UPCAST_STEPS: usize = 64;

/// Most middleware layers one command handler may hold.
pub const MAX_MIDDLEWARE: usize = 32;

/// Most retries a command handler may be configured with; conflicts and
/// transient store failures are each retried up to this many times.
pub const MAX_CONFLICT_RETRIES: u32 = 1_000;

/// Most live listeners one commit feed serves
/// ([`FeedError::TooManyListeners`](crate::store::FeedError::TooManyListeners) past it).
pub const MAX_LISTENERS: usize = 1024;

pub use crate::claim::{
    DEFAULT_MAX_ATTEMPTS, MAX_CLAIM_ATTEMPTS, MAX_CLAIM_BATCH, MAX_CLAIM_LEASE, MAX_ENQUEUE_ITEMS,
    MAX_WORK_PAYLOAD_BYTES, MIN_CLAIM_LEASE,
};
pub use crate::dead_letter::MAX_DEAD_LETTER_ERROR_BYTES;
