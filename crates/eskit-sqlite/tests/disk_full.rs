//! RELIABILITY B10: the store's directory on a small tmpfs fills up. Appends
//! must fail with the typed storage-full error, never panic or corrupt; once
//! space is freed the store works again and reopens with every acknowledged
//! append intact.
//!
//! Mounting a tmpfs needs root: without it the test says so and passes.

#![allow(clippy::print_stdout, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Rng, TempDir, TestResult, stream};
use eskit_core::{
    AppendOptions, EventStore, EventType, ExpectedVersion, LoadOptions, NewEvent, block_on,
};
use eskit_sqlite::{SqliteError, SqliteOptions, SqliteStore, Synchronous};

/// Size of the file system the store runs out of.
const TMPFS_SIZE: &str = "4m";
/// Payload bytes per event: the disk fills after a few hundred appends.
const PAYLOAD_BYTES: usize = 8 * 1024;
/// Space held by a file that is deleted to free room again.
const BALLAST_BYTES: usize = 1024 * 1024;

/// A tmpfs mounted for the test's lifetime.
struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path) -> Result<Option<Self>, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Some(Self(at.to_path_buf())))
        } else {
            println!(
                "disk full: skipped, mounting a tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(None)
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn a_full_disk_gives_a_typed_error_and_loses_no_acknowledged_append() -> TestResult {
    if !is_root() {
        println!("disk full: skipped, mounting a tmpfs needs root");
        return Ok(());
    }
    let dir = TempDir::new("disk-full")?;
    let (mut rng, seed) = Rng::from_env_or_time("ESKIT_DISK_FULL_SEED");
    println!("disk full: seed {seed}");
    for (i, sync) in [Synchronous::Normal, Synchronous::Full]
        .into_iter()
        .enumerate()
    {
        // A file system of its own per round: a closed store's reader
        // connections may keep its deleted files' space for a moment.
        let at = dir.file(&format!("mnt-{i}"));
        std::fs::create_dir_all(&at)?;
        let Some(_mount) = Mount::new(&at)? else {
            return Ok(());
        };
        let ballast = at.join("ballast");
        std::fs::write(&ballast, vec![7u8; BALLAST_BYTES])?;
        run(&at.join("events.db"), &ballast, sync, &mut rng)
            .map_err(|e| format!("{sync:?}: {e}"))?;
    }
    Ok(())
}

fn run(path: &Path, ballast: &Path, sync: Synchronous, rng: &mut Rng) -> TestResult {
    let store = SqliteStore::open_with(SqliteOptions::file(path).with_synchronous(sync))?;
    let ty = EventType::new("Filled")?;
    let streams = [stream("disk", "a")?, stream("disk", "b")?];
    let mut acknowledged: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
    let mut full_errors = 0;
    for i in 0..10_000_usize {
        let which = i % 2;
        let payload: Vec<u8> = (0..PAYLOAD_BYTES)
            .map(|_| rng.range(0, 256) as u8)
            .collect();
        let event = NewEvent::new(ty.clone(), payload.clone());
        match block_on(store.append(
            &streams[which],
            ExpectedVersion::Any,
            vec![event],
            AppendOptions::new(),
        )) {
            Ok(_) => acknowledged[which].push(payload),
            Err(e) => {
                let full = SqliteError::of(&e).is_some_and(SqliteError::is_storage_full);
                if !full {
                    return Err(format!("append {i} failed with another error: {e}").into());
                }
                full_errors += 1;
                if full_errors == 20 {
                    break;
                }
            }
        }
    }
    let written: usize = acknowledged.iter().map(Vec::len).sum();
    println!(
        "disk full ({sync:?}): {written} appends acknowledged, then {full_errors} storage-full errors"
    );
    if full_errors == 0 {
        return Err("the disk never filled up".into());
    }
    // Reads still work on a full disk.
    for (s, want) in streams.iter().zip(&acknowledged) {
        let got = block_on(store.load(s, LoadOptions::new()))?;
        assert_eq!(got.len(), want.len(), "{s} on a full disk");
    }
    std::fs::remove_file(ballast)?;
    // With room again the same store appends again.
    let more = NewEvent::new(ty.clone(), b"after".to_vec());
    block_on(store.append(
        &streams[0],
        ExpectedVersion::Any,
        vec![more],
        AppendOptions::new(),
    ))?;
    acknowledged[0].push(b"after".to_vec());
    block_on(store.close());

    let store = SqliteStore::open_with(SqliteOptions::file(path).with_synchronous(sync))?;
    let findings = block_on(store.integrity_check())?;
    assert!(findings.is_empty(), "integrity check: {findings:?}");
    for (s, want) in streams.iter().zip(&acknowledged) {
        let got = block_on(store.load(s, LoadOptions::new()))?;
        assert_eq!(
            got.len(),
            want.len(),
            "{s}: an acknowledged append was lost"
        );
        for (i, (e, p)) in got.iter().zip(want).enumerate() {
            assert_eq!(e.version.get(), i as u64 + 1, "{s}: version hole");
            assert!(e.payload == *p, "{s}: event {} has another payload", i + 1);
        }
    }
    block_on(store.close());
    Ok(())
}
