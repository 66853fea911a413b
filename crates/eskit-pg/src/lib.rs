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
//! transaction, as [`PgSnapshotStore::save_in`] and
//! [`PgCheckpointStore::save_in`] save there; [`PgStore::projection_sink`]
//! applies a page to SQL read models with its cursor, exactly once.
//! [`PgStore::change_relay`] carries projection changes between processes
//! over the schema's `NOTIFY` channel.
//! [`PgStore::read_model`] keeps a view's tables in the store's schema,
//! written with their cursor in one transaction and rebuilt without
//! downtime in shadow tables ([`read_model`]).
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
//! the commits of a burst into one announcement (at most one per
//! [`ANNOUNCE_INTERVAL`], so other processes hear of a commit up to that
//! much later). The announcement carries the newest position the store has
//! committed (at most [`MAX_ANNOUNCED_DIGITS`] digits are read as one): a
//! subscription in another process counts it as lag while a transaction
//! still open holds the commit back from its reads. Appends inside a
//! caller's transaction and lifecycle changes notify inside their
//! transaction. A
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
//! # Row-level security
//! PostgreSQL enforces the tenant wall too, behind the store's own filters:
//! every table holding tenant rows (`streams`, `events`, `idempotency`,
//! `snapshots`, `checkpoints`, `deleted_high`, `dead_letters`,
//! `work_items`) has `ENABLE` and `FORCE ROW LEVEL SECURITY` and one policy,
//! for reads (`USING`) and written rows (`WITH CHECK`):
//! `tenant = coalesce(current_setting('eskit.tenant', true), '')`. The
//! store names the tenant per transaction with
//! `set_config('eskit.tenant', $1, true)` (transaction-local, like `SET
//! LOCAL`; the tenant is a bind parameter). An unset or empty setting means
//! "no tenant": such a transaction sees the rows of no tenant only and cannot
//! write a tenant's row, so the unscoped handle needs no setting, and a
//! pooled connection never keeps one (it ends with its transaction).
//!
//! Policies bind only roles that are neither superusers nor `BYPASSRLS`
//! (`FORCE` makes them bind the tables' owner as well). To turn the wall on,
//! migrate as the owner and run the application as a role of its own:
//!
//! ```no_run
//! use eskit_pg::{PgOptions, PgStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Once per deployment (and after upgrades), as the schema's owner; the
//! // role exists: CREATE ROLE orders_app LOGIN NOSUPERUSER NOBYPASSRLS ...
//! let owner = PgStore::connect(
//!     PgOptions::new("postgres://owner@db/app").with_schema("orders"),
//! )
//! .await?;
//! owner.grant_access("orders_app").await?;
//! owner.close().await;
//!
//! // The application, as that role: refuses to start if it would bypass.
//! let store = PgStore::connect(
//!     PgOptions::new("postgres://orders_app@db/app")
//!         .with_schema("orders")
//!         .require_row_security(),
//! )
//! .await?;
//! assert!(store.row_security());
//! # Ok(())
//! # }
//! ```
//!
//! [`PgStore::grant_access`] grants exactly what the store uses: `USAGE` on
//! the schema, `SELECT` on `eskit_migrations`, `SELECT`, `INSERT`, `UPDATE`
//! and `DELETE` on its tables and `USAGE` on its sequences: no DDL, no
//! `TRUNCATE`. A role that may not migrate opens an up-to-date schema
//! without any DDL, and gets [`PgError::NotMigrated`] for one that lacks
//! migrations. Connecting as the owner or a superuser keeps working as
//! before; [`PgStore::row_security`] says whether PostgreSQL applies the
//! policies to the store's role. For a superuser or `BYPASSRLS` role the
//! store sends no setting at all (it would change nothing).
//!
//! **Cost.** The hot paths name the tenant inside their own statement, so
//! they cost no round trip more. An append's head-row upsert takes its row
//! from a `set_config` in the same statement, and so does a checkpoint
//! save's row; a stream load, a global or DCB query page and a checkpoint
//! load read their tables in `LATERAL` subqueries (fenced with `OFFSET 0`)
//! of the row that calls `set_config`, so every scan starts after it. Either way the setting is in place before the statement's (and
//! the transaction's later statements') policy checks; were one ever
//! evaluated first, it would see a fresh transaction's "no tenant" and fail
//! closed (a refusal, or fewer rows), never show another tenant's row.
//! Every other operation of a tenant handle under row-level security
//! (stream version and status, the head, lifecycle, snapshots, dead
//! letters, claims, idempotent lookups) runs in a transaction that first
//! names the tenant: `BEGIN` and the `set_config` are two round trips more
//! for what was one autocommit statement (a read's transaction is dropped,
//! its `ROLLBACK` sent with the pool's release check, off the caller's
//! path). Measured on a shared 2-core machine (`tenant_setting_cost` in
//! the crate's tests), medians of 1,000 interleaved operations each, the
//! application role against a bypassing role, two runs: append 1.01x and
//! 1.04x, stream load 1.07x and 0.93x, a one-event global page 1.03x and
//! 1.18x (noise of the shared machine); with a separate `BEGIN` and
//! `set_config`, as the other operations do, a load was 1.37x and a page
//! 1.46x (about 0.35 ms more on a local socket). Operations of the unscoped
//! handle and of bypassing roles send no setting and cost nothing more.
//!
//! **Limits.** The policies trust the setting: they keep the store's own
//! statements (and any SQL run on its connections) to one tenant, not a
//! caller who can run `set_config` itself. An append or checkpoint save
//! inside the caller's transaction ([`PgStore::append_in`],
//! [`PgCheckpointStore::save_in`]) names the handle's tenant in that
//! transaction, and the setting stays until it ends. The global head of a
//! tenant handle is the tenant's own (its rows only, as before); sequences
//! are shared, so positions have holes where other tenants' events stand.
//! A snapshot save checks that no other tenant owns the stream by probing
//! the head table's unique index inside a savepoint (rolled back), as a
//! query cannot see another tenant's head row.
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
pub mod read_model;
mod relay;
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
pub use feed::{ANNOUNCE_INTERVAL, FEED_RECONNECT_MAX, FEED_RECONNECT_MIN, MAX_ANNOUNCED_DIGITS};
pub use group::MAX_GROUP_APPENDS;
pub use locks::{LOCK_PING_INTERVAL, PgLockRegistry};
pub use options::{
    DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, MAX_POOL_SIZE, MAX_SCHEMA_BYTES, PgOptions, RoleName,
    SchemaName,
};
pub use read_model::{PgReadModel, PgView};
pub use relay::PgChangeRelay;
pub use sink::{PgProjection, PgSink};
pub use store::{MAX_STREAM_ORDER_RETRIES, PgStore, READ_YOUR_WRITES_WAIT};
