//! Crash test (RELIABILITY.md B1): a child process appends in a loop and
//! prints each append after `append` returned; the parent kills it with
//! SIGKILL at a random moment, reopens the store and checks that every
//! acknowledged append is there whole, that no append is torn, that stream
//! versions are contiguous and that global positions strictly increase and
//! are never reused.
//!
//! The child is this same binary, started with `ESKIT_CRASH_CHILD_DB` set.
//! Sizes: `ESKIT_CRASH_ITERATIONS` (default 100), `ESKIT_CRASH_SEED` to
//! replay a run, `ESKIT_CRASH_KILLS_PER_FILE` (default 10) kills before a
//! fresh file. Synchronous NORMAL and FULL alternate between iterations, and
//! every other pair of iterations the child opens the store with its calls
//! on the caller's thread (`SqliteOptions::with_calls_on_caller_thread`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::{Rng, TempDir, child_command, env_usize};
use eskit_core::{
    event::{EventType, ExpectedVersion, NewEvent, StreamName},
    rt::block_on,
    store::{AppendOptions, EventStore, GlobalPager, ReadOptions},
};
use eskit_sqlite::{SqliteOptions, SqliteStore, Synchronous};

const WRITERS: usize = 4;
const STREAMS_PER_WRITER: usize = 3;

fn main() -> ExitCode {
    if let Ok(db) = std::env::var("ESKIT_CRASH_CHILD_DB") {
        return match child(&db) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crash child: {e}");
                ExitCode::from(2)
            }
        };
    }
    match parent() {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("crash: {e}");
            println!("crash: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Appends 1-5 events at a time to its own streams with exact expected
/// versions, from several threads so that group commits form, and prints
/// `ack <stream-id> <first-version> <count> <first-position> <append-id>`
/// after each append returned.
fn child(db: &str) -> BoxResult<()> {
    let sync: Synchronous = std::env::var("ESKIT_CRASH_SYNC")
        .unwrap_or_else(|_| "normal".into())
        .parse()?;
    let caller_thread = std::env::var_os("ESKIT_CRASH_CALLER_THREAD").is_some();
    let store = SqliteStore::open_with(
        SqliteOptions::file(db)
            .with_synchronous(sync)
            .with_calls_on_caller_thread(caller_thread),
    )?;
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || -> BoxResult<()> {
                let streams: Vec<StreamName> = (0..STREAMS_PER_WRITER)
                    .map(|k| StreamName::new("crash", format!("w{w}-s{k}")))
                    .collect::<Result<_, _>>()?;
                let mut versions = Vec::new();
                for s in &streams {
                    versions.push(block_on(store.stream_version(s))?);
                }
                let mut rng = Rng::new(u64::from(std::process::id()) * 31 + w as u64);
                let ty = EventType::new("Appended")?;
                for seq in 0u64.. {
                    let k = rng.range(0, STREAMS_PER_WRITER as u64) as usize;
                    let n = rng.range(1, 6);
                    let append_id = format!("{}-{w}-{seq}", std::process::id());
                    let events = (0..n)
                        .map(|i| {
                            NewEvent::new(ty.clone(), format!("{append_id}:{i}/{n}").into_bytes())
                        })
                        .collect();
                    let r = block_on(store.append(
                        &streams[k],
                        ExpectedVersion::Exact(versions[k]),
                        events,
                        AppendOptions::new(),
                    ))?;
                    versions[k] = r.last_version();
                    let first = r.records.first().ok_or("empty append result")?;
                    let line = format!(
                        "ack {} {} {n} {} {append_id}\n",
                        streams[k].stream_id(),
                        first.version,
                        first.position
                    );
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes())?;
                    out.flush()?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "writer panicked")??;
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Ack {
    stream_id: String,
    first_version: u64,
    count: u64,
    first_position: u64,
    append_id: String,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut it = line.split_whitespace();
    if it.next()? != "ack" {
        return None;
    }
    Some(Ack {
        stream_id: it.next()?.to_owned(),
        first_version: it.next()?.parse().ok()?,
        count: it.next()?.parse().ok()?,
        first_position: it.next()?.parse().ok()?,
        append_id: it.next()?.to_owned(),
    })
}

/// Runs one child until it is killed and returns the acknowledgements it
/// printed in full (a line cut by the kill is not an acknowledgement).
fn run_child(
    db: &std::path::Path,
    sync: Synchronous,
    caller_thread: bool,
    kill_after: Duration,
) -> BoxResult<Vec<Ack>> {
    let mut command = child_command("ESKIT_CRASH_CHILD_DB", db)?;
    command.env("ESKIT_CRASH_SYNC", sync.as_str());
    if caller_thread {
        command.env("ESKIT_CRASH_CALLER_THREAD", "1");
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            if let Some(a) = std::str::from_utf8(&buf).ok().and_then(parse_ack) {
                acks.push(a);
            }
            buf.clear();
        }
        acks
    });
    std::thread::sleep(kill_after);
    let early_exit = child.try_wait()?;
    child.kill()?;
    child.wait()?;
    if let Some(status) = early_exit {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!("child exited on its own ({status}): {err}").into());
    }
    reader.join().map_err(|_| "reader panicked".into())
}

#[derive(Default)]
struct Totals {
    acked_appends: usize,
    acked_events: u64,
    lost: usize,
    torn: usize,
    holes: usize,
    order: usize,
    reused: usize,
    integrity: usize,
    open_failures: usize,
}

/// Reads the whole log back and checks it against every acknowledgement so
/// far and the log seen after the previous kill.
fn verify(
    db: &std::path::Path,
    acks: &[Ack],
    seen: &mut HashMap<u64, String>,
    totals: &mut Totals,
) -> BoxResult<usize> {
    let mut problems = 0;
    let store = match SqliteStore::open(db) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crash: reopen failed: {e}");
            totals.open_failures += 1;
            return Ok(1);
        }
    };
    let findings = block_on(store.integrity_check())?;
    if !findings.is_empty() {
        eprintln!("crash: integrity_check: {findings:?}");
        totals.integrity += 1;
        problems += 1;
    }
    let events = block_on(GlobalPager::new(&store, ReadOptions::from_start(10_000)).collect())?;
    // Global order: strictly increasing positions.
    for w in events.windows(2) {
        if w[0].position >= w[1].position {
            totals.order += 1;
            problems += 1;
        }
    }
    // Positions are never reused: an event seen at a position after an
    // earlier kill is still there with the same id.
    let now: HashMap<u64, String> = events
        .iter()
        .map(|e| (e.position.get(), e.id.to_string()))
        .collect();
    for (pos, id) in seen.iter() {
        if now.get(pos) != Some(id) {
            totals.reused += 1;
            problems += 1;
        }
    }
    *seen = now;
    // Per stream: versions 1..n in position order.
    let mut by_stream: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
    for e in &events {
        by_stream
            .entry(e.stream.stream_id().to_string())
            .or_default()
            .push((
                e.version.get(),
                e.position.get(),
                String::from_utf8_lossy(&e.payload).into_owned(),
            ));
    }
    for evs in by_stream.values() {
        if evs
            .iter()
            .enumerate()
            .any(|(i, (v, _, _))| *v != i as u64 + 1)
        {
            totals.holes += 1;
            problems += 1;
        }
    }
    // No torn append: every append present has all its events, adjacent.
    let mut appends: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for e in &events {
        let p = String::from_utf8_lossy(&e.payload).into_owned();
        let Some((id, rest)) = p.split_once(':') else {
            totals.torn += 1;
            problems += 1;
            continue;
        };
        let Some((i, n)) = rest.split_once('/') else {
            totals.torn += 1;
            problems += 1;
            continue;
        };
        let (Ok(i), Ok(n)) = (i.parse::<u64>(), n.parse::<u64>()) else {
            totals.torn += 1;
            problems += 1;
            continue;
        };
        appends.entry(id.to_owned()).or_default().push((i, n));
    }
    for parts in appends.values() {
        let n = parts[0].1;
        let complete = parts.len() as u64 == n
            && parts
                .iter()
                .enumerate()
                .all(|(k, (i, m))| *i == k as u64 && *m == n);
        if !complete {
            totals.torn += 1;
            problems += 1;
        }
    }
    // Every acknowledged append is there, whole, where it was acknowledged.
    for a in acks {
        let Some(evs) = by_stream.get(&a.stream_id) else {
            totals.lost += 1;
            problems += 1;
            continue;
        };
        let ok = (0..a.count).all(|i| {
            evs.get((a.first_version + i - 1) as usize)
                .is_some_and(|(v, pos, payload)| {
                    *v == a.first_version + i
                        && *pos == a.first_position + i
                        && *payload == format!("{}:{i}/{}", a.append_id, a.count)
                })
        });
        if !ok {
            totals.lost += 1;
            problems += 1;
        }
    }
    block_on(store.close());
    Ok(problems)
}

fn parent() -> BoxResult<usize> {
    let iterations = env_usize("ESKIT_CRASH_ITERATIONS", 100);
    let (mut rng, seed) = Rng::from_env_or_time("ESKIT_CRASH_SEED");
    println!("crash: seed {seed} (ESKIT_CRASH_SEED={seed} replays), {iterations} iterations");
    // A fresh file every few kills keeps the log, and so each full check,
    // small; each file still goes through several crashes and recoveries.
    let per_file = env_usize("ESKIT_CRASH_KILLS_PER_FILE", 10).max(1);
    let dir = TempDir::new("crash")?;
    let mut db = dir.file("crash-0.db");
    let mut final_events = 0;
    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let mut seen = HashMap::new();
    let mut totals = Totals::default();
    let (mut passed, mut failed) = (0usize, 0usize);
    for i in 0..iterations {
        if i > 0 && i % per_file == 0 {
            final_events += seen.len();
            db = dir.file(&format!("crash-{i}.db"));
            acks.clear();
            seen.clear();
        }
        let sync = if i % 2 == 0 {
            Synchronous::Normal
        } else {
            Synchronous::Full
        };
        let caller_thread = i % 4 >= 2;
        let kill_after = Duration::from_millis(rng.range(5, 201));
        let new = run_child(&db, sync, caller_thread, kill_after)?;
        totals.acked_appends += new.len();
        totals.acked_events += new.iter().map(|a| a.count).sum::<u64>();
        acks.extend(new);
        let problems = verify(&db, &acks, &mut seen, &mut totals)?;
        if problems == 0 {
            passed += 1;
        } else {
            eprintln!(
                "crash: iteration {i} ({sync}, calls on the caller's thread: {caller_thread}, \
                 killed after {kill_after:?}): {problems} problems"
            );
            failed += 1;
        }
    }
    println!(
        "crash: {} acknowledged appends ({} events) over {iterations} kills in {:.1?}; \
         lost {}, torn {}, version holes {}, order violations {}, reused positions {}, \
         integrity failures {}, reopen failures {}; {} events in the final logs",
        totals.acked_appends,
        totals.acked_events,
        started.elapsed(),
        totals.lost,
        totals.torn,
        totals.holes,
        totals.order,
        totals.reused,
        totals.integrity,
        totals.open_failures,
        final_events + seen.len()
    );
    println!("crash: {passed} passed, {failed} failed");
    Ok(failed)
}
