//! The embedded SQLite backend for eskit-rs: an event store, snapshots,
//! checkpoints, locks, a commit notifier and a cross-process change relay in
//! one database file, through rusqlite with SQLite bundled.
//!
//! [`SqliteStore`] implements the core's bytes-level traits
//! ([`EventStore`](eskit_core::store::EventStore),
//! [`GlobalReader`](eskit_core::store::GlobalReader),
//! [`StreamLifecycle`](eskit_core::store::StreamLifecycle)) with the same semantics
//! as the memory backend; [`SqliteStore::snapshots`] and
//! [`SqliteStore::checkpoints`] give the
//! [`SnapshotStore`](eskit_core::store::SnapshotStore) and
//! [`CheckpointStore`](eskit_core::store::CheckpointStore), and
//! [`SqliteStore::locks`] a [`LockRegistry`](eskit_core::store::LockRegistry) whose
//! locks hold across every process that opens the file (leases in the
//! `eskit_locks` table, see [`SqliteLockRegistry`]). It needs no async
//! runtime: futures complete from the store's own threads through wakers.
//!
//! # Example
//! ```
//! use eskit_core::{event::{EventType, ExpectedVersion, NewEvent, StreamName}, rt::block_on, store::{AppendOptions, EventStore, LoadOptions}};
//! use eskit_sqlite::{SqliteOptions, SqliteStore, Synchronous};
//!
//! let dir = std::env::temp_dir().join(format!("eskit-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let store = SqliteStore::open_with(
//!     SqliteOptions::file(dir.join("events.db")).with_synchronous(Synchronous::Full),
//! )?;
//! let account = StreamName::new("account", "acc-1")?;
//! let opened = NewEvent::new(EventType::new("Opened")?, br#"{"owner":"ada"}"#.to_vec())
//!     .with_codec("json");
//! let result = block_on(store.append(&account, ExpectedVersion::NoStream, vec![opened], AppendOptions::new()))?;
//! assert_eq!(result.last_version().get(), 1);
//!
//! let events = block_on(store.load(&account, LoadOptions::new()))?;
//! assert_eq!(events[0].event_type.as_str(), "Opened");
//! assert_eq!(events[0].payload, br#"{"owner":"ada"}"#);
//! block_on(store.close());
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Storage
//! Each event is one row of `eskit_events`: its stream key, version, id
//! (16 bytes), payload, timestamp, metadata and a *kind* key. Metadata is
//! the core's flat wire shape as one JSON object of strings
//! (`{"correlation_id":"..","initiator.kind":"user","x.region":"eu"}`, see
//! `eskit_core::backend::metadata_to_json`), the same text every backend
//! stores; rows written before it, with principals as nested objects and
//! extras under `"extra"`, are still read.
//! A kind is one (event type, schema version, codec name) triple, stored
//! once in `eskit_event_kinds`, so a load reads one integer per event
//! instead of three fields and hands out shared names; stream names are
//! shared the same way across reads (up to [`MAX_CACHED_STREAMS`]), as a
//! stream row is never renamed or removed. The view
//! `eskit_event_log` joins it all back into readable rows for the `sqlite3`
//! shell. The writer assigns each `position` one past the highest
//! ever assigned, and a hard delete records that high-water mark in
//! `eskit_sequence` before it removes events: positions strictly increase in
//! commit order and are never reused, also after a stream is deleted. (An
//! `AUTOINCREMENT` key gives the same guarantee by rewriting
//! `sqlite_sequence` on every commit, one more page written per append.)
//! An event's tags (DCB) are stored twice: in its row (`tags`, joined by
//! NUL bytes, `NULL` when it has none), which is what reads return, and in
//! `eskit_event_tags (tag, position)`, the index queries by tag read.
//! Events of a read whose stored tags are the same share one tag list, and
//! lists an earlier read parsed are kept for later reads (up to
//! [`MAX_CACHED_TAG_LISTS`]).
//! Every row carries an XXH3-64 checksum over all its
//! fields, including the names its kind stands for and its tags; a row that fails it, or
//! whose fields do not parse, is reported as
//! [`StoreError::Corrupt`](eskit_core::error::StoreError::Corrupt) and never
//! returned. The schema version is kept in `eskit_schema` and the file is
//! marked with `PRAGMA application_id` ([`APPLICATION_ID`]).
//!
//! # Durability
//! The database runs in WAL mode. [`Synchronous`] picks how commits reach
//! the disk:
//!
//! - [`Synchronous::Normal`] (default): an acknowledged append survives an
//!   application crash (`kill -9`); after a power loss or OS crash the
//!   appends since the last WAL checkpoint may be lost, but the database
//!   stays consistent (no torn append).
//! - [`Synchronous::Full`]: the WAL is synced before each commit returns, so
//!   every acknowledged append also survives a power loss.
//! - `OFF` is refused with [`OpenError::SynchronousOff`].
//!
//! WAL checkpoints (copying the log into the database, with a sync of
//! both) run on a thread of their own once the log passes
//! [`BACKGROUND_CHECKPOINT_FRAMES`], SQLite's own threshold, instead of
//! inside the commit that crossed it; the writer's commit checkpoints
//! itself only when the log reaches [`INLINE_CHECKPOINT_FRAMES`].
//!
//! # Concurrency and group commit
//! One writer thread owns the write connection. Appends that arrive while a
//! commit is running are committed together in the next `BEGIN IMMEDIATE`
//! transaction (up to [`MAX_GROUP_COMMIT`]). Each append is checked (expected
//! version, lifecycle, idempotency) before it writes, so a conflict fails only
//! that append; a storage failure while writing rolls the batch back and each
//! append is retried alone, so every caller gets its own outcome. With `FULL` or `EXTRA`, when the
//! previous commit carried several appends, the writer waits up to
//! [`GROUP_COMMIT_LINGER`] for as many again so they share one fsync; a lone
//! writer never waits. Loads and reads run on reader
//! threads with their own connections and see every commit whose append has
//! returned. A reader hands rows over in batches of raw fields; the
//! caller's task checks each row (checksum, fields) and builds the events of
//! one batch while the reader fills the next.
//!
//! # Calls on the caller's thread
//! [`SqliteOptions::with_calls_on_caller_thread`] (off by default) runs all
//! of this on the threads that await the store instead: no writer or reader
//! threads, and no hand-off to them and back on each call, which costs more
//! than a small read or a single append (see the option for when it is
//! safe: never on an async executor's worker threads). A read borrows a
//! read connection; a write is queued as above, and a caller that finds no
//! other caller running the queue runs it, its own job and those queued
//! meanwhile, so concurrent appends still share a transaction. A long read
//! then runs on one thread, without the reader's hand-over in batches, so
//! loads of thousands of events gain little or lose a little.
//!
//! # Cancel safety
//! A dropped append future never leaves a partial append: the writer commits
//! an append whole or not at all. Once polled, an append is queued and goes
//! ahead even if its future is dropped; retrying with the same idempotency
//! key tells (the retry returns `deduplicated: true` when the first one
//! committed). Reads are cancel safe.
//!
//! # Errors
//! Store operations fail with [`StoreError`](eskit_core::error::StoreError); SQLite's
//! failures map onto its backend-neutral kinds, each with a [`SqliteError`]
//! as its source ([`SqliteError::of`] finds it):
//!
//! | SQLite | `StoreError` | Why |
//! |---|---|---|
//! | `SQLITE_CORRUPT`, `SQLITE_NOTADB`, a column that does not parse | `Corrupt` | damaged data |
//! | `SQLITE_FULL` | `StorageFull` | the transaction rolled back; free space, then retry |
//! | `SQLITE_BUSY`, `SQLITE_LOCKED` | `Overloaded` | another connection held the lock past the busy timeout; nothing was written |
//! | `SQLITE_IOERR`, `SQLITE_CANTOPEN`, `SQLITE_PROTOCOL` | `Unavailable` | the file cannot be read or written; a commit that failed so may have reached the file (`is_outcome_unknown`) |
//! | a full request queue ([`SqliteError::Overloaded`]) | `Overloaded` | refused before it was queued |
//! | stopped worker threads ([`SqliteStore::close`]) | `Closed` | |
//! | `SQLITE_MISUSE`, `SQLITE_INTERNAL`, a statement this crate got wrong | `Internal` | a bug, not damaged data |
//! | anything else (`SQLITE_READONLY`, ...) | `Backend` | |
//!
//! [`SqliteStore::close`] closes the store for every handle; every later
//! call fails with `StoreError::Closed`.
//!
//! # Transactions
//! [`SqliteStore::write_transaction`] runs a closure in one write
//! transaction on the writer thread: appends through [`WriteTx::append`],
//! checkpoints through [`WriteTx::save_checkpoint`] and the caller's own
//! statements on [`WriteTx::connection`] commit together or not at all, and
//! the notifier fires only at the commit. [`SqliteStore::projection_sink`]
//! builds a [`ProjectionSink`](eskit_core::store::ProjectionSink) on it: a read
//! model whose pages and cursor commit together. [`SqliteStore::read_model`]
//! wraps a [`SqliteView`] (tables, create, apply) as such a read model that
//! can also be rebuilt without downtime in shadow tables of the same file
//! ([`read_model`], [`ShadowRebuild`](eskit_core::store::ShadowRebuild)).
//!
//! # Notifications
//! [`SqliteStore::notifier`] is signalled right after each commit, before the
//! append returns. [`SqliteStore::watch_external_writes`] polls
//! `PRAGMA data_version` to hear about commits by other processes, and
//! [`ChangeRelay`] carries projection changes between processes.

mod append;
mod checkpoint;
mod chunks;
mod claims;
#[cfg(test)]
mod compiles;
mod dead_letter;
mod error;
mod kinds;
mod locks;
mod notify;
mod oneshot;
mod options;
mod query;
pub mod read_model;
mod relay;
mod row;
mod schema;
mod snapshot;
mod store;
mod tx;
mod wal;
mod worker;

pub use checkpoint::SqliteCheckpointStore;
pub use claims::SqliteClaimStore;
pub use dead_letter::SqliteDeadLetterStore;
pub use error::{OpenError, SqliteError};
pub use kinds::MAX_CACHED_KINDS;
pub use locks::{
    LOCK_LEASE, LOCK_POLL_INTERVAL, MAX_LOCK_LEASE, MIN_LOCK_LEASE, SqliteLockRegistry,
};
pub use notify::{ExternalWatcher, MIN_POLL_INTERVAL};
pub use options::{
    DEFAULT_BUSY_TIMEOUT, MAX_GROUP_COMMIT, MAX_READERS, SqliteOptions, Synchronous,
};
pub use read_model::{SqliteReadModel, SqliteView};
pub use relay::{ChangeRelay, RelayedChange};
pub use row::{MAX_CACHED_STREAMS, MAX_CACHED_TAG_LISTS};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use snapshot::SqliteSnapshotStore;
pub use store::SqliteStore;
pub use tx::{SqliteProjection, SqliteSink, TxError, WriteTx};
pub use wal::{BACKGROUND_CHECKPOINT_FRAMES, INLINE_CHECKPOINT_FRAMES};
pub use worker::{GROUP_COMMIT_LINGER, MAX_QUEUED_REQUESTS};
