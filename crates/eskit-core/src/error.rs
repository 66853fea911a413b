//! Error types: validation of inputs, codec failures and store failures.
//!
//! Every error follows one rule, so that [`error_chain`] prints each message
//! once: a variant that wraps another error either
//! - says only its own part (`invalid input`) and returns the inner error
//!   from [`source`](StdError::source), or
//! - includes the inner error's message in its own (possibly after a
//!   prefix, as [`HandleError`](crate::handler::HandleError) does) and returns the
//!   inner error's source instead, skipping the inner error.
//!
//! Messages quote user-supplied names through [`quote_name`] and
//! [`StreamName::quoted`], escaped and cut to a bounded length.

use std::error::Error as StdError;
use std::fmt;

use crate::id::EventId;
use crate::limits::{
    MAX_APPEND_BYTES, MAX_EVENTS_PER_APPEND, MAX_FILTER_TYPES, MAX_IDEMPOTENCY_KEY_BYTES,
    MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_PAYLOAD_BYTES, MAX_QUERY_ITEMS, MAX_READ_LIMIT,
    MAX_REASON_BYTES, MAX_SNAPSHOT_BYTES, MAX_TAG_BYTES, MAX_TAGS_PER_EVENT,
};
use crate::name::{InvalidName, InvalidNameReason, StreamName, quote_name};
use crate::store::StreamState;
use crate::version::{ExpectedVersion, GlobalCursor, Version};

/// A boxed error from a backend, a codec or user code.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An input broke one of the bounds in [`limits`](crate::limits) or a shape rule.
/// Each bound has its own variant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidationError {
    /// A stream type, stream id, event type or other name is invalid.
    Name(InvalidName),
    /// An append carried no events.
    NoEvents,
    /// An append carried more than [`MAX_EVENTS_PER_APPEND`] events.
    TooManyEvents {
        /// Events in the rejected append.
        count: usize,
    },
    /// One payload is larger than [`MAX_PAYLOAD_BYTES`].
    PayloadTooLarge {
        /// Index of the event in its append.
        index: usize,
        /// Its payload size in bytes.
        len: usize,
    },
    /// The payloads of one append sum to more than [`MAX_APPEND_BYTES`].
    AppendTooLarge {
        /// Total payload bytes of the append.
        len: usize,
    },
    /// Metadata has more than [`MAX_METADATA_ENTRIES`] extra entries.
    TooManyMetadataEntries {
        /// Extra entries present.
        count: usize,
    },
    /// Metadata is larger than [`MAX_METADATA_BYTES`].
    MetadataTooLarge {
        /// Its size in bytes.
        len: usize,
    },
    /// A metadata value contains a NUL character, which several backends
    /// cannot store (PostgreSQL `jsonb`).
    MetadataContainsNul,
    /// A position or version is above [`MAX_POSITION`](crate::limits::MAX_POSITION).
    OutOfRange {
        /// The rejected value.
        value: u64,
    },
    /// An idempotency key is empty or longer than [`MAX_IDEMPOTENCY_KEY_BYTES`].
    InvalidIdempotencyKey {
        /// The key's length in bytes.
        len: usize,
    },
    /// A tombstone or archive reason is longer than [`MAX_REASON_BYTES`].
    ReasonTooLong {
        /// The reason's length in bytes.
        len: usize,
    },
    /// A tombstone or archive reason contains a NUL character, which
    /// several backends cannot store (PostgreSQL `text`).
    ReasonContainsNul,
    /// A read limit is zero or larger than [`MAX_READ_LIMIT`].
    InvalidLimit {
        /// The rejected limit.
        limit: usize,
    },
    /// A filter names more than [`MAX_FILTER_TYPES`] event types.
    TooManyFilterTypes {
        /// Types named.
        count: usize,
    },
    /// A version range whose end is before its start.
    InvalidVersionRange {
        /// First version wanted.
        from: Version,
        /// Last version wanted.
        to: Version,
    },
    /// A schema version of zero; schema versions start at 1.
    ZeroSchemaVersion,
    /// An encoded snapshot is larger than [`MAX_SNAPSHOT_BYTES`].
    SnapshotTooLarge {
        /// Its size in bytes.
        len: usize,
    },
    /// Two events of one append carry the same id.
    DuplicateEventId {
        /// The shared id.
        id: EventId,
    },
    /// A [`Tag`](crate::event::Tag) is empty, longer than [`MAX_TAG_BYTES`] or
    /// contains NUL.
    InvalidTag {
        /// Which rule it broke.
        reason: InvalidNameReason,
    },
    /// One event carries more than [`MAX_TAGS_PER_EVENT`] tags.
    TooManyTags {
        /// Index of the event in its append.
        index: usize,
        /// Tags it carries.
        count: usize,
    },
    /// An [`EventQuery`](crate::dcb::EventQuery) has more than [`MAX_QUERY_ITEMS`] items.
    TooManyQueryItems {
        /// Items in the query.
        count: usize,
    },
    /// A [`QueryItem`](crate::dcb::QueryItem) names more than
    /// [`MAX_TAGS_PER_EVENT`] tags (no event could match it).
    TooManyQueryTags {
        /// Index of the item in its query.
        item: usize,
        /// Tags it names.
        count: usize,
    },
    /// A claim-store input is outside its bounds.
    Work(crate::claim::InvalidWork),
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(e) => e.fmt(f),
            Self::NoEvents => f.write_str("an append needs at least one event"),
            Self::TooManyEvents { count } => write!(
                f,
                "an append carries {count} events, the maximum is {MAX_EVENTS_PER_APPEND}"
            ),
            Self::PayloadTooLarge { index, len } => write!(
                f,
                "payload of event {index} is {len} bytes, the maximum is {MAX_PAYLOAD_BYTES}"
            ),
            Self::AppendTooLarge { len } => write!(
                f,
                "payloads of one append sum to {len} bytes, the maximum is {MAX_APPEND_BYTES}"
            ),
            Self::TooManyMetadataEntries { count } => write!(
                f,
                "metadata has {count} extra entries, the maximum is {MAX_METADATA_ENTRIES}"
            ),
            Self::MetadataTooLarge { len } => write!(
                f,
                "metadata is {len} bytes, the maximum is {MAX_METADATA_BYTES}"
            ),
            Self::MetadataContainsNul => f.write_str("metadata value contains a NUL character"),
            Self::OutOfRange { value } => write!(
                f,
                "position or version {value} is above the maximum {}",
                crate::limits::MAX_POSITION
            ),
            Self::InvalidIdempotencyKey { len } => write!(
                f,
                "idempotency key is {len} bytes, it must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES}"
            ),
            Self::ReasonTooLong { len } => write!(
                f,
                "reason is {len} bytes, the maximum is {MAX_REASON_BYTES}"
            ),
            Self::ReasonContainsNul => f.write_str("reason contains a NUL character"),
            Self::InvalidLimit { limit } => {
                write!(f, "read limit {limit} is not within 1..={MAX_READ_LIMIT}")
            }
            Self::TooManyFilterTypes { count } => write!(
                f,
                "filter names {count} event types, the maximum is {MAX_FILTER_TYPES}"
            ),
            Self::InvalidVersionRange { from, to } => {
                write!(f, "version range {from}..={to} is empty")
            }
            Self::ZeroSchemaVersion => f.write_str("schema versions start at 1"),
            Self::SnapshotTooLarge { len } => write!(
                f,
                "snapshot is {len} bytes, the maximum is {MAX_SNAPSHOT_BYTES}"
            ),
            Self::DuplicateEventId { id } => {
                write!(f, "two events of the append carry the id {id}")
            }
            Self::InvalidTag { reason } => match reason {
                InvalidNameReason::Empty => f.write_str("tag is empty"),
                InvalidNameReason::TooLong { len } => {
                    write!(f, "tag is {len} bytes long, the maximum is {MAX_TAG_BYTES}")
                }
                InvalidNameReason::ContainsNul => f.write_str("tag contains a NUL byte"),
            },
            Self::TooManyTags { index, count } => write!(
                f,
                "event {index} carries {count} tags, the maximum is {MAX_TAGS_PER_EVENT}"
            ),
            Self::TooManyQueryItems { count } => write!(
                f,
                "query has {count} items, the maximum is {MAX_QUERY_ITEMS}"
            ),
            Self::TooManyQueryTags { item, count } => write!(
                f,
                "query item {item} names {count} tags, the maximum is {MAX_TAGS_PER_EVENT}"
            ),
            Self::Work(e) => e.fmt(f),
        }
    }
}

impl StdError for ValidationError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            // The message is the name error's own: continue below it.
            Self::Name(e) => e.source(),
            _ => None,
        }
    }
}

impl From<InvalidName> for ValidationError {
    fn from(e: InvalidName) -> Self {
        Self::Name(e)
    }
}

/// Turning values into bytes or bytes into values failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// The event type is not registered, so it cannot be decoded.
    UnknownEventType {
        /// The stored event type name.
        event_type: String,
    },
    /// The event was written with a codec this reader does not know.
    UnknownCodec {
        /// The stored codec name.
        codec: String,
    },
    /// Encoding a value failed.
    Encode {
        /// The event type, when known.
        event_type: Option<String>,
        /// What the codec reported.
        source: BoxError,
    },
    /// Decoding bytes failed; the bytes are malformed or of another shape.
    Decode {
        /// The event type, when known.
        event_type: Option<String>,
        /// What the codec reported.
        source: BoxError,
    },
    /// The event was stored with a newer schema version than this code knows.
    NewerSchema {
        /// The event type.
        event_type: String,
        /// The stored schema version.
        stored: u32,
        /// The newest schema version this code knows.
        known: u32,
    },
    /// No upcaster covers a step needed to reach the current schema version.
    MissingUpcaster {
        /// The event type.
        event_type: String,
        /// The schema version without an upcaster.
        from: u32,
        /// The schema version being upcast to.
        target: u32,
    },
    /// Reaching the current schema version would take more than
    /// [`MAX_UPCAST_STEPS`](crate::limits::MAX_UPCAST_STEPS) steps.
    TooManyUpcastSteps {
        /// The event type.
        event_type: String,
    },
    /// An upcaster failed.
    Upcast {
        /// The event type.
        event_type: String,
        /// The schema version the failing step started from.
        from: u32,
        /// What the upcaster reported.
        source: BoxError,
    },
}

impl CodecError {
    /// A decode failure with its cause.
    pub fn decode(event_type: Option<&str>, source: impl Into<BoxError>) -> Self {
        Self::Decode {
            event_type: event_type.map(str::to_owned),
            source: source.into(),
        }
    }

    /// An encode failure with its cause.
    pub fn encode(event_type: Option<&str>, source: impl Into<BoxError>) -> Self {
        Self::Encode {
            event_type: event_type.map(str::to_owned),
            source: source.into(),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownEventType { event_type } => {
                write!(f, "unknown event type {}", quote_name(event_type))
            }
            Self::UnknownCodec { codec } => write!(f, "unknown codec {}", quote_name(codec)),
            Self::Encode {
                event_type: Some(t),
                ..
            } => write!(f, "failed to encode event {}", quote_name(t)),
            Self::Encode { .. } => f.write_str("failed to encode value"),
            Self::Decode {
                event_type: Some(t),
                ..
            } => write!(f, "failed to decode event {}", quote_name(t)),
            Self::Decode { .. } => f.write_str("failed to decode value"),
            Self::NewerSchema {
                event_type,
                stored,
                known,
            } => write!(
                f,
                "event {} has schema version {stored}, newer than the known {known}",
                quote_name(event_type)
            ),
            Self::MissingUpcaster {
                event_type,
                from,
                target,
            } => write!(
                f,
                "no upcaster for event {} from schema version {from} (target {target})",
                quote_name(event_type)
            ),
            Self::TooManyUpcastSteps { event_type } => write!(
                f,
                "upcasting event {} takes more than {} steps",
                quote_name(event_type),
                crate::limits::MAX_UPCAST_STEPS
            ),
            Self::Upcast {
                event_type, from, ..
            } => write!(
                f,
                "upcaster for event {} from schema version {from} failed",
                quote_name(event_type)
            ),
        }
    }
}

impl StdError for CodecError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Encode { source, .. }
            | Self::Decode { source, .. }
            | Self::Upcast { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Which lifecycle operation was refused in [`StoreError::InvalidLifecycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LifecycleOp {
    /// Tombstoning a stream.
    Tombstone,
    /// Archiving a stream.
    Archive,
    /// Restoring an archived stream.
    Restore,
    /// Hard-deleting a stream.
    Delete,
}

impl fmt::Display for LifecycleOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tombstone => "tombstone",
            Self::Archive => "archive",
            Self::Restore => "restore",
            Self::Delete => "delete",
        })
    }
}

/// A store operation failed. Backends map their failures onto these meanings;
/// anything else keeps the original error as [`StoreError::Backend`].
///
/// # Failures of the backend itself
/// Besides the outcomes of the operation (conflicts, lifecycle states,
/// validation), every backend reports its own trouble with the same
/// backend-neutral kinds, each keeping the backend's error as its
/// [`source`](StdError::source) where there is one:
///
/// | Kind | Meaning | [`is_transient`](Self::is_transient) | A write that failed so |
/// |---|---|---|---|
/// | [`Unavailable`](Self::Unavailable) | refused or lost connection, storage that cannot be reached | yes: it may come back | may have been applied if the connection was lost (or the I/O failed) while it was in flight |
/// | [`TimedOut`](Self::TimedOut) | no answer in time | yes | **outcome unknown**: retry an append with the same idempotency key |
/// | [`Overloaded`](Self::Overloaded) | refused for now: queues full, locks held too long by others | yes, after a backoff | was not applied |
/// | [`StorageFull`](Self::StorageFull) | no space left | no: space must be freed first | was not applied |
/// | [`Closed`](Self::Closed) | the store was closed | no: it stays closed | was not applied |
/// | [`Internal`](Self::Internal) | a broken invariant in the backend or the core (a bug), not damaged data | no | unknown |
/// | [`Corrupt`](Self::Corrupt) | stored data is damaged | no | was not applied |
///
/// Only an append whose outcome may be unknown
/// ([`is_outcome_unknown`](Self::is_outcome_unknown)) needs care: retried
/// without an idempotency key it could apply twice. With the key, the retry
/// either writes it or reports the earlier append as `deduplicated`.
/// [`ConflictRetry`](crate::handler::ConflictRetry) follows these rules.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency conflict: the stream is not at the expected version.
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamName,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's actual last version ([`Version::ZERO`] when it has no events).
        actual: Version,
    },
    /// The stream is tombstoned or hard-deleted and accepts no appends.
    StreamDeleted {
        /// The stream.
        stream: StreamName,
    },
    /// The stream is archived and accepts no appends until restored.
    StreamArchived {
        /// The stream.
        stream: StreamName,
    },
    /// The stream does not exist.
    StreamNotFound {
        /// The stream.
        stream: StreamName,
    },
    /// A lifecycle operation does not apply to the stream's current state.
    InvalidLifecycle {
        /// The stream.
        stream: StreamName,
        /// Its current state.
        state: StreamState,
        /// The refused operation.
        operation: LifecycleOp,
    },
    /// The stream belongs to another tenant than the handle's (or to a
    /// tenant, and the handle is unscoped, or the other way round). Nothing
    /// was written. The error does not say who owns the stream.
    WrongTenant {
        /// The stream.
        stream: StreamName,
    },
    /// The idempotency key was used before on this stream with different events.
    IdempotencyConflict {
        /// The stream.
        stream: StreamName,
        /// The reused key.
        key: String,
    },
    /// An event of the append carries the id of an event already stored
    /// (in any stream): event ids are unique in a store. Nothing was
    /// written.
    DuplicateEventId {
        /// The id.
        id: EventId,
    },
    /// The append's [`AppendCondition`](crate::dcb::AppendCondition) failed: an
    /// event matching its query was appended after the cursor the decision
    /// read up to. Nothing was written; read again and decide again.
    ConditionFailed {
        /// The cursor of the first such event.
        cursor: GlobalCursor,
    },
    /// An input broke a bound or rule.
    Validation(ValidationError),
    /// Encoding or decoding a value failed.
    Codec(CodecError),
    /// Stored data is damaged: it fails its checks or cannot be read back.
    Corrupt {
        /// What was found.
        detail: String,
    },
    /// The backend cannot be reached: a refused or lost connection, or
    /// storage that fails to read or write. Transient: it may come back.
    ///
    /// A write that was in flight when the connection was lost (or the I/O
    /// failed) may still have been applied, as after a
    /// [`TimedOut`](Self::TimedOut): retry an append with the same
    /// idempotency key.
    Unavailable {
        /// What the backend reported.
        source: Option<BoxError>,
    },
    /// The backend did not answer in time. Transient.
    ///
    /// **For an append the outcome is unknown:** it may have been applied.
    /// Retry it with the same idempotency key; the retry then either writes
    /// it or returns the earlier append as `deduplicated`. Without a key a
    /// retry could apply it twice.
    TimedOut {
        /// What the backend reported.
        source: Option<BoxError>,
    },
    /// The backend refused the operation for now, without doing any of it:
    /// its queues are full, or others hold what it needs for too long.
    /// Transient: retry after a backoff.
    Overloaded {
        /// What the backend reported.
        source: Option<BoxError>,
    },
    /// No space is left for the write; nothing of it was written. Not
    /// transient: retrying helps only after space is freed. Reads still work.
    StorageFull {
        /// What the backend reported.
        source: Option<BoxError>,
    },
    /// The store was closed (through any of its handles); every later call
    /// fails so. Not transient.
    Closed,
    /// A broken invariant: the backend or the core found a state it should
    /// never reach (a bug, not damaged data, which is
    /// [`Corrupt`](Self::Corrupt)). Not transient.
    Internal {
        /// What was found.
        detail: String,
        /// The error behind it, if any.
        source: Option<BoxError>,
    },
    /// The backend failed for another reason; the source says why.
    Backend(BoxError),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Self::Backend(e.into())
    }

    /// [`StoreError::Unavailable`] with the backend's error.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            source: Some(source.into()),
        }
    }

    /// [`StoreError::TimedOut`] with the backend's error.
    pub fn timed_out(source: impl Into<BoxError>) -> Self {
        Self::TimedOut {
            source: Some(source.into()),
        }
    }

    /// [`StoreError::Overloaded`] with the backend's error.
    pub fn overloaded(source: impl Into<BoxError>) -> Self {
        Self::Overloaded {
            source: Some(source.into()),
        }
    }

    /// [`StoreError::StorageFull`] with the backend's error.
    pub fn storage_full(source: impl Into<BoxError>) -> Self {
        Self::StorageFull {
            source: Some(source.into()),
        }
    }

    /// [`StoreError::Internal`] without an underlying error.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::Internal {
            detail: detail.into(),
            source: None,
        }
    }

    /// Whether this is an optimistic concurrency conflict worth retrying
    /// after reading again: a stream not at the expected version, or a
    /// failed [`AppendCondition`](crate::dcb::AppendCondition) (see
    /// [`is_condition_failed`](Self::is_condition_failed) to tell them
    /// apart). Both mean another writer changed what the decision was made
    /// on, and both are what conflict retries retry.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::WrongExpectedVersion { .. } | Self::ConditionFailed { .. }
        )
    }

    /// Whether an append's [`AppendCondition`](crate::dcb::AppendCondition) failed.
    pub fn is_condition_failed(&self) -> bool {
        matches!(self, Self::ConditionFailed { .. })
    }

    /// Whether the same operation may succeed if tried again after a
    /// backoff, without any change: [`Unavailable`](Self::Unavailable),
    /// [`TimedOut`](Self::TimedOut) and [`Overloaded`](Self::Overloaded).
    ///
    /// Conflicts are not transient (the same append conflicts again; reload
    /// and decide again instead), nor is a full disk (it needs space freed),
    /// a closed store, damaged data, a bug, or an unclassified
    /// [`Backend`](Self::Backend) error. Before retrying an append, check
    /// [`is_outcome_unknown`](Self::is_outcome_unknown).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::TimedOut { .. } | Self::Overloaded { .. }
        )
    }

    /// Whether a write that failed this way may still have been applied:
    /// [`TimedOut`](Self::TimedOut) and [`Unavailable`](Self::Unavailable)
    /// (a connection lost while the write was in flight). Retry such an
    /// append only with the same idempotency key.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Self::TimedOut { .. } | Self::Unavailable { .. })
    }

    /// Whether the backend could not be reached ([`StoreError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Whether the backend did not answer in time ([`StoreError::TimedOut`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::TimedOut { .. })
    }

    /// Whether the backend refused the operation for now
    /// ([`StoreError::Overloaded`]).
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Self::Overloaded { .. })
    }

    /// Whether no space was left ([`StoreError::StorageFull`]).
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Self::StorageFull { .. })
    }

    /// Whether the store was closed ([`StoreError::Closed`]); not to be
    /// confused with [`is_stream_closed`](Self::is_stream_closed).
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }

    /// Whether the stream refuses appends because of its lifecycle state.
    pub fn is_stream_closed(&self) -> bool {
        matches!(
            self,
            Self::StreamDeleted { .. } | Self::StreamArchived { .. }
        )
    }

    /// Whether the stream was not found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::StreamNotFound { .. })
    }

    /// Whether the input was rejected by validation.
    pub fn is_validation(&self) -> bool {
        matches!(self, Self::Validation(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => write!(
                f,
                "concurrency conflict on stream {}: expected {expected}, actual version {actual}",
                stream.quoted()
            ),
            Self::StreamDeleted { stream } => write!(f, "stream {} is deleted", stream.quoted()),
            Self::StreamArchived { stream } => {
                write!(f, "stream {} is archived", stream.quoted())
            }
            Self::StreamNotFound { stream } => write!(f, "stream {} not found", stream.quoted()),
            Self::WrongTenant { stream } => write!(
                f,
                "stream {} belongs to another tenant than this handle's",
                stream.quoted()
            ),
            Self::InvalidLifecycle {
                stream,
                state,
                operation,
            } => write!(
                f,
                "cannot {operation} stream {}: it is {state}",
                stream.quoted()
            ),
            Self::IdempotencyConflict { stream, key } => write!(
                f,
                "idempotency key {} was used on stream {} with different events",
                quote_name(key),
                stream.quoted()
            ),
            Self::DuplicateEventId { id } => write!(f, "event id {id} is already stored"),
            Self::ConditionFailed { cursor } => write!(
                f,
                "append condition failed: a matching event was appended at {cursor}"
            ),
            Self::Validation(_) => f.write_str("invalid input"),
            Self::Codec(_) => f.write_str("codec failure"),
            Self::Corrupt { detail } => write!(f, "stored data is corrupt: {detail}"),
            Self::Unavailable { .. } => f.write_str("the store is unavailable"),
            Self::TimedOut { .. } => f.write_str(
                "the store did not answer in time (the outcome of an append is unknown: \
                 retry it with the same idempotency key)",
            ),
            Self::Overloaded { .. } => f.write_str("the store is overloaded, try again later"),
            Self::StorageFull { .. } => f.write_str("no storage space left"),
            Self::Closed => f.write_str("the store is closed"),
            Self::Internal { detail, .. } => write!(f, "internal error: {detail}"),
            Self::Backend(_) => f.write_str("backend failure"),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Validation(e) => Some(e),
            Self::Codec(e) => Some(e),
            Self::Backend(e) => Some(e.as_ref()),
            Self::Unavailable { source }
            | Self::TimedOut { source }
            | Self::Overloaded { source }
            | Self::StorageFull { source }
            | Self::Internal { source, .. } => source.as_deref().map(|e| e as _),
            _ => None,
        }
    }
}

impl From<ValidationError> for StoreError {
    fn from(e: ValidationError) -> Self {
        Self::Validation(e)
    }
}

impl From<InvalidName> for StoreError {
    fn from(e: InvalidName) -> Self {
        Self::Validation(ValidationError::Name(e))
    }
}

impl From<CodecError> for StoreError {
    fn from(e: CodecError) -> Self {
        Self::Codec(e)
    }
}

/// Formats an error with all its sources, `outer: inner: root`.
///
/// Display messages in this project never repeat their source's text (see
/// the rule in this module's docs), so this is how to show a complete
/// message in one line.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
