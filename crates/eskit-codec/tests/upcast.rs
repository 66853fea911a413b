//! Typed upcasters for each codec: v1 -> v2 -> v3 chains through a store,
//! and a gap in the chain is an error naming the missing step.
#![cfg(all(feature = "json", feature = "cbor", feature = "protobuf"))]

use eskit_codec::{CborCodec, JsonCodec, ProstCodec, TypedUpcasters};
use eskit_core::{
    error::{CodecError, StoreError},
    event::{EventType, ExpectedVersion, NewEvent, StreamName},
    memory::MemoryStore,
    rt::block_on,
    store::{AppendOptions, EventStore},
    typed::{
        Codec, DomainEvent, EventCodec, EventRegistry, EventSchema, TypedStore, UpcasterRegistry,
    },
};
use serde::{Deserialize, Serialize};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Serialize, Deserialize)]
struct DepositedV1 {
    cents: u32,
}

#[derive(Serialize, Deserialize)]
struct DepositedV2 {
    cents: u64,
    currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DepositedV3 {
    amount: Money,
    reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Money {
    cents: u64,
    currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Deposited(DepositedV3),
}
eskit_codec::serde_domain_event!(Event);

/// v1 -> v2 -> v3 steps for `codec`.
fn chain<C>(codec: C) -> Result<UpcasterRegistry, Box<dyn std::error::Error>>
where
    C: Codec<DepositedV1> + Codec<DepositedV2> + Codec<DepositedV3> + Clone,
{
    let mut up = UpcasterRegistry::new();
    up.register_typed(codec.clone(), "Deposited", 1, 2, |v1: DepositedV1| {
        DepositedV2 {
            cents: u64::from(v1.cents),
            currency: "EUR".into(),
        }
    })?;
    up.try_register_typed(codec, "Deposited", 2, 3, |v2: DepositedV2| {
        if v2.currency.is_empty() {
            return Err("a deposit needs a currency");
        }
        Ok(DepositedV3 {
            amount: Money {
                cents: v2.cents,
                currency: v2.currency,
            },
            reference: None,
        })
    })?;
    Ok(up)
}

fn registry() -> Result<EventRegistry, Box<dyn std::error::Error>> {
    let mut reg = EventRegistry::new();
    reg.register_versioned("Deposited", 3)?;
    Ok(reg)
}

/// Appends a v1 payload written by `codec` straight to the backend, then
/// reads it through a schema at v3.
fn check_chain<C>(codec: C) -> TestResult
where
    C: Codec<DepositedV1> + Codec<DepositedV2> + Codec<DepositedV3> + EventCodec<Event> + Clone,
{
    let backend = MemoryStore::new();
    let stream = StreamName::new("account", "acc-1")?;
    let mut v1 = Vec::new();
    Codec::<DepositedV1>::encode(&codec, &DepositedV1 { cents: 250 }, &mut v1)?;
    let name = EventCodec::<Event>::name(&codec);
    let old = NewEvent::new(EventType::new("Deposited")?, v1)
        .with_schema_version(1)
        .with_codec(name);
    block_on(backend.append(
        &stream,
        ExpectedVersion::NoStream,
        vec![old],
        AppendOptions::new(),
    ))?;

    let schema = EventSchema::new(codec.clone())
        .with_registry(registry()?)
        .with_upcasters(chain(codec)?);
    let store = TypedStore::new(backend, schema);
    block_on(store.append(
        &stream,
        ExpectedVersion::Any,
        vec![Event::Deposited(DepositedV3 {
            amount: Money {
                cents: 1,
                currency: "USD".into(),
            },
            reference: Some("r".into()),
        })],
    ))?;
    let events = block_on(store.load(&stream))?;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].schema_version, 1, "{name}");
    assert_eq!(
        events[0].data,
        Event::Deposited(DepositedV3 {
            amount: Money {
                cents: 250,
                currency: "EUR".into()
            },
            reference: None,
        }),
        "{name}"
    );
    assert_eq!(events[1].schema_version, 3, "{name}");
    assert_eq!(events[0].data.event_type(), "Deposited");
    Ok(())
}

#[test]
fn json_chain_upcasts_v1_to_v3() -> TestResult {
    check_chain(JsonCodec)
}

#[test]
fn cbor_chain_upcasts_v1_to_v3() -> TestResult {
    check_chain(CborCodec)
}

#[test]
fn a_gap_in_the_chain_names_the_missing_step() -> TestResult {
    let mut up = UpcasterRegistry::new();
    up.register_typed(JsonCodec, "Deposited", 1, 2, |v1: DepositedV1| {
        DepositedV2 {
            cents: u64::from(v1.cents),
            currency: "EUR".into(),
        }
    })?;
    let err = up.upcast("Deposited", "json", br#"{"cents":1}"#, 1, 3);
    let Err(e) = err else {
        panic!("a gap must fail");
    };
    assert!(
        matches!(
            &e,
            CodecError::MissingUpcaster { event_type, from: 2, target: 3 } if event_type == "Deposited"
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("Deposited"), "{e}");
    Ok(())
}

#[test]
fn failing_steps_and_undecodable_payloads_are_upcast_errors() -> TestResult {
    let up = chain(CborCodec)?;
    let mut v2 = Vec::new();
    Codec::encode(
        &CborCodec,
        &DepositedV2 {
            cents: 1,
            currency: String::new(),
        },
        &mut v2,
    )?;
    let err = up.upcast("Deposited", "cbor", &v2, 2, 3);
    assert!(
        matches!(err, Err(CodecError::Upcast { from: 2, .. })),
        "{err:?}"
    );
    let err = up.upcast("Deposited", "cbor", b"\xff", 1, 3);
    assert!(
        matches!(err, Err(CodecError::Upcast { from: 1, .. })),
        "{err:?}"
    );
    Ok(())
}

/// Protobuf messages for the same evolution.
mod pb {
    use eskit_core::typed::DomainEvent;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct DepositedV1 {
        #[prost(uint32, tag = "1")]
        pub(crate) cents: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct DepositedV2 {
        #[prost(uint64, tag = "2")]
        pub(crate) cents: u64,
        #[prost(string, tag = "3")]
        pub(crate) currency: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct DepositedV3 {
        #[prost(uint64, tag = "2")]
        pub(crate) cents: u64,
        #[prost(string, tag = "3")]
        pub(crate) currency: String,
        #[prost(string, optional, tag = "4")]
        pub(crate) reference: Option<String>,
    }

    impl DomainEvent for DepositedV3 {
        fn event_type(&self) -> &'static str {
            "Deposited"
        }
        fn event_types() -> &'static [&'static str] {
            &["Deposited"]
        }
    }
}

#[test]
fn protobuf_chain_upcasts_v1_to_v3() -> TestResult {
    let mut up = UpcasterRegistry::new();
    up.register_typed(ProstCodec, "Deposited", 1, 2, |v1: pb::DepositedV1| {
        pb::DepositedV2 {
            cents: u64::from(v1.cents),
            currency: "EUR".into(),
        }
    })?;
    up.register_typed(ProstCodec, "Deposited", 2, 3, |v2: pb::DepositedV2| {
        pb::DepositedV3 {
            cents: v2.cents,
            currency: v2.currency,
            reference: None,
        }
    })?;
    let backend = MemoryStore::new();
    let stream = StreamName::new("account", "acc-1")?;
    let mut v1 = Vec::new();
    Codec::encode(&ProstCodec, &pb::DepositedV1 { cents: 9 }, &mut v1)?;
    let old = NewEvent::new(EventType::new("Deposited")?, v1)
        .with_schema_version(1)
        .with_codec(ProstCodec::NAME);
    block_on(backend.append(
        &stream,
        ExpectedVersion::NoStream,
        vec![old],
        AppendOptions::new(),
    ))?;
    let store = TypedStore::new(
        backend,
        EventSchema::<pb::DepositedV3>::new(ProstCodec)
            .with_registry(registry()?)
            .with_upcasters(up),
    );
    let events = block_on(store.load(&stream))?;
    assert_eq!(
        events[0].data,
        pb::DepositedV3 {
            cents: 9,
            currency: "EUR".into(),
            reference: None
        }
    );
    // Without the 2 -> 3 step the store reports the gap.
    let mut partial = UpcasterRegistry::new();
    partial.register_typed(ProstCodec, "Deposited", 1, 2, |v1: pb::DepositedV1| {
        pb::DepositedV2 {
            cents: u64::from(v1.cents),
            currency: "EUR".into(),
        }
    })?;
    let gappy = TypedStore::new(
        store.backend().clone(),
        EventSchema::<pb::DepositedV3>::new(ProstCodec)
            .with_registry(registry()?)
            .with_upcasters(partial),
    );
    match block_on(gappy.load(&stream)) {
        Err(StoreError::Codec(CodecError::MissingUpcaster {
            from: 2, target: 3, ..
        })) => {}
        other => panic!("expected MissingUpcaster from 2, got {other:?}"),
    }
    Ok(())
}

/// A store holding v1 events written by JSON and by CBOR upcasts both, each
/// with its own codec's steps.
#[test]
fn mixed_codec_store_upcasts_each_event_with_its_codecs_steps() -> TestResult {
    let backend = MemoryStore::new();
    let stream = StreamName::new("account", "mixed")?;
    let mut json_v1 = Vec::new();
    Codec::<DepositedV1>::encode(&JsonCodec, &DepositedV1 { cents: 1 }, &mut json_v1)?;
    let mut cbor_v1 = Vec::new();
    Codec::<DepositedV1>::encode(&CborCodec, &DepositedV1 { cents: 2 }, &mut cbor_v1)?;
    let ty = EventType::new("Deposited")?;
    block_on(backend.append(
        &stream,
        ExpectedVersion::NoStream,
        vec![
            NewEvent::new(ty.clone(), json_v1).with_codec("json"),
            NewEvent::new(ty, cbor_v1).with_codec("cbor"),
        ],
        AppendOptions::new(),
    ))?;
    let mut up = chain(JsonCodec)?;
    // CBOR's steps beside JSON's on the same registry.
    up.register_typed(CborCodec, "Deposited", 1, 2, |v1: DepositedV1| {
        DepositedV2 {
            cents: u64::from(v1.cents),
            currency: "EUR".into(),
        }
    })?;
    up.register_typed(CborCodec, "Deposited", 2, 3, |v2: DepositedV2| {
        DepositedV3 {
            amount: Money {
                cents: v2.cents,
                currency: v2.currency,
            },
            reference: None,
        }
    })?;
    let schema = EventSchema::new(CborCodec)
        .with_reader(JsonCodec)
        .with_registry(registry()?)
        .with_upcasters(up);
    let events = block_on(TypedStore::new(backend, schema).load(&stream))?;
    let cents: Vec<u64> = events
        .iter()
        .map(|e| match &e.data {
            Event::Deposited(d) => d.amount.cents,
        })
        .collect();
    assert_eq!(cents, [1, 2]);
    Ok(())
}
