//! RELIABILITY C2 (at-least-once) on PostgreSQL: a subscriber process is
//! killed with SIGKILL at random points, again and again, while events are
//! appended; each new process resumes from its checkpoint in the store's
//! schema. Nothing is lost, and each kill redelivers at most one checkpoint
//! interval (here one page).
//!
//! The child is this same binary, started with `ESKIT_C2_CHILD_DIR` (where
//! it logs) and `ESKIT_C2_SCHEMA` set: it runs the subscription and appends
//! the position of every event it handles to a log file (written before the
//! checkpoint, as a side effect would be). `ESKIT_C2_KILLS` sets the number
//! of kills (default 50). The server comes from `ESKIT_PG_URL`.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use eskit_core::{
    event::{EventType, ExpectedVersion, NewEvent, RawEvent, StreamName},
    store::{AppendOptions, EventStore, GlobalPager, ReadOptions},
};
use eskit_pg::{PgOptions, PgStore};
use eskit_processor::{Subscription, SubscriptionOptions, SubscriptionState};

const PAGE: usize = 100;
const SEED_EVENTS: u64 = 10_000;
const EVENTS_PER_ROUND: u64 = 1_000;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn connect(schema: &str) -> Result<PgStore> {
    Ok(PgStore::connect(PgOptions::new(common::url()?).with_schema(schema)).await?)
}

fn main() -> ExitCode {
    let outcome = match std::env::var_os("ESKIT_C2_CHILD_DIR") {
        Some(dir) => match std::env::var("ESKIT_C2_SCHEMA") {
            Ok(schema) => child(
                Path::new(&dir),
                &schema,
                std::env::var_os("ESKIT_C2_FINAL").is_some(),
            ),
            Err(_) => Err("ESKIT_C2_SCHEMA is not set for the child".into()),
        },
        None => parent(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("kill_resume (postgres): {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs the subscription until killed (or, with `last`, until caught up).
fn child(dir: &Path, schema: &str, last: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = connect(schema).await?;
        // `&File` writes, so the handler needs no lock of its own.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("handled.log"))?;
        // Each run's lines start after a marker, so the parent can count
        // what each kill made the next run deliver again.
        (&log).write_all(b"#\n")?;
        let options = SubscriptionOptions::new("c2")?
            .with_batch_size(PAGE)?
            .with_checkpoint_every(PAGE as u64)?;
        let sub = Subscription::new(
            store.clone(),
            store.checkpoints(),
            options,
            move |events: &[RawEvent]| {
                let mut lines = String::new();
                for e in events {
                    lines.push_str(&e.position.to_string());
                    lines.push('\n');
                }
                (&log).write_all(lines.as_bytes())?;
                // A side effect that takes a while: the kill often lands
                // between it and the checkpoint.
                std::thread::sleep(Duration::from_millis(2));
                Ok(())
            },
        );
        let health = sub.health();
        if last {
            sub.run(async move {
                while health.snapshot().state != SubscriptionState::Live {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await?;
        } else {
            sub.run(std::future::pending()).await?;
        }
        Ok(())
    })
}

fn spawn_child(dir: &Path, schema: &str, last: bool) -> Result<std::process::Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env("ESKIT_C2_CHILD_DIR", dir)
        .env("ESKIT_C2_SCHEMA", schema)
        .stdin(Stdio::null());
    if last {
        cmd.env("ESKIT_C2_FINAL", "1");
    }
    Ok(cmd.spawn()?)
}

/// Longest a child may take to connect and start (a guard, not a goal).
const START_GUARD: Duration = Duration::from_secs(30);

/// Waits until `runs` children have written their start marker.
fn wait_for_start(dir: &Path, runs: u64) -> Result<()> {
    let deadline = Instant::now() + START_GUARD;
    loop {
        let started = std::fs::read_to_string(dir.join("handled.log"))
            .map_or(0, |log| log.matches("#\n").count() as u64);
        if started >= runs {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("subscriber {runs} did not start within {START_GUARD:?}").into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A small deterministic generator for the kill delays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn parent() -> Result<()> {
    let kills: u64 = std::env::var("ESKIT_C2_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("eskit-pg-c2-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_parent(&dir, kills);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_parent(dir: &Path, kills: u64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let schema = common::fresh_schema("c2");
    let store = rt.block_on(connect(&schema))?;
    let ty = EventType::new("Placed")?;
    let mut written = 0u64;
    let mut append = |n: u64| -> Result<()> {
        rt.block_on(async {
            let mut left = n;
            while left > 0 {
                let k = left.min(10);
                let s = StreamName::new("order", format!("o-{}", written % 17))?;
                let events = (0..k)
                    .map(|i| NewEvent::new(ty.clone(), vec![(i % 250) as u8]))
                    .collect();
                store
                    .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
                    .await?;
                written += k;
                left -= k;
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        })
    };
    append(SEED_EVENTS)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    for run in 0..kills {
        // Appends on PostgreSQL are slower than a subscriber handles them,
        // so write the round first: the child then has a backlog to catch
        // up on, and the kill lands while it works. A child needs a while
        // to connect; a kill before it reads would test nothing, so the
        // delay starts at its start marker.
        append(EVENTS_PER_ROUND)?;
        let mut child = spawn_child(dir, &schema, false)?;
        wait_for_start(dir, run + 1)?;
        std::thread::sleep(Duration::from_millis(5 + rng.below(50)));
        child.kill()?; // SIGKILL
        child.wait()?;
    }
    // A last run to the end.
    let mut child = spawn_child(dir, &schema, true)?;
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the last subscriber exited with {status}").into());
    }
    let all: Vec<u64> = rt
        .block_on(GlobalPager::new(&store, ReadOptions::from_start(1000)).collect())?
        .iter()
        .map(|e| e.position.get())
        .collect();
    let log = std::fs::read_to_string(dir.join("handled.log"))?;
    let mut handled: Vec<u64> = Vec::new();
    let mut unique = std::collections::BTreeSet::new();
    let mut worst_run = 0usize;
    for run in log.split("#\n") {
        let mut again = 0;
        for line in run.lines().filter(|l| !l.is_empty()) {
            let p: u64 = line.parse()?;
            handled.push(p);
            if !unique.insert(p) {
                again += 1;
            }
        }
        worst_run = worst_run.max(again);
    }
    let lost = all.iter().filter(|p| !unique.contains(p)).count();
    let unexpected = unique.iter().filter(|p| !all.contains(p)).count();
    let redelivered = handled.len() - unique.len();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "c2 (postgres): {kills} kills in {:.1?}, {} events, {} handled, {lost} lost, {unexpected} \
             unexpected, {redelivered} redelivered, at most {worst_run} by one kill (a page is {PAGE})",
            start.elapsed(),
            all.len(),
            handled.len(),
        );
    }
    if lost > 0 || unexpected > 0 || worst_run > PAGE {
        return Err(
            "the subscription lost events or redelivered more than one page per kill".into(),
        );
    }
    if written != all.len() as u64 {
        return Err(format!("wrote {written} events, the log holds {}", all.len()).into());
    }
    #[allow(clippy::print_stdout)]
    {
        println!("kill_resume: 1 passed, 0 failed");
    }
    Ok(())
}
