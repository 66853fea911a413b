//! Tags and the Dynamic Consistency Boundary: tags round-trip exactly and
//! are bounded, and take part in idempotent retries; query reads select by
//! type and tag with the global read contract; append conditions pass and
//! fail exactly when they should, also under concurrent deciders.

use std::collections::BTreeMap;
use std::sync::Arc;

use eskit_core::limits::{MAX_QUERY_ITEMS, MAX_TAG_BYTES, MAX_TAGS_PER_EVENT};
use eskit_core::{
    dcb::{AppendCondition, EventQuery, EventQueryReader, QueryItem, QueryOptions, QueryPager},
    error::{StoreError, ValidationError, error_chain},
    event::{
        AppendResult, EventType, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName, Tag,
    },
    store::{AppendOptions, DynEventQueryReader, EventStore, StreamLifecycle},
};

use super::{
    Capability, Context, Ctx, EVENTS, Failure, GLOBAL, Outcome, QUERIES, Scenario, ensure,
    ensure_eq, ev, expect_err, scenario_list, stream, ty,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    let mut all = scenario_list![GLOBAL;
        "dcb.tags_round_trip" => round_trip,
    ];
    all.extend(scenario_list![EVENTS;
        "dcb.tag_bounds" => bounds,
        "dcb.retry_with_other_tags_conflicts" => retry_other_tags,
    ]);
    all.extend(scenario_list![QUERIES;
        "dcb.query_semantics" => query_semantics,
        "dcb.query_next_moves_past_non_matching" => query_next,
        "dcb.query_pages_by_next" => query_paging,
        "dcb.query_bounds" => query_bounds,
        "dcb.condition_passes_and_fails_exactly" => condition_cases,
        "dcb.condition_with_expected_version_and_retry" => condition_with_others,
        "dcb.racing_deciders_one_winner_per_round" => racing_deciders,
        "dcb.disjoint_deciders_never_conflict" => disjoint_deciders,
        "dcb.capacity_never_oversubscribed" => capacity,
    ]);
    all.extend(scenario_list![QUERIES_LIFECYCLE;
        "dcb.query_skips_deleted_streams" => query_deleted,
    ]);
    all
}

const QUERIES_LIFECYCLE: &[Capability] = &[
    Capability::Events,
    Capability::Queries,
    Capability::Lifecycle,
];

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
    let loaded: Vec<Vec<Tag>> = c
        .load_all(&s)
        .await?
        .into_iter()
        .map(|e| e.header.tags.to_vec())
        .collect();
    ensure_eq!(loaded, expected, "tags after load");
    let read: Vec<Vec<Tag>> = c
        .read_everything()
        .await?
        .into_iter()
        .map(|e| e.header.tags.to_vec())
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

fn item(types: &[&str], tag_list: &[&str]) -> Result<QueryItem, Failure> {
    let types: Vec<EventType> = types.iter().map(|t| ty(t)).collect::<Result<_, _>>()?;
    Ok(QueryItem::new()
        .with_event_types(types)
        .with_tags(tags(tag_list)?))
}

fn tagged(event_type: &str, payload: &str, tag_list: &[&str]) -> Result<NewEvent, Failure> {
    Ok(ev(event_type, payload)?.with_tags(tags(tag_list)?))
}

async fn query_all(
    q: &Arc<dyn DynEventQueryReader>,
    query: EventQuery,
) -> Result<(Vec<RawEvent>, GlobalCursor), Failure> {
    QueryPager::new(q, QueryOptions::from_start(query, 1000))
        .collect_with_cursor()
        .await
        .ctx("reading a query")
}

/// Appends one event per entry (type, tags), each to a stream named after
/// its index modulo 3, and returns their positions.
/// Appends one event per entry and returns their cursors (as the backend
/// recorded them: a backend ordered by transaction first has non-zero
/// transaction keys).
async fn seed(
    c: &Ctx,
    prefix: &str,
    events: &[(&str, &[&str])],
) -> Result<Vec<GlobalCursor>, Failure> {
    let mut cursors = Vec::new();
    for (i, (t, tag_list)) in events.iter().enumerate() {
        let s = stream(&format!("{prefix}-{}", i % 3))?;
        let r = c
            .append(
                &s,
                ExpectedVersion::Any,
                vec![tagged(t, &format!("{prefix}{i}"), tag_list)?],
            )
            .await?;
        cursors.push(r.last_cursor());
    }
    Ok(cursors)
}

async fn query_semantics(c: Ctx) -> Outcome {
    let q = c.queries()?.clone();
    let p = seed(
        &c,
        "dcb-sem",
        &[
            ("A", &["x"]),
            ("B", &["x", "y"]),
            ("C", &["y"]),
            ("A", &[]),
            ("B", &["y", "z"]),
            ("C", &["x", "y", "z"]),
        ],
    )
    .await?;
    // Expected matches as indices into the seeded events.
    let cases: Vec<(&str, EventQuery, Vec<usize>)> = vec![
        ("one tag", item(&[], &["x"])?.into(), vec![0, 1, 5]),
        (
            "tags are AND-ed",
            item(&[], &["x", "y"])?.into(),
            vec![1, 5],
        ),
        ("one type, any tags", item(&["A"], &[])?.into(), vec![0, 3]),
        (
            "types are OR-ed",
            item(&["A", "B"], &["y"])?.into(),
            vec![1, 4],
        ),
        ("type and tag", item(&["C"], &["x"])?.into(), vec![5]),
        (
            "items are OR-ed",
            EventQuery::from(item(&["A"], &["x"])?).with_item(item(&[], &["z"])?),
            vec![0, 4, 5],
        ),
        (
            "overlapping items return an event once",
            EventQuery::from(item(&[], &["x"])?).with_item(item(&[], &["y"])?),
            vec![0, 1, 2, 4, 5],
        ),
        ("all", EventQuery::all(), vec![0, 1, 2, 3, 4, 5]),
        ("no items", EventQuery::new(), vec![]),
        ("unknown tag", item(&[], &["w"])?.into(), vec![]),
        ("unknown type", item(&["D"], &[])?.into(), vec![]),
        (
            "a tag prefix is another tag",
            EventQuery::from(QueryItem::new().with_tags([tag("x ")?])),
            vec![],
        ),
    ];
    for (what, query, want) in cases {
        let (events, _) = query_all(&q, query.clone()).await?;
        let got: Vec<u64> = events.iter().map(|e| e.position.get()).collect();
        let want: Vec<u64> = want.iter().map(|i| p[*i].position().get()).collect();
        ensure_eq!(got, want, "positions for {what} ({query:?})");
        for e in &events {
            ensure!(
                query.matches_event(e),
                "{what}: returned event at {} does not match",
                e.position
            );
        }
    }
    Ok(())
}

async fn query_next(c: Ctx) -> Outcome {
    let q = c.queries()?.clone();
    let p = seed(
        &c,
        "dcb-next",
        &[("A", &["x"]), ("B", &["y"]), ("A", &["x"])],
    )
    .await?;
    let query: EventQuery = item(&[], &["x"])?.into();
    let page = q
        .query(QueryOptions::from_start(query.clone(), 10))
        .await
        .ctx("query")?;
    ensure_eq!(page.events.len(), 2, "matching events");
    ensure_eq!(page.next, p[2], "next");
    ensure!(page.is_caught_up(), "a short page is not caught up");
    // Events that do not match move `next` on, with none returned.
    let more = seed(
        &c,
        "dcb-next-more",
        &[("B", &["y"]), ("A", &[]), ("C", &["z"])],
    )
    .await?;
    let page = q
        .query(QueryOptions::new(query.clone(), page.next, 10))
        .await
        .ctx("query after non-matching appends")?;
    ensure!(page.events.is_empty(), "non-matching events returned");
    ensure_eq!(page.next, more[2], "next past the non-matching events");
    ensure_eq!(page.head, page.next, "head");
    // A full page stops at its last event.
    let page = q
        .query(QueryOptions::from_start(query, 1))
        .await
        .ctx("query with limit 1")?;
    ensure_eq!(page.next, p[0], "next of a full page");
    Ok(())
}

async fn query_paging(c: Ctx) -> Outcome {
    let q = c.queries()?.clone();
    let mut want = Vec::new();
    let s = stream("dcb-paging")?;
    for i in 0..30 {
        let e = if i % 3 == 2 {
            tagged("Other", &format!("o{i}"), &["y"])?
        } else {
            tagged("Tick", &format!("t{i}"), &["x"])?
        };
        let matches = i % 3 != 2;
        let r = c.append(&s, ExpectedVersion::Any, vec![e]).await?;
        if matches {
            want.push(r.last_position().get());
        }
    }
    let query: EventQuery = item(&[], &["x"])?.into();
    let mut after = GlobalCursor::START;
    let mut got = Vec::new();
    for round in 0..100 {
        let page = q
            .query(QueryOptions::new(query.clone(), after, 4))
            .await
            .ctx("query page")?;
        ensure!(page.next >= after, "page {round} moved next back");
        for e in &page.events {
            ensure!(
                e.cursor() > after,
                "page {round} returned an event at or before its cursor"
            );
            ensure!(
                e.cursor() <= page.next,
                "page {round} returned an event after its next"
            );
        }
        got.extend(page.events.iter().map(|e| e.position.get()));
        if page.events.len() == 4 {
            ensure_eq!(
                Some(page.next),
                page.events.last().map(RawEvent::cursor),
                "next of full page {round}"
            );
        }
        let done = page.events.len() < 4 && page.is_caught_up();
        after = page.next;
        if done {
            break;
        }
    }
    ensure_eq!(got, want, "positions read page by page");
    let (all, end) = query_all(&q, query.clone()).await?;
    ensure_eq!(
        all.iter().map(|e| e.position.get()).collect::<Vec<_>>(),
        want,
        "positions read by the pager"
    );
    ensure_eq!(end, after, "the pager's final cursor");
    Ok(())
}

async fn query_bounds(c: Ctx) -> Outcome {
    let q = c.queries()?.clone();
    for limit in [0, eskit_core::limits::MAX_READ_LIMIT + 1] {
        expect_err!(
            q.query(QueryOptions::from_start(EventQuery::all(), limit))
                .await,
            StoreError::Validation(ValidationError::InvalidLimit { .. }),
            "limit {limit}"
        );
    }
    let too_many: EventQuery = (0..=MAX_QUERY_ITEMS).map(|_| QueryItem::new()).collect();
    expect_err!(
        q.query(QueryOptions::from_start(too_many.clone(), 10))
            .await,
        StoreError::Validation(ValidationError::TooManyQueryItems { .. }),
        "too many items"
    );
    let many_tags = QueryItem::new().with_tags(
        (0..=MAX_TAGS_PER_EVENT)
            .map(|i| tag(&format!("t{i}")))
            .collect::<Result<Vec<_>, _>>()?,
    );
    expect_err!(
        q.query(QueryOptions::from_start(many_tags.into(), 10))
            .await,
        StoreError::Validation(ValidationError::TooManyQueryTags { .. }),
        "too many tags in an item"
    );
    let s = stream("dcb-query-bounds")?;
    let options =
        AppendOptions::new().with_condition(AppendCondition::new(too_many, GlobalCursor::START));
    expect_err!(
        c.events()
            .append(&s, ExpectedVersion::Any, vec![ev("E", "x")?], options)
            .await,
        StoreError::Validation(ValidationError::TooManyQueryItems { .. }),
        "an append condition with too many items"
    );
    // The largest allowed query works.
    let widest: EventQuery = (0..MAX_QUERY_ITEMS)
        .map(|i| {
            QueryItem::new().with_tags(
                (0..MAX_TAGS_PER_EVENT)
                    .map(|j| tag(&format!("i{i}-t{j}")))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_default(),
            )
        })
        .collect();
    let (events, _) = query_all(&q, widest).await?;
    ensure!(events.is_empty(), "the widest query matched events");
    Ok(())
}

async fn query_deleted(c: Ctx) -> Outcome {
    let q = c.queries()?.clone();
    let lifecycle = c.lifecycle()?.clone();
    let a = stream("dcb-del-a")?;
    let b = stream("dcb-del-b")?;
    c.append(&a, ExpectedVersion::Any, vec![tagged("E", "a", &["x"])?])
        .await?;
    let kept = c
        .append(&b, ExpectedVersion::Any, vec![tagged("E", "b", &["x"])?])
        .await?;
    lifecycle.delete(&a).await.ctx("deleting a stream")?;
    let (events, _) = query_all(&q, item(&[], &["x"])?.into()).await?;
    ensure_eq!(
        events.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![kept.last_position()],
        "positions after the delete"
    );
    Ok(())
}

async fn conditional(
    c: &Ctx,
    s: &StreamName,
    event: NewEvent,
    query: EventQuery,
    after: GlobalCursor,
) -> Result<AppendResult, StoreError> {
    c.events()
        .append(
            s,
            ExpectedVersion::Any,
            vec![event],
            AppendOptions::new().with_condition(AppendCondition::new(query, after)),
        )
        .await
}

async fn condition_cases(c: Ctx) -> Outcome {
    let p = seed(
        &c,
        "dcb-cond",
        &[("A", &["x"]), ("B", &["y"]), ("A", &["x", "y"])],
    )
    .await?;
    let at = |i: usize| p[i];
    let probe_stream = stream("dcb-cond-probe")?;
    // (what, query, after, first matching event after it: None passes).
    let fails: Vec<(&str, EventQuery, GlobalCursor, usize)> = vec![
        (
            "tag, from the start",
            item(&[], &["x"])?.into(),
            GlobalCursor::START,
            0,
        ),
        (
            "tag, after the first match",
            item(&[], &["x"])?.into(),
            at(0),
            2,
        ),
        ("type", item(&["B"], &[])?.into(), at(0), 1),
        ("type and tag", item(&["A"], &["y"])?.into(), at(1), 2),
        ("all", EventQuery::all(), at(1), 2),
        (
            "second item",
            EventQuery::from(item(&[], &["z"])?).with_item(item(&["B"], &[])?),
            GlobalCursor::START,
            1,
        ),
    ];
    for (what, query, after, first) in fails {
        let before = c.events().stream_version(&probe_stream).await?;
        let e = expect_err!(
            conditional(&c, &probe_stream, ev("Probe", "p")?, query, after).await,
            StoreError::ConditionFailed { .. },
            "condition on {what} after {after}"
        );
        if let StoreError::ConditionFailed { cursor } = &e {
            ensure_eq!(*cursor, at(first), "the conflicting cursor for {what}");
        }
        ensure!(e.is_conflict(), "a failed condition is not a conflict");
        ensure!(e.is_condition_failed(), "is_condition_failed is false");
        ensure_eq!(
            c.events().stream_version(&probe_stream).await?,
            before,
            "version after the failed append ({what})"
        );
    }
    // Probes carry no tags and type Probe, so they match none of these.
    let passes: Vec<(&str, EventQuery, GlobalCursor)> = vec![
        (
            "matching event at the cursor",
            item(&[], &["x"])?.into(),
            at(2),
        ),
        ("other tags", item(&[], &["z"])?.into(), GlobalCursor::START),
        (
            "other types",
            item(&["C"], &[])?.into(),
            GlobalCursor::START,
        ),
        (
            "type without the tag",
            item(&["B"], &["x"])?.into(),
            GlobalCursor::START,
        ),
        (
            "tag subset not carried",
            item(&[], &["x", "z"])?.into(),
            GlobalCursor::START,
        ),
        ("no items", EventQuery::new(), GlobalCursor::START),
    ];
    let mut head = at(2);
    for (what, query, after) in passes {
        let r = conditional(&c, &probe_stream, ev("Probe", what)?, query, after)
            .await
            .map_err(|e| Failure(format!("condition on {what}: {}", error_chain(&e))))?;
        head = r.last_cursor();
    }
    // Every event matches `all`; at the head none follows.
    conditional(
        &c,
        &probe_stream,
        ev("Probe", "all")?,
        EventQuery::all(),
        head,
    )
    .await
    .map_err(|e| Failure(format!("condition on all at the head: {}", error_chain(&e))))?;
    Ok(())
}

async fn condition_with_others(c: Ctx) -> Outcome {
    let s = stream("dcb-cond-others")?;
    let query: EventQuery = item(&[], &["x"])?.into();
    // The expected version and the condition must both hold.
    let e = c
        .events()
        .append(
            &s,
            ExpectedVersion::StreamExists,
            vec![tagged("A", "1", &["x"])?],
            AppendOptions::new()
                .with_condition(AppendCondition::new(query.clone(), GlobalCursor::START)),
        )
        .await;
    expect_err!(
        e,
        StoreError::WrongExpectedVersion { .. },
        "a passing condition with a wrong expected version"
    );
    // The append's own events do not count against its condition.
    let keyed = || {
        AppendOptions::new()
            .with_idempotency_key("dcb-1")
            .with_condition(AppendCondition::new(query.clone(), GlobalCursor::START))
    };
    let first = c
        .events()
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![tagged("A", "1", &["x"])?],
            keyed(),
        )
        .await?;
    // A retry with the same key returns the original records, although an
    // event matching the condition (its own) now follows the cursor.
    let again = c
        .events()
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![tagged("A", "1", &["x"])?],
            keyed(),
        )
        .await
        .map_err(|e| Failure(format!("the idempotent retry: {}", error_chain(&e))))?;
    ensure!(again.deduplicated, "the retry was not deduplicated");
    ensure_eq!(again.records, first.records, "records of the retry");
    // Without the key the same decision now fails.
    let e = conditional(
        &c,
        &s,
        tagged("A", "2", &["x"])?,
        query,
        GlobalCursor::START,
    )
    .await;
    expect_err!(
        e,
        StoreError::ConditionFailed { .. },
        "the same decision without the key"
    );
    Ok(())
}

/// Reads a query to its end and returns how many events matched and the
/// cursor to put in the condition.
async fn decide_read(
    q: &Arc<dyn DynEventQueryReader>,
    query: &EventQuery,
) -> Result<(Vec<RawEvent>, GlobalCursor), StoreError> {
    QueryPager::new(q, QueryOptions::from_start(query.clone(), 1000))
        .collect_with_cursor()
        .await
}

async fn racing_deciders(c: Ctx) -> Outcome {
    let q = c.queries()?.clone();
    let writers = c.stress().writers.max(2);
    let rounds = 10;
    for round in 0..rounds {
        let query: EventQuery = item(&[], &[&format!("round:{round}")])?.into();
        let gate = c.gate(writers);
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (c2, q, gate, query) = (c.clone(), q.clone(), gate.clone(), query.clone());
                c.spawn(async move {
                    let (_, cursor) = decide_read(&q, &query).await?;
                    // Everyone has read before anyone appends.
                    gate.wait().await;
                    let s = StreamName::new("conformance", format!("dcb-race-{round}-{w}"))
                        .map_err(StoreError::from)?;
                    let event = NewEvent::new(
                        EventType::new("Claimed").map_err(StoreError::from)?,
                        format!("{w}").into_bytes(),
                    )
                    .with_tags([Tag::new(format!("round:{round}"))?]);
                    conditional(&c2, &s, event, query, cursor).await.map(|_| ())
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            match t.await? {
                Ok(()) => won += 1,
                Err(StoreError::ConditionFailed { .. }) => {}
                Err(e) => return Err(Failure(format!("round {round}: {}", error_chain(&e)))),
            }
        }
        ensure_eq!(won, 1, "winners in round {round}");
        let (events, _) = query_all(&q, query).await?;
        ensure_eq!(events.len(), 1, "events tagged for round {round}");
    }
    Ok(())
}

async fn disjoint_deciders(c: Ctx) -> Outcome {
    let q = c.queries()?.clone();
    let writers = c.stress().writers.max(2);
    let decisions = 25;
    let gate = c.gate(writers);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (c2, q, gate) = (c.clone(), q.clone(), gate.clone());
            c.spawn(async move {
                gate.wait().await;
                let t = Tag::new(format!("writer:{w}"))?;
                let query = EventQuery::from(QueryItem::new().with_tags([t.clone()]));
                let s = StreamName::new("conformance", format!("dcb-disjoint-{w}"))
                    .map_err(StoreError::from)?;
                let mut failures = 0;
                for i in 0..decisions {
                    let (seen, cursor) = decide_read(&q, &query).await?;
                    if seen.len() != i {
                        return Err(StoreError::Corrupt {
                            detail: format!("writer {w} saw {} of its {i} events", seen.len()),
                        });
                    }
                    let event = NewEvent::new(
                        EventType::new("Counted").map_err(StoreError::from)?,
                        format!("{w}/{i}").into_bytes(),
                    )
                    .with_tags([t.clone()]);
                    match conditional(&c2, &s, event, query.clone(), cursor).await {
                        Ok(_) => {}
                        Err(StoreError::ConditionFailed { .. }) => {
                            failures += 1;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok::<_, StoreError>(failures)
            })
        })
        .collect();
    let mut failures = 0;
    for t in tasks {
        failures += t.await?.ctx("a disjoint decider")?;
    }
    ensure_eq!(
        failures,
        0,
        "condition failures between deciders on disjoint tags"
    );
    Ok(())
}

/// Course capacity and student limit, decided over both tags.
const COURSE_CAPACITY: usize = 5;
const COURSES_PER_STUDENT: usize = 2;
const COURSES: usize = 3;
const STUDENTS_PER_WRITER: usize = 3;
const MAX_ATTEMPTS: usize = 10_000;

async fn enrol(
    c: &Ctx,
    q: &Arc<dyn DynEventQueryReader>,
    student: &str,
    course: &str,
) -> Result<(bool, usize), StoreError> {
    let enrolled = EventType::new("Enrolled").map_err(StoreError::from)?;
    let course_tag = Tag::new(format!("course:{course}"))?;
    let student_tag = Tag::new(format!("student:{student}"))?;
    let query = EventQuery::new()
        .with_item(
            QueryItem::new()
                .with_event_types([enrolled.clone()])
                .with_tags([course_tag.clone()]),
        )
        .with_item(
            QueryItem::new()
                .with_event_types([enrolled.clone()])
                .with_tags([student_tag.clone()]),
        );
    let s = StreamName::new("conformance", format!("dcb-student-{student}"))
        .map_err(StoreError::from)?;
    for attempt in 1..=MAX_ATTEMPTS {
        let (seen, cursor) = decide_read(q, &query).await?;
        let in_course = seen.iter().filter(|e| e.tags.contains(&course_tag)).count();
        let of_student = seen
            .iter()
            .filter(|e| e.tags.contains(&student_tag))
            .count();
        if in_course >= COURSE_CAPACITY || of_student >= COURSES_PER_STUDENT {
            return Ok((false, attempt));
        }
        let event = NewEvent::new(
            enrolled.clone(),
            format!("{student}->{course}").into_bytes(),
        )
        .with_tags([course_tag.clone(), student_tag.clone()]);
        match conditional(c, &s, event, query.clone(), cursor).await {
            Ok(_) => return Ok((true, attempt)),
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Corrupt {
        detail: format!("no decision for {student} in {course} after {MAX_ATTEMPTS} attempts"),
    })
}

async fn capacity(c: Ctx) -> Outcome {
    let q = c.queries()?.clone();
    let writers = c.stress().writers.max(2);
    let gate = c.gate(writers);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (c2, q, gate) = (c.clone(), q.clone(), gate.clone());
            c.spawn(async move {
                gate.wait().await;
                for s in 0..STUDENTS_PER_WRITER {
                    // Writers go through the courses in different orders.
                    for k in 0..COURSES {
                        let course = format!("c{}", (k + w) % COURSES);
                        enrol(&c2, &q, &format!("s{w}-{s}"), &course).await?;
                    }
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await?.ctx("an enrolling writer")?;
    }
    let (events, _) = query_all(&q, item(&["Enrolled"], &[])?.into()).await?;
    let mut per_course: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_student: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        for t in &e.tags {
            if let Some(course) = t.as_str().strip_prefix("course:") {
                *per_course.entry(course.to_owned()).or_default() += 1;
            }
            if let Some(student) = t.as_str().strip_prefix("student:") {
                *per_student.entry(student.to_owned()).or_default() += 1;
            }
        }
    }
    // Demand (writers x students x 2) exceeds the seats, so every course fills.
    for k in 0..COURSES {
        ensure_eq!(
            per_course.get(&format!("c{k}")).copied().unwrap_or(0),
            COURSE_CAPACITY,
            "enrolments in course c{k}"
        );
    }
    for (student, n) in &per_student {
        ensure!(
            *n <= COURSES_PER_STUDENT,
            "student {student} takes {n} courses"
        );
    }
    Ok(())
}
