//! State views: read models with a lifecycle (setup, reset, apply, change
//! announcements), driven by a [`Subscription`], and rebuilt from zero.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eskit_core::{
    error::{BoxError, StoreError},
    event::{GlobalCursor, RawEvent},
    store::{BoxFuture, CheckpointStore, CommitFeed, GlobalReader, ProjectionSink, SinkError},
};

use crate::SubscriptionState;
use crate::notifier::ChangeNotifier;
use crate::{BatchHandler, HealthHandle, Subscription, SubscriptionError, SubscriptionOptions};

/// How often [`run_to_head`] looks whether the subscription caught up.
pub const CATCH_UP_CHECK_INTERVAL: Duration = Duration::from_millis(1);

/// A read model fed by a subscription: created once, cleared for a
/// rebuild, and given each page of events in cursor order.
///
/// The view does not store its cursor: the subscription's checkpoint store
/// does (at least once, so [`apply`](Self::apply) must be idempotent), or a
/// [`ProjectionSink`] stores both in
/// one transaction (exactly once; see `eskit_sqlite::SqliteReadModel`).
pub trait StateView: Send + Sync {
    /// Creates what the view needs (tables, files); run before every start,
    /// so it must be idempotent. The default does nothing.
    ///
    /// # Errors
    /// Whatever stops the view from starting.
    fn setup(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        std::future::ready(Ok(()))
    }

    /// Clears the view back to its state before any event, for a rebuild.
    ///
    /// # Errors
    /// Whatever stops the view from being cleared.
    fn reset(&self) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Applies one page of events, in cursor order.
    ///
    /// # Errors
    /// Whatever the view refuses; the subscription retries the page per its
    /// policy and, with the default "halt" policy, never skips it.
    fn apply(&self, events: &[RawEvent]) -> impl Future<Output = Result<(), BoxError>> + Send;
}

impl<V: StateView> StateView for Arc<V> {
    fn setup(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        (**self).setup()
    }

    fn reset(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        (**self).reset()
    }

    fn apply(&self, events: &[RawEvent]) -> impl Future<Output = Result<(), BoxError>> + Send {
        (**self).apply(events)
    }
}

/// Why a view could not be set up or rebuilt.
#[derive(Debug)]
#[non_exhaustive]
pub enum ViewError {
    /// [`StateView::setup`] failed.
    Setup(BoxError),
    /// [`StateView::reset`] failed.
    Reset(BoxError),
    /// Clearing the view's checkpoint failed.
    Checkpoint(StoreError),
    /// The subscription replaying the log stopped with an error.
    Subscription(SubscriptionError),
}

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setup(_) => f.write_str("the view could not be set up"),
            Self::Reset(_) => f.write_str("the view could not be reset"),
            Self::Checkpoint(_) => f.write_str("the view's checkpoint could not be cleared"),
            Self::Subscription(_) => f.write_str("replaying the log into the view failed"),
        }
    }
}

impl std::error::Error for ViewError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Setup(e) | Self::Reset(e) => Some(e.as_ref()),
            Self::Checkpoint(e) => Some(e),
            Self::Subscription(e) => Some(e),
        }
    }
}

impl From<SubscriptionError> for ViewError {
    fn from(e: SubscriptionError) -> Self {
        Self::Subscription(e)
    }
}

/// What a page changed, given to a view's change callback after the page
/// was applied.
#[derive(Debug, Clone, Copy)]
pub struct PageChange<'a> {
    /// The view's name.
    pub view: &'a str,
    /// The events applied, in cursor order.
    pub events: &'a [RawEvent],
}

type OnChange = Arc<dyn Fn(PageChange<'_>) + Send + Sync>;

/// A [`StateView`] as a subscription's [`BatchHandler`]: each page is
/// applied, then announced (to a [`ChangeNotifier`], keyed by the events'
/// stream names `type/id`, and to a callback).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use eskit_core::{error::BoxError, event::RawEvent};
/// use eskit_processor::view::{StateView, ViewHandler};
/// use eskit_processor::notifier::ChangeNotifier;
///
/// #[derive(Default)]
/// struct Count(Mutex<u64>);
///
/// impl StateView for Count {
///     async fn reset(&self) -> Result<(), BoxError> {
///         *self.0.lock().map_err(|_| "poisoned")? = 0;
///         Ok(())
///     }
///     async fn apply(&self, events: &[RawEvent]) -> Result<(), BoxError> {
///         *self.0.lock().map_err(|_| "poisoned")? += events.len() as u64;
///         Ok(())
///     }
/// }
///
/// let notifier = ChangeNotifier::new();
/// let handler = ViewHandler::new("count", Arc::new(Count::default())).with_notifier(notifier);
/// assert_eq!(handler.name(), "count");
/// ```
pub struct ViewHandler<V> {
    name: String,
    view: V,
    notifier: Option<ChangeNotifier>,
    on_change: Option<OnChange>,
}

impl<V> fmt::Debug for ViewHandler<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewHandler")
            .field("name", &self.name)
            .field("notifier", &self.notifier.is_some())
            .field("on_change", &self.on_change.is_some())
            .finish_non_exhaustive()
    }
}

impl<V: StateView> ViewHandler<V> {
    /// The view `view`, announced under `name`.
    pub fn new(name: impl Into<String>, view: V) -> Self {
        Self {
            name: name.into(),
            view,
            notifier: None,
            on_change: None,
        }
    }

    /// Announces every applied page to `notifier`: the view's waiters wake,
    /// and the waiters on each event's stream name (`type/id`).
    #[must_use]
    pub fn with_notifier(mut self, notifier: ChangeNotifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Calls `f` after every applied page. It runs on the subscription's
    /// task: keep it short and never block in it.
    #[must_use]
    pub fn with_on_change(mut self, f: impl Fn(PageChange<'_>) + Send + Sync + 'static) -> Self {
        self.on_change = Some(Arc::new(f));
        self
    }

    /// The name the view is announced under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The view.
    pub fn view(&self) -> &V {
        &self.view
    }

    /// Sets the view up ([`StateView::setup`]) without clearing it: call
    /// before starting its subscription.
    ///
    /// # Errors
    /// [`ViewError::Setup`].
    pub async fn setup(&self) -> Result<(), ViewError> {
        self.view.setup().await.map_err(ViewError::Setup)
    }

    fn announce(&self, events: &[RawEvent]) {
        if events.is_empty() {
            return;
        }
        if let Some(n) = &self.notifier {
            announce(n, &self.name, events);
        }
        if let Some(f) = &self.on_change {
            f(PageChange {
                view: &self.name,
                events,
            });
        }
    }
}

/// Announces `events` as one change of `view`, keyed by stream name.
fn announce(notifier: &ChangeNotifier, view: &str, events: &[RawEvent]) {
    let mut keys: Vec<String> = events.iter().map(|e| e.stream.to_string()).collect();
    keys.sort_unstable();
    keys.dedup();
    notifier.notify(view, &keys);
}

/// A [`ProjectionSink`] that announces every page it stored to a
/// [`ChangeNotifier`] (keyed by the events' stream names `type/id`), for a
/// transactional read model (such as an `eskit_sqlite::SqliteReadModel`'s
/// sink) whose readers wait for changes. The announcement follows the
/// commit, so a woken reader sees the page.
#[derive(Debug, Clone)]
pub struct NotifyingSink<S> {
    sink: S,
    notifier: ChangeNotifier,
    view: Arc<str>,
}

impl<S: ProjectionSink> NotifyingSink<S> {
    /// `sink`, announcing its pages under `view`.
    pub fn new(sink: S, notifier: ChangeNotifier, view: &str) -> Self {
        Self {
            sink,
            notifier,
            view: view.into(),
        }
    }
}

impl<S: ProjectionSink> ProjectionSink for NotifyingSink<S> {
    fn cursor(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<GlobalCursor>, StoreError>> + Send {
        self.sink.cursor(name)
    }

    async fn apply(
        &self,
        name: &str,
        events: &[RawEvent],
        next: GlobalCursor,
    ) -> Result<(), SinkError> {
        self.sink.apply(name, events, next).await?;
        if !events.is_empty() {
            announce(&self.notifier, &self.view, events);
        }
        Ok(())
    }
}

impl<V: StateView> BatchHandler for ViewHandler<V> {
    fn handle<'a>(&'a self, events: &'a [RawEvent]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            self.view.apply(events).await?;
            self.announce(events);
            Ok(())
        })
    }
}

/// Runs `subscription` until it has caught up with the head of the log (or
/// fails), saves its checkpoint and returns the cursor it reached.
///
/// # Errors
/// The [`SubscriptionError`] it stopped with.
pub async fn run_to_head<R, C, H>(
    subscription: Subscription<R, C, H>,
) -> Result<GlobalCursor, SubscriptionError>
where
    R: GlobalReader + CommitFeed,
    C: CheckpointStore,
    H: BatchHandler,
{
    let health = subscription.health();
    subscription.run(caught_up(health.clone())).await?;
    Ok(health.snapshot().cursor)
}

/// Completes once the subscription reports that it is live.
pub(crate) async fn caught_up(health: HealthHandle) {
    while health.snapshot().state != SubscriptionState::Live {
        tokio::time::sleep(CATCH_UP_CHECK_INTERVAL).await;
    }
}

/// Rebuilds a view from zero: sets it up, resets it, moves the checkpoint
/// `options.name()` back to the start, and replays the whole log into it
/// through a subscription until it has caught up. Returns the cursor it
/// reached; a live subscription started afterwards with the same
/// checkpoint store and name goes on from there.
///
/// The view is empty while it is rebuilt: stop the view's live
/// subscription first. For a rebuild that keeps serving reads, use a shadow
/// ([`rebuild_in_shadow`](crate::rebuild::rebuild_in_shadow)).
///
/// # Errors
/// [`ViewError`]: the step that failed. The checkpoint may then lie
/// anywhere before the head; rebuild again.
pub async fn rebuild<R, C, V>(
    reader: R,
    checkpoints: C,
    options: SubscriptionOptions,
    handler: ViewHandler<V>,
) -> Result<GlobalCursor, ViewError>
where
    R: GlobalReader + CommitFeed,
    C: CheckpointStore,
    V: StateView,
{
    handler.setup().await?;
    handler.view.reset().await.map_err(ViewError::Reset)?;
    checkpoints
        .save(options.name(), GlobalCursor::START)
        .await
        .map_err(ViewError::Checkpoint)?;
    Ok(run_to_head(Subscription::new(reader, checkpoints, options, handler)).await?)
}
