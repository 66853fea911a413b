//! RELIABILITY C3-style leader handover across processes: two subscriber
//! processes run one subscription name with a leader lease on one SQLite
//! file. The leader is killed with SIGKILL again and again (a replacement
//! process is started each time) while events are appended.
//!
//! Each child appends `<pid> <fencing token> <position>` for every event it
//! handles to a shared log (one `write` per page, before the checkpoint, as
//! a side effect would be). The parent checks:
//! - fencing tokens never go down in log order, and each token belongs to
//!   one process: at every moment at most one process handled events;
//! - after each kill another process takes over (a larger token appears)
//!   within a bound, printed with the lease;
//! - every event is in the log (0 lost, 0 unexpected), and each handover
//!   redelivers at most one checkpoint interval.
//!
//! The child is this same binary with `ESKIT_C3_CHILD_DIR` set.
//! `ESKIT_C3_KILLS` sets the number of kills (default 5).

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use eskit_core::{
    event::{EventType, ExpectedVersion, NewEvent, RawEvent, StreamName},
    store::{AppendOptions, EventStore, GlobalReader},
};
use eskit_processor::{HealthHandle, Subscription, SubscriptionOptions};
use eskit_sqlite::SqliteStore;

const LEASE: Duration = Duration::from_secs(1);
const PAGE: usize = 50;
const CHECKPOINT_EVERY: u64 = 50;
const SEED_EVENTS: u64 = 500;
const EVENTS_PER_ROUND: u64 = 200;
/// How long a handover may take before the test fails: the lease, the
/// waiter's poll and generous room for a loaded machine. The measured
/// times are printed.
const HANDOVER_BOUND: Duration = Duration::from_secs(15);
/// The longest wait for anything else the children do.
const WAIT_BOUND: Duration = Duration::from_secs(60);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let outcome = match std::env::var_os("ESKIT_C3_CHILD_DIR") {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("leader_kill: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs the subscription as a leader candidate until killed.
fn child(dir: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store =
            SqliteStore::connect(eskit_sqlite::SqliteOptions::file(dir.join("events.db"))).await?;
        let _watch = store.watch_external_writes(Duration::from_millis(5))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("handled.log"))?;
        let pid = std::process::id();
        let health: Arc<OnceLock<HealthHandle>> = Arc::default();
        let h = Arc::clone(&health);
        let options = SubscriptionOptions::new("c3")?
            .with_batch_size(PAGE)?
            .with_checkpoint_every(CHECKPOINT_EVERY)?;
        let sub = Subscription::new(
            store.clone(),
            store.checkpoints(),
            options,
            move |events: &[RawEvent]| {
                let token = h
                    .get()
                    .and_then(|h| h.snapshot().leader)
                    .ok_or("handling without a leader lease")?;
                let mut lines = String::new();
                for e in events {
                    lines.push_str(&format!("{pid} {token} {}\n", e.position));
                }
                (&log).write_all(lines.as_bytes())?;
                std::thread::sleep(Duration::from_millis(2));
                Ok(())
            },
        )
        .with_leader(store.locks_with_lease(LEASE)?);
        health
            .set(sub.health())
            .map_err(|_| "the health handle was set twice")?;
        sub.run(std::future::pending()).await?;
        Ok(())
    })
}

fn spawn_child(dir: &Path) -> Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .env("ESKIT_C3_CHILD_DIR", dir)
        .stdin(Stdio::null())
        .spawn()?)
}

/// One handled event as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    pid: u32,
    token: u64,
    position: u64,
}

/// The complete lines of the log so far.
fn read_log(dir: &Path) -> Result<Vec<Line>> {
    let text = match std::fs::read_to_string(dir.join("handled.log")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let mut next = || parts.next().ok_or_else(|| format!("bad log line {l:?}"));
            Ok(Line {
                pid: next()?.parse()?,
                token: next()?.parse()?,
                position: next()?.parse()?,
            })
        })
        .collect()
}

/// Waits until `f` finds something in the log.
fn wait_log<T>(
    dir: &Path,
    bound: Duration,
    what: &str,
    f: impl Fn(&[Line]) -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f(&read_log(dir)?) {
            return Ok(v);
        }
        if start.elapsed() > bound {
            return Err(format!("gave up after {bound:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn parent() -> Result<()> {
    let kills: usize = std::env::var("ESKIT_C3_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("eskit-processor-c3-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut children: Vec<Child> = Vec::new();
    let result = run_parent(&dir, kills, &mut children);
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_parent(dir: &Path, kills: usize, children: &mut Vec<Child>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = SqliteStore::open(dir.join("events.db"))?;
    let ty = EventType::new("Placed")?;
    let mut written = 0u64;
    let mut append = |n: u64| -> Result<()> {
        rt.block_on(async {
            let mut left = n;
            while left > 0 {
                let k = left.min(10);
                let s = StreamName::new("order", format!("o-{}", written % 13))?;
                let events = (0..k).map(|_| NewEvent::new(ty.clone(), vec![])).collect();
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
    children.push(spawn_child(dir)?);
    children.push(spawn_child(dir)?);
    let mut handovers = Vec::new();
    for round in 0..kills {
        append(EVENTS_PER_ROUND)?;
        // The leader is whoever handled the newest line with the largest token.
        let after = read_log(dir)?.len();
        let (leader, token) = wait_log(dir, WAIT_BOUND, "a leader to handle events", |log| {
            log.get(after..)
                .and_then(|fresh| fresh.iter().max_by_key(|l| l.token))
                .map(|l| (l.pid, l.token))
        })?;
        let i = children
            .iter()
            .position(|c| c.id() == leader)
            .ok_or_else(|| format!("round {round}: the leader {leader} is not a child of ours"))?;
        let mut dead = children.swap_remove(i);
        let killed = dead.kill(); // SIGKILL
        let killed_at = Instant::now();
        dead.wait()?;
        killed?;
        children.push(spawn_child(dir)?);
        append(EVENTS_PER_ROUND)?;
        let next = wait_log(dir, HANDOVER_BOUND, "another process to take over", |log| {
            log.iter().find(|l| l.token > token).copied()
        })?;
        if next.pid == leader {
            return Err(format!("round {round}: the killed process {leader} handled more").into());
        }
        handovers.push(killed_at.elapsed());
    }
    let head = rt.block_on(store.head())?.position().get();
    if head != written {
        return Err(format!("wrote {written} events, the head is at {head}").into());
    }
    wait_log(dir, WAIT_BOUND, "the leader to handle every event", |log| {
        log.iter().any(|l| l.position == head).then_some(())
    })?;
    let log = read_log(dir)?;
    check(&log, head)?;
    #[allow(clippy::print_stdout)]
    {
        let worst = handovers.iter().max().copied().unwrap_or_default();
        println!(
            "c3: {kills} leader kills, {head} events, {} handled, handovers {:?} (worst {worst:.1?}, \
             lease {LEASE:?})",
            log.len(),
            handovers
                .iter()
                .map(|d| format!("{d:.1?}"))
                .collect::<Vec<_>>(),
        );
        println!("leader_kill: 1 passed, 0 failed");
    }
    Ok(())
}

/// The log's checks: fencing order, one process per token, nothing lost,
/// bounded redelivery per handover.
fn check(log: &[Line], head: u64) -> Result<()> {
    let mut owner: HashMap<u64, u32> = HashMap::new();
    let mut newest = 0u64;
    for (i, l) in log.iter().enumerate() {
        if l.token < newest {
            return Err(format!(
                "line {i}: token {} handled after token {newest}: two processes handled at once",
                l.token
            )
            .into());
        }
        newest = l.token;
        if *owner.entry(l.token).or_insert(l.pid) != l.pid {
            return Err(format!("token {} was used by two processes", l.token).into());
        }
    }
    let unique: BTreeSet<u64> = log.iter().map(|l| l.position).collect();
    let lost = (1..=head).filter(|p| !unique.contains(p)).count();
    let unexpected = unique.iter().filter(|p| **p == 0 || **p > head).count();
    if lost > 0 || unexpected > 0 {
        return Err(format!("{lost} events lost, {unexpected} unexpected").into());
    }
    // Within one token (one leader's run) delivery is in order, each once;
    // a new token may start again from the last checkpoint.
    let mut by_token: Vec<(u64, Vec<u64>)> = Vec::new();
    for l in log {
        match by_token.last_mut() {
            Some((t, ps)) if *t == l.token => ps.push(l.position),
            _ => by_token.push((l.token, vec![l.position])),
        }
    }
    let mut seen = BTreeSet::new();
    for (token, ps) in &by_token {
        if ps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("token {token}: delivery out of order").into());
        }
        let again = ps.iter().filter(|p| seen.contains(*p)).count();
        if again as u64 > CHECKPOINT_EVERY + PAGE as u64 {
            return Err(format!("token {token}: {again} events delivered again").into());
        }
        seen.extend(ps.iter().copied());
    }
    Ok(())
}
