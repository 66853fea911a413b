//! Round-trip properties for each codec over generated events.
#![cfg(all(feature = "json", feature = "cbor", feature = "protobuf"))]

mod fixtures;

use eskit_codec::{CborCodec, JsonCodec, ProstCodec};
use eskit_core::typed::{Codec, DomainEvent, EventCodec};
use fixtures::bank::{self, bank_event::Event as ProtoEvent};
use fixtures::{Balance, BankEvent, Withdrawal};
use proptest::prelude::*;

fn bank_event() -> impl Strategy<Value = BankEvent> {
    let text = ".{0,40}";
    prop_oneof![
        (
            text,
            text,
            "[A-Z]{3}",
            any::<u64>(),
            prop::collection::vec(text, 0..6)
        )
            .prop_map(|(account_id, owner, currency, opened_at, tags)| {
                BankEvent::AccountOpened {
                    account_id,
                    owner,
                    currency,
                    opened_at,
                    tags,
                }
            }),
        (text, any::<u64>(), text, any::<u64>()).prop_map(
            |(account_id, amount_cents, reference, at)| {
                BankEvent::Deposited {
                    account_id,
                    amount_cents,
                    reference,
                    at,
                }
            }
        ),
        (text, any::<u64>(), prop::option::of(text)).prop_map(
            |(account_id, amount_cents, note)| {
                BankEvent::Withdrawn(Withdrawal {
                    account_id,
                    amount_cents,
                    note,
                })
            }
        ),
        (text, any::<u32>()).prop_map(|(s, n)| BankEvent::Flagged(s, n)),
        Just(BankEvent::Closed),
    ]
}

fn proto_event() -> impl Strategy<Value = ProtoEvent> {
    let text = ".{0,40}";
    prop_oneof![
        (
            text,
            text,
            text,
            any::<u64>(),
            prop::collection::vec(text, 0..6)
        )
            .prop_map(|(account_id, owner, currency, opened_at, tags)| {
                ProtoEvent::AccountOpened(bank::AccountOpened {
                    account_id,
                    owner,
                    currency,
                    opened_at,
                    tags,
                })
            }),
        (text, any::<u64>(), text, any::<u64>()).prop_map(
            |(account_id, amount_cents, reference, at)| {
                ProtoEvent::MoneyDeposited(bank::MoneyDeposited {
                    account_id,
                    amount_cents,
                    reference,
                    at,
                })
            }
        ),
        (text, any::<u64>()).prop_map(|(account_id, amount_cents)| {
            ProtoEvent::MoneyWithdrawn(bank::MoneyWithdrawn {
                account_id,
                amount_cents,
                ..Default::default()
            })
        }),
        text.prop_map(|reason| ProtoEvent::AccountClosed(bank::AccountClosed { reason })),
    ]
}

fn round_trip<E: DomainEvent, C: EventCodec<E>>(codec: &C, event: &E) -> Result<E, TestCaseError> {
    let mut payload = Vec::new();
    codec
        .encode(event, &mut payload)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    codec
        .decode(event.event_type(), &payload)
        .map_err(|e| TestCaseError::fail(e.to_string()))
}

proptest! {
    #[test]
    fn json_events_round_trip(event in bank_event()) {
        prop_assert_eq!(round_trip(&JsonCodec, &event)?, event);
    }

    #[test]
    fn cbor_events_round_trip(event in bank_event()) {
        prop_assert_eq!(round_trip(&CborCodec, &event)?, event);
    }

    #[test]
    fn protobuf_events_round_trip(event in proto_event()) {
        prop_assert_eq!(round_trip(&ProstCodec, &event)?, event);
    }

    /// JSON and CBOR payloads hold the same content: decoding either gives
    /// the same event, so a store can switch codecs event by event.
    #[test]
    fn json_and_cbor_agree(event in bank_event()) {
        let mut json = Vec::new();
        let mut cbor = Vec::new();
        EventCodec::encode(&JsonCodec, &event, &mut json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        EventCodec::encode(&CborCodec, &event, &mut cbor).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let a: serde_json::Value = serde_json::from_slice(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let b: serde_json::Value = ciborium::from_reader(&cbor[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(a, b);
    }

    #[test]
    fn snapshot_values_round_trip(cents in any::<i64>(), history in prop::collection::vec(any::<u64>(), 0..20), owner in ".{0,30}") {
        let state = Balance { cents, history, owner };
        for codec in [&JsonCodec as &dyn Codec<Balance>, &CborCodec as &dyn Codec<Balance>] {
            let mut out = Vec::new();
            codec.encode(&state, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(codec.decode(&out).map_err(|e| TestCaseError::fail(e.to_string()))?, state.clone());
        }
    }

    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fixtures::decode_json(&data);
        fixtures::decode_cbor(&data);
        fixtures::decode_protobuf(&data);
    }
}
