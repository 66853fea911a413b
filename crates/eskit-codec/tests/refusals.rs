//! Values a codec would write but could not read back are refused at encode,
//! with a typed reason and the place in the value, and never reach a store.
#![cfg(all(feature = "json", feature = "cbor", feature = "protobuf"))]

use std::collections::BTreeMap;

use eskit_codec::limits::{MAX_DEPTH, MAX_PROTOBUF_DEPTH};
use eskit_codec::{CborCodec, EncodeError, JsonCodec, ProstCodec};
use eskit_core::{
    error::{CodecError, StoreError},
    event::{ExpectedVersion, StreamName},
    memory::MemoryStore,
    rt::block_on,
    typed::{Codec, EventCodec, EventSchema, TypedStore},
};
use serde::{Deserialize, Serialize};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Reading {
    Taken { celsius: f64 },
    Batch(Vec<Sample>),
    Pair(f32, f32),
    Single(f64),
    Labelled { by_sensor: BTreeMap<String, f64> },
    Keyed { by_id: BTreeMap<u32, Sample> },
    Optional { sample: Option<Sample> },
    Nested { inner: Inner },
    Hint { hint: Option<Option<String>> },
    Nothing { nothing: Option<()> },
    Calibrated,
}
eskit_codec::serde_domain_event!(Reading);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sample {
    value: f32,
    weight: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Inner {
    Scaled(f64),
    Ranged(f64, f64),
    Bounded { low: f64, high: f64 },
}

fn sample(value: f32) -> Sample {
    Sample {
        value,
        weight: Some(1.0),
    }
}

/// The issue as reported: a NaN event was stored as `null`, and every load
/// of its stream failed from then on.
#[test]
fn a_nan_event_is_refused_and_its_stream_stays_readable() -> TestResult {
    let store = TypedStore::new(MemoryStore::new(), EventSchema::new(JsonCodec));
    let stream = StreamName::new("sensor", "s-1")?;
    block_on(store.append(
        &stream,
        ExpectedVersion::NoStream,
        vec![Reading::Taken { celsius: 21.5 }],
    ))?;
    let refused = block_on(store.append(
        &stream,
        ExpectedVersion::Any,
        vec![Reading::Taken { celsius: f64::NAN }],
    ));
    assert!(refused.is_err(), "a NaN event was stored");
    let loaded = block_on(store.load(&stream))?;
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].data, Reading::Taken { celsius: 21.5 });
    Ok(())
}

/// The typed reason behind a refused encode.
fn reason(result: Result<(), CodecError>) -> Result<EncodeError, String> {
    match result {
        Ok(()) => Err("encoded".to_owned()),
        Err(CodecError::Encode { source, .. }) => source
            .downcast_ref::<EncodeError>()
            .cloned()
            .ok_or_else(|| format!("untyped encode error: {source}")),
        Err(e) => Err(format!("not an encode error: {e}")),
    }
}

fn encode_event<C: EventCodec<Reading> + ?Sized>(
    codec: &C,
    event: &Reading,
) -> Result<(), CodecError> {
    let mut out = b"kept".to_vec();
    let result = codec.encode(event, &mut out);
    if result.is_err() {
        assert_eq!(out, b"kept", "a refused encode appends nothing");
    }
    result
}

/// Fails unless JSON refuses `event` as a non-finite float at `path`.
fn check_non_finite(event: Reading, path: &str) -> Result<(), String> {
    match reason(encode_event(&JsonCodec, &event)) {
        Ok(EncodeError::NonFiniteFloat { value, path: at }) if !value.is_finite() && at == path => {
            Ok(())
        }
        other => Err(format!(
            "{event:?}: expected a refusal at {path}, got {other:?}"
        )),
    }
}

#[test]
fn json_refuses_non_finite_floats_anywhere() -> TestResult {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    check_non_finite(Reading::Taken { celsius: nan }, "$.celsius")?;
    check_non_finite(Reading::Taken { celsius: -inf }, "$.celsius")?;
    check_non_finite(Reading::Single(inf), "$")?;
    check_non_finite(Reading::Pair(1.0, f32::NAN), "$[1]")?;
    check_non_finite(
        Reading::Batch(vec![sample(1.0), sample(2.0), sample(f32::INFINITY)]),
        "$[2].value",
    )?;
    check_non_finite(
        Reading::Batch(vec![Sample {
            value: 1.0,
            weight: Some(nan),
        }]),
        "$[0].weight",
    )?;
    check_non_finite(
        Reading::Labelled {
            by_sensor: BTreeMap::from([("a".to_owned(), 1.0), ("b\"".to_owned(), nan)]),
        },
        r#"$.by_sensor["b\""]"#,
    )?;
    check_non_finite(
        Reading::Keyed {
            by_id: BTreeMap::from([(7, sample(f32::NEG_INFINITY))]),
        },
        "$.by_id[7].value",
    )?;
    check_non_finite(
        Reading::Optional {
            sample: Some(sample(f32::NAN)),
        },
        "$.sample.value",
    )?;
    check_non_finite(
        Reading::Nested {
            inner: Inner::Scaled(nan),
        },
        "$.inner.Scaled",
    )?;
    check_non_finite(
        Reading::Nested {
            inner: Inner::Ranged(0.0, inf),
        },
        "$.inner.Ranged[1]",
    )?;
    check_non_finite(
        Reading::Nested {
            inner: Inner::Bounded {
                low: -inf,
                high: 0.0,
            },
        },
        "$.inner.Bounded.low",
    )?;
    Ok(())
}

#[test]
fn json_refuses_non_finite_floats_in_single_values() -> TestResult {
    let mut out = Vec::new();
    let refused =
        Codec::<Vec<Option<f32>>>::encode(&JsonCodec, &vec![None, Some(f32::NAN)], &mut out);
    assert!(
        matches!(reason(refused)?, EncodeError::NonFiniteFloat { ref path, .. } if path == "$[1]"),
    );
    assert!(out.is_empty());
    Codec::<Vec<f64>>::encode(
        &JsonCodec,
        &vec![f64::MAX, -0.0, f64::MIN_POSITIVE],
        &mut out,
    )?;
    assert_eq!(
        Codec::<Vec<f64>>::decode(&JsonCodec, &out)?,
        [f64::MAX, -0.0, f64::MIN_POSITIVE]
    );
    Ok(())
}

#[test]
fn refusals_say_what_and_where() -> TestResult {
    let err = encode_event(&JsonCodec, &Reading::Taken { celsius: f64::NAN })
        .err()
        .ok_or("encoded")?;
    assert_eq!(
        eskit_core::error::error_chain(&err),
        "failed to encode event `Taken`: non-finite float NaN refused at $.celsius"
    );
    let hint = Reading::Hint { hint: Some(None) };
    assert_eq!(
        reason(encode_event(&CborCodec, &hint))?.to_string(),
        "`Some` of a null value refused at $.hint: it would read back as `None`"
    );
    Ok(())
}

/// CBOR has a spelling for every float: nothing is refused, and every bit
/// pattern but a NaN's payload comes back.
#[test]
fn cbor_keeps_non_finite_floats() -> TestResult {
    for x in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        f64::MIN_POSITIVE / 2.0,
    ] {
        let event = Reading::Taken { celsius: x };
        let mut out = Vec::new();
        EventCodec::encode(&CborCodec, &event, &mut out)?;
        match EventCodec::<Reading>::decode(&CborCodec, "Taken", &out)? {
            Reading::Taken { celsius } if x.is_nan() => assert!(celsius.is_nan()),
            Reading::Taken { celsius } => assert_eq!(celsius.to_bits(), x.to_bits()),
            other => panic!("{other:?}"),
        }
    }
    Ok(())
}

/// `Some(None)` and `Some(())` are written as null, which reads back as
/// `None`: both serde codecs refuse them, and keep `None` and `Some(x)`.
#[test]
fn serde_codecs_refuse_some_of_null() -> TestResult {
    for codec in [&JsonCodec as &dyn EventCodec<Reading>, &CborCodec] {
        for (event, path) in [
            (Reading::Hint { hint: Some(None) }, "$.hint"),
            (Reading::Nothing { nothing: Some(()) }, "$.nothing"),
        ] {
            match reason(encode_event(codec, &event)) {
                Ok(EncodeError::NullInSome { path: at }) => assert_eq!(at, path),
                other => panic!("{}: {event:?}: {other:?}", codec.name()),
            }
        }
        for event in [
            Reading::Hint { hint: None },
            Reading::Hint {
                hint: Some(Some("warm".into())),
            },
            Reading::Nothing { nothing: None },
        ] {
            let mut out = Vec::new();
            codec.encode(&event, &mut out)?;
            assert_eq!(codec.decode(event_name(&event), &out)?, event);
        }
    }
    Ok(())
}

fn event_name(event: &Reading) -> &'static str {
    eskit_core::typed::DomainEvent::event_type(event)
}

/// Nested arrays, `levels` deep, inside a newtype event variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Deep {
    Grown(Nest),
}
eskit_codec::serde_domain_event!(Deep);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Nest {
    Leaf(u8),
    Level(Vec<Nest>),
}

fn nest(levels: usize) -> Nest {
    (0..levels).fold(Nest::Leaf(1), |n, _| Nest::Level(vec![n]))
}

/// As deep as the decoders read is written; one level more is refused at
/// the level that breaks the bound. The top-level variant is the event type,
/// not a level of the payload.
#[test]
fn serde_codecs_refuse_what_nests_past_max_depth() -> TestResult {
    for codec in [&JsonCodec as &dyn EventCodec<Deep>, &CborCodec] {
        let event = Deep::Grown(nest(MAX_DEPTH));
        let mut out = Vec::new();
        codec.encode(&event, &mut out)?;
        assert_eq!(codec.decode("Grown", &out)?, event, "{}", codec.name());

        let mut out = Vec::new();
        let deeper = codec.encode(&Deep::Grown(nest(MAX_DEPTH + 1)), &mut out);
        match deeper {
            Err(CodecError::Encode { source, .. }) => match source.downcast_ref() {
                Some(EncodeError::TooDeep {
                    max: MAX_DEPTH,
                    path: Some(path),
                }) => assert_eq!(*path, format!("${}", "[0]".repeat(MAX_DEPTH))),
                other => panic!("{}: {other:?}", codec.name()),
            },
            other => panic!("{}: {other:?}", codec.name()),
        }
    }
    Ok(())
}

#[derive(Clone, PartialEq, prost::Message)]
struct Node {
    #[prost(message, optional, boxed, tag = "1")]
    child: Option<Box<Node>>,
    #[prost(string, tag = "2")]
    name: String,
}

impl eskit_core::typed::DomainEvent for Node {
    fn event_type(&self) -> &'static str {
        "Node"
    }
    fn event_types() -> &'static [&'static str] {
        &["Node"]
    }
}

fn nodes(nested: usize) -> Node {
    (0..nested).fold(Node::default(), |child, i| Node {
        child: Some(Box::new(child)),
        name: format!("level {i}"),
    })
}

/// prost writes recursive messages at any depth but reads only
/// `MAX_PROTOBUF_DEPTH` levels below the top: the codec refuses the rest.
#[test]
fn protobuf_refuses_what_prost_cannot_read_back() -> TestResult {
    let ok = nodes(MAX_PROTOBUF_DEPTH);
    let mut out = Vec::new();
    EventCodec::encode(&ProstCodec, &ok, &mut out)?;
    assert_eq!(EventCodec::<Node>::decode(&ProstCodec, "Node", &out)?, ok);
    Codec::encode(&ProstCodec, &ok, &mut Vec::new())?;

    let deep = nodes(MAX_PROTOBUF_DEPTH + 1);
    let too_deep = EncodeError::TooDeep {
        max: MAX_PROTOBUF_DEPTH,
        path: None,
    };
    let mut out = b"kept".to_vec();
    assert_eq!(
        reason(EventCodec::encode(&ProstCodec, &deep, &mut out))?,
        too_deep
    );
    assert_eq!(
        reason(Codec::encode(&ProstCodec, &deep, &mut out))?,
        too_deep
    );
    assert_eq!(out, b"kept");
    assert_eq!(too_deep.to_string(), "value nests deeper than 100 levels");
    Ok(())
}

/// The refusal reaches the caller of a store as a codec error, and the
/// stream keeps only what was readable.
#[test]
fn a_refused_event_fails_the_whole_append() -> TestResult {
    let store = TypedStore::new(MemoryStore::new(), EventSchema::new(CborCodec));
    let stream = StreamName::new("sensor", "s-2")?;
    let result = block_on(store.append(
        &stream,
        ExpectedVersion::NoStream,
        vec![Reading::Calibrated, Reading::Hint { hint: Some(None) }],
    ));
    match result {
        Err(StoreError::Codec(CodecError::Encode { event_type, .. })) => {
            assert_eq!(event_type.as_deref(), Some("Hint"));
        }
        other => panic!("{other:?}"),
    }
    assert!(block_on(store.load(&stream))?.is_empty());
    Ok(())
}
