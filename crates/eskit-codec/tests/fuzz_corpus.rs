//! Replays the committed fuzz seed corpus (`fuzz/corpus/<target>/`) through
//! the same drivers the fuzz targets run, so every seed and every crash
//! input added to the corpus is checked by the normal test run.
#![cfg(all(feature = "json", feature = "cbor", feature = "protobuf"))]

mod fixtures;

use std::path::PathBuf;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs every file of `fuzz/corpus/<target>/` through `decode`.
fn check_corpus(target: &str, decode: fn(&[u8])) -> TestResult {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.is_file() {
            decode(&std::fs::read(&path)?);
            replayed += 1;
        }
    }
    assert!(
        replayed >= 10,
        "{target}: only {replayed} seeds in {}",
        dir.display()
    );
    Ok(())
}

#[test]
fn json_corpus_replays() -> TestResult {
    check_corpus("json_decode", fixtures::decode_json)
}

#[test]
fn cbor_corpus_replays() -> TestResult {
    check_corpus("cbor_decode", fixtures::decode_cbor)
}

#[test]
fn protobuf_corpus_replays() -> TestResult {
    check_corpus("protobuf_decode", fixtures::decode_protobuf)
}
