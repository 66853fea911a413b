//! PostgreSQL backend for eskit-rs.
//!
//! [`PgStore`] implements the core's [`EventStore`](eskit_core::store::EventStore),
//! [`GlobalReader`](eskit_core::store::GlobalReader) (gap-free under
//! concurrent writers and rolled-back transactions),
//! [`StreamLifecycle`](eskit_core::store::StreamLifecycle),
//! [`CommitFeed`](eskit_core::store::CommitFeed) and DCB query reads
//! ([`EventQueryReader`](eskit_core::dcb::EventQueryReader)) with append
//! conditions; [`PgStore::snapshots`], [`PgStore::checkpoints`] and
//! [`PgStore::locks`], [`PgStore::dead_letters`] and [`PgStore::claims`]
//! hand out the snapshot, checkpoint, lock, dead-letter and claim stores
//! over the same pool. [`PgStore::append_in`] appends inside the caller's own
//! transaction.
//!
//! ```no_run
//! use eskit_core::prelude::*;
//! use eskit_pg::{PgOptions, PgStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::connect(
//!     PgOptions::new("postgres://app@127.0.0.1:5432/app").with_schema("orders"),
//! )
//! .await?;
//! let stream = StreamName::new("order", "o-1")?;
//! let placed = NewEvent::new(EventType::new("Placed")?, br#"{"total":42}"#.to_vec());
//! store
//!     .append(&stream, ExpectedVersion::NoStream, vec![placed], AppendOptions::new())
//!     .await?;
//! assert_eq!(store.load(&stream, LoadOptions::new()).await?.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Storage
//! All tables live in one schema (default `eskit`, see
//! [`PgOptions::with_schema`]), created and migrated on connect by embedded,
//! versioned migrations recorded in `eskit_migrations`. The schema name is
//! checked against `[a-z_][a-z0-9_]*` and [`MAX_SCHEMA_BYTES`] before any
//! SQL runs; every value is a bind parameter.
//!
//! # Ordering
//! Positions come from a sequence at insert time, so they do not commit in
//! order. Every event also stores its transaction id (`xid8`), and global
//! reads return only events of transactions older than the oldest one still
//! running, in (transaction id, position) order: the core's
//! [`GlobalCursor`](eskit_core::event::GlobalCursor). The workspace's
//! `docs/ordering.md` explains why that is gap-free, and how stream order
//! is kept when a caller's transaction got its id early.
//!
//! # Commit feed and group commit
//! A standalone append announces its commit to other processes with a
//! `NOTIFY` sent right after the commit, by one task per store that folds
//! the commits of a burst into one announcement; appends inside a caller's
//! transaction and lifecycle changes notify inside their transaction. A
//! `NOTIFY` inside the transaction takes a database-wide lock held through
//! the commit's WAL flush: concurrent appends that each notified committed
//! one flush after another. Listeners in this process are woken directly.
//!
//! [`PgOptions::with_group_commit`] (off by default) makes concurrent
//! standalone appends of one store share transactions, each keeping its own
//! outcome; see the option for what it does and the workspace's
//! `docs/benchmarks.md` for what it measured.
//!
//! # Tenants
//! [`PgStore`] is [`TenantScoped`](eskit_core::store::TenantScoped):
//! `store.for_tenant(t)` is a handle that sees and writes only `t`'s
//! streams, reads, queries, snapshots, checkpoints and dead letters. Every
//! row carries its tenant (`''` for none) and every statement filters on
//! the handle's; an append to another tenant's stream fails with
//! `StoreError::WrongTenant`.
//!
//! # Runtime
//! The store uses sqlx on Tokio. Its work runs on the runtime current at
//! [`PgStore::connect`] (or the one given with [`PgOptions::with_runtime`]),
//! else on a small runtime of its own, so its futures complete under any
//! executor.

mod claims;
mod dcb;
mod dead_letter;
mod error;
mod extra;
mod feed;
mod group;
mod locks;
mod meta;
mod options;
mod row;
mod runtime;
mod schema;
mod sink;
mod sql;
mod store;

pub use claims::PgClaimStore;
pub use dead_letter::PgDeadLetterStore;
pub use error::PgError;
pub use extra::{PgCheckpointStore, PgSnapshotStore};
pub use feed::{FEED_RECONNECT_MAX, FEED_RECONNECT_MIN};
pub use group::MAX_GROUP_APPENDS;
pub use locks::{LOCK_PING_INTERVAL, PgLockRegistry};
pub use options::{
    DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, MAX_POOL_SIZE, MAX_SCHEMA_BYTES, PgOptions, SchemaName,
};
pub use sink::{PgProjection, PgSink};
pub use store::{MAX_STREAM_ORDER_RETRIES, PgStore, READ_YOUR_WRITES_WAIT};
