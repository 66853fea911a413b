//! The command handler: load (from a snapshot when configured), decide,
//! append with the expected version; plus its middleware chain.

use std::any::type_name;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{Codec, DomainEvent};
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::limits::{MAX_CONFLICT_RETRIES, MAX_MIDDLEWARE, MAX_NAME_BYTES};
use crate::metadata::Metadata;
use crate::name::StreamName;
use crate::rt::sleep;
use crate::store::{AppendOptions, EventStore, LoadOptions, LockRegistry, Snapshot, SnapshotStore};
use crate::store::{BoxFuture, DynLockRegistry, DynSnapshotStore};
use crate::time::Timestamp;
use crate::typed::TypedStore;
use crate::version::{ExpectedVersion, Version};

pub use crate::decider::Decider;

/// A handler configuration that cannot work; returned by
/// [`CommandHandlerBuilder::build`] and the policy constructors.
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
///
/// The message says what failed and why, with the inner error's message:
/// `command rejected: <the decider's error>` or `event store failure: <the
/// store error>`. Because the message already holds the inner error's text,
/// [`source`](std::error::Error::source) skips the inner error and returns
/// its source, so [`error_chain`](crate::error::error_chain) prints each message
/// once. Match on the variants to reach the inner error itself.
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

impl<E: fmt::Display> fmt::Display for HandleError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(e) => write!(f, "command rejected: {e}"),
            Self::Store(e) => write!(f, "event store failure: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for HandleError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The message includes the inner error's; continue below it.
        match self {
            Self::Rejected(e) => e.source(),
            Self::Store(e) => e.source(),
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
    /// `true` when the command's idempotency key matched an earlier
    /// command's append: the decider did not run, nothing was written,
    /// `events` are the original events as stored and `version` is the
    /// version after them (the original outcome, however the stream moved
    /// since), while `state` is the stream's current state, which includes
    /// any events appended after the original ones.
    pub deduplicated: bool,
}

/// What a command handler returns.
pub type HandleResult<D> = Result<Handled<D>, HandleError<<D as Decider>::Error>>;

/// Per-command options: metadata for the produced events, an idempotency
/// key and a custom timestamp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOptions {
    metadata: Metadata,
    idempotency_key: Option<String>,
    timestamp: Option<Timestamp>,
}

impl CommandOptions {
    /// No metadata, no idempotency key, the current time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Metadata stored with every produced event.
    #[must_use]
    pub fn with_metadata(mut self, m: Metadata) -> Self {
        self.metadata = m;
        self
    }

    /// Makes the command idempotent under this key (safe client retries):
    /// when an earlier command on the stream appended with the key, the
    /// handler returns that command's outcome ([`Handled::deduplicated`])
    /// without running the decider, whatever happened to the stream since.
    /// A command that decided no events stores nothing, so its key is not
    /// remembered.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Records the produced events with this timestamp instead of the
    /// current time, as [`AppendOptions::with_timestamp`] does; for imports
    /// that keep the original times.
    #[must_use]
    pub fn with_timestamp(mut self, t: Timestamp) -> Self {
        self.timestamp = Some(t);
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

    /// The custom timestamp, if any.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }
}

/// What a middleware sees of one command.
#[derive(Debug)]
pub struct CommandContext<'a, C> {
    /// The target stream.
    pub stream: &'a StreamName,
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
/// use eskit_core::prelude::*;
/// use eskit_core::{memory::MemoryStore, rt::block_on};
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
/// let handler = CommandHandler::builder(Counter, store)
///     .with_conflict_retry(RetryPolicy::new(5)?)
///     .build()?;
/// let stream = StreamName::new("counter", "c-1")?;
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
    /// A handler with no snapshots, no retries and no middleware; see
    /// [`CommandHandler::builder`] for those.
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

    /// A builder for a handler with snapshots, retries or middleware; the
    /// configuration is checked once, by [`CommandHandlerBuilder::build`].
    pub fn builder(decider: D, store: TypedStore<B, D::Event>) -> CommandHandlerBuilder<D, B> {
        CommandHandlerBuilder {
            handler: Self::new(decider, store),
            layers: 0,
        }
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
    /// [`HandleError::Store`] for store failures, including conflicts and
    /// transient failures that remain after the configured retries (see
    /// [`ConflictRetry`] for which are retried).
    ///
    /// # Cancel safety
    /// Dropping the future before it completes leaves the stream either with
    /// all of the command's events or with none of them.
    pub async fn handle(&self, stream: &StreamName, command: &D::Command) -> HandleResult<D> {
        self.handle_with(stream, command, &CommandOptions::new())
            .await
    }

    /// Handles a command with options (metadata, idempotency key, timestamp).
    ///
    /// # Errors
    /// As [`CommandHandler::handle`].
    pub async fn handle_with(
        &self,
        stream: &StreamName,
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
    pub async fn load_state(&self, stream: &StreamName) -> Result<(D::State, Version), StoreError> {
        let (state, version, _) = self.core.load_state(stream).await?;
        Ok((state, version))
    }

    /// Replays the whole stream and saves a fresh snapshot, replacing any old
    /// one. Returns the version it covers, or `None` for an empty stream or
    /// when snapshots are not configured.
    ///
    /// # Errors
    /// Store or codec failures.
    pub async fn rebuild_snapshot(
        &self,
        stream: &StreamName,
    ) -> Result<Option<Version>, StoreError> {
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

/// Configures a [`CommandHandler`]: snapshots, conflict retry and
/// middleware, checked once by [`build`](Self::build) (as tower's
/// `ServiceBuilder` and sqlx's `PoolOptions` do), so no step needs a `?`.
///
/// ```
/// use eskit_core::prelude::*;
/// use eskit_core::{handler::LoggingMiddleware, memory::{MemorySnapshotStore, MemoryStore}, rt::block_on};
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
/// # struct U32Codec;
/// # impl Codec<u32> for U32Codec {
/// #     fn name(&self) -> &'static str { "le32" }
/// #     fn encode(&self, v: &u32, out: &mut Vec<u8>) -> Result<(), CodecError> { out.extend(v.to_le_bytes()); Ok(()) }
/// #     fn decode(&self, b: &[u8]) -> Result<u32, CodecError> {
/// #         Ok(u32::from_le_bytes(b.try_into().map_err(|e| CodecError::decode(None, e))?))
/// #     }
/// # }
/// let store = TypedStore::new(MemoryStore::new(), EventSchema::new(Le));
/// let handler = CommandHandler::builder(Counter, store)
///     .with_snapshots(MemorySnapshotStore::new(), U32Codec, SnapshotPolicy::every(100)?)
///     .with_conflict_retry(RetryPolicy::new(5)?)
///     .with_middleware(LoggingMiddleware::new(|_| {}))
///     .build()?;
/// let done = block_on(handler.handle(&StreamName::new("counter", "c-1")?, &2))?;
/// assert_eq!(done.state, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct CommandHandlerBuilder<D: Decider, B> {
    handler: CommandHandler<D, B>,
    /// Layers requested, counted even past [`MAX_MIDDLEWARE`] (only the
    /// first ones are kept) so that `build` reports the error.
    layers: usize,
}

impl<D: Decider, B> fmt::Debug for CommandHandlerBuilder<D, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandHandlerBuilder")
            .field("handler", &self.handler)
            .field("layers", &self.layers)
            .finish()
    }
}

impl<D, B> CommandHandlerBuilder<D, B>
where
    D: Decider,
    D::Event: DomainEvent,
    B: EventStore + 'static,
{
    /// Enables snapshots: states are encoded with `codec` and saved to
    /// `store` as the policy says. Snapshot failures never fail a command:
    /// a snapshot that cannot be read is ignored and removed, and a failed
    /// save leaves the previous snapshot in place. A second call replaces
    /// the first.
    pub fn with_snapshots(
        mut self,
        store: impl SnapshotStore + 'static,
        codec: impl Codec<D::State>,
        policy: SnapshotPolicy,
    ) -> Self {
        self.handler.core.snapshots = Some(Snapshots {
            store: Arc::new(store),
            codec: Arc::new(codec),
            policy,
        });
        self
    }

    /// Adds a middleware layer (inside the ones added before); at most
    /// [`MAX_MIDDLEWARE`], checked by [`build`](Self::build).
    pub fn with_middleware(mut self, m: impl Middleware<D>) -> Self {
        self.layers = self.layers.saturating_add(1);
        if self.handler.middleware.len() < MAX_MIDDLEWARE {
            self.handler.middleware.push(Arc::new(m));
        }
        self
    }

    /// Retries commands that hit a concurrency conflict or a transient store
    /// failure: reload, decide again, append again, with exponential backoff
    /// on the core's timer. A timed-out command is retried only when it has
    /// an idempotency key; [`ConflictRetry`] gives the rules. Off unless
    /// called. It is one middleware layer, placed where it is called; to
    /// wait on another runtime's timer, add [`ConflictRetry::with_sleep`]
    /// with [`with_middleware`](Self::with_middleware) instead.
    pub fn with_conflict_retry(self, policy: RetryPolicy) -> Self {
        self.with_middleware(ConflictRetry::new(policy))
    }

    /// The handler, once its configuration is checked.
    ///
    /// # Errors
    /// [`ConfigError::TooManyMiddleware`] for more than [`MAX_MIDDLEWARE`]
    /// layers (conflict retry counts as one).
    pub fn build(self) -> Result<CommandHandler<D, B>, ConfigError> {
        if self.layers > MAX_MIDDLEWARE {
            return Err(ConfigError::TooManyMiddleware);
        }
        Ok(self.handler)
    }
}

impl<D, B> HandlerCore<D, B>
where
    D: Decider,
    D::Event: DomainEvent,
    B: EventStore,
{
    /// Loads state; the flag tells whether a snapshot was used.
    async fn load_state(
        &self,
        stream: &StreamName,
    ) -> Result<(D::State, Version, bool), StoreError> {
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
        let (state, mut version) =
            start.unwrap_or_else(|| (self.decider.initial_state(), Version::ZERO));
        let options = match version.next() {
            Some(next) if version > Version::ZERO => LoadOptions::new().with_from(next),
            _ => LoadOptions::new(),
        };
        // Each event is decoded, folded and dropped in turn, as the backend
        // hands it over: holding the whole stream, raw or decoded, would
        // only allocate memory to free it after the fold.
        let (schema, decider) = (self.store.schema(), &self.decider);
        let mut folded = Some(state);
        self.store
            .load_raw_each(stream, options, |raw| {
                let event = schema.decode(raw)?;
                folded = folded.take().map(|s| decider.evolve(s, &event.data));
                version = event.version;
                Ok(())
            })
            .await?;
        let state = folded.ok_or_else(|| StoreError::internal("the fold lost its state"))?;
        Ok((state, version, from_snapshot))
    }

    async fn save_snapshot(
        &self,
        snaps: &Snapshots<D::State>,
        stream: &StreamName,
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

    /// The outcome of the command that already ran under `key`, if one
    /// did: its events as stored, the version after them, and the stream's
    /// current state.
    async fn earlier_outcome(
        &self,
        stream: &StreamName,
        key: &str,
    ) -> Result<Option<Handled<D>>, StoreError> {
        let Some(events) = self.store.find_idempotent(stream, key).await? else {
            return Ok(None);
        };
        let (state, current, _) = self.load_state(stream).await?;
        let version = events.last().map_or(current, |e| e.version);
        Ok(Some(Handled {
            state,
            events,
            version,
            deduplicated: true,
        }))
    }

    async fn run_once(&self, ctx: CommandContext<'_, D::Command>) -> HandleResult<D> {
        // A known key answers with the first attempt's outcome before the
        // decider runs: deciding again against today's state could reject
        // the retry ("already open") or produce other events (a running
        // balance moved by a later command).
        let key = ctx.options.idempotency_key();
        if let Some(key) = key
            && let Some(done) = self.earlier_outcome(ctx.stream, key).await?
        {
            return Ok(done);
        }
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
        if let Some(key) = key {
            options = options.with_idempotency_key(key);
        }
        if let Some(t) = ctx.options.timestamp() {
            options = options.with_timestamp(t);
        }
        let appended = self
            .store
            .append_detailed(ctx.stream, ExpectedVersion::Exact(version), events, options)
            .await;
        let appended = match appended {
            Ok(r) => r,
            Err(e @ StoreError::IdempotencyConflict { .. }) => {
                // Another attempt with this key committed after the lookup
                // above and decided other events: its outcome is the answer.
                return match key {
                    Some(key) => self
                        .earlier_outcome(ctx.stream, key)
                        .await?
                        .ok_or_else(|| e.into()),
                    None => Err(e.into()),
                };
            }
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
            // events (they are the stored ones): report the stream as it
            // is, not as if they were new.
            let (state, _, _) = self.load_state(ctx.stream).await?;
            let version = appended.events.last().map_or(version, |e| e.version);
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

/// Exponential backoff for retries (of conflicts and of transient failures,
/// each counted on its own): attempt `n` waits a random
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

type SleepFn = dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync;

/// Middleware that retries commands that hit a concurrency conflict or a
/// transient store failure; installed by
/// [`CommandHandlerBuilder::with_conflict_retry`].
///
/// Each retry runs the rest of the chain again: reload, decide, append.
/// - A conflict ([`StoreError::is_conflict`]) is retried up to the policy's
///   [`max_retries`](RetryPolicy::max_retries) times.
/// - A transient failure ([`StoreError::is_transient`]: unavailable, timed
///   out, overloaded) is retried up to `max_retries` times as well, counted
///   apart from conflicts, with the same backoff.
/// - **A failure whose outcome is unknown**
///   ([`StoreError::is_outcome_unknown`]: a timeout, a lost connection) is
///   retried only when the command has an idempotency key
///   ([`CommandOptions::with_idempotency_key`]). The append may have been
///   applied; with the key the retry finds it (`deduplicated: true`), while
///   without one it would decide again on the new state and apply the
///   command twice. Such a failure of a command without a key is returned
///   at once, also when it came from the load (the middleware cannot tell).
/// - Anything else (a rejection, a full disk, a closed store, damaged
///   data, an unclassified backend error) is returned at once.
///
/// It waits between attempts on the core's own timer ([`sleep`]) unless
/// given another sleep function with [`ConflictRetry::with_sleep`]: pass
/// your runtime's, such as `tokio::time::sleep`, so that backoff follows
/// that runtime's clock (and `tokio::time::pause` in tests).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use eskit_core::prelude::*;
/// use eskit_core::{handler::ConflictRetry, memory::MemoryStore, rt::block_on};
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
/// // Record the delays instead of waiting; with tokio, pass
/// // `tokio::time::sleep` instead.
/// let waited = Arc::new(Mutex::new(Vec::new()));
/// let log = Arc::clone(&waited);
/// let retry = ConflictRetry::new(RetryPolicy::new(5)?).with_sleep(move |d: Duration| {
///     if let Ok(mut log) = log.lock() {
///         log.push(d);
///     }
///     std::future::ready(())
/// });
/// let store = TypedStore::new(MemoryStore::new(), EventSchema::new(Le));
/// let handler = CommandHandler::builder(Counter, store).with_middleware(retry).build()?;
/// let done = block_on(handler.handle(&StreamName::new("counter", "c-1")?, &2))?;
/// assert_eq!(done.state, 2);
/// assert!(waited.lock().map_err(|_| "poisoned")?.is_empty(), "no conflict, no wait");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ConflictRetry {
    policy: RetryPolicy,
    sleep: Arc<SleepFn>,
}

impl fmt::Debug for ConflictRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConflictRetry")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ConflictRetry {
    /// Retries as `policy` says, waiting on the core's timer.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            sleep: Arc::new(|d| Box::pin(sleep(d))),
        }
    }

    /// Waits between attempts with `sleep` instead of the core's timer.
    ///
    /// `sleep(d)` is called with each backoff delay (never with a zero
    /// delay: those retry at once) and its future awaited before the next
    /// attempt.
    #[must_use]
    pub fn with_sleep<F>(mut self, sleep: impl Fn(Duration) -> F + Send + Sync + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.sleep = Arc::new(move |d| Box::pin(sleep(d)));
        self
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

/// Whether [`ConflictRetry`] retries a command that failed with `e`: a
/// transient failure, unless a retry could apply an append twice.
///
/// The middleware sees only the error, not whether the load or the append
/// failed, so every failure whose outcome may be unknown is treated as an
/// append that may have been applied: retried only under an idempotency key.
fn retries_transient(e: &StoreError, options: &CommandOptions) -> bool {
    e.is_transient() && (!e.is_outcome_unknown() || options.idempotency_key().is_some())
}

impl<D: Decider> Middleware<D> for ConflictRetry {
    fn handle<'a>(
        &'a self,
        ctx: CommandContext<'a, D::Command>,
        next: Next<'a, D>,
    ) -> BoxFuture<'a, HandleResult<D>> {
        Box::pin(async move {
            // Conflicts and transient failures each have their own budget of
            // `max_retries`, and their own backoff sequence.
            let (mut conflicts, mut transient) = (0, 0);
            loop {
                let attempt = match next.run(ctx).await {
                    Err(e) if e.is_conflict() && conflicts < self.policy.max_retries => {
                        &mut conflicts
                    }
                    Err(HandleError::Store(e))
                        if retries_transient(&e, ctx.options)
                            && transient < self.policy.max_retries =>
                    {
                        &mut transient
                    }
                    other => return other,
                };
                let d = self.policy.delay(*attempt);
                if !d.is_zero() {
                    (self.sleep)(d).await;
                }
                *attempt += 1;
            }
        })
    }
}

/// What [`LoggingMiddleware`] reports for each command.
#[derive(Debug)]
pub struct CommandLog<'a> {
    /// The stream.
    pub stream: &'a StreamName,
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
                Err(HandleError::Store(e)) => Err(crate::error::error_chain(e)),
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

    /// The lock key for a stream.
    ///
    /// Normally `stream:<type>/<id>`, with `%` and `/` in the type written
    /// as `%25` and `%2F`, so that no two streams share a key (`a/b` + `c`
    /// and `a` + `b/c` differ) while usual names stay readable
    /// (`stream:account/acc-1`).
    ///
    /// A key longer than [`MAX_NAME_BYTES`] is shortened to
    /// `stream#<hash>:<its first bytes>`: `<hash>` is the 64-bit FNV-1a hash
    /// of the whole key as 16 lowercase hex digits, followed by up to 200
    /// bytes of the key after `stream:`. The `#` keeps shortened keys apart
    /// from every unshortened one. Two long keys share a lock only if both
    /// their first bytes and their hashes match; that costs concurrency,
    /// never correctness, as appends still check versions.
    ///
    /// The format and the hash are fixed (not Rust's `DefaultHasher`), so
    /// every process and every release derives the same key for a stream.
    ///
    /// ```
    /// use eskit_core::{event::StreamName, handler::SingleWriter};
    /// let key = SingleWriter::lock_key(&StreamName::new("account", "acc-1")?);
    /// assert_eq!(key, "stream:account/acc-1");
    /// # Ok::<(), eskit_core::event::InvalidName>(())
    /// ```
    pub fn lock_key(stream: &StreamName) -> String {
        let mut key = String::with_capacity(MAX_NAME_BYTES);
        key.push_str(LOCK_KEY_PREFIX);
        for c in stream.stream_type().as_str().chars() {
            match c {
                '%' => key.push_str("%25"),
                '/' => key.push_str("%2F"),
                c => key.push(c),
            }
        }
        key.push('/');
        key.push_str(stream.stream_id().as_str());
        if key.len() <= MAX_NAME_BYTES {
            return key;
        }
        let rest = &key[LOCK_KEY_PREFIX.len()..];
        let mut cut = LOCK_KEY_KEPT_BYTES.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("stream#{:016x}:{}", fnv1a_64(key.as_bytes()), &rest[..cut])
    }
}

/// How every unshortened lock key of [`SingleWriter`] starts.
const LOCK_KEY_PREFIX: &str = "stream:";

/// How many bytes of a long lock key a shortened key keeps (at most; less
/// when a character would be split), so that `stream#`, the 16-digit hash,
/// `:` and the kept bytes stay within [`MAX_NAME_BYTES`].
const LOCK_KEY_KEPT_BYTES: usize = 200;

const _: () = assert!("stream#".len() + 16 + 1 + LOCK_KEY_KEPT_BYTES <= MAX_NAME_BYTES);

/// The 64-bit FNV-1a hash (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`): fixed by its definition, so lock keys derived from it
/// are the same in every process and release.
const fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(PRIME);
        i += 1;
    }
    hash
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

#[cfg(test)]
mod tests {
    use super::fnv1a_64;

    #[test]
    fn fnv1a_64_matches_the_published_test_vectors() {
        for (input, hash) in [
            ("", 0xcbf2_9ce4_8422_2325),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ] {
            assert_eq!(fnv1a_64(input.as_bytes()), hash, "{input:?}");
        }
    }
}
