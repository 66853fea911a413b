//! RELIABILITY C1-C4 for `eskit-processor`, written once and run by every
//! backend: a backend describes how to get a fresh store with its
//! checkpoint and dead-letter stores ([`ProcessorBackend`]) and, for the
//! tests that kill processes, how a child process opens the same store
//! ([`ProcessBackend`]); each scenario is an `async fn` (or, for the kill
//! tests, the test binary's `main`) over that description.
//!
//! - C1, [`delivery::c1_every_subscription_sees_its_part_once_in_order`].
//! - C2, [`kill::kill_resume_main`]: a subscriber process killed with
//!   SIGKILL again and again; and in one process with a transactional
//!   sink, [`exactly_once`] ([`exactly_once::EffectsBackend`]).
//! - C3, [`poison`]: a poison event dead-lettered (and the rest handled) or
//!   halted on (and never skipped).
//! - C4, [`views::c4_a_view_rebuilt_from_zero_equals_the_live_one`] for a
//!   state view, and [`read_models`] for a transactional read model with a
//!   zero-downtime shadow rebuild ([`read_models::ReadModelBackend`]).
//! - Leader handover across processes, [`kill::leader_kill_main`].
//!
//! Behind the `processor` feature. Scenarios run on the caller's Tokio
//! runtime (a multi-thread one: writers and subscriptions run as tasks).
//!
//! ```
//! use eskit_core::{
//!     error::BoxError,
//!     memory::{MemoryCheckpointStore, MemoryDeadLetterStore, MemoryStore},
//! };
//! use eskit_testing::processor::{Parts, ProcessorBackend};
//!
//! struct Memory;
//!
//! impl ProcessorBackend for Memory {
//!     type Store = MemoryStore;
//!     type Checkpoints = MemoryCheckpointStore;
//!     type DeadLetters = MemoryDeadLetterStore;
//!
//!     async fn fresh(&self) -> Result<Parts<Self>, BoxError> {
//!         Ok(Parts {
//!             store: MemoryStore::new(),
//!             checkpoints: MemoryCheckpointStore::new(),
//!             dead_letters: MemoryDeadLetterStore::new(),
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), BoxError> {
//! eskit_testing::processor::poison::c3_poison_halts_without_skipping(&Memory).await?;
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eskit_core::{
    error::{BoxError, StoreError},
    event::{EventType, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName},
    store::{
        AppendOptions, CheckpointStore, CommitFeed, DeadLetterStore, EventStore, GlobalReader,
        LockRegistry, ReadOptions,
    },
};
use eskit_processor::{HealthHandle, SubscriptionState};

pub mod delivery;
pub mod exactly_once;
pub mod kill;
pub mod poison;
pub mod read_models;
pub mod views;

/// What a scenario returns: `Ok` when every check held.
pub type ScenarioResult = Result<(), BoxError>;

/// A fresh store and the stores a subscription keeps beside it.
pub struct Parts<B: ProcessorBackend + ?Sized> {
    /// The event store, empty.
    pub store: B::Store,
    /// Where subscriptions save their cursors.
    pub checkpoints: B::Checkpoints,
    /// Where the dead-letter policy puts events that keep failing.
    pub dead_letters: B::DeadLetters,
}

impl<B: ProcessorBackend + ?Sized> fmt::Debug for Parts<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

/// A backend under test: fresh, empty stores on demand.
pub trait ProcessorBackend: Send + Sync + 'static {
    /// The event store.
    type Store: EventStore + GlobalReader + CommitFeed + Clone + Send + Sync + 'static;
    /// Its checkpoint store.
    type Checkpoints: CheckpointStore + Clone + Send + Sync + 'static;
    /// Its dead-letter store.
    type DeadLetters: DeadLetterStore + Clone + Send + Sync + 'static;

    /// An empty store (no events, no checkpoints, no dead letters) no other
    /// scenario uses.
    ///
    /// # Errors
    /// Whatever stopped the store from opening; the scenario fails with it.
    fn fresh(&self) -> impl Future<Output = Result<Parts<Self>, BoxError>> + Send;

    /// Closes a store a scenario is done with. The default drops it.
    fn close(&self, parts: Parts<Self>) -> impl Future<Output = ()> + Send {
        drop(parts);
        std::future::ready(())
    }
}

/// A backend whose store other processes can open too, for the tests that
/// kill subscriber processes.
pub trait ProcessBackend: ProcessorBackend {
    /// The lock registry leader leases come from.
    type Locks: LockRegistry + Clone + Send + Sync + 'static;

    /// Creates an empty store that [`open`](Self::open) can open again from
    /// another process, given `dir` (a directory of the test's own, which
    /// the parent removes at the end) and the returned location.
    ///
    /// # Errors
    /// Whatever stopped the store from being created.
    fn create(
        &self,
        dir: &Path,
    ) -> impl Future<Output = Result<(Parts<Self>, String), BoxError>> + Send;

    /// Opens, in a child process, the store [`create`](Self::create) made.
    /// The second value lives as long as the child uses the store (for
    /// example a watcher that turns other processes' commits into feed
    /// notifications).
    ///
    /// # Errors
    /// Whatever stopped the store from opening.
    fn open(
        &self,
        dir: &Path,
        location: &str,
    ) -> impl Future<Output = Result<(Parts<Self>, Box<dyn Any + Send>), BoxError>> + Send;

    /// The registry a subscription's leader lease is taken from.
    ///
    /// # Errors
    /// Whatever stopped the registry from being made.
    fn leader_locks(&self, store: &Self::Store) -> Result<Self::Locks, BoxError>;

    /// How a lost leader's lease ends (printed with the handover times).
    fn lease_description(&self) -> String;
}

/// Appends `count` events of type `ty` with empty payloads, 10 an append,
/// spread over `streams` streams of type `order` (`o-<n>`), numbering them
/// from `first`.
pub(crate) async fn append_orders<S: EventStore>(
    store: &S,
    ty: &EventType,
    first: u64,
    count: u64,
    streams: u64,
) -> Result<(), StoreError> {
    let mut written = first;
    while written < first + count {
        let k = (first + count - written).min(10);
        let s = StreamName::new("order", format!("o-{}", written % streams))?;
        let events = (0..k)
            .map(|i| NewEvent::new(ty.clone(), vec![(i % 250) as u8]))
            .collect();
        store
            .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
        written += k;
    }
    Ok(())
}

/// Every event of the log, in cursor order.
pub(crate) async fn all_events<R: GlobalReader>(reader: &R) -> Result<Vec<RawEvent>, StoreError> {
    let mut out = Vec::new();
    let mut after = GlobalCursor::START;
    loop {
        let page = reader.read(ReadOptions::new(after, 1000)).await?;
        if page.events.is_empty() {
            return Ok(out);
        }
        out.extend(page.events);
        after = page.next;
    }
}

/// The cursor after the last event of the log, as a subscription that
/// read it all stands at. Read with [`GlobalReader::read`], which waits for
/// the handle's own commits to pass the backend's horizon, rather than
/// `head`, which may report a horizon held back by a transaction still
/// running elsewhere (a subscription's checkpoint, say).
pub(crate) async fn log_end<R: GlobalReader>(reader: &R) -> Result<GlobalCursor, StoreError> {
    let mut after = GlobalCursor::START;
    loop {
        let page = reader.read(ReadOptions::new(after, 1000)).await?;
        if page.events.is_empty() {
            return Ok(after);
        }
        after = page.next;
    }
}

/// The longest a scenario waits for a subscription to catch up: a guard
/// against a hang, not a timing goal.
pub const CATCH_UP_GUARD: Duration = Duration::from_secs(300);

/// Waits until `health` shows the subscription live at `target` or later
/// (or stopped), failing after [`CATCH_UP_GUARD`].
pub(crate) async fn reached(
    name: &str,
    health: &HealthHandle,
    target: GlobalCursor,
) -> ScenarioResult {
    let deadline = tokio::time::Instant::now() + CATCH_UP_GUARD;
    loop {
        let h = health.snapshot();
        if (h.state == SubscriptionState::Live && h.cursor >= target)
            || h.state == SubscriptionState::Stopped
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{name} did not catch up within {CATCH_UP_GUARD:?}: {h:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A list shared by a handler and the scenario checking what it saw.
pub(crate) struct Shared<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T: Clone> Shared<T> {
    pub(crate) fn extend(&self, items: impl IntoIterator<Item = T>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(items);
    }

    pub(crate) fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn snapshot(&self) -> Vec<T> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
