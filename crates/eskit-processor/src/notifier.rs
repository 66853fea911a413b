//! Change notifications for live views: a view announces which entities a
//! page changed, and any number of waiters (server-sent-event handlers,
//! caches) wake up and read the view again.
//!
//! Each view has one [`tokio::sync::watch`] channel holding a change
//! sequence number, and each watched entity one more holding the sequence
//! number of its latest change. Announcing a change writes one value per
//! channel whatever the number of waiters (no per-waiter queue), and a
//! waiter that was busy while several changes came wakes once and sees the
//! latest number: changes coalesce, none is lost.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::watch;

/// The shortest debounce a [`MultiWatch`] accepts (zero turns it off).
pub const MIN_DEBOUNCE: Duration = Duration::from_millis(1);
/// The shortest poll fallback a [`MultiWatch`] accepts.
pub const MIN_POLL_FALLBACK: Duration = Duration::from_millis(10);
/// The most views and entities one [`MultiWatch`] follows.
pub const MAX_MULTI_ENTRIES: usize = 256;

/// The notifier was closed: no change will come any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotifierClosed;

impl fmt::Display for NotifierClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the change notifier is closed")
    }
}

impl std::error::Error for NotifierClosed {}

/// Why a [`MultiWatch`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MultiWatchError {
    /// Nothing to follow: add a view or an entity.
    Empty,
    /// More than [`MAX_MULTI_ENTRIES`] views and entities.
    TooMany {
        /// How many were added.
        count: usize,
    },
    /// A debounce between zero and [`MIN_DEBOUNCE`].
    DebounceTooShort(Duration),
    /// A poll fallback below [`MIN_POLL_FALLBACK`].
    PollTooShort(Duration),
}

impl fmt::Display for MultiWatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("a multi-watch needs at least one view or entity"),
            Self::TooMany { count } => write!(
                f,
                "a multi-watch follows at most {MAX_MULTI_ENTRIES} views and entities, not {count}"
            ),
            Self::DebounceTooShort(d) => {
                write!(
                    f,
                    "debounce {d:?} is below {MIN_DEBOUNCE:?} (use zero for none)"
                )
            }
            Self::PollTooShort(d) => {
                write!(f, "poll fallback {d:?} is below {MIN_POLL_FALLBACK:?}")
            }
        }
    }
}

impl std::error::Error for MultiWatchError {}

#[derive(Debug)]
struct Slot {
    all: watch::Sender<u64>,
    keys: HashMap<String, watch::Sender<u64>>,
}

impl Slot {
    fn new() -> Self {
        Self {
            all: watch::Sender::new(0),
            keys: HashMap::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Views {
    slots: HashMap<String, Slot>,
    closed: bool,
}

/// An in-process hub of view changes. Cheap to clone (clones share the
/// hub); safe to use from any task.
///
/// ```
/// use eskit_processor::notifier::ChangeNotifier;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let notifier = ChangeNotifier::new();
/// let mut all = notifier.subscribe("balances");
/// let mut one = notifier.watch("balances", "account/a-1");
/// notifier.notify("balances", ["account/a-1", "account/a-2"]);
/// notifier.notify("balances", ["account/a-2"]);
/// // Two changes, one wake-up with the latest sequence number.
/// assert_eq!(all.changed().await?, 2);
/// assert_eq!(one.changed().await?, 1);
/// assert!(!one.has_changed()?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ChangeNotifier {
    views: Arc<Mutex<Views>>,
}

impl ChangeNotifier {
    /// A notifier with no views yet (a view appears on first use).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Views> {
        // The map stays consistent whatever panicked while it was held:
        // every update is a single insert or value write.
        self.views.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Announces that one page changed `keys` (entity keys, such as the
    /// stream names `type/id` of the events) in `view`: the view's sequence
    /// number goes up by one and every waiter on the view wakes, as do the
    /// waiters on each of the keys. Costs one write per view and per
    /// watched key, whatever the number of waiters; keys nobody watches
    /// cost a lookup. Does nothing once the notifier is closed.
    ///
    /// Returns the view's new sequence number (zero once closed).
    pub fn notify<I>(&self, view: &str, keys: I) -> u64
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut views = self.lock();
        if views.closed {
            return 0;
        }
        let slot = match views.slots.get_mut(view) {
            Some(s) => s,
            None => views.slots.entry(view.to_owned()).or_insert_with(Slot::new),
        };
        slot.all.send_modify(|seq| *seq = seq.saturating_add(1));
        let seq = *slot.all.borrow();
        if !slot.keys.is_empty() {
            for key in keys {
                if let Some(k) = slot.keys.get(key.as_ref()) {
                    k.send_replace(seq);
                }
            }
        }
        seq
    }

    /// The view's sequence number: how many pages changed it since the
    /// notifier was made (zero for a view never announced).
    pub fn sequence(&self, view: &str) -> u64 {
        self.lock().slots.get(view).map_or(0, |s| *s.all.borrow())
    }

    /// Waits for any change of `view`. Changes announced before this call
    /// are already seen.
    pub fn subscribe(&self, view: &str) -> ViewWatch {
        let mut views = self.lock();
        if views.closed {
            return ViewWatch {
                rx: closed_receiver(),
            };
        }
        let slot = views.slots.entry(view.to_owned()).or_insert_with(Slot::new);
        ViewWatch {
            rx: slot.all.subscribe(),
        }
    }

    /// Waits for changes of one entity (`key`) of `view` only: changes of
    /// other entities do not wake it.
    pub fn watch(&self, view: &str, key: &str) -> EntityWatch {
        let mut views = self.lock();
        if views.closed {
            return EntityWatch {
                rx: closed_receiver(),
                notifier: None,
                view: view.to_owned(),
                key: key.to_owned(),
            };
        }
        let slot = views.slots.entry(view.to_owned()).or_insert_with(Slot::new);
        let rx = slot
            .keys
            .entry(key.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        EntityWatch {
            rx,
            notifier: Some(self.clone()),
            view: view.to_owned(),
            key: key.to_owned(),
        }
    }

    /// Starts a [`MultiWatch`] over several views and entities.
    pub fn multi(&self) -> MultiWatchBuilder {
        MultiWatchBuilder {
            notifier: self.clone(),
            entries: Vec::new(),
            debounce: Duration::ZERO,
            poll: None,
        }
    }

    /// Entities watched in `view` right now.
    pub fn watched_keys(&self, view: &str) -> usize {
        self.lock().slots.get(view).map_or(0, |s| s.keys.len())
    }

    /// Closes the notifier: every waiter wakes with [`NotifierClosed`], and
    /// later announcements do nothing.
    pub fn close(&self) {
        let slots = {
            let mut views = self.lock();
            views.closed = true;
            std::mem::take(&mut views.slots)
        };
        // Dropping the senders (outside the lock) wakes the waiters.
        drop(slots);
    }
}

fn closed_receiver() -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0);
    drop(tx);
    rx
}

/// A waiter on every change of one view. Made by
/// [`ChangeNotifier::subscribe`].
#[derive(Debug, Clone)]
pub struct ViewWatch {
    rx: watch::Receiver<u64>,
}

impl ViewWatch {
    /// Waits until the view changed since the last call (or since the
    /// subscription) and returns its latest sequence number: several
    /// changes since then give one return.
    ///
    /// # Errors
    /// [`NotifierClosed`] once the notifier is closed.
    ///
    /// # Cancel safety
    /// Cancel safe: a change that came while the future was dropped is
    /// returned by the next call.
    pub async fn changed(&mut self) -> Result<u64, NotifierClosed> {
        self.rx.changed().await.map_err(|_| NotifierClosed)?;
        Ok(*self.rx.borrow_and_update())
    }

    /// Whether a change came that [`changed`](Self::changed) has not
    /// returned yet.
    ///
    /// # Errors
    /// [`NotifierClosed`] once the notifier is closed.
    pub fn has_changed(&self) -> Result<bool, NotifierClosed> {
        self.rx.has_changed().map_err(|_| NotifierClosed)
    }

    /// The latest sequence number, without waiting.
    pub fn sequence(&self) -> u64 {
        *self.rx.borrow()
    }
}

/// A waiter on the changes of one entity of one view. Made by
/// [`ChangeNotifier::watch`]; dropping the last one for a key frees the
/// key's slot.
#[derive(Debug)]
pub struct EntityWatch {
    rx: watch::Receiver<u64>,
    notifier: Option<ChangeNotifier>,
    view: String,
    key: String,
}

impl EntityWatch {
    /// Waits until the entity changed since the last call (or since the
    /// watch began) and returns the view's sequence number at its latest
    /// change.
    ///
    /// # Errors
    /// [`NotifierClosed`] once the notifier is closed.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`ViewWatch::changed`].
    pub async fn changed(&mut self) -> Result<u64, NotifierClosed> {
        self.rx.changed().await.map_err(|_| NotifierClosed)?;
        Ok(*self.rx.borrow_and_update())
    }

    /// Whether a change of the entity came that
    /// [`changed`](Self::changed) has not returned yet.
    ///
    /// # Errors
    /// [`NotifierClosed`] once the notifier is closed.
    pub fn has_changed(&self) -> Result<bool, NotifierClosed> {
        self.rx.has_changed().map_err(|_| NotifierClosed)
    }

    /// The entity's key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for EntityWatch {
    fn drop(&mut self) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let mut views = notifier.lock();
        // This watch's receiver goes under the lock too: receivers of a key
        // are made and dropped only under it, so the last watch of a key to
        // go sees a count of zero. (Left to the field's own drop, after this
        // lock is released, two watches dropped at once each saw the other
        // and the key stayed.)
        drop(std::mem::replace(&mut self.rx, closed_receiver()));
        if let Some(slot) = views.slots.get_mut(&self.view)
            && slot
                .keys
                .get(&self.key)
                .is_some_and(|k| k.receiver_count() == 0)
        {
            slot.keys.remove(&self.key);
        }
    }
}

/// What woke a [`MultiWatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    /// The entries that changed, as indexes in the order they were added.
    pub changed: Vec<usize>,
    /// True when no change came within the poll fallback: read everything
    /// again in case an announcement was missed (`changed` is empty).
    pub polled: bool,
}

#[derive(Debug)]
enum Entry {
    View(ViewWatch),
    Entity(EntityWatch),
}

impl Entry {
    fn rx(&mut self) -> &mut watch::Receiver<u64> {
        match self {
            Self::View(w) => &mut w.rx,
            Self::Entity(w) => &mut w.rx,
        }
    }
}

/// Builds a [`MultiWatch`]; see [`ChangeNotifier::multi`].
#[derive(Debug)]
#[must_use]
pub struct MultiWatchBuilder {
    notifier: ChangeNotifier,
    entries: Vec<Entry>,
    debounce: Duration,
    poll: Option<Duration>,
}

impl MultiWatchBuilder {
    /// Follows every change of `view` (the next entry index).
    pub fn view(mut self, view: &str) -> Self {
        self.entries
            .push(Entry::View(self.notifier.subscribe(view)));
        self
    }

    /// Follows the changes of entity `key` of `view` (the next entry index).
    pub fn entity(mut self, view: &str, key: &str) -> Self {
        self.entries
            .push(Entry::Entity(self.notifier.watch(view, key)));
        self
    }

    /// After the first change, waits this long for more before waking, so
    /// a burst gives one wake-up (zero, the default: wake at once).
    pub fn with_debounce(mut self, d: Duration) -> Self {
        self.debounce = d;
        self
    }

    /// Wakes with [`Wake::polled`] when no change came for this long (the
    /// timer restarts after every wake-up): a safety net for a relay that
    /// lost an announcement. Off by default.
    pub fn with_poll_fallback(mut self, d: Duration) -> Self {
        self.poll = Some(d);
        self
    }

    /// The multi-watch.
    ///
    /// # Errors
    /// [`MultiWatchError`] for no entries, too many, or a debounce or poll
    /// fallback below its minimum.
    pub fn build(self) -> Result<MultiWatch, MultiWatchError> {
        if self.entries.is_empty() {
            return Err(MultiWatchError::Empty);
        }
        if self.entries.len() > MAX_MULTI_ENTRIES {
            return Err(MultiWatchError::TooMany {
                count: self.entries.len(),
            });
        }
        if !self.debounce.is_zero() && self.debounce < MIN_DEBOUNCE {
            return Err(MultiWatchError::DebounceTooShort(self.debounce));
        }
        if let Some(p) = self.poll.filter(|p| *p < MIN_POLL_FALLBACK) {
            return Err(MultiWatchError::PollTooShort(p));
        }
        Ok(MultiWatch {
            pending: vec![false; self.entries.len()],
            entries: self.entries,
            debounce: self.debounce,
            poll: self.poll,
        })
    }
}

/// Several views and entities followed together, with an optional
/// debounce and poll fallback: the loop of a server-sent-events handler
/// (`while let Ok(wake) = multi.next().await { render(wake) }`).
#[derive(Debug)]
pub struct MultiWatch {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    debounce: Duration,
    poll: Option<Duration>,
}

impl MultiWatch {
    /// Waits for the next change of any entry (or the poll fallback), then
    /// for the debounce, and returns every entry that changed meanwhile.
    ///
    /// # Errors
    /// [`NotifierClosed`] once the notifier is closed.
    ///
    /// # Cancel safety
    /// Cancel safe: changes not yet returned are returned by the next call.
    pub async fn next(&mut self) -> Result<Wake, NotifierClosed> {
        if !self.any_changed()? {
            let woke = match self.poll {
                None => Some(self.any_change().await?),
                Some(p) => tokio::time::timeout(p, self.any_change())
                    .await
                    .ok()
                    .transpose()?,
            };
            let Some(i) = woke else {
                return Ok(Wake {
                    changed: Vec::new(),
                    polled: true,
                });
            };
            // Kept until returned, so a call dropped during the debounce
            // does not lose it.
            self.pending[i] = true;
            if !self.debounce.is_zero() {
                tokio::time::sleep(self.debounce).await;
            }
        }
        let mut changed = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            let rx = e.rx();
            // The entry that woke us has its change marked seen already.
            if rx.has_changed().map_err(|_| NotifierClosed)? {
                rx.borrow_and_update();
                changed.push(i);
            } else if self.pending[i] {
                changed.push(i);
            }
            self.pending[i] = false;
        }
        Ok(Wake {
            changed,
            polled: false,
        })
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: a multi-watch has at least one entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn any_changed(&mut self) -> Result<bool, NotifierClosed> {
        if self.pending.contains(&true) {
            return Ok(true);
        }
        for e in &mut self.entries {
            if e.rx().has_changed().map_err(|_| NotifierClosed)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Completes when some entry has a new change, with its index; that
    /// entry's change is marked seen, the others are left for the caller
    /// to collect after the debounce.
    async fn any_change(&mut self) -> Result<usize, NotifierClosed> {
        type Waiting<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
        let mut waiting: Vec<Waiting<'_>> = self
            .entries
            .iter_mut()
            .map(|e| {
                let rx = e.rx();
                Box::pin(async move { rx.changed().await.is_ok() }) as Waiting<'_>
            })
            .collect();
        poll_fn(|cx| {
            for (i, w) in waiting.iter_mut().enumerate() {
                if let Poll::Ready(open) = w.as_mut().poll(cx) {
                    return Poll::Ready(if open { Ok(i) } else { Err(NotifierClosed) });
                }
            }
            Poll::Pending
        })
        .await
    }
}
