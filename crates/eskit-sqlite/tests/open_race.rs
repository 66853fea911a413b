//! Two processes opening the same store file at once must both succeed:
//! on a brand-new file, and on a file whose first open was killed with
//! SIGKILL before its schema committed.
//!
//! The children are this same binary, started with `ESKIT_OPEN_RACE_CHILD`
//! set (the crash test's mechanism). An opening child waits for a line on
//! its stdin, so that the parent can release both of a pair together, then
//! opens the store, appends one event and closes it. A half-open child does
//! what a first open does up to its schema transaction, says so and waits
//! to be killed.
//!
//! Sizes: `ESKIT_OPEN_RACE_PAIRS` (default 200) new files and
//! `ESKIT_OPEN_RACE_KILLS` (default 100) killed first opens.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ExitCode, Stdio};

use common::{TempDir, child_command, env_usize, event, stream};
use eskit_core::{
    event::ExpectedVersion,
    rt::block_on,
    store::{AppendOptions, EventStore, GlobalReader, ReadOptions},
};
use eskit_sqlite::SqliteStore;

const CHILD_ENV: &str = "ESKIT_OPEN_RACE_CHILD";

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let result = match spec.split_once(':') {
            Some(("open", path)) => open_child(Path::new(path)),
            Some(("half-wal", path)) => half_open_child(Path::new(path), true),
            Some(("half-rollback", path)) => half_open_child(Path::new(path), false),
            _ => Err(format!("bad {CHILD_ENV}: {spec}").into()),
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("open race child: {e}");
                ExitCode::from(2)
            }
        };
    }
    match parent() {
        Ok(0) => {
            println!("open race: passed");
            ExitCode::SUCCESS
        }
        Ok(n) => {
            println!("open race: FAILED, {n} failed opens");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("open race: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for the parent's go, opens the store and appends one event.
fn open_child(path: &Path) -> BoxResult<()> {
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    let store = SqliteStore::open(path).map_err(|e| format!("{e} ({e:?})"))?;
    let s = stream("race", &std::process::id().to_string()).map_err(|e| e.to_string())?;
    let e = event("Opened", "{}").map_err(|e| e.to_string())?;
    block_on(store.append(&s, ExpectedVersion::NoStream, vec![e], AppendOptions::new()))?;
    block_on(store.close());
    Ok(())
}

/// Leaves `path` as a first open killed inside its schema transaction
/// leaves it: in WAL mode with the transaction's pages in the log
/// (`wal`), or still in rollback-journal mode with its pages already in the
/// database file and a hot journal next to it. A one-page cache makes
/// SQLite write pages before the commit.
fn half_open_child(path: &Path, wal: bool) -> BoxResult<()> {
    let conn = rusqlite::Connection::open(path)?;
    if wal {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if mode != "wal" {
            return Err(format!("journal mode {mode}").into());
        }
    }
    conn.execute_batch("PRAGMA cache_size = 1; BEGIN IMMEDIATE;")?;
    for i in 0..50 {
        conn.execute_batch(&format!(
            "CREATE TABLE eskit_half_{i} (a INTEGER PRIMARY KEY, b TEXT NOT NULL);"
        ))?;
    }
    conn.execute_batch("PRAGMA application_id = 1702063988;")?;
    let mut out = std::io::stdout().lock();
    out.write_all(b"ready\n")?;
    out.flush()?;
    drop(out);
    // The parent kills this process now; it never commits.
    std::thread::sleep(std::time::Duration::from_secs(60));
    Err("not killed".into())
}

fn spawn_opener(path: &Path) -> BoxResult<Child> {
    Ok(
        child_command(CHILD_ENV, format!("open:{}", path.display()))?
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
    )
}

/// Starts two openers of `path`, releases them together and returns the
/// error output of each that failed.
fn race_pair(path: &Path) -> BoxResult<Vec<String>> {
    let mut children = [spawn_opener(path)?, spawn_opener(path)?];
    for c in &mut children {
        // Dropping stdin after the line lets a child that is slow to start
        // still read it.
        let mut stdin = c.stdin.take().ok_or("no child stdin")?;
        stdin.write_all(b"go\n")?;
    }
    let mut failures = Vec::new();
    for mut c in children {
        let mut err = String::new();
        if let Some(mut e) = c.stderr.take() {
            e.read_to_string(&mut err)?;
        }
        let status = c.wait()?;
        if !status.success() {
            failures.push(format!("{status}: {}", err.trim()));
        }
    }
    Ok(failures)
}

/// Leaves `path` as a first open killed before its schema committed.
fn kill_half_open(path: &Path, wal: bool) -> BoxResult<()> {
    let mode = if wal { "half-wal" } else { "half-rollback" };
    let mut child = child_command(CHILD_ENV, format!("{mode}:{}", path.display()))?
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    // `kill` sends SIGKILL.
    child.kill()?;
    child.wait()?;
    if line != "ready\n" {
        return Err(format!("the half-open child did not get ready: {line:?}").into());
    }
    Ok(())
}

/// The store at `path` holds one event from each of the two openers.
fn check_store(path: &Path) -> BoxResult<()> {
    let store = SqliteStore::open(path)?;
    let events = block_on(store.read(ReadOptions::from_start(10)))?.events;
    block_on(store.close());
    if events.len() != 2 {
        return Err(format!("{} events, expected 2", events.len()).into());
    }
    Ok(())
}

/// Runs `cases` races, each on a file `prepare` leaves; returns the number
/// of failed opens and prints how they failed.
fn run(
    dir: &TempDir,
    name: &str,
    cases: usize,
    mut prepare: impl FnMut(&Path, usize) -> BoxResult<()>,
) -> BoxResult<usize> {
    let mut failed = 0;
    let mut failed_pairs = 0;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad_stores = 0;
    let started = std::time::Instant::now();
    for i in 0..cases {
        let path = dir.file(&format!("{name}-{i}.db"));
        prepare(&path, i)?;
        let failures = race_pair(&path)?;
        let both_opened = failures.is_empty();
        failed_pairs += usize::from(!both_opened);
        failed += failures.len();
        let shown = path.display().to_string();
        for f in failures {
            *kinds.entry(f.replace(&shown, "<file>")).or_default() += 1;
        }
        if both_opened && let Err(e) = check_store(&path) {
            eprintln!("open race: {name} case {i}: {e}");
            bad_stores += 1;
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    println!(
        "open race: {name}: {cases} pairs in {:.1?}, {failed_pairs} pairs with a failed \
         open, {failed} of {} opens failed, {bad_stores} stores without both events",
        started.elapsed(),
        2 * cases
    );
    for (f, n) in &kinds {
        println!("open race: {name}: {n} x {f}");
    }
    Ok(failed + bad_stores)
}

fn parent() -> BoxResult<usize> {
    let pairs = env_usize("ESKIT_OPEN_RACE_PAIRS", 200);
    let kills = env_usize("ESKIT_OPEN_RACE_KILLS", 100);
    let dir = TempDir::new("open-race")?;
    let mut failed = run(&dir, "new file", pairs, |_, _| Ok(()))?;
    failed += run(&dir, "killed first open", kills, |p, i| {
        kill_half_open(p, i % 2 == 0)
    })?;
    Ok(failed)
}
