//! Error messages: each part of a chain appears once, invalid event names
//! are reported as invalid, and quoted names are escaped and bounded.

use eskit_core::limits::{MAX_NAME_BYTES, MAX_QUOTED_NAME_CHARS};
use eskit_core::{
    AppendOptions, CodecError, DomainEvent, EventCodec, EventRegistry, EventSchema, EventStore,
    EventType, ExpectedVersion, InvalidName, InvalidNameReason, MemoryStore, NameKind, NewEvent,
    StoreError, StreamName, TypedStore, Version, block_on, error_chain, quote_name, validate_name,
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
