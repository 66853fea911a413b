//! RELIABILITY C6 on PostgreSQL: a transaction left open (idle in
//! transaction, holding a transaction id) on the same cluster holds back
//! every later commit. A subscription must stall without skipping, its
//! health must say it is behind (events and time), and everything must be
//! delivered once, in order, after the transaction ends.
//!
//! `ESKIT_C6_SECS` sets how long the transaction stays open (default 3;
//! the reliability figure is 60) and `ESKIT_C6_RUNS` how many stalls one
//! run goes through (default 1; the figure is 3).

mod common;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eskit_core::{
    error::BoxError,
    event::{EventId, EventType, ExpectedVersion, NewEvent, RawEvent, StreamName},
    store::{AppendOptions, EventStore},
};
use eskit_pg::{PgOptions, PgStore};
use eskit_processor::{Subscription, SubscriptionOptions};
use sqlx::Connection as _;

type TestResult = Result<(), BoxError>;

/// The longest wait for a subscription to deliver what it can.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<EventId>>>);

impl Log {
    fn ids(&self) -> Vec<EventId> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    async fn wait_for(&self, n: usize) -> Result<Duration, BoxError> {
        let start = Instant::now();
        while self.len() < n {
            if start.elapsed() > DELIVERY_DEADLINE {
                return Err(format!("{} of {n} events delivered", self.len()).into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(start.elapsed())
    }
}

async fn append_one(store: &PgStore, stream: &StreamName, n: u64) -> Result<EventId, BoxError> {
    let event = NewEvent::new(EventType::new("Ticked")?, n.to_string().into_bytes());
    let id = event.id();
    store
        .append(
            stream,
            ExpectedVersion::Any,
            vec![event],
            AppendOptions::new(),
        )
        .await?;
    Ok(id)
}

/// A running subscription's log, health, stop signal and task.
struct Running {
    log: Log,
    health: eskit_processor::HealthHandle,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), eskit_processor::SubscriptionError>>,
}

/// A subscription named `name` on `reader`, logging the ids it is handed,
/// running until `stop` is used (or dropped).
fn subscribe(reader: &PgStore, name: &str) -> Result<Running, BoxError> {
    let log = Log::default();
    let sink = log.clone();
    let sub = Subscription::new(
        reader.clone(),
        reader.checkpoints(),
        SubscriptionOptions::new(name)?.with_poll_interval(Duration::from_millis(50))?,
        move |events: &[RawEvent]| {
            sink.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(events.iter().map(|e| e.id));
            Ok(())
        },
    );
    let health = sub.health();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sub.run(async move {
        let _ = stopped.await;
    }));
    Ok(Running {
        log,
        health,
        stop,
        task,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c6_an_open_transaction_stalls_readers_and_their_health_says_so() -> TestResult {
    let stall = Duration::from_secs(env_number("ESKIT_C6_SECS", 3).max(1));
    let runs = env_number("ESKIT_C6_RUNS", 1).max(1);
    let url = common::url()?;
    let schema = common::fresh_schema("c6");
    // Writer and reader are separate handles, as separate processes
    // would be: a handle's own reads wait for its own writes.
    let writer = PgStore::connect(PgOptions::new(url.clone()).with_schema(&schema)).await?;
    let reader = PgStore::connect(PgOptions::new(url.clone()).with_schema(&schema)).await?;
    let Running {
        log,
        health,
        stop,
        task,
    } = subscribe(&reader, "c6")?;

    let stream = StreamName::new("clock", "c-1")?;
    let mut appended = Vec::new();
    for n in 0..10 {
        appended.push(append_one(&writer, &stream, n).await?);
    }
    log.wait_for(appended.len()).await?;

    for run in 1..=runs {
        let mut long = sqlx::PgConnection::connect(&url).await?;
        sqlx::query("BEGIN").execute(&mut long).await?;
        // A transaction id, as any transaction that writes has.
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut long)
            .await?;
        let before = log.len();
        let started = Instant::now();
        let mut during = 0u64;
        while started.elapsed() < stall {
            appended.push(append_one(&writer, &stream, appended.len() as u64).await?);
            during += 1;
            tokio::time::sleep(stall / 20).await;
        }
        // Past the last append's announcement and one poll.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let delivered_during = log.len() - before;
        let seen = health.snapshot();
        sqlx::query("ROLLBACK").execute(&mut long).await?;
        let caught_up_in = log.wait_for(appended.len()).await?;
        println!(
            "c6 (postgres): run {run}: open {:.1} s, {during} events appended meanwhile, \
             {delivered_during} delivered meanwhile, health said {} events and {:.1} s behind; \
             all delivered {} ms after the transaction ended",
            started.elapsed().as_secs_f64(),
            seen.lag_events,
            seen.lag.as_secs_f64(),
            caught_up_in.as_millis()
        );
        assert_eq!(
            delivered_during, 0,
            "events delivered past a transaction still open"
        );
        assert!(
            seen.lag_events >= during,
            "health said {} events behind while {during} were held back",
            seen.lag_events
        );
        assert!(
            seen.lag >= stall / 2,
            "health said {:?} behind after a stall of {stall:?}",
            seen.lag
        );
        drop(long);
    }
    assert_eq!(
        log.ids(),
        appended,
        "every event once, in append order (none skipped, none twice)"
    );
    // Live again: nothing held back any more.
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    loop {
        let h = health.snapshot();
        if h.lag_events == 0 && h.lag == Duration::ZERO {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health still says {} events and {:?} behind after catching up",
            h.lag_events,
            h.lag
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    task.await??;
    writer.close().await;
    reader.close().await;
    Ok(())
}

/// Another tenant's commits are no lag for a tenant's subscription: the
/// schema's feed announces them, but its reads never see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_commits_are_no_lag() -> TestResult {
    use eskit_core::{event::TenantId, store::TenantScoped};
    let url = common::url()?;
    let schema = common::fresh_schema("c6tenant");
    let writer = PgStore::connect(PgOptions::new(url.clone()).with_schema(&schema)).await?;
    let reader = PgStore::connect(PgOptions::new(url).with_schema(&schema)).await?;
    let (a, b) = (TenantId::new("tenant-a")?, TenantId::new("tenant-b")?);
    let mine = reader.for_tenant(a.clone());
    let Running {
        log,
        health,
        stop,
        task,
    } = subscribe(&mine, "c6-tenant")?;
    let stream = StreamName::new("clock", "c-1")?;
    let own = append_one(&writer.for_tenant(a), &stream, 0).await?;
    log.wait_for(1).await?;
    let others = writer.for_tenant(b);
    let theirs = StreamName::new("clock", "c-2")?;
    for n in 0..20 {
        append_one(&others, &theirs, n).await?;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let h = health.snapshot();
    assert_eq!(log.ids(), vec![own], "the tenant's own event only");
    assert_eq!(
        (h.lag_events, h.lag),
        (0, Duration::ZERO),
        "another tenant's 20 commits reported as lag"
    );
    let _ = stop.send(());
    task.await??;
    writer.close().await;
    reader.close().await;
    Ok(())
}
