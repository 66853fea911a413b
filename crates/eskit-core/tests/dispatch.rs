//! Typed dispatch over the global log: routing by stored type, "not mine"
//! without decoding, legacy aliases, several handlers, decode and handler
//! errors with the event's cursor, and typed global reads.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{CounterEvent, TextCodec};
use eskit_core::{
    error::CodecError,
    event::{EventType, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamName},
    memory::MemoryStore,
    rt::block_on,
    store::{AppendOptions, EventStore, GlobalReader, ReadOptions},
    typed::{
        DispatchError, Dispatched, Dispatcher, EventCodec, EventRegistry, EventSchema, TypedStore,
    },
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// TextCodec that counts its decodes.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

impl EventCodec<CounterEvent> for Counting {
    fn name(&self) -> &'static str {
        TextCodec.name()
    }
    fn encode(&self, e: &CounterEvent, out: &mut Vec<u8>) -> Result<(), CodecError> {
        TextCodec.encode(e, out)
    }
    fn decode(&self, event_type: &str, payload: &[u8]) -> Result<CounterEvent, CodecError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        TextCodec.decode(event_type, payload)
    }
}

fn raw(t: &str, payload: &[u8]) -> Result<NewEvent, Box<dyn std::error::Error>> {
    Ok(NewEvent::new(EventType::new(t)?, payload.to_vec()).with_codec("text"))
}

type Seen = Arc<Mutex<Vec<String>>>;

fn recorder(
    tag: &'static str,
) -> impl Fn(
    RecordedEvent<CounterEvent>,
    Seen,
) -> std::future::Ready<Result<(), eskit_core::error::BoxError>>
+ Send
+ Sync
+ 'static {
    move |e, seen: Seen| {
        let r = seen
            .lock()
            .map(|mut v| v.push(format!("{tag}:{:?}@{}", e.data, e.position)))
            .map_err(|_| "poisoned".into());
        std::future::ready(r)
    }
}

#[test]
fn events_route_by_type_and_others_are_not_decoded() -> TestResult {
    let decodes = Counting::default();
    let mut registry = EventRegistry::new();
    registry.register("Added")?.register("Reset")?;
    registry.alias("Incremented", "Added")?;
    let schema = EventSchema::new(decodes.clone()).with_registry(registry);
    let seen: Seen = Arc::default();
    let d = Dispatcher::new()
        .on(schema, recorder("a"))
        .on(EventSchema::new(TextCodec), recorder("b"));
    assert_eq!(
        d.event_types()
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
        ["Added", "Incremented", "Reset"]
    );
    assert!(d.handles("Incremented") && !d.handles("Shipped"));

    let store = MemoryStore::new();
    let s = StreamName::new("counter", "c-1")?;
    let events = vec![
        raw("Added", b"2")?,
        raw("Shipped", b"not a counter event")?,
        raw("Incremented", b"5")?,
        raw("Reset", b"")?,
    ];
    block_on(store.append(&s, ExpectedVersion::Any, events, AppendOptions::new()))?;
    let page = block_on(store.read(ReadOptions::from_start(10)))?;
    let mut outcomes = Vec::new();
    for e in page.events {
        outcomes.push(block_on(d.dispatch(e, &seen))?);
    }
    assert_eq!(
        outcomes,
        [
            Dispatched::Handled(2),
            Dispatched::NotMine,
            Dispatched::Handled(1),
            Dispatched::Handled(2)
        ]
    );
    // The alias reaches only the schema that knows it; handlers run in
    // registration order; the foreign event was never decoded.
    assert_eq!(
        *seen.lock().map_err(|_| "poisoned")?,
        [
            "a:Added(2)@1",
            "b:Added(2)@1",
            "a:Added(5)@3",
            "a:Reset@4",
            "b:Reset@4"
        ]
    );
    assert_eq!(decodes.0.load(Ordering::SeqCst), 3);
    Ok(())
}

#[test]
fn decode_and_handler_errors_name_the_event() -> TestResult {
    let store = MemoryStore::new();
    let s = StreamName::new("counter", "c-2")?;
    block_on(store.append(
        &s,
        ExpectedVersion::Any,
        vec![raw("Added", b"not a number")?, raw("Reset", b"")?],
        AppendOptions::new(),
    ))?;
    let page = block_on(store.read(ReadOptions::from_start(10)))?;
    let failing = Dispatcher::new().on(
        EventSchema::new(TextCodec),
        |_e: RecordedEvent<CounterEvent>, (): ()| async { Err("projection table missing".into()) },
    );
    let [bad, reset] = <[_; 2]>::try_from(page.events).map_err(|_| "two events")?;
    let (bad_cursor, reset_cursor) = (bad.cursor(), reset.cursor());
    match block_on(failing.dispatch(bad, &())) {
        Err(DispatchError::Decode { cursor, .. }) => assert_eq!(cursor, bad_cursor),
        other => return Err(format!("expected a decode error, got {other:?}").into()),
    }
    let e = block_on(failing.dispatch(reset, &()))
        .err()
        .ok_or("handler error")?;
    assert_eq!(e.cursor(), reset_cursor);
    assert_eq!(
        eskit_core::error::error_chain(&e),
        format!("the handler of event `Reset` at {reset_cursor} failed: projection table missing")
    );
    Ok(())
}

#[test]
fn typed_reads_skip_other_types_and_move_past_them() -> TestResult {
    let store = TypedStore::new(MemoryStore::new(), EventSchema::new(TextCodec));
    let s = StreamName::new("counter", "c-3")?;
    block_on(store.append(&s, ExpectedVersion::Any, vec![CounterEvent::Added(1)]))?;
    block_on(store.backend().append(
        &s,
        ExpectedVersion::Any,
        vec![raw("Shipped", b"x")?, raw("Shipped", b"y")?],
        AppendOptions::new(),
    ))?;
    let page = block_on(store.read(ReadOptions::from_start(10)))?;
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.data.clone())
            .collect::<Vec<_>>(),
        [CounterEvent::Added(1)]
    );
    assert_eq!(
        page.next.position().get(),
        3,
        "next moves past skipped events"
    );
    Ok(())
}

/// An event whose value names a type its list leaves out.
struct Unlisted;

impl eskit_core::typed::DomainEvent for Unlisted {
    fn event_type(&self) -> &'static str {
        "Secret"
    }
    fn event_types() -> &'static [&'static str] {
        &["Public"]
    }
}

struct Nothing;

impl EventCodec<Unlisted> for Nothing {
    fn name(&self) -> &'static str {
        "nothing"
    }
    fn encode(&self, _: &Unlisted, _: &mut Vec<u8>) -> Result<(), CodecError> {
        Ok(())
    }
    fn decode(&self, _: &str, _: &[u8]) -> Result<Unlisted, CodecError> {
        Ok(Unlisted)
    }
}

#[test]
fn a_name_missing_from_event_types_is_refused_before_it_is_stored() -> TestResult {
    let schema = EventSchema::new(Nothing);
    assert!(matches!(
        schema.encode(
            &Unlisted,
            &StreamName::new("secret", "s-1")?,
            &Metadata::new()
        ),
        Err(CodecError::UnknownEventType { event_type }) if event_type == "Secret"
    ));
    assert_eq!(
        schema
            .wire_names()
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
        ["Public"]
    );
    Ok(())
}
