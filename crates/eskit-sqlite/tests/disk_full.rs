//! RELIABILITY B10: the store's directory on a small tmpfs fills up. Appends
//! must fail with the typed storage-full error, never panic or corrupt; once
//! space is freed the store works again and reopens with every acknowledged
//! append intact.
//!
//! Mounting a tmpfs needs root: where the mount fails the test says so,
//! with mount's reason, and passes.

#![allow(clippy::print_stdout, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Rng, TempDir, TestResult, stream};
use eskit_core::{
    event::{EventType, ExpectedVersion, NewEvent},
    rt::block_on,
    store::{AppendOptions, EventStore, LoadOptions},
};
use eskit_sqlite::{SqliteError, SqliteOptions, SqliteStore, Synchronous};

/// Size of the file system the store runs out of.
const TMPFS_SIZE: &str = "4m";
/// Payload bytes per event: the disk fills after a few hundred appends.
const PAYLOAD_BYTES: usize = 8 * 1024;
/// One writer's acknowledged payloads and its storage-full errors.
type Outcome = (Vec<Vec<u8>>, usize);

/// Concurrent writers, one stream each.
const WRITERS: usize = 4;
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

#[test]
fn a_full_disk_gives_a_typed_error_and_loses_no_acknowledged_append() -> TestResult {
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
    // Concurrent writers, so appends share group commits when the disk
    // fills up: a failed batch must still answer each append on its own.
    let streams: Vec<_> = (0..WRITERS)
        .map(|i| stream("disk", &format!("w{i}")))
        .collect::<Result<_, _>>()?;
    let seeds: Vec<u64> = (0..WRITERS).map(|_| rng.range(0, u64::MAX)).collect();
    let results: Vec<Result<Outcome, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .zip(&seeds)
            .map(|(st, seed)| {
                let (store, ty) = (&store, &ty);
                scope.spawn(move || {
                    let mut rng = Rng::new(*seed);
                    let mut acknowledged = Vec::new();
                    let mut full_errors = 0;
                    for i in 0..10_000_usize {
                        let payload: Vec<u8> = (0..PAYLOAD_BYTES)
                            .map(|_| rng.range(0, 256) as u8)
                            .collect();
                        let event = NewEvent::new(ty.clone(), payload.clone());
                        match block_on(store.append(
                            st,
                            ExpectedVersion::Any,
                            vec![event],
                            AppendOptions::new(),
                        )) {
                            Ok(_) => acknowledged.push(payload),
                            Err(e) => {
                                // The core's kind, with SQLite's cause as its source.
                                if !e.is_storage_full()
                                    || !SqliteError::of(&e)
                                        .is_some_and(SqliteError::is_storage_full)
                                {
                                    return Err(format!(
                                        "{st}: append {i} failed otherwise: {e:?}"
                                    ));
                                }
                                if e.is_transient() {
                                    return Err(format!("{st}: a full disk is called transient"));
                                }
                                full_errors += 1;
                                if full_errors == 5 {
                                    break;
                                }
                            }
                        }
                    }
                    Ok((acknowledged, full_errors))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a writer panicked".into())))
            .collect()
    });
    let mut acknowledged = Vec::new();
    let mut full_errors = 0;
    for r in results {
        let (acks, fulls) = r?;
        acknowledged.push(acks);
        full_errors += fulls;
    }
    let written: usize = acknowledged.iter().map(Vec::len).sum();
    println!(
        "disk full ({sync:?}): {written} appends acknowledged by {WRITERS} writers, \
         then {full_errors} storage-full errors"
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
