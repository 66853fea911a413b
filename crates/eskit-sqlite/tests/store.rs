//! Direct tests of the SQLite store's semantics, each run on a file and on
//! `:memory:`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, TestResult, event, stream};
use eskit_core::{
    error::{LifecycleOp, StoreError, ValidationError},
    event::{
        EventType, ExpectedVersion, GlobalCursor, Metadata, Position, Principal, StreamType,
        Timestamp, Version,
    },
    rt::block_on,
    store::{
        AppendOptions, CheckpointStore, CommitFeed, EventStore, GlobalReader, LoadOptions,
        ReadOptions, Snapshot, SnapshotStore, StreamLifecycle, StreamState,
    },
};
use eskit_sqlite::{OpenError, SqliteOptions, SqliteStore, Synchronous};

/// Runs `f` on a fresh file store and on a fresh in-memory store.
fn both(f: impl Fn(&SqliteStore) -> TestResult) -> TestResult {
    let dir = TempDir::new("store")?;
    let file = SqliteStore::open(dir.file("events.db"))?;
    f(&file).map_err(|e| format!("file store: {e}"))?;
    block_on(file.close());
    let mem = SqliteStore::open_in_memory()?;
    f(&mem).map_err(|e| format!("memory store: {e}"))?;
    Ok(())
}

fn append(
    s: &SqliteStore,
    st: &eskit_core::event::StreamName,
    expected: ExpectedVersion,
    payloads: &[&str],
) -> Result<eskit_core::event::AppendResult, StoreError> {
    let events = payloads
        .iter()
        .map(|p| {
            eskit_core::event::NewEvent::new(
                EventType::from_static("E").map_err(StoreError::from)?,
                p.as_bytes().to_vec(),
            )
            .with_codec("json")
            .pipe(Ok)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    block_on(s.append(st, expected, events, AppendOptions::new()))
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

#[test]
fn append_then_load_round_trips() -> TestResult {
    both(|s| {
        let a = stream("account", "a-1")?;
        let r = append(s, &a, ExpectedVersion::NoStream, &["1", "2", "3"])?;
        assert!(!r.deduplicated);
        assert_eq!(r.last_version(), Version::new(3));
        let loaded = block_on(s.load(&a, LoadOptions::new()))?;
        assert_eq!(loaded.len(), 3);
        for (rec, ev) in r.records.iter().zip(&loaded) {
            assert_eq!(rec, &ev.record());
            assert_eq!(ev.stream, a);
            assert_eq!(ev.codec, "json");
            assert_eq!(ev.schema_version, 1);
        }
        assert_eq!(loaded[2].payload, b"3");
        assert_eq!(block_on(s.stream_version(&a))?, Version::new(3));
        let missing = stream("account", "none")?;
        assert!(block_on(s.load(&missing, LoadOptions::new()))?.is_empty());
        assert_eq!(block_on(s.stream_version(&missing))?, Version::ZERO);
        Ok(())
    })
}

#[test]
fn expected_versions_are_checked() -> TestResult {
    both(|s| {
        let a = stream("account", "a-1")?;
        let e = append(s, &a, ExpectedVersion::StreamExists, &["x"]).err();
        assert!(
            matches!(e, Some(StoreError::WrongExpectedVersion { actual, .. }) if actual == Version::ZERO)
        );
        // A refused first append leaves no stream behind.
        assert_eq!(block_on(s.status(&a))?.state, StreamState::NotFound);
        append(s, &a, ExpectedVersion::Exact(Version::ZERO), &["1"])?;
        let e = append(s, &a, ExpectedVersion::NoStream, &["x"]).err();
        assert!(
            matches!(e, Some(StoreError::WrongExpectedVersion { actual, .. }) if actual == Version::new(1))
        );
        let e = append(s, &a, ExpectedVersion::Exact(Version::new(5)), &["x"]).err();
        assert!(e.is_some_and(|e| e.is_conflict()));
        append(s, &a, ExpectedVersion::Exact(Version::new(1)), &["2"])?;
        append(s, &a, ExpectedVersion::StreamExists, &["3"])?;
        append(s, &a, ExpectedVersion::Any, &["4"])?;
        let e = append(
            s,
            &a,
            ExpectedVersion::Exact(Version::new(u64::MAX)),
            &["x"],
        )
        .err();
        assert!(e.is_some_and(|e| e.is_conflict()));
        assert_eq!(block_on(s.stream_version(&a))?, Version::new(4));
        Ok(())
    })
}

#[test]
fn idempotency_keys_deduplicate_before_the_version_check() -> TestResult {
    both(|s| {
        let a = stream("order", "o-1")?;
        let evs = || -> Result<Vec<_>, Box<dyn std::error::Error>> {
            Ok(vec![event("Placed", "{}")?, event("Paid", "{\"n\":1}")?])
        };
        let opts = AppendOptions::new().with_idempotency_key("k-1");
        let first = block_on(s.append(&a, ExpectedVersion::NoStream, evs()?, opts.clone()))?;
        // Same key, same content, a stale expected version: deduplicated.
        let again = block_on(s.append(&a, ExpectedVersion::NoStream, evs()?, opts.clone()))?;
        assert!(again.deduplicated);
        assert_eq!(again.records, first.records);
        // Same key, other content: conflict.
        let other = vec![
            event("Placed", "{\"other\":true}")?,
            event("Paid", "{\"n\":1}")?,
        ];
        let e = block_on(s.append(&a, ExpectedVersion::Any, other, opts.clone())).err();
        assert!(matches!(e, Some(StoreError::IdempotencyConflict { ref key, .. }) if key == "k-1"));
        let fewer = vec![event("Placed", "{}")?];
        let e = block_on(s.append(&a, ExpectedVersion::Any, fewer, opts.clone())).err();
        assert!(matches!(e, Some(StoreError::IdempotencyConflict { .. })));
        // The key is recorded in the metadata of each event.
        let loaded = block_on(s.load(&a, LoadOptions::new()))?;
        assert_eq!(loaded.len(), 2);
        assert!(
            loaded
                .iter()
                .all(|e| e.metadata.idempotency_key() == Some("k-1"))
        );
        // Keys are per stream.
        let b = stream("order", "o-2")?;
        let r = block_on(s.append(&b, ExpectedVersion::Any, evs()?, opts))?;
        assert!(!r.deduplicated);
        Ok(())
    })
}

#[test]
fn load_options_filter() -> TestResult {
    both(|s| {
        let a = stream("account", "a-1")?;
        let evs = vec![
            event("A", "1")?,
            event("B", "2")?,
            event("A", "3")?,
            event("C", "4")?,
            event("A", "5")?,
        ];
        block_on(s.append(&a, ExpectedVersion::Any, evs, AppendOptions::new()))?;
        let versions = |o: LoadOptions| -> Result<Vec<u64>, StoreError> {
            Ok(block_on(s.load(&a, o))?
                .iter()
                .map(|e| e.version.get())
                .collect())
        };
        assert_eq!(
            versions(LoadOptions::new().with_from(Version::new(3)))?,
            [3, 4, 5]
        );
        assert_eq!(
            versions(LoadOptions::new().with_to(Version::new(2)))?,
            [1, 2]
        );
        let a_type = EventType::new("A")?;
        assert_eq!(
            versions(LoadOptions::new().with_event_types([a_type.clone()]))?,
            [1, 3, 5]
        );
        assert_eq!(
            versions(
                LoadOptions::new()
                    .with_event_types([a_type])
                    .with_limit(2)
                    .with_from(Version::new(2))
            )?,
            [3, 5]
        );
        assert_eq!(
            versions(LoadOptions::new().with_from(Version::new(u64::MAX)))?,
            Vec::<u64>::new()
        );
        let e = block_on(s.load(&a, LoadOptions::new().with_limit(0))).err();
        assert!(matches!(
            e,
            Some(StoreError::Validation(ValidationError::InvalidLimit { .. }))
        ));
        let e = block_on(
            s.load(
                &a,
                LoadOptions::new()
                    .with_from(Version::new(4))
                    .with_to(Version::new(2)),
            ),
        )
        .err();
        assert!(e.is_some_and(|e| e.is_validation()));
        Ok(())
    })
}

#[test]
fn global_reads_are_ordered_and_filtered() -> TestResult {
    both(|s| {
        let a = stream("account", "a-1")?;
        let o = stream("order", "o-1")?;
        block_on(s.append(
            &a,
            ExpectedVersion::Any,
            vec![event("Opened", "1")?],
            AppendOptions::new(),
        ))?;
        block_on(s.append(
            &o,
            ExpectedVersion::Any,
            vec![event("Placed", "2")?, event("Paid", "3")?],
            AppendOptions::new(),
        ))?;
        block_on(s.append(
            &a,
            ExpectedVersion::Any,
            vec![event("Closed", "4")?],
            AppendOptions::new(),
        ))?;
        let all = block_on(s.read(ReadOptions::from_start(100)))?.events;
        let positions: Vec<u64> = all.iter().map(|e| e.position.get()).collect();
        assert_eq!(positions, [1, 2, 3, 4]);
        assert_eq!(all[1].stream, o);
        // The cursor is exclusive.
        let after2 = block_on(s.read(ReadOptions::new(all[1].cursor(), 100)))?.events;
        assert_eq!(after2.first().map(|e| e.position.get()), Some(3));
        let two = block_on(s.read(ReadOptions::from_start(2)))?.events;
        assert_eq!(two.len(), 2);
        let orders = block_on(
            s.read(ReadOptions::from_start(100).with_stream_type(StreamType::new("order")?)),
        )?
        .events;
        assert_eq!(orders.len(), 2);
        let paid = block_on(
            s.read(
                ReadOptions::from_start(100)
                    .with_event_types([EventType::new("Paid")?, EventType::new("Closed")?]),
            ),
        )?
        .events;
        assert_eq!(
            paid.iter().map(|e| e.position.get()).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(block_on(s.head())?, GlobalCursor::at(Position::new(4)));
        let e = block_on(s.read(ReadOptions::from_start(0))).err();
        assert!(e.is_some_and(|e| e.is_validation()));
        let none = block_on(s.read(ReadOptions::new(
            GlobalCursor::at(Position::new(u64::MAX)),
            10,
        )))?
        .events;
        assert!(none.is_empty());
        Ok(())
    })
}

#[test]
fn lifecycle_matches_the_memory_backend() -> TestResult {
    both(|s| {
        let a = stream("account", "a-1")?;
        let missing = stream("account", "missing")?;
        assert!(block_on(s.archive(&missing, "x")).is_err_and(|e| e.is_not_found()));
        assert_eq!(block_on(s.status(&missing))?.state, StreamState::NotFound);
        append(s, &a, ExpectedVersion::Any, &["1", "2"])?;
        block_on(s.archive(&a, "cold"))?;
        let st = block_on(s.status(&a))?;
        assert_eq!(
            (st.state, st.reason.as_deref()),
            (StreamState::Archived, Some("cold"))
        );
        assert!(st.changed_at.is_some());
        assert!(matches!(
            append(s, &a, ExpectedVersion::Any, &["x"]),
            Err(StoreError::StreamArchived { .. })
        ));
        assert!(matches!(
            block_on(s.archive(&a, "again")),
            Err(StoreError::InvalidLifecycle {
                state: StreamState::Archived,
                operation: LifecycleOp::Archive,
                ..
            })
        ));
        block_on(s.restore(&a))?;
        let st = block_on(s.status(&a))?;
        assert_eq!((st.state, st.reason), (StreamState::Active, None));
        append(s, &a, ExpectedVersion::Exact(Version::new(2)), &["3"])?;
        block_on(s.tombstone(&a, "closed"))?;
        assert!(matches!(
            append(s, &a, ExpectedVersion::Any, &["x"]),
            Err(StoreError::StreamDeleted { .. })
        ));
        assert_eq!(
            block_on(s.load(&a, LoadOptions::new()))?.len(),
            3,
            "tombstoned streams stay readable"
        );
        assert!(matches!(
            block_on(s.restore(&a)),
            Err(StoreError::InvalidLifecycle { .. })
        ));
        assert!(matches!(
            block_on(s.tombstone(&a, "")),
            Err(StoreError::InvalidLifecycle { .. })
        ));
        let long = "x".repeat(eskit_core::limits::MAX_REASON_BYTES + 1);
        assert!(block_on(s.archive(&a, &long)).is_err_and(|e| e.is_validation()));

        let b = stream("account", "b-1")?;
        append(s, &b, ExpectedVersion::Any, &["1", "2"])?;
        let before = block_on(s.head())?;
        block_on(s.snapshots().save(Snapshot {
            stream: b.clone(),
            version: Version::new(2),
            schema_version: 1,
            codec: "json".into(),
            state: b"{}".to_vec(),
            created_at: Timestamp::now(),
        }))?;
        block_on(s.delete(&b))?;
        let st = block_on(s.status(&b))?;
        assert_eq!(
            (st.state, st.version),
            (StreamState::Deleted, Version::new(2))
        );
        assert_eq!(block_on(s.stream_version(&b))?, Version::ZERO);
        assert!(block_on(s.load(&b, LoadOptions::new()))?.is_empty());
        assert!(
            block_on(s.snapshots().load(&b))?.is_none(),
            "delete removes snapshots"
        );
        assert!(matches!(
            append(s, &b, ExpectedVersion::Any, &["x"]),
            Err(StoreError::StreamDeleted { .. })
        ));
        assert!(matches!(
            block_on(s.delete(&b)),
            Err(StoreError::InvalidLifecycle {
                state: StreamState::Deleted,
                ..
            })
        ));
        // Deleting the newest events never lets their positions be reused.
        let c = stream("account", "c-1")?;
        let r = append(s, &c, ExpectedVersion::Any, &["1"])?;
        assert!(r.last_cursor() > before);
        let all = block_on(s.read(ReadOptions::from_start(100)))?.events;
        assert!(all.iter().all(|e| e.stream != b));
        Ok(())
    })
}

#[test]
fn metadata_and_timestamps_round_trip() -> TestResult {
    both(|s| {
        let a = stream("account", "a-1")?;
        let meta = Metadata::new_chain(Principal::user("alice"))
            .with_causation_id("cause-1")
            .with_extra("tenant", "t-1")
            .with_extra("quote", "a \"quoted\" \u{1F600} value\n");
        let ts = Timestamp::from_unix_micros(1_700_000_000_123_456);
        let opts = AppendOptions::new()
            .with_metadata(meta.clone())
            .with_timestamp(ts);
        let r = block_on(s.append(
            &a,
            ExpectedVersion::Any,
            vec![event("E", "{}")?.with_schema_version(3)],
            opts,
        ))?;
        assert_eq!(r.records[0].timestamp, ts);
        let loaded = block_on(s.load(&a, LoadOptions::new()))?;
        assert_eq!(loaded[0].metadata, meta);
        assert_eq!(loaded[0].timestamp, ts);
        assert_eq!(loaded[0].schema_version, 3);
        let global = block_on(s.read(ReadOptions::from_start(10)))?.events;
        assert_eq!(global, loaded);
        Ok(())
    })
}

#[test]
fn invalid_appends_are_rejected_before_storage() -> TestResult {
    both(|s| {
        let a = stream("account", "a-1")?;
        let e =
            block_on(s.append(&a, ExpectedVersion::Any, Vec::new(), AppendOptions::new())).err();
        assert!(matches!(
            e,
            Some(StoreError::Validation(ValidationError::NoEvents))
        ));
        let big = eskit_core::event::NewEvent::new(
            EventType::new("E")?,
            vec![0; eskit_core::limits::MAX_PAYLOAD_BYTES + 1],
        );
        let e = block_on(s.append(&a, ExpectedVersion::Any, vec![big], AppendOptions::new())).err();
        assert!(matches!(
            e,
            Some(StoreError::Validation(
                ValidationError::PayloadTooLarge { .. }
            ))
        ));
        let at_cap = eskit_core::event::NewEvent::new(
            EventType::new("E")?,
            vec![7; eskit_core::limits::MAX_PAYLOAD_BYTES],
        );
        block_on(s.append(&a, ExpectedVersion::Any, vec![at_cap], AppendOptions::new()))?;
        assert_eq!(
            block_on(s.load(&a, LoadOptions::new()))?[0].payload.len(),
            eskit_core::limits::MAX_PAYLOAD_BYTES
        );
        let e = block_on(s.append(
            &a,
            ExpectedVersion::Any,
            vec![event("E", "x")?],
            AppendOptions::new().with_idempotency_key(""),
        ))
        .err();
        assert!(e.is_some_and(|e| e.is_validation()));
        Ok(())
    })
}

#[test]
fn hostile_names_are_stored_verbatim() -> TestResult {
    both(|s| {
        for id in [
            "'; DROP TABLE eskit_events;--",
            "a/b",
            "../x",
            "*",
            ">",
            "\u{202E}rtl",
            "CON",
            " ",
        ] {
            let st = stream("t", id)?;
            append(s, &st, ExpectedVersion::NoStream, &["1"])?;
            let loaded = block_on(s.load(&st, LoadOptions::new()))?;
            assert_eq!(loaded.len(), 1);
            assert_eq!(loaded[0].stream.stream_id().as_str(), id);
        }
        // NFC and NFD spellings are different streams.
        let nfc = stream("t", "\u{e9}")?;
        let nfd = stream("t", "e\u{301}")?;
        append(s, &nfc, ExpectedVersion::NoStream, &["1"])?;
        append(s, &nfd, ExpectedVersion::NoStream, &["1"])?;
        Ok(())
    })
}

#[test]
fn snapshots_and_checkpoints() -> TestResult {
    both(|s| {
        let snaps = s.snapshots();
        let a = stream("account", "a-1")?;
        assert!(block_on(snaps.load(&a))?.is_none());
        let snap = Snapshot {
            stream: a.clone(),
            version: Version::new(7),
            schema_version: 2,
            codec: "json".into(),
            state: b"{\"balance\":1}".to_vec(),
            created_at: Timestamp::from_unix_micros(5),
        };
        block_on(snaps.save(snap.clone()))?;
        assert_eq!(block_on(snaps.load(&a))?, Some(snap.clone()));
        let newer = Snapshot {
            version: Version::new(9),
            ..snap.clone()
        };
        block_on(snaps.save(newer.clone()))?;
        assert_eq!(block_on(snaps.load(&a))?, Some(newer));
        block_on(snaps.invalidate(&a))?;
        assert!(block_on(snaps.load(&a))?.is_none());
        block_on(snaps.save(snap.clone()))?;
        block_on(snaps.invalidate_all())?;
        assert!(block_on(snaps.load(&a))?.is_none());
        let bad = Snapshot {
            schema_version: 0,
            ..snap
        };
        assert!(block_on(snaps.save(bad)).is_err_and(|e| e.is_validation()));

        let cps = s.checkpoints();
        assert_eq!(block_on(cps.load("proj"))?, None);
        block_on(cps.save("proj", GlobalCursor::at(Position::new(5))))?;
        block_on(cps.save("proj", GlobalCursor::new(2, Position::new(9))))?;
        assert_eq!(
            block_on(cps.load("proj"))?,
            Some(GlobalCursor::new(2, Position::new(9)))
        );
        let max = GlobalCursor::at(Position::new(eskit_core::limits::MAX_POSITION));
        block_on(cps.save("max", max))?;
        assert_eq!(block_on(cps.load("max"))?, Some(max));
        let over = block_on(cps.save("over", GlobalCursor::at(Position::new(u64::MAX)))).err();
        assert!(matches!(
            over,
            Some(StoreError::Validation(ValidationError::OutOfRange { .. }))
        ));
        assert!(block_on(cps.save("", GlobalCursor::START)).is_err_and(|e| e.is_validation()));
        assert!(block_on(cps.load("a\0b")).is_err_and(|e| e.is_validation()));
        Ok(())
    })
}

#[test]
fn concurrent_writers_keep_their_own_outcomes() -> TestResult {
    both(|s| {
        let hot = stream("counter", "hot")?;
        let threads = 8usize;
        let per = 40u64;
        let conflicts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let s = s.clone();
                let hot = hot.clone();
                let conflicts = Arc::clone(&conflicts);
                std::thread::spawn(move || -> Result<(), String> {
                    let own = stream("own", &format!("w-{t}")).map_err(|e| e.to_string())?;
                    let mut done = 0;
                    while done < per {
                        // Distinct streams: never conflict.
                        append(
                            &s,
                            &own,
                            ExpectedVersion::Exact(Version::new(done)),
                            &["own"],
                        )
                        .map_err(|e| e.to_string())?;
                        // The shared stream: exact versions, retried on conflict.
                        loop {
                            let v = block_on(s.stream_version(&hot)).map_err(|e| e.to_string())?;
                            match append(&s, &hot, ExpectedVersion::Exact(v), &["hot"]) {
                                Ok(_) => break,
                                Err(e) if e.is_conflict() => {
                                    conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                Err(e) => return Err(e.to_string()),
                            }
                        }
                        done += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "writer panicked")??;
        }
        let events = block_on(s.load(&hot, LoadOptions::new()))?;
        let versions: Vec<u64> = events.iter().map(|e| e.version.get()).collect();
        assert_eq!(versions, (1..=threads as u64 * per).collect::<Vec<_>>());
        let all = block_on(s.read(ReadOptions::from_start(10_000)))?.events;
        assert_eq!(all.len() as u64, 2 * threads as u64 * per);
        assert!(all.windows(2).all(|w| w[0].position < w[1].position));
        Ok(())
    })
}

#[test]
fn notifier_wakes_after_commit() -> TestResult {
    both(|s| {
        let mut sub = s.listen()?;
        let a = stream("account", "a-1")?;
        let s2 = s.clone();
        let a2 = a.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            append(&s2, &a2, ExpectedVersion::Any, &["1"]).map(|r| r.last_position())
        });
        let seen = block_on(sub.changed())?;
        let written = writer.join().map_err(|_| "writer panicked")??;
        assert!(seen >= written);
        assert_eq!(s.notifier().latest(), written);
        Ok(())
    })
}

#[test]
fn other_processes_are_heard_through_data_version() -> TestResult {
    let dir = TempDir::new("watch")?;
    let path = dir.file("events.db");
    let listener = SqliteStore::open(&path)?;
    let watcher = listener.watch_external_writes(Duration::from_millis(5))?;
    let mut sub = listener.listen()?;
    // A second store on the same file stands in for another process.
    let other = SqliteStore::open(&path)?;
    let a = stream("account", "a-1")?;
    let r = append(&other, &a, ExpectedVersion::Any, &["1"])?;
    let seen = block_on(sub.changed())?;
    assert_eq!(seen, r.last_position());

    let relay_a = other.change_relay();
    let relay_b = listener.change_relay();
    let id = block_on(relay_a.broadcast("orders", Some("o-1")))?;
    block_on(sub.changed())?;
    let changes = block_on(relay_b.changes_after(0, 100))?;
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].id, changes[0].topic.as_str()), (id, "orders"));
    assert_eq!(changes[0].origin, relay_a.origin());
    block_on(relay_a.broadcast("orders", None))?;
    block_on(relay_a.broadcast("orders", None))?;
    assert_eq!(block_on(relay_b.prune(1))?, 2);
    assert_eq!(block_on(relay_b.changes_after(0, 100))?.len(), 1);
    assert!(block_on(relay_b.changes_after(0, 0)).is_err_and(|e| e.is_validation()));
    block_on(watcher.shutdown());
    Ok(())
}

#[test]
fn foreign_and_newer_files_are_refused() -> TestResult {
    let dir = TempDir::new("foreign")?;
    // Random bytes.
    let junk = dir.file("junk.db");
    std::fs::write(
        &junk,
        (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )?;
    assert!(matches!(
        SqliteStore::open(&junk),
        Err(OpenError::NotADatabase { .. })
    ));
    // Another application's database.
    let foreign = dir.file("foreign.db");
    {
        let c = rusqlite::Connection::open(&foreign)?;
        c.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")?;
    }
    assert!(matches!(
        SqliteStore::open(&foreign),
        Err(OpenError::NotEskit { .. })
    ));
    // A newer schema.
    let newer = dir.file("newer.db");
    block_on(SqliteStore::open(&newer)?.close());
    {
        let c = rusqlite::Connection::open(&newer)?;
        c.execute(
            "INSERT INTO eskit_schema (version, applied_at) VALUES (?1, 0)",
            [eskit_sqlite::SCHEMA_VERSION + 1],
        )?;
    }
    match SqliteStore::open(&newer) {
        Err(OpenError::NewerSchema { found, supported }) => {
            assert_eq!(
                (found, supported),
                (
                    eskit_sqlite::SCHEMA_VERSION + 1,
                    eskit_sqlite::SCHEMA_VERSION
                )
            );
        }
        other => return Err(format!("expected NewerSchema, got {other:?}").into()),
    }
    // An empty file is a fresh store.
    let empty = dir.file("empty.db");
    std::fs::write(&empty, b"")?;
    block_on(SqliteStore::open(&empty)?.close());
    Ok(())
}

#[test]
fn options_are_checked_at_construction() -> TestResult {
    assert!(matches!(
        "off".parse::<Synchronous>(),
        Err(OpenError::SynchronousOff)
    ));
    assert!(matches!(
        "OFF".parse::<Synchronous>(),
        Err(OpenError::SynchronousOff)
    ));
    assert!(matches!(
        "0".parse::<Synchronous>(),
        Err(OpenError::SynchronousOff)
    ));
    assert!(matches!(
        "fast".parse::<Synchronous>(),
        Err(OpenError::UnknownSynchronous(_))
    ));
    assert_eq!("Full".parse::<Synchronous>()?, Synchronous::Full);
    assert!(matches!(
        SqliteStore::open_with(SqliteOptions::in_memory().with_readers(0)),
        Err(OpenError::InvalidOption {
            name: "readers",
            ..
        })
    ));
    let s = SqliteStore::open_in_memory()?;
    assert!(s.watch_external_writes(Duration::ZERO).is_err());
    Ok(())
}

#[test]
fn stored_data_is_reopened_intact() -> TestResult {
    let dir = TempDir::new("reopen")?;
    let path = dir.file("events.db");
    for sync in [Synchronous::Normal, Synchronous::Full] {
        let s = SqliteStore::open_with(SqliteOptions::file(&path).with_synchronous(sync))?;
        let a = stream("account", &format!("{sync}"))?;
        append(&s, &a, ExpectedVersion::NoStream, &["1", "2"])?;
        block_on(s.close());
        let s = block_on(SqliteStore::connect(SqliteOptions::file(&path)))?;
        assert_eq!(block_on(s.load(&a, LoadOptions::new()))?.len(), 2);
        assert!(block_on(s.integrity_check())?.is_empty());
    }
    Ok(())
}

#[test]
fn a_damaged_row_is_reported_not_returned() -> TestResult {
    let dir = TempDir::new("damaged")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    let a = stream("account", "a-1")?;
    append(
        &s,
        &a,
        ExpectedVersion::Any,
        &["{\"amount\":100}", "{\"amount\":5}"],
    )?;
    block_on(s.snapshots().save(Snapshot {
        stream: a.clone(),
        version: Version::new(1),
        schema_version: 1,
        codec: "json".into(),
        state: b"1".to_vec(),
        created_at: Timestamp::now(),
    }))?;
    {
        let c = rusqlite::Connection::open(&path)?;
        c.execute(
            "UPDATE eskit_events SET payload = X'7B22616D6F756E74223A3930307D' WHERE version = 1",
            [],
        )?;
        c.execute(
            "UPDATE eskit_events SET metadata = '{not json' WHERE version = 2",
            [],
        )?;
        c.execute("UPDATE eskit_snapshots SET state = X'32'", [])?;
    }
    let e = block_on(s.load(&a, LoadOptions::new())).err();
    assert!(matches!(e, Some(StoreError::Corrupt { .. })), "{e:?}");
    let e = block_on(s.load(&a, LoadOptions::new().with_from(Version::new(2)))).err();
    assert!(matches!(e, Some(StoreError::Corrupt { .. })), "{e:?}");
    let e = block_on(s.read(ReadOptions::from_start(10))).err();
    assert!(matches!(e, Some(StoreError::Corrupt { .. })), "{e:?}");
    let e = block_on(s.snapshots().load(&a)).err();
    assert!(matches!(e, Some(StoreError::Corrupt { .. })), "{e:?}");
    Ok(())
}

#[test]
fn public_futures_are_send() -> TestResult {
    fn assert_send<T: Send>(_: &T) {}
    let s = SqliteStore::open_in_memory()?;
    let a = stream("t", "a")?;
    assert_send(&s.append(&a, ExpectedVersion::Any, Vec::new(), AppendOptions::new()));
    assert_send(&s.load(&a, LoadOptions::new()));
    assert_send(&s.read(ReadOptions::from_start(1)));
    assert_send(&s.status(&a));
    assert_send(&s.snapshots().load(&a));
    assert_send(&s.checkpoints().save("x", GlobalCursor::START));
    assert_send(&s.change_relay().broadcast("x", None));
    assert_send(&SqliteStore::connect(SqliteOptions::in_memory()));
    Ok(())
}

/// Appends `n` events cycling through three kinds (two types, one of them
/// at two schema versions, two codecs), every seventh with metadata.
fn append_mixed(s: &SqliteStore, st: &eskit_core::event::StreamName, n: u64) -> TestResult {
    let kinds = [
        ("Opened", 1, "json"),
        ("Moved", 1, "cbor"),
        ("Moved", 2, "json"),
    ];
    for chunk in (1..=n).collect::<Vec<_>>().chunks(250) {
        let events = chunk
            .iter()
            .map(|i| {
                let (ty, v, codec) = kinds[(*i % 3) as usize];
                Ok(eskit_core::event::NewEvent::new(
                    EventType::new(ty)?,
                    i.to_string().into_bytes(),
                )
                .with_schema_version(v)
                .with_codec(codec))
            })
            .collect::<Result<Vec<_>, eskit_core::event::InvalidName>>()?;
        block_on(s.append(st, ExpectedVersion::Any, events, AppendOptions::new()))?;
        let meta = Metadata::new_chain(Principal::user("ada")).with_extra("k", "v");
        block_on(s.append(
            st,
            ExpectedVersion::Any,
            vec![event("Opened", "{}")?],
            AppendOptions::new().with_metadata(meta),
        ))?;
    }
    Ok(())
}

#[test]
fn long_loads_and_reads_cross_batches_intact() -> TestResult {
    both(|s| {
        let a = stream("account", "long")?;
        append_mixed(s, &a, 1000)?;
        let all = block_on(s.load(&a, LoadOptions::new()))?;
        assert_eq!(all.len(), 1004);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.version.get(), i as u64 + 1);
            assert_eq!(e.stream, a);
        }
        let plain: Vec<_> = all.iter().filter(|e| e.metadata.is_empty()).collect();
        assert_eq!(plain.len(), 1000);
        for e in &plain {
            let i: u64 = std::str::from_utf8(&e.payload)?.parse()?;
            let want = [
                ("Opened", 1, "json"),
                ("Moved", 1, "cbor"),
                ("Moved", 2, "json"),
            ][(i % 3) as usize];
            assert_eq!(
                (e.event_type.as_str(), e.schema_version, e.codec.as_str()),
                want,
                "event {i}"
            );
        }
        assert!(
            all.iter()
                .filter(|e| !e.metadata.is_empty())
                .all(|e| { e.metadata.extra().get("k").map(String::as_str) == Some("v") })
        );
        let moved = block_on(s.load(
            &a,
            LoadOptions::new().with_event_types([EventType::new("Moved")?]),
        ))?;
        assert_eq!(moved.len(), 667);
        assert!(moved.iter().all(|e| e.event_type.as_str() == "Moved"));
        let global = block_on(s.read(ReadOptions::from_start(2000)))?.events;
        assert_eq!(global.len(), all.len());
        assert!(
            global
                .iter()
                .zip(&all)
                .all(|(g, l)| g.id == l.id && g.payload == l.payload)
        );
        Ok(())
    })
}

#[test]
fn a_damaged_row_deep_in_a_long_load_fails_the_whole_load() -> TestResult {
    let dir = TempDir::new("damaged-long")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    let a = stream("account", "long")?;
    append_mixed(&s, &a, 1000)?;
    {
        let c = rusqlite::Connection::open(&path)?;
        c.execute(
            "UPDATE eskit_events SET payload = X'3939' WHERE version = 900",
            [],
        )?;
    }
    let e = block_on(s.load(&a, LoadOptions::new())).err();
    assert!(matches!(e, Some(StoreError::Corrupt { .. })), "{e:?}");
    let e = block_on(s.read(ReadOptions::from_start(2000))).err();
    assert!(matches!(e, Some(StoreError::Corrupt { .. })), "{e:?}");
    let head = block_on(s.load(&a, LoadOptions::new().with_to(Version::new(899))))?;
    assert_eq!(head.len(), 899);
    Ok(())
}

#[test]
fn kinds_written_by_another_handle_are_read_back() -> TestResult {
    let dir = TempDir::new("kinds")?;
    let path = dir.file("events.db");
    let first = SqliteStore::open(&path)?;
    let second = SqliteStore::open(&path)?;
    let a = stream("account", "a")?;
    append(&first, &a, ExpectedVersion::NoStream, &["1"])?;
    assert_eq!(block_on(second.load(&a, LoadOptions::new()))?.len(), 1);
    // A kind new to `first`'s caches, written through `second`.
    block_on(second.append(
        &a,
        ExpectedVersion::Exact(Version::new(1)),
        vec![
            eskit_core::event::NewEvent::new(EventType::new("Renamed")?, b"2".to_vec())
                .with_schema_version(3)
                .with_codec("cbor"),
        ],
        AppendOptions::new(),
    ))?;
    let got = block_on(first.load(&a, LoadOptions::new()))?;
    assert_eq!(got.len(), 2);
    assert_eq!(
        (
            got[1].event_type.as_str(),
            got[1].schema_version,
            got[1].codec.as_str()
        ),
        ("Renamed", 3, "cbor")
    );
    // And `first`'s writer finds it instead of inserting it twice.
    block_on(first.append(
        &a,
        ExpectedVersion::Any,
        vec![
            eskit_core::event::NewEvent::new(EventType::new("Renamed")?, b"3".to_vec())
                .with_schema_version(3)
                .with_codec("cbor"),
        ],
        AppendOptions::new(),
    ))?;
    block_on(first.close());
    block_on(second.close());
    let c = rusqlite::Connection::open(&path)?;
    let kinds: i64 = c.query_row("SELECT count(*) FROM eskit_event_kinds", [], |r| r.get(0))?;
    assert_eq!(kinds, 2);
    let readable: Vec<(String, String, i64, String)> = c
        .prepare("SELECT stream_id, event_type, schema_version, codec FROM eskit_event_log ORDER BY position")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    assert_eq!(readable.len(), 3);
    assert_eq!(
        readable[2],
        ("a".into(), "Renamed".into(), 3, "cbor".into())
    );
    Ok(())
}

#[test]
fn two_handles_on_one_file_interleave_appends_without_reusing_positions() -> TestResult {
    let dir = TempDir::new("two-writers")?;
    let path = dir.file("events.db");
    let handles = [SqliteStore::open(&path)?, SqliteStore::open(&path)?];
    let mut acknowledged = Vec::new();
    for i in 0..60_usize {
        // Irregular turns, so each writer sometimes commits twice in a row.
        let h = &handles[(i * 7 / 3) % 2];
        let st = stream("account", &format!("s-{}", i % 5))?;
        let r = append(h, &st, ExpectedVersion::Any, &["{}", "{}"])?;
        acknowledged.extend(r.records.iter().map(|r| r.position));
    }
    let mut sorted = acknowledged.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 120, "a position was handed out twice");
    let all = block_on(handles[0].read(ReadOptions::from_start(1000)))?.events;
    let read: Vec<Position> = all.iter().map(|e| e.position).collect();
    assert_eq!(read, sorted);
    for h in handles {
        block_on(h.close());
    }
    Ok(())
}

#[test]
fn positions_of_deleted_newest_events_are_not_reused_after_reopen() -> TestResult {
    let dir = TempDir::new("high-water")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    let (a, b) = (stream("account", "a")?, stream("account", "b")?);
    append(&s, &a, ExpectedVersion::NoStream, &["1", "2", "3"])?;
    let latest = block_on(s.head())?;
    block_on(s.delete(&a))?;
    block_on(s.close());
    // A fresh handle knows nothing but the file; so does another handle
    // whose writer saw the positions before the delete.
    let s = SqliteStore::open(&path)?;
    let other = SqliteStore::open(&path)?;
    let r = append(&s, &b, ExpectedVersion::NoStream, &["x"])?;
    assert!(
        r.records[0].cursor() > latest,
        "{:?} <= {latest:?}",
        r.records[0].position
    );
    let r2 = append(&other, &b, ExpectedVersion::Any, &["y"])?;
    assert!(r2.records[0].position > r.records[0].position);
    block_on(other.close());
    block_on(s.close());
    Ok(())
}

#[test]
fn locks_exclude_across_handles_on_one_file_and_hand_over_on_release() -> TestResult {
    use eskit_core::store::LockRegistry;
    let dir = TempDir::new("locks")?;
    let path = dir.file("events.db");
    // Two handles stand for two processes: neither sees the other's memory.
    let (one, two) = (SqliteStore::open(&path)?, SqliteStore::open(&path)?);
    let (a, b) = (one.locks(), two.locks());
    let held = block_on(a.acquire("processor:mail"))?;
    assert!(block_on(b.try_acquire("processor:mail"))?.is_none());
    assert!(block_on(b.try_acquire("processor:other"))?.is_some());
    let waiter = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        block_on(b.acquire("processor:mail")).map(|g| (g, started.elapsed()))
    });
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        !waiter.is_finished(),
        "acquired a lock another handle holds"
    );
    drop(held);
    let (guard, waited) = waiter.join().map_err(|_| "waiter panicked")??;
    assert!(waited >= Duration::from_millis(150));
    assert!(block_on(a.try_acquire("processor:mail"))?.is_none());
    drop(guard);
    // The waiter polls other handles every LOCK_POLL_INTERVAL; give it a
    // few rounds.
    let mut free = false;
    for _ in 0..50 {
        if block_on(a.try_acquire("processor:mail"))?.is_some() {
            free = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(free, "a released lock stayed taken");
    Ok(())
}

#[test]
fn an_expired_lease_is_taken_over_and_the_old_guard_does_not_release_it() -> TestResult {
    use eskit_core::store::LockRegistry;
    let dir = TempDir::new("lease")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    let (dead, live, third) = (s.locks(), s.locks(), s.locks());
    let stale = block_on(dead.acquire("leader"))?;
    // The holder "dies": its lease runs out without renewal.
    rusqlite::Connection::open(&path)?.execute("UPDATE eskit_locks SET expires_at = 0", [])?;
    let taken = block_on(live.try_acquire("leader"))?;
    assert!(taken.is_some(), "an expired lease was not taken over");
    drop(stale);
    assert!(
        block_on(third.try_acquire("leader"))?.is_none(),
        "the expired holder released the new holder's lock"
    );
    drop(taken);
    assert!(block_on(third.try_acquire("leader"))?.is_some());
    Ok(())
}

#[test]
fn held_leases_are_renewed_and_bad_leases_refused() -> TestResult {
    use eskit_core::store::LockRegistry;
    let dir = TempDir::new("renew")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    // Renewed every third of a second; two late renewals still keep it.
    let short = s.locks_with_lease(Duration::from_secs(1))?;
    let other = s.locks();
    let held = block_on(short.acquire("k"))?;
    // Several leases long: only renewal keeps it held.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        block_on(other.try_acquire("k"))?.is_none(),
        "a held lease ran out"
    );
    drop(held);
    for bad in [Duration::ZERO, eskit_sqlite::MAX_LOCK_LEASE * 2] {
        assert!(matches!(
            s.locks_with_lease(bad),
            Err(OpenError::InvalidOption { .. })
        ));
    }
    Ok(())
}

#[test]
fn close_returns_after_every_connection_to_the_file_is_closed() -> TestResult {
    fn open_handles(path: &std::path::Path) -> std::io::Result<usize> {
        let mut n = 0;
        for fd in std::fs::read_dir("/proc/self/fd")? {
            if let Ok(target) = std::fs::read_link(fd?.path())
                && target.starts_with(path)
            {
                n += 1;
            }
        }
        Ok(n)
    }
    let dir = TempDir::new("close")?;
    let path = dir.file("events.db");
    for _ in 0..5 {
        let s = SqliteStore::open(&path)?;
        append(&s, &stream("t", "a")?, ExpectedVersion::Any, &["{}"])?;
        block_on(s.load(&stream("t", "a")?, LoadOptions::new()))?;
        assert!(open_handles(&path)? > 0);
        block_on(s.close());
        assert_eq!(open_handles(&path)?, 0, "a connection outlived close()");
    }
    Ok(())
}

#[test]
fn a_global_read_reports_an_event_whose_stream_row_is_gone() -> TestResult {
    let dir = TempDir::new("orphan")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    append(&s, &stream("t", "kept")?, ExpectedVersion::Any, &["{}"])?;
    append(&s, &stream("t", "orphan")?, ExpectedVersion::Any, &["{}"])?;
    rusqlite::Connection::open(&path)?
        .execute("DELETE FROM eskit_streams WHERE stream_id = 'orphan'", [])?;
    // Skipping the event would make a catching-up projection miss it silently.
    let e = block_on(s.read(ReadOptions::from_start(10))).err();
    assert!(matches!(e, Some(StoreError::Corrupt { .. })), "{e:?}");
    Ok(())
}

/// What a load should give: these versions, or `StoreError::Corrupt`.
#[derive(Debug)]
enum Loaded {
    Versions(Vec<u64>),
    Corrupt,
}

/// Loads `st` with `options` and compares the outcome with `expect`.
fn check_load(
    s: &SqliteStore,
    st: &eskit_core::event::StreamName,
    options: LoadOptions,
    expect: Loaded,
) -> TestResult {
    let what = format!("{st} {options:?}");
    let got = block_on(s.load(st, options))
        .map(|events| events.iter().map(|e| e.version.get()).collect::<Vec<u64>>());
    match (got, expect) {
        (Ok(got), Loaded::Versions(want)) if got == want => Ok(()),
        (Err(StoreError::Corrupt { .. }), Loaded::Corrupt) => Ok(()),
        (got, expect) => Err(format!("{what}: {got:?}, expected {expect:?}").into()),
    }
}

#[test]
fn a_row_missing_inside_a_stream_makes_its_loads_corrupt() -> TestResult {
    use Loaded::{Corrupt, Versions};
    let dir = TempDir::new("holes")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    let middle = stream("account", "middle")?;
    let last = stream("account", "last")?;
    let first = stream("account", "first")?;
    let intact = stream("account", "intact")?;
    let gone = stream("account", "gone")?;
    for st in [&middle, &last, &first, &intact, &gone] {
        append(
            &s,
            st,
            ExpectedVersion::NoStream,
            &["1", "2", "3", "4", "5"],
        )?;
    }
    let long = stream("account", "long")?;
    append_mixed(&s, &long, 1000)?;
    block_on(s.delete(&gone))?;
    {
        // Rows removed by hand, the way a damaged file or a careless script
        // loses them; the stream rows still say how far each stream got.
        let c = rusqlite::Connection::open(&path)?;
        for (id, version) in [("middle", 3), ("last", 5), ("first", 1), ("long", 129)] {
            let n = c.execute(
                "DELETE FROM eskit_events WHERE version = ?2 AND stream = \
                 (SELECT sid FROM eskit_streams WHERE stream_id = ?1)",
                (id, version),
            )?;
            assert_eq!(n, 1, "{id} {version}");
        }
    }
    let v = Version::new;
    let all = LoadOptions::new;
    let e = || EventType::from_static("E");
    // Version 3 is missing.
    check_load(&s, &middle, all(), Corrupt)?;
    check_load(&s, &middle, all().with_from(v(2)), Corrupt)?;
    check_load(&s, &middle, all().with_from(v(3)), Corrupt)?;
    check_load(&s, &middle, all().with_to(v(3)), Corrupt)?;
    check_load(&s, &middle, all().with_limit(3), Corrupt)?;
    check_load(&s, &middle, all().with_from(v(4)), Versions(vec![4, 5]))?;
    check_load(&s, &middle, all().with_to(v(2)), Versions(vec![1, 2]))?;
    check_load(&s, &middle, all().with_limit(2), Versions(vec![1, 2]))?;
    check_load(
        &s,
        &middle,
        all().with_from(v(2)).with_to(v(2)),
        Versions(vec![2]),
    )?;
    // A type filter skips versions by design, so it cannot tell a missing
    // row from an event of another type.
    check_load(
        &s,
        &middle,
        all().with_event_types([e()?]),
        Versions(vec![1, 2, 4, 5]),
    )?;
    // The newest version is missing: the stream row says 5.
    check_load(&s, &last, all(), Corrupt)?;
    check_load(&s, &last, all().with_from(v(5)), Corrupt)?;
    check_load(&s, &last, all().with_to(v(4)), Versions(vec![1, 2, 3, 4]))?;
    check_load(&s, &last, all().with_limit(4), Versions(vec![1, 2, 3, 4]))?;
    check_load(&s, &last, all().with_from(v(6)), Versions(vec![]))?;
    // The first version is missing.
    check_load(&s, &first, all(), Corrupt)?;
    check_load(
        &s,
        &first,
        all().with_from(v(2)),
        Versions(vec![2, 3, 4, 5]),
    )?;
    // Intact, deleted and unknown streams load as before.
    check_load(&s, &intact, all(), Versions(vec![1, 2, 3, 4, 5]))?;
    check_load(&s, &intact, all().with_from(v(5)), Versions(vec![5]))?;
    check_load(&s, &gone, all(), Versions(vec![]))?;
    check_load(&s, &stream("account", "never")?, all(), Versions(vec![]))?;
    // A hole right after the first batch of rows a reader hands over.
    check_load(&s, &long, all(), Corrupt)?;
    check_load(&s, &long, all().with_from(v(100)), Corrupt)?;
    check_load(
        &s,
        &long,
        all().with_from(v(130)).with_limit(3),
        Versions(vec![130, 131, 132]),
    )?;
    block_on(s.close());
    Ok(())
}

#[test]
fn loads_with_every_combination_of_bounds_and_types_return_the_right_events() -> TestResult {
    // Every combination of bounds and a type filter gives the versions a
    // filter in memory gives.
    both(|s| {
        let st = stream("combo", "1").map_err(|e| e.to_string())?;
        let events = (1..=12u64)
            .map(|i| {
                let ty = if i % 3 == 0 { "Tick" } else { "Tock" };
                eskit_core::event::NewEvent::new(
                    EventType::new(ty).map_err(StoreError::from)?,
                    i.to_string().into_bytes(),
                )
                .with_codec("json")
                .pipe(Ok)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        block_on(s.append(&st, ExpectedVersion::NoStream, events, AppendOptions::new()))?;
        let tick = EventType::new("Tick")?;
        for from in [None, Some(1u64), Some(4)] {
            for to in [None, Some(9u64)] {
                for limit in [None, Some(2usize)] {
                    for typed in [false, true] {
                        let mut options = LoadOptions::new();
                        if let Some(v) = from {
                            options = options.with_from(Version::new(v));
                        }
                        if let Some(v) = to {
                            options = options.with_to(Version::new(v));
                        }
                        if let Some(n) = limit {
                            options = options.with_limit(n);
                        }
                        if typed {
                            options = options.with_event_types([tick.clone()]);
                        }
                        let got: Vec<u64> = block_on(s.load(&st, options))?
                            .iter()
                            .map(|e| e.version.get())
                            .collect();
                        let want: Vec<u64> = (from.unwrap_or(1)..=to.unwrap_or(12))
                            .filter(|v| !typed || v % 3 == 0)
                            .take(limit.unwrap_or(usize::MAX))
                            .collect();
                        assert_eq!(
                            got, want,
                            "from {from:?} to {to:?} limit {limit:?} typed {typed}"
                        );
                    }
                }
            }
        }
        Ok(())
    })
}

/// A changed payload fails `load` and `load_each` alike, and what
/// `load_each` handed over before the damaged row is the stream as written.
#[test]
fn a_damaged_row_fails_load_and_load_each_alike() -> TestResult {
    for caller_thread in [false, true] {
        let dir = TempDir::new("damaged-each")?;
        let path = dir.file("events.db");
        let s = SqliteStore::open_with(
            SqliteOptions::file(&path).with_calls_on_caller_thread(caller_thread),
        )?;
        let st = stream("each", "damaged")?;
        let payloads: Vec<String> = (1..=300).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        append(&s, &st, ExpectedVersion::NoStream, &refs)?;
        let clean = block_on(s.load(&st, LoadOptions::new()))?;
        rusqlite::Connection::open(&path)?.execute(
            "UPDATE eskit_events SET payload = CAST('666' AS BLOB) WHERE version = 200",
            [],
        )?;
        let loaded = block_on(s.load(&st, LoadOptions::new()));
        assert!(
            matches!(loaded, Err(StoreError::Corrupt { .. })),
            "{loaded:?}"
        );
        let mut handed = Vec::new();
        let each = block_on(s.load_each(&st, LoadOptions::new(), |e| {
            handed.push(e);
            Ok(())
        }));
        assert!(matches!(each, Err(StoreError::Corrupt { .. })), "{each:?}");
        assert!(handed.len() < 200, "{} events handed over", handed.len());
        assert_eq!(handed[..], clean[..handed.len()]);
        block_on(s.close());
    }
    Ok(())
}

#[test]
fn load_each_hands_over_what_load_returns_and_stops_at_the_first_error() -> TestResult {
    both(|s| {
        let st = stream("each", "1").map_err(|e| e.to_string())?;
        // Several reader batches (128 rows each).
        let payloads: Vec<String> = (1..=300).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        append(s, &st, ExpectedVersion::NoStream, &refs)?;
        let loaded = block_on(s.load(&st, LoadOptions::new()))?;
        let mut handed = Vec::new();
        block_on(s.load_each(&st, LoadOptions::new(), |e| {
            handed.push(e);
            Ok(())
        }))?;
        assert_eq!(handed, loaded);
        let mut calls = 0;
        let r = block_on(s.load_each(&st, LoadOptions::new(), |_| {
            calls += 1;
            if calls == 130 {
                Err(StoreError::internal("enough"))
            } else {
                Ok(())
            }
        }));
        assert!(matches!(r, Err(StoreError::Internal { .. })), "{r:?}");
        assert_eq!(calls, 130);
        // The store still serves reads after a load was stopped.
        assert_eq!(block_on(s.load(&st, LoadOptions::new()))?.len(), 300);
        Ok(())
    })
}

/// Eight writers, a third of whose appends are dropped after their first
/// poll (queued, then cancelled): the callers of a group commit wake one
/// another, and a cancelled one must not leave the others waiting. Every
/// awaited append completes, and each stream holds the awaited appends
/// plus at most the cancelled ones (a queued append may still commit).
#[test]
fn cancelled_appends_among_concurrent_writers_keep_no_writer_waiting() -> TestResult {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    const WRITERS: usize = 8;
    const APPENDS: u64 = 150;
    both(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let s = s.clone();
                std::thread::spawn(move || -> Result<(u64, u64), String> {
                    let st = stream("writer", &format!("w-{w}")).map_err(|e| e.to_string())?;
                    let (mut awaited, mut cancelled) = (0, 0);
                    for i in 0..APPENDS {
                        let e = event("Appended", "1").map_err(|e| e.to_string())?;
                        let fut =
                            s.append(&st, ExpectedVersion::Any, vec![e], AppendOptions::new());
                        if i % 3 == 0 {
                            let mut fut = std::pin::pin!(fut);
                            let mut cx = Context::from_waker(Waker::noop());
                            match fut.as_mut().poll(&mut cx) {
                                Poll::Ready(r) => {
                                    r.map_err(|e| e.to_string())?;
                                    awaited += 1;
                                }
                                Poll::Pending => cancelled += 1,
                            }
                        } else {
                            block_on(fut).map_err(|e| e.to_string())?;
                            awaited += 1;
                        }
                    }
                    Ok((awaited, cancelled))
                })
            })
            .collect();
        let mut counts = Vec::new();
        for w in writers {
            counts.push(w.join().map_err(|_| "a writer panicked")??);
        }
        // The writer thread finishes what was queued; an append awaited
        // afterwards sees every earlier one committed or dropped.
        let probe = stream("writer", "probe")?;
        append(s, &probe, ExpectedVersion::Any, &["1"])?;
        for (w, (awaited, cancelled)) in counts.into_iter().enumerate() {
            assert_eq!(awaited + cancelled, APPENDS);
            let v = block_on(s.stream_version(&stream("writer", &format!("w-{w}"))?))?.get();
            assert!(
                (awaited..=awaited + cancelled).contains(&v),
                "writer {w}: version {v}, {awaited} awaited, {cancelled} cancelled"
            );
        }
        Ok(())
    })
}
