//! Subscription benchmarks on memory and SQLite, in the workspace's bench
//! protocol (a markdown table, JSON rows to `ESKIT_BENCH_JSON`):
//!
//! - **W8, commit-to-handler latency**: a live subscription; one event is
//!   appended at a time and the time from the start of the append call to
//!   the handler seeing the event is recorded (p50, p99). The append
//!   includes its commit, so this is what a caller of `append` waits for a
//!   projection to see.
//! - **W6 through a subscription**: catch-up of 100,000 events by a
//!   subscription with a no-op handler, next to the backend's raw read
//!   loop (`GlobalPager`, same page size) in the same round; the ratio is
//!   subscription / read loop.
//!
//! Rounds (`ESKIT_BENCH_ROUNDS`, default 5) alternate the two sides.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use eskit_core::{
    error::BoxError,
    event::{EventType, ExpectedVersion, NewEvent, RawEvent, StreamName},
    memory::{MemoryCheckpointStore, MemoryStore},
    store::{AppendOptions, CommitFeed, EventStore, GlobalPager, GlobalReader, ReadOptions},
};
use eskit_processor::{Subscription, SubscriptionOptions, SubscriptionState};
use eskit_sqlite::SqliteStore;
use eskit_testing::bench::{BenchRow, Impl, Workload, append_json_lines, markdown_table};
use tokio::sync::mpsc;

const CATCH_UP_EVENTS: u64 = 100_000;
const PAGE: usize = 500;
const LATENCY_SAMPLES: usize = 2_000;

fn rounds() -> usize {
    std::env::var("ESKIT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(5)
}

fn event(i: u64) -> Result<NewEvent, BoxError> {
    Ok(NewEvent::new(
        EventType::new("OrderPlaced")?,
        format!("{{\"order_id\":\"order-{i:012}\",\"amount_cents\":1999}}").into_bytes(),
    ))
}

async fn seed<S: EventStore>(store: &S, n: u64) -> Result<(), BoxError> {
    let mut i = 0;
    while i < n {
        let s = StreamName::new("order", format!("o-{}", i / 100))?;
        let batch = (i..(i + 100).min(n))
            .map(event)
            .collect::<Result<Vec<_>, _>>()?;
        i += batch.len() as u64;
        store
            .append(&s, ExpectedVersion::Any, batch, AppendOptions::new())
            .await?;
    }
    Ok(())
}

/// Seconds for the raw read loop to read everything.
async fn read_loop<S: GlobalReader>(store: &S) -> Result<Duration, BoxError> {
    let t = Instant::now();
    let mut pager = GlobalPager::new(store, ReadOptions::from_start(PAGE));
    let mut n = 0u64;
    while let Some(page) = pager.next_page().await? {
        n += page.events.len() as u64;
        std::hint::black_box(page);
    }
    if n != CATCH_UP_EVENTS {
        return Err(format!("read {n} events").into());
    }
    Ok(t.elapsed())
}

/// Seconds for a fresh subscription to catch up with everything.
async fn subscription_catch_up<S>(store: &S, round: usize) -> Result<Duration, BoxError>
where
    S: GlobalReader + CommitFeed + Clone + 'static,
{
    let options = SubscriptionOptions::new(format!("bench-{round}"))?.with_batch_size(PAGE)?;
    let sub = Subscription::new(
        store.clone(),
        MemoryCheckpointStore::new(),
        options,
        |events: &[RawEvent]| {
            std::hint::black_box(events);
            Ok(())
        },
    );
    let health = sub.health();
    let t = Instant::now();
    sub.run(async move {
        while health.snapshot().state != SubscriptionState::Live {
            tokio::task::yield_now().await;
        }
    })
    .await?;
    Ok(t.elapsed())
}

fn row(backend: &str, w: Workload, which: Impl, events: u64, elapsed: Duration) -> BenchRow {
    BenchRow {
        backend: backend.to_owned(),
        workload: w,
        implementation: which,
        ops: 1,
        events,
        elapsed,
        events_per_sec: events as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_us: elapsed.as_secs_f64() * 1e6,
        p99_us: elapsed.as_secs_f64() * 1e6,
        ratio: None,
        conflict_rate: None,
        rounds: Vec::new(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn catch_up_rows<S>(backend: &str, store: S) -> Result<Vec<BenchRow>, BoxError>
where
    S: EventStore + GlobalReader + CommitFeed + Clone + 'static,
{
    seed(&store, CATCH_UP_EVENTS).await?;
    let (mut sub, mut raw, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds() {
        let r = read_loop(&store).await?;
        let s = subscription_catch_up(&store, round).await?;
        raw.push(CATCH_UP_EVENTS as f64 / r.as_secs_f64());
        sub.push(CATCH_UP_EVENTS as f64 / s.as_secs_f64());
        ratios.push(r.as_secs_f64() / s.as_secs_f64());
    }
    let name = format!("{backend} (subscription vs read loop)");
    let (sub_rounds, raw_rounds) = (sub.clone(), raw.clone());
    let sub_eps = median(&mut sub);
    let raw_eps = median(&mut raw);
    let mut s = row(
        &name,
        Workload::W6,
        Impl::Eskit,
        CATCH_UP_EVENTS,
        Duration::from_secs_f64(CATCH_UP_EVENTS as f64 / sub_eps),
    );
    s.ratio = Some(median(&mut ratios));
    s.rounds = sub_rounds;
    let mut b = row(
        &name,
        Workload::W6,
        Impl::Baseline,
        CATCH_UP_EVENTS,
        Duration::from_secs_f64(CATCH_UP_EVENTS as f64 / raw_eps),
    );
    b.ratio = Some(1.0);
    b.rounds = raw_rounds;
    Ok(vec![s, b])
}

async fn latency_row<S>(backend: &str, store: S) -> Result<BenchRow, BoxError>
where
    S: EventStore + GlobalReader + CommitFeed + Clone + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let options = SubscriptionOptions::new("latency")?.with_batch_size(PAGE)?;
    let sub = Subscription::new(
        store.clone(),
        MemoryCheckpointStore::new(),
        options,
        move |events: &[RawEvent]| {
            let now = Instant::now();
            for _ in events {
                let _ = tx.send(now);
            }
            Ok(())
        },
    );
    let health = sub.health();
    let task = tokio::spawn(sub.run(std::future::pending()));
    while health.snapshot().state != SubscriptionState::Live {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let s = StreamName::new("order", "latency")?;
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    let start = Instant::now();
    for i in 0..LATENCY_SAMPLES as u64 {
        let t = Instant::now();
        store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![event(i)?],
                AppendOptions::new(),
            )
            .await?;
        let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await?
            .ok_or("the subscription stopped")?;
        samples.push(seen.saturating_duration_since(t).as_secs_f64() * 1e6);
    }
    let elapsed = start.elapsed();
    task.abort();
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    Ok(BenchRow {
        backend: backend.to_owned(),
        workload: Workload::W8,
        implementation: Impl::Eskit,
        ops: samples.len() as u64,
        events: samples.len() as u64,
        elapsed,
        events_per_sec: samples.len() as f64 / elapsed.as_secs_f64(),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        ratio: None,
        conflict_rate: None,
        rounds: Vec::new(),
    })
}

async fn all() -> Result<Vec<BenchRow>, BoxError> {
    let dir = std::env::temp_dir().join(format!("eskit-processor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    rows.push(latency_row("memory", MemoryStore::new()).await?);
    let sqlite = SqliteStore::open(dir.join("latency.db"))?;
    rows.push(latency_row("sqlite", sqlite.clone()).await?);
    sqlite.close().await;
    rows.extend(catch_up_rows("memory", MemoryStore::new()).await?);
    let sqlite = SqliteStore::open(dir.join("catch-up.db"))?;
    rows.extend(catch_up_rows("sqlite", sqlite.clone()).await?);
    sqlite.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench subscription: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = match rt.block_on(all()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench subscription: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", markdown_table(&rows));
    if let Err(e) = append_json_lines(&rows) {
        eprintln!("bench subscription: cannot write the JSON rows: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
