//! A projection sink over an in-memory read model.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{BoxError, StoreError};
use crate::event::RawEvent;
use crate::name::{NameKind, validate_name};
use crate::rt::yield_now;
use crate::sink::{ProjectionSink, SinkError};
use crate::store::validate_cursor;
use crate::version::GlobalCursor;

/// Applies one page of events to a model.
type Apply<M> = dyn Fn(&mut M, &[RawEvent]) -> Result<(), BoxError> + Send + Sync;

/// A [`ProjectionSink`] over a read model kept in memory: each page is
/// applied to a copy of the model, and the copy and the cursor replace the
/// old ones together only when the whole page applied, so a refused page
/// leaves both as they were. Events at or before the stored cursor are
/// skipped, so a page delivered twice has its effect once. Cloning shares
/// the model.
///
/// ```
/// use eskit_core::{memory::{MemorySink, MemoryStore}, rt::block_on, store::{GlobalReader, ProjectionSink, ReadOptions}};
/// # use eskit_core::{event::{EventType, ExpectedVersion, NewEvent, StreamName}, store::{AppendOptions, EventStore}};
/// let store = MemoryStore::new();
/// # let s = StreamName::new("account", "a-1")?;
/// # block_on(store.append(&s, ExpectedVersion::NoStream, vec![NewEvent::new(EventType::new("Opened")?, vec![])], AppendOptions::new()))?;
/// let counter = MemorySink::new(0u64, |n: &mut u64, events| {
///     *n += events.len() as u64;
///     Ok(())
/// });
/// let page = block_on(store.read(ReadOptions::from_start(100)))?;
/// block_on(counter.apply("counter", &page.events, page.next))?;
/// block_on(counter.apply("counter", &page.events, page.next))?; // redelivered: no effect
/// assert_eq!(counter.model(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MemorySink<M> {
    state: Arc<Mutex<State<M>>>,
    apply: Arc<Apply<M>>,
}

struct State<M> {
    model: M,
    cursors: HashMap<String, GlobalCursor>,
}

impl<M> Clone for MemorySink<M> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
            apply: Arc::clone(&self.apply),
        }
    }
}

impl<M> fmt::Debug for MemorySink<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySink").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The model and cursors are replaced only after a page applied fully.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<M: Clone + Send + 'static> MemorySink<M> {
    /// A sink that applies pages to `initial` with `apply`; an `Err` from
    /// `apply` refuses the page (model and cursor stay as they were).
    pub fn new<F>(initial: M, apply: F) -> Self
    where
        F: Fn(&mut M, &[RawEvent]) -> Result<(), BoxError> + Send + Sync + 'static,
    {
        Self {
            state: Arc::new(Mutex::new(State {
                model: initial,
                cursors: HashMap::new(),
            })),
            apply: Arc::new(apply),
        }
    }

    /// A copy of the model as the last applied page left it.
    pub fn model(&self) -> M {
        lock(&self.state).model.clone()
    }
}

impl<M: Clone + Send + 'static> ProjectionSink for MemorySink<M> {
    async fn cursor(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        yield_now().await;
        validate_name(NameKind::Checkpoint, name)?;
        Ok(lock(&self.state).cursors.get(name).copied())
    }

    async fn apply(
        &self,
        name: &str,
        events: &[RawEvent],
        next: GlobalCursor,
    ) -> Result<(), SinkError> {
        yield_now().await;
        validate_name(NameKind::Checkpoint, name).map_err(StoreError::from)?;
        validate_cursor(next).map_err(StoreError::from)?;
        let mut state = lock(&self.state);
        let stored = state.cursors.get(name).copied();
        let fresh: Vec<RawEvent> = events
            .iter()
            .filter(|e| stored.is_none_or(|c| e.cursor() > c))
            .cloned()
            .collect();
        let mut model = state.model.clone();
        (self.apply)(&mut model, &fresh).map_err(SinkError::Projection)?;
        state.model = model;
        let cursor = stored.map_or(next, |c| c.max(next));
        state.cursors.insert(name.to_owned(), cursor);
        Ok(())
    }
}
