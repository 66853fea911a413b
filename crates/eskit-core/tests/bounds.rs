//! Every bound and every `ExpectedVersion` case, each with its error.
#![allow(clippy::expect_used, clippy::panic)] // test fixtures

use eskit_core::limits::*;
use eskit_core::{
    backend::{validate_idempotency_key, validate_name},
    error::{StoreError, ValidationError},
    event::{
        EventType, ExpectedVersion, InvalidNameReason, Metadata, NameKind, NewEvent, Position,
        StreamName, Timestamp, Version,
    },
    memory::MemoryStore,
    rt::block_on,
    store::{
        AppendOptions, EventStore, GlobalReader, LoadOptions, ReadOptions, Snapshot, SnapshotStore,
        StreamLifecycle,
    },
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn ev(payload: &[u8]) -> NewEvent {
    NewEvent::new(EventType::new("E").expect("valid"), payload.to_vec())
}

fn stream() -> StreamName {
    StreamName::new("t", "s").expect("valid")
}

/// `n` events with this payload, each with its own id.
fn many(payload: &[u8], n: usize) -> Vec<NewEvent> {
    (0..n).map(|_| ev(payload)).collect()
}

/// Appends and returns the validation error, if any.
fn append_err(events: Vec<NewEvent>, options: AppendOptions) -> Option<ValidationError> {
    let store = MemoryStore::new();
    match block_on(store.append(&stream(), ExpectedVersion::Any, events, options)) {
        Err(StoreError::Validation(v)) => Some(v),
        Err(other) => panic!("expected a validation error, got {other:?}"),
        Ok(_) => None,
    }
}

fn check(name: &str, got: Option<ValidationError>, expect: Option<ValidationError>) {
    assert_eq!(got, expect, "case: {name}");
}

#[test]
fn name_bounds() {
    let long = "x".repeat(MAX_NAME_BYTES);
    let too_long = "x".repeat(MAX_NAME_BYTES + 1);
    let cases: &[(&str, Option<InvalidNameReason>)] = &[
        ("a", None),
        (&long, None),
        ("", Some(InvalidNameReason::Empty)),
        (
            &too_long,
            Some(InvalidNameReason::TooLong {
                len: MAX_NAME_BYTES + 1,
            }),
        ),
        ("x\0y", Some(InvalidNameReason::ContainsNul)),
        ("ünï/cödé.-_ \u{202e}", None),
    ];
    for kind in [
        NameKind::StreamType,
        NameKind::StreamId,
        NameKind::EventType,
    ] {
        for (input, expect) in cases {
            let got = validate_name(kind, input).err().map(|e| {
                assert_eq!(e.kind(), kind);
                e.reason()
            });
            assert_eq!(&got, expect, "{kind} {input:?}");
        }
    }
    // The constructors enforce the same rules.
    assert!(StreamName::new("", "x").is_err());
    assert!(StreamName::new("x", &*too_long).is_err());
    assert!(EventType::new("a\0").is_err());
    // A multi-byte name is measured in bytes, not characters.
    let multibyte = "é".repeat(MAX_NAME_BYTES / 2 + 1);
    assert!(validate_name(NameKind::StreamId, &multibyte).is_err());
}

#[test]
fn append_bounds() {
    let o = AppendOptions::new;
    check(
        "no events",
        append_err(vec![], o()),
        Some(ValidationError::NoEvents),
    );
    check(
        "max events",
        append_err(many(b"", MAX_EVENTS_PER_APPEND), o()),
        None,
    );
    check(
        "too many events",
        append_err(vec![ev(b""); MAX_EVENTS_PER_APPEND + 1], o()),
        Some(ValidationError::TooManyEvents {
            count: MAX_EVENTS_PER_APPEND + 1,
        }),
    );
    // JetStream's default atomic batch limit: one answer for every backend.
    check(
        "1,001 events, past JetStream's batch limit",
        append_err(many(b"", 1_001), o()),
        Some(ValidationError::TooManyEvents { count: 1_001 }),
    );
    check(
        "payload at max",
        append_err(vec![ev(&vec![7; MAX_PAYLOAD_BYTES])], o()),
        None,
    );
    check(
        "payload over max",
        append_err(vec![ev(b"ok"), ev(&vec![7; MAX_PAYLOAD_BYTES + 1])], o()),
        Some(ValidationError::PayloadTooLarge {
            index: 1,
            len: MAX_PAYLOAD_BYTES + 1,
        }),
    );
    let n = MAX_APPEND_BYTES / MAX_PAYLOAD_BYTES + 1;
    check(
        "append over total",
        append_err(many(&vec![1; MAX_PAYLOAD_BYTES], n), o()),
        Some(ValidationError::AppendTooLarge {
            len: n * MAX_PAYLOAD_BYTES,
        }),
    );
    check(
        "schema version zero",
        append_err(vec![ev(b"").with_schema_version(0)], o()),
        Some(ValidationError::ZeroSchemaVersion),
    );
    check(
        "empty codec name",
        append_err(vec![ev(b"").with_codec("")], o()),
        validate_name(NameKind::Codec, "")
            .err()
            .map(ValidationError::Name),
    );
}

#[test]
fn metadata_bounds() {
    let o = AppendOptions::new;
    let full =
        (0..MAX_METADATA_ENTRIES).fold(Metadata::new(), |m, i| m.with_extra(format!("k{i}"), "v"));
    check(
        "max entries",
        append_err(vec![ev(b"")], o().with_metadata(full.clone())),
        None,
    );
    check(
        "too many entries",
        append_err(
            vec![ev(b"")],
            o().with_metadata(full.with_extra("one-more", "v")),
        ),
        Some(ValidationError::TooManyMetadataEntries {
            count: MAX_METADATA_ENTRIES + 1,
        }),
    );
    let big = Metadata::new().with_extra("k", "v".repeat(MAX_METADATA_BYTES));
    check(
        "too large",
        append_err(vec![ev(b"")], o().with_metadata(big)),
        Some(ValidationError::MetadataTooLarge {
            len: MAX_METADATA_BYTES + 1,
        }),
    );
    let at_max = Metadata::new().with_extra("k", "v".repeat(MAX_METADATA_BYTES - 1));
    check(
        "at max size",
        append_err(vec![ev(b"")], o().with_metadata(at_max)),
        None,
    );
    check(
        "empty metadata key",
        append_err(
            vec![ev(b"")],
            o().with_metadata(Metadata::new().with_extra("", "v")),
        ),
        validate_name(NameKind::MetadataKey, "")
            .err()
            .map(ValidationError::Name),
    );
    check(
        "empty idempotency key",
        append_err(vec![ev(b"")], o().with_idempotency_key("")),
        Some(ValidationError::InvalidIdempotencyKey { len: 0 }),
    );
    check(
        "long idempotency key",
        append_err(
            vec![ev(b"")],
            o().with_idempotency_key("k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1)),
        ),
        Some(ValidationError::InvalidIdempotencyKey {
            len: MAX_IDEMPOTENCY_KEY_BYTES + 1,
        }),
    );
    // A lookup by a key with NUL is refused as the append with it is, so
    // it never reaches a backend (PostgreSQL text cannot hold NUL).
    check(
        "idempotency key with NUL",
        validate_idempotency_key("x\0y").err(),
        Some(ValidationError::MetadataContainsNul),
    );
    check(
        "idempotency key in metadata",
        append_err(
            vec![ev(b"")],
            o().with_metadata(Metadata::new().with_idempotency_key("")),
        ),
        Some(ValidationError::InvalidIdempotencyKey { len: 0 }),
    );

    // set_extra enforces the bounds eagerly and leaves the metadata unchanged on error.
    let mut m = Metadata::new();
    for i in 0..MAX_METADATA_ENTRIES {
        m.set_extra(format!("k{i}"), "v").expect("within bounds");
    }
    let before = m.clone();
    assert_eq!(
        m.set_extra("over", "v"),
        Err(ValidationError::TooManyMetadataEntries {
            count: MAX_METADATA_ENTRIES + 1
        })
    );
    assert_eq!(m, before);
}

#[test]
fn read_and_lifecycle_bounds() -> TestResult {
    let store = MemoryStore::new();
    let s = stream();
    block_on(store.append(
        &s,
        ExpectedVersion::Any,
        vec![ev(b"")],
        AppendOptions::new(),
    ))?;
    let read = |limit| block_on(store.read(ReadOptions::from_start(limit)));
    assert!(matches!(
        read(0),
        Err(StoreError::Validation(ValidationError::InvalidLimit {
            limit: 0
        }))
    ));
    assert!(matches!(
        read(MAX_READ_LIMIT + 1),
        Err(StoreError::Validation(ValidationError::InvalidLimit { .. }))
    ));
    assert_eq!(read(MAX_READ_LIMIT)?.events.len(), 1);
    let types = (0..=MAX_FILTER_TYPES).map(|i| EventType::new(format!("T{i}")).expect("valid"));
    assert!(matches!(
        block_on(store.read(ReadOptions::from_start(10).with_event_types(types.clone()))),
        Err(StoreError::Validation(
            ValidationError::TooManyFilterTypes { .. }
        ))
    ));
    assert!(matches!(
        block_on(store.load(&s, LoadOptions::new().with_event_types(types))),
        Err(StoreError::Validation(
            ValidationError::TooManyFilterTypes { .. }
        ))
    ));
    assert!(matches!(
        block_on(store.load(&s, LoadOptions::new().with_limit(0))),
        Err(StoreError::Validation(ValidationError::InvalidLimit {
            limit: 0
        }))
    ));
    assert!(matches!(
        block_on(
            store.load(
                &s,
                LoadOptions::new()
                    .with_from(Version::new(5))
                    .with_to(Version::new(4))
            )
        ),
        Err(StoreError::Validation(
            ValidationError::InvalidVersionRange { .. }
        ))
    ));
    assert!(matches!(
        block_on(store.tombstone(&s, &"r".repeat(MAX_REASON_BYTES + 1))),
        Err(StoreError::Validation(
            ValidationError::ReasonTooLong { .. }
        ))
    ));
    assert!(matches!(
        block_on(store.archive(&s, &"r".repeat(MAX_REASON_BYTES + 1))),
        Err(StoreError::Validation(
            ValidationError::ReasonTooLong { .. }
        ))
    ));
    block_on(store.tombstone(&s, &"r".repeat(MAX_REASON_BYTES)))?;
    Ok(())
}

#[test]
fn snapshot_bounds() {
    let snaps = eskit_core::memory::MemorySnapshotStore::new();
    let snap = |state: Vec<u8>, schema_version| Snapshot {
        stream: stream(),
        version: Version::new(1),
        schema_version,
        codec: "c".into(),
        state,
        created_at: Timestamp::now(),
    };
    assert!(matches!(
        block_on(snaps.save(snap(vec![0; MAX_SNAPSHOT_BYTES + 1], 1))),
        Err(StoreError::Validation(
            ValidationError::SnapshotTooLarge { .. }
        ))
    ));
    assert!(matches!(
        block_on(snaps.save(snap(vec![], 0))),
        Err(StoreError::Validation(ValidationError::ZeroSchemaVersion))
    ));
    assert!(block_on(snaps.save(snap(vec![0; MAX_SNAPSHOT_BYTES], 1))).is_ok());
}

#[test]
fn expected_version_cases() -> TestResult {
    use ExpectedVersion::*;
    let v = Version::new;
    // (stream length before, expectation, succeeds)
    let cases = [
        (0, Any, true),
        (2, Any, true),
        (0, NoStream, true),
        (2, NoStream, false),
        (0, StreamExists, false),
        (2, StreamExists, true),
        (0, Exact(v(0)), true),
        (0, Exact(v(1)), false),
        (2, Exact(v(2)), true),
        (2, Exact(v(1)), false),
        (2, Exact(v(3)), false),
        (2, Exact(v(0)), false),
    ];
    for (len, expected, ok) in cases {
        let store = MemoryStore::new();
        let s = stream();
        if len > 0 {
            block_on(store.append(&s, Any, many(b"", len), AppendOptions::new()))?;
        }
        let result = block_on(store.append(&s, expected, vec![ev(b"x")], AppendOptions::new()));
        match (result, ok) {
            (Ok(r), true) => {
                assert_eq!(r.last_version(), v(len as u64 + 1), "{len} {expected}");
            }
            (
                Err(StoreError::WrongExpectedVersion {
                    stream: es,
                    expected: e,
                    actual,
                }),
                false,
            ) => {
                assert_eq!(
                    (es, e, actual),
                    (s.clone(), expected, v(len as u64)),
                    "{len} {expected}"
                );
                // Nothing was written.
                assert_eq!(block_on(store.stream_version(&s))?, v(len as u64));
            }
            (other, _) => panic!("len {len}, {expected}: unexpected {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn errors_are_matchable_and_readable() {
    let e = StoreError::WrongExpectedVersion {
        stream: stream(),
        expected: ExpectedVersion::Exact(Version::new(3)),
        actual: Version::new(5),
    };
    assert!(e.is_conflict());
    assert_eq!(
        e.to_string(),
        "concurrency conflict on stream `t/s`: expected version 3, actual version 5"
    );
    let v: StoreError = ValidationError::NoEvents.into();
    assert!(v.is_validation());
    assert_eq!(
        eskit_core::error::error_chain(&v),
        "invalid input: an append needs at least one event"
    );
}

#[test]
fn the_options_idempotency_key_wins_and_is_stored() -> TestResult {
    let store = MemoryStore::new();
    let opts = AppendOptions::new()
        .with_metadata(Metadata::new().with_idempotency_key("from-metadata"))
        .with_idempotency_key("from-options");
    assert_eq!(opts.idempotency_key(), Some("from-options"));
    block_on(store.append(
        &stream(),
        ExpectedVersion::Any,
        vec![ev(b"1")],
        opts.clone(),
    ))?;
    let again = block_on(store.append(&stream(), ExpectedVersion::Any, vec![ev(b"1")], opts))?;
    assert!(again.deduplicated);
    let events = block_on(store.load(&stream(), LoadOptions::new()))?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].metadata.idempotency_key(), Some("from-options"));
    Ok(())
}

#[test]
fn nul_in_metadata_values_is_refused() {
    let o = AppendOptions::new;
    for (label, md) in [
        ("correlation", Metadata::new().with_correlation_id("a\0b")),
        ("causation", Metadata::new().with_causation_id("\0")),
        ("extra value", Metadata::new().with_extra("k", "v\0")),
        (
            "principal",
            Metadata::new().with_initiator(eskit_core::event::Principal::user("x\0")),
        ),
    ] {
        check(
            label,
            append_err(vec![ev(b"")], o().with_metadata(md)),
            Some(ValidationError::MetadataContainsNul),
        );
    }
}

fn out_of_range<T>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Validation(ValidationError::OutOfRange { value })) if value == MAX_POSITION + 1)
}

#[test]
fn positions_and_versions_stay_within_max_position() -> TestResult {
    // Reads beyond MAX_POSITION are not errors, just empty.
    let store = MemoryStore::new();
    assert!(
        block_on(store.read(ReadOptions::new(
            eskit_core::event::GlobalCursor::new(u64::MAX, Position::new(u64::MAX)),
            1
        )))?
        .events
        .is_empty()
    );
    let over = MAX_POSITION + 1;
    let cps = eskit_core::memory::MemoryCheckpointStore::new();
    assert!(out_of_range(block_on(
        eskit_core::store::CheckpointStore::save(
            &cps,
            "cp",
            eskit_core::event::GlobalCursor::at(Position::new(over))
        )
    )));
    assert!(out_of_range(block_on(
        eskit_core::store::CheckpointStore::save(
            &cps,
            "cp",
            eskit_core::event::GlobalCursor::new(over, Position::ZERO)
        )
    )));
    block_on(eskit_core::store::CheckpointStore::save(
        &cps,
        "cp",
        eskit_core::event::GlobalCursor::new(MAX_POSITION, Position::new(MAX_POSITION)),
    ))?;
    let snaps = eskit_core::memory::MemorySnapshotStore::new();
    let snap = Snapshot {
        stream: stream(),
        version: Version::new(over),
        schema_version: 1,
        codec: "c".into(),
        state: vec![],
        created_at: Timestamp::now(),
    };
    assert!(out_of_range(block_on(snaps.save(snap))));
    Ok(())
}

#[test]
fn dead_letters_are_bounded() -> TestResult {
    use eskit_core::{
        limits::MAX_DEAD_LETTER_ERROR_BYTES, memory::MemoryDeadLetterStore, store::DeadLetterStore,
    };
    let store = MemoryStore::new();
    let s = stream();
    block_on(store.append(
        &s,
        ExpectedVersion::Any,
        vec![ev(b"x")],
        AppendOptions::new(),
    ))?;
    let event = block_on(store.load(&s, LoadOptions::new()))?.remove(0);
    let letters = MemoryDeadLetterStore::new();
    // A long error is cut at a character boundary.
    let long = "é".repeat(MAX_DEAD_LETTER_ERROR_BYTES);
    let id = block_on(letters.put("sub", &event, &long, 3))?;
    let kept = block_on(letters.get(id))?.ok_or("the letter was kept")?;
    assert!(kept.error.len() <= MAX_DEAD_LETTER_ERROR_BYTES);
    assert!(kept.error.chars().all(|c| c == 'é'));
    assert!(matches!(
        block_on(letters.put("", &event, "e", 1)),
        Err(StoreError::Validation(ValidationError::Name(_)))
    ));
    for limit in [0, MAX_READ_LIMIT + 1] {
        assert!(matches!(
            block_on(letters.list("sub", 0, limit)),
            Err(StoreError::Validation(ValidationError::InvalidLimit { .. }))
        ));
    }
    assert_eq!(block_on(letters.list("other", 0, 10))?.len(), 0);
    assert!(block_on(letters.delete(id))?);
    assert!(!block_on(letters.delete(id))?);
    Ok(())
}
