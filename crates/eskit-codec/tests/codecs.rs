//! Round trips, stored shapes, unknown types, aliases and mixed-codec stores.
#![cfg(all(feature = "json", feature = "cbor"))]

mod fixtures;

use eskit_codec::{CborCodec, JsonCodec, event_type_of};
use eskit_core::{
    error::{CodecError, StoreError},
    event::{ExpectedVersion, StreamName},
    memory::MemoryStore,
    rt::block_on,
    store::LoadOptions,
    typed::{Codec, DomainEvent, EventCodec, EventRegistry, EventSchema, TypedStore},
};
use fixtures::{Balance, BankEvent, Withdrawal, reference_event};
use serde::{Deserialize, Serialize};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn every_shape() -> Vec<BankEvent> {
    vec![
        reference_event(),
        BankEvent::Deposited {
            account_id: "acc-1".into(),
            amount_cents: 1250,
            reference: "salary".into(),
            at: 7,
        },
        BankEvent::Withdrawn(Withdrawal {
            account_id: "acc-1".into(),
            amount_cents: 99,
            note: None,
        }),
        BankEvent::Flagged("suspicious".into(), 3),
        BankEvent::Closed,
    ]
}

fn encode<C: EventCodec<BankEvent>>(codec: &C, e: &BankEvent) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    codec.encode(e, &mut out)?;
    Ok(out)
}

/// Encodes under the event's own type name and decodes it back.
fn check_round_trip<C: EventCodec<BankEvent>>(codec: &C) -> TestResult {
    for event in every_shape() {
        let payload = encode(codec, &event)?;
        let back = codec.decode(event.event_type(), &payload)?;
        assert_eq!(back, event, "{} via {}", event.event_type(), codec.name());
    }
    Ok(())
}

#[test]
fn json_round_trips_every_variant_shape() -> TestResult {
    check_round_trip(&JsonCodec)
}

#[test]
fn cbor_round_trips_every_variant_shape() -> TestResult {
    check_round_trip(&CborCodec)
}

/// The payload is the variant's content; the name lives beside it.
#[test]
fn json_payload_is_the_variant_content() -> TestResult {
    let check = |event: BankEvent, ty: &str, json: &str| -> TestResult {
        assert_eq!(event.event_type(), ty);
        assert_eq!(String::from_utf8(encode(&JsonCodec, &event)?)?, json);
        Ok(())
    };
    check(
        BankEvent::Deposited {
            account_id: "a".into(),
            amount_cents: 5,
            reference: "r".into(),
            at: 1,
        },
        "MoneyDeposited",
        r#"{"account_id":"a","amount_cents":5,"reference":"r","at":1}"#,
    )?;
    check(
        BankEvent::Withdrawn(Withdrawal {
            account_id: "a".into(),
            amount_cents: 5,
            note: Some("n".into()),
        }),
        "Withdrawn",
        r#"{"account_id":"a","amount_cents":5,"note":"n"}"#,
    )?;
    check(BankEvent::Flagged("x".into(), 2), "Flagged", r#"["x",2]"#)?;
    check(BankEvent::Closed, "Closed", "null")?;
    Ok(())
}

#[test]
fn reference_event_is_about_200_bytes() -> TestResult {
    let json = encode(&JsonCodec, &reference_event())?;
    let cbor = encode(&CborCodec, &reference_event())?;
    assert!(
        (180..=240).contains(&json.len()),
        "json is {} bytes",
        json.len()
    );
    assert!(cbor.len() < json.len());
    Ok(())
}

#[test]
fn unit_variant_accepts_an_empty_object_from_other_writers() -> TestResult {
    assert_eq!(
        EventCodec::<BankEvent>::decode(&JsonCodec, "Closed", b"{}")?,
        BankEvent::Closed
    );
    assert_eq!(
        EventCodec::<BankEvent>::decode(&JsonCodec, "Closed", b"null")?,
        BankEvent::Closed
    );
    Ok(())
}

#[test]
fn unknown_event_type_is_a_typed_error_naming_it() -> TestResult {
    for codec in [
        &JsonCodec as &dyn EventCodec<BankEvent>,
        &CborCodec as &dyn EventCodec<BankEvent>,
    ] {
        let payload = {
            let mut out = Vec::new();
            codec.encode(&BankEvent::Closed, &mut out)?;
            out
        };
        match codec.decode("Vanished", &payload) {
            Err(CodecError::UnknownEventType { event_type }) => assert_eq!(event_type, "Vanished"),
            other => panic!("{}: expected UnknownEventType, got {other:?}", codec.name()),
        }
        // A known name whose payload has the wrong shape is a decode error.
        let err = codec.decode("MoneyDeposited", &payload);
        assert!(
            matches!(err, Err(CodecError::Decode { event_type: Some(ref t), .. }) if t == "MoneyDeposited"),
            "{err:?}"
        );
    }
    Ok(())
}

/// A plain struct is an event too: stored as itself under its own name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "PasswordChanged")]
struct PasswordChanged {
    user: String,
    at: u64,
}
eskit_codec::serde_domain_event!(PasswordChanged);

#[test]
fn plain_struct_events_round_trip() -> TestResult {
    let e = PasswordChanged {
        user: "ada".into(),
        at: 9,
    };
    assert_eq!(e.event_type(), "PasswordChanged");
    for codec in [
        &JsonCodec as &dyn EventCodec<PasswordChanged>,
        &CborCodec as &dyn EventCodec<PasswordChanged>,
    ] {
        let mut out = Vec::new();
        codec.encode(&e, &mut out)?;
        assert_eq!(codec.decode("PasswordChanged", &out)?, e);
    }
    let mut json = Vec::new();
    EventCodec::encode(&JsonCodec, &e, &mut json)?;
    assert_eq!(json, br#"{"user":"ada","at":9}"#);
    Ok(())
}

#[test]
fn event_type_of_reads_serde_names() {
    assert_eq!(event_type_of(&reference_event()), Some("AccountOpened"));
    assert_eq!(event_type_of(&BankEvent::Closed), Some("Closed"));
    assert_eq!(
        event_type_of(&BankEvent::Flagged(String::new(), 0)),
        Some("Flagged")
    );
    assert_eq!(event_type_of("text"), None);
    assert_eq!(event_type_of(&vec![1, 2]), None);
}

#[test]
fn single_values_round_trip() -> TestResult {
    let state = Balance {
        cents: -42,
        history: vec![1, 2, 3],
        owner: "ada".into(),
    };
    for codec in [
        &JsonCodec as &dyn Codec<Balance>,
        &CborCodec as &dyn Codec<Balance>,
    ] {
        let mut out = Vec::new();
        codec.encode(&state, &mut out)?;
        assert_eq!(codec.decode(&out)?, state);
    }
    Ok(())
}

fn stream() -> Result<StreamName, Box<dyn std::error::Error>> {
    Ok(StreamName::new("account", "acc-1")?)
}

/// JSON written last year, CBOR now: one store, both readable.
#[test]
fn json_store_reads_back_after_switching_writer_to_cbor() -> TestResult {
    let backend = MemoryStore::new();
    let acc = stream()?;
    let old = TypedStore::new(backend.clone(), EventSchema::new(JsonCodec));
    let first = every_shape();
    block_on(old.append(&acc, ExpectedVersion::NoStream, first.clone()))?;

    let new = TypedStore::new(backend.clone(), eskit_codec::serde_schema(CborCodec));
    let later = vec![BankEvent::Flagged("late".into(), 1), BankEvent::Closed];
    block_on(new.append(&acc, ExpectedVersion::Any, later.clone()))?;

    let raw = block_on(new.load_raw(&acc, LoadOptions::new()))?;
    let codecs: Vec<&str> = raw.iter().map(|r| r.codec.as_str()).collect();
    assert_eq!(
        codecs,
        ["json", "json", "json", "json", "json", "cbor", "cbor"]
    );

    let loaded: Vec<BankEvent> = block_on(new.load(&acc))?
        .into_iter()
        .map(|r| r.data)
        .collect();
    let expected: Vec<BankEvent> = first.into_iter().chain(later).collect();
    assert_eq!(loaded, expected);

    // A reader that was never told about JSON refuses it by name.
    let cbor_only = TypedStore::new(backend, EventSchema::<BankEvent>::new(CborCodec));
    match block_on(cbor_only.load(&acc)) {
        Err(StoreError::Codec(CodecError::UnknownCodec { codec })) => assert_eq!(codec, "json"),
        other => panic!("expected UnknownCodec, got {other:?}"),
    }
    Ok(())
}

/// Events renamed in Rust keep their stored name via serde rename; a name
/// changed on the wire keeps reading through a registry alias.
#[test]
fn legacy_names_resolve_through_registry_aliases() -> TestResult {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum V1 {
        Deposited { amount_cents: u64 },
    }
    eskit_codec::serde_domain_event!(V1);
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum V2 {
        #[serde(rename = "FundsAdded")]
        Deposited { amount_cents: u64 },
    }
    eskit_codec::serde_domain_event!(V2);

    let backend = MemoryStore::new();
    let acc = stream()?;
    let old = TypedStore::new(backend.clone(), EventSchema::new(JsonCodec));
    block_on(old.append(
        &acc,
        ExpectedVersion::NoStream,
        vec![V1::Deposited { amount_cents: 5 }],
    ))?;

    let mut registry = EventRegistry::new();
    registry.register("FundsAdded")?;
    registry.alias("Deposited", "FundsAdded")?;
    let new = TypedStore::new(
        backend,
        EventSchema::new(CborCodec)
            .with_reader(JsonCodec)
            .with_registry(registry),
    );
    block_on(new.append(
        &acc,
        ExpectedVersion::Any,
        vec![V2::Deposited { amount_cents: 7 }],
    ))?;
    let loaded = block_on(new.load(&acc))?;
    assert_eq!(loaded[0].event_type.as_str(), "FundsAdded");
    assert_eq!(loaded[0].data, V2::Deposited { amount_cents: 5 });
    assert_eq!(loaded[1].event_type.as_str(), "FundsAdded");
    assert_eq!(loaded[1].data, V2::Deposited { amount_cents: 7 });
    Ok(())
}
