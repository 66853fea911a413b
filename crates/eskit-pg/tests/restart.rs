//! RELIABILITY B4 on PostgreSQL: the server crashes under load.
//!
//! A private cluster (this test's own, since it kills it) takes appends
//! from 4 writers while 2 subscriptions follow the log with their
//! checkpoints in the store, and a processor keeps a read model. Each
//! cycle: load, `pg_ctl stop -m immediate`, 2 s down, start again on the
//! same data directory and port.
//!
//! - Writers append with an idempotency key and an exact expected version;
//!   an append whose outcome is unknown (`StoreError::is_outcome_unknown`)
//!   is retried with the same key, events and ids until it is acknowledged.
//!   In the end every acknowledged event is in the log exactly once, and
//!   the log holds nothing else.
//! - Subscription `through` runs across every crash (its retry policy
//!   outlasts the outage); subscription `restarted` is dropped at each
//!   crash, as if its process died too, and started again from its stored
//!   checkpoint half a cycle after the server is back, with a backlog.
//!   Each delivers the whole log in cursor order: 0 skipped, 0 reordered,
//!   at most one page again per run, and reports its commit feed working
//!   again at the end (the LISTEN connection reconnected).
//! - The subscriptions read through a store of their own, as another
//!   process would; how soon its LISTEN feed hears commits again after
//!   each restart is printed.
//! - A processor (a leader-elected subscription, its lease an advisory
//!   lock, feeding a read model through the store's exactly-once sink)
//!   loses its lease with each crash, takes it again, and in the end has
//!   applied every event of the log exactly once.
//! - Every writer has an acknowledged append again soon after the server
//!   is back; the figure is printed, and only a generous hang guard is
//!   asserted (machines here are shared).
//!
//! `ESKIT_B4_CYCLES` sets the cycles (default 3), `ESKIT_B4_LOAD_SECS` the
//! load before each crash (default 10; RELIABILITY's full run is 60).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::PrivateCluster;
use eskit_core::error::BoxError;
use eskit_core::event::{
    EventId, EventType, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName, Version,
};
use eskit_core::handler::RetryPolicy;
use eskit_core::store::{
    AppendOptions, BoxFuture, CommitFeed, EventStore, GlobalPager, ReadOptions,
};
use eskit_pg::{PgOptions, PgProjection, PgStore};
use eskit_processor::{Subscription, SubscriptionError, SubscriptionOptions};
use sqlx::PgConnection;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

const WRITERS: usize = 4;
/// Streams each writer spreads its appends over.
const STREAMS_PER_WRITER: u64 = 8;
/// Events per append cycle through 1..=MAX_EVENTS_PER_APPEND.
const MAX_EVENTS_PER_APPEND: u64 = 3;
/// A subscription's page, and its checkpoint interval in events.
const PAGE: usize = 100;
const DEFAULT_CYCLES: u32 = 3;
const DEFAULT_LOAD_SECS: u64 = 10;
/// How long the server stays down in each cycle.
const DOWN: Duration = Duration::from_secs(2);
/// The pause before retrying an append that failed transiently.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Longest one append may go unacknowledged (a hang guard).
const APPEND_GUARD: Duration = Duration::from_secs(120);
/// Longest a writer may go without an acknowledgement after the server
/// is back (a hang guard, not the goal: the goal's figure is printed).
const RECOVERY_GUARD: Duration = Duration::from_secs(60);
/// Longest the subscriptions may take to deliver the whole log at the end.
const CATCH_UP_GUARD: Duration = Duration::from_secs(120);
/// Load after the last restart, so writers and subscriptions show they
/// work on the restarted server.
const SETTLE: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            #[allow(clippy::print_stdout)]
            {
                println!("restart: 1 passed, 0 failed");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("restart (B4, postgres): {e}");
                eprintln!("restart: 0 passed, 1 failed");
            }
            ExitCode::FAILURE
        }
    }
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name} must be a whole number, not {v:?}").into()),
        Err(_) => Ok(default),
    }
}

#[allow(clippy::print_stdout)]
fn say(line: &str) {
    println!("b4 (postgres): {line}");
}

/// One acknowledged append.
struct Ack {
    ids: Vec<EventId>,
    at: Instant,
}

#[derive(Default)]
struct WriterReport {
    acks: Vec<Ack>,
    /// Failed attempts whose outcome was unknown.
    unknown: u64,
    /// Appends acknowledged as already applied (`deduplicated`) on a retry:
    /// an unknown outcome that had in fact committed.
    resolved_applied: u64,
    /// Appends acknowledged on a retry that wrote them then.
    resolved_fresh: u64,
    /// The kinds of transient errors seen, with a count.
    errors: BTreeMap<String, u64>,
}

/// The first words of an error chain, to group what writers saw.
fn kind(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s.chars().take(120).collect()
}

async fn writer(store: PgStore, w: usize, stop: Arc<AtomicBool>) -> Result<WriterReport> {
    let ty = EventType::new("Written")?;
    let mut report = WriterReport::default();
    let mut versions: HashMap<u64, u64> = HashMap::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        seq += 1;
        let slot = seq % STREAMS_PER_WRITER;
        let stream = StreamName::new("b4", format!("w{w}-s{slot}"))?;
        let version = versions.get(&slot).copied().unwrap_or(0);
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(Version::new(version))
        };
        let events: Vec<NewEvent> = (0..1 + seq % MAX_EVENTS_PER_APPEND)
            .map(|i| NewEvent::new(ty.clone(), format!("{w}:{seq}:{i}").into_bytes()))
            .collect();
        let ids: Vec<EventId> = events.iter().map(NewEvent::id).collect();
        let key = format!("w{w}-{seq}");
        let started = Instant::now();
        let mut retried = false;
        loop {
            let options = AppendOptions::new().with_idempotency_key(key.clone());
            match store
                .append(&stream, expected, events.clone(), options)
                .await
            {
                Ok(r) => {
                    let got: Vec<EventId> = r.records.iter().map(|rec| rec.id).collect();
                    if got != ids {
                        return Err(format!(
                            "writer {w}: append {key} was acknowledged with other event ids"
                        )
                        .into());
                    }
                    if retried {
                        if r.deduplicated {
                            report.resolved_applied += 1;
                        } else {
                            report.resolved_fresh += 1;
                        }
                    } else if r.deduplicated {
                        return Err(format!(
                            "writer {w}: the first attempt of {key} was deduplicated"
                        )
                        .into());
                    }
                    versions.insert(slot, r.last_version().get());
                    report.acks.push(Ack {
                        ids,
                        at: Instant::now(),
                    });
                    break;
                }
                Err(e) if e.is_transient() => {
                    if e.is_outcome_unknown() {
                        report.unknown += 1;
                    }
                    *report.errors.entry(kind(&e)).or_default() += 1;
                    if started.elapsed() > APPEND_GUARD {
                        return Err(format!(
                            "writer {w}: append {key} still failing after {APPEND_GUARD:?}: {}",
                            kind(&e)
                        )
                        .into());
                    }
                    retried = true;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    return Err(format!(
                        "writer {w}: append {key} failed with a non-transient error: {}",
                        kind(&e)
                    )
                    .into());
                }
            }
        }
    }
    Ok(report)
}

/// How long after `back` the store's commit feed wakes a listener again:
/// with the writers busy, that is the feed repaired (or a commit heard over
/// a repaired connection). The reports of the breakage are skipped.
async fn feed_back(store: PgStore, back: Instant) -> Result<Duration> {
    let mut listener = store.listen()?;
    loop {
        match tokio::time::timeout(RECOVERY_GUARD, listener.changed()).await {
            Ok(Ok(_)) if !listener.is_broken() => return Ok(back.elapsed()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_retryable() => {}
            Ok(Err(e)) => return Err(format!("the commit feed failed: {e}").into()),
            Err(_) => {
                return Err(format!(
                    "the commit feed heard nothing within {RECOVERY_GUARD:?} of a restart"
                )
                .into());
            }
        }
    }
}

/// What a subscription delivered: one list per run, in delivery order.
type Deliveries = Arc<Mutex<Vec<Vec<(GlobalCursor, EventId)>>>>;

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| "a lock was poisoned".into())
}

/// How a subscription's runs went: the restarts after a failed run, and
/// whether its last run's health reported the commit feed working.
struct Followed {
    restarts: u64,
    feed_ok: bool,
}

/// Runs one subscription until `shutdown` turns true; a run that fails
/// with a transient store error is started again from its checkpoint (as
/// a supervisor would), and counted.
async fn follow(
    store: PgStore,
    name: &'static str,
    log: Deliveries,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Followed> {
    let mut restarts = 0u64;
    loop {
        lock(&log)?.push(Vec::new());
        let sink = Arc::clone(&log);
        // Patient enough to outlast the outage without a restart.
        let retry = RetryPolicy::new(200)?
            .with_base_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_millis(500));
        let options = SubscriptionOptions::new(name)?
            .with_batch_size(PAGE)?
            .with_checkpoint_every(PAGE as u64)?
            .with_retry(retry);
        let sub = Subscription::new(
            store.clone(),
            store.checkpoints(),
            options,
            move |events: &[RawEvent]| {
                let mut runs = sink.lock().map_err(|_| "a lock was poisoned")?;
                if let Some(run) = runs.last_mut() {
                    run.extend(events.iter().map(|e| (e.cursor(), e.id)));
                }
                Ok(())
            },
        );
        let health = sub.health();
        let mut stop = shutdown.clone();
        let result = sub
            .run(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        match result {
            Ok(()) => {
                return Ok(Followed {
                    restarts,
                    feed_ok: health.snapshot().feed_ok,
                });
            }
            Err(SubscriptionError::Store(e)) if e.is_transient() && !*shutdown.borrow() => {
                say(&format!(
                    "subscription {name} stopped ({}); restarting it",
                    kind(&e)
                ));
                restarts += 1;
            }
            Err(e) => return Err(format!("subscription {name} failed: {}", kind(&e)).into()),
        }
        if *shutdown.borrow_and_update() {
            return Ok(Followed {
                restarts,
                feed_ok: health.snapshot().feed_ok,
            });
        }
    }
}

/// The processor's read model, in the store's database: a row per event
/// applied, written in the transaction that also stores the sink's cursor.
struct Applied;

/// The read model's table (no key: an event applied twice would show).
const MODEL_TABLE: &str = "public.b4_applied";

impl PgProjection for Applied {
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, std::result::Result<(), BoxError>> {
        Box::pin(async move {
            let ids: Vec<Vec<u8>> = events.iter().map(|e| e.id.to_bytes().to_vec()).collect();
            sqlx::query(&format!(
                "INSERT INTO {MODEL_TABLE} (id) SELECT unnest($1::bytea[])"
            ))
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }
}

/// What the processor went through: runs that ended on a lost leader
/// lease, and on a transient store error.
#[derive(Debug, Default)]
struct ProcessorReport {
    leases_lost: u64,
    restarts: u64,
}

/// The processor: a leader-elected subscription (advisory-lock lease)
/// feeding [`Applied`] through the store's exactly-once sink. A run that
/// loses its lease (its session died with the server) or fails transiently
/// is started again, as a supervisor would.
async fn process(
    store: PgStore,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<ProcessorReport> {
    let mut report = ProcessorReport::default();
    loop {
        let retry = RetryPolicy::new(200)?
            .with_base_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_millis(500));
        let options = SubscriptionOptions::new("model")?
            .with_batch_size(PAGE)?
            .with_retry(retry);
        let sub = Subscription::with_sink(store.clone(), store.projection_sink(Applied), options)
            .with_leader(store.locks());
        let mut stop = shutdown.clone();
        let result = sub
            .run(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        match result {
            Ok(()) => return Ok(report),
            Err(SubscriptionError::LeaseLost(_)) => report.leases_lost += 1,
            Err(SubscriptionError::Store(e)) if e.is_transient() => {
                say(&format!(
                    "the processor stopped ({}); restarting it",
                    kind(&e)
                ));
                report.restarts += 1;
            }
            Err(e) => return Err(format!("the processor failed: {}", kind(&e)).into()),
        }
        if *shutdown.borrow_and_update() {
            return Ok(report);
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Checks the processor's read model: every event of the log applied
/// exactly once.
async fn check_model(store: &PgStore, log: &[RawEvent]) -> Result<String> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(&format!("SELECT id FROM {MODEL_TABLE}"))
        .fetch_all(store.pool())
        .await?;
    let mut count: HashMap<Vec<u8>, usize> = HashMap::with_capacity(rows.len());
    for id in rows {
        *count.entry(id).or_default() += 1;
    }
    let twice = count.values().filter(|n| **n > 1).count();
    let missing = log
        .iter()
        .filter(|e| !count.contains_key(e.id.to_bytes().as_slice()))
        .count();
    let extra = count.len() + missing - log.len();
    let summary = format!(
        "processor read model: {} events applied, {missing} missing, {twice} applied twice, \
         {extra} not in the log",
        count.values().sum::<usize>()
    );
    if twice > 0 || missing > 0 || extra > 0 {
        return Err(summary.into());
    }
    Ok(summary)
}

/// Waits until the read model holds `n` rows (or the guard passes).
async fn wait_for_model(store: &PgStore, n: usize) -> Result<()> {
    let deadline = Instant::now() + CATCH_UP_GUARD;
    loop {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {MODEL_TABLE}"))
            .fetch_one(store.pool())
            .await?;
        if usize::try_from(rows).is_ok_and(|r| r >= n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the processor applied {rows} of {n} events within {CATCH_UP_GUARD:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks what one subscription delivered against the log.
fn check_deliveries(
    name: &str,
    runs: &[Vec<(GlobalCursor, EventId)>],
    log: &[RawEvent],
) -> Result<String> {
    let expected: Vec<EventId> = log.iter().map(|e| e.id).collect();
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut first_order: Vec<EventId> = Vec::with_capacity(expected.len());
    let mut redelivered = 0usize;
    let mut worst = 0usize;
    let mut reordered = 0usize;
    for run in runs {
        let mut again = 0usize;
        let mut last: Option<GlobalCursor> = None;
        for (cursor, id) in run {
            if last.is_some_and(|l| *cursor <= l) {
                reordered += 1;
            }
            last = Some(*cursor);
            if seen.insert(*id) {
                first_order.push(*id);
            } else {
                again += 1;
            }
        }
        redelivered += again;
        worst = worst.max(again);
    }
    let skipped = expected.iter().filter(|id| !seen.contains(id)).count();
    let unknown = seen.len() + skipped - expected.len();
    if first_order != expected {
        reordered += 1;
    }
    let summary = format!(
        "subscription {name}: {} runs, {} delivered, {skipped} skipped, {reordered} reordered, \
         {unknown} not in the log, {redelivered} redelivered (at most {worst} in one run, a page \
         is {PAGE})",
        runs.len(),
        runs.iter().map(Vec::len).sum::<usize>(),
    );
    if skipped > 0 || reordered > 0 || unknown > 0 || worst > PAGE {
        return Err(summary.into());
    }
    Ok(summary)
}

/// Checks the log: every acknowledged event exactly once, nothing else,
/// and each stream's versions 1, 2, 3, ... in cursor order.
fn check_log(reports: &[WriterReport], log: &[RawEvent]) -> Result<String> {
    let mut count: HashMap<EventId, usize> = HashMap::with_capacity(log.len());
    for e in log {
        *count.entry(e.id).or_default() += 1;
    }
    let acked: Vec<EventId> = reports
        .iter()
        .flat_map(|r| r.acks.iter().flat_map(|a| a.ids.iter().copied()))
        .collect();
    let missing = acked.iter().filter(|id| !count.contains_key(id)).count();
    let twice = count.values().filter(|n| **n > 1).count();
    let acked_set: HashSet<EventId> = acked.iter().copied().collect();
    let unacked = count.keys().filter(|id| !acked_set.contains(id)).count();
    let mut versions: HashMap<&StreamName, u64> = HashMap::new();
    let mut out_of_order = 0usize;
    for e in log {
        let v = versions.entry(&e.stream).or_default();
        if e.version.get() != *v + 1 {
            out_of_order += 1;
        }
        *v = e.version.get();
    }
    let summary = format!(
        "log: {} events, {} acknowledged, {missing} acknowledged but missing, {twice} present \
         twice, {unacked} not acknowledged, {out_of_order} out of stream order",
        log.len(),
        acked.len()
    );
    if missing > 0 || twice > 0 || unacked > 0 || out_of_order > 0 || acked.len() != log.len() {
        return Err(summary.into());
    }
    Ok(summary)
}

fn run() -> Result<()> {
    let cycles = env_number("ESKIT_B4_CYCLES", u64::from(DEFAULT_CYCLES))?;
    let load = Duration::from_secs(env_number("ESKIT_B4_LOAD_SECS", DEFAULT_LOAD_SECS)?);
    let cluster = PrivateCluster::start(&[])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let store = rt.block_on(PgStore::connect(
        PgOptions::new(cluster.url()).with_schema("b4"),
    ))?;
    // The subscriptions read through a store of their own, as another
    // process would: they hear the writers' commits only through LISTEN.
    let reader = rt.block_on(PgStore::connect(
        PgOptions::new(cluster.url()).with_schema("b4"),
    ))?;
    rt.block_on(
        sqlx::query(&format!("CREATE TABLE {MODEL_TABLE} (id bytea NOT NULL)"))
            .execute(reader.pool()),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| rt.spawn(writer(store.clone(), w, Arc::clone(&stop))))
        .collect();
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let through: Deliveries = Arc::default();
    let restarted: Deliveries = Arc::default();
    let through_task = rt.spawn(follow(
        reader.clone(),
        "through",
        Arc::clone(&through),
        shutdown_rx.clone(),
    ));
    let spawn_restarted = || {
        rt.spawn(follow(
            reader.clone(),
            "restarted",
            Arc::clone(&restarted),
            shutdown_rx.clone(),
        ))
    };
    let mut restarted_task = Some(spawn_restarted());
    let processor = rt.spawn(process(reader.clone(), shutdown_rx.clone()));
    let started = Instant::now();
    let mut backs = Vec::new();
    let mut feeds = Vec::new();
    for cycle in 1..=cycles {
        // The restarted subscription comes back half a cycle after the
        // server, so it resumes from its checkpoint with a backlog.
        std::thread::sleep(load / 2);
        if restarted_task.is_none() {
            restarted_task = Some(spawn_restarted());
        }
        std::thread::sleep(load - load / 2);
        if let Some(w) = writers.iter().position(|w| w.is_finished()) {
            return Err(format!("writer {w} ended during cycle {cycle}").into());
        }
        // Its process "dies" with the server.
        if let Some(task) = restarted_task.take() {
            task.abort();
            let _ = rt.block_on(task);
        }
        cluster.stop_immediate()?;
        std::thread::sleep(DOWN);
        cluster.start_again()?;
        let back = Instant::now();
        backs.push(back);
        feeds.push(rt.spawn(feed_back(reader.clone(), back)));
        say(&format!("cycle {cycle}: crashed, down {DOWN:?}, back"));
    }
    let restarted_task = restarted_task.unwrap_or_else(spawn_restarted);
    std::thread::sleep(SETTLE);
    stop.store(true, Ordering::Release);
    let mut reports = Vec::new();
    for (w, task) in writers.into_iter().enumerate() {
        reports.push(
            rt.block_on(task)
                .map_err(|e| format!("writer {w} panicked or was cancelled: {e}"))??,
        );
    }
    let mut worst_feed = Duration::ZERO;
    for (n, task) in feeds.into_iter().enumerate() {
        let d = rt
            .block_on(task)
            .map_err(|e| format!("the feed check of restart {} panicked: {e}", n + 1))??;
        worst_feed = worst_feed.max(d);
    }
    let mut worst_recovery = Duration::ZERO;
    for (n, back) in backs.iter().enumerate() {
        for (w, r) in reports.iter().enumerate() {
            let first = r.acks.iter().find(|a| a.at >= *back).map(|a| a.at - *back);
            match first {
                Some(d) if d <= RECOVERY_GUARD => worst_recovery = worst_recovery.max(d),
                Some(d) => {
                    return Err(format!(
                        "writer {w} needed {d:?} after restart {} (hang guard {RECOVERY_GUARD:?})",
                        n + 1
                    )
                    .into());
                }
                None => {
                    return Err(
                        format!("writer {w} acknowledged nothing after restart {}", n + 1).into(),
                    );
                }
            }
        }
    }
    let log: Vec<RawEvent> =
        rt.block_on(GlobalPager::new(&store, ReadOptions::from_start(1000)).collect())?;
    // Wait until both subscriptions delivered the whole log.
    let deadline = Instant::now() + CATCH_UP_GUARD;
    for (name, deliveries) in [("through", &through), ("restarted", &restarted)] {
        loop {
            let seen: HashSet<EventId> = lock(deliveries)?
                .iter()
                .flat_map(|run| run.iter().map(|(_, id)| *id))
                .collect();
            if log.iter().all(|e| seen.contains(&e.id)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "subscription {name} did not deliver the whole log within {CATCH_UP_GUARD:?}"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    rt.block_on(wait_for_model(&reader, log.len()))?;
    let _ = shutdown.send(true);
    let processed = rt
        .block_on(processor)
        .map_err(|e| format!("the processor panicked: {e}"))??;
    let through_runs = rt
        .block_on(through_task)
        .map_err(|e| format!("subscription through panicked: {e}"))??;
    let restarted_runs = rt
        .block_on(restarted_task)
        .map_err(|e| format!("subscription restarted panicked: {e}"))??;
    let unknown: u64 = reports.iter().map(|r| r.unknown).sum();
    let applied: u64 = reports.iter().map(|r| r.resolved_applied).sum();
    let fresh: u64 = reports.iter().map(|r| r.resolved_fresh).sum();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in &reports {
        for (k, n) in &r.errors {
            *errors.entry(k.clone()).or_default() += n;
        }
    }
    say(&format!(
        "{cycles} cycles ({load:?} load each) in {:.1?}; {WRITERS} writers",
        started.elapsed()
    ));
    say(&format!(
        "{unknown} attempts with an unknown outcome; retried with the same key: {applied} had \
         committed (deduplicated), {fresh} were written by the retry"
    ));
    for (k, n) in &errors {
        say(&format!("  {n} x {k}"));
    }
    say(&format!(
        "writers acknowledged again at most {worst_recovery:.2?} after the server was back"
    ));
    say(&format!(
        "the subscriptions' store heard a commit over LISTEN again at most {worst_feed:.2?} \
         after the server was back"
    ));
    let log_summary = check_log(&reports, &log);
    let through_summary = check_deliveries("through", &lock(&through)?, &log);
    let restarted_summary = check_deliveries("restarted", &lock(&restarted)?, &log);
    say(&format!(
        "subscription restarts after a failed run: through {}, restarted {} (besides the \
         {cycles} deliberate ones); feed reported working at the end: through {}, restarted {}",
        through_runs.restarts,
        restarted_runs.restarts,
        through_runs.feed_ok,
        restarted_runs.feed_ok,
    ));
    say(&format!(
        "processor runs ended by a lost leader lease: {}, by a store error: {}",
        processed.leases_lost, processed.restarts
    ));
    let model_summary = rt.block_on(check_model(&reader, &log));
    let mut failed = Vec::new();
    if !through_runs.feed_ok || !restarted_runs.feed_ok {
        failed.push("a subscription's health reports the repaired commit feed down".to_owned());
    }
    for s in [
        log_summary,
        through_summary,
        restarted_summary,
        model_summary,
    ] {
        match s {
            Ok(line) => say(&line),
            Err(e) => {
                say(&format!("FAILED {e}"));
                failed.push(e.to_string());
            }
        }
    }
    if !failed.is_empty() {
        return Err(failed.join("; ").into());
    }
    rt.block_on(async {
        store.close().await;
        reader.close().await;
    });
    Ok(())
}
