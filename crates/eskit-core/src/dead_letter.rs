//! Dead letters: events a subscription gave up on, kept with why and how
//! often it tried, so the subscription can move on and a person can inspect,
//! replay or drop them later.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use crate::dyn_store::DynDeadLetterStore;

use crate::error::{StoreError, ValidationError};
use crate::event::RawEvent;
use crate::limits::MAX_READ_LIMIT;
use crate::name::{NameKind, validate_name};
use crate::time::Timestamp;
use crate::version::GlobalCursor;

/// Longest error text a dead letter keeps, in bytes; longer texts are cut
/// at a character boundary.
pub const MAX_DEAD_LETTER_ERROR_BYTES: usize = 4096;

/// One event a subscription gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The letter's id in its store, increasing.
    pub id: u64,
    /// The subscription that gave up.
    pub subscription: String,
    /// The event, as stored when it failed (kept also if its stream is
    /// deleted later).
    pub event: RawEvent,
    /// The error chain of the last attempt (cut at
    /// [`MAX_DEAD_LETTER_ERROR_BYTES`]).
    pub error: String,
    /// How many times the event was tried.
    pub attempts: u32,
    /// When the subscription gave up.
    pub at: Timestamp,
}

impl DeadLetter {
    /// Where the event stands in the log.
    pub fn cursor(&self) -> GlobalCursor {
        self.event.cursor()
    }
}

/// Cuts an error text to [`MAX_DEAD_LETTER_ERROR_BYTES`] at a character
/// boundary.
pub fn bounded_error(error: &str) -> &str {
    if error.len() <= MAX_DEAD_LETTER_ERROR_BYTES {
        return error;
    }
    let mut end = MAX_DEAD_LETTER_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

fn check_list(subscription: &str, limit: usize) -> Result<(), StoreError> {
    validate_name(NameKind::Checkpoint, subscription)?;
    if limit == 0 || limit > MAX_READ_LIMIT {
        return Err(ValidationError::InvalidLimit { limit }.into());
    }
    Ok(())
}

/// Where subscriptions put the events they gave up on. Every backend offers
/// one; [`MemoryDeadLetterStore`] is the in-memory one.
pub trait DeadLetterStore: Send + Sync {
    /// Keeps `event` as given up on by `subscription` after `attempts`
    /// tries, failing with `error`; returns the letter's id.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad subscription name, or a backend
    /// failure.
    fn put(
        &self,
        subscription: &str,
        event: &RawEvent,
        error: &str,
        attempts: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` letters of `subscription` with ids above `after_id`,
    /// oldest first.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad name or a limit outside
    /// `1..=MAX_READ_LIMIT`, or a backend failure.
    fn list(
        &self,
        subscription: &str,
        after_id: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send;

    /// The letter with this id, if any.
    ///
    /// # Errors
    /// A backend failure.
    fn get(&self, id: u64) -> impl Future<Output = Result<Option<DeadLetter>, StoreError>> + Send;

    /// Drops the letter; `false` when there was none.
    ///
    /// # Errors
    /// A backend failure.
    fn delete(&self, id: u64) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Dead letters kept in memory. Cloning shares them.
///
/// ```
/// use eskit_core::event::{EventType, ExpectedVersion, NewEvent, StreamName};
/// use eskit_core::memory::{MemoryDeadLetterStore, MemoryStore};
/// use eskit_core::rt::block_on;
/// use eskit_core::store::{AppendOptions, DeadLetterStore, EventStore, LoadOptions};
/// let letters = MemoryDeadLetterStore::new();
/// let store = MemoryStore::new();
/// let s = StreamName::new("order", "o-1")?;
/// let e = NewEvent::new(EventType::new("Placed")?, vec![]);
/// block_on(store.append(&s, ExpectedVersion::Any, vec![e], AppendOptions::new()))?;
/// let event = block_on(store.load(&s, LoadOptions::new()))?.remove(0);
/// let id = block_on(letters.put("projection", &event, "price missing", 6))?;
/// let kept = block_on(letters.list("projection", 0, 10))?;
/// assert_eq!((kept[0].id, kept[0].attempts), (id, 6));
/// assert!(block_on(letters.delete(id))?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryDeadLetterStore {
    inner: Arc<Mutex<Letters>>,
}

#[derive(Debug, Default)]
struct Letters {
    last_id: u64,
    by_id: BTreeMap<u64, DeadLetter>,
}

impl MemoryDeadLetterStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Letters> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DeadLetterStore for MemoryDeadLetterStore {
    async fn put(
        &self,
        subscription: &str,
        event: &RawEvent,
        error: &str,
        attempts: u32,
    ) -> Result<u64, StoreError> {
        validate_name(NameKind::Checkpoint, subscription)?;
        let mut l = self.lock();
        l.last_id += 1;
        let id = l.last_id;
        l.by_id.insert(
            id,
            DeadLetter {
                id,
                subscription: subscription.to_owned(),
                event: event.clone(),
                error: bounded_error(error).to_owned(),
                attempts,
                at: Timestamp::now(),
            },
        );
        Ok(id)
    }

    async fn list(
        &self,
        subscription: &str,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        check_list(subscription, limit)?;
        Ok(self
            .lock()
            .by_id
            .range(after_id.saturating_add(1)..)
            .map(|(_, l)| l)
            .filter(|l| l.subscription == subscription)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn get(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self.lock().by_id.get(&id).cloned())
    }

    async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.lock().by_id.remove(&id).is_some())
    }
}
