//! The metadata wire shape: every valid metadata round-trips through its
//! pairs and its JSON, the JSON agrees with a reference parser, and no
//! input, however broken, makes the readers panic.

use eskit_core::{
    backend::{decode_flat_json, encode_flat_json, metadata_from_json, metadata_to_json},
    event::{Metadata, Principal, PrincipalKind},
};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    // Mostly printable, with quotes, backslashes, control characters and
    // characters outside the BMP mixed in; never NUL (metadata refuses it).
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            1 => prop::sample::select(vec!['"', '\\', '/', '\n', '\t', '\u{1}', '\u{1f}', 'é', '😀', '\u{2028}', '.']),
            1 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        ],
        0..12,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn principal() -> impl Strategy<Value = Principal> {
    (
        prop_oneof![
            Just(PrincipalKind::User),
            Just(PrincipalKind::Service),
            Just(PrincipalKind::Automation),
            text().prop_map(PrincipalKind::Other),
        ],
        text(),
    )
        .prop_map(|(k, id)| Principal::new(k, id))
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text().prop_filter("a key is non-empty", |k| !k.is_empty())),
        prop::option::of(principal()),
        prop::option::of(principal()),
        prop::collection::btree_map(
            text().prop_filter("a key is non-empty", |k| !k.is_empty()),
            text(),
            0..6,
        ),
    )
        .prop_map(|(corr, cause, key, init, orig, extra)| {
            let mut m = Metadata::new();
            if let Some(v) = corr {
                m = m.with_correlation_id(v);
            }
            if let Some(v) = cause {
                m = m.with_causation_id(v);
            }
            if let Some(v) = key {
                m = m.with_idempotency_key(v);
            }
            if let Some(p) = init {
                m = m.with_initiator(p);
            }
            if let Some(p) = orig {
                m = m.with_originator(p);
            }
            for (k, v) in extra {
                m = m.with_extra(k, v);
            }
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn metadata_round_trips_through_pairs_and_json(m in metadata()) {
        prop_assert!(m.validate().is_ok());
        let pairs: Vec<(String, String)> =
            m.to_wire().into_iter().map(|(k, v)| (k.into_owned(), v.to_owned())).collect();
        prop_assert_eq!(Metadata::from_wire(pairs.iter().rev().cloned()), Ok(m.clone()));
        match metadata_to_json(&m) {
            None => prop_assert!(m.is_empty()),
            Some(text) => {
                prop_assert_eq!(metadata_from_json(&text), Ok(m.clone()));
                // A reference parser reads the same object.
                let reference: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let expected: serde_json::Map<String, serde_json::Value> = pairs
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                prop_assert_eq!(reference, expected);
            }
        }
    }

    #[test]
    fn flat_json_agrees_with_a_reference_encoder(
        pairs in prop::collection::btree_map(text(), text(), 0..8),
    ) {
        let ours = encode_flat_json(pairs.iter());
        let theirs = serde_json::to_string(&pairs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: Vec<(String, String)> = pairs.into_iter().collect();
        prop_assert_eq!(decode_flat_json(&ours), Ok(want.clone()));
        prop_assert_eq!(decode_flat_json(&theirs), Ok(want));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = decode_flat_json(&text);
        let _ = metadata_from_json(&text);
    }

    #[test]
    fn near_valid_json_never_panics(
        m in metadata(),
        cut in any::<prop::sample::Index>(),
        insert in prop::sample::select(vec!["", "\"", "\\", "\\u", "\\ud800", "{", "}", ":", ",", "1", "\u{1}", "\"x.\":\"\""]),
    ) {
        let text = metadata_to_json(&m).unwrap_or_else(|| "{}".to_owned());
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let broken = format!("{}{insert}{}", &text[..at], &text[at..]);
        if let Ok(back) = metadata_from_json(&broken) {
            // Whatever is accepted is valid metadata that writes back the same way.
            prop_assert!(back.validate().is_ok());
            let again = metadata_to_json(&back).unwrap_or_else(|| "{}".to_owned());
            prop_assert_eq!(metadata_from_json(&again), Ok(back));
        }
        let truncated = &text[..at];
        let _ = metadata_from_json(truncated);
    }
}

/// Replays the fuzz seed corpus (`fuzz/corpus/metadata_json/`) with the
/// fuzz target's own check, so every seed and every crash input added there
/// runs in the normal tests.
#[test]
fn the_fuzz_corpus_replays() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/metadata_json");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let Ok(text) = String::from_utf8(std::fs::read(&path)?) else {
            continue;
        };
        let _ = decode_flat_json(&text);
        if let Ok(m) = metadata_from_json(&text) {
            let again = metadata_to_json(&m).unwrap_or_else(|| "{}".to_owned());
            assert_eq!(
                metadata_from_json(&again).ok(),
                Some(m),
                "{}",
                path.display()
            );
        }
        replayed += 1;
    }
    assert!(replayed >= 10, "only {replayed} seeds in {}", dir.display());
    Ok(())
}

#[test]
fn the_seeds_read_as_documented() -> Result<(), Box<dyn std::error::Error>> {
    let full =
        r#"{"correlation_id":"c-1","initiator.kind":"user","initiator.id":"ada","x.region":"eu"}"#;
    let m = metadata_from_json(full)?;
    assert_eq!(m.correlation_id(), Some("c-1"));
    assert_eq!(m.initiator(), Some(&Principal::user("ada")));
    assert_eq!(m.extra_value("region"), Some("eu"));
    assert_eq!(metadata_to_json(&m).as_deref(), Some(full));
    // The old nested shape is not the wire shape (SQLite reads it by itself).
    let nested = r#"{"initiator":{"kind":"user","id":"ada"}}"#;
    assert!(metadata_from_json(nested).is_err());
    Ok(())
}
