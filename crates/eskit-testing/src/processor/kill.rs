//! The tests that kill subscriber processes with SIGKILL: each is a test
//! binary's `main` (`harness = false`), which runs as the parent and, with
//! its own environment variable set, as the child processes it starts
//! (the same binary, run again).
//!
//! - [`kill_resume_main`], RELIABILITY C2 (at-least-once): a subscriber is
//!   killed at random points, again and again, each time with a backlog to
//!   catch up on; each new process resumes from its checkpoint. Nothing is
//!   lost, and each kill redelivers at most one checkpoint interval.
//! - [`leader_kill_main`], leader handover: two subscriber processes run
//!   one subscription name with a leader lease; the leader is killed again
//!   and again (a replacement is started each time) while events are
//!   appended. Fencing tokens never go down in the log and each belongs to
//!   one process (at most one leader handled events at any moment), another
//!   process takes over after each kill, nothing is lost and each handover
//!   redelivers at most one checkpoint interval.

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use eskit_core::{
    error::BoxError,
    event::{EventType, RawEvent},
};
use eskit_processor::{HealthHandle, Subscription, SubscriptionOptions, SubscriptionState};

use super::{Parts, ProcessBackend, all_events, append_orders};

type Result<T> = std::result::Result<T, BoxError>;

/// The variable giving a C2 child its directory (and making it a child).
pub const C2_CHILD_DIR: &str = "ESKIT_C2_CHILD_DIR";
/// The variable giving a child the store's location.
pub const CHILD_LOCATION: &str = "ESKIT_PROCESSOR_CHILD_LOCATION";
/// The variable making a C2 child run to the head and exit.
pub const C2_FINAL: &str = "ESKIT_C2_FINAL";
/// The variable setting the number of C2 kills (default [`C2_KILLS`]).
pub const C2_KILLS_VAR: &str = "ESKIT_C2_KILLS";
/// The variable giving a leader-kill child its directory.
pub const LEADER_CHILD_DIR: &str = "ESKIT_C3_CHILD_DIR";
/// The variable setting the number of leader kills (default
/// [`LEADER_KILLS`]).
pub const LEADER_KILLS_VAR: &str = "ESKIT_C3_KILLS";

/// Kills of the C2 subscriber by default.
pub const C2_KILLS: u64 = 50;
/// C2's page and checkpoint interval.
pub const C2_PAGE: usize = 100;
/// Events in the log before the first C2 child starts.
pub const C2_SEED_EVENTS: u64 = 10_000;
/// Events appended before each C2 child starts: its backlog.
pub const C2_EVENTS_PER_ROUND: u64 = 1_000;
/// Longest a child may take to open the store and start (a guard).
pub const START_GUARD: Duration = Duration::from_secs(30);

/// Leader kills by default.
pub const LEADER_KILLS: usize = 5;
/// The leader-kill subscription's page.
pub const LEADER_PAGE: usize = 50;
/// The leader-kill subscription's checkpoint interval.
pub const LEADER_CHECKPOINT_EVERY: u64 = 50;
/// Events in the log before the leader-kill children start.
pub const LEADER_SEED_EVENTS: u64 = 500;
/// Events appended before and after each leader kill.
pub const LEADER_EVENTS_PER_ROUND: u64 = 200;
/// How long a handover may take before the test fails: the lease, the
/// waiter's poll and generous room for a loaded machine. The measured
/// times are printed.
pub const HANDOVER_BOUND: Duration = Duration::from_secs(15);
/// The longest wait for anything else the children do.
pub const WAIT_BOUND: Duration = Duration::from_secs(60);

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn exit(test: &str, backend: &str, outcome: Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{test} ({backend}): {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A directory of this test run's own, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(test: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("eskit-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The log children append to. `&File` writes, so a handler needs no lock
/// of its own.
fn open_log(dir: &Path) -> Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("handled.log"))?)
}

fn location() -> Result<String> {
    std::env::var(CHILD_LOCATION).map_err(|_| format!("{CHILD_LOCATION} is not set").into())
}

fn kills_from(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

// --- C2 -----------------------------------------------------------------

/// RELIABILITY C2 on `backend`, as a test binary's `main`: prints a summary
/// and `kill_resume: 1 passed, 0 failed`, or the failure.
pub fn kill_resume_main<B: ProcessBackend>(name: &str, backend: B) -> ExitCode {
    let outcome = match std::env::var_os(C2_CHILD_DIR) {
        Some(dir) => c2_child(
            &backend,
            Path::new(&dir),
            std::env::var_os(C2_FINAL).is_some(),
        ),
        None => c2_parent(name, &backend),
    };
    exit("kill_resume", name, outcome)
}

/// Runs the subscription until killed (or, with `last`, until caught up),
/// writing the position of every event it handles to `handled.log` before
/// the checkpoint, as a side effect would be.
fn c2_child<B: ProcessBackend>(backend: &B, dir: &Path, last: bool) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let (parts, _guard) = backend.open(dir, &location()?).await?;
        let log = open_log(dir)?;
        // Each run's lines start after a marker, so the parent can count
        // what each kill made the next run deliver again.
        (&log).write_all(b"#\n")?;
        let options = SubscriptionOptions::new("c2")?
            .with_batch_size(C2_PAGE)?
            .with_checkpoint_every(C2_PAGE as u64)?;
        let sub = Subscription::new(
            parts.store.clone(),
            parts.checkpoints.clone(),
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
        backend.close(parts).await;
        Ok(())
    })
}

fn spawn_c2_child(dir: &Path, location: &str, last: bool) -> Result<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(C2_CHILD_DIR, dir)
        .env(CHILD_LOCATION, location)
        .stdin(Stdio::null());
    if last {
        cmd.env(C2_FINAL, "1");
    }
    Ok(cmd.spawn()?)
}

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

fn c2_parent<B: ProcessBackend>(name: &str, backend: &B) -> Result<()> {
    let kills = kills_from(C2_KILLS_VAR, C2_KILLS);
    let work = WorkDir::new("c2")?;
    let dir = work.0.as_path();
    let rt = runtime()?;
    let (parts, location) = rt.block_on(backend.create(dir))?;
    let result = rt.block_on(c2_run(name, dir, &location, &parts, kills));
    rt.block_on(backend.close(parts));
    result
}

async fn c2_run<B: ProcessBackend>(
    name: &str,
    dir: &Path,
    location: &str,
    parts: &Parts<B>,
    kills: u64,
) -> Result<()> {
    let store = &parts.store;
    let ty = EventType::new("Placed")?;
    let mut written = 0u64;
    append_orders(store, &ty, written, C2_SEED_EVENTS, 17).await?;
    written += C2_SEED_EVENTS;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    for run in 0..kills {
        // Write the round first, so the child has a backlog to catch up on
        // and the kill lands while it works. A child needs a while to open
        // the store; a kill before it reads would test nothing, so the
        // delay starts at its start marker.
        append_orders(store, &ty, written, C2_EVENTS_PER_ROUND, 17).await?;
        written += C2_EVENTS_PER_ROUND;
        let mut child = spawn_c2_child(dir, location, false)?;
        let started = tokio::task::block_in_place(|| wait_for_start(dir, run + 1));
        if let Err(e) = started {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(5 + rng.below(50))).await;
        child.kill()?; // SIGKILL
        child.wait()?;
    }
    // A last run to the end.
    let mut child = spawn_c2_child(dir, location, true)?;
    let status = tokio::task::block_in_place(|| child.wait())?;
    if !status.success() {
        return Err(format!("the last subscriber exited with {status}").into());
    }
    let all: Vec<u64> = all_events(store)
        .await?
        .iter()
        .map(|e| e.position.get())
        .collect();
    let log = std::fs::read_to_string(dir.join("handled.log"))?;
    let mut handled = 0usize;
    let mut unique = BTreeSet::new();
    let mut worst_run = 0usize;
    for run in log.split("#\n") {
        let mut again = 0;
        for line in run.lines().filter(|l| !l.is_empty()) {
            let p: u64 = line.parse()?;
            handled += 1;
            if !unique.insert(p) {
                again += 1;
            }
        }
        worst_run = worst_run.max(again);
    }
    let known: BTreeSet<u64> = all.iter().copied().collect();
    let lost = all.iter().filter(|p| !unique.contains(p)).count();
    let unexpected = unique.iter().filter(|p| !known.contains(p)).count();
    let redelivered = handled - unique.len();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "c2 ({name}): {kills} kills in {:.1?}, {} events, {handled} handled, {lost} lost, \
             {unexpected} unexpected, {redelivered} redelivered, at most {worst_run} by one kill \
             (a page is {C2_PAGE})",
            start.elapsed(),
            all.len(),
        );
    }
    if lost > 0 || unexpected > 0 || worst_run > C2_PAGE {
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

// --- leader handover ------------------------------------------------------

/// Leader handover across processes on `backend`, as a test binary's
/// `main`: prints the handover times and `leader_kill: 1 passed, 0 failed`,
/// or the failure.
///
/// Each child appends `<pid> <fencing token> <position>` for every event it
/// handles to a shared log (one `write` per page, before the checkpoint).
pub fn leader_kill_main<B: ProcessBackend>(name: &str, backend: B) -> ExitCode {
    let outcome = match std::env::var_os(LEADER_CHILD_DIR) {
        Some(dir) => leader_child(&backend, Path::new(&dir)),
        None => leader_parent(name, &backend),
    };
    exit("leader_kill", name, outcome)
}

/// Runs the subscription as a leader candidate until killed.
fn leader_child<B: ProcessBackend>(backend: &B, dir: &Path) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let (parts, _guard) = backend.open(dir, &location()?).await?;
        let log = open_log(dir)?;
        let pid = std::process::id();
        let health: Arc<OnceLock<HealthHandle>> = Arc::default();
        let h = Arc::clone(&health);
        let options = SubscriptionOptions::new("c3")?
            .with_batch_size(LEADER_PAGE)?
            .with_checkpoint_every(LEADER_CHECKPOINT_EVERY)?;
        let sub = Subscription::new(
            parts.store.clone(),
            parts.checkpoints.clone(),
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
        .with_leader(backend.leader_locks(&parts.store)?);
        health
            .set(sub.health())
            .map_err(|_| "the health handle was set twice")?;
        sub.run(std::future::pending()).await?;
        Ok(())
    })
}

fn spawn_leader_child(dir: &Path, location: &str) -> Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .env(LEADER_CHILD_DIR, dir)
        .env(CHILD_LOCATION, location)
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

fn leader_parent<B: ProcessBackend>(name: &str, backend: &B) -> Result<()> {
    let kills = usize::try_from(kills_from(LEADER_KILLS_VAR, LEADER_KILLS as u64))?;
    let work = WorkDir::new("leader")?;
    let dir = work.0.as_path();
    let rt = runtime()?;
    let (parts, location) = rt.block_on(backend.create(dir))?;
    let mut children: Vec<Child> = Vec::new();
    let result = leader_run(
        name,
        backend,
        &rt,
        dir,
        &location,
        &parts,
        kills,
        &mut children,
    );
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    rt.block_on(backend.close(parts));
    result
}

#[allow(clippy::too_many_arguments)]
fn leader_run<B: ProcessBackend>(
    name: &str,
    backend: &B,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    location: &str,
    parts: &Parts<B>,
    kills: usize,
    children: &mut Vec<Child>,
) -> Result<()> {
    let store = &parts.store;
    let ty = EventType::new("Placed")?;
    let mut written = 0u64;
    let mut append = |n: u64| -> Result<()> {
        rt.block_on(append_orders(store, &ty, written, n, 13))?;
        written += n;
        Ok(())
    };
    append(LEADER_SEED_EVENTS)?;
    children.push(spawn_leader_child(dir, location)?);
    children.push(spawn_leader_child(dir, location)?);
    let mut handovers = Vec::new();
    for round in 0..kills {
        // The leader is whoever handles a line after this point with the
        // largest token. Count the lines before appending: a leader quick
        // enough to handle the round before the count would leave no fresh
        // line to wait for.
        let after = read_log(dir)?.len();
        append(LEADER_EVENTS_PER_ROUND)?;
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
        children.push(spawn_leader_child(dir, location)?);
        append(LEADER_EVENTS_PER_ROUND)?;
        let next = wait_log(dir, HANDOVER_BOUND, "another process to take over", |log| {
            log.iter().find(|l| l.token > token).copied()
        })?;
        if next.pid == leader {
            return Err(format!("round {round}: the killed process {leader} handled more").into());
        }
        handovers.push(killed_at.elapsed());
    }
    let head = rt
        .block_on(all_events(store))?
        .last()
        .map_or(0, |e| e.position.get());
    wait_log(dir, WAIT_BOUND, "the leader to handle every event", |log| {
        log.iter().any(|l| l.position == head).then_some(())
    })?;
    let all: BTreeSet<u64> = rt
        .block_on(all_events(store))?
        .iter()
        .map(|e| e.position.get())
        .collect();
    if all.len() as u64 != written {
        return Err(format!("wrote {written} events, the log holds {}", all.len()).into());
    }
    let log = read_log(dir)?;
    check_leader_log(&log, &all)?;
    #[allow(clippy::print_stdout)]
    {
        let worst = handovers.iter().max().copied().unwrap_or_default();
        println!(
            "leader handover ({name}): {kills} leader kills, {written} events, {} handled, \
             handovers {:?} (worst {worst:.1?}, {})",
            log.len(),
            handovers
                .iter()
                .map(|d| format!("{d:.1?}"))
                .collect::<Vec<_>>(),
            backend.lease_description(),
        );
        println!("leader_kill: 1 passed, 0 failed");
    }
    Ok(())
}

/// The log's checks: fencing order, one process per token, nothing lost,
/// bounded redelivery per handover.
fn check_leader_log(log: &[Line], all: &BTreeSet<u64>) -> Result<()> {
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
    let lost = all.difference(&unique).count();
    let unexpected = unique.difference(all).count();
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
        if again as u64 > LEADER_CHECKPOINT_EVERY + LEADER_PAGE as u64 {
            return Err(format!("token {token}: {again} events delivered again").into());
        }
        seen.extend(ps.iter().copied());
    }
    Ok(())
}
