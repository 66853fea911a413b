//! `SqliteOptions::with_calls_on_caller_thread`: reads run on the awaiting
//! thread with a lent read connection, writes on the thread that takes the
//! writer connection. No reader or writer threads are started, more
//! concurrent readers than connections wait for one, concurrent writers
//! each get their own outcome, and close ends them all. (The conformance
//! suite also runs whole in this mode, as `sqlite-caller-thread`.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TempDir, TestResult, event, stream};
use eskit_core::{
    error::StoreError,
    event::ExpectedVersion,
    rt::block_on,
    store::{AppendOptions, EventStore, LoadOptions},
};
use eskit_sqlite::{SqliteOptions, SqliteStore};

/// The names of this process's threads that start with `prefix`.
fn threads_named(prefix: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let mut n = 0;
    for t in std::fs::read_dir("/proc/self/task")? {
        // A thread of another test may end between the listing and here.
        let comm = match std::fs::read_to_string(t?.path().join("comm")) {
            Ok(c) => c,
            // Gone: no such file, or no such process (ESRCH).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) => {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if comm.trim_end().starts_with(prefix) {
            n += 1;
        }
    }
    Ok(n)
}

/// What an append to a stream of its own expects after `appended` appends.
fn after(appended: u64) -> ExpectedVersion {
    if appended == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(eskit_core::event::Version::new(appended))
    }
}

fn open(
    dir: &TempDir,
    readers: usize,
    caller: bool,
) -> Result<SqliteStore, eskit_sqlite::OpenError> {
    SqliteStore::open_with(
        SqliteOptions::file(dir.file("events.db"))
            .with_readers(readers)
            .with_calls_on_caller_thread(caller),
    )
}

#[test]
fn no_store_threads_are_started() -> TestResult {
    // Thread names are cut to 15 bytes: "eskit-sqlite-re" (readers),
    // "eskit-sqlite-wr" (the writer). The other tests of this binary run
    // only caller-thread stores, so only this test starts such threads.
    let count = || -> Result<usize, Box<dyn std::error::Error>> {
        Ok(threads_named("eskit-sqlite-re")? + threads_named("eskit-sqlite-wr")?)
    };
    let dir = TempDir::new("caller-threads")?;
    let before = count()?;
    let caller = open(&dir, 3, true)?;
    let hopping = open(&dir, 3, false)?;
    // A thread takes its name once it runs: wait for the other store's
    // four, by which time any of the caller-thread store would be named too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while count()? < before + 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let both = count()?;
    block_on(hopping.close());
    block_on(caller.close());
    assert_eq!(
        both,
        before + 4,
        "two stores of 3 readers and a writer each, one with calls on the caller's thread, \
         run {} store threads (expected the other's 4)",
        both.saturating_sub(before)
    );
    Ok(())
}

#[test]
fn concurrent_writers_each_get_their_own_outcome() -> TestResult {
    const THREADS: u64 = 8;
    const APPENDS: u64 = 100;
    let dir = TempDir::new("caller-writers")?;
    let store = open(&dir, 2, true)?;
    let shared = stream("counter", "shared")?;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, shared) = (store.clone(), shared.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let own = stream("counter", &format!("t-{t}")).map_err(|e| e.to_string())?;
                let mut conflicts = 0;
                for i in 0..APPENDS {
                    // Its own stream: every append expects the version it
                    // left, so each one must succeed exactly once.
                    let e = event("Counted", "{}").map_err(|e| e.to_string())?;
                    let expected = after(i);
                    block_on(store.append(&own, expected, vec![e], AppendOptions::new()))
                        .map_err(|e| format!("append {i} to {own}: {e}"))?;
                    // The shared stream: all expect version 0, one wins.
                    let e = event("Claimed", "{}").map_err(|e| e.to_string())?;
                    match block_on(store.append(
                        &shared,
                        ExpectedVersion::NoStream,
                        vec![e],
                        AppendOptions::new(),
                    )) {
                        Ok(_) => {}
                        Err(e) if e.is_conflict() => conflicts += 1,
                        Err(e) => return Err(format!("claim: {e}")),
                    }
                }
                Ok(conflicts)
            })
        })
        .collect();
    let mut conflicts = 0;
    for t in threads {
        conflicts += t.join().map_err(|_| "a writing thread panicked")??;
    }
    assert_eq!(conflicts, THREADS * APPENDS - 1, "exactly one claim wins");
    for t in 0..THREADS {
        let own = stream("counter", &format!("t-{t}"))?;
        assert_eq!(
            block_on(store.load(&own, LoadOptions::new()))?.len() as u64,
            APPENDS
        );
    }
    assert_eq!(block_on(store.load(&shared, LoadOptions::new()))?.len(), 1);
    block_on(store.close());
    Ok(())
}

/// Hundreds of writers share one queue: each finished job wakes every
/// waiting caller, which must find its own outcome or wait again, never
/// lose a wake-up or take another caller's reply.
#[test]
fn hundreds_of_writers_each_get_their_own_outcome() -> TestResult {
    const THREADS: u64 = 256;
    const APPENDS: u64 = 10;
    let dir = TempDir::new("caller-herd")?;
    let store = open(&dir, 2, true)?;
    let gate = Arc::new(std::sync::Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, gate) = (store.clone(), Arc::clone(&gate));
            std::thread::spawn(move || -> Result<(), String> {
                let own = stream("counter", &format!("t-{t}")).map_err(|e| e.to_string())?;
                gate.wait();
                for i in 0..APPENDS {
                    let e = event("Counted", &format!("{{\"t\":{t},\"i\":{i}}}"))
                        .map_err(|e| e.to_string())?;
                    let expected = after(i);
                    let id = e.id();
                    let r = block_on(store.append(&own, expected, vec![e], AppendOptions::new()))
                        .map_err(|e| format!("append {i} to {own}: {e}"))?;
                    // The reply is this append's: its event, its version.
                    let mine = matches!(&r.records[..], [one] if one.id == id && one.version.get() == i + 1);
                    if !mine {
                        return Err(format!("append {i} to {own} got the reply {r:?}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a writing thread panicked")??;
    }
    for t in 0..THREADS {
        let own = stream("counter", &format!("t-{t}"))?;
        let loaded = block_on(store.load(&own, LoadOptions::new()))?;
        let payloads: Vec<String> = loaded
            .iter()
            .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
            .collect();
        let wanted: Vec<String> = (0..APPENDS)
            .map(|i| format!("{{\"t\":{t},\"i\":{i}}}"))
            .collect();
        assert_eq!(payloads, wanted, "stream t-{t}");
    }
    block_on(store.close());
    Ok(())
}

#[test]
fn more_readers_than_connections_wait_for_one() -> TestResult {
    const THREADS: usize = 8;
    const READS: usize = 200;
    let dir = TempDir::new("caller-many")?;
    let store = open(&dir, 1, true)?;
    let s = stream("account", "a")?;
    let events = (0..10)
        .map(|i| event("Deposited", &format!("{{\"n\":{i}}}")))
        .collect::<Result<Vec<_>, _>>()?;
    block_on(store.append(&s, ExpectedVersion::NoStream, events, AppendOptions::new()))?;
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (store, s, done) = (store.clone(), s.clone(), Arc::clone(&done));
            std::thread::spawn(move || -> Result<(), String> {
                for _ in 0..READS {
                    let loaded =
                        block_on(store.load(&s, LoadOptions::new())).map_err(|e| e.to_string())?;
                    if loaded.len() != 10 {
                        return Err(format!("loaded {} of 10 events", loaded.len()));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a reading thread panicked")??;
    }
    assert_eq!(done.load(Ordering::Relaxed), THREADS * READS);
    block_on(store.close());
    Ok(())
}

#[test]
fn close_ends_reads_in_flight_and_refuses_later_ones() -> TestResult {
    let dir = TempDir::new("caller-close")?;
    let path = dir.file("events.db");
    let store = open(&dir, 2, true)?;
    let s = stream("account", "a")?;
    block_on(store.append(
        &s,
        ExpectedVersion::NoStream,
        vec![event("Opened", "{}")?],
        AppendOptions::new(),
    ))?;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (store, s) = (store.clone(), s.clone());
            std::thread::spawn(move || -> Result<usize, String> {
                let mut ok = 0;
                loop {
                    match block_on(store.load(&s, LoadOptions::new())) {
                        Ok(e) if e.len() == 1 => ok += 1,
                        Ok(e) => return Err(format!("loaded {} events", e.len())),
                        Err(StoreError::Closed) => return Ok(ok),
                        Err(e) => return Err(format!("a read failed with {e}")),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // Close returns once every connection is closed, lent ones included.
    block_on(store.close());
    let wal = dir.file("events.db-wal");
    assert!(!wal.exists(), "a connection outlived close");
    for t in threads {
        let ok = t.join().map_err(|_| "a reading thread panicked")??;
        assert!(ok > 0, "a thread read nothing before close");
    }
    match block_on(store.load(&s, LoadOptions::new())) {
        Err(StoreError::Closed) => {}
        other => return Err(format!("load after close: {other:?}").into()),
    }
    let reopened = SqliteStore::open(&path)?;
    assert_eq!(block_on(reopened.load(&s, LoadOptions::new()))?.len(), 1);
    block_on(reopened.close());
    Ok(())
}
