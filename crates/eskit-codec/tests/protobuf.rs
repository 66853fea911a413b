//! The Protobuf codec over generated `oneof event` enums and single messages.
#![cfg(feature = "protobuf")]

mod fixtures;

use eskit_codec::ProstCodec;
use eskit_core::{
    error::CodecError,
    event::{ExpectedVersion, StreamName},
    memory::MemoryStore,
    rt::block_on,
    store::LoadOptions,
    typed::{DomainEvent, EventCodec, EventSchema, TypedStore},
};
use fixtures::bank::{self, bank_event::Event};
use prost::Message as _;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn every_event() -> Vec<Event> {
    vec![
        fixtures::reference_proto_event(),
        Event::MoneyDeposited(bank::MoneyDeposited {
            account_id: "a".into(),
            amount_cents: 5,
            reference: "r".into(),
            at: 1,
        }),
        Event::MoneyWithdrawn(bank::MoneyWithdrawn::default()),
        Event::AccountClosed(bank::AccountClosed {
            reason: "moved".into(),
        }),
    ]
}

#[test]
fn oneof_events_round_trip_as_their_bare_message() -> TestResult {
    for event in every_event() {
        let mut payload = Vec::new();
        ProstCodec.encode(&event, &mut payload)?;
        // The payload is the inner message, not the envelope.
        let inner = match &event {
            Event::AccountOpened(m) => m.encode_to_vec(),
            Event::MoneyDeposited(m) => m.encode_to_vec(),
            Event::MoneyWithdrawn(m) => m.encode_to_vec(),
            Event::AccountClosed(m) => m.encode_to_vec(),
        };
        assert_eq!(payload, inner);
        let back: Event = ProstCodec.decode(event.event_type(), &payload)?;
        assert_eq!(back, event);
    }
    Ok(())
}

#[test]
fn event_type_is_the_message_name() {
    let names: Vec<&str> = every_event().iter().map(DomainEvent::event_type).collect();
    assert_eq!(
        names,
        [
            "AccountOpened",
            "MoneyDeposited",
            "MoneyWithdrawn",
            "AccountClosed"
        ]
    );
}

#[test]
fn unknown_event_type_is_a_typed_error() {
    let result: Result<Event, _> = ProstCodec.decode("Teleported", &[]);
    assert!(
        matches!(result, Err(CodecError::UnknownEventType { ref event_type }) if event_type == "Teleported"),
        "{result:?}"
    );
}

#[test]
fn protobuf_events_go_through_a_store() -> TestResult {
    let store = TypedStore::new(MemoryStore::new(), EventSchema::new(ProstCodec));
    let stream = StreamName::new("account", "acc-1")?;
    block_on(store.append(&stream, ExpectedVersion::NoStream, every_event()))?;
    let raw = block_on(store.load_raw(&stream, LoadOptions::new()))?;
    assert!(raw.iter().all(|r| r.codec == "protobuf"));
    assert_eq!(raw[3].event_type.as_str(), "AccountClosed");
    let loaded: Vec<Event> = block_on(store.load(&stream))?
        .into_iter()
        .map(|r| r.data)
        .collect();
    assert_eq!(loaded, every_event());
    Ok(())
}
