//! The dead-letter store on PostgreSQL: letters keep their event exactly,
//! ids grow, lists page by id per subscription, bounds are enforced.

mod common;

use eskit_core::backend::bounded_error;
use eskit_core::error::StoreError;
use eskit_core::event::{EventType, ExpectedVersion, Metadata, NewEvent, StreamName, Tag};
use eskit_core::limits::MAX_DEAD_LETTER_ERROR_BYTES;
use eskit_core::store::{
    AfterFailure, AppendOptions, ClaimOptions, ClaimStore, DeadLetterStore, EventStore,
    LoadOptions, NewWorkItem,
};
use eskit_pg::{PgOptions, PgStore};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn dead_letters_round_trip() -> TestResult {
    let store =
        PgStore::connect(PgOptions::new(common::url()?).with_schema(common::fresh_schema("dead")))
            .await?;
    let s = StreamName::new("order", "o-1")?;
    let e = NewEvent::new(EventType::new("Placed")?, vec![0, 1, 2, 255])
        .with_tags([Tag::new("order:o-1")?])
        .with_schema_version(3)
        .with_codec("json");
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![e],
            AppendOptions::new().with_metadata(Metadata::new().with_correlation_id("c-1")),
        )
        .await?;
    let event = store
        .load(&s, LoadOptions::new())
        .await?
        .pop()
        .ok_or("no event")?;
    let letters = store.dead_letters();
    let long = "é".repeat(MAX_DEAD_LETTER_ERROR_BYTES);
    let a = letters.put("mailer", &event, "smtp down", 5).await?;
    let b = letters.put("mailer", &event, &long, 1).await?;
    let c = letters.put("other", &event, "x", 1).await?;
    assert!(a < b && b < c);

    let got = letters.get(a).await?.ok_or("letter a missing")?;
    assert_eq!(got.event, event);
    assert_eq!(
        (got.subscription.as_str(), got.error.as_str(), got.attempts),
        ("mailer", "smtp down", 5)
    );
    let got_b = letters.get(b).await?.ok_or("letter b missing")?;
    assert_eq!(got_b.error, bounded_error(&long));

    let mailer = letters.list("mailer", 0, 10).await?;
    assert_eq!(mailer.iter().map(|l| l.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(letters.list("mailer", a, 10).await?.len(), 1);
    assert_eq!(letters.list("mailer", 0, 1).await?.len(), 1);
    assert!(matches!(
        letters.list("mailer", 0, 0).await,
        Err(StoreError::Validation(_))
    ));
    assert!(matches!(
        letters.put("", &event, "x", 1).await,
        Err(StoreError::Validation(_))
    ));

    assert!(letters.delete(a).await?);
    assert!(!letters.delete(a).await?);
    assert!(letters.get(a).await?.is_none());
    store.close().await;
    Ok(())
}

/// An error text with NUL (a handler's message can carry user data) is
/// kept with U+FFFD in its place: PostgreSQL text cannot hold NUL, and a
/// refused dead letter or failed attempt would halt the subscription or
/// worker that reports it. Each NUL becomes one replacement character.
#[tokio::test]
async fn error_texts_with_nul_are_kept() -> TestResult {
    let store =
        PgStore::connect(PgOptions::new(common::url()?).with_schema(common::fresh_schema("nul")))
            .await?;
    let s = StreamName::new("order", "o-1")?;
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(EventType::new("Placed")?, b"{}".to_vec())],
            AppendOptions::new(),
        )
        .await?;
    let event = store
        .load(&s, LoadOptions::new())
        .await?
        .pop()
        .ok_or("no event")?;
    let letters = store.dead_letters();
    let id = letters.put("mailer", &event, "bad \0 byte\0", 1).await?;
    let got = letters.get(id).await?.ok_or("the letter is missing")?;
    assert_eq!(got.error, "bad \u{fffd} byte\u{fffd}");

    let claims = store.claims();
    claims
        .enqueue("mail", vec![NewWorkItem::new("k", b"p".to_vec())])
        .await?;
    let claimed = claims
        .claim(
            "mail",
            ClaimOptions::new("worker", 1, std::time::Duration::from_secs(30))?,
        )
        .await?;
    let item = claimed.first().ok_or("nothing claimed")?;
    assert!(
        claims
            .fail(item.claim, "smtp \0 down", AfterFailure::Dead)
            .await?
    );
    let stored = claims
        .get(item.claim.id)
        .await?
        .ok_or("the work item is missing")?;
    assert_eq!(stored.last_error.as_deref(), Some("smtp \u{fffd} down"));
    store.close().await;
    Ok(())
}
