//! Untrusted input: every malformed payload is an error, never a panic, a
//! hang or an unbounded allocation.
#![cfg(all(feature = "json", feature = "cbor", feature = "protobuf"))]

mod fixtures;

use std::collections::BTreeMap;
use std::error::Error as _;
use std::time::{Duration, Instant};

use eskit_codec::limits::{MAX_DEPTH, MAX_EVENT_BYTES};
use eskit_codec::{CborCodec, JsonCodec, LimitError, ProstCodec};
use eskit_core::{
    error::CodecError,
    typed::{Codec, EventCodec},
};
use fixtures::bank::bank_event::Event as ProtoEvent;
use fixtures::{Balance, BankEvent, reference_event, reference_proto_event};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One decoder under test: its name and a function decoding a payload as
/// the reference event's type.
struct Decoder {
    name: &'static str,
    decode: fn(&[u8]) -> Result<(), CodecError>,
    payload: Vec<u8>,
    /// Whether every proper prefix of a valid payload is invalid (true for
    /// self-delimiting formats; Protobuf has no end marker).
    prefixes_invalid: bool,
}

fn decoders() -> Result<Vec<Decoder>, CodecError> {
    let mut json = Vec::new();
    EventCodec::encode(&JsonCodec, &reference_event(), &mut json)?;
    let mut cbor = Vec::new();
    EventCodec::encode(&CborCodec, &reference_event(), &mut cbor)?;
    let mut proto = Vec::new();
    EventCodec::encode(&ProstCodec, &reference_proto_event(), &mut proto)?;
    Ok(vec![
        Decoder {
            name: "json",
            decode: |b| EventCodec::<BankEvent>::decode(&JsonCodec, "AccountOpened", b).map(drop),
            payload: json,
            prefixes_invalid: true,
        },
        Decoder {
            name: "cbor",
            decode: |b| EventCodec::<BankEvent>::decode(&CborCodec, "AccountOpened", b).map(drop),
            payload: cbor,
            prefixes_invalid: true,
        },
        Decoder {
            name: "protobuf",
            decode: |b| EventCodec::<ProtoEvent>::decode(&ProstCodec, "AccountOpened", b).map(drop),
            payload: proto,
            prefixes_invalid: false,
        },
    ])
}

#[test]
fn reference_payloads_decode() -> TestResult {
    for d in decoders()? {
        (d.decode)(&d.payload)?;
        assert!(
            d.payload.len() >= 100,
            "{}: {} bytes",
            d.name,
            d.payload.len()
        );
    }
    Ok(())
}

#[test]
fn truncation_at_every_offset_is_an_error() -> TestResult {
    for d in decoders()? {
        let mut errors = 0;
        for end in 0..d.payload.len() {
            let result = (d.decode)(&d.payload[..end]);
            if d.prefixes_invalid {
                assert!(result.is_err(), "{}: prefix of {end} bytes decoded", d.name);
            }
            errors += usize::from(result.is_err());
        }
        assert!(errors > 0, "{}", d.name);
    }
    Ok(())
}

#[test]
fn every_single_bit_flip_is_handled() -> TestResult {
    for d in decoders()? {
        let mut flipped = d.payload.clone();
        let (mut ok, mut err) = (0, 0);
        for byte in 0..flipped.len() {
            for bit in 0..8 {
                flipped[byte] ^= 1 << bit;
                match (d.decode)(&flipped) {
                    Ok(()) => ok += 1,
                    Err(_) => err += 1,
                }
                flipped[byte] ^= 1 << bit;
            }
        }
        assert_eq!(ok + err, d.payload.len() * 8);
        // Flipping structural bytes must be caught; flipping a letter inside
        // a string is still a valid payload.
        assert!(err > 0 && ok > 0, "{}: {ok} ok, {err} errors", d.name);
    }
    Ok(())
}

/// Fails unless `f` returns an error within a second.
fn check_fast_error<T: std::fmt::Debug>(what: &str, f: impl FnOnce() -> Result<T, CodecError>) {
    let start = Instant::now();
    let result = f();
    assert!(result.is_err(), "{what}: decoded {result:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{what}: took {:?}",
        start.elapsed()
    );
}

/// Declared lengths far beyond the input must not be allocated up front.
#[test]
fn cbor_length_bombs_are_errors() {
    let ff8 = [0xFF; 8];
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        ("array u32::MAX", [&[0x9A][..], &[0xFF; 4]].concat()),
        ("array u64::MAX", [&[0x9B][..], &ff8].concat()),
        ("bytes u32::MAX", [&[0x5A][..], &[0xFF; 4]].concat()),
        ("bytes u64::MAX", [&[0x5B][..], &ff8].concat()),
        (
            "text i64::MAX",
            [&[0x7B, 0x7F][..], &[0xFF; 7], b"abc"].concat(),
        ),
        ("map u32::MAX", [&[0xBA][..], &[0xFF; 4]].concat()),
        ("map u64::MAX", [&[0xBB][..], &ff8].concat()),
        ("tagged bytes", [&[0xC2, 0x5A][..], &[0xFF; 4]].concat()),
        ("indefinite array", vec![0x9F, 0x01, 0x02]),
    ];
    for (what, bytes) in &bombs {
        check_fast_error(what, || {
            EventCodec::<BankEvent>::decode(&CborCodec, "AccountOpened", bytes)
        });
        check_fast_error(what, || {
            EventCodec::<BankEvent>::decode(&CborCodec, "Flagged", bytes)
        });
        check_fast_error(what, || Codec::<Vec<u64>>::decode(&CborCodec, bytes));
        check_fast_error(what, || Codec::<String>::decode(&CborCodec, bytes));
        check_fast_error(what, || {
            Codec::<BTreeMap<String, u64>>::decode(&CborCodec, bytes)
        });
        check_fast_error(what, || Codec::<ciborium::Value>::decode(&CborCodec, bytes));
        check_fast_error(what, || Codec::<Balance>::decode(&CborCodec, bytes));
    }
}

#[test]
fn protobuf_length_bombs_are_errors() {
    // Field 1 (account_id), length-delimited, declared length u64::MAX.
    let bomb = [&[0x0A][..], &[0xFF; 9], &[0x01]].concat();
    check_fast_error("string u64::MAX", || {
        EventCodec::<ProtoEvent>::decode(&ProstCodec, "AccountOpened", &bomb)
    });
    // Field 5 (tags) declared 2 GiB long.
    let bomb = [0x2A, 0x80, 0x80, 0x80, 0x80, 0x08, b'x'];
    check_fast_error("repeated string 2 GiB", || {
        EventCodec::<ProtoEvent>::decode(&ProstCodec, "AccountOpened", &bomb)
    });
}

const MILLION: usize = 1_000_000;

#[test]
fn a_million_levels_of_nesting_are_errors() {
    let json_arrays = "[".repeat(MILLION);
    let json_objects = r#"{"a":"#.repeat(MILLION);
    for (what, bytes) in [
        ("arrays", json_arrays.as_bytes()),
        ("objects", json_objects.as_bytes()),
    ] {
        check_fast_error(what, || {
            EventCodec::<BankEvent>::decode(&JsonCodec, "AccountOpened", bytes)
        });
        check_fast_error(what, || {
            EventCodec::<BankEvent>::decode(&JsonCodec, "Flagged", bytes)
        });
        check_fast_error(what, || {
            Codec::<serde_json::Value>::decode(&JsonCodec, bytes)
        });
    }

    let cbor_arrays = vec![0x81; MILLION];
    let cbor_maps = [0xA1, 0x00].repeat(MILLION);
    let cbor_tags = [0xC6].repeat(MILLION);
    for (what, bytes) in [
        ("arrays", &cbor_arrays),
        ("maps", &cbor_maps),
        ("tags", &cbor_tags),
    ] {
        check_fast_error(what, || {
            EventCodec::<BankEvent>::decode(&CborCodec, "AccountOpened", bytes)
        });
        check_fast_error(what, || {
            EventCodec::<BankEvent>::decode(&CborCodec, "Withdrawn", bytes)
        });
        check_fast_error(what, || Codec::<ciborium::Value>::decode(&CborCodec, bytes));
    }

    // Nested groups in an unknown field: prost recurses to skip them.
    let groups = vec![0x0B; MILLION];
    check_fast_error("protobuf groups", || {
        EventCodec::<ProtoEvent>::decode(&ProstCodec, "AccountOpened", &groups)
    });
    check_fast_error("protobuf groups in envelope", || {
        Codec::<fixtures::bank::BankEvent>::decode(&ProstCodec, &groups)
    });
}

/// The nesting cap is ours (32), not the format library's.
#[test]
fn nesting_cap_is_max_depth() -> TestResult {
    let json = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    Codec::<serde_json::Value>::decode(&JsonCodec, json(MAX_DEPTH).as_bytes())?;
    let err = Codec::<serde_json::Value>::decode(&JsonCodec, json(MAX_DEPTH + 1).as_bytes());
    assert_eq!(limit_error(&err), Some(&LimitError::TooDeep), "{err:?}");

    let cbor = |depth: usize| [vec![0x81; depth - 1], vec![0x80]].concat();
    Codec::<ciborium::Value>::decode(&CborCodec, &cbor(MAX_DEPTH))?;
    assert!(Codec::<ciborium::Value>::decode(&CborCodec, &cbor(MAX_DEPTH + 1)).is_err());
    Ok(())
}

fn limit_error<T>(result: &Result<T, CodecError>) -> Option<&LimitError> {
    match result {
        Err(CodecError::Decode { source, .. }) => source.downcast_ref::<LimitError>(),
        _ => None,
    }
}

#[test]
fn oversized_input_is_rejected_before_parsing() {
    let big = vec![b' '; MAX_EVENT_BYTES + 1];
    let too_large = LimitError::TooLarge {
        len: MAX_EVENT_BYTES + 1,
        max: MAX_EVENT_BYTES,
    };
    let json = EventCodec::<BankEvent>::decode(&JsonCodec, "Closed", &big);
    let cbor = EventCodec::<BankEvent>::decode(&CborCodec, "Closed", &big);
    let proto = EventCodec::<ProtoEvent>::decode(&ProstCodec, "AccountClosed", &big);
    assert_eq!(limit_error(&json), Some(&too_large));
    assert_eq!(limit_error(&cbor), Some(&too_large));
    assert_eq!(limit_error(&proto), Some(&too_large));
    // The error names the event type and keeps the cause as its source.
    if let Err(e) = json {
        assert_eq!(e.to_string(), "failed to decode event `Closed`");
        assert!(e.source().is_some());
    }
}

#[test]
fn invalid_utf8_is_an_error() {
    let json = b"{\"account_id\":\"\xff\xfe\",\"owner\":\"\",\"currency\":\"\",\"opened_at\":1,\"tags\":[]}";
    check_fast_error("json", || {
        EventCodec::<BankEvent>::decode(&JsonCodec, "AccountOpened", json)
    });
    // {"account_id": text(2) ff fe, ...}
    let mut cbor = vec![0xA1, 0x6A];
    cbor.extend_from_slice(b"account_id");
    cbor.extend_from_slice(&[0x62, 0xFF, 0xFE]);
    check_fast_error("cbor", || {
        EventCodec::<BankEvent>::decode(&CborCodec, "AccountOpened", &cbor)
    });
    check_fast_error("cbor string", || {
        Codec::<String>::decode(&CborCodec, &[0x62, 0xC3, 0x28])
    });
    let proto = [0x0A, 0x02, 0xFF, 0xFE];
    check_fast_error("protobuf", || {
        EventCodec::<ProtoEvent>::decode(&ProstCodec, "AccountOpened", &proto)
    });
}

#[test]
fn trailing_bytes_are_errors() -> TestResult {
    let mut cbor = Vec::new();
    Codec::encode(&CborCodec, &7_u64, &mut cbor)?;
    cbor.push(0x00);
    let err = Codec::<u64>::decode(&CborCodec, &cbor);
    assert_eq!(
        limit_error(&err),
        Some(&LimitError::TrailingBytes { count: 1 })
    );
    assert!(Codec::<u64>::decode(&JsonCodec, b"7 8").is_err());
    Ok(())
}

/// A recursive message: prost bounds its nesting at `MAX_PROTOBUF_DEPTH`.
#[derive(Clone, PartialEq, prost::Message)]
struct Node {
    #[prost(message, optional, boxed, tag = "1")]
    child: Option<Box<Node>>,
}

/// A `Node` with `nested` levels of children below it.
fn nested_nodes(nested: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..nested {
        let mut outer = Vec::new();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut outer);
        prost::encoding::encode_varint(bytes.len() as u64, &mut outer);
        outer.extend_from_slice(&bytes);
        bytes = outer;
    }
    bytes
}

#[test]
fn protobuf_nesting_past_the_limit_is_an_error() -> TestResult {
    use eskit_codec::limits::MAX_PROTOBUF_DEPTH;
    let ok = Codec::<Node>::decode(&ProstCodec, &nested_nodes(MAX_PROTOBUF_DEPTH))?;
    assert!(ok.child.is_some());
    let err = Codec::<Node>::decode(&ProstCodec, &nested_nodes(MAX_PROTOBUF_DEPTH + 1));
    assert!(
        err.is_err(),
        "{} nested levels decoded",
        MAX_PROTOBUF_DEPTH + 1
    );
    Ok(())
}

#[test]
fn duplicate_fields_are_errors_and_unknown_fields_are_ignored() -> TestResult {
    let dup = br#"{"account_id":"a","amount_cents":1,"amount_cents":2,"note":null}"#;
    assert!(EventCodec::<BankEvent>::decode(&JsonCodec, "Withdrawn", dup).is_err());
    // {"note": null, "note": null} plus the required fields, in CBOR.
    let value = ciborium::Value::Map(vec![
        ("account_id".into(), "a".into()),
        ("amount_cents".into(), 1.into()),
        ("note".into(), ciborium::Value::Null),
        ("note".into(), ciborium::Value::Null),
    ]);
    let mut cbor = Vec::new();
    Codec::encode(&CborCodec, &value, &mut cbor)?;
    assert!(EventCodec::<BankEvent>::decode(&CborCodec, "Withdrawn", &cbor).is_err());

    // Fields added by a newer writer are skipped (forward compatibility).
    let newer = br#"{"account_id":"a","amount_cents":1,"note":null,"channel":{"atm":[1,2]}}"#;
    let event = EventCodec::<BankEvent>::decode(&JsonCodec, "Withdrawn", newer)?;
    assert!(matches!(event, BankEvent::Withdrawn(ref w) if w.amount_cents == 1));
    Ok(())
}

#[test]
fn integer_edge_cases() -> TestResult {
    let max = EventCodec::<BankEvent>::decode(
        &JsonCodec,
        "Flagged",
        format!("[\"x\",{}]", u32::MAX).as_bytes(),
    )?;
    assert_eq!(max, BankEvent::Flagged("x".into(), u32::MAX));
    let over = format!("[\"x\",{}]", u64::from(u32::MAX) + 1);
    assert!(EventCodec::<BankEvent>::decode(&JsonCodec, "Flagged", over.as_bytes()).is_err());
    // CBOR major type 1 (negative) where an unsigned value is expected.
    assert!(Codec::<u64>::decode(&CborCodec, &[0x20]).is_err());
    // Above i64::MAX where a signed value is expected.
    assert!(Codec::<i64>::decode(&CborCodec, &[0x1B, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err());
    let mut bytes = Vec::new();
    Codec::encode(&CborCodec, &u64::MAX, &mut bytes)?;
    assert_eq!(Codec::<u64>::decode(&CborCodec, &bytes)?, u64::MAX);
    // JSON has no NaN or Infinity.
    assert!(Codec::<f64>::decode(&JsonCodec, b"NaN").is_err());
    assert!(Codec::<f64>::decode(&JsonCodec, b"Infinity").is_err());
    // NUL is a valid character inside a string.
    assert_eq!(
        Codec::<String>::decode(&JsonCodec, br#""a\u0000b""#)?,
        "a\0b"
    );
    Ok(())
}

#[test]
fn payload_at_the_cap_decodes_and_one_byte_more_does_not() -> TestResult {
    let body = format!("[\"{}\",1]", "a".repeat(1000));
    let mut at_cap = body.into_bytes();
    at_cap.resize(MAX_EVENT_BYTES, b' ');
    let event = EventCodec::<BankEvent>::decode(&JsonCodec, "Flagged", &at_cap)?;
    assert!(matches!(event, BankEvent::Flagged(_, 1)));
    at_cap.push(b' ');
    let err = EventCodec::<BankEvent>::decode(&JsonCodec, "Flagged", &at_cap);
    assert!(limit_error(&err).is_some(), "{err:?}");
    Ok(())
}
