//! Event-sourcing core for eskit-rs: events, metadata, expected versions,
//! errors and bounds, the backend traits, deciders and the command handler,
//! an in-memory backend, the event registry, upcasters, and Given/When/Then
//! helpers.
//!
//! The crate has no dependencies and no async runtime: futures are `Send`
//! and run on any executor ([`block_on`] is enough for the memory backend).
//!
//! # Layers
//! - Backends implement the bytes-level traits ([`EventStore`],
//!   [`GlobalReader`], [`StreamLifecycle`], [`SnapshotStore`],
//!   [`CheckpointStore`], [`LockRegistry`]). They store payload bytes with
//!   the event type, schema version, codec name and metadata beside them.
//! - [`TypedStore`] adds an [`EventSchema`] (codec, [`EventRegistry`],
//!   [`UpcasterRegistry`]) in front of any backend; typing happens only there.
//! - [`CommandHandler`] runs a [`Decider`]: load, decide, append with the
//!   expected version, with snapshots, conflict retry and middleware.
//! - [`DcbHandler`] runs a [`DcbDecider`] (Dynamic Consistency Boundary,
//!   see [`dcb`]): read the events an [`EventQuery`] selects by type and
//!   [`Tag`] across streams, decide, append with an [`AppendCondition`].
//!
//! # Example
//! ```
//! use eskit_core::*;
//!
//! #[derive(Debug, Clone, PartialEq)]
//! enum Event { Deposited(u64), Withdrawn(u64) }
//! impl DomainEvent for Event {
//!     fn event_type(&self) -> &'static str {
//!         match self { Event::Deposited(_) => "Deposited", Event::Withdrawn(_) => "Withdrawn" }
//!     }
//!     fn event_types() -> &'static [&'static str] { &["Deposited", "Withdrawn"] }
//! }
//!
//! /// Payload: the amount as 8 little-endian bytes; the variant is the event type.
//! struct AmountCodec;
//! impl EventCodec<Event> for AmountCodec {
//!     fn name(&self) -> &'static str { "amount-le" }
//!     fn encode(&self, e: &Event, out: &mut Vec<u8>) -> Result<(), CodecError> {
//!         let (Event::Deposited(n) | Event::Withdrawn(n)) = e;
//!         out.extend(n.to_le_bytes());
//!         Ok(())
//!     }
//!     fn decode(&self, ty: &str, b: &[u8]) -> Result<Event, CodecError> {
//!         let n = u64::from_le_bytes(b.try_into().map_err(|e| CodecError::decode(Some(ty), e))?);
//!         match ty {
//!             "Deposited" => Ok(Event::Deposited(n)),
//!             "Withdrawn" => Ok(Event::Withdrawn(n)),
//!             _ => Err(CodecError::UnknownEventType { event_type: ty.to_owned() }),
//!         }
//!     }
//! }
//!
//! #[derive(Debug)]
//! struct Insufficient;
//! impl std::fmt::Display for Insufficient {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("insufficient funds") }
//! }
//! impl std::error::Error for Insufficient {}
//!
//! struct Account;
//! impl Decider for Account {
//!     type State = u64;
//!     type Command = Event; // for brevity, commands mirror events here
//!     type Event = Event;
//!     type Error = Insufficient;
//!     fn initial_state(&self) -> u64 { 0 }
//!     fn decide(&self, balance: &u64, cmd: &Event) -> Result<Vec<Event>, Insufficient> {
//!         match cmd {
//!             Event::Withdrawn(n) if n > balance => Err(Insufficient),
//!             c => Ok(vec![c.clone()]),
//!         }
//!     }
//!     fn evolve(&self, balance: u64, e: &Event) -> u64 {
//!         match e { Event::Deposited(n) => balance + n, Event::Withdrawn(n) => balance - n }
//!     }
//! }
//!
//! let store = TypedStore::new(MemoryStore::new(), EventSchema::new(AmountCodec));
//! let handler = CommandHandler::new(Account, store);
//! let acc = StreamName::new("account", "acc-1")?;
//! block_on(handler.handle(&acc, &Event::Deposited(100)))?;
//! let after = block_on(handler.handle(&acc, &Event::Withdrawn(30)))?;
//! assert_eq!(after.state, 70);
//! let refused = block_on(handler.handle(&acc, &Event::Withdrawn(500)));
//! assert!(matches!(refused, Err(HandleError::Rejected(Insufficient))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
pub mod dcb;
mod dcb_decider;
mod decider;
mod dispatch;
pub mod dyn_store;
mod error;
mod event;
mod feed;
mod handler;
mod id;
pub mod limits;
pub mod memory;
mod metadata;
mod name;
mod registry;
mod rt;
mod store;
mod tag;
mod testing;
mod time;
mod typed;
mod upcast;
mod version;

pub use codec::{Codec, DomainEvent, EventCodec};
pub use dcb::{AppendCondition, EventQuery, EventQueryReader, QueryItem, QueryOptions, QueryPager};
pub use dcb_decider::{DcbDecider, DcbDeciderTest, DcbHandled, DcbHandler, Tagged};
pub use decider::Decider;
pub use dispatch::{DispatchError, Dispatched, Dispatcher};
pub use dyn_store::{
    BoxFuture, DynCheckpointStore, DynEventQueryReader, DynEventStore, DynGlobalReader,
    DynLockRegistry, DynSnapshotStore, DynStreamLifecycle,
};
pub use error::{BoxError, CodecError, LifecycleOp, StoreError, ValidationError, error_chain};
pub use event::{AppendResult, EventRecord, NewEvent, RawEvent, RecordedEvent};
pub use feed::{Changed, CommitFeed, CommitNotifier, FeedError, Listener};
pub use handler::{
    CommandContext, CommandHandler, CommandHandlerBuilder, CommandLog, CommandOptions, ConfigError,
    ConflictRetry, HandleError, HandleResult, Handled, LoggingMiddleware, Middleware, Next,
    RetryPolicy, SingleWriter, SnapshotPolicy,
};
pub use id::{EventId, InvalidEventId};
pub use memory::{MemoryCheckpointStore, MemoryLockRegistry, MemorySnapshotStore, MemoryStore};
pub use metadata::{Metadata, Principal, PrincipalKind, validate_idempotency_key};
pub use name::{
    CodecName, EventType, InvalidName, InvalidNameReason, NameKind, QuotedName, StreamId,
    StreamName, StreamType, quote_name, validate_name,
};
pub use registry::{EventRegistry, RegistryError, derive_type_name};
pub use rt::{Sleep, YieldNow, block_on, sleep, yield_now};
pub use store::{
    AppendOptions, CheckpointStore, EventStore, GlobalBatch, GlobalPager, GlobalReader,
    LoadOptions, LockGuard, LockRegistry, ReadOptions, Snapshot, SnapshotStore, StreamLifecycle,
    StreamState, StreamStatus, validate_append, validate_cursor, validate_in_range,
    validate_reason,
};
pub use store::{FencingToken, Lease, LeaseLost, LockLost};
pub use tag::Tag;
pub use testing::{DeciderTest, ProjectionTest, SpecFailure, line_diff};
pub use time::Timestamp;
pub use typed::{Appended, EventSchema, TypedStore};
pub use upcast::UpcasterRegistry;
pub use version::{ExpectedVersion, GlobalCursor, InvalidCursor, Position, Version};
