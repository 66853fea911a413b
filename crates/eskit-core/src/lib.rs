//! Event-sourcing core for eskit-rs: events, metadata, expected versions,
//! errors and bounds, the backend traits, deciders and the command handler,
//! an in-memory backend, the event registry, upcasters, and Given/When/Then
//! helpers.
//!
//! The crate has no dependencies and no async runtime: futures are `Send`
//! and run on any executor ([`rt::block_on`] is enough for the memory
//! backend).
//!
//! # Layers
//! - Backends implement the bytes-level traits in [`store`]
//!   ([`EventStore`](store::EventStore), [`GlobalReader`](store::GlobalReader),
//!   [`StreamLifecycle`](store::StreamLifecycle),
//!   [`SnapshotStore`](store::SnapshotStore),
//!   [`CheckpointStore`](store::CheckpointStore),
//!   [`LockRegistry`](store::LockRegistry),
//!   [`DeadLetterStore`](store::DeadLetterStore),
//!   [`ClaimStore`](store::ClaimStore)), with the helpers in [`backend`].
//!   They store payload bytes with the event type, schema version, codec
//!   name and metadata beside them.
//! - [`typed`]: [`TypedStore`](typed::TypedStore) puts an
//!   [`EventSchema`](typed::EventSchema) (codec, event registry, upcasters)
//!   in front of any backend; typing happens only there.
//! - [`handler`]: [`CommandHandler`](handler::CommandHandler) runs a
//!   [`Decider`](handler::Decider): load, decide, append with the expected
//!   version, with snapshots, conflict retry and middleware.
//! - [`dcb`]: [`DcbHandler`](dcb::DcbHandler) runs a
//!   [`DcbDecider`](dcb::DcbDecider) (Dynamic Consistency Boundary): read
//!   the events an [`EventQuery`](dcb::EventQuery) selects by type and
//!   [`Tag`](event::Tag) across streams, decide, append with an
//!   [`AppendCondition`](dcb::AppendCondition).
//!
//! # Modules
//! The root holds modules by concern and no items:
//!
//! | Module | What it holds |
//! |---|---|
//! | [`prelude`] | the traits and types an application names daily |
//! | [`event`] | events, metadata, ids, tags, timestamps, names, versions |
//! | [`store`] | the backend traits, their options and results, the `Dyn` twins |
//! | [`backend`] | what backend authors need beyond the traits: shared validation, the commit notifier |
//! | [`typed`] | codecs, the registry, upcasters, the typed store, typed dispatch |
//! | [`handler`] | deciders, the command handler and its middleware |
//! | [`dcb`] | queries over tags, append conditions, the DCB decider and handler |
//! | [`error`] | validation, codec and store errors |
//! | [`limits`] | every bound as a named constant |
//! | [`memory`] | the in-memory backends |
//! | [`testing`] | Given/When/Then helpers |
//! | [`rt`] | a runtime-agnostic timer and `block_on` |
//!
//! Every item has exactly one path, in its module; the [`prelude`] is the
//! only second path. Re-exporting the common items at the root as well was
//! considered and left out: two paths for the same item make rustdoc,
//! compiler messages and code review disagree about where a thing lives,
//! and a flat root of a hundred items hides the layers above, while
//! `use eskit_core::prelude::*;` gives the same one-line convenience.
//!
//! # Example
//! ```
//! use eskit_core::prelude::*;
//! use eskit_core::{memory::MemoryStore, rt::block_on};
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

mod claim;
mod codec;
pub mod dcb;
mod dcb_decider;
mod dead_letter;
mod decider;
mod dispatch;
mod dyn_store;
pub mod error;
pub mod event;
mod feed;
pub mod handler;
mod id;
pub mod limits;
pub mod memory;
mod metadata;
mod name;
mod registry;
mod relay;
mod retry;
pub mod rt;
mod sink;
// The public `store` module below is the traits' API; this one holds them
// and the backend helpers, which `backend` re-exports.
#[path = "store.rs"]
mod store_impl;
mod tag;
pub mod testing;
mod time;
pub mod typed;
mod upcast;
mod version;
mod view;
mod wire;

pub mod store {
    //! The backend traits and what callers pass to them and get back: the
    //! event store, global reader, stream lifecycle, snapshots,
    //! checkpoints, locks, work claims and the commit feed, their options and results,
    //! and the object-safe `Dyn` twins for backends chosen at run time.
    //!
    //! Every `Dyn` twin is implemented for every implementor of its trait,
    //! and `Arc`, `Box` and `&` of a twin implement the trait again, so
    //! generic code takes either:
    //!
    //! ```
    //! use std::sync::Arc;
    //! use eskit_core::event::StreamName;
    //! use eskit_core::memory::MemoryStore;
    //! use eskit_core::store::{DynEventStore, EventStore};
    //! let store: Arc<dyn DynEventStore> = Arc::new(MemoryStore::new());
    //! let version = eskit_core::rt::block_on(store.stream_version(&StreamName::new("t", "1")?))?;
    //! assert_eq!(version.get(), 0);
    //! # Ok::<(), Box<dyn std::error::Error>>(())
    //! ```

    pub use crate::claim::{
        AfterFailure, Claim, ClaimOptions, ClaimStore, ClaimedItem, DynClaimStore, Enqueued,
        InvalidWork, NewWorkItem, WorkItem, WorkState,
    };
    pub use crate::dead_letter::{DeadLetter, DeadLetterStore, DynDeadLetterStore};
    pub use crate::dyn_store::{
        BoxFuture, DynCheckpointStore, DynEventQueryReader, DynEventStore, DynGlobalReader,
        DynLockRegistry, DynProjectionSink, DynSnapshotStore, DynStreamLifecycle,
    };
    pub use crate::feed::{Changed, CommitFeed, FeedError, Listener};
    pub use crate::relay::RelayedChange;
    pub use crate::sink::{ProjectionSink, ShadowRebuild, SinkError, SwapOutcome};
    pub use crate::store_impl::{
        AppendOptions, CheckpointStore, EventStore, FencingToken, GlobalBatch, GlobalPager,
        GlobalReader, Lease, LeaseLost, LoadOptions, LockGuard, LockLost, LockRegistry,
        PageOptions, PageSource, Pager, ReadOptions, Snapshot, SnapshotStore, StreamLifecycle,
        StreamState, StreamStatus, TenantScoped,
    };
    // Everything else in the implementation module (the backend helpers)
    // stays reachable inside the crate as `crate::store::...`.
    #[allow(unused_imports)]
    pub(crate) use crate::store_impl::*;
}

pub mod backend {
    //! What backend authors need beyond the traits in [`store`](crate::store):
    //! the shared validation every backend runs before touching storage
    //! (so all backends reject the same inputs), name quoting for error
    //! messages, and [`CommitNotifier`] to build a commit feed on. A backend
    //! checks an append against a stream's lifecycle state with
    //! [`StreamState::check_append`](crate::store::StreamState::check_append);
    //! the bounds are in [`limits`](crate::limits).
    //!
    //! An append whose idempotency key was used before is decided by
    //! [`idempotent_retry`] on every backend.
    //!
    //! Metadata has one wire shape on every backend: flat string pairs
    //! ([`Metadata::to_wire`](crate::event::Metadata::to_wire) and the strict
    //! [`Metadata::from_wire`](crate::event::Metadata::from_wire)), stored as
    //! text with [`metadata_to_json`] and read with [`metadata_from_json`],
    //! or put one pair per message header.

    pub use crate::claim::{
        lease_expired_error, timestamp_after, validate_dead_list, validate_enqueue, validate_lease,
    };
    pub use crate::dead_letter::bounded_error;
    pub use crate::feed::CommitNotifier;
    pub use crate::metadata::validate_idempotency_key;
    pub use crate::name::{QuotedName, quote_name, validate_name};
    pub use crate::relay::{validate_change, validate_change_limit};
    pub use crate::retry::{EventContent, HasContent, idempotent_retry};
    pub use crate::store_impl::{
        validate_append, validate_cursor, validate_in_range, validate_reason,
    };
    pub use crate::view::{TableNaming, ViewTableError, check_view_tables};
    pub use crate::wire::{
        MetadataWireError, decode_flat_json, encode_flat_json, metadata_from_json, metadata_to_json,
    };
}

pub mod prelude {
    //! What an application needs daily, for `use eskit_core::prelude::*;`:
    //! the traits whose methods it calls and the types nearly every
    //! command, projection or test names. Everything else has one path in
    //! its module.

    pub use crate::dcb::{DcbDecider, DcbHandler, EventQuery, EventQueryReader, QueryItem};
    pub use crate::error::{CodecError, StoreError};
    pub use crate::event::{
        EventType, ExpectedVersion, GlobalCursor, Metadata, NewEvent, RawEvent, RecordedEvent,
        StreamName, Tag, Version,
    };
    pub use crate::handler::{
        CommandHandler, CommandOptions, Decider, HandleError, RetryPolicy, SnapshotPolicy,
    };
    pub use crate::store::{
        AppendOptions, CheckpointStore, CommitFeed, EventStore, GlobalReader, LoadOptions,
        LockRegistry, ReadOptions, SnapshotStore, StreamLifecycle,
    };
    pub use crate::typed::{Codec, DomainEvent, EventCodec, EventSchema, TypedStore};
}
