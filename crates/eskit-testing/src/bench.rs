//! Benchmark workloads shared by every backend, each run against the eskit
//! store and against a raw baseline the backend supplies (hand-written
//! driver code doing the same durable work), so results read as ratios.
//!
//! | id | workload |
//! |----|----------|
//! | W1 | single-event append to a new stream with the new-stream check, sequential |
//! | W2 | single-event appends from 8 concurrent writers on distinct streams |
//! | W3 | batch append of 100 events |
//! | W4 | load a 1,000-event stream |
//! | W5 | same-stream contention with OCC retry (useful events/s, conflict rate) |
//! | W6 | global read-all catch-up of 100,000 events |
//! | W7 | snapshot load |
//! | W8 | commit-to-handler subscription latency (reserved until subscriptions exist) |
//!
//! Every workload writes the same event: a JSON `OrderPlaced` of about 200
//! bytes, the size and shape the Rust peers are usually measured with.
//!
//! A backend's bench target (`harness = false`) calls [`Bench::main`]. It
//! prints a markdown table and, when `ESKIT_BENCH_JSON` names a file,
//! appends one JSON object per row to it (the protocol every bench target
//! of the workspace shares; `cargo xtask bench` collects the lines).
//!
//! ```no_run
//! // benches/memory.rs
//! use eskit_core::{error::BoxError, memory::{MemorySnapshotStore, MemoryStore}};
//! use eskit_testing::bench::{Baseline, Bench, MemoryBaseline};
//! use eskit_testing::conformance::Fixture;
//! use std::sync::Arc;
//!
//! fn main() -> std::process::ExitCode {
//!     Bench::new("memory", || async {
//!         Ok::<_, BoxError>(Fixture::store(MemoryStore::new()).with_snapshots(MemorySnapshotStore::new()))
//!     })
//!     .baseline(|| async { Ok::<_, BoxError>(Arc::new(MemoryBaseline::new()) as Arc<dyn Baseline>) })
//!     .main()
//! }
//! ```
//!
//! # Sizes
//! Each workload runs until its operation count is reached or its time
//! budget is spent, whichever comes first, so slow backends stay short.
//! A run is made of rounds (`ESKIT_BENCH_ROUNDS`, default 5); each round
//! runs every selected workload, eskit then the baseline, so a slow patch of
//! the shared machine hits every side of every comparison alike. Each side
//! reports its median round, and [`median_ratio`] compares two workloads
//! round by round.
//! Environment variables: `ESKIT_BENCH_SECONDS` (budget per round, workload
//! and implementation, default 1), `ESKIT_BENCH_OPS` (operations for W1 and W2,
//! default 20,000; the other workloads scale from it), `ESKIT_BENCH_W6_EVENTS`
//! (events W6 reads, default 100,000) and `ESKIT_BENCH_WORKLOAD` (like
//! `--workload`).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eskit_core::{
    error::{BoxError, error_chain},
    event::{EventType, ExpectedVersion, NewEvent, StreamName, Timestamp, Version},
    store::{
        AppendOptions, BoxFuture, EventStore, GlobalPager, LoadOptions, ReadOptions, Snapshot,
    },
};

use crate::conformance::{Factory, Fixture, Gate, boxed_factory};
use crate::executor::{Executor, ThreadExecutor, spawn};

/// One benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Workload {
    /// Single-event append to a new stream with the new-stream check
    /// (`ExpectedVersion::NoStream`), sequential.
    W1,
    /// Single-event appends from 8 concurrent writers on distinct streams.
    W2,
    /// Batch append of 100 events.
    W3,
    /// Load a 1,000-event stream.
    W4,
    /// Same-stream contention with OCC retry.
    W5,
    /// Global read-all catch-up.
    W6,
    /// Snapshot load.
    W7,
    /// Commit-to-handler subscription latency; reserved until
    /// subscriptions exist, reported as not available.
    W8,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Self; 8] = [
        Self::W1,
        Self::W2,
        Self::W3,
        Self::W4,
        Self::W5,
        Self::W6,
        Self::W7,
        Self::W8,
    ];

    /// `W1` to `W8`.
    pub fn id(self) -> &'static str {
        match self {
            Self::W1 => "W1",
            Self::W2 => "W2",
            Self::W3 => "W3",
            Self::W4 => "W4",
            Self::W5 => "W5",
            Self::W6 => "W6",
            Self::W7 => "W7",
            Self::W8 => "W8",
        }
    }

    /// A short description.
    pub fn description(self) -> &'static str {
        match self {
            Self::W1 => "single-event append to a new stream (no-stream check)",
            Self::W2 => "single-event appends, 8 writers on distinct streams",
            Self::W3 => "batch append of 100 events",
            Self::W4 => "load a 1,000-event stream",
            Self::W5 => "same-stream OCC with retry, 8 writers",
            Self::W6 => "global read-all catch-up",
            Self::W7 => "snapshot load",
            Self::W8 => "subscription commit-to-handler latency",
        }
    }

    /// Parses `W3` or `w3`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|w| w.id().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Raw driver code doing the same durable work as the store, written by
/// hand for one backend (rusqlite, sqlx, async-nats calls), measured beside
/// the store so the table shows eskit's overhead as a ratio.
///
/// Streams are plain strings here; a baseline stores payload bytes with
/// whatever columns or headers the backend's store keeps.
pub trait Baseline: Send + Sync + 'static {
    /// Appends `payloads` atomically at the end of `stream`. With
    /// `expected`, first checks the stream is at that version and returns
    /// `Ok(false)` on a mismatch (nothing written).
    ///
    /// # Errors
    /// A driver failure.
    fn append<'a>(
        &'a self,
        stream: &'a str,
        expected: Option<u64>,
        payloads: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<bool, BoxError>>;

    /// The stream's last version, 0 when empty.
    ///
    /// # Errors
    /// A driver failure.
    fn version<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, BoxError>>;

    /// Loads a whole stream and returns how many events it has.
    ///
    /// # Errors
    /// A driver failure.
    fn load<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<usize, BoxError>>;

    /// Reads up to `limit` events at global positions `>= from` and returns
    /// their positions in order.
    ///
    /// # Errors
    /// A driver failure.
    fn read_all(&self, from: u64, limit: usize) -> BoxFuture<'_, Result<Vec<u64>, BoxError>>;

    /// Saves a snapshot of `stream`, replacing any previous one.
    ///
    /// # Errors
    /// A driver failure.
    fn save_snapshot<'a>(
        &'a self,
        stream: &'a str,
        version: u64,
        state: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BoxError>>;

    /// Loads the snapshot state of `stream`.
    ///
    /// # Errors
    /// A driver failure.
    fn load_snapshot<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BoxError>>;
}

/// The memory backend's baseline: plain `Mutex`-guarded vectors.
#[derive(Debug, Default)]
pub struct MemoryBaseline {
    inner: Mutex<MemoryBaselineInner>,
}

#[derive(Debug, Default)]
struct MemoryBaselineInner {
    streams: HashMap<String, Vec<Vec<u8>>>,
    log: Vec<(u64, Vec<u8>)>,
    snapshots: HashMap<String, (u64, Vec<u8>)>,
}

impl MemoryBaseline {
    /// An empty baseline store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemoryBaselineInner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Baseline for MemoryBaseline {
    fn append<'a>(
        &'a self,
        stream: &'a str,
        expected: Option<u64>,
        payloads: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(async move {
            Ok(self.with(|i| {
                let events = i.streams.entry(stream.to_owned()).or_default();
                if expected.is_some_and(|v| v != events.len() as u64) {
                    return false;
                }
                events.extend(payloads.iter().cloned());
                let next = i.log.len() as u64 + 1;
                i.log.extend(
                    payloads
                        .iter()
                        .enumerate()
                        .map(|(k, p)| (next + k as u64, p.clone())),
                );
                true
            }))
        })
    }

    fn version<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, BoxError>> {
        Box::pin(
            async move { Ok(self.with(|i| i.streams.get(stream).map_or(0, |s| s.len() as u64))) },
        )
    }

    fn load<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<usize, BoxError>> {
        Box::pin(
            async move { Ok(self.with(|i| i.streams.get(stream).map_or(0, |s| s.clone().len()))) },
        )
    }

    fn read_all(&self, from: u64, limit: usize) -> BoxFuture<'_, Result<Vec<u64>, BoxError>> {
        Box::pin(async move {
            Ok(self.with(|i| {
                let start = i.log.partition_point(|(p, _)| *p < from);
                i.log[start..]
                    .iter()
                    .take(limit)
                    .map(|(p, payload)| {
                        std::hint::black_box(payload.clone());
                        *p
                    })
                    .collect()
            }))
        })
    }

    fn save_snapshot<'a>(
        &'a self,
        stream: &'a str,
        version: u64,
        state: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            self.with(|i| {
                i.snapshots
                    .insert(stream.to_owned(), (version, state.to_vec()))
            });
            Ok(())
        })
    }

    fn load_snapshot<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BoxError>> {
        Box::pin(async move { Ok(self.with(|i| i.snapshots.get(stream).map(|(_, s)| s.clone()))) })
    }
}

/// Which implementation a row measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impl {
    /// The eskit store.
    Eskit,
    /// The backend's raw baseline.
    Baseline,
}

impl Impl {
    /// `eskit` or `baseline`, as in the JSON protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eskit => "eskit",
            Self::Baseline => "baseline",
        }
    }
}

/// One measured row.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// Backend name.
    pub backend: String,
    /// The workload.
    pub workload: Workload,
    /// What was measured.
    pub implementation: Impl,
    /// Operations timed (appends, loads, reads).
    pub ops: u64,
    /// Events those operations moved (useful events for W5; snapshots for W7).
    pub events: u64,
    /// Wall-clock time of the timed phase.
    pub elapsed: Duration,
    /// Events per second.
    pub events_per_sec: f64,
    /// Median operation latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile operation latency, microseconds.
    pub p99_us: f64,
    /// This row's events/s divided by the baseline's; 1 for the baseline
    /// itself, `None` without a baseline.
    pub ratio: Option<f64>,
    /// Share of attempts that hit a conflict (W5).
    pub conflict_rate: Option<f64>,
    /// Events per second of every round, in the order they ran; the row's
    /// other figures come from the median round. Round `i` of every
    /// workload of one [`Bench::run`] ran close together in time, so ratios
    /// between workloads are best taken round by round
    /// (see [`median_ratio`]).
    pub rounds: Vec<f64>,
}

/// The workloads a bench binary was asked for: every `--workload W` argument
/// (comma lists allowed) and `ESKIT_BENCH_WORKLOAD`; `None` when neither
/// names any.
///
/// # Errors
/// A message naming a workload that is not W1 to W8.
pub fn workloads_from_args() -> Result<Option<Vec<Workload>>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut picked: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--workload")
        .map(|w| w[1].clone())
        .collect();
    if let Ok(w) = std::env::var("ESKIT_BENCH_WORKLOAD") {
        picked.push(w);
    }
    let mut out = Vec::new();
    for p in picked
        .iter()
        .flat_map(|p| p.split(','))
        .filter(|p| !p.trim().is_empty())
    {
        out.push(Workload::parse(p).ok_or_else(|| format!("unknown workload `{p}` (W1 to W8)"))?);
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The median over rounds of `a`'s events/s divided by `b`'s in the same
/// round: a slow patch of a shared machine then hits both sides of each
/// ratio. `None` when the rows have no rounds in common.
pub fn median_ratio(a: &BenchRow, b: &BenchRow) -> Option<f64> {
    let mut ratios: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .filter(|(_, y)| **y > 0.0)
        .map(|(x, y)| x / y)
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied()
}

impl BenchRow {
    /// The row as one JSON object (the shared bench protocol).
    pub fn to_json(&self) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else {
                "null".to_owned()
            }
        };
        let opt = |v: Option<f64>| v.map_or_else(|| "null".to_owned(), num);
        format!(
            "{{\"backend\":{},\"workload\":\"{}\",\"name\":{},\"impl\":\"{}\",\"events_per_sec\":{},\
             \"p50_us\":{},\"p99_us\":{},\"ratio\":{},\"ops\":{},\"events\":{},\"elapsed_ms\":{},\
             \"conflict_rate\":{},\"rounds\":[{}]}}",
            json_string(&self.backend),
            self.workload.id(),
            json_string(self.workload.description()),
            self.implementation.as_str(),
            num(self.events_per_sec),
            num(self.p50_us),
            num(self.p99_us),
            opt(self.ratio),
            self.ops,
            self.events,
            self.elapsed.as_millis(),
            opt(self.conflict_rate),
            self.rounds
                .iter()
                .map(|r| num(*r))
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Renders rows as a markdown table.
pub fn markdown_table(rows: &[BenchRow]) -> String {
    let mut t = String::from(
        "| backend | workload | impl | events/s | p50 µs | p99 µs | ratio | notes |\n\
         |---|---|---|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let notes = match (r.workload, r.conflict_rate) {
            (Workload::W5, Some(c)) => format!("conflict rate {:.1}%", c * 100.0),
            (Workload::W7, _) => "snapshots/s".to_owned(),
            _ => String::new(),
        };
        let _ = writeln!(
            t,
            "| {} | {} {} | {} | {:.0} | {:.1} | {:.1} | {} | {} |",
            r.backend,
            r.workload.id(),
            r.workload.description(),
            r.implementation.as_str(),
            r.events_per_sec,
            r.p50_us,
            r.p99_us,
            r.ratio
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
            notes
        );
    }
    t
}

/// Sizes of the workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Time budget per workload and implementation.
    pub budget: Duration,
    /// Most operations for W1 and W2; W3, W4, W5 and W7 scale from it.
    pub ops: u64,
    /// Events W6 seeds and reads back.
    pub w6_events: u64,
    /// Rounds: each runs every workload, eskit and the baseline in turn;
    /// each side reports its median round, so drift on a shared machine
    /// hits all of them.
    pub rounds: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(1),
            ops: 20_000,
            w6_events: 100_000,
            rounds: 5,
        }
    }
}

impl Sizes {
    /// The defaults, overridden by `ESKIT_BENCH_SECONDS`, `ESKIT_BENCH_OPS`,
    /// `ESKIT_BENCH_W6_EVENTS` and `ESKIT_BENCH_ROUNDS` where set to a number.
    pub fn from_env() -> Self {
        let d = Self::default();
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        Self {
            budget: var("ESKIT_BENCH_SECONDS")
                .filter(|s| *s > 0.0)
                .map_or(d.budget, Duration::from_secs_f64),
            ops: var("ESKIT_BENCH_OPS").map_or(d.ops, |v| (v as u64).max(8)),
            w6_events: var("ESKIT_BENCH_W6_EVENTS").map_or(d.w6_events, |v| (v as u64).max(1)),
            rounds: var("ESKIT_BENCH_ROUNDS").map_or(d.rounds, |v| (v as u32).clamp(1, MAX_ROUNDS)),
        }
    }
}

/// Most rounds `ESKIT_BENCH_ROUNDS` may ask for.
pub const MAX_ROUNDS: u32 = 15;

/// A benchmark failed: the store or the baseline returned an error.
#[derive(Debug)]
pub struct BenchError {
    /// The workload.
    pub workload: Workload,
    /// What failed.
    pub implementation: Impl,
    /// The error.
    pub source: BoxError,
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "workload {} ({}) failed",
            self.workload,
            self.implementation.as_str()
        )
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

type BaselineFactory =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Baseline>, BoxError>> + Send + Sync>;

/// The benchmark runner for one backend.
pub struct Bench {
    backend: String,
    store: Factory,
    baseline: Option<BaselineFactory>,
    executor: Arc<dyn Executor>,
    sizes: Sizes,
    workloads: Vec<Workload>,
}

impl fmt::Debug for Bench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bench")
            .field("backend", &self.backend)
            .field("sizes", &self.sizes)
            .field("workloads", &self.workloads)
            .finish_non_exhaustive()
    }
}

impl Bench {
    /// A runner for `backend`; `store` makes a fresh, empty store per
    /// workload (it needs a global reader for W6 and a snapshot store for W7).
    pub fn new<F, Fut, E>(backend: impl Into<String>, store: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Fixture, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self {
            backend: backend.into(),
            store: boxed_factory(store),
            baseline: None,
            executor: Arc::new(ThreadExecutor::new()),
            sizes: Sizes::from_env(),
            workloads: Workload::ALL.to_vec(),
        }
    }

    /// Measures a raw baseline beside the store; `baseline` makes a fresh,
    /// empty one per workload.
    #[must_use]
    pub fn baseline<F, Fut, E>(mut self, baseline: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Baseline>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.baseline = Some(Arc::new(move || {
            let fut = baseline();
            Box::pin(async move { fut.await.map_err(Into::into) })
        }));
        self
    }

    /// Runs on `executor` instead of threads.
    #[must_use]
    pub fn executor(mut self, executor: impl Executor) -> Self {
        self.executor = Arc::new(executor);
        self
    }

    /// Overrides the sizes (default: [`Sizes::from_env`]).
    #[must_use]
    pub fn sizes(mut self, sizes: Sizes) -> Self {
        self.sizes = sizes;
        self
    }

    /// Runs only these workloads.
    #[must_use]
    pub fn workloads(mut self, workloads: impl IntoIterator<Item = Workload>) -> Self {
        self.workloads = workloads.into_iter().collect();
        self
    }

    /// Runs the selected workloads, each on the store and then on the
    /// baseline, and returns the rows. W8 is skipped until subscriptions
    /// exist.
    ///
    /// # Errors
    /// [`BenchError`] for the first workload whose store or baseline failed.
    pub fn run(&self) -> Result<Vec<BenchRow>, BenchError> {
        let workloads: Vec<Workload> = self
            .workloads
            .iter()
            .copied()
            .filter(|w| *w != Workload::W8)
            .collect();
        // Rounds outside, workloads inside, eskit and baseline alternating:
        // a slow patch of the shared machine then hits every side of every
        // comparison alike. Each side keeps its median round.
        let mut stores: Vec<Vec<BenchRow>> = vec![Vec::new(); workloads.len()];
        let mut bases: Vec<Vec<BenchRow>> = vec![Vec::new(); workloads.len()];
        for _ in 0..self.sizes.rounds.max(1) {
            for (i, &w) in workloads.iter().enumerate() {
                stores[i].push(self.measure(w, Impl::Eskit)?);
                if self.baseline.is_some() {
                    bases[i].push(self.measure(w, Impl::Baseline)?);
                }
            }
        }
        let mut rows = Vec::new();
        for ((w, store_rounds), base_rounds) in workloads.into_iter().zip(stores).zip(bases) {
            let mut store = median_round(store_rounds).ok_or_else(|| BenchError {
                workload: w,
                implementation: Impl::Eskit,
                source: "no round ran".into(),
            })?;
            if let Some(mut b) = median_round(base_rounds) {
                store.ratio = Some(store.events_per_sec / b.events_per_sec);
                b.ratio = Some(1.0);
                rows.push(store);
                rows.push(b);
            } else {
                rows.push(store);
            }
        }
        Ok(rows)
    }

    /// Runs as the `main` of a `harness = false` bench target: takes
    /// `--workload W` (repeatable, or `ESKIT_BENCH_WORKLOAD`), prints the
    /// markdown table to stdout and appends JSON lines to the file named by
    /// `ESKIT_BENCH_JSON`. Other arguments (cargo passes `--bench`) are ignored.
    pub fn main(mut self) -> ExitCode {
        let mut err = std::io::stderr();
        match workloads_from_args() {
            Ok(Some(ws)) => self.workloads = ws,
            Ok(None) => {}
            Err(e) => {
                let _ = writeln!(err, "bench: {e}");
                return ExitCode::FAILURE;
            }
        }
        if self.workloads.contains(&Workload::W8) {
            let _ = writeln!(err, "bench: W8 (subscription latency) is not available yet");
        }
        let rows = match self.run() {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "bench {}: {}", self.backend, error_chain(&e));
                return ExitCode::FAILURE;
            }
        };
        let mut out = std::io::stdout();
        let _ = write!(out, "{}", markdown_table(&rows));
        if let Err(e) = append_json_lines(&rows) {
            let _ = writeln!(err, "bench: cannot write the JSON rows: {e}");
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    }

    fn measure(&self, w: Workload, which: Impl) -> Result<BenchRow, BenchError> {
        let fail = |source: BoxError| BenchError {
            workload: w,
            implementation: which,
            source,
        };
        let target = crate::executor::run(&*self.executor, async {
            Ok::<_, BoxError>(match which {
                Impl::Eskit => Target::Store(Box::new((self.store)().await?)),
                Impl::Baseline => match &self.baseline {
                    Some(f) => Target::Baseline(f().await?),
                    None => return Err("no baseline".into()),
                },
            })
        })
        .map_err(|e| fail(e.into()))?
        .map_err(fail)?;
        let run = Run {
            target: Arc::new(target),
            executor: Arc::clone(&self.executor),
            sizes: self.sizes,
        };
        let m = crate::executor::run(&*self.executor, run.workload(w))
            .map_err(|e| fail(e.into()))?
            .map_err(fail)?;
        Ok(m.into_row(&self.backend, w, which))
    }
}

/// The round with the median events/s.
/// The median round, carrying every round's events/s in run order.
fn median_round(rounds: Vec<BenchRow>) -> Option<BenchRow> {
    let in_order: Vec<f64> = rounds.iter().map(|r| r.events_per_sec).collect();
    let mut rounds = rounds;
    rounds.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
    let mid = rounds.len() / 2;
    (!rounds.is_empty()).then(|| {
        let mut row = rounds.swap_remove(mid);
        row.rounds = in_order;
        row
    })
}

enum Target {
    Store(Box<Fixture>),
    Baseline(Arc<dyn Baseline>),
}

struct Measured {
    ops: u64,
    events: u64,
    elapsed: Duration,
    latencies_us: Vec<f64>,
    conflicts: Option<(u64, u64)>,
}

impl Measured {
    fn into_row(mut self, backend: &str, workload: Workload, which: Impl) -> BenchRow {
        self.latencies_us.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            self.latencies_us[i.min(self.latencies_us.len() - 1)]
        };
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        BenchRow {
            backend: backend.to_owned(),
            workload,
            implementation: which,
            ops: self.ops,
            events: self.events,
            elapsed: self.elapsed,
            events_per_sec: self.events as f64 / secs,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            ratio: None,
            conflict_rate: self
                .conflicts
                .map(|(c, attempts)| c as f64 / attempts.max(1) as f64),
            rounds: Vec::new(),
        }
    }
}

/// Runs `op` until `max_ops` or the budget, recording each latency.
async fn timed<F, Fut>(budget: Duration, max_ops: u64, mut op: F) -> Result<Measured, BoxError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<u64, BoxError>>,
{
    let start = Instant::now();
    let mut latencies_us = Vec::with_capacity(max_ops.min(1 << 20) as usize);
    let (mut ops, mut events) = (0, 0);
    while ops < max_ops && (ops == 0 || start.elapsed() < budget) {
        let t = Instant::now();
        events += op(ops).await?;
        latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
        ops += 1;
    }
    Ok(Measured {
        ops,
        events,
        elapsed: start.elapsed(),
        latencies_us,
        conflicts: None,
    })
}

const WRITERS: u64 = 8;

struct Run {
    target: Arc<Target>,
    executor: Arc<dyn Executor>,
    sizes: Sizes,
}

fn stream(id: &str) -> Result<StreamName, BoxError> {
    Ok(StreamName::new("bench", id)?)
}

/// The event every workload writes: a JSON `OrderPlaced` of about 200 bytes,
/// the size and shape the Rust peers are usually measured with.
fn payload(i: u64) -> Vec<u8> {
    format!(
        "{{\"order_id\":\"order-{i:012}\",\"customer_id\":\"customer-{c:06}\",\
         \"items\":[{{\"sku\":\"SKU-{a:05}\",\"qty\":2,\"price_cents\":1999}},\
         {{\"sku\":\"SKU-{b:05}\",\"qty\":1,\"price_cents\":4999}}],\
         \"currency\":\"EUR\",\"placed_at\":\"2026-12-01T09:00:00Z\"}}",
        c = i % 1_000_000,
        a = i % 100_000,
        b = (i * 7) % 100_000,
    )
    .into_bytes()
}

/// The type name stored with every bench event.
const EVENT_TYPE: &str = "OrderPlaced";

fn new_events(ty: &EventType, first: u64, n: u64) -> Vec<NewEvent> {
    (first..first + n)
        .map(|i| NewEvent::new(ty.clone(), payload(i)))
        .collect()
}

fn payloads(first: u64, n: u64) -> Vec<Vec<u8>> {
    (first..first + n).map(payload).collect()
}

impl Run {
    async fn workload(self, w: Workload) -> Result<Measured, BoxError> {
        let s = self.sizes;
        match w {
            Workload::W1 => self.new_stream_appends(s.ops).await,
            Workload::W3 => self.appends("w3", 100, (s.ops / 10).max(1)).await,
            Workload::W2 => self.concurrent_appends().await,
            Workload::W4 => self.loads().await,
            Workload::W5 => self.contention().await,
            Workload::W6 => self.catch_up().await,
            Workload::W7 => self.snapshots().await,
            Workload::W8 => Err("W8 (subscription latency) is not available yet".into()),
        }
    }

    async fn append_one(
        &self,
        id: &str,
        first: u64,
        n: u64,
        expected: Option<u64>,
    ) -> Result<bool, BoxError> {
        match &*self.target {
            Target::Store(f) => {
                let ty = EventType::from_static(EVENT_TYPE)?;
                let exp = match expected {
                    None => ExpectedVersion::Any,
                    Some(0) => ExpectedVersion::NoStream,
                    Some(v) => ExpectedVersion::Exact(Version::new(v)),
                };
                match f
                    .events()
                    .append(
                        &stream(id)?,
                        exp,
                        new_events(&ty, first, n),
                        AppendOptions::new(),
                    )
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.is_conflict() => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Target::Baseline(b) => b.append(id, expected, &payloads(first, n)).await,
        }
    }

    /// W1: one event to a new stream each time, with the new-stream check
    /// (`ExpectedVersion::NoStream`; the baseline checks version 0).
    async fn new_stream_appends(&self, max_ops: u64) -> Result<Measured, BoxError> {
        // Every measurement gets a fresh store, so the names are new.
        timed(self.sizes.budget, max_ops, |i| async move {
            let id = format!("w1-{i}");
            if !self.append_one(&id, i, 1, Some(0)).await? {
                return Err(format!("the new stream {id} already existed").into());
            }
            Ok(1)
        })
        .await
    }

    async fn appends(&self, id: &str, batch: u64, max_ops: u64) -> Result<Measured, BoxError> {
        timed(self.sizes.budget, max_ops, |i| async move {
            self.append_one(id, i * batch, batch, None).await?;
            Ok(batch)
        })
        .await
    }

    async fn concurrent_appends(&self) -> Result<Measured, BoxError> {
        let per = (self.sizes.ops / WRITERS).max(1);
        let gate = Gate::new(WRITERS as usize);
        let start = Instant::now();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let me = Run {
                    target: Arc::clone(&self.target),
                    executor: Arc::clone(&self.executor),
                    sizes: self.sizes,
                };
                let gate = gate.clone();
                spawn(&*self.executor, async move {
                    gate.wait().await;
                    let id = format!("w2-{w}");
                    let id = id.as_str();
                    let me = &me;
                    timed(me.sizes.budget, per, |i| async move {
                        me.append_one(id, i, 1, None).await?;
                        Ok(1)
                    })
                    .await
                })
            })
            .collect();
        self.join(tasks, start).await
    }

    async fn join(
        &self,
        tasks: Vec<crate::executor::Task<Result<Measured, BoxError>>>,
        start: Instant,
    ) -> Result<Measured, BoxError> {
        let mut total = Measured {
            ops: 0,
            events: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
            conflicts: None,
        };
        for t in tasks {
            let m = t.await??;
            total.ops += m.ops;
            total.events += m.events;
            total.latencies_us.extend(m.latencies_us);
            if let Some((c, a)) = m.conflicts {
                let (tc, ta) = total.conflicts.unwrap_or((0, 0));
                total.conflicts = Some((tc + c, ta + a));
            }
        }
        total.elapsed = start.elapsed();
        Ok(total)
    }

    async fn loads(&self) -> Result<Measured, BoxError> {
        for b in 0..10 {
            self.append_one("w4", b * 100, 100, None).await?;
        }
        let max = (self.sizes.ops / 5).max(1);
        timed(self.sizes.budget, max, |_| async move {
            let n = match &*self.target {
                Target::Store(f) => f
                    .events()
                    .load(&stream("w4")?, LoadOptions::new())
                    .await?
                    .len(),
                Target::Baseline(b) => b.load("w4").await?,
            };
            if n != 1000 {
                return Err(format!("loaded {n} events, expected 1000").into());
            }
            Ok(n as u64)
        })
        .await
    }

    async fn contention(&self) -> Result<Measured, BoxError> {
        let per = (self.sizes.ops / 5 / WRITERS).max(1);
        let gate = Gate::new(WRITERS as usize);
        let attempts = Arc::new(AtomicU64::new(0));
        let conflicts = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|_| {
                let me = Run {
                    target: Arc::clone(&self.target),
                    executor: Arc::clone(&self.executor),
                    sizes: self.sizes,
                };
                let (gate, attempts, conflicts) =
                    (gate.clone(), Arc::clone(&attempts), Arc::clone(&conflicts));
                spawn(&*self.executor, async move {
                    gate.wait().await;
                    let (me, attempts, conflicts) = (&me, &attempts, &conflicts);
                    // One op is one useful append, including its retries.
                    timed(me.sizes.budget, per, |i| async move {
                        loop {
                            let v = match &*me.target {
                                Target::Store(f) => {
                                    f.events().stream_version(&stream("w5")?).await?.get()
                                }
                                Target::Baseline(b) => b.version("w5").await?,
                            };
                            attempts.fetch_add(1, Ordering::Relaxed);
                            if me.append_one("w5", i, 1, Some(v)).await? {
                                return Ok(1);
                            }
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .await
                })
            })
            .collect();
        let mut m = self.join(tasks, start).await?;
        m.conflicts = Some((
            conflicts.load(Ordering::Relaxed),
            attempts.load(Ordering::Relaxed),
        ));
        Ok(m)
    }

    async fn catch_up(&self) -> Result<Measured, BoxError> {
        let total = self.sizes.w6_events;
        let batch = 1000u64;
        let mut written = 0;
        while written < total {
            let n = batch.min(total - written);
            self.append_one(&format!("w6-{}", (written / batch) % 100), written, n, None)
                .await?;
            written += n;
        }
        let page = 1000usize;
        let mut read = 0u64;
        let start = Instant::now();
        let mut latencies_us = Vec::new();
        match &*self.target {
            Target::Store(f) => {
                let g = f.global().ok_or("W6 needs a global reader")?;
                let mut pager = GlobalPager::new(g, ReadOptions::from_start(page));
                loop {
                    let t = Instant::now();
                    let Some(batch) = pager.next_page().await? else {
                        break;
                    };
                    latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
                    read += batch.events.len() as u64;
                }
            }
            Target::Baseline(b) => {
                let mut from = 0u64;
                loop {
                    let t = Instant::now();
                    let positions = b.read_all(from, page).await?;
                    latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
                    read += positions.len() as u64;
                    match positions.last() {
                        Some(p) if positions.len() == page => from = p + 1,
                        _ => break,
                    }
                }
            }
        }
        if read != total {
            return Err(format!("read {read} events, expected {total}").into());
        }
        Ok(Measured {
            ops: latencies_us.len() as u64,
            events: read,
            elapsed: start.elapsed(),
            latencies_us,
            conflicts: None,
        })
    }

    async fn snapshots(&self) -> Result<Measured, BoxError> {
        let streams = 100u64;
        let state: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        for i in 0..streams {
            let id = format!("w7-{i}");
            match &*self.target {
                Target::Store(f) => {
                    let snaps = f.snapshots().ok_or("W7 needs a snapshot store")?;
                    snaps
                        .dyn_save(Snapshot {
                            stream: stream(&id)?,
                            version: Version::new(100),
                            schema_version: 1,
                            codec: "raw".into(),
                            state: state.clone(),
                            created_at: Timestamp::now(),
                        })
                        .await?;
                }
                Target::Baseline(b) => b.save_snapshot(&id, 100, &state).await?,
            }
        }
        let max = self.sizes.ops;
        timed(self.sizes.budget, max, |i| async move {
            let id = format!("w7-{}", i % streams);
            let len = match &*self.target {
                Target::Store(f) => {
                    let snaps = f.snapshots().ok_or("W7 needs a snapshot store")?;
                    snaps.dyn_load(&stream(&id)?).await?.map(|s| s.state.len())
                }
                Target::Baseline(b) => b.load_snapshot(&id).await?.map(|s| s.len()),
            };
            if len != Some(4096) {
                return Err(format!("snapshot of {id} has {len:?} bytes, expected 4096").into());
            }
            Ok(1)
        })
        .await
    }
}

/// Appends one JSON object per row to the file named by `ESKIT_BENCH_JSON`,
/// when it is set: the line protocol `cargo xtask bench` collects from every
/// bench target.
///
/// # Errors
/// The I/O error when the file cannot be opened or written.
pub fn append_json_lines(rows: &[BenchRow]) -> std::io::Result<()> {
    let Ok(path) = std::env::var("ESKIT_BENCH_JSON") else {
        return Ok(());
    };
    if path.is_empty() {
        return Ok(());
    }
    let lines: String = rows.iter().map(|r| r.to_json() + "\n").collect();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eskit_core::memory::{MemorySnapshotStore, MemoryStore};

    #[test]
    fn every_workload_runs_on_memory() -> Result<(), BenchError> {
        let rows = Bench::new("memory", || async {
            Ok::<_, BoxError>(
                Fixture::store(MemoryStore::new()).with_snapshots(MemorySnapshotStore::new()),
            )
        })
        .baseline(|| async {
            Ok::<_, BoxError>(Arc::new(MemoryBaseline::new()) as Arc<dyn Baseline>)
        })
        .sizes(Sizes {
            budget: Duration::from_secs(1),
            ops: 80,
            w6_events: 2_500,
            rounds: 3,
        })
        .run()?;
        assert_eq!(rows.len(), 14, "7 workloads x 2 implementations");
        for r in &rows {
            assert!(r.events > 0, "{r:?}");
            assert_eq!(r.rounds.len(), 3, "{r:?}");
            assert!(r.rounds.contains(&r.events_per_sec), "median round: {r:?}");
            assert!(r.ratio.is_some(), "{r:?}");
            let json = r.to_json();
            assert!(
                json.starts_with("{\"backend\":\"memory\",\"workload\":\"W"),
                "{json}"
            );
            assert!(json.contains("\"impl\":\""), "{json}");
        }
        let w6 = rows
            .iter()
            .find(|r| r.workload == Workload::W6)
            .map(|r| r.events);
        assert_eq!(w6, Some(2_500));
        assert!(
            rows.iter()
                .any(|r| r.workload == Workload::W5 && r.conflict_rate.is_some())
        );
        let table = markdown_table(&rows);
        assert!(table.lines().count() == 16, "{table}");
        Ok(())
    }

    #[test]
    fn parses_workloads() {
        assert_eq!(Workload::parse("w3"), Some(Workload::W3));
        assert_eq!(Workload::parse("W9"), None);
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn median_ratio_pairs_rounds() {
        let row = |rounds: Vec<f64>| BenchRow {
            backend: "b".into(),
            workload: Workload::W1,
            implementation: Impl::Eskit,
            ops: 1,
            events: 1,
            elapsed: Duration::from_secs(1),
            events_per_sec: 1.0,
            p50_us: 1.0,
            p99_us: 1.0,
            ratio: None,
            conflict_rate: None,
            rounds,
        };
        // Round by round the ratio is 2, 2 and 4; the medians of each side
        // alone would give 30/10 = 3.
        let a = row(vec![20.0, 60.0, 30.0]);
        let b = row(vec![10.0, 30.0, 7.5]);
        assert_eq!(median_ratio(&a, &b), Some(2.0));
        assert_eq!(median_ratio(&a, &row(Vec::new())), None);
        assert_eq!(median_ratio(&a, &row(vec![0.0])), None);
    }
}
