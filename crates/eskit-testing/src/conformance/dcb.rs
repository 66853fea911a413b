//! Tags and the Dynamic Consistency Boundary: tags round-trip exactly and
//! are bounded, and take part in idempotent retries.

use eskit_core::limits::{MAX_TAG_BYTES, MAX_TAGS_PER_EVENT};
use eskit_core::{
    AppendOptions, EventStore, ExpectedVersion, NewEvent, StoreError, Tag, ValidationError,
};

use super::{
    Ctx, EVENTS, Failure, GLOBAL, Outcome, Scenario, ensure, ensure_eq, ev, expect_err,
    scenario_list, stream,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    let mut all = scenario_list![GLOBAL;
        "dcb.tags_round_trip" => round_trip,
    ];
    all.extend(scenario_list![EVENTS;
        "dcb.tag_bounds" => bounds,
        "dcb.retry_with_other_tags_conflicts" => retry_other_tags,
    ]);
    all
}

pub(crate) fn tag(s: &str) -> Result<Tag, Failure> {
    Tag::new(s).map_err(|e| Failure(format!("the suite built an invalid tag: {e}")))
}

pub(crate) fn tags(list: &[&str]) -> Result<Vec<Tag>, Failure> {
    list.iter().map(|s| tag(s)).collect()
}

async fn round_trip(c: Ctx) -> Outcome {
    let s = stream("dcb-round-trip")?;
    let longest = "t".repeat(MAX_TAG_BYTES);
    let many: Vec<String> = (0..MAX_TAGS_PER_EVENT)
        .map(|i| format!("n:{i:03}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let cases: Vec<Vec<Tag>> = vec![
        Vec::new(),
        tags(&["course:c-1"])?,
        // Out of order and repeated: stored as a sorted set.
        tags(&["student:s-1", "course:c-1", "student:s-1"])?,
        tags(&["é:ü", "emoji:🦀", "spaces and\ttabs", "quote:'\"", "%_*?"])?,
        vec![tag(&longest)?],
        tags(&many)?,
    ];
    let events: Vec<NewEvent> = cases
        .iter()
        .enumerate()
        .map(|(i, t)| Ok(ev("Tagged", format!("e{i}"))?.with_tags(t.clone())))
        .collect::<Result<_, Failure>>()?;
    let mut expected: Vec<Vec<Tag>> = cases.clone();
    for t in &mut expected {
        t.sort();
        t.dedup();
    }
    for (e, want) in events.iter().zip(&expected) {
        ensure_eq!(e.tags(), &want[..], "tags of the event before appending");
    }
    c.append(&s, ExpectedVersion::NoStream, events).await?;
    let loaded: Vec<Vec<Tag>> = c.load_all(&s).await?.into_iter().map(|e| e.tags).collect();
    ensure_eq!(loaded, expected, "tags after load");
    let read: Vec<Vec<Tag>> = c
        .read_everything()
        .await?
        .into_iter()
        .map(|e| e.tags)
        .collect();
    ensure_eq!(read, expected, "tags after a global read");
    Ok(())
}

async fn bounds(c: Ctx) -> Outcome {
    let s = stream("dcb-bounds")?;
    let too_many: Vec<Tag> = (0..=MAX_TAGS_PER_EVENT)
        .map(|i| tag(&format!("n:{i}")))
        .collect::<Result<_, _>>()?;
    let events = vec![
        ev("Tagged", "ok")?,
        ev("Tagged", "too many")?.with_tags(too_many),
    ];
    let e = expect_err!(
        c.append(&s, ExpectedVersion::Any, events).await,
        StoreError::Validation(ValidationError::TooManyTags { .. }),
        "an event with too many tags"
    );
    if let StoreError::Validation(ValidationError::TooManyTags { index, count }) = e {
        ensure_eq!(index, 1, "index of the event in the error");
        ensure_eq!(count, MAX_TAGS_PER_EVENT + 1, "tag count in the error");
    }
    ensure_eq!(
        c.load_all(&s).await?.len(),
        0,
        "events written by the refused append"
    );
    for bad in [
        String::new(),
        "a\0b".to_owned(),
        "x".repeat(MAX_TAG_BYTES + 1),
    ] {
        ensure!(
            matches!(Tag::new(&bad), Err(ValidationError::InvalidTag { .. })),
            "tag {bad:?} accepted"
        );
    }
    Ok(())
}

async fn retry_other_tags(c: Ctx) -> Outcome {
    let s = stream("dcb-retry")?;
    let keyed = |t: Vec<Tag>| -> Result<Vec<NewEvent>, Failure> {
        Ok(vec![ev("Enrolled", "s-1 in c-1")?.with_tags(t)])
    };
    let opts = || AppendOptions::new().with_idempotency_key("enrol-1");
    let first = c
        .events()
        .append(
            &s,
            ExpectedVersion::Any,
            keyed(tags(&["course:c-1", "student:s-1"])?)?,
            opts(),
        )
        .await?;
    // The same tags in another order are the same set: a retry.
    let again = c
        .events()
        .append(
            &s,
            ExpectedVersion::Any,
            keyed(tags(&["student:s-1", "course:c-1"])?)?,
            opts(),
        )
        .await?;
    ensure!(
        again.deduplicated,
        "retry with the same tags not deduplicated"
    );
    ensure_eq!(
        again.records,
        first.records,
        "records returned by the retry"
    );
    for other in [
        tags(&["course:c-1"])?,
        tags(&["course:c-1", "student:s-2"])?,
        Vec::new(),
    ] {
        expect_err!(
            c.events()
                .append(&s, ExpectedVersion::Any, keyed(other.clone())?, opts())
                .await,
            StoreError::IdempotencyConflict { .. },
            "a retry with tags {other:?}"
        );
    }
    ensure_eq!(c.load_all(&s).await?.len(), 1, "events in the stream");
    Ok(())
}
