//! The command handler: load (from a snapshot when configured), decide,
//! append with the expected version; plus its middleware chain.

use std::any::type_name;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{Codec, DomainEvent};
use crate::decider::Decider;
use crate::dyn_store::{BoxFuture, DynLockRegistry, DynSnapshotStore};
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::limits::{MAX_CONFLICT_RETRIES, MAX_MIDDLEWARE, MAX_NAME_BYTES};
use crate::metadata::Metadata;
use crate::name::Stream;
use crate::rt::sleep;
use crate::store::{AppendOptions, EventStore, LoadOptions, LockRegistry, Snapshot, SnapshotStore};
use crate::time::Timestamp;
use crate::typed::TypedStore;
use crate::version::{ExpectedVersion, Version};

/// A handler configuration that cannot work; returned while building.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// More than [`MAX_MIDDLEWARE`] middleware layers.
    TooManyMiddleware,
    /// More than [`MAX_CONFLICT_RETRIES`] retries.
    TooManyRetries {
        /// The requested retries.
        retries: u32,
    },
    /// A snapshot interval of zero events.
    ZeroSnapshotInterval,
    /// A snapshot schema version of zero.
    ZeroSchemaVersion,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyMiddleware => {
                write!(f, "more than {MAX_MIDDLEWARE} middleware layers")
            }
            Self::TooManyRetries { retries } => write!(
                f,
                "{retries} conflict retries requested, the maximum is {MAX_CONFLICT_RETRIES}"
            ),
            Self::ZeroSnapshotInterval => f.write_str("snapshot interval must be at least 1 event"),
            Self::ZeroSchemaVersion => f.write_str("schema versions start at 1"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why handling a command failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandleError<E> {
    /// The decider rejected the command.
    Rejected(E),
    /// Loading or appending failed (including concurrency conflicts).
    Store(StoreError),
}

impl<E> HandleError<E> {
    /// Whether this is an optimistic concurrency conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_conflict())
    }

    /// The domain rejection, if that is what this is.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            Self::Rejected(e) => Some(e),
            Self::Store(_) => None,
        }
    }
}

impl<E> fmt::Display for HandleError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(_) => f.write_str("command rejected"),
            Self::Store(_) => f.write_str("event store failure"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for HandleError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rejected(e) => Some(e),
            Self::Store(e) => Some(e),
        }
    }
}

impl<E> From<StoreError> for HandleError<E> {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The outcome of a handled command.
#[derive(Debug)]
pub struct Handled<D: Decider> {
    /// The state after the new events.
    pub state: D::State,
    /// The events the command produced, as recorded (empty when it decided nothing).
    pub events: Vec<RecordedEvent<D::Event>>,
    /// The stream's version after the command.
    pub version: Version,
    /// `true` when the command's idempotency key matched an earlier append:
    /// nothing was written, `events` are the original ones, and `state` and
    /// `version` are the stream's current ones.
    pub deduplicated: bool,
}

/// What a command handler returns.
pub type HandleResult<D> = Result<Handled<D>, HandleError<<D as Decider>::Error>>;

/// Per-command options: metadata for the produced events and an idempotency key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOptions {
    metadata: Metadata,
    idempotency_key: Option<String>,
}

impl CommandOptions {
    /// No metadata, no idempotency key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Metadata stored with every produced event.
    #[must_use]
    pub fn with_metadata(mut self, m: Metadata) -> Self {
        self.metadata = m;
        self
    }

    /// Makes the append idempotent under this key (safe client retries).
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The idempotency key.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }
}

/// What a middleware sees of one command.
#[derive(Debug)]
pub struct CommandContext<'a, C> {
    /// The target stream.
    pub stream: &'a Stream,
    /// The command.
    pub command: &'a C,
    /// Its options.
    pub options: &'a CommandOptions,
}

impl<C> Clone for CommandContext<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C> Copy for CommandContext<'_, C> {}

/// A layer around command handling: logging, retries, locks, validation.
/// Layers run in the order they were added, the first added outermost.
pub trait Middleware<D: Decider>: Send + Sync + 'static {
    /// Handles the command, normally by calling `next.run(ctx)` (possibly
    /// several times, or not at all).
    fn handle<'a>(
        &'a self,
        ctx: CommandContext<'a, D::Command>,
        next: Next<'a, D>,
    ) -> BoxFuture<'a, HandleResult<D>>;
}

trait Core<D: Decider>: Send + Sync {
    fn run<'a>(&'a self, ctx: CommandContext<'a, D::Command>) -> BoxFuture<'a, HandleResult<D>>;
}

/// The rest of the chain after a middleware. `Copy`, so a middleware can run it again.
pub struct Next<'a, D: Decider> {
    core: &'a dyn Core<D>,
    rest: &'a [Arc<dyn Middleware<D>>],
}

impl<D: Decider> Clone for Next<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<D: Decider> Copy for Next<'_, D> {}

impl<D: Decider> fmt::Debug for Next<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("remaining", &self.rest.len())
            .finish()
    }
}

impl<'a, D: Decider> Next<'a, D> {
    /// Runs the remaining middleware and then the handler itself.
    pub fn run(self, ctx: CommandContext<'a, D::Command>) -> BoxFuture<'a, HandleResult<D>> {
        match self.rest.split_first() {
            Some((m, rest)) => m.handle(
                ctx,
                Next {
                    core: self.core,
                    rest,
                },
            ),
            None => self.core.run(ctx),
        }
    }
}

/// When to take snapshots and which schema version they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: u64,
    schema_version: u32,
}

impl SnapshotPolicy {
    /// A snapshot each time the stream's version crosses a multiple of `n`.
    ///
    /// # Errors
    /// [`ConfigError::ZeroSnapshotInterval`] for `n == 0`.
    pub fn every(n: u64) -> Result<Self, ConfigError> {
        if n == 0 {
            return Err(ConfigError::ZeroSnapshotInterval);
        }
        Ok(Self {
            every: n,
            schema_version: 1,
        })
    }

    /// Tags snapshots with the state's schema version; snapshots with another
    /// version are ignored and removed (bump it when the state's shape or
    /// `evolve` changes).
    ///
    /// # Errors
    /// [`ConfigError::ZeroSchemaVersion`] for `v == 0`.
    pub fn with_schema_version(mut self, v: u32) -> Result<Self, ConfigError> {
        if v == 0 {
            return Err(ConfigError::ZeroSchemaVersion);
        }
        self.schema_version = v;
        Ok(self)
    }

    /// The interval in events.
    pub fn interval(&self) -> u64 {
        self.every
    }

    /// The schema version.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

struct Snapshots<S> {
    store: Arc<dyn DynSnapshotStore>,
    codec: Arc<dyn Codec<S>>,
    policy: SnapshotPolicy,
}

struct HandlerCore<D: Decider, B> {
    decider: D,
    store: TypedStore<B, D::Event>,
    snapshots: Option<Snapshots<D::State>>,
}

/// Runs commands against streams: load state, decide, append with the
/// expected version, and optionally snapshot, through a middleware chain.
///
/// ```
/// use eskit_core::*;
/// # struct Counter;
/// # #[derive(Debug, PartialEq)] struct Added(u32);
/// # impl DomainEvent for Added {
/// #     fn event_type(&self) -> &'static str { "Added" }
/// #     fn event_types() -> &'static [&'static str] { &["Added"] }
/// # }
/// # #[derive(Debug)] struct Never;
/// # impl std::fmt::Display for Never { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("never") } }
/// # impl std::error::Error for Never {}
/// # impl Decider for Counter {
/// #     type State = u32; type Command = u32; type Event = Added; type Error = Never;
/// #     fn initial_state(&self) -> u32 { 0 }
/// #     fn decide(&self, _: &u32, n: &u32) -> Result<Vec<Added>, Never> { Ok(vec![Added(*n)]) }
/// #     fn evolve(&self, s: u32, e: &Added) -> u32 { s + e.0 }
/// # }
/// # struct Le;
/// # impl EventCodec<Added> for Le {
/// #     fn name(&self) -> &'static str { "le32" }
/// #     fn encode(&self, e: &Added, out: &mut Vec<u8>) -> Result<(), CodecError> { out.extend(e.0.to_le_bytes()); Ok(()) }
/// #     fn decode(&self, _: &str, b: &[u8]) -> Result<Added, CodecError> {
/// #         Ok(Added(u32::from_le_bytes(b.try_into().map_err(|e| CodecError::decode(Some("Added"), e))?)))
/// #     }
/// # }
/// let store = TypedStore::new(MemoryStore::new(), EventSchema::new(Le));
/// let handler = CommandHandler::new(Counter, store)
///     .with_conflict_retry(RetryPolicy::new(5)?)?;
/// let stream = Stream::new("counter", "c-1")?;
/// block_on(handler.handle(&stream, &2))?;
/// let done = block_on(handler.handle(&stream, &3))?;
/// assert_eq!((done.state, done.version.get()), (5, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CommandHandler<D: Decider, B> {
    core: HandlerCore<D, B>,
    middleware: Vec<Arc<dyn Middleware<D>>>,
}

impl<D: Decider, B> fmt::Debug for CommandHandler<D, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandHandler")
            .field("decider", &type_name::<D>())
            .field("snapshots", &self.core.snapshots.as_ref().map(|s| s.policy))
            .field("middleware", &self.middleware.len())
            .finish()
    }
}

impl<D, B> CommandHandler<D, B>
where
    D: Decider,
    D::Event: DomainEvent,
    B: EventStore + 'static,
{
    /// A handler with no snapshots, no retries and no middleware.
    pub fn new(decider: D, store: TypedStore<B, D::Event>) -> Self {
        Self {
            core: HandlerCore {
                decider,
                store,
                snapshots: None,
            },
            middleware: Vec::new(),
        }
    }

    /// Enables snapshots: states are encoded with `codec` and saved to
    /// `store` as the policy says. Snapshot failures never fail a command:
    /// a snapshot that cannot be read is ignored and removed, and a failed
    /// save leaves the previous snapshot in place.
    #[must_use]
    pub fn with_snapshots(
        mut self,
        store: impl SnapshotStore + 'static,
        codec: impl Codec<D::State>,
        policy: SnapshotPolicy,
    ) -> Self {
        self.core.snapshots = Some(Snapshots {
            store: Arc::new(store),
            codec: Arc::new(codec),
            policy,
        });
        self
    }

    /// Adds a middleware layer (inside the ones added before).
    ///
    /// # Errors
    /// [`ConfigError::TooManyMiddleware`] beyond [`MAX_MIDDLEWARE`].
    pub fn with_middleware(mut self, m: impl Middleware<D>) -> Result<Self, ConfigError> {
        if self.middleware.len() >= MAX_MIDDLEWARE {
            return Err(ConfigError::TooManyMiddleware);
        }
        self.middleware.push(Arc::new(m));
        Ok(self)
    }

    /// Retries commands that hit a concurrency conflict: reload, decide again,
    /// append again, with exponential backoff. Off unless called.
    ///
    /// # Errors
    /// [`ConfigError::TooManyMiddleware`] beyond [`MAX_MIDDLEWARE`].
    pub fn with_conflict_retry(self, policy: RetryPolicy) -> Result<Self, ConfigError> {
        self.with_middleware(ConflictRetry::new(policy))
    }

    /// The typed store.
    pub fn store(&self) -> &TypedStore<B, D::Event> {
        &self.core.store
    }

    /// The decider.
    pub fn decider(&self) -> &D {
        &self.core.decider
    }

    /// Handles a command with default options.
    ///
    /// # Errors
    /// [`HandleError::Rejected`] when the decider says no,
    /// [`HandleError::Store`] for store failures, including conflicts that
    /// remain after the configured retries.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes leaves the stream either with
    /// all of the command's events or with none of them.
    pub async fn handle(&self, stream: &Stream, command: &D::Command) -> HandleResult<D> {
        self.handle_with(stream, command, &CommandOptions::new())
            .await
    }

    /// Handles a command with options (metadata, idempotency key).
    ///
    /// # Errors
    /// As [`CommandHandler::handle`].
    pub async fn handle_with(
        &self,
        stream: &Stream,
        command: &D::Command,
        options: &CommandOptions,
    ) -> HandleResult<D> {
        let ctx = CommandContext {
            stream,
            command,
            options,
        };
        Next {
            core: &self.core,
            rest: &self.middleware,
        }
        .run(ctx)
        .await
    }

    /// The stream's current state and version (using the snapshot if any).
    ///
    /// # Errors
    /// Store failures.
    pub async fn load_state(&self, stream: &Stream) -> Result<(D::State, Version), StoreError> {
        let (state, version, _) = self.core.load_state(stream).await?;
        Ok((state, version))
    }

    /// Replays the whole stream and saves a fresh snapshot, replacing any old
    /// one. Returns the version it covers, or `None` for an empty stream or
    /// when snapshots are not configured.
    ///
    /// # Errors
    /// Store or codec failures.
    pub async fn rebuild_snapshot(&self, stream: &Stream) -> Result<Option<Version>, StoreError> {
        let Some(snaps) = &self.core.snapshots else {
            return Ok(None);
        };
        let events = self.core.store.load(stream).await?;
        let Some(last) = events.last().map(|e| e.version) else {
            snaps.store.dyn_invalidate(stream).await?;
            return Ok(None);
        };
        let state = self.core.decider.fold(events.iter().map(|e| &e.data));
        self.core.save_snapshot(snaps, stream, &state, last).await?;
        Ok(Some(last))
    }
}

impl<D, B> HandlerCore<D, B>
where
    D: Decider,
    D::Event: DomainEvent,
    B: EventStore,
{
    /// Loads state; the flag tells whether a snapshot was used.
    async fn load_state(&self, stream: &Stream) -> Result<(D::State, Version, bool), StoreError> {
        let mut start: Option<(D::State, Version)> = None;
        if let Some(snaps) = &self.snapshots
            && let Ok(Some(snap)) = snaps.store.dyn_load(stream).await
        {
            let usable = snap.schema_version == snaps.policy.schema_version
                && snap.codec == snaps.codec.name();
            match usable.then(|| snaps.codec.decode(&snap.state)) {
                Some(Ok(state)) => start = Some((state, snap.version)),
                // A stale or unreadable snapshot is dropped; the stream is the truth.
                _ => {
                    let _ = snaps.store.dyn_invalidate(stream).await;
                }
            }
        }
        let from_snapshot = start.is_some();
        let (mut state, mut version) =
            start.unwrap_or_else(|| (self.decider.initial_state(), Version::ZERO));
        let options = match version.next() {
            Some(next) if version > Version::ZERO => LoadOptions::new().from_version(next),
            _ => LoadOptions::new(),
        };
        for event in self.store.load_with(stream, options).await? {
            state = self.decider.evolve(state, &event.data);
            version = event.version;
        }
        Ok((state, version, from_snapshot))
    }

    async fn save_snapshot(
        &self,
        snaps: &Snapshots<D::State>,
        stream: &Stream,
        state: &D::State,
        version: Version,
    ) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        snaps.codec.encode(state, &mut bytes)?;
        snaps
            .store
            .dyn_save(Snapshot {
                stream: stream.clone(),
                version,
                schema_version: snaps.policy.schema_version,
                codec: snaps.codec.name().to_owned(),
                state: bytes,
                created_at: Timestamp::now(),
            })
            .await
    }

    async fn run_once(&self, ctx: CommandContext<'_, D::Command>) -> HandleResult<D> {
        let (state, version, from_snapshot) = self.load_state(ctx.stream).await?;
        let events = self
            .decider
            .decide(&state, ctx.command)
            .map_err(HandleError::Rejected)?;
        if events.is_empty() {
            return Ok(Handled {
                state,
                events: Vec::new(),
                version,
                deduplicated: false,
            });
        }
        let state = self.decider.fold_from(state, events.iter());
        let mut options = AppendOptions::new().with_metadata(ctx.options.metadata().clone());
        if let Some(key) = ctx.options.idempotency_key() {
            options = options.with_idempotency_key(key);
        }
        let appended = self
            .store
            .append_detailed(ctx.stream, ExpectedVersion::Exact(version), events, options)
            .await;
        let appended = match appended {
            Ok(r) => r,
            Err(e) => {
                // A snapshot ahead of the stream (the stream was deleted and
                // recreated) would make every append conflict: drop it.
                if let (true, Some(snaps), StoreError::WrongExpectedVersion { actual, .. }) =
                    (from_snapshot, &self.snapshots, &e)
                    && *actual < version
                {
                    let _ = snaps.store.dyn_invalidate(ctx.stream).await;
                }
                return Err(e.into());
            }
        };
        if appended.deduplicated {
            // An earlier attempt with this idempotency key already wrote the
            // events: report the stream as it is, not as if they were new.
            let (state, version, _) = self.load_state(ctx.stream).await?;
            return Ok(Handled {
                state,
                events: appended.events,
                version,
                deduplicated: true,
            });
        }
        let recorded = appended.events;
        let new_version = recorded.last().map_or(version, |e| e.version);
        if let Some(snaps) = &self.snapshots {
            let every = snaps.policy.every;
            if new_version.get() / every > version.get() / every {
                // Best effort: the events are committed; a failed save only
                // means the next load replays a little more.
                let _ = self
                    .save_snapshot(snaps, ctx.stream, &state, new_version)
                    .await;
            }
        }
        Ok(Handled {
            state,
            events: recorded,
            version: new_version,
            deduplicated: false,
        })
    }
}

impl<D, B> Core<D> for HandlerCore<D, B>
where
    D: Decider,
    D::Event: DomainEvent,
    B: EventStore,
{
    fn run<'a>(&'a self, ctx: CommandContext<'a, D::Command>) -> BoxFuture<'a, HandleResult<D>> {
        Box::pin(self.run_once(ctx))
    }
}

/// Exponential backoff for conflict retries: attempt `n` waits a random
/// duration between half and all of `base * 2^n`, capped at `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl RetryPolicy {
    /// Up to `max_retries` retries, 1 ms base delay, 1 s cap.
    ///
    /// # Errors
    /// [`ConfigError::TooManyRetries`] beyond [`MAX_CONFLICT_RETRIES`].
    pub fn new(max_retries: u32) -> Result<Self, ConfigError> {
        if max_retries > MAX_CONFLICT_RETRIES {
            return Err(ConfigError::TooManyRetries {
                retries: max_retries,
            });
        }
        Ok(Self {
            max_retries,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(1),
        })
    }

    /// Sets the base delay (zero retries at once).
    #[must_use]
    pub fn with_base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// Sets the delay cap.
    #[must_use]
    pub fn with_max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// The most retries.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The delay before retry number `attempt` (0-based), with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let nanos = exp.as_nanos() as u64;
        if nanos < 2 {
            return exp;
        }
        let mut h = RandomState::new().build_hasher();
        h.write_u32(attempt);
        let half = nanos / 2;
        Duration::from_nanos(half + h.finish() % (nanos - half))
    }
}

/// Middleware that retries on concurrency conflicts; installed by
/// [`CommandHandler::with_conflict_retry`].
#[derive(Debug, Clone)]
pub struct ConflictRetry {
    policy: RetryPolicy,
}

impl ConflictRetry {
    /// Retries as `policy` says.
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy }
    }
}

impl<D: Decider> Middleware<D> for ConflictRetry {
    fn handle<'a>(
        &'a self,
        ctx: CommandContext<'a, D::Command>,
        next: Next<'a, D>,
    ) -> BoxFuture<'a, HandleResult<D>> {
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                match next.run(ctx).await {
                    Err(e) if e.is_conflict() && attempt < self.policy.max_retries => {
                        let d = self.policy.delay(attempt);
                        if !d.is_zero() {
                            sleep(d).await;
                        }
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        })
    }
}

/// What [`LoggingMiddleware`] reports for each command.
#[derive(Debug)]
pub struct CommandLog<'a> {
    /// The stream.
    pub stream: &'a Stream,
    /// The command's Rust type name.
    pub command: &'static str,
    /// How long handling took, including inner middleware.
    pub elapsed: Duration,
    /// `Ok((events produced, version after))`, or the error's message.
    pub outcome: Result<(usize, Version), String>,
}

type LogHook = dyn Fn(&CommandLog<'_>) + Send + Sync;

/// Middleware that reports every command to a hook (the core has no logger;
/// forward to `tracing`, `log` or anything else).
pub struct LoggingMiddleware {
    hook: Arc<LogHook>,
}

impl fmt::Debug for LoggingMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoggingMiddleware")
    }
}

impl LoggingMiddleware {
    /// Calls `hook` after each command.
    pub fn new(hook: impl Fn(&CommandLog<'_>) + Send + Sync + 'static) -> Self {
        Self {
            hook: Arc::new(hook),
        }
    }
}

impl<D: Decider> Middleware<D> for LoggingMiddleware {
    fn handle<'a>(
        &'a self,
        ctx: CommandContext<'a, D::Command>,
        next: Next<'a, D>,
    ) -> BoxFuture<'a, HandleResult<D>> {
        Box::pin(async move {
            let start = Instant::now();
            let result = next.run(ctx).await;
            let outcome = match &result {
                Ok(h) => Ok((h.events.len(), h.version)),
                Err(HandleError::Rejected(e)) => Err(format!("rejected: {e}")),
                Err(HandleError::Store(e)) => Err(crate::error_chain(e)),
            };
            (self.hook)(&CommandLog {
                stream: ctx.stream,
                command: type_name::<D::Command>(),
                elapsed: start.elapsed(),
                outcome,
            });
            result
        })
    }
}

/// Middleware that lets only one command at a time run per stream, through a
/// [`LockRegistry`]; with a distributed registry, across processes too.
/// Removes conflicts between writers that share the registry.
pub struct SingleWriter {
    locks: Arc<dyn DynLockRegistry>,
}

impl fmt::Debug for SingleWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SingleWriter")
    }
}

impl SingleWriter {
    /// Uses `locks` for the per-stream locks.
    pub fn new(locks: impl LockRegistry + 'static) -> Self {
        Self {
            locks: Arc::new(locks),
        }
    }

    /// The lock key for a stream: `stream:<type>/<id>`, shortened with a hash
    /// when longer than [`MAX_NAME_BYTES`].
    pub fn lock_key(stream: &Stream) -> String {
        let key = format!("stream:{stream}");
        if key.len() <= MAX_NAME_BYTES {
            return key;
        }
        let mut cut = 200;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        format!("{}#{:016x}", &key[..cut], h.finish())
    }
}

impl<D: Decider> Middleware<D> for SingleWriter {
    fn handle<'a>(
        &'a self,
        ctx: CommandContext<'a, D::Command>,
        next: Next<'a, D>,
    ) -> BoxFuture<'a, HandleResult<D>> {
        Box::pin(async move {
            let key = Self::lock_key(ctx.stream);
            let _guard = self.locks.dyn_acquire(&key).await?;
            next.run(ctx).await
        })
    }
}
