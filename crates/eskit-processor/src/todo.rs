//! The todo-list processor: workers that claim items from a
//! [`ClaimStore`] queue, run a handler on each, renew their leases while
//! they work, and complete, retry (with backoff) or kill each item; fed by
//! a subscription ([`TodoFeed`]) or by direct enqueue.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eskit_core::limits::{MAX_CLAIM_ATTEMPTS, MAX_CLAIM_BATCH, MAX_ENQUEUE_ITEMS};
use eskit_core::{
    backend::{timestamp_after, validate_name},
    error::{BoxError, StoreError, error_chain},
    event::{EventId, NameKind, Principal, RawEvent, Timestamp},
    store::{
        AfterFailure, BoxFuture, ClaimOptions, ClaimStore, ClaimedItem, DynClaimStore, NewWorkItem,
    },
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{BatchHandler, CausalContext};

/// Workers a todo processor runs when not set.
pub const DEFAULT_TODO_WORKERS: usize = 1;
/// Most workers one todo processor runs.
pub const MAX_TODO_WORKERS: usize = 256;
/// Items one worker claims at a time when not set.
pub const DEFAULT_TODO_BATCH: usize = 1;
/// The claim lease when not set; renewed while the handler works.
pub const DEFAULT_TODO_LEASE: Duration = Duration::from_secs(30);
/// How often an idle worker looks for due items when not set.
pub const DEFAULT_TODO_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The shortest poll interval accepted.
pub const MIN_TODO_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// The first retry's delay when not set; each later retry doubles it.
pub const DEFAULT_TODO_BACKOFF: Duration = Duration::from_secs(1);
/// The longest retry delay when not set.
pub const DEFAULT_TODO_MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a todo processor stopped or could not be configured.
#[derive(Debug)]
#[non_exhaustive]
pub enum TodoError {
    /// An option is out of range.
    InvalidOption {
        /// The option.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The claim store failed with an error that waiting does not heal.
    Store(StoreError),
    /// A worker task panicked or was cancelled.
    Worker(String),
}

impl fmt::Display for TodoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidOption { name, reason } => write!(f, "invalid option {name}: {reason}"),
            Self::Store(e) => write!(f, "todo claim store failure: {e}"),
            Self::Worker(why) => write!(f, "a todo worker ended abnormally: {why}"),
        }
    }
}

impl std::error::Error for TodoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => e.source(),
            Self::InvalidOption { .. } | Self::Worker(_) => None,
        }
    }
}

impl From<StoreError> for TodoError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn invalid(name: &'static str, reason: impl Into<String>) -> TodoError {
    TodoError::InvalidOption {
        name,
        reason: reason.into(),
    }
}

/// How a todo processor claims, retries and renews. Built with `with_*`
/// and checked as it is built.
#[derive(Debug, Clone)]
pub struct TodoOptions {
    queue: String,
    owner: String,
    workers: usize,
    batch: usize,
    lease: Duration,
    max_attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    poll_interval: Duration,
}

impl TodoOptions {
    /// Options for the processor of `queue`, owned by `owner` (a name for
    /// this process, unique among the processes sharing the queue; each
    /// worker claims as `<owner>/<n>`).
    ///
    /// # Errors
    /// [`TodoError::InvalidOption`] for a bad queue or owner name.
    pub fn new(queue: impl Into<String>, owner: impl Into<String>) -> Result<Self, TodoError> {
        let (queue, owner) = (queue.into(), owner.into());
        validate_name(NameKind::Queue, &queue).map_err(|e| invalid("queue", e.to_string()))?;
        // Room for the worker suffix within the name bound.
        validate_name(NameKind::ClaimOwner, &format!("{owner}/{MAX_TODO_WORKERS}"))
            .map_err(|e| invalid("owner", e.to_string()))?;
        if owner.is_empty() {
            return Err(invalid("owner", "the owner is empty"));
        }
        Ok(Self {
            queue,
            owner,
            workers: DEFAULT_TODO_WORKERS,
            batch: DEFAULT_TODO_BATCH,
            lease: DEFAULT_TODO_LEASE,
            max_attempts: eskit_core::limits::DEFAULT_MAX_ATTEMPTS,
            backoff: DEFAULT_TODO_BACKOFF,
            max_backoff: DEFAULT_TODO_MAX_BACKOFF,
            poll_interval: DEFAULT_TODO_POLL_INTERVAL,
        })
    }

    /// Concurrent workers, `1..=MAX_TODO_WORKERS`.
    ///
    /// # Errors
    /// [`TodoError::InvalidOption`] out of range.
    pub fn with_workers(mut self, n: usize) -> Result<Self, TodoError> {
        if n == 0 || n > MAX_TODO_WORKERS {
            return Err(invalid(
                "workers",
                format!("{n} is not within 1..={MAX_TODO_WORKERS}"),
            ));
        }
        self.workers = n;
        Ok(self)
    }

    /// Items a worker claims at a time, `1..=MAX_CLAIM_BATCH`; all of a
    /// batch's leases are renewed while the worker works through it.
    ///
    /// # Errors
    /// [`TodoError::InvalidOption`] out of range.
    pub fn with_batch_size(mut self, n: usize) -> Result<Self, TodoError> {
        if n == 0 || n > MAX_CLAIM_BATCH {
            return Err(invalid(
                "batch_size",
                format!("{n} is not within 1..={MAX_CLAIM_BATCH}"),
            ));
        }
        self.batch = n;
        Ok(self)
    }

    /// The claim lease; renewed every third of it while the handler works.
    /// A crashed worker's items go to another worker once it runs out.
    ///
    /// # Errors
    /// [`TodoError::InvalidOption`] outside the claim store's bounds.
    pub fn with_lease(mut self, lease: Duration) -> Result<Self, TodoError> {
        eskit_core::backend::validate_lease(lease).map_err(|e| invalid("lease", e.to_string()))?;
        self.lease = lease;
        Ok(self)
    }

    /// Attempts an item gets before it goes to dead, `1..=MAX_CLAIM_ATTEMPTS`.
    ///
    /// # Errors
    /// [`TodoError::InvalidOption`] out of range.
    pub fn with_max_attempts(mut self, n: u32) -> Result<Self, TodoError> {
        if n == 0 || n > MAX_CLAIM_ATTEMPTS {
            return Err(invalid(
                "max_attempts",
                format!("{n} is not within 1..={MAX_CLAIM_ATTEMPTS}"),
            ));
        }
        self.max_attempts = n;
        Ok(self)
    }

    /// The delay before the first retry of a failed item, doubling with
    /// every further attempt up to `max`.
    ///
    /// # Errors
    /// [`TodoError::InvalidOption`] when `max` is below `first`.
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Result<Self, TodoError> {
        if max < first {
            return Err(invalid("backoff", "the longest delay is below the first"));
        }
        self.backoff = first;
        self.max_backoff = max;
        Ok(self)
    }

    /// How often an idle worker looks for due items.
    ///
    /// # Errors
    /// [`TodoError::InvalidOption`] below [`MIN_TODO_POLL_INTERVAL`].
    pub fn with_poll_interval(mut self, d: Duration) -> Result<Self, TodoError> {
        if d < MIN_TODO_POLL_INTERVAL {
            return Err(invalid(
                "poll_interval",
                format!("{d:?} is below {MIN_TODO_POLL_INTERVAL:?}"),
            ));
        }
        self.poll_interval = d;
        Ok(self)
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The delay before retrying after failed attempt `attempt` (from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.backoff
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    fn claim_options(&self, worker: usize) -> Result<ClaimOptions, StoreError> {
        ClaimOptions::new(format!("{}/{worker}", self.owner), self.batch, self.lease)?
            .with_max_attempts(self.max_attempts)
    }
}

/// What a todo processor does with one item. An error fails the attempt:
/// the item is retried after the backoff, or goes to dead after its last
/// attempt. The handler may run again for an item it already handled (a
/// crash, or a lease lost, before the item was completed), so its effects
/// must be idempotent (the item's key makes a good idempotency key).
///
/// Each call runs on its own tokio task: a handler that panics fails the
/// attempt like an error does, and one whose claim is lost (its lease was
/// not renewed in time and another worker took the item) is aborted.
///
/// A closure `Fn(ClaimedItem, CausalContext) -> impl Future<Output =
/// Result<(), BoxError>>` is a handler.
pub trait WorkHandler: Send + Sync + 'static {
    /// Handles `item`; `ctx` carries the item's metadata, for the commands
    /// it sends.
    fn handle(
        &self,
        item: ClaimedItem,
        ctx: CausalContext,
    ) -> BoxFuture<'static, Result<(), BoxError>>;
}

impl<F, Fut> WorkHandler for F
where
    F: Fn(ClaimedItem, CausalContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn handle(
        &self,
        item: ClaimedItem,
        ctx: CausalContext,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(self(item, ctx))
    }
}

/// Counters of a todo processor, readable while it runs.
#[derive(Debug, Clone, Default)]
pub struct TodoStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    completed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    lost: AtomicU64,
}

impl TodoStats {
    /// Items completed.
    pub fn completed(&self) -> u64 {
        self.inner.completed.load(Ordering::Relaxed)
    }

    /// Failed attempts put back for a retry.
    pub fn retried(&self) -> u64 {
        self.inner.retried.load(Ordering::Relaxed)
    }

    /// Items that went to dead after their last attempt.
    pub fn dead(&self) -> u64 {
        self.inner.dead.load(Ordering::Relaxed)
    }

    /// Claims lost before the outcome was stored (the lease ran out and the
    /// item went to another worker, or it was deleted).
    pub fn lost(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }
}

/// A todo-list processor: `workers` tasks claim items of one queue, run the
/// handler on each and store its outcome. Several processes can run one on
/// the same queue; the claim store keeps each item with one worker at a
/// time.
///
/// ```
/// use std::time::Duration;
/// use eskit_core::{memory::MemoryClaimStore, store::{ClaimStore, NewWorkItem}};
/// use eskit_processor::{TodoOptions, TodoProcessor};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let claims = MemoryClaimStore::new();
/// claims.enqueue("mail", vec![NewWorkItem::new("welcome:alice", b"alice".to_vec())]).await?;
/// let options = TodoOptions::new("mail", "node-1")?.with_poll_interval(Duration::from_millis(5))?;
/// let processor = TodoProcessor::new(claims.clone(), options, |item: eskit_core::store::ClaimedItem, _ctx| async move {
///     println!("sending mail to {}", String::from_utf8_lossy(&item.payload));
///     Ok(())
/// });
/// let stats = processor.stats();
/// let done = stats.clone();
/// processor.run(async move {
///     while done.completed() < 1 {
///         tokio::time::sleep(Duration::from_millis(1)).await;
///     }
/// }).await?;
/// assert_eq!(stats.completed(), 1);
/// # Ok(())
/// # }
/// ```
pub struct TodoProcessor {
    claims: Arc<dyn DynClaimStore>,
    options: TodoOptions,
    handler: Arc<dyn WorkHandler>,
    stats: TodoStats,
}

impl fmt::Debug for TodoProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TodoProcessor")
            .field("options", &self.options)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TodoProcessor {
    /// A processor of `options.queue()` in `claims`, running `handler`.
    pub fn new(
        claims: impl ClaimStore + 'static,
        options: TodoOptions,
        handler: impl WorkHandler,
    ) -> Self {
        Self {
            claims: Arc::new(claims),
            options,
            handler: Arc::new(handler),
            stats: TodoStats::default(),
        }
    }

    /// The processor's counters.
    pub fn stats(&self) -> TodoStats {
        self.stats.clone()
    }

    /// Runs the workers until `shutdown` completes, then lets each finish
    /// the batch in hand (storing every outcome) and returns `Ok`. Transient
    /// claim-store failures are retried after the poll interval.
    ///
    /// # Errors
    /// [`TodoError::Store`] when the claim store fails in a way waiting does
    /// not heal (the other workers are stopped after their batch), or
    /// [`TodoError::Worker`] when a worker task panicked.
    ///
    /// # Panics
    /// When polled outside a tokio runtime: the workers are tokio tasks.
    ///
    /// # Cancel safety
    /// Dropping the future aborts the workers at once; items in hand keep
    /// their claims until the leases run out, and then go to other workers.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), TodoError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers = JoinSet::new();
        for n in 0..self.options.workers {
            let worker = Worker {
                claims: Arc::clone(&self.claims),
                options: self.options.clone(),
                claim: self.options.claim_options(n)?,
                handler: Arc::clone(&self.handler),
                stats: self.stats.clone(),
                stop: stop_rx.clone(),
            };
            workers.spawn(worker.run());
        }
        let mut shutdown = pin!(shutdown);
        let mut result = Ok(());
        let mut stopping = false;
        loop {
            tokio::select! {
                () = &mut shutdown, if !stopping => {
                    stopping = true;
                    let _ = stop_tx.send(true);
                }
                joined = workers.join_next() => match joined {
                    None => break,
                    Some(outcome) => {
                        let outcome = outcome
                            .map_err(|e| TodoError::Worker(e.to_string()))
                            .and_then(|r| r);
                        if let Err(e) = outcome {
                            if result.is_ok() {
                                result = Err(e);
                            }
                            stopping = true;
                            let _ = stop_tx.send(true);
                        }
                    }
                },
            }
        }
        result
    }
}

/// Aborts the task when dropped: a handler whose worker stopped waiting for
/// it (a lost lease, a store failure) must not keep running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Worker {
    claims: Arc<dyn DynClaimStore>,
    options: TodoOptions,
    claim: ClaimOptions,
    handler: Arc<dyn WorkHandler>,
    stats: TodoStats,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) -> Result<(), TodoError> {
        let queue = self.options.queue.clone();
        while !*self.stop.borrow() {
            let items = match self.claims.dyn_claim(&queue, self.claim.clone()).await {
                Ok(items) => items,
                Err(e) if e.is_transient() => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            if items.is_empty() {
                let poll = tokio::time::sleep(self.options.poll_interval);
                tokio::select! {
                    _ = self.stop.wait_for(|s| *s) => {}
                    () = poll => {}
                }
                continue;
            }
            self.work_through(items).await?;
        }
        Ok(())
    }

    /// Handles a batch in order, renewing the leases of every item not yet
    /// settled while the handler works.
    async fn work_through(&self, items: Vec<ClaimedItem>) -> Result<(), TodoError> {
        let mut held: Vec<bool> = vec![true; items.len()];
        let renew_every = self.options.lease / 3;
        for (i, item) in items.iter().enumerate() {
            if !held[i] {
                // Its lease was lost while an earlier item was handled.
                self.stats.inner.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let ctx = CausalContext::from_metadata(item.metadata.clone());
            // On its own task, so that a panicking handler fails its attempt
            // instead of the worker, and a lost lease stops it at once.
            let mut work = AbortOnDrop(tokio::spawn(self.handler.handle(item.clone(), ctx)));
            let outcome = loop {
                tokio::select! {
                    r = &mut work.0 => break Some(r.unwrap_or_else(|e| {
                        Err(if e.is_panic() {
                            "the handler panicked".into()
                        } else {
                            "the handler was cancelled".into()
                        })
                    })),
                    () = tokio::time::sleep(renew_every) => {
                        for (j, other) in items.iter().enumerate().skip(i) {
                            if held[j] && !self.renew(other).await? {
                                held[j] = false;
                            }
                        }
                        if !held[i] {
                            // Another worker may be on it now: stop here.
                            break None;
                        }
                    }
                }
            };
            let stored = match outcome {
                None => false,
                Some(Ok(())) => {
                    let ok = self.settle(|c| c.dyn_complete(item.claim)).await?;
                    if ok {
                        self.stats.inner.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    ok
                }
                Some(Err(e)) => {
                    let why = error_chain(e.as_ref());
                    let then = if item.attempt >= self.options.max_attempts {
                        AfterFailure::Dead
                    } else {
                        AfterFailure::RetryAt(timestamp_after(
                            Timestamp::now(),
                            self.options.backoff(item.attempt),
                        ))
                    };
                    let ok = self.settle(|c| c.dyn_fail(item.claim, &why, then)).await?;
                    if ok {
                        let counter = match then {
                            AfterFailure::Dead => &self.stats.inner.dead,
                            AfterFailure::RetryAt(_) => &self.stats.inner.retried,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    ok
                }
            };
            if !stored {
                self.stats.inner.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn renew(&self, item: &ClaimedItem) -> Result<bool, TodoError> {
        match self.claims.dyn_renew(item.claim, self.options.lease).await {
            Ok(held) => Ok(held),
            // A failed renewal is tried again at the next tick; the lease
            // still runs until then.
            Err(e) if e.is_transient() => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores an outcome, retrying transient failures for as long as the
    /// lease could still be held.
    async fn settle<'a, F>(&'a self, op: F) -> Result<bool, TodoError>
    where
        F: Fn(&'a dyn DynClaimStore) -> BoxFuture<'a, Result<bool, StoreError>>,
    {
        let mut waited = Duration::ZERO;
        loop {
            match op(&*self.claims).await {
                Ok(stored) => return Ok(stored),
                Err(e) if e.is_transient() && waited < self.options.lease => {
                    tokio::time::sleep(self.options.poll_interval).await;
                    waited += self.options.poll_interval;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What [`TodoFeed`] makes of one event: the work item it causes, if any.
type ToItem = dyn Fn(&RawEvent) -> Option<NewWorkItem> + Send + Sync;

/// A subscription's [`BatchHandler`] that turns events into work items of
/// a queue: `to_item` picks the events that cause work and builds each
/// item (its key decides what counts as the same work). Items built
/// without metadata get the chain of their event (see
/// [`CausalContext`]), so the handler's commands carry the trigger's
/// correlation and causation.
///
/// Enqueueing is idempotent by key, so a page delivered again after a
/// crash adds nothing twice: the subscription can checkpoint as usual.
pub struct TodoFeed {
    claims: Arc<dyn DynClaimStore>,
    queue: String,
    principal: Principal,
    to_item: Box<ToItem>,
}

impl fmt::Debug for TodoFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TodoFeed")
            .field("queue", &self.queue)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl TodoFeed {
    /// A feed of `queue` in `claims`; the caused work is initiated by
    /// `principal`.
    ///
    /// # Errors
    /// [`TodoError::InvalidOption`] for a bad queue name.
    pub fn new(
        claims: impl ClaimStore + 'static,
        queue: impl Into<String>,
        principal: Principal,
        to_item: impl Fn(&RawEvent) -> Option<NewWorkItem> + Send + Sync + 'static,
    ) -> Result<Self, TodoError> {
        let queue = queue.into();
        validate_name(NameKind::Queue, &queue).map_err(|e| invalid("queue", e.to_string()))?;
        Ok(Self {
            claims: Arc::new(claims),
            queue,
            principal,
            to_item: Box::new(to_item),
        })
    }

    fn item(&self, e: &RawEvent) -> Option<NewWorkItem> {
        let item = (self.to_item)(e)?;
        if !item.metadata().is_empty() {
            return Some(item);
        }
        let chain = CausalContext::caused_by(e.id, &e.metadata, self.principal.clone());
        Some(item.with_metadata(chain.metadata().clone()))
    }
}

impl BatchHandler for TodoFeed {
    fn handle<'a>(&'a self, events: &'a [RawEvent]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let mut items: Vec<NewWorkItem> = Vec::new();
            for e in events {
                let Some(item) = self.item(e) else {
                    continue;
                };
                // One enqueue may not repeat a key; a page may (two events
                // causing the same work): the first one wins, as it would
                // across pages.
                if items.iter().any(|i| i.key() == item.key()) {
                    continue;
                }
                items.push(item);
                if items.len() == MAX_ENQUEUE_ITEMS {
                    self.claims
                        .dyn_enqueue(&self.queue, std::mem::take(&mut items))
                        .await?;
                }
            }
            if !items.is_empty() {
                self.claims.dyn_enqueue(&self.queue, items).await?;
            }
            Ok(())
        })
    }
}

/// A key for work caused by one event: `<prefix>:<event id>`.
pub fn event_key(prefix: &str, event: EventId) -> String {
    format!("{prefix}:{event}")
}
