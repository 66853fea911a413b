//! Feeds arbitrary bytes to every json decoder: the first byte picks the
//! event type, the rest is the payload (see the shared fixtures).
#![no_main]

#[path = "../../crates/eskit-codec/tests/fixtures/mod.rs"]
mod fixtures;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fixtures::decode_json(data);
});
