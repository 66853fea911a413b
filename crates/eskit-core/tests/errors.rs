//! Error messages: each part of a chain appears once, invalid event names
//! are reported as invalid, and quoted names are escaped and bounded.

use eskit_core::limits::{MAX_NAME_BYTES, MAX_QUOTED_NAME_CHARS};
use eskit_core::{
    backend::{quote_name, validate_name},
    error::{CodecError, StoreError, error_chain},
    event::{
        EventType, ExpectedVersion, InvalidName, InvalidNameReason, NameKind, NewEvent, StreamName,
        Version,
    },
    memory::MemoryStore,
    rt::block_on,
    store::{AppendOptions, EventStore},
    typed::{DomainEvent, EventCodec, EventRegistry, EventSchema, TypedStore},
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn a_name_error_is_printed_once() -> TestResult {
    let store = MemoryStore::new();
    let event = NewEvent::new(EventType::new("Opened")?, Vec::new()).with_codec("");
    let err = block_on(store.append(
        &StreamName::new("t", "s")?,
        ExpectedVersion::Any,
        vec![event],
        AppendOptions::new(),
    ))
    .err()
    .ok_or("an empty codec name was accepted")?;
    assert_eq!(error_chain(&err), "invalid input: codec name is empty");

    let name = validate_name(NameKind::StreamId, "")
        .err()
        .ok_or("empty name accepted")?;
    assert_eq!(
        error_chain(&StoreError::from(name)),
        "invalid input: stream id is empty"
    );
    Ok(())
}

/// An event whose wire name is whatever it carries.
#[derive(Debug)]
struct Odd(&'static str);

impl DomainEvent for Odd {
    fn event_type(&self) -> &'static str {
        self.0
    }
    fn event_types() -> &'static [&'static str] {
        // Only invalid names are encoded here; they fail before this list.
        &[]
    }
}

struct Empty;

impl EventCodec<Odd> for Empty {
    fn name(&self) -> &'static str {
        "empty"
    }
    fn encode(&self, _: &Odd, _: &mut Vec<u8>) -> Result<(), CodecError> {
        Ok(())
    }
    fn decode(&self, ty: &str, _: &[u8]) -> Result<Odd, CodecError> {
        Err(CodecError::UnknownEventType {
            event_type: ty.to_owned(),
        })
    }
}

#[test]
fn an_invalid_event_name_is_reported_as_invalid_not_unknown() -> TestResult {
    let huge: &'static str = Box::leak(format!("{}\0", "x".repeat(64 * 1024)).into_boxed_str());
    let cases = [
        (
            huge,
            InvalidNameReason::TooLong { len: huge.len() },
            format!(
                "event type is {} bytes long, the maximum is {MAX_NAME_BYTES}",
                huge.len()
            ),
        ),
        (
            "Bad\0Name",
            InvalidNameReason::ContainsNul,
            "event type contains a NUL byte".to_owned(),
        ),
        (
            "",
            InvalidNameReason::Empty,
            "event type is empty".to_owned(),
        ),
    ];
    for (name, reason, message) in cases {
        let mut registered = EventRegistry::new();
        registered.register("Known")?;
        // With an empty registry every valid name is accepted; with a
        // registry the name is checked before it is looked up.
        for registry in [EventRegistry::new(), registered] {
            let store = TypedStore::new(
                MemoryStore::new(),
                EventSchema::new(Empty).with_registry(registry),
            );
            let err = block_on(store.append(
                &StreamName::new("t", "s")?,
                ExpectedVersion::Any,
                vec![Odd(name)],
            ))
            .err()
            .ok_or("an invalid event name was accepted")?;
            assert!(
                matches!(
                    err,
                    StoreError::Codec(CodecError::Encode {
                        event_type: None,
                        ..
                    })
                ),
                "{err:?}"
            );
            let name_error = std::error::Error::source(&err)
                .and_then(std::error::Error::source)
                .and_then(|e| e.downcast_ref::<InvalidName>())
                .ok_or("the name error is the source")?;
            assert_eq!(
                (name_error.kind(), name_error.reason()),
                (NameKind::EventType, reason)
            );
            assert_eq!(
                error_chain(&err),
                format!("codec failure: failed to encode value: {message}")
            );
        }
    }
    Ok(())
}

/// Checks how one name is quoted.
fn check(name: &str, expect: &str) {
    assert_eq!(quote_name(name).to_string(), expect, "{name:?}");
}

#[test]
fn quoted_names_are_escaped_and_bounded() {
    check("Deposited", "`Deposited`");
    check("ünïcødé/ok", "`ünïcødé/ok`");
    check("", "``");
    check("a\0b", "`a\\0b`");
    check("line\nbreak\r\t", "`line\\nbreak\\r\\t`");
    check("back`tick\\slash", "`back\\`tick\\\\slash`");
    check("\u{1b}[31mred", "`\\u{1b}[31mred`");
    check("abc\u{202e}fed", "`abc\\u{202e}fed`");
    let exact = "é".repeat(MAX_QUOTED_NAME_CHARS);
    check(&exact, &format!("`{exact}`"));
    let long = "é".repeat(MAX_QUOTED_NAME_CHARS + 1);
    check(
        &long,
        &format!(
            "`{}...` ({} bytes)",
            "é".repeat(MAX_QUOTED_NAME_CHARS),
            long.len()
        ),
    );
}

#[test]
fn every_message_quotes_names_through_the_one_helper() -> TestResult {
    let huge = format!("{}\0", "x".repeat(64 * 1024));
    let quoted = quote_name(&huge).to_string();
    assert!(quoted.len() < MAX_QUOTED_NAME_CHARS + 32, "{quoted}");
    let messages = [
        CodecError::UnknownEventType {
            event_type: huge.clone(),
        }
        .to_string(),
        CodecError::UnknownCodec {
            codec: huge.clone(),
        }
        .to_string(),
        CodecError::decode(Some(&huge), "bad bytes").to_string(),
        CodecError::NewerSchema {
            event_type: huge.clone(),
            stored: 3,
            known: 2,
        }
        .to_string(),
        StoreError::IdempotencyConflict {
            stream: StreamName::new("t", "s")?,
            key: huge.clone(),
        }
        .to_string(),
    ];
    for m in &messages {
        assert!(m.contains(&quoted), "{m}");
        assert!(
            m.len() < 2 * MAX_QUOTED_NAME_CHARS + 100,
            "{} bytes",
            m.len()
        );
        assert!(!m.contains('\0'));
    }
    assert_eq!(
        CodecError::UnknownEventType {
            event_type: "Vanished".into()
        }
        .to_string(),
        "unknown event type `Vanished`"
    );

    let stream = StreamName::new("order\n", "o\u{1b}1")?;
    let conflict = StoreError::WrongExpectedVersion {
        stream: stream.clone(),
        expected: ExpectedVersion::NoStream,
        actual: Version::new(1),
    };
    assert_eq!(
        conflict.to_string(),
        "concurrency conflict on stream `order\\n/o\\u{1b}1`: expected no stream, actual version 1"
    );
    let long_stream = StreamName::new("t", "x".repeat(MAX_NAME_BYTES))?;
    assert_eq!(
        StoreError::StreamNotFound {
            stream: long_stream
        }
        .to_string(),
        format!(
            "stream `t/{}...` ({} bytes) not found",
            "x".repeat(MAX_QUOTED_NAME_CHARS - 2),
            MAX_NAME_BYTES + 2
        )
    );

    let mut registry = EventRegistry::new();
    registry.register("Twice\n")?;
    let dup = registry
        .register("Twice\n")
        .err()
        .ok_or("duplicate accepted")?;
    assert_eq!(dup.to_string(), "event type `Twice\\n` is registered twice");
    Ok(())
}

/// The backend-neutral kinds: which are transient, which leave a write's
/// outcome unknown, what they print, and that each keeps its cause.
#[test]
fn backend_neutral_kinds_classify_print_and_keep_their_cause() -> TestResult {
    #[derive(Debug)]
    struct Cause;
    impl std::fmt::Display for Cause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connection reset")
        }
    }
    impl std::error::Error for Cause {}

    /// `(error, transient, outcome unknown, message without the cause)`.
    fn check(e: StoreError, transient: bool, unknown: bool, message: &str, has_cause: bool) {
        assert_eq!(e.is_transient(), transient, "{e:?}: transient");
        assert_eq!(e.is_outcome_unknown(), unknown, "{e:?}: outcome unknown");
        assert_eq!(e.to_string(), message, "{e:?}: message");
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        let want = has_cause.then(|| "connection reset".to_owned());
        assert_eq!(cause, want, "{e:?}: source");
        if has_cause {
            assert_eq!(error_chain(&e), format!("{message}: connection reset"));
        }
    }
    check(
        StoreError::unavailable(Cause),
        true,
        true,
        "the store is unavailable",
        true,
    );
    check(
        StoreError::timed_out(Cause),
        true,
        true,
        "the store did not answer in time (the outcome of an append is unknown: \
         retry it with the same idempotency key)",
        true,
    );
    check(
        StoreError::overloaded(Cause),
        true,
        false,
        "the store is overloaded, try again later",
        true,
    );
    check(
        StoreError::storage_full(Cause),
        false,
        false,
        "no storage space left",
        true,
    );
    check(
        StoreError::Closed,
        false,
        false,
        "the store is closed",
        false,
    );
    check(
        StoreError::Internal {
            detail: "a read returned no horizon".into(),
            source: Some(Box::new(Cause)),
        },
        false,
        false,
        "internal error: a read returned no horizon",
        true,
    );
    check(
        StoreError::internal("broken"),
        false,
        false,
        "internal error: broken",
        false,
    );
    check(
        StoreError::Corrupt {
            detail: "bad checksum".into(),
        },
        false,
        false,
        "stored data is corrupt: bad checksum",
        false,
    );
    check(
        StoreError::backend(Cause),
        false,
        false,
        "backend failure",
        true,
    );
    check(
        StoreError::TimedOut { source: None },
        true,
        true,
        "the store did not answer in time (the outcome of an append is unknown: \
         retry it with the same idempotency key)",
        false,
    );
    let conflict = StoreError::WrongExpectedVersion {
        stream: StreamName::new("t", "s")?,
        expected: ExpectedVersion::NoStream,
        actual: Version::new(1),
    };
    assert!(!conflict.is_transient(), "a conflict needs a reload first");

    // Each matcher picks its own kind only.
    let kinds = [
        StoreError::unavailable(Cause),
        StoreError::timed_out(Cause),
        StoreError::overloaded(Cause),
        StoreError::storage_full(Cause),
        StoreError::Closed,
    ];
    let matchers: [fn(&StoreError) -> bool; 5] = [
        StoreError::is_unavailable,
        StoreError::is_timeout,
        StoreError::is_overloaded,
        StoreError::is_storage_full,
        StoreError::is_closed,
    ];
    for (i, e) in kinds.iter().enumerate() {
        for (j, m) in matchers.iter().enumerate() {
            assert_eq!(m(e), i == j, "matcher {j} on {e:?}");
        }
    }
    Ok(())
}
