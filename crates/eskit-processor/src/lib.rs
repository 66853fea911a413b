//! Subscriptions for eskit-rs: follow the global log from a durable cursor,
//! catch up, then stay live, and never skip an event.
//!
//! Beside subscriptions: [`Reactor`] (typed handlers whose commands carry
//! the trigger's correlation and causation through a [`CausalContext`]),
//! [`TodoProcessor`] (workers over a claim store's queue, fed by
//! [`TodoFeed`] or direct enqueue), and [`Runner`] (several services, one
//! shutdown, SIGTERM / ctrl-c with a deadline).
//!
//! A [`Subscription`] reads pages with [`GlobalReader::read`](eskit_core::store::GlobalReader::read), hands each page
//! to a [`BatchHandler`], and stores the page's resume cursor in a
//! [`CheckpointStore`](eskit_core::store::CheckpointStore) every N events or every interval, whichever comes
//! first. When it has caught up it waits on the backend's [`CommitFeed`](eskit_core::store::CommitFeed),
//! and falls back to polling while the feed is broken.
//!
//! Read models: [`view`] (state views, rebuild from zero),
//! [`rebuild`] (zero-downtime rebuild into a shadow that is swapped in) and
//! [`notifier`] (change notifications for live reads).
//!
//! # Ordering
//! Delivery is in cursor order, each event once per run. The subscription
//! trusts the backend's gap-safety contract (see
//! [`GlobalBatch`](eskit_core::store::GlobalBatch)): it resumes from `next` and never
//! waits on a hole. A page whose `next` lies before the cursor it was read
//! from is a backend bug, reported as [`SubscriptionError::CursorWentBack`]
//! instead of being skipped over.
//!
//! # Delivery guarantee
//! At least once: a handler's effects and the checkpoint are two writes, so
//! after a crash the events since the last saved checkpoint are delivered
//! again: at most one checkpoint interval's worth (`checkpoint_every`
//! events), or one page (`batch_size`) when pages are larger. A handler that stores its own cursor in the same transaction as
//! its effects gets exactly-once effects: give the subscription a
//! [`ProjectionSink`](eskit_core::store::ProjectionSink) with
//! [`Subscription::with_sink`], and every page is applied together with its
//! cursor.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use eskit_core::prelude::*;
//! use eskit_core::{memory::{MemoryCheckpointStore, MemoryStore}, rt::yield_now};
//! use eskit_processor::{Subscription, SubscriptionOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let s = StreamName::new("order", "o-1")?;
//! let placed = NewEvent::new(EventType::new("OrderPlaced")?, b"{}".to_vec());
//! store.append(&s, ExpectedVersion::Any, vec![placed], AppendOptions::new()).await?;
//!
//! let seen = Arc::new(Mutex::new(0usize));
//! let counter = Arc::clone(&seen);
//! let options = SubscriptionOptions::new("order-count")?.with_checkpoint_every(1)?;
//! let sub = Subscription::new(store.clone(), MemoryCheckpointStore::new(), options, move |events: &[RawEvent]| {
//!     *counter.lock().map_err(|_| "poisoned")? += events.len();
//!     Ok(())
//! });
//! let health = sub.health();
//! // Stop once the subscription has caught up.
//! let stop = async move {
//!     while health.snapshot().state != eskit_processor::SubscriptionState::Live {
//!         tokio::task::yield_now().await;
//!     }
//! };
//! sub.run(stop).await?;
//! assert_eq!(*seen.lock().map_err(|_| "poisoned")?, 1);
//! # Ok(())
//! # }
//! ```

mod causal;
pub mod notifier;
pub mod rebuild;
mod replay;
mod runner;
mod subscription;
mod todo;
mod typed;
pub mod view;

pub use causal::{CausalContext, Reactor};
pub use runner::{DEFAULT_SHUTDOWN_DEADLINE, MAX_SERVICES, RunError, Runner, Shutdown};
pub use todo::{
    DEFAULT_TODO_BACKOFF, DEFAULT_TODO_BATCH, DEFAULT_TODO_LEASE, DEFAULT_TODO_MAX_BACKOFF,
    DEFAULT_TODO_POLL_INTERVAL, DEFAULT_TODO_WORKERS, MAX_TODO_WORKERS, MIN_TODO_POLL_INTERVAL,
    TodoError, TodoFeed, TodoOptions, TodoProcessor, TodoStats, WorkHandler, event_key,
};

pub use replay::{ReplayError, replay_dead_letter, replay_dead_letters};
pub use subscription::{
    BatchHandler, DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_POLL_INTERVAL, Health, HealthHandle, MIN_POLL_INTERVAL, SinkCheckpoints, SinkHandler,
    Subscription, SubscriptionError, SubscriptionOptions, SubscriptionState,
};
pub use typed::TypedHandlers;
