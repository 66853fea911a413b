//! Feeds arbitrary bytes to the metadata wire readers (the flat JSON object
//! SQLite and PostgreSQL store, and the strict pair reader behind it).
//! Whatever is accepted must write back to text that reads the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = eskit_core::backend::decode_flat_json(text);
    if let Ok(m) = eskit_core::backend::metadata_from_json(text) {
        let again = eskit_core::backend::metadata_to_json(&m).unwrap_or_else(|| "{}".to_owned());
        assert_eq!(eskit_core::backend::metadata_from_json(&again).ok(), Some(m));
    }
});
