//! Projection sinks: a read model that applies a page of events and stores
//! the cursor after it in one atomic step.
//!
//! A subscription with a [`CheckpointStore`](crate::CheckpointStore) writes
//! twice per page (the handler's effects, then the cursor), so a crash
//! between the two delivers the page again: at least once. A
//! [`ProjectionSink`] owns both writes and makes them one (a database
//! transaction over the read model's tables and its checkpoint row), so a
//! crash leaves either both or neither, and every event's effect lands
//! exactly once.
//!
//! # Design
//! The contract is a page-level trait and deliberately not a family of
//! traits generic over a transaction type (`AppendInTx<Tx>`). Backends hold
//! their transactions in incompatible ways: SQLite runs its writes on a
//! dedicated writer thread, where a transaction is a synchronous closure and
//! an `.await` inside it would block that thread; a PostgreSQL driver hands
//! out an async transaction object the caller awaits on its own task. A
//! trait generic over `Tx` would need either an async method the SQLite
//! writer cannot run, or a sync one PostgreSQL cannot. What both can do is
//! "run this page and this cursor in one transaction", so that is the
//! shared contract; each backend offers its own transaction API
//! (`SqliteStore::write_transaction` in eskit-sqlite) for appends and
//! checkpoints in the caller's own transaction.

use std::fmt;
use std::future::Future;

use crate::error::{BoxError, StoreError};
use crate::event::RawEvent;
use crate::version::GlobalCursor;

/// Why [`ProjectionSink::apply`] failed. Either way nothing of the page
/// was stored: neither its effects nor the cursor.
#[derive(Debug)]
#[non_exhaustive]
pub enum SinkError {
    /// Storing failed (the database refused, was busy, closed, ...).
    Store(StoreError),
    /// The projection's own code refused the page (a payload it cannot
    /// decode, a rule it enforces).
    Projection(BoxError),
}

impl SinkError {
    /// Whether trying the same page again may succeed: a transient store
    /// failure, or a projection error (which the caller's retry policy
    /// bounds).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Projection(_) => true,
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(_) => f.write_str("the projection sink could not store the page"),
            Self::Projection(_) => f.write_str("the projection refused the page"),
        }
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            Self::Projection(e) => Some(e.as_ref()),
        }
    }
}

impl From<StoreError> for SinkError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// A read model that stores its effects and its cursor atomically.
///
/// **Invariant**: after [`apply`](Self::apply) returns `Ok`, the page's
/// effects and `next` are both durable; after it returns `Err`, or when its
/// future is dropped before it completes and the backend rolled back,
/// neither is. [`cursor`](Self::cursor) then returns the cursor of the last
/// page applied, so a subscription resuming from it never applies an event
/// twice and never skips one.
///
/// **Invariant**: applying is idempotent per event. Inside its transaction
/// an implementation skips the events at or before the cursor it has
/// stored, and never stores a cursor before it. A page can arrive twice
/// even with one subscriber: after an unknown outcome the subscription
/// retries it, and a run that was dropped may still have its transaction
/// queued when the next run reads the cursor.
pub trait ProjectionSink: Send + Sync {
    /// The cursor stored by the last [`apply`](Self::apply) for the
    /// projection `name`, `None` before the first.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad name, or a backend failure.
    fn cursor(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<GlobalCursor>, StoreError>> + Send;

    /// Applies `events` (one page, in cursor order; possibly empty when a
    /// filter skipped everything) and stores `next` as the projection's
    /// cursor, both or neither.
    ///
    /// # Errors
    /// [`SinkError::Store`] when storing failed, [`SinkError::Projection`]
    /// when the projection refused the page; nothing was stored.
    fn apply(
        &self,
        name: &str,
        events: &[RawEvent],
        next: GlobalCursor,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// What [`ShadowRebuild::swap_in_shadow`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SwapOutcome {
    /// The shadow replaced the live read model, and the live cursor is
    /// now the shadow's.
    Swapped {
        /// The cursor the read model is at now.
        cursor: GlobalCursor,
    },
    /// Nothing changed: the shadow's cursor is behind the live one (the
    /// live projection went on while the shadow caught up). Catch the
    /// shadow up again and retry.
    Behind {
        /// The shadow's cursor (`None` before its first page).
        shadow: Option<GlobalCursor>,
        /// The live projection's cursor.
        live: GlobalCursor,
    },
    /// There is no shadow: [`begin_shadow`](ShadowRebuild::begin_shadow)
    /// was not called, or its shadow was swapped in already.
    NoShadow,
}

/// A read model that can be rebuilt from zero in a shadow (on SQLite,
/// shadow tables in the same database) while the live one keeps serving
/// reads, then swapped in atomically.
///
/// The rebuild runs a subscription from the start through the sink
/// [`begin_shadow`](Self::begin_shadow) returns, under the checkpoint name
/// [`shadow_name`](Self::shadow_name), until it has caught up; then
/// [`swap_in_shadow`](Self::swap_in_shadow).
///
/// **Invariant**: the swap is one atomic step. Readers see the old read
/// model or the new one, never an empty or partial one. After it, the live
/// cursor is the shadow's, and a live subscription still running with an
/// older cursor in hand applies nothing twice (a [`ProjectionSink`] skips
/// events at or before its stored cursor).
///
/// **Invariant**: a swap never moves the live cursor back: when the shadow
/// is behind the live read model it refuses with [`SwapOutcome::Behind`].
pub trait ShadowRebuild: Send + Sync {
    /// The sink that writes into the shadow.
    type Shadow: ProjectionSink + 'static;

    /// The checkpoint name of the shadow's subscription.
    fn shadow_name(&self) -> &str;

    /// Drops any earlier shadow and creates an empty one, with no cursor.
    ///
    /// # Errors
    /// A backend failure.
    fn begin_shadow(&self) -> impl Future<Output = Result<Self::Shadow, StoreError>> + Send;

    /// Replaces the live read model with the shadow, and the live cursor
    /// with the shadow's, in one atomic step, unless the shadow is behind.
    ///
    /// # Errors
    /// A backend failure; nothing was swapped then.
    fn swap_in_shadow(&self) -> impl Future<Output = Result<SwapOutcome, StoreError>> + Send;
}
