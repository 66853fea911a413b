//! A read model in memory: a value folded from events, stored with its
//! cursor in one step, and rebuilt without downtime in a shadow value.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{BoxError, StoreError};
use crate::event::RawEvent;
use crate::name::{NameKind, validate_name};
use crate::sink::{ProjectionSink, ShadowRebuild, SinkError, SwapOutcome};
use crate::store::validate_cursor;
use crate::version::GlobalCursor;

type Fold<T> = dyn Fn(&mut T, &RawEvent) -> Result<(), BoxError> + Send + Sync;

struct Shadow<T> {
    value: T,
    cursor: Option<GlobalCursor>,
    generation: u64,
}

struct State<T> {
    live: Arc<T>,
    cursors: HashMap<String, GlobalCursor>,
    shadow: Option<Shadow<T>>,
    generation: u64,
}

/// A read model held in memory: a value of `T` folded from events, the
/// [`ProjectionSink`] a subscription drives (each page and its cursor are
/// stored in one step, so every event's effect lands exactly once), and a
/// [`ShadowRebuild`]: a fresh value is folded from the start beside the
/// live one, which keeps serving [`read`](Self::read), then swapped in.
///
/// Each page is folded into a copy of the value, which replaces the live
/// one only when the whole page folded: a failing event leaves the value
/// and the cursor as they were. Readers get the value as an `Arc` and are
/// never blocked by a fold.
///
/// ```
/// use std::collections::BTreeMap;
/// use eskit_core::{event::GlobalCursor, memory::MemoryReadModel, store::ProjectionSink};
///
/// # eskit_core::rt::block_on(async {
/// let counts = MemoryReadModel::new("counts", |m: &mut BTreeMap<String, u64>, e| {
///     *m.entry(e.stream.to_string()).or_default() += 1;
///     Ok(())
/// })?;
/// assert_eq!(counts.cursor("counts").await?, None);
/// assert!(counts.read().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MemoryReadModel<T> {
    state: Arc<Mutex<State<T>>>,
    fold: Arc<Fold<T>>,
    name: Arc<str>,
    shadow_name: Arc<str>,
}

impl<T> fmt::Debug for MemoryReadModel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReadModel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for MemoryReadModel<T> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
            fold: Arc::clone(&self.fold),
            name: Arc::clone(&self.name),
            shadow_name: Arc::clone(&self.shadow_name),
        }
    }
}

fn lock<T>(state: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // Every update is a few assignments after the fold succeeded, so the
    // state is whole even if a fold panicked while the lock was held.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Folds the events after `stored` into a copy of `value`.
fn fold_page<T: Clone>(
    fold: &Fold<T>,
    value: &T,
    stored: Option<GlobalCursor>,
    events: &[RawEvent],
) -> Result<Option<T>, BoxError> {
    let fresh = match stored {
        Some(c) => events
            .iter()
            .position(|e| e.cursor() > c)
            .unwrap_or(events.len()),
        None => 0,
    };
    if fresh == events.len() {
        return Ok(None);
    }
    let mut next = value.clone();
    for e in &events[fresh..] {
        fold(&mut next, e)?;
    }
    Ok(Some(next))
}

impl<T: Clone + Default + Send + Sync + 'static> MemoryReadModel<T> {
    /// An empty read model `name` (`T::default()`), folding each event
    /// with `fold`. Its shadow's checkpoint name is `name` followed by
    /// `.shadow`.
    ///
    /// # Errors
    /// [`InvalidName`](crate::event::InvalidName) for a name a checkpoint
    /// store would refuse.
    pub fn new(
        name: &str,
        fold: impl Fn(&mut T, &RawEvent) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Result<Self, crate::event::InvalidName> {
        validate_name(NameKind::Checkpoint, name)?;
        let shadow_name = format!("{name}.shadow");
        validate_name(NameKind::Checkpoint, &shadow_name)?;
        Ok(Self {
            state: Arc::new(Mutex::new(State {
                live: Arc::new(T::default()),
                cursors: HashMap::new(),
                shadow: None,
                generation: 0,
            })),
            fold: Arc::new(fold),
            name: name.into(),
            shadow_name: shadow_name.into(),
        })
    }

    /// The read model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live value, as it is now.
    pub fn read(&self) -> Arc<T> {
        Arc::clone(&lock(&self.state).live)
    }

    /// Empties the live value and forgets every cursor and any shadow.
    pub fn reset(&self) {
        let mut s = lock(&self.state);
        s.live = Arc::new(T::default());
        s.cursors.clear();
        s.shadow = None;
    }

    /// Gives up the shadow of a rebuild, if there is one.
    pub fn drop_shadow(&self) {
        lock(&self.state).shadow = None;
    }
}

impl<T: Clone + Default + Send + Sync + 'static> ProjectionSink for MemoryReadModel<T> {
    async fn cursor(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        Ok(lock(&self.state).cursors.get(name).copied())
    }

    /// Folds the page into the live value; under the model's own name it
    /// also folds it into a shadow that has every event before the page
    /// (its cursor at or past the live one), so a caught-up shadow stays
    /// caught up until the swap.
    async fn apply(
        &self,
        name: &str,
        events: &[RawEvent],
        next: GlobalCursor,
    ) -> Result<(), SinkError> {
        validate_name(NameKind::Checkpoint, name).map_err(StoreError::from)?;
        validate_cursor(next).map_err(StoreError::from)?;
        let mut guard = lock(&self.state);
        let s = &mut *guard;
        let stored = s.cursors.get(name).copied();
        let live =
            fold_page(&*self.fold, &s.live, stored, events).map_err(SinkError::Projection)?;
        let shadow = match &s.shadow {
            Some(sh) if *name == *self.name && sh.cursor.is_some_and(|c| Some(c) >= stored) => {
                let folded = fold_page(&*self.fold, &sh.value, sh.cursor, events)
                    .map_err(SinkError::Projection)?;
                Some(folded)
            }
            _ => None,
        };
        if let Some(v) = live {
            s.live = Arc::new(v);
        }
        s.cursors
            .insert(name.to_owned(), stored.map_or(next, |c| c.max(next)));
        if let (Some(folded), Some(sh)) = (shadow, s.shadow.as_mut()) {
            if let Some(v) = folded {
                sh.value = v;
            }
            sh.cursor = sh.cursor.max(Some(next));
        }
        Ok(())
    }
}

/// The sink of a [`MemoryReadModel`]'s shadow during a rebuild. Fails once
/// the shadow was swapped in, dropped, or replaced by a newer one.
pub struct MemoryShadow<T> {
    model: MemoryReadModel<T>,
    generation: u64,
}

impl<T> fmt::Debug for MemoryShadow<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryShadow")
            .field("model", &self.model.name)
            .field("generation", &self.generation)
            .finish()
    }
}

fn gone() -> StoreError {
    StoreError::backend("the shadow was swapped in, dropped or replaced")
}

impl<T: Clone + Default + Send + Sync + 'static> ProjectionSink for MemoryShadow<T> {
    async fn cursor(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        match &lock(&self.model.state).shadow {
            Some(sh) if sh.generation == self.generation => Ok(sh.cursor),
            _ => Err(gone()),
        }
    }

    async fn apply(
        &self,
        name: &str,
        events: &[RawEvent],
        next: GlobalCursor,
    ) -> Result<(), SinkError> {
        validate_name(NameKind::Checkpoint, name).map_err(StoreError::from)?;
        let mut s = lock(&self.model.state);
        let Some(sh) = s
            .shadow
            .as_mut()
            .filter(|sh| sh.generation == self.generation)
        else {
            return Err(SinkError::Store(gone()));
        };
        if let Some(v) = fold_page(&*self.model.fold, &sh.value, sh.cursor, events)
            .map_err(SinkError::Projection)?
        {
            sh.value = v;
        }
        sh.cursor = sh.cursor.max(Some(next));
        Ok(())
    }
}

impl<T: Clone + Default + Send + Sync + 'static> ShadowRebuild for MemoryReadModel<T> {
    type Shadow = MemoryShadow<T>;

    fn shadow_name(&self) -> &str {
        &self.shadow_name
    }

    async fn begin_shadow(&self) -> Result<Self::Shadow, StoreError> {
        let mut s = lock(&self.state);
        s.generation += 1;
        let generation = s.generation;
        s.shadow = Some(Shadow {
            value: T::default(),
            cursor: None,
            generation,
        });
        Ok(MemoryShadow {
            model: self.clone(),
            generation,
        })
    }

    async fn swap_in_shadow(&self) -> Result<SwapOutcome, StoreError> {
        let mut guard = lock(&self.state);
        let s = &mut *guard;
        let Some(sh) = s.shadow.take() else {
            return Ok(SwapOutcome::NoShadow);
        };
        let live = s.cursors.get(&*self.name).copied();
        if let Some(l) = live
            && sh.cursor.is_none_or(|c| c < l)
        {
            let outcome = SwapOutcome::Behind {
                shadow: sh.cursor,
                live: l,
            };
            s.shadow = Some(sh);
            return Ok(outcome);
        }
        let cursor = sh.cursor.unwrap_or(GlobalCursor::START);
        s.live = Arc::new(sh.value);
        s.cursors.insert(self.name.to_string(), cursor);
        Ok(SwapOutcome::Swapped { cursor })
    }
}
