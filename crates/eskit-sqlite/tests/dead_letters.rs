//! The SQLite dead-letter store: letters round-trip whole (metadata, tags),
//! outlive a delete of their stream and a reopen, and are bounded.

mod common;

use common::TempDir;
use eskit_core::{
    error::{StoreError, ValidationError},
    event::{EventType, ExpectedVersion, Metadata, NewEvent, StreamName, Tag},
    limits::MAX_READ_LIMIT,
    rt::block_on,
    store::{AppendOptions, DeadLetterStore, EventStore, LoadOptions, StreamLifecycle},
};
use eskit_sqlite::SqliteStore;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn dead_letters_round_trip_and_outlive_deletes_and_reopens() -> TestResult {
    let dir = TempDir::new("dead-letters")?;
    let path = dir.file("events.db");
    let store = SqliteStore::open(&path)?;
    let s = StreamName::new("order", "o-1")?;
    let event = NewEvent::new(EventType::new("Placed")?, b"{\"n\":1}".to_vec())
        .with_tags([Tag::new("customer:c-1")?]);
    let options = AppendOptions::new().with_metadata(
        Metadata::new()
            .with_correlation_id("corr-1")
            .with_extra("k", "v"),
    );
    block_on(store.append(&s, ExpectedVersion::Any, vec![event], options))?;
    let stored = block_on(store.load(&s, LoadOptions::new()))?.remove(0);
    let letters = store.dead_letters();
    let id = block_on(letters.put("pricing", &stored, "price missing: no list", 6))?;
    block_on(letters.put("other", &stored, "x", 1))?;
    // The stream goes away; the letter keeps the whole event.
    block_on(store.delete(&s))?;
    block_on(store.close());

    let store = SqliteStore::open(&path)?;
    let letters = store.dead_letters();
    let kept = block_on(letters.list("pricing", 0, 10))?;
    assert_eq!(kept.len(), 1);
    let l = &kept[0];
    assert_eq!(
        (l.id, l.attempts, l.subscription.as_str()),
        (id, 6, "pricing")
    );
    assert_eq!(l.error, "price missing: no list");
    assert_eq!(l.event, stored, "the event round-trips whole");
    assert_eq!(block_on(letters.get(id))?.as_ref(), Some(l));
    assert_eq!(block_on(letters.list("pricing", id, 10))?.len(), 0);
    assert!(block_on(letters.delete(id))?);
    assert!(!block_on(letters.delete(id))?);
    assert!(block_on(letters.get(id))?.is_none());
    for limit in [0, MAX_READ_LIMIT + 1] {
        assert!(matches!(
            block_on(letters.list("pricing", 0, limit)),
            Err(StoreError::Validation(ValidationError::InvalidLimit { .. }))
        ));
    }
    assert!(matches!(
        block_on(letters.put("", &stored, "e", 1)),
        Err(StoreError::Validation(ValidationError::Name(_)))
    ));
    block_on(store.close());
    Ok(())
}
