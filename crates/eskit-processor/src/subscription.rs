//! The subscription loop: read a page after the cursor, hand it over, move
//! the cursor, checkpoint, and wait on the commit feed once caught up.

use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eskit_core::limits::MAX_READ_LIMIT;
use eskit_core::{
    backend::validate_name,
    error::{BoxError, StoreError, error_chain},
    event::{EventType, GlobalCursor, NameKind, RawEvent, StreamType, Timestamp},
    handler::RetryPolicy,
    store::{
        BoxFuture, CheckpointStore, CommitFeed, DeadLetterStore, DynDeadLetterStore,
        DynLockRegistry, FeedError, FencingToken, GlobalBatch, GlobalReader, LeaseLost, Listener,
        LockRegistry, ProjectionSink, ReadOptions, SinkError,
    },
};

/// Events one page reads when not set.
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// Events handled between two checkpoint saves when not set.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 500;
/// Longest time between two checkpoint saves while events flow, when not set.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a caught-up subscription reads without a wake-up from the
/// commit feed (the fallback while the feed is broken), when not set.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The shortest poll interval accepted.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Why a subscription stopped or could not be configured.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// An option is out of range.
    InvalidOption {
        /// The option.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the log or the checkpoint failed past the retry policy.
    Store(StoreError),
    /// The handler failed on a page past the retry policy; the checkpoint
    /// stays before that page, so nothing was skipped.
    Handler {
        /// The cursor the failing page was read after.
        after: GlobalCursor,
        /// How many times the page was tried.
        attempts: u32,
        /// The handler's last error.
        source: BoxError,
    },
    /// The leader lease was lost while the subscription ran: it stopped at
    /// once (another node may hold the lease now).
    LeaseLost(LeaseLost),
    /// The backend returned a resume cursor before the one it was asked to
    /// read after: a broken gap-safety contract. Reported, never skipped.
    CursorWentBack {
        /// The cursor the page was read after.
        from: GlobalCursor,
        /// The page's `next`.
        to: GlobalCursor,
    },
}

impl fmt::Display for SubscriptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidOption { name, reason } => write!(f, "invalid option {name}: {reason}"),
            Self::Store(e) => write!(f, "subscription store failure: {e}"),
            Self::Handler {
                after, attempts, ..
            } => write!(
                f,
                "the handler failed {attempts} times on the page after {after}"
            ),
            Self::LeaseLost(why) => write!(f, "the leader lease was lost: {why}"),
            Self::CursorWentBack { from, to } => write!(
                f,
                "the backend moved the cursor back from {from} to {to} (a gap-safety bug)"
            ),
        }
    }
}

impl std::error::Error for SubscriptionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => e.source(),
            Self::Handler { source, .. } => Some(source.as_ref()),
            Self::LeaseLost(why) => why.source(),
            Self::InvalidOption { .. } | Self::CursorWentBack { .. } => None,
        }
    }
}

impl From<StoreError> for SubscriptionError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// What a subscription does with the events of one page.
///
/// A plain closure `Fn(&[RawEvent]) -> Result<(), BoxError>` is a handler;
/// implement the trait for asynchronous work.
pub trait BatchHandler: Send + Sync {
    /// Handles one page of events, in cursor order. An error makes the
    /// subscription retry the same page (per its retry policy), so the
    /// work must be idempotent or transactional.
    fn handle<'a>(&'a self, events: &'a [RawEvent]) -> BoxFuture<'a, Result<(), BoxError>>;

    /// Handles one page and, when the handler can, stores `next` as the
    /// cursor of the subscription `name` together with the page's effects
    /// (as a [`ProjectionSink`] does, in one transaction). Returns whether
    /// it stored the cursor; the subscription then saves no checkpoint for
    /// the page. The default calls [`handle`](Self::handle) and returns
    /// `false`.
    fn handle_page<'a>(
        &'a self,
        name: &'a str,
        events: &'a [RawEvent],
        next: GlobalCursor,
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        let _ = (name, next);
        let handled = self.handle(events);
        Box::pin(async move { handled.await.map(|()| false) })
    }
}

/// The checkpoints of a subscription driven by a [`ProjectionSink`]: the
/// cursor is the sink's, and a save is an empty page applied through it
/// (for pages a filter emptied). Made by [`Subscription::with_sink`].
#[derive(Debug)]
pub struct SinkCheckpoints<S>(Arc<S>);

impl<S: ProjectionSink> CheckpointStore for SinkCheckpoints<S> {
    async fn load(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        self.0.cursor(name).await
    }

    async fn save(&self, name: &str, cursor: GlobalCursor) -> Result<(), StoreError> {
        self.0.apply(name, &[], cursor).await.map_err(|e| match e {
            SinkError::Store(e) => e,
            other => StoreError::backend(other),
        })
    }
}

/// The handler of a subscription driven by a [`ProjectionSink`]: each page
/// and its cursor go to [`ProjectionSink::apply`] together. Made by
/// [`Subscription::with_sink`].
#[derive(Debug)]
pub struct SinkHandler<S>(Arc<S>);

impl<S: ProjectionSink> BatchHandler for SinkHandler<S> {
    /// Refuses: a sink stores each page with its cursor, which only
    /// [`handle_page`](BatchHandler::handle_page) is given.
    fn handle<'a>(&'a self, _events: &'a [RawEvent]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(std::future::ready(Err(
            "a projection sink is applied with the page's cursor (handle_page)".into(),
        )))
    }

    fn handle_page<'a>(
        &'a self,
        name: &'a str,
        events: &'a [RawEvent],
        next: GlobalCursor,
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(async move {
            self.0.apply(name, events, next).await?;
            Ok(true)
        })
    }
}

impl<F> BatchHandler for F
where
    F: Fn(&[RawEvent]) -> Result<(), BoxError> + Send + Sync,
{
    fn handle<'a>(&'a self, events: &'a [RawEvent]) -> BoxFuture<'a, Result<(), BoxError>> {
        let r = self(events);
        Box::pin(std::future::ready(r))
    }
}

/// How a subscription reads, checkpoints and retries. Built with `with_*`
/// and checked as it is built.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    name: String,
    batch_size: usize,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    poll_interval: Duration,
    event_types: Vec<EventType>,
    stream_type: Option<StreamType>,
    retry: RetryPolicy,
}

impl SubscriptionOptions {
    /// Options for the subscription `name` (also its checkpoint's name),
    /// with the defaults.
    ///
    /// # Errors
    /// [`SubscriptionError::InvalidOption`] for a name a checkpoint store
    /// would refuse.
    pub fn new(name: impl Into<String>) -> Result<Self, SubscriptionError> {
        let name = name.into();
        validate_name(NameKind::Checkpoint, &name).map_err(|e| {
            SubscriptionError::InvalidOption {
                name: "name",
                reason: e.to_string(),
            }
        })?;
        let retry = RetryPolicy::new(5)
            .map_err(|e| SubscriptionError::InvalidOption {
                name: "retry",
                reason: e.to_string(),
            })?
            .with_base_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_secs(5));
        Ok(Self {
            name,
            batch_size: DEFAULT_BATCH_SIZE,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            poll_interval: DEFAULT_POLL_INTERVAL,
            event_types: Vec::new(),
            stream_type: None,
            retry,
        })
    }

    /// Events per page, 1 to [`MAX_READ_LIMIT`].
    ///
    /// # Errors
    /// [`SubscriptionError::InvalidOption`] out of range.
    pub fn with_batch_size(mut self, n: usize) -> Result<Self, SubscriptionError> {
        if n == 0 || n > MAX_READ_LIMIT {
            return Err(SubscriptionError::InvalidOption {
                name: "batch size",
                reason: format!("{n} is not between 1 and {MAX_READ_LIMIT}"),
            });
        }
        self.batch_size = n;
        Ok(self)
    }

    /// Saves the checkpoint once `n` events (1 or more) were handled since
    /// the last save; it is also saved every
    /// [`with_checkpoint_interval`](Self::with_checkpoint_interval) and
    /// whenever the subscription catches up or stops. A page read after a
    /// save is a whole batch, and a later one stops where the `n` events are
    /// reached, so at most `n` events, or one batch when batches are larger,
    /// are ever handled past the saved checkpoint: what a crash delivers
    /// again.
    ///
    /// # Errors
    /// [`SubscriptionError::InvalidOption`] for zero.
    pub fn with_checkpoint_every(mut self, n: u64) -> Result<Self, SubscriptionError> {
        if n == 0 {
            return Err(SubscriptionError::InvalidOption {
                name: "checkpoint every",
                reason: "must be at least 1 event".into(),
            });
        }
        self.checkpoint_every = n;
        Ok(self)
    }

    /// Saves the checkpoint at least this often while events flow.
    #[must_use]
    pub fn with_checkpoint_interval(mut self, d: Duration) -> Self {
        self.checkpoint_interval = d;
        self
    }

    /// Reads this often when caught up and no wake-up came (the fallback
    /// while the commit feed is broken).
    ///
    /// # Errors
    /// [`SubscriptionError::InvalidOption`] below [`MIN_POLL_INTERVAL`].
    pub fn with_poll_interval(mut self, d: Duration) -> Result<Self, SubscriptionError> {
        if d < MIN_POLL_INTERVAL {
            return Err(SubscriptionError::InvalidOption {
                name: "poll interval",
                reason: format!("{d:?} is below {MIN_POLL_INTERVAL:?}"),
            });
        }
        self.poll_interval = d;
        Ok(self)
    }

    /// Only events of these types: the filter runs in the backend, and the
    /// cursor still moves past everything else.
    #[must_use]
    pub fn with_event_types(mut self, types: impl IntoIterator<Item = EventType>) -> Self {
        self.event_types = types.into_iter().collect();
        self
    }

    /// Only events of streams of this type (in the backend).
    #[must_use]
    pub fn with_stream_type(mut self, t: StreamType) -> Self {
        self.stream_type = Some(t);
        self
    }

    /// How often a failing page (read or handler) is retried, with which
    /// backoff, before the subscription stops with the error.
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A read of at most `limit` events after `after` (at most the batch
    /// size).
    fn read_options(&self, after: GlobalCursor, limit: usize) -> ReadOptions {
        let mut o = ReadOptions::new(after, limit.min(self.batch_size))
            .with_event_types(self.event_types.iter().cloned());
        if let Some(t) = &self.stream_type {
            o = o.with_stream_type(t.clone());
        }
        o
    }
}

/// Where a subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubscriptionState {
    /// Not started yet.
    Starting,
    /// Reading pages behind the head.
    CatchingUp,
    /// Caught up; waiting for commits.
    Live,
    /// A page failed and is being retried.
    Retrying,
    /// The run ended (see `last_error` for why, if it failed).
    Stopped,
}

impl SubscriptionState {
    /// `catching_up`, `live`, ... as in the JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::CatchingUp => "catching_up",
            Self::Live => "live",
            Self::Retrying => "retrying",
            Self::Stopped => "stopped",
        }
    }
}

/// A subscription's health at one moment, for logs and HTTP endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The subscription's name.
    pub name: String,
    /// Its state.
    pub state: SubscriptionState,
    /// The cursor it has handled up to.
    pub cursor: GlobalCursor,
    /// The newest committed cursor its last read saw.
    pub head: GlobalCursor,
    /// Events it is behind, estimated from positions (exact on backends
    /// ordered by position, without holes): up to the newest position its
    /// last read saw or its commit feed announced, whichever is higher (a
    /// tenant-scoped reader counts only what its reads saw).
    pub lag_events: u64,
    /// How old the newest handled event was when it was handled, while
    /// catching up; while the backend holds back commits the feed announced
    /// (a transaction left open on PostgreSQL holds back every later one),
    /// how long they have been held back; zero otherwise.
    pub lag: Duration,
    /// Events handled in this run.
    pub handled: u64,
    /// The last error, also one that a retry overcame.
    pub last_error: Option<String>,
    /// Whether the commit feed works (false: the subscription polls).
    pub feed_ok: bool,
    /// Events given up on and put in the dead-letter store in this run.
    pub dead_lettered: u64,
    /// With a leader lease: whether this instance holds it, and its fencing
    /// token (pass it with writes the handler makes, so a stale leader's
    /// writes can be refused).
    pub leader: Option<FencingToken>,
}

impl Health {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: SubscriptionState::Starting,
            cursor: GlobalCursor::START,
            head: GlobalCursor::START,
            lag_events: 0,
            lag: Duration::ZERO,
            handled: 0,
            last_error: None,
            feed_ok: true,
            dead_lettered: 0,
            leader: None,
        }
    }

    /// The health as a JSON object (for an HTTP health endpoint).
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(
            s,
            "\"name\":{},\"state\":\"{}\",\"cursor\":\"{}\",\"head\":\"{}\",\"lag_events\":{},\
             \"lag_ms\":{},\"handled\":{},\"dead_lettered\":{},\"feed_ok\":{},\"leader\":{},\
             \"last_error\":",
            json_string(&self.name),
            self.state.as_str(),
            self.cursor,
            self.head,
            self.lag_events,
            self.lag.as_millis(),
            self.handled,
            self.dead_lettered,
            self.feed_ok,
            self.leader
                .map_or_else(|| "null".to_owned(), |t| t.get().to_string())
        );
        match &self.last_error {
            Some(e) => s.push_str(&json_string(e)),
            None => s.push_str("null"),
        }
        s.push('}');
        s
    }
}

fn json_string(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// A handle to read a running subscription's [`Health`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthHandle {
    inner: Arc<Mutex<Health>>,
}

impl HealthHandle {
    /// The health now.
    pub fn snapshot(&self) -> Health {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Health)) {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// A durable subscription over a backend's global log. See the crate docs.
pub struct Subscription<R, C, H> {
    reader: R,
    checkpoints: C,
    options: SubscriptionOptions,
    handler: H,
    health: HealthHandle,
    leader: Option<Arc<dyn DynLockRegistry>>,
    dead_letters: Option<Arc<dyn DynDeadLetterStore>>,
}

impl<R, C, H> fmt::Debug for Subscription<R, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("options", &self.options)
            .field("health", &self.health.snapshot())
            .finish_non_exhaustive()
    }
}

impl<R, S> Subscription<R, SinkCheckpoints<S>, SinkHandler<S>>
where
    R: GlobalReader + CommitFeed,
    S: ProjectionSink,
{
    /// A subscription reading `reader` whose pages go to `sink`, each page
    /// together with its cursor ([`ProjectionSink::apply`]), so the sink's
    /// effects and the cursor are stored atomically: after a crash or a
    /// dropped run, the next run resumes from the sink's cursor and no
    /// event's effect is applied twice or lost. The checkpoint options
    /// (`checkpoint_every`, `checkpoint_interval`) only matter for pages a
    /// filter emptied.
    pub fn with_sink(reader: R, sink: S, options: SubscriptionOptions) -> Self {
        let sink = Arc::new(sink);
        Subscription::new(
            reader,
            SinkCheckpoints(Arc::clone(&sink)),
            options,
            SinkHandler(sink),
        )
    }
}

impl<R, C, H> Subscription<R, C, H>
where
    R: GlobalReader + CommitFeed,
    C: CheckpointStore,
    H: BatchHandler,
{
    /// A subscription reading `reader`, saving its cursor in `checkpoints`
    /// under the options' name, handing pages to `handler`.
    pub fn new(reader: R, checkpoints: C, options: SubscriptionOptions, handler: H) -> Self {
        let health = HealthHandle {
            inner: Arc::new(Mutex::new(Health::new(options.name()))),
        };
        Self {
            reader,
            checkpoints,
            options,
            handler,
            health,
            leader: None,
            dead_letters: None,
        }
    }

    /// Gives up on an event that keeps failing instead of stopping: the
    /// policy "dead-letter". When a page fails, each of its events is tried
    /// alone (with the retry policy); an event that still fails goes to
    /// `letters` with its error chain and attempt count, and the subscription
    /// moves on. Without this the policy is "halt" (the default, right for
    /// projections): the run stops on the failing page and never skips it.
    ///
    /// Events of a failing page that come before the bad one are handled
    /// again when they are tried alone (at least once).
    #[must_use]
    pub fn with_dead_letters(mut self, letters: impl DeadLetterStore + 'static) -> Self {
        self.dead_letters = Some(Arc::new(letters));
        self
    }

    /// Runs only while this instance holds the leader lease
    /// `subscription:<name>` of `locks`: [`run`](Self::run) first waits for
    /// the lease (other instances with the same name and a registry over the
    /// same store wait meanwhile), and stops at once with
    /// [`SubscriptionError::LeaseLost`] when the lease is lost. The next
    /// leader resumes from the checkpoint, so events handled since the last
    /// save are delivered again (at most one checkpoint interval).
    #[must_use]
    pub fn with_leader(mut self, locks: impl LockRegistry + 'static) -> Self {
        self.leader = Some(Arc::new(locks));
        self
    }

    /// A handle to this subscription's health, also while it runs.
    pub fn health(&self) -> HealthHandle {
        self.health.clone()
    }

    /// Runs until `shutdown` completes (then saves the checkpoint of what
    /// was handled and returns `Ok`) or a failure outlasts the retry policy.
    /// The page in hand when `shutdown` completes is finished first.
    ///
    /// # Errors
    /// [`SubscriptionError`]; the checkpoint then stays at the last page
    /// handled, so a new run resumes without skipping.
    ///
    /// # Cancel safety
    /// Dropping the future stops at once, without saving the checkpoint:
    /// the events since the last save are delivered again by the next run.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), SubscriptionError> {
        let result = match &self.leader {
            None => self.run_inner(shutdown).await,
            Some(locks) => self.run_as_leader(&**locks, shutdown).await,
        };
        self.health.update(|h| {
            h.state = SubscriptionState::Stopped;
            if let Err(e) = &result {
                h.last_error = Some(error_chain(e));
            }
        });
        result
    }

    async fn run_inner(&self, shutdown: impl Future<Output = ()>) -> Result<(), SubscriptionError> {
        let mut shutdown = pin!(shutdown);
        let name = self.options.name();
        let mut cursor = self
            .retrying(|| self.checkpoints.load(name))
            .await?
            .unwrap_or(GlobalCursor::START);
        let mut saved = cursor;
        self.health.update(|h| {
            h.cursor = cursor;
            h.state = SubscriptionState::CatchingUp;
        });
        let mut listener = self.listen();
        let mut feed_ok = listener.is_some();
        let mut since_save = 0u64;
        let mut last_save = Instant::now();
        // Since when commits the feed announced have been held back.
        let mut held_back: Option<Instant> = None;
        loop {
            // After a save a page is whole; a later page ends where the
            // checkpoint interval does. So at most `checkpoint_every` events,
            // or one page when pages are larger, are ever handled past the
            // saved checkpoint: the most a crash delivers again. Without it a
            // short page (a backend holding later commits back) followed by
            // a whole one went past the interval before the save.
            let limit = if since_save == 0 {
                self.options.batch_size
            } else {
                let room = self
                    .options
                    .checkpoint_every
                    .saturating_sub(since_save)
                    .max(1);
                usize::try_from(room)
                    .unwrap_or(usize::MAX)
                    .min(self.options.batch_size)
            };
            let page: GlobalBatch = self
                .retrying(|| self.reader.read(self.options.read_options(cursor, limit)))
                .await?;
            if page.next < cursor {
                return Err(SubscriptionError::CursorWentBack {
                    from: cursor,
                    to: page.next,
                });
            }
            let full = page.events.len() >= limit;
            let mut stored = false;
            if !page.events.is_empty() {
                stored = self.handle(cursor, page.next, &page.events).await?;
                since_save += page.events.len() as u64;
            }
            let newest = page.events.last().map(|e| e.timestamp);
            cursor = page.next;
            if stored {
                saved = cursor;
                since_save = 0;
                last_save = Instant::now();
            }
            let caught_up = !full && page.is_caught_up();
            // The feed may have announced commits the read could not return
            // yet: on PostgreSQL a transaction still open holds every later
            // commit back. They count as lag, and so does how long they
            // have been held back (not for a tenant's handle, whose feed
            // also announces the other tenants' commits).
            let announced = listener
                .as_ref()
                .and_then(Listener::readable_latest)
                .map_or(0, |p| p.get());
            let head = page.head.position().get().max(announced);
            let behind = head > cursor.position().get();
            held_back = match (behind && page.events.is_empty(), held_back) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(Instant::now()),
                (false, _) => None,
            };
            self.health.update(|h| {
                h.cursor = cursor;
                h.head = page.head;
                h.handled += page.events.len() as u64;
                h.lag_events = head.saturating_sub(cursor.position().get());
                h.lag = match (caught_up, newest, held_back) {
                    (false, Some(t), _) => age(t),
                    (_, _, Some(since)) => since.elapsed(),
                    _ => Duration::ZERO,
                };
                h.state = if caught_up {
                    SubscriptionState::Live
                } else {
                    SubscriptionState::CatchingUp
                };
            });
            let due = since_save >= self.options.checkpoint_every
                || last_save.elapsed() >= self.options.checkpoint_interval;
            if cursor != saved && (due || caught_up) {
                self.retrying(|| self.checkpoints.save(name, cursor))
                    .await?;
                saved = cursor;
                since_save = 0;
                last_save = Instant::now();
            }
            if full {
                // Between pages, a requested shutdown wins.
                tokio::select! {
                    biased;
                    () = &mut shutdown => return self.stop(cursor, saved).await,
                    () = std::future::ready(()) => continue,
                }
            }
            // At the end of what the backend can deliver now (caught up, or
            // held back by a commit still open before the head): wait for
            // a commit, the poll interval, or shutdown.
            let poll = tokio::time::sleep(self.options.poll_interval);
            match &mut listener {
                Some(l) => {
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return self.stop(cursor, saved).await,
                        r = l.changed() => match r {
                            // After a breakage, a wake-up by the repair
                            // (not by a commit of this process while the
                            // feed is still down) means the feed works.
                            Ok(_) if !feed_ok && !l.is_broken() => {
                                feed_ok = true;
                                self.health.update(|h| h.feed_ok = true);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                feed_ok = false;
                                self.feed_failed(&e);
                                if !e.is_retryable() {
                                    listener = None;
                                }
                            }
                        },
                        () = poll => {}
                    }
                }
                None => {
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return self.stop(cursor, saved).await,
                        () = poll => {
                            listener = self.listen();
                            feed_ok = listener.is_some();
                        }
                    }
                }
            }
        }
    }

    async fn run_as_leader(
        &self,
        locks: &dyn DynLockRegistry,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), SubscriptionError> {
        let mut shutdown = pin!(shutdown);
        let key = format!("subscription:{}", self.options.name());
        let guard = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            g = locks.dyn_acquire(&key) => g?,
        };
        self.health
            .update(|h| h.leader = Some(guard.fencing_token()));
        let result = tokio::select! {
            biased;
            why = guard.lost() => Err(SubscriptionError::LeaseLost(why)),
            r = self.run_inner(shutdown) => r,
        };
        self.health.update(|h| h.leader = None);
        drop(guard);
        result
    }

    fn listen(&self) -> Option<Listener> {
        match self.reader.listen() {
            Ok(l) => {
                self.health.update(|h| h.feed_ok = true);
                Some(l)
            }
            Err(e) => {
                self.feed_failed(&e);
                None
            }
        }
    }

    fn feed_failed(&self, e: &FeedError) {
        self.health.update(|h| {
            h.feed_ok = false;
            h.last_error = Some(e.to_string());
        });
    }

    async fn stop(
        &self,
        cursor: GlobalCursor,
        saved: GlobalCursor,
    ) -> Result<(), SubscriptionError> {
        if cursor != saved {
            let name = self.options.name();
            self.retrying(|| self.checkpoints.save(name, cursor))
                .await?;
        }
        Ok(())
    }

    /// Hands the page over, retrying per the policy; `true` when the
    /// handler stored the cursor itself.
    async fn handle(
        &self,
        after: GlobalCursor,
        next: GlobalCursor,
        events: &[RawEvent],
    ) -> Result<bool, SubscriptionError> {
        let Some(letters) = &self.dead_letters else {
            return self.handle_retrying(after, next, events).await;
        };
        if let Ok(stored) = self
            .handler
            .handle_page(self.options.name(), events, next)
            .await
        {
            return Ok(stored);
        }
        // Find the bad event: each one alone, with the retry policy.
        let mut before = after;
        let mut stored = false;
        for event in events {
            match self
                .handle_retrying(before, event.cursor(), std::slice::from_ref(event))
                .await
            {
                Ok(s) => stored = s,
                Err(SubscriptionError::Handler {
                    attempts, source, ..
                }) => {
                    let why = error_chain(source.as_ref());
                    let name = self.options.name();
                    self.retrying(|| letters.dyn_put(name, event, &why, attempts))
                        .await?;
                    self.health.update(|h| {
                        h.dead_lettered += 1;
                        h.last_error = Some(why);
                    });
                    stored = false;
                }
                Err(other) => return Err(other),
            }
            before = event.cursor();
        }
        // A sink stored the cursor of the last event it applied; the page's
        // `next` can lie past it (filtered events), and then the caller
        // saves `next` itself.
        Ok(stored && before == next)
    }

    async fn handle_retrying(
        &self,
        after: GlobalCursor,
        next: GlobalCursor,
        events: &[RawEvent],
    ) -> Result<bool, SubscriptionError> {
        let policy = &self.options.retry;
        let mut attempt = 0u32;
        loop {
            match self
                .handler
                .handle_page(self.options.name(), events, next)
                .await
            {
                Ok(stored) => {
                    if attempt > 0 {
                        self.health
                            .update(|h| h.state = SubscriptionState::CatchingUp);
                    }
                    return Ok(stored);
                }
                Err(source) if attempt >= policy.max_retries() => {
                    return Err(SubscriptionError::Handler {
                        after,
                        attempts: attempt + 1,
                        source,
                    });
                }
                Err(e) => {
                    self.retry_wait(attempt, &error_chain(e.as_ref())).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, SubscriptionError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let policy = &self.options.retry;
        let mut attempt = 0u32;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                // Only transient failures (unavailable, timed out,
                // overloaded) can heal by waiting.
                Err(e) if !e.is_transient() => return Err(e.into()),
                Err(e) if attempt >= policy.max_retries() => return Err(e.into()),
                Err(e) => {
                    self.retry_wait(attempt, &error_chain(&e)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn retry_wait(&self, attempt: u32, why: &str) {
        self.health.update(|h| {
            h.state = SubscriptionState::Retrying;
            h.last_error = Some(why.to_owned());
        });
        tokio::time::sleep(self.options.retry.delay(attempt)).await;
    }
}

/// How long ago `t` was (zero for the future or an unreadable clock).
fn age(t: Timestamp) -> Duration {
    let now = Timestamp::now().as_unix_micros();
    Duration::from_micros(u64::try_from(now.saturating_sub(t.as_unix_micros())).unwrap_or(0))
}

/// `options` under another name (checked like a new one).
pub(crate) fn with_name(
    options: SubscriptionOptions,
    name: &str,
) -> Result<SubscriptionOptions, SubscriptionError> {
    let named = SubscriptionOptions::new(name)?;
    Ok(SubscriptionOptions {
        name: named.name,
        ..options
    })
}
