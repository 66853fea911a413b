//! The typed layer: codecs chosen per stored event, registry aliases,
//! upcasting, and errors for what cannot be decoded.
#![allow(clippy::expect_used, clippy::panic)] // test fixtures

mod common;

use common::{BinCodec, CounterEvent, TextCodec};
use eskit_core::{
    error::{CodecError, StoreError},
    event::{EventType, ExpectedVersion, NewEvent, StreamName},
    memory::MemoryStore,
    rt::block_on,
    store::{AppendOptions, EventStore, ReadOptions},
    typed::{EventRegistry, EventSchema, TypedStore, UpcasterRegistry},
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn s() -> StreamName {
    StreamName::new("counter", "1").expect("valid")
}

#[test]
fn events_written_with_one_codec_read_after_switching_writers() -> TestResult {
    let backend = MemoryStore::new();
    let old = TypedStore::new(backend.clone(), EventSchema::new(TextCodec));
    block_on(old.append(
        &s(),
        ExpectedVersion::NoStream,
        vec![CounterEvent::Added(7)],
    ))?;
    let new = TypedStore::new(
        backend.clone(),
        EventSchema::new(BinCodec).with_reader(TextCodec),
    );
    block_on(new.append(
        &s(),
        ExpectedVersion::Exact(1.into()),
        vec![CounterEvent::Added(9)],
    ))?;
    let raw = block_on(backend.load(&s(), Default::default()))?;
    assert_eq!(
        raw.iter().map(|e| e.codec.as_str()).collect::<Vec<_>>(),
        ["text", "bin"]
    );
    let events = block_on(new.load(&s()))?;
    assert_eq!(
        events.into_iter().map(|e| e.data).collect::<Vec<_>>(),
        [CounterEvent::Added(7), CounterEvent::Added(9)]
    );
    // The old reader alone cannot read the new codec, and says which codec.
    let err = block_on(old.load(&s())).err().ok_or("expected an error")?;
    assert!(
        matches!(err, StoreError::Codec(CodecError::UnknownCodec { ref codec }) if codec == "bin")
    );
    Ok(())
}

#[test]
fn legacy_names_resolve_and_old_schemas_upcast() -> TestResult {
    let backend = MemoryStore::new();
    // Stored long ago: type `Incremented` at schema 1, payload "amount=3".
    block_on(backend.append(
        &s(),
        ExpectedVersion::Any,
        vec![
            NewEvent::new(EventType::new("Incremented")?, b"amount=3".to_vec()).with_codec("text"),
        ],
        AppendOptions::new(),
    ))?;
    let mut registry = EventRegistry::new();
    registry.register_versioned("Added", 3)?.register("Reset")?;
    registry.alias("Incremented", "Added")?;
    let mut upcasters = UpcasterRegistry::new();
    upcasters.register("Added", 1, 2, |b| {
        Ok(b.strip_prefix(b"amount=")
            .ok_or("no amount= prefix")?
            .to_vec())
    })?;
    upcasters.register("Added", 2, 3, |b| {
        let n: u64 = std::str::from_utf8(b)?.parse()?;
        Ok((n * 10).to_string().into_bytes())
    })?;
    let store = TypedStore::new(
        backend.clone(),
        EventSchema::new(TextCodec)
            .with_registry(registry.clone())
            .with_upcasters(upcasters),
    );
    block_on(store.append(
        &s(),
        ExpectedVersion::Exact(1.into()),
        vec![CounterEvent::Added(5)],
    ))?;
    let events = block_on(store.load(&s()))?;
    assert_eq!(events[0].data, CounterEvent::Added(30));
    assert_eq!(events[0].event_type, "Added");
    assert_eq!(
        events[0].schema_version, 1,
        "the stored version is reported"
    );
    assert_eq!(events[1].data, CounterEvent::Added(5));
    assert_eq!(
        events[1].schema_version, 3,
        "new events are written at the current version"
    );
    let global = block_on(store.read(ReadOptions::from_start(10)))?;
    assert_eq!(global.events.len(), 2);

    // Without the 2 -> 3 step, decoding names the gap.
    let mut partial = UpcasterRegistry::new();
    partial.register("Added", 1, 2, |b| Ok(b.to_vec()))?;
    let gap = TypedStore::new(
        backend,
        EventSchema::new(TextCodec)
            .with_registry(registry)
            .with_upcasters(partial),
    );
    let err = block_on(gap.load(&s())).err().ok_or("expected an error")?;
    assert!(matches!(
        err,
        StoreError::Codec(CodecError::MissingUpcaster {
            from: 2,
            target: 3,
            ..
        })
    ));
    Ok(())
}

#[test]
fn unregistered_types_are_refused_both_ways() -> TestResult {
    let mut registry = EventRegistry::new();
    registry.register("Added")?;
    let store = TypedStore::new(
        MemoryStore::new(),
        EventSchema::new(TextCodec).with_registry(registry),
    );
    let err = block_on(store.append(&s(), ExpectedVersion::Any, vec![CounterEvent::Reset]))
        .err()
        .ok_or("expected an error")?;
    assert!(matches!(
        err,
        StoreError::Codec(CodecError::UnknownEventType { ref event_type }) if event_type == "Reset"
    ));
    block_on(store.backend().append(
        &s(),
        ExpectedVersion::Any,
        vec![NewEvent::new(EventType::new("Mystery")?, vec![]).with_codec("text")],
        AppendOptions::new(),
    ))?;
    let err = block_on(store.load(&s()))
        .err()
        .ok_or("expected an error")?;
    assert!(matches!(
        err,
        StoreError::Codec(CodecError::UnknownEventType { ref event_type }) if event_type == "Mystery"
    ));
    Ok(())
}

#[test]
fn malformed_payloads_are_codec_errors() -> TestResult {
    let store = TypedStore::new(MemoryStore::new(), EventSchema::new(TextCodec));
    block_on(store.backend().append(
        &s(),
        ExpectedVersion::Any,
        vec![NewEvent::new(EventType::new("Added")?, vec![0xff, 0xfe]).with_codec("text")],
        AppendOptions::new(),
    ))?;
    let err = block_on(store.load(&s()))
        .err()
        .ok_or("expected an error")?;
    assert!(matches!(err, StoreError::Codec(CodecError::Decode { .. })));
    assert_eq!(
        eskit_core::error::error_chain(&err),
        "codec failure: failed to decode event `Added`: invalid utf-8 sequence of 1 bytes from index 0"
    );
    Ok(())
}

#[test]
fn a_deduplicated_append_returns_the_stored_events_not_the_retry() -> TestResult {
    let store = TypedStore::new(MemoryStore::new(), EventSchema::new(TextCodec));
    let keyed = |correlation: &str| {
        AppendOptions::new()
            .with_idempotency_key("add-7")
            .with_metadata(eskit_core::event::Metadata::new().with_correlation_id(correlation))
            .with_timestamp(eskit_core::event::Timestamp::from_unix_micros(
                if correlation == "first" { 1_000 } else { 2_000 },
            ))
    };
    let first = block_on(store.append_detailed(
        &s(),
        ExpectedVersion::NoStream,
        vec![CounterEvent::Added(7)],
        keyed("first"),
    ))?;
    assert!(!first.deduplicated);
    // The retry carries the same event with new metadata and a new time.
    let retry = block_on(store.append_detailed(
        &s(),
        ExpectedVersion::Any,
        vec![CounterEvent::Added(7)],
        keyed("retry"),
    ))?;
    assert!(retry.deduplicated);
    assert_eq!(retry.events, first.events);
    assert_eq!(retry.events, block_on(store.load(&s()))?);
    assert_eq!(
        retry.events[0].metadata.correlation_id(),
        Some("first"),
        "the retry's metadata was reported instead of the stored one"
    );
    assert_eq!(
        block_on(store.find_idempotent(&s(), "add-7"))?,
        Some(first.events)
    );
    assert_eq!(block_on(store.find_idempotent(&s(), "other"))?, None);
    Ok(())
}

#[test]
fn decoding_shares_the_stored_event_type_instead_of_building_it_again() -> TestResult {
    // An empty registry resolves every stored name to itself: the decoded
    // event carries the stored name (a shared reference), not a copy made
    // per event.
    let store = TypedStore::new(MemoryStore::new(), EventSchema::new(TextCodec));
    block_on(store.append(
        &s(),
        ExpectedVersion::NoStream,
        vec![CounterEvent::Added(3)],
    ))?;
    let raw = block_on(store.load_raw(&s(), Default::default()))?
        .pop()
        .expect("one event");
    let stored = raw.event_type.as_str().as_ptr();
    let decoded = store.schema().decode(raw)?;
    assert_eq!(decoded.event_type.as_str(), "Added");
    assert!(
        std::ptr::eq(decoded.event_type.as_str().as_ptr(), stored),
        "the decoded event's type is a new allocation"
    );
    Ok(())
}

/// A codec named like [`TextCodec`] that reads every event as `Added(42)`.
struct TextAs42;

impl eskit_core::typed::EventCodec<CounterEvent> for TextAs42 {
    fn name(&self) -> &'static str {
        "text"
    }

    fn encode(&self, _: &CounterEvent, _: &mut Vec<u8>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(&self, _: &str, _: &[u8]) -> Result<CounterEvent, CodecError> {
        Ok(CounterEvent::Added(42))
    }
}

#[test]
fn a_reader_named_like_the_writer_decodes_what_the_writer_wrote() -> TestResult {
    let backend = MemoryStore::new();
    let writer = TypedStore::new(backend.clone(), EventSchema::new(TextCodec));
    block_on(writer.append(
        &s(),
        ExpectedVersion::NoStream,
        vec![CounterEvent::Added(3)],
    ))?;
    let reader = TypedStore::new(backend, EventSchema::new(TextCodec).with_reader(TextAs42));
    let events = block_on(reader.load(&s()))?;
    assert_eq!(events[0].data, CounterEvent::Added(42));
    Ok(())
}
