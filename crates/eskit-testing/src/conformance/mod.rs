//! The store conformance suite: one call runs every scenario against a
//! backend, each on a fresh, empty store from the backend's factory.
//!
//! A backend wires it into a test target with `harness = false`, so the
//! summary line is the last line of the output and the exit code reflects
//! failures:
//!
//! ```no_run
//! // tests/conformance.rs of a backend crate
//! use eskit_core::memory::{MemoryCheckpointStore, MemoryLockRegistry, MemorySnapshotStore, MemoryStore};
//! use eskit_testing::conformance::{Fixture, Suite};
//!
//! fn main() -> std::process::ExitCode {
//!     Suite::new("memory", || async {
//!         let store = MemoryStore::new();
//!         let closer = store.clone();
//!         Ok::<_, eskit_core::error::BoxError>(
//!             Fixture::store(store.clone())
//!                 .with_queries(store)
//!                 .with_snapshots(MemorySnapshotStore::new())
//!                 .with_checkpoints(MemoryCheckpointStore::new())
//!                 .with_locks(MemoryLockRegistry::new())
//!                 .with_close(move || {
//!                     closer.close();
//!                     std::future::ready(())
//!                 }),
//!         )
//!     })
//!     .require_all()
//!     .main()
//! }
//! ```
//!
//! # Subsets
//! A third-party backend that lacks, say, snapshots leaves them out of its
//! [`Fixture`]; their scenarios are then reported as not run and do not
//! count. [`Suite::require_all`] turns a missing capability into failures,
//! which is what the workspace's own backends use.
//!
//! # Concurrency
//! Concurrent scenarios spawn their writers through the suite's
//! [`Executor`] ([`ThreadExecutor`] unless [`Suite::executor`] sets
//! another), so they race for real on any backend, including ones that
//! never yield.

mod basic;
mod claims;
mod close;
mod dcb;
mod edge;
mod feed;
mod follow;
mod global;
mod idempotency;
mod lifecycle;
mod load;
mod locks;
mod metadata;
mod model;
mod names;
mod sink;
mod snapshots;
mod stress;
mod tenants;

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use eskit_core::{
    dcb::EventQueryReader,
    error::{BoxError, StoreError, error_chain},
    event::{
        AppendResult, EventId, EventType, ExpectedVersion, InvalidName, NewEvent, RawEvent,
        StreamName, TenantId,
    },
    store::{
        AppendOptions, BoxFuture, CheckpointStore, ClaimStore, CommitFeed, DynCheckpointStore,
        DynClaimStore, DynEventQueryReader, DynEventStore, DynGlobalReader, DynLockRegistry,
        DynProjectionSink, DynSnapshotStore, DynStreamLifecycle, EventStore, GlobalPager,
        GlobalReader, LockRegistry, ProjectionSink, ReadOptions, SnapshotStore, StreamLifecycle,
    },
};

use crate::executor::{Executor, Task, TaskError, ThreadExecutor};

/// What a backend offers the suite: an event store, and optionally the other
/// store traits. Build one per scenario in the suite's factory.
#[derive(Clone)]
pub struct Fixture {
    events: Arc<dyn DynEventStore>,
    global: Option<Arc<dyn DynGlobalReader>>,
    lifecycle: Option<Arc<dyn DynStreamLifecycle>>,
    snapshots: Option<Arc<dyn DynSnapshotStore>>,
    checkpoints: Option<Arc<dyn DynCheckpointStore>>,
    locks: Option<Arc<dyn DynLockRegistry>>,
    feed: Option<Arc<dyn CommitFeed>>,
    other_locks: Option<Arc<dyn DynLockRegistry>>,
    close: Option<Closer>,
    queries: Option<Arc<dyn DynEventQueryReader>>,
    tenants: Option<Scoper>,
    sink: Option<SinkParts>,
    claims: Option<Arc<dyn DynClaimStore>>,
}

/// A backend's projection sink with the reader of its effects
/// ([`Fixture::with_sink`]).
#[derive(Clone)]
struct SinkParts {
    sink: Arc<dyn DynProjectionSink>,
    effects: Effects,
}

/// Reads the ids a sink's projection recorded, in the order it recorded them.
pub(crate) type Effects =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<EventId>, BoxError>> + Send + Sync>;

/// Closes the fixture's store, through a handle of its own.
type Closer = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Makes the fixture of one tenant's handles on the same store.
type Scoper = Arc<dyn Fn(TenantId) -> Fixture + Send + Sync>;

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("capabilities", &self.capabilities())
            .finish()
    }
}

impl Fixture {
    /// A full event store: appends and loads, global reads, lifecycle and
    /// the commit feed.
    pub fn store<S>(store: S) -> Self
    where
        S: EventStore + GlobalReader + StreamLifecycle + CommitFeed + 'static,
    {
        let s = Arc::new(store);
        Self {
            events: s.clone(),
            global: Some(s.clone()),
            lifecycle: Some(s.clone()),
            snapshots: None,
            checkpoints: None,
            locks: None,
            feed: Some(s),
            other_locks: None,
            close: None,
            queries: None,
            tenants: None,
            sink: None,
            claims: None,
        }
    }

    /// Only an event store; add the rest with the `with_*` methods.
    pub fn event_store<S: EventStore + 'static>(store: S) -> Self {
        Self {
            events: Arc::new(store),
            global: None,
            lifecycle: None,
            snapshots: None,
            checkpoints: None,
            locks: None,
            feed: None,
            other_locks: None,
            close: None,
            queries: None,
            tenants: None,
            sink: None,
            claims: None,
        }
    }

    /// Adds the commit feed of the same store.
    #[must_use]
    pub fn with_feed<F: CommitFeed + 'static>(mut self, feed: F) -> Self {
        self.feed = Some(Arc::new(feed));
        self
    }

    /// Adds a global reader over the same data as the event store.
    #[must_use]
    pub fn with_global_reader<R: GlobalReader + 'static>(mut self, reader: R) -> Self {
        self.global = Some(Arc::new(reader));
        self
    }

    /// Adds stream lifecycle over the same data as the event store.
    #[must_use]
    pub fn with_lifecycle<L: StreamLifecycle + 'static>(mut self, lifecycle: L) -> Self {
        self.lifecycle = Some(Arc::new(lifecycle));
        self
    }

    /// Adds DCB query reads over the same data as the event store. The
    /// `dcb` scenarios then also check append conditions
    /// ([`AppendOptions::with_condition`]), which a backend offering query
    /// reads must honour.
    #[must_use]
    pub fn with_queries<Q: EventQueryReader + 'static>(mut self, queries: Q) -> Self {
        self.queries = Some(Arc::new(queries));
        self
    }

    /// Adds a snapshot store.
    #[must_use]
    pub fn with_snapshots<S: SnapshotStore + 'static>(mut self, snapshots: S) -> Self {
        self.snapshots = Some(Arc::new(snapshots));
        self
    }

    /// Adds a claim store (work queues); the `claim` scenarios check it.
    #[must_use]
    pub fn with_claims<Q: ClaimStore + 'static>(mut self, claims: Q) -> Self {
        self.claims = Some(Arc::new(claims));
        self
    }

    /// Adds a checkpoint store.
    #[must_use]
    pub fn with_checkpoints<C: CheckpointStore + 'static>(mut self, checkpoints: C) -> Self {
        self.checkpoints = Some(Arc::new(checkpoints));
        self
    }

    /// Adds a lock registry.
    #[must_use]
    pub fn with_locks<L: LockRegistry + 'static>(mut self, locks: L) -> Self {
        self.locks = Some(Arc::new(locks));
        self
    }

    /// Adds a second lock registry over the same locks as
    /// [`with_locks`](Self::with_locks), as another process would open it
    /// (for the memory registry, a clone). The lock scenarios check
    /// exclusion and fencing tokens across the two; without it they use the
    /// one registry twice, which checks less.
    #[must_use]
    pub fn with_other_locks<L: LockRegistry + 'static>(mut self, locks: L) -> Self {
        self.other_locks = Some(Arc::new(locks));
        self
    }

    /// Adds the store's `close`, called through another handle than the
    /// fixture's (a clone of the store): the `close.*` scenarios call it and
    /// expect every handle, the fixture's included, to report
    /// [`StoreError::Closed`] from then on, and the commit feed to end its
    /// listeners with `FeedError::Closed`.
    ///
    /// ```
    /// use eskit_core::memory::MemoryStore;
    /// use eskit_testing::conformance::Fixture;
    /// let store = MemoryStore::new();
    /// let handle = store.clone();
    /// let fixture = Fixture::store(store).with_close(move || {
    ///     handle.close();
    ///     std::future::ready(())
    /// });
    /// # drop(fixture);
    /// ```
    #[must_use]
    pub fn with_close<F, Fut>(mut self, close: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.close = Some(Arc::new(move || Box::pin(close())));
        self
    }

    /// Adds tenants ([`TenantScoped`](eskit_core::store::TenantScoped)):
    /// `scope` makes the fixture of one tenant's handles on the same store
    /// (the same capabilities as this one, each scoped with `for_tenant`),
    /// while this fixture's handles stay unscoped. The `tenants.*`
    /// scenarios check that nothing crosses tenants.
    ///
    /// ```
    /// use eskit_core::memory::{MemoryCheckpointStore, MemoryStore};
    /// use eskit_core::store::TenantScoped;
    /// use eskit_testing::conformance::Fixture;
    /// let store = MemoryStore::new();
    /// let checkpoints = MemoryCheckpointStore::new();
    /// let scoped = (store.clone(), checkpoints.clone());
    /// let fixture = Fixture::store(store.clone())
    ///     .with_checkpoints(checkpoints)
    ///     .with_tenants(move |t| {
    ///         Fixture::store(scoped.0.for_tenant(t.clone()))
    ///             .with_checkpoints(scoped.1.for_tenant(t))
    ///     });
    /// # drop(fixture);
    /// ```
    #[must_use]
    pub fn with_tenants<F>(mut self, scope: F) -> Self
    where
        F: Fn(TenantId) -> Fixture + Send + Sync + 'static,
    {
        self.tenants = Some(Arc::new(scope));
        self
    }

    /// Adds a transactional projection sink over the same store, and the
    /// reader of its effects. The `sink.*` scenarios check that a page's
    /// effects and its cursor commit together or not at all, and that a
    /// page delivered again has its effect once.
    ///
    /// The sink's projection must, in the transaction of each page:
    /// record every event's id as one effect in the read model (in the
    /// order given), and refuse the page (return an error, so nothing of it
    /// is stored) when an event's payload is exactly `b"refuse"`. `effects`
    /// reads back every recorded id in recording order.
    ///
    /// ```
    /// use eskit_core::{event::EventId, memory::{MemoryReadModel, MemoryStore}};
    /// use eskit_testing::conformance::Fixture;
    /// let sink = MemoryReadModel::new("effects", |ids: &mut Vec<EventId>, e| {
    ///     if e.payload == b"refuse" {
    ///         return Err("refused".into());
    ///     }
    ///     ids.push(e.id);
    ///     Ok(())
    /// })?;
    /// let reader = sink.clone();
    /// let fixture = Fixture::store(MemoryStore::new())
    ///     .with_sink(sink, move || std::future::ready(Ok(reader.read().to_vec())));
    /// # drop(fixture);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_sink<S, F, Fut>(mut self, sink: S, effects: F) -> Self
    where
        S: ProjectionSink + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<EventId>, BoxError>> + Send + 'static,
    {
        self.sink = Some(SinkParts {
            sink: Arc::new(sink),
            effects: Arc::new(move || Box::pin(effects())),
        });
        self
    }

    /// The fixture of `tenant`'s handles, if tenants were given.
    pub fn tenant(&self, tenant: TenantId) -> Option<Fixture> {
        self.tenants.as_ref().map(|scope| scope(tenant))
    }

    /// The event store.
    pub fn events(&self) -> &Arc<dyn DynEventStore> {
        &self.events
    }

    /// The global reader, if given.
    pub fn global(&self) -> Option<&Arc<dyn DynGlobalReader>> {
        self.global.as_ref()
    }

    /// The lifecycle, if given.
    pub fn lifecycle(&self) -> Option<&Arc<dyn DynStreamLifecycle>> {
        self.lifecycle.as_ref()
    }

    /// The snapshot store, if given.
    pub fn snapshots(&self) -> Option<&Arc<dyn DynSnapshotStore>> {
        self.snapshots.as_ref()
    }

    /// The checkpoint store, if given.
    pub fn checkpoints(&self) -> Option<&Arc<dyn DynCheckpointStore>> {
        self.checkpoints.as_ref()
    }

    /// The claim store, if given.
    pub fn claims(&self) -> Option<&Arc<dyn DynClaimStore>> {
        self.claims.as_ref()
    }

    /// The lock registry, if given.
    pub fn locks(&self) -> Option<&Arc<dyn DynLockRegistry>> {
        self.locks.as_ref()
    }

    /// The query reader, if given.
    pub fn queries(&self) -> Option<&Arc<dyn DynEventQueryReader>> {
        self.queries.as_ref()
    }

    /// The commit feed, if given.
    pub fn feed(&self) -> Option<&Arc<dyn CommitFeed>> {
        self.feed.as_ref()
    }

    /// Which capabilities this fixture has.
    pub fn capabilities(&self) -> Vec<Capability> {
        Capability::ALL
            .iter()
            .copied()
            .filter(|c| self.has(*c))
            .collect()
    }

    fn has(&self, c: Capability) -> bool {
        match c {
            Capability::Events => true,
            Capability::GlobalReads => self.global.is_some(),
            Capability::Lifecycle => self.lifecycle.is_some(),
            Capability::Snapshots => self.snapshots.is_some(),
            Capability::Checkpoints => self.checkpoints.is_some(),
            Capability::Locks => self.locks.is_some(),
            Capability::Feed => self.feed.is_some(),
            Capability::Close => self.close.is_some(),
            Capability::Queries => self.queries.is_some(),
            Capability::Tenants => self.tenants.is_some(),
            Capability::Sink => self.sink.is_some(),
            Capability::Claims => self.claims.is_some(),
        }
    }
}

/// A store trait a scenario needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// [`EventStore`].
    Events,
    /// [`GlobalReader`].
    GlobalReads,
    /// [`StreamLifecycle`].
    Lifecycle,
    /// [`SnapshotStore`].
    Snapshots,
    /// [`CheckpointStore`].
    Checkpoints,
    /// [`LockRegistry`].
    Locks,
    /// [`CommitFeed`].
    Feed,
    /// Closing the store ([`Fixture::with_close`]).
    Close,
    /// [`EventQueryReader`] and append conditions.
    Queries,
    /// Tenant-scoped handles ([`Fixture::with_tenants`]).
    Tenants,
    /// A transactional projection sink ([`Fixture::with_sink`]).
    Sink,
    /// [`ClaimStore`].
    Claims,
}

impl Capability {
    const ALL: [Self; 12] = [
        Self::Events,
        Self::GlobalReads,
        Self::Lifecycle,
        Self::Snapshots,
        Self::Checkpoints,
        Self::Locks,
        Self::Feed,
        Self::Close,
        Self::Queries,
        Self::Tenants,
        Self::Sink,
        Self::Claims,
    ];
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Events => "event store",
            Self::GlobalReads => "global reader",
            Self::Lifecycle => "stream lifecycle",
            Self::Snapshots => "snapshot store",
            Self::Checkpoints => "checkpoint store",
            Self::Locks => "lock registry",
            Self::Feed => "commit feed",
            Self::Close => "close",
            Self::Queries => "query reader",
            Self::Tenants => "tenant scope",
            Self::Sink => "projection sink",
            Self::Claims => "claim store",
        })
    }
}

pub(crate) type Factory =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Fixture, BoxError>> + Send + Sync>;

pub(crate) fn boxed_factory<F, Fut, E>(factory: F) -> Factory
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Fixture, E>> + Send + 'static,
    E: Into<BoxError>,
{
    Arc::new(move || {
        let fut = factory();
        Box::pin(async move { fut.await.map_err(Into::into) })
    })
}

/// Sizes of the concurrent and stress scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StressSize {
    /// Concurrent writers.
    pub writers: usize,
    /// Successful appends each writer makes.
    pub appends_per_writer: usize,
}

impl Default for StressSize {
    /// 8 writers with 250 appends each (RELIABILITY A1, quick size).
    fn default() -> Self {
        Self {
            writers: 8,
            appends_per_writer: 250,
        }
    }
}

/// The conformance suite for one backend.
pub struct Suite {
    backend: String,
    factory: Factory,
    executor: Arc<dyn Executor>,
    require_all: bool,
    filter: Vec<String>,
    exact: bool,
    timeout: Duration,
    stress: StressSize,
}

impl fmt::Debug for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Suite")
            .field("backend", &self.backend)
            .field("require_all", &self.require_all)
            .field("filter", &self.filter)
            .field("timeout", &self.timeout)
            .field("stress", &self.stress)
            .finish_non_exhaustive()
    }
}

impl Suite {
    /// A suite for `backend` (the name used in every message). `factory`
    /// makes a fresh, empty store for each scenario.
    pub fn new<F, Fut, E>(backend: impl Into<String>, factory: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Fixture, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let factory = boxed_factory(factory);
        Self {
            backend: backend.into(),
            factory,
            executor: Arc::new(ThreadExecutor::new()),
            require_all: false,
            filter: Vec::new(),
            exact: false,
            timeout: Duration::from_secs(120),
            stress: StressSize::default(),
        }
    }

    /// Runs scenarios and spawned writers on `executor` instead of threads.
    #[must_use]
    pub fn executor(mut self, executor: impl Executor) -> Self {
        self.executor = Arc::new(executor);
        self
    }

    /// Fails scenarios whose capability the fixture lacks, instead of not
    /// running them.
    #[must_use]
    pub fn require_all(mut self) -> Self {
        self.require_all = true;
        self
    }

    /// Runs only scenarios whose name contains `pattern`; several calls
    /// select the union.
    #[must_use]
    pub fn filter(mut self, pattern: impl Into<String>) -> Self {
        self.filter.push(pattern.into());
        self
    }

    /// The longest one scenario may take before it counts as failed
    /// (default 120 s). Only scenarios that yield can be interrupted.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sizes of the stress scenarios.
    #[must_use]
    pub fn stress_size(mut self, size: StressSize) -> Self {
        self.stress = size;
        self
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Runs the selected scenarios and returns the report.
    pub fn run(&self) -> Report {
        self.run_with(|_| {})
    }

    /// Runs the selected scenarios, calling `on_result` after each.
    pub fn run_with(&self, mut on_result: impl FnMut(&ScenarioResult)) -> Report {
        let mut results = Vec::new();
        for s in scenarios() {
            if !self.selected(s.name) {
                continue;
            }
            let result = self.run_one(&s);
            on_result(&result);
            results.push(result);
        }
        Report {
            backend: self.backend.clone(),
            results,
        }
    }

    /// Runs the suite as the `main` of a `harness = false` test target:
    /// reads name filters from the command line (arguments not starting with
    /// `-`; `--exact` makes them match whole names) or from
    /// `ESKIT_CONFORMANCE_FILTER`, prints one line per scenario and then the
    /// summary line `conformance <backend>: N passed, M failed` to stdout,
    /// and returns a failing exit code when a scenario failed or none ran.
    ///
    /// It also answers libtest's `--list` (one `name: test` line per
    /// scenario), so runners such as cargo-nextest can run scenarios one by
    /// one.
    pub fn main(mut self) -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut out = std::io::stdout();
        let mut list = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--list" => list = true,
                "--exact" => self.exact = true,
                // libtest options that take a value: skip the value too.
                "--test-threads" | "--skip" | "--format" | "--color" | "--logfile" | "-Z"
                | "--shuffle-seed" => {
                    it.next();
                }
                f if !f.starts_with('-') => self.filter.push(f.to_owned()),
                _ => {}
            }
        }
        if let Ok(f) = std::env::var("ESKIT_CONFORMANCE_FILTER")
            && !f.is_empty()
        {
            self.filter.push(f);
        }
        if list {
            // Nothing is #[ignore]d, so `--list --ignored` lists nothing.
            if !args.iter().any(|a| a == "--ignored") {
                for name in scenario_names().into_iter().filter(|n| self.selected(n)) {
                    let _ = writeln!(out, "{name}: test");
                }
            }
            return ExitCode::SUCCESS;
        }
        let report = self.run_with(|r| {
            let _ = writeln!(out, "{}", r.line(&self.backend));
            let _ = out.flush();
        });
        let _ = writeln!(out, "{}", report.summary());
        let _ = out.flush();
        if self.filter.is_empty()
            && let Err(e) = report.write_requested()
        {
            let _ = writeln!(out, "cannot write the conformance report: {e}");
            return ExitCode::FAILURE;
        }
        if report.is_success() && report.passed() > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    fn selected(&self, name: &str) -> bool {
        self.filter.is_empty()
            || self.filter.iter().any(|f| {
                if self.exact {
                    name == f
                } else {
                    name.contains(f.as_str())
                }
            })
    }

    fn run_one(&self, s: &Scenario) -> ScenarioResult {
        let start = Instant::now();
        let factory = Arc::clone(&self.factory);
        let executor = Arc::clone(&self.executor);
        let require_all = self.require_all;
        let stress = self.stress;
        let needs = s.needs;
        let body = s.run;
        let timeout = self.timeout;
        let fut = async move {
            let fixture = match factory().await {
                Ok(f) => f,
                Err(e) => {
                    return Status::Failed(format!(
                        "the store factory failed: {}",
                        error_chain(e.as_ref())
                    ));
                }
            };
            if let Some(missing) = needs.iter().find(|c| !fixture.has(**c)) {
                return if require_all {
                    Status::Failed(format!("the backend gave no {missing}"))
                } else {
                    Status::NotRun(format!("needs a {missing}"))
                };
            }
            let ctx = Ctx {
                fixture,
                executor,
                stress,
            };
            match with_timeout(body(ctx), timeout).await {
                Some(Ok(())) => Status::Passed,
                Some(Err(f)) => Status::Failed(f.0),
                None => Status::Failed(format!(
                    "did not finish within {} s (deadlock or hang)",
                    timeout.as_secs()
                )),
            }
        };
        let status = catch_unwind(AssertUnwindSafe(|| {
            crate::executor::run(&*self.executor, fut)
        }));
        let status = match status {
            Ok(Ok(status)) => status,
            Ok(Err(TaskError)) => {
                Status::Failed("the executor did not complete the scenario".into())
            }
            Err(panic) => Status::Failed(format!("panicked: {}", panic_message(&*panic))),
        };
        ScenarioResult {
            name: s.name,
            status,
            elapsed: start.elapsed(),
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// Runs `fut`, giving up after `timeout` (checked whenever `fut` yields).
async fn with_timeout<T>(fut: impl Future<Output = T>, timeout: Duration) -> Option<T> {
    let mut fut = pin!(fut);
    let mut timer = pin!(eskit_core::rt::sleep(timeout));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// The names of every scenario, in the order they run.
pub fn scenario_names() -> Vec<&'static str> {
    scenarios().into_iter().map(|s| s.name).collect()
}

/// How one scenario ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Every expectation held.
    Passed,
    /// An expectation failed; the text says what was expected and what happened.
    Failed(String),
    /// Not run because the fixture lacks a capability it needs.
    NotRun(String),
}

/// The outcome of one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioResult {
    /// The scenario's name, `group.what_it_checks`.
    pub name: &'static str,
    /// How it ended.
    pub status: Status,
    /// How long it took, including building the fixture.
    pub elapsed: Duration,
}

impl ScenarioResult {
    /// The line printed for this result, naming the backend and the scenario.
    pub fn line(&self, backend: &str) -> String {
        let ms = self.elapsed.as_millis();
        match &self.status {
            Status::Passed => format!("ok      {backend} {} ({ms} ms)", self.name),
            Status::Failed(why) => format!("FAILED  {backend} {}: {why}", self.name),
            Status::NotRun(why) => format!("not run {backend} {}: {why}", self.name),
        }
    }
}

/// The results of a suite run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    backend: String,
    results: Vec<ScenarioResult>,
}

impl Report {
    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Every result, in run order.
    pub fn results(&self) -> &[ScenarioResult] {
        &self.results
    }

    /// The result of one scenario, if it ran.
    pub fn get(&self, name: &str) -> Option<&ScenarioResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// Scenarios that passed.
    pub fn passed(&self) -> usize {
        self.count(|s| matches!(s, Status::Passed))
    }

    /// Scenarios that failed.
    pub fn failed(&self) -> usize {
        self.count(|s| matches!(s, Status::Failed(_)))
    }

    /// Scenarios not run for lack of a capability.
    pub fn not_run(&self) -> usize {
        self.count(|s| matches!(s, Status::NotRun(_)))
    }

    /// Names of the failed scenarios.
    pub fn failed_names(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| matches!(r.status, Status::Failed(_)))
            .map(|r| r.name)
            .collect()
    }

    /// Whether no scenario failed.
    pub fn is_success(&self) -> bool {
        self.failed() == 0
    }

    /// Writes `<dir>/<backend>.tsv`, one `scenario<TAB>passed|failed|not-run`
    /// line per scenario; `cargo xtask parity` renders STORE_PARITY.md from
    /// these files. [`Suite::main`] writes it after a full (unfiltered) run
    /// when `ESKIT_CONFORMANCE_REPORT_DIR` is set.
    ///
    /// # Errors
    /// The I/O error when the directory or file cannot be written.
    pub fn write_tsv(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut text = String::new();
        for r in &self.results {
            let status = match r.status {
                Status::Passed => "passed",
                Status::Failed(_) => "failed",
                Status::NotRun(_) => "not-run",
            };
            text.push_str(r.name);
            text.push('\t');
            text.push_str(status);
            text.push('\n');
        }
        std::fs::write(dir.join(format!("{}.tsv", self.backend)), text)
    }

    /// Writes the report with [`Report::write_tsv`] into the directory named
    /// by `ESKIT_CONFORMANCE_REPORT_DIR`, when that is set. Runners with
    /// their own `main` call this after a full run.
    ///
    /// # Errors
    /// The I/O error when the report cannot be written.
    pub fn write_requested(&self) -> std::io::Result<()> {
        match std::env::var("ESKIT_CONFORMANCE_REPORT_DIR") {
            Ok(dir) if !dir.is_empty() => self.write_tsv(std::path::Path::new(&dir)),
            _ => Ok(()),
        }
    }

    /// `conformance <backend>: N passed, M failed`.
    pub fn summary(&self) -> String {
        format!(
            "conformance {}: {} passed, {} failed",
            self.backend,
            self.passed(),
            self.failed()
        )
    }

    fn count(&self, f: impl Fn(&Status) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.status)).count()
    }
}

impl fmt::Display for Report {
    /// One line per scenario, then the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            writeln!(f, "{}", r.line(&self.backend))?;
        }
        f.write_str(&self.summary())
    }
}

// ---------------------------------------------------------------------------
// Internals shared by the scenario modules.

/// A failed expectation: what was expected and what happened.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self(format!("unexpected store error: {}", error_chain(&e)))
    }
}

impl From<InvalidName> for Failure {
    fn from(e: InvalidName) -> Self {
        Self(format!("the suite built an invalid name: {e}"))
    }
}

impl From<TaskError> for Failure {
    fn from(e: TaskError) -> Self {
        Self(e.to_string())
    }
}

pub(crate) type Outcome = Result<(), Failure>;

/// Adds what the suite was doing to an unexpected error.
pub(crate) trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, Failure>;
}

impl<T> Context<T> for Result<T, StoreError> {
    fn ctx(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure(format!("{what}: unexpected error: {}", error_chain(&e))))
    }
}

/// `Debug` of a value, cut to a readable length (payloads can be 512 KiB).
pub(crate) fn short(v: &impl fmt::Debug) -> String {
    let s = format!("{v:?}");
    if s.len() <= 300 {
        return s;
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} chars)", &s[..end], s.len())
}

/// Fails unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Failure(format!(
                "{} (expected `{}`)",
                format!($($fmt)+),
                stringify!($cond)
            )));
        }
    };
}

/// Fails unless `actual == expected`, naming what was compared.
macro_rules! ensure_eq {
    ($actual:expr, $expected:expr, $($what:tt)+) => {{
        let (a, e) = (&$actual, &$expected);
        if a != e {
            return Err($crate::conformance::Failure(format!(
                "{}: expected {}, got {}",
                format!($($what)+),
                $crate::conformance::short(e),
                $crate::conformance::short(a)
            )));
        }
    }};
}

/// Expects an error matching a pattern and returns it.
macro_rules! expect_err {
    ($result:expr, $pat:pat, $($what:tt)+) => {
        match $result {
            Err(e @ $pat) => e,
            Ok(v) => {
                return Err($crate::conformance::Failure(format!(
                    "{}: expected error {}, got Ok({})",
                    format!($($what)+),
                    stringify!($pat),
                    $crate::conformance::short(&v)
                )))
            }
            Err(e) => {
                return Err($crate::conformance::Failure(format!(
                    "{}: expected error {}, got error {:?} ({})",
                    format!($($what)+),
                    stringify!($pat),
                    e,
                    eskit_core::error::error_chain(&e)
                )))
            }
        }
    };
}

pub(crate) use {ensure, ensure_eq, expect_err};

/// A scenario's environment: the fixture, the executor and the sizes.
#[derive(Clone)]
pub(crate) struct Ctx {
    fixture: Fixture,
    executor: Arc<dyn Executor>,
    stress: StressSize,
}

impl Ctx {
    pub(crate) fn events(&self) -> &Arc<dyn DynEventStore> {
        &self.fixture.events
    }

    pub(crate) fn global(&self) -> Result<&Arc<dyn DynGlobalReader>, Failure> {
        self.fixture
            .global
            .as_ref()
            .ok_or_else(|| Failure("no global reader".into()))
    }

    pub(crate) fn lifecycle(&self) -> Result<&Arc<dyn DynStreamLifecycle>, Failure> {
        self.fixture
            .lifecycle
            .as_ref()
            .ok_or_else(|| Failure("no lifecycle".into()))
    }

    pub(crate) fn snapshots(&self) -> Result<&Arc<dyn DynSnapshotStore>, Failure> {
        self.fixture
            .snapshots
            .as_ref()
            .ok_or_else(|| Failure("no snapshot store".into()))
    }

    pub(crate) fn checkpoints(&self) -> Result<&Arc<dyn DynCheckpointStore>, Failure> {
        self.fixture
            .checkpoints
            .as_ref()
            .ok_or_else(|| Failure("no checkpoint store".into()))
    }

    pub(crate) fn feed(&self) -> Result<&Arc<dyn CommitFeed>, Failure> {
        self.fixture
            .feed
            .as_ref()
            .ok_or_else(|| Failure("no commit feed".into()))
    }

    pub(crate) fn locks(&self) -> Result<&Arc<dyn DynLockRegistry>, Failure> {
        self.fixture
            .locks
            .as_ref()
            .ok_or_else(|| Failure("no lock registry".into()))
    }

    /// Closes the store through the fixture's closing handle.
    pub(crate) async fn close(&self) -> Outcome {
        let close = self
            .fixture
            .close
            .as_ref()
            .ok_or_else(|| Failure("no close".into()))?;
        close().await;
        Ok(())
    }

    pub(crate) fn queries(&self) -> Result<&Arc<dyn DynEventQueryReader>, Failure> {
        self.fixture
            .queries
            .as_ref()
            .ok_or_else(|| Failure("no query reader".into()))
    }

    pub(crate) fn claims(&self) -> Result<&Arc<dyn DynClaimStore>, Failure> {
        self.fixture
            .claims
            .as_ref()
            .ok_or_else(|| Failure("no claim store".into()))
    }

    /// The second lock registry, or the first when the fixture has none.
    pub(crate) fn other_locks(&self) -> Result<&Arc<dyn DynLockRegistry>, Failure> {
        match &self.fixture.other_locks {
            Some(l) => Ok(l),
            None => self.locks(),
        }
    }

    pub(crate) fn stress(&self) -> StressSize {
        self.stress
    }

    /// The projection sink and the reader of its effects.
    pub(crate) fn sink(&self) -> Result<(&Arc<dyn DynProjectionSink>, &Effects), Failure> {
        self.fixture
            .sink
            .as_ref()
            .map(|p| (&p.sink, &p.effects))
            .ok_or_else(|| Failure("no projection sink".into()))
    }

    /// A context over `tenant`'s handles on the same store.
    pub(crate) fn tenant(&self, tenant: &str) -> Result<Ctx, Failure> {
        let id = TenantId::new(tenant).map_err(|e| Failure(format!("tenant {tenant}: {e}")))?;
        let fixture = self
            .fixture
            .tenant(id)
            .ok_or_else(|| Failure("no tenant scope".into()))?;
        Ok(Ctx {
            fixture,
            executor: Arc::clone(&self.executor),
            stress: self.stress,
        })
    }

    /// A start gate for `n` tasks: spawned tasks are started one after the
    /// other, and a fast backend can finish a whole task before the next one
    /// starts, so concurrent scenarios wait here until all have started.
    pub(crate) fn gate(&self, n: usize) -> Gate {
        Gate {
            arrived: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            n,
        }
    }

    pub(crate) fn spawn<T, F>(&self, fut: F) -> Task<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        crate::executor::spawn(&*self.executor, fut)
    }

    /// Appends with default options.
    pub(crate) async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.events()
            .append(stream, expected, events, AppendOptions::new())
            .await
    }

    /// Loads a whole stream.
    pub(crate) async fn load_all(&self, stream: &StreamName) -> Result<Vec<RawEvent>, Failure> {
        self.events()
            .load(stream, eskit_core::store::LoadOptions::new())
            .await
            .ctx(&format!("loading {stream}"))
    }

    /// Reads the whole global log, page by page.
    pub(crate) async fn read_everything(&self) -> Result<Vec<RawEvent>, Failure> {
        read_everything(self.global()?).await
    }
}

/// See [`Ctx::gate`].
#[derive(Clone)]
pub(crate) struct Gate {
    arrived: Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
}

impl Gate {
    /// A gate for `n` tasks.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            arrived: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            n,
        }
    }

    /// Waits until `n` tasks have called this.
    pub(crate) async fn wait(&self) {
        use std::sync::atomic::Ordering;
        self.arrived.fetch_add(1, Ordering::SeqCst);
        while self.arrived.load(Ordering::SeqCst) < self.n {
            std::thread::yield_now();
            crate::executor::yield_now().await;
        }
    }
}

/// Reads every event of a store in cursor order, in pages of 1,000, through
/// the one paging helper.
///
/// # Errors
/// The first read error (a page whose `next` goes back is one).
pub(crate) async fn read_everything(
    global: &Arc<dyn DynGlobalReader>,
) -> Result<Vec<RawEvent>, Failure> {
    GlobalPager::new(global, ReadOptions::from_start(1000))
        .collect()
        .await
        .ctx("reading all events")
}

pub(crate) fn ty(name: &str) -> Result<EventType, Failure> {
    Ok(EventType::new(name)?)
}

pub(crate) fn ev(event_type: &str, payload: impl Into<Vec<u8>>) -> Result<NewEvent, Failure> {
    Ok(NewEvent::new(ty(event_type)?, payload.into()))
}

/// `n` events of one type with payloads `"<prefix>-<i>"`.
pub(crate) fn evs(n: usize, event_type: &str, prefix: &str) -> Result<Vec<NewEvent>, Failure> {
    (0..n)
        .map(|i| ev(event_type, format!("{prefix}-{i}")))
        .collect()
}

pub(crate) fn stream(id: &str) -> Result<StreamName, Failure> {
    Ok(StreamName::new("conformance", id)?)
}

/// One named scenario.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) needs: &'static [Capability],
    pub(crate) run: fn(Ctx) -> BoxFuture<'static, Outcome>,
}

/// Declares a list of scenarios: `name => function` with the capabilities
/// they need.
macro_rules! scenario_list {
    ($needs:expr; $($name:literal => $f:path),* $(,)?) => {
        vec![$($crate::conformance::Scenario {
            name: $name,
            needs: $needs,
            run: |ctx| Box::pin($f(ctx)),
        }),*]
    };
}

pub(crate) use scenario_list;

pub(crate) const EVENTS: &[Capability] = &[Capability::Events];
pub(crate) const QUERIES: &[Capability] = &[Capability::Events, Capability::Queries];
pub(crate) const GLOBAL: &[Capability] = &[Capability::Events, Capability::GlobalReads];
pub(crate) const LIFECYCLE: &[Capability] = &[Capability::Events, Capability::Lifecycle];
pub(crate) const FEED: &[Capability] = &[Capability::Events, Capability::Feed];
pub(crate) const CLOSE: &[Capability] = &[
    Capability::Events,
    Capability::GlobalReads,
    Capability::Lifecycle,
    Capability::Feed,
    Capability::Close,
];
pub(crate) const FEED_LIFECYCLE: &[Capability] =
    &[Capability::Events, Capability::Lifecycle, Capability::Feed];
pub(crate) const LIFECYCLE_GLOBAL: &[Capability] = &[
    Capability::Events,
    Capability::Lifecycle,
    Capability::GlobalReads,
];

fn scenarios() -> Vec<Scenario> {
    let mut all = Vec::new();
    all.extend(basic::scenarios());
    all.extend(load::scenarios());
    all.extend(names::scenarios());
    all.extend(metadata::scenarios());
    all.extend(idempotency::scenarios());
    all.extend(edge::scenarios());
    all.extend(lifecycle::scenarios());
    all.extend(global::scenarios());
    all.extend(feed::scenarios());
    all.extend(follow::scenarios());
    all.extend(snapshots::scenarios());
    all.extend(locks::scenarios());
    all.extend(stress::scenarios());
    all.extend(model::scenarios());
    all.extend(close::scenarios());
    all.extend(dcb::scenarios());
    all.extend(tenants::scenarios());
    all.extend(sink::scenarios());
    all.extend(claims::scenarios());
    all
}
