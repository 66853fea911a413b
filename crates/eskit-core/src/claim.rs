//! The claim store: durable work queues that several workers (threads or
//! processes) take items from, each item done by one worker at a time.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use crate::dyn_store::DynClaimStore;

use crate::dead_letter::bounded_error;
use crate::error::{StoreError, ValidationError};
use crate::event::Metadata;
use crate::limits::{MAX_PAYLOAD_BYTES, MAX_READ_LIMIT};
use crate::name::{NameKind, validate_name};
use crate::time::Timestamp;

/// Most items one [`ClaimStore::enqueue`] may carry.
pub const MAX_ENQUEUE_ITEMS: usize = 1_000;

/// Most items one [`ClaimStore::claim`] may take.
pub const MAX_CLAIM_BATCH: usize = 1_000;

/// Shortest claim lease accepted.
pub const MIN_CLAIM_LEASE: Duration = Duration::from_millis(10);

/// Longest claim lease accepted (one day).
pub const MAX_CLAIM_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// Most attempts an item may be given.
pub const MAX_CLAIM_ATTEMPTS: u32 = 1_000;

/// Largest work item payload, in bytes: the same as an event's.
pub const MAX_WORK_PAYLOAD_BYTES: usize = MAX_PAYLOAD_BYTES;

/// A claim-store input outside its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidWork {
    /// An enqueue carried no items or more than [`MAX_ENQUEUE_ITEMS`].
    ItemCount {
        /// Items in the enqueue.
        count: usize,
    },
    /// A payload is larger than [`MAX_WORK_PAYLOAD_BYTES`].
    PayloadTooLarge {
        /// Index of the item in its enqueue.
        index: usize,
        /// Its payload size in bytes.
        len: usize,
    },
    /// Two items of one enqueue carry the same key.
    DuplicateKey {
        /// Index of the second item with the key.
        index: usize,
    },
    /// A claim batch size outside `1..=MAX_CLAIM_BATCH`.
    BatchSize {
        /// The rejected size.
        limit: usize,
    },
    /// A lease outside [`MIN_CLAIM_LEASE`]`..=`[`MAX_CLAIM_LEASE`].
    Lease {
        /// The rejected lease.
        lease: Duration,
    },
    /// A maximum attempt count outside `1..=MAX_CLAIM_ATTEMPTS`.
    MaxAttempts {
        /// The rejected count.
        max_attempts: u32,
    },
}

impl fmt::Display for InvalidWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ItemCount { count } => write!(
                f,
                "an enqueue carries {count} items, it must carry 1 to {MAX_ENQUEUE_ITEMS}"
            ),
            Self::PayloadTooLarge { index, len } => write!(
                f,
                "payload of work item {index} is {len} bytes, the maximum is {MAX_WORK_PAYLOAD_BYTES}"
            ),
            Self::DuplicateKey { index } => {
                write!(f, "work item {index} repeats the key of an earlier item")
            }
            Self::BatchSize { limit } => {
                write!(f, "claim batch {limit} is not within 1..={MAX_CLAIM_BATCH}")
            }
            Self::Lease { lease } => write!(
                f,
                "claim lease {lease:?} is not within {MIN_CLAIM_LEASE:?}..={MAX_CLAIM_LEASE:?}"
            ),
            Self::MaxAttempts { max_attempts } => write!(
                f,
                "max attempts {max_attempts} is not within 1..={MAX_CLAIM_ATTEMPTS}"
            ),
        }
    }
}

impl std::error::Error for InvalidWork {}

impl From<InvalidWork> for StoreError {
    fn from(e: InvalidWork) -> Self {
        ValidationError::Work(e).into()
    }
}

/// A work item to enqueue: its key, payload, metadata and not-before time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorkItem {
    key: String,
    payload: Vec<u8>,
    metadata: Metadata,
    not_before: Option<Timestamp>,
}

impl NewWorkItem {
    /// An item due at once, without metadata.
    pub fn new(key: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            payload: payload.into(),
            metadata: Metadata::new(),
            not_before: None,
        }
    }

    /// Metadata kept with the item, for instance the chain of the event
    /// that caused it.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Not claimed before `at`.
    #[must_use]
    pub fn with_not_before(mut self, at: Timestamp) -> Self {
        self.not_before = Some(at);
        self
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The not-before time, `None` for at once.
    pub fn not_before(&self) -> Option<Timestamp> {
        self.not_before
    }
}

/// What enqueueing one item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enqueued {
    /// A new item with this id.
    Added(u64),
    /// The key existed (in any state); nothing changed. The existing id.
    Existing(u64),
}

impl Enqueued {
    /// The item's id, new or existing.
    pub fn id(self) -> u64 {
        match self {
            Self::Added(id) | Self::Existing(id) => id,
        }
    }
}

/// How a worker claims: who it is, how many items at most, for how long,
/// and after how many attempts an item whose lease ran out is dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOptions {
    owner: String,
    limit: usize,
    lease: Duration,
    max_attempts: u32,
}

/// Attempts an item gets when [`ClaimOptions::with_max_attempts`] is not called.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

impl ClaimOptions {
    /// Claims for `owner` up to `limit` items with leases of `lease`.
    ///
    /// # Errors
    /// [`ValidationError::Name`] for a bad owner name,
    /// [`InvalidWork::BatchSize`] or [`InvalidWork::Lease`] out of bounds.
    pub fn new(
        owner: impl Into<String>,
        limit: usize,
        lease: Duration,
    ) -> Result<Self, StoreError> {
        let owner = owner.into();
        validate_name(NameKind::ClaimOwner, &owner)?;
        if limit == 0 || limit > MAX_CLAIM_BATCH {
            return Err(InvalidWork::BatchSize { limit }.into());
        }
        if !(MIN_CLAIM_LEASE..=MAX_CLAIM_LEASE).contains(&lease) {
            return Err(InvalidWork::Lease { lease }.into());
        }
        Ok(Self {
            owner,
            limit,
            lease,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }

    /// An item whose lease ran out after `n` attempts goes to dead instead
    /// of to another worker (default [`DEFAULT_MAX_ATTEMPTS`]).
    ///
    /// # Errors
    /// [`InvalidWork::MaxAttempts`] outside `1..=MAX_CLAIM_ATTEMPTS`.
    pub fn with_max_attempts(mut self, n: u32) -> Result<Self, StoreError> {
        if n == 0 || n > MAX_CLAIM_ATTEMPTS {
            return Err(InvalidWork::MaxAttempts { max_attempts: n }.into());
        }
        self.max_attempts = n;
        Ok(self)
    }

    /// The claiming worker.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Most items one claim takes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The lease each claimed item gets.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Attempts before an item whose lease ran out is dead.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}

/// Proof of one claim of one item: its id and the claim's token. Every
/// claim of an item gets a larger token than the one before, so a stale
/// claim is refused once the item was claimed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Claim {
    /// The item's id.
    pub id: u64,
    /// The claim's token.
    pub token: u64,
}

/// An item a worker claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedItem {
    /// The proof of the claim.
    pub claim: Claim,
    /// The item's queue.
    pub queue: String,
    /// The item's key.
    pub key: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The metadata it was enqueued with.
    pub metadata: Metadata,
    /// Which attempt this claim is, from 1.
    pub attempt: u32,
    /// The error of the attempt before, if it failed.
    pub last_error: Option<String>,
    /// When the lease ends unless renewed.
    pub lease_until: Timestamp,
}

/// Where an item stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkState {
    /// Waiting for its not-before time or a worker.
    Pending {
        /// Not claimed before this time.
        not_before: Timestamp,
    },
    /// Held by a worker.
    Claimed {
        /// The worker.
        owner: String,
        /// When the lease ends unless renewed.
        until: Timestamp,
    },
    /// Completed.
    Done,
    /// Out of attempts (terminal until requeued).
    Dead,
}

impl WorkState {
    /// The state's name: `pending`, `claimed`, `done` or `dead`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending { .. } => "pending",
            Self::Claimed { .. } => "claimed",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

/// An item as stored, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    /// The item's id, increasing in its store.
    pub id: u64,
    /// Its queue.
    pub queue: String,
    /// Its key, unique in the queue.
    pub key: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The metadata it was enqueued with.
    pub metadata: Metadata,
    /// Where it stands.
    pub state: WorkState,
    /// Claims made of it since it was enqueued or last requeued.
    pub attempts: u32,
    /// The error of the last failed attempt (cut at
    /// [`MAX_DEAD_LETTER_ERROR_BYTES`](crate::limits::MAX_DEAD_LETTER_ERROR_BYTES)).
    pub last_error: Option<String>,
}

/// What to do with an item whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AfterFailure {
    /// Back to pending, due at this time (the backoff).
    RetryAt(Timestamp),
    /// To dead: no more attempts.
    Dead,
}

/// Durable work queues with exclusive, leased claims; every backend offers
/// one, [`MemoryClaimStore`] is the in-memory one.
///
/// A work item is enqueued under a queue name and a key unique in that
/// queue, with payload bytes, metadata and a not-before time. Workers
/// [`claim`](ClaimStore::claim) due items with a lease (an owner and an end
/// time); the claim is proved by a [`Claim`] whose token grows with every
/// claim of the item, so a worker whose lease ran out and whose item went to
/// another worker can no longer complete, fail or renew it.
///
/// # Life of an item
/// - **pending** until its not-before time, then due;
/// - **claimed** by one worker until the lease ends; the worker
///   [`renew`](ClaimStore::renew)s the lease while it works, then
///   [`complete`](ClaimStore::complete)s the item (**done**) or
///   [`fail`](ClaimStore::fail)s it, either back to pending with a later
///   not-before time (the backoff) or to **dead**;
/// - a claim whose lease ran out is due again: the next claim hands the item
///   to another worker, and counts as an attempt. An item whose lease ran out
///   after its last allowed attempt ([`ClaimOptions::max_attempts`]) goes to
///   dead instead, so a worker that crashes on an item every time cannot keep
///   the queue busy forever.
///
/// # Dead items
/// Items that used up their attempts stay in the claim store in the terminal
/// state [`WorkState::Dead`], with their last error and attempt count:
/// listed with [`dead`](ClaimStore::dead), put back with
/// [`requeue`](ClaimStore::requeue), dropped with
/// [`delete`](ClaimStore::delete). They are not moved to a
/// [`DeadLetterStore`](crate::store::DeadLetterStore), which keeps events: a
/// work item is not an event, and keeping it in place keeps its key taken,
/// so an event delivered again cannot enqueue the same work a second time.
///
/// # Keys
/// A key is unique in its queue over every state, done and dead included:
/// enqueueing a key that exists is a no-op that reports the existing item
/// ([`Enqueued::Existing`]). That makes feeding a queue from an
/// at-least-once subscription safe. [`delete`](ClaimStore::delete) frees a
/// key.
///
/// # Clocks
/// Not-before times and leases are wall-clock times ([`Timestamp`]) so that
/// processes sharing a store agree on them, as far as their clocks agree.
///
/// # Contract
/// - A claimed item is held by one claim at a time: no two live claims of
///   the same item exist, across every handle and process on the store.
/// - [`claim`](Self::claim) takes due items in the order of their due time
///   (not-before time, or lease end for a claim that ran out), then id.
/// - [`complete`](Self::complete), [`fail`](Self::fail) and
///   [`renew`](Self::renew) of a stale [`Claim`] (the item was claimed again
///   since, or is no longer claimed) change nothing and return `false`. A
///   claim whose lease ran out is not stale until another claim takes the
///   item: its worker may still complete it.
pub trait ClaimStore: Send + Sync {
    /// Adds items to `queue`; a key the queue holds already is left as it
    /// is ([`Enqueued::Existing`]). All items or none are added.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad queue name or key, an
    /// [`InvalidWork`] bound, invalid metadata; or a backend failure.
    fn enqueue(
        &self,
        queue: &str,
        items: Vec<NewWorkItem>,
    ) -> impl Future<Output = Result<Vec<Enqueued>, StoreError>> + Send;

    /// Claims up to `options.limit()` due items of `queue` for
    /// `options.owner()`, each with a lease of `options.lease()`, in one
    /// transaction; items whose lease ran out after `options.max_attempts()`
    /// attempts go to dead on the way. An empty result means nothing is due.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad queue name, or a backend failure.
    fn claim(
        &self,
        queue: &str,
        options: ClaimOptions,
    ) -> impl Future<Output = Result<Vec<ClaimedItem>, StoreError>> + Send;

    /// Extends a held claim's lease to `lease` from now; `false` when the
    /// claim is stale.
    ///
    /// # Errors
    /// [`InvalidWork::Lease`] out of bounds, or a backend failure.
    fn renew(
        &self,
        claim: Claim,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Marks a claimed item done; `false` when the claim is stale.
    ///
    /// # Errors
    /// A backend failure.
    fn complete(&self, claim: Claim) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a failed attempt with its error, then retries the item or
    /// kills it per `then`; `false` when the claim is stale.
    ///
    /// # Errors
    /// A backend failure.
    fn fail(
        &self,
        claim: Claim,
        error: &str,
        then: AfterFailure,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The item with this id, if any.
    ///
    /// # Errors
    /// A backend failure.
    fn get(&self, id: u64) -> impl Future<Output = Result<Option<WorkItem>, StoreError>> + Send;

    /// Up to `limit` dead items of `queue` with ids above `after_id`,
    /// oldest first.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad name or a limit outside
    /// `1..=MAX_READ_LIMIT`, or a backend failure.
    fn dead(
        &self,
        queue: &str,
        after_id: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<WorkItem>, StoreError>> + Send;

    /// Puts a dead item back to pending, due at once, with a fresh count of
    /// attempts; `false` when there is no dead item with this id.
    ///
    /// # Errors
    /// A backend failure.
    fn requeue(&self, id: u64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Drops the item (in any state; a live claim of it turns stale) and
    /// frees its key; `false` when there was none.
    ///
    /// # Errors
    /// A backend failure.
    fn delete(&self, id: u64) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Checks an enqueue before any backend touches storage: the queue name,
/// the item count, each key, payload and metadata, and keys repeated within
/// the enqueue.
///
/// # Errors
/// [`StoreError::Validation`] naming the first broken rule.
pub fn validate_enqueue(queue: &str, items: &[NewWorkItem]) -> Result<(), StoreError> {
    validate_name(NameKind::Queue, queue)?;
    if items.is_empty() || items.len() > MAX_ENQUEUE_ITEMS {
        return Err(InvalidWork::ItemCount { count: items.len() }.into());
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        validate_name(NameKind::WorkKey, &item.key)?;
        if item.payload.len() > MAX_WORK_PAYLOAD_BYTES {
            return Err(InvalidWork::PayloadTooLarge {
                index,
                len: item.payload.len(),
            }
            .into());
        }
        item.metadata.validate()?;
        if !seen.insert(item.key.as_str()) {
            return Err(InvalidWork::DuplicateKey { index }.into());
        }
    }
    Ok(())
}

/// Checks a renewal's lease.
///
/// # Errors
/// [`InvalidWork::Lease`] out of bounds.
pub fn validate_lease(lease: Duration) -> Result<(), StoreError> {
    if !(MIN_CLAIM_LEASE..=MAX_CLAIM_LEASE).contains(&lease) {
        return Err(InvalidWork::Lease { lease }.into());
    }
    Ok(())
}

/// Checks a listing of dead items.
///
/// # Errors
/// [`StoreError::Validation`] for a bad queue name or limit.
pub fn validate_dead_list(queue: &str, limit: usize) -> Result<(), StoreError> {
    validate_name(NameKind::Queue, queue)?;
    if limit == 0 || limit > MAX_READ_LIMIT {
        return Err(ValidationError::InvalidLimit { limit }.into());
    }
    Ok(())
}

/// `at` plus `d`, saturating.
pub fn timestamp_after(at: Timestamp, d: Duration) -> Timestamp {
    let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_unix_micros(at.as_unix_micros().saturating_add(micros))
}

/// The error a dead item keeps when its lease ran out after its last
/// attempt.
pub fn lease_expired_error(attempts: u32) -> String {
    format!("the claim's lease ran out on attempt {attempts}, the last one allowed")
}

/// Work queues kept in memory. Cloning shares them.
///
/// ```
/// use std::time::Duration;
/// use eskit_core::memory::MemoryClaimStore;
/// use eskit_core::rt::block_on;
/// use eskit_core::store::{ClaimOptions, ClaimStore, NewWorkItem};
/// let claims = MemoryClaimStore::new();
/// block_on(claims.enqueue("mail", vec![NewWorkItem::new("welcome:alice", b"alice".to_vec())]))?;
/// let options = ClaimOptions::new("worker-1", 10, Duration::from_secs(30))?;
/// let items = block_on(claims.claim("mail", options.clone()))?;
/// assert_eq!(items[0].key, "welcome:alice");
/// assert!(block_on(claims.claim("mail", options))?.is_empty(), "claimed items are not due");
/// assert!(block_on(claims.complete(items[0].claim))?);
/// # Ok::<(), eskit_core::error::StoreError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryClaimStore {
    inner: Arc<Mutex<Queues>>,
}

#[derive(Debug, Default)]
struct Queues {
    last_id: u64,
    items: BTreeMap<u64, Stored>,
    by_key: HashMap<(String, String), u64>,
}

#[derive(Debug)]
struct Stored {
    item: WorkItem,
    token: u64,
}

impl Stored {
    /// When the item is due: its not-before time when pending, its lease end
    /// when claimed; `None` when done or dead.
    fn due(&self) -> Option<Timestamp> {
        match &self.item.state {
            WorkState::Pending { not_before } => Some(*not_before),
            WorkState::Claimed { until, .. } => Some(*until),
            WorkState::Done | WorkState::Dead => None,
        }
    }

    fn held(&mut self, claim: Claim) -> Option<&mut WorkItem> {
        (self.token == claim.token && matches!(self.item.state, WorkState::Claimed { .. }))
            .then_some(&mut self.item)
    }
}

impl MemoryClaimStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClaimStore for MemoryClaimStore {
    async fn enqueue(
        &self,
        queue: &str,
        items: Vec<NewWorkItem>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        validate_enqueue(queue, &items)?;
        let now = Timestamp::now();
        let mut q = self.lock();
        let mut out = Vec::with_capacity(items.len());
        for new in items {
            let k = (queue.to_owned(), new.key);
            if let Some(id) = q.by_key.get(&k) {
                out.push(Enqueued::Existing(*id));
                continue;
            }
            q.last_id += 1;
            let id = q.last_id;
            q.items.insert(
                id,
                Stored {
                    item: WorkItem {
                        id,
                        queue: k.0.clone(),
                        key: k.1.clone(),
                        payload: new.payload,
                        metadata: new.metadata,
                        state: WorkState::Pending {
                            not_before: new.not_before.unwrap_or(now),
                        },
                        attempts: 0,
                        last_error: None,
                    },
                    token: 0,
                },
            );
            q.by_key.insert(k, id);
            out.push(Enqueued::Added(id));
        }
        Ok(out)
    }

    async fn claim(
        &self,
        queue: &str,
        options: ClaimOptions,
    ) -> Result<Vec<ClaimedItem>, StoreError> {
        validate_name(NameKind::Queue, queue)?;
        let now = Timestamp::now();
        let until = timestamp_after(now, options.lease);
        let mut q = self.lock();
        let mut due: Vec<(Timestamp, u64)> = q
            .items
            .values()
            .filter(|s| s.item.queue == queue)
            .filter_map(|s| s.due().filter(|d| *d <= now).map(|d| (d, s.item.id)))
            .collect();
        due.sort_unstable();
        let mut out = Vec::new();
        for (_, id) in due {
            if out.len() >= options.limit {
                break;
            }
            let Some(s) = q.items.get_mut(&id) else {
                continue;
            };
            if matches!(s.item.state, WorkState::Claimed { .. })
                && s.item.attempts >= options.max_attempts
            {
                s.item.last_error = Some(lease_expired_error(s.item.attempts));
                s.item.state = WorkState::Dead;
                continue;
            }
            s.token += 1;
            s.item.attempts = s.item.attempts.saturating_add(1);
            s.item.state = WorkState::Claimed {
                owner: options.owner.clone(),
                until,
            };
            out.push(ClaimedItem {
                claim: Claim { id, token: s.token },
                queue: s.item.queue.clone(),
                key: s.item.key.clone(),
                payload: s.item.payload.clone(),
                metadata: s.item.metadata.clone(),
                attempt: s.item.attempts,
                last_error: s.item.last_error.clone(),
                lease_until: until,
            });
        }
        Ok(out)
    }

    async fn renew(&self, claim: Claim, lease: Duration) -> Result<bool, StoreError> {
        validate_lease(lease)?;
        let until = timestamp_after(Timestamp::now(), lease);
        let mut q = self.lock();
        let Some(item) = q.items.get_mut(&claim.id).and_then(|s| s.held(claim)) else {
            return Ok(false);
        };
        if let WorkState::Claimed { until: u, .. } = &mut item.state {
            *u = until;
        }
        Ok(true)
    }

    async fn complete(&self, claim: Claim) -> Result<bool, StoreError> {
        let mut q = self.lock();
        let Some(item) = q.items.get_mut(&claim.id).and_then(|s| s.held(claim)) else {
            return Ok(false);
        };
        item.state = WorkState::Done;
        Ok(true)
    }

    async fn fail(
        &self,
        claim: Claim,
        error: &str,
        then: AfterFailure,
    ) -> Result<bool, StoreError> {
        let mut q = self.lock();
        let Some(item) = q.items.get_mut(&claim.id).and_then(|s| s.held(claim)) else {
            return Ok(false);
        };
        item.last_error = Some(bounded_error(error).to_owned());
        item.state = match then {
            AfterFailure::RetryAt(not_before) => WorkState::Pending { not_before },
            AfterFailure::Dead => WorkState::Dead,
        };
        Ok(true)
    }

    async fn get(&self, id: u64) -> Result<Option<WorkItem>, StoreError> {
        Ok(self.lock().items.get(&id).map(|s| s.item.clone()))
    }

    async fn dead(
        &self,
        queue: &str,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<WorkItem>, StoreError> {
        validate_dead_list(queue, limit)?;
        Ok(self
            .lock()
            .items
            .range(after_id.saturating_add(1)..)
            .map(|(_, s)| &s.item)
            .filter(|i| i.queue == queue && i.state == WorkState::Dead)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn requeue(&self, id: u64) -> Result<bool, StoreError> {
        let mut q = self.lock();
        match q.items.get_mut(&id) {
            Some(s) if s.item.state == WorkState::Dead => {
                s.item.state = WorkState::Pending {
                    not_before: Timestamp::now(),
                };
                s.item.attempts = 0;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        let mut q = self.lock();
        let Some(s) = q.items.remove(&id) else {
            return Ok(false);
        };
        q.by_key.remove(&(s.item.queue, s.item.key));
        Ok(true)
    }
}
