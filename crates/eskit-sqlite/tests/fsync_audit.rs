//! RELIABILITY B2, the durability audit: a child process makes 100
//! single-event appends under `strace -f -y -e trace=fsync,fdatasync`, and
//! the syncs of the write-ahead log are counted. With `synchronous = FULL`
//! every acknowledged append must have synced the log (at least 100 syncs);
//! with `NORMAL` commits do not sync (the few syncs left come from opening
//! and from the checkpoint on close). `OFF` is refused at open, which
//! `tests/store.rs` checks.
//!
//! Needs `strace` (the CI script installs it); without it the test fails
//! and says so.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::{Command, ExitCode};

use common::{TempDir, stream};
use eskit_core::{
    event::{EventType, ExpectedVersion, NewEvent},
    rt::block_on,
    store::{AppendOptions, EventStore},
};
use eskit_sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// Appends the audited child makes, one per commit.
const COMMITS: usize = 100;
/// Most log syncs allowed with NORMAL: opening and the final checkpoint.
const NORMAL_SYNCS_MAX: usize = 10;

const CHILD_ENV: &str = "ESKIT_FSYNC_AUDIT_CHILD";

fn child(mode: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let sync: Synchronous = mode.parse()?;
    let store = SqliteStore::open_with(SqliteOptions::file(path).with_synchronous(sync))?;
    let s = stream("audit", "a")?;
    let ty = EventType::new("Audited")?;
    for i in 0..COMMITS {
        let e = NewEvent::new(ty.clone(), format!("{{\"n\":{i}}}").into_bytes());
        block_on(store.append(&s, ExpectedVersion::Any, vec![e], AppendOptions::new()))?;
    }
    block_on(store.close());
    Ok(())
}

/// Runs the child under strace; returns (syncs of the log, all syncs).
fn audit(mode: &str, dir: &TempDir) -> Result<(usize, usize), Box<dyn std::error::Error>> {
    let db = dir.file(&format!("{mode}.db"));
    let log = dir.file(&format!("{mode}.strace"));
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&log)
        .arg(std::env::current_exe()?)
        .env(CHILD_ENV, format!("{mode}:{}", db.display()))
        .output()
        .map_err(|e| format!("cannot run strace ({e}); install it, the CI script does"))?;
    if !out.status.success() {
        return Err(format!(
            "the audited child failed under strace: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = std::fs::read_to_string(&log)?;
    let syncs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .collect();
    let wal = format!("{}-wal>", db.display());
    let wal_syncs = syncs.iter().filter(|l| l.contains(&wal)).count();
    Ok((wal_syncs, syncs.len()))
}

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let Some((mode, path)) = spec.split_once(':') else {
            eprintln!("fsync audit child: bad {CHILD_ENV}");
            return ExitCode::FAILURE;
        };
        return match child(mode, Path::new(path)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fsync audit child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let dir = TempDir::new("fsync-audit")?;
        let (full_wal, full_all) = audit("FULL", &dir)?;
        let (normal_wal, normal_all) = audit("NORMAL", &dir)?;
        println!(
            "fsync audit: {COMMITS} commits; FULL synced the log {full_wal} times \
             ({full_all} syncs in all), NORMAL {normal_wal} times ({normal_all} in all)"
        );
        if full_wal < COMMITS {
            return Err(
                format!("FULL synced the log {full_wal} times for {COMMITS} commits").into(),
            );
        }
        if normal_wal > NORMAL_SYNCS_MAX {
            return Err(format!(
                "NORMAL synced the log {normal_wal} times, more than {NORMAL_SYNCS_MAX}"
            )
            .into());
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            println!("fsync audit: passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("fsync audit: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
