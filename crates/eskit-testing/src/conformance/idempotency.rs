//! Idempotency keys: retries write nothing and return the original records.

use eskit_core::limits::MAX_IDEMPOTENCY_KEY_BYTES;
use eskit_core::{
    AppendOptions, AppendResult, EventStore, ExpectedVersion, Metadata, NewEvent, StoreError,
    StreamName, ValidationError, Version,
};

use super::{
    Ctx, EVENTS, Failure, Outcome, Scenario, ensure, ensure_eq, ev, evs, expect_err, scenario_list,
    stream,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![EVENTS;
        "idempotency.retry_returns_original_records" => retry,
        "idempotency.retry_with_stale_expected_version" => retry_stale,
        "idempotency.retry_after_later_appends" => retry_after_later,
        "idempotency.different_payload_conflicts" => different_payload,
        "idempotency.different_event_count_conflicts" => different_count,
        "idempotency.different_event_type_conflicts" => different_type,
        "idempotency.key_scoped_to_stream" => scoped,
        "idempotency.key_stored_in_metadata" => stored,
        "idempotency.key_given_in_metadata" => key_in_metadata,
        "idempotency.concurrent_duplicates_write_once" => concurrent,
        "idempotency.invalid_key_rejected" => invalid_key,
    ]
}

async fn keyed(
    c: &Ctx,
    s: &StreamName,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    key: &str,
) -> Result<AppendResult, StoreError> {
    c.events()
        .append(
            s,
            expected,
            events,
            AppendOptions::new().with_idempotency_key(key),
        )
        .await
}

async fn retry(c: Ctx) -> Outcome {
    let s = stream("idem-retry")?;
    let events = evs(3, "Paid", "p")?;
    let first = keyed(&c, &s, ExpectedVersion::NoStream, events.clone(), "pay-1").await?;
    ensure!(!first.deduplicated, "first append reported as deduplicated");
    let before = c.load_all(&s).await?;
    // A retry carries the same content; ids may be new (a rebuilt command).
    let again: Vec<NewEvent> = events
        .iter()
        .map(|e| NewEvent::new(e.event_type().clone(), e.payload().to_vec()))
        .collect();
    let second = keyed(&c, &s, ExpectedVersion::Any, again, "pay-1").await?;
    ensure!(second.deduplicated, "retry not reported as deduplicated");
    ensure_eq!(
        second.records,
        first.records,
        "records returned by the retry"
    );
    ensure_eq!(c.load_all(&s).await?, before, "stream after the retry");
    let third = keyed(&c, &s, ExpectedVersion::Any, events, "pay-1").await?;
    ensure!(
        third.deduplicated,
        "second retry not reported as deduplicated"
    );
    ensure_eq!(
        third.records,
        first.records,
        "records returned by the second retry"
    );
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::new(3),
        "version after retries"
    );
    Ok(())
}

async fn retry_stale(c: Ctx) -> Outcome {
    // The classic unknown-outcome retry: the first attempt committed, the
    // caller retries with the expected version it used before.
    let s = stream("idem-stale")?;
    let events = evs(1, "Opened", "o")?;
    let first = keyed(&c, &s, ExpectedVersion::NoStream, events.clone(), "open").await?;
    let second = keyed(&c, &s, ExpectedVersion::NoStream, events, "open").await;
    match second {
        Ok(r) => {
            ensure!(r.deduplicated, "retry not reported as deduplicated");
            ensure_eq!(r.records, first.records, "records returned by the retry");
        }
        Err(e) => {
            return Err(Failure(format!(
                "retry with the same key and the stale expected version NoStream: expected the original records, got error {}",
                eskit_core::error_chain(&e)
            )));
        }
    }
    Ok(())
}

async fn retry_after_later(c: Ctx) -> Outcome {
    let s = stream("idem-later")?;
    let events = evs(2, "E", "k")?;
    let first = keyed(&c, &s, ExpectedVersion::Any, events.clone(), "k1").await?;
    c.append(&s, ExpectedVersion::Any, evs(3, "Other", "o")?)
        .await?;
    let again = keyed(&c, &s, ExpectedVersion::Any, events, "k1").await?;
    ensure!(
        again.deduplicated,
        "retry after later appends not deduplicated"
    );
    ensure_eq!(
        again.records,
        first.records,
        "records returned by the retry"
    );
    ensure_eq!(c.load_all(&s).await?.len(), 5, "events in the stream");
    Ok(())
}

async fn conflict_case(c: &Ctx, id: &str, first: Vec<NewEvent>, second: Vec<NewEvent>) -> Outcome {
    let s = stream(id)?;
    keyed(c, &s, ExpectedVersion::Any, first, "same-key").await?;
    let before = c.load_all(&s).await?;
    let e = expect_err!(
        keyed(c, &s, ExpectedVersion::Any, second, "same-key").await,
        StoreError::IdempotencyConflict { .. },
        "the same key with different events"
    );
    if let StoreError::IdempotencyConflict { stream: es, key } = &e {
        ensure_eq!(es, &s, "stream in the error");
        ensure_eq!(key.as_str(), "same-key", "key in the error");
    }
    ensure!(
        !e.is_conflict(),
        "an idempotency conflict must not be retried as a version conflict"
    );
    ensure_eq!(
        c.load_all(&s).await?,
        before,
        "stream after the rejected append"
    );
    Ok(())
}

async fn different_payload(c: Ctx) -> Outcome {
    conflict_case(&c, "idem-payload", vec![ev("E", "a")?], vec![ev("E", "b")?]).await
}

async fn different_count(c: Ctx) -> Outcome {
    conflict_case(
        &c,
        "idem-count",
        vec![ev("E", "a")?],
        vec![ev("E", "a")?, ev("E", "a")?],
    )
    .await
}

async fn different_type(c: Ctx) -> Outcome {
    conflict_case(&c, "idem-type", vec![ev("E", "a")?], vec![ev("F", "a")?]).await
}

async fn scoped(c: Ctx) -> Outcome {
    let a = stream("idem-scope-a")?;
    let b = stream("idem-scope-b")?;
    let ra = keyed(&c, &a, ExpectedVersion::Any, vec![ev("E", "x")?], "shared").await?;
    let rb = keyed(&c, &b, ExpectedVersion::Any, vec![ev("E", "x")?], "shared").await?;
    ensure!(
        !ra.deduplicated && !rb.deduplicated,
        "a key used on another stream deduplicated"
    );
    ensure_eq!(
        c.load_all(&b).await?.len(),
        1,
        "events in the second stream"
    );
    Ok(())
}

async fn stored(c: Ctx) -> Outcome {
    let s = stream("idem-stored")?;
    keyed(
        &c,
        &s,
        ExpectedVersion::Any,
        evs(2, "E", "x")?,
        "stored-key",
    )
    .await?;
    for e in c.load_all(&s).await? {
        ensure_eq!(
            e.metadata.idempotency_key(),
            Some("stored-key"),
            "idempotency key in the metadata of event {}",
            e.version
        );
    }
    Ok(())
}

async fn key_in_metadata(c: Ctx) -> Outcome {
    let s = stream("idem-meta")?;
    let opts =
        || AppendOptions::new().with_metadata(Metadata::new().with_idempotency_key("meta-key"));
    let events = evs(1, "E", "x")?;
    let first = c
        .events()
        .append(&s, ExpectedVersion::Any, events.clone(), opts())
        .await?;
    let second = c
        .events()
        .append(&s, ExpectedVersion::Any, events, opts())
        .await?;
    ensure!(
        second.deduplicated,
        "a key given in the metadata did not deduplicate"
    );
    ensure_eq!(
        second.records,
        first.records,
        "records returned by the retry"
    );
    Ok(())
}

async fn concurrent(c: Ctx) -> Outcome {
    let s = stream("idem-concurrent")?;
    let writers = c.stress().writers.max(2);
    let events = evs(2, "Charged", "c")?;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (c2, s, events) = (c.clone(), s.clone(), events.clone());
            c.spawn(async move { keyed(&c2, &s, ExpectedVersion::Any, events, "charge-1").await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    let written = results.iter().filter(|r| !r.deduplicated).count();
    ensure_eq!(
        written,
        1,
        "appends that wrote, of {writers} concurrent duplicates"
    );
    let first = &results[0].records;
    ensure!(
        results.iter().all(|r| &r.records == first),
        "duplicates returned different records"
    );
    ensure_eq!(
        c.load_all(&s).await?.len(),
        2,
        "events after concurrent duplicates"
    );
    Ok(())
}

async fn invalid_key(c: Ctx) -> Outcome {
    let s = stream("idem-invalid")?;
    let long = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
    for key in [String::new(), long] {
        expect_err!(
            keyed(&c, &s, ExpectedVersion::Any, evs(1, "E", "x")?, &key).await,
            StoreError::Validation(ValidationError::InvalidIdempotencyKey { .. }),
            "idempotency key of {} bytes",
            key.len()
        );
    }
    let max = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES);
    keyed(&c, &s, ExpectedVersion::Any, evs(1, "E", "x")?, &max).await?;
    ensure_eq!(
        c.load_all(&s).await?.len(),
        1,
        "events after rejected keys and one maximal key"
    );
    Ok(())
}
