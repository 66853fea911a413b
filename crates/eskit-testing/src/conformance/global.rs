//! Global reads: cursor order, resume cursors, limits, filters, the head.

use eskit_core::limits::{MAX_FILTER_TYPES, MAX_READ_LIMIT};
use eskit_core::{
    error::{StoreError, ValidationError},
    event::{ExpectedVersion, GlobalCursor, Position, RawEvent, StreamName, StreamType},
    store::{
        EventStore, GlobalBatch, GlobalPager, GlobalReader, LoadOptions, ReadOptions,
        StreamLifecycle,
    },
};

use super::{
    Ctx, Failure, GLOBAL, LIFECYCLE_GLOBAL, Outcome, Scenario, ensure, ensure_eq, ev, expect_err,
    scenario_list, ty,
};
use crate::history::{positions, strictly_increasing};

pub(crate) fn scenarios() -> Vec<Scenario> {
    let mut all = scenario_list![GLOBAL;
        "global.empty_store" => empty,
        "global.read_in_append_order" => in_order,
        "global.after_cursor_exclusive" => from_inclusive,
        "global.limit" => limit,
        "global.paging_sees_every_event_once" => paging,
        "global.event_type_filter" => type_filter,
        "global.stream_type_filter" => stream_type_filter,
        "global.combined_filters_with_limit" => combined,
        "global.beyond_end_is_empty" => beyond_end,
        "global.head" => latest,
        "global.events_equal_loaded_events" => equals_load,
        "global.max_limit_accepted" => max_limit,
        "global.invalid_limit_rejected" => invalid_limit,
        "global.too_many_filter_types_rejected" => too_many_types,
        "global.next_covers_the_page" => next_covers_page,
        "global.filtered_read_advances_next" => filtered_advances,
        "global.pager_resumes_from_next" => pager_resumes,
    ];
    all.extend(scenario_list![LIFECYCLE_GLOBAL;
        "global.next_passes_deleted_ranges" => passes_deletes,
    ]);
    all
}

/// 12 events over 3 streams of 2 types, interleaved; returns them in append order.
async fn seed(c: &Ctx) -> Result<Vec<(StreamName, String)>, Failure> {
    let streams = [
        StreamName::new("order", "o-1")?,
        StreamName::new("order", "o-2")?,
        StreamName::new("invoice", "i-1")?,
    ];
    let mut sent = Vec::new();
    for round in 0..4 {
        for (i, s) in streams.iter().enumerate() {
            let t = if round % 2 == 0 { "Created" } else { "Updated" };
            let payload = format!("{round}-{i}");
            c.append(s, ExpectedVersion::Any, vec![ev(t, payload.clone())?])
                .await?;
            sent.push((s.clone(), payload));
        }
    }
    Ok(sent)
}

async fn page(c: &Ctx, o: ReadOptions) -> Result<GlobalBatch, StoreError> {
    c.global()
        .map_err(|f| StoreError::backend(f.0))?
        .read(o)
        .await
}

async fn read(c: &Ctx, o: ReadOptions) -> Result<Vec<RawEvent>, StoreError> {
    Ok(page(c, o).await?.events)
}

/// Every event after `o`'s cursor, through the one paging helper.
async fn read_to_end(c: &Ctx, o: ReadOptions) -> Result<Vec<RawEvent>, Failure> {
    Ok(GlobalPager::new(c.global()?, o).collect().await?)
}

fn payloads(events: &[RawEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

async fn empty(c: Ctx) -> Outcome {
    let p = page(&c, ReadOptions::from_start(100)).await?;
    ensure_eq!(p.events.len(), 0, "events in an empty store");
    ensure_eq!(p.next, GlobalCursor::START, "next of an empty store");
    ensure!(p.is_caught_up(), "an empty store's read is not caught up");
    ensure_eq!(
        c.global()?.head().await?,
        GlobalCursor::START,
        "head of an empty store"
    );
    Ok(())
}

async fn in_order(c: Ctx) -> Outcome {
    let sent = seed(&c).await?;
    let got = read(&c, ReadOptions::from_start(100)).await?;
    let want: Vec<String> = sent.iter().map(|(_, p)| p.clone()).collect();
    ensure_eq!(payloads(&got), want, "payloads in global order");
    let streams: Vec<&StreamName> = got.iter().map(|e| &e.stream).collect();
    let want_streams: Vec<&StreamName> = sent.iter().map(|(s, _)| s).collect();
    ensure_eq!(streams, want_streams, "streams in global order");
    ensure!(
        strictly_increasing(&got),
        "positions not increasing: {:?}",
        positions(&got)
    );
    Ok(())
}

async fn from_inclusive(c: Ctx) -> Outcome {
    seed(&c).await?;
    let all = read(&c, ReadOptions::from_start(100)).await?;
    let p = all[5].cursor();
    let got = read(&c, ReadOptions::new(p, 100)).await?;
    ensure_eq!(
        positions(&got),
        positions(&all[6..]),
        "positions read after {p} (exclusive)"
    );
    let before = read(&c, ReadOptions::new(all[4].cursor(), 100)).await?;
    ensure_eq!(
        positions(&before),
        positions(&all[5..]),
        "positions read after {}",
        all[4].cursor()
    );
    Ok(())
}

async fn limit(c: Ctx) -> Outcome {
    seed(&c).await?;
    let all = read(&c, ReadOptions::from_start(100)).await?;
    let got = read(&c, ReadOptions::from_start(5)).await?;
    ensure_eq!(positions(&got), positions(&all[..5]), "first 5 positions");
    let one = read(&c, ReadOptions::new(all[2].cursor(), 1)).await?;
    ensure_eq!(
        positions(&one),
        positions(&all[3..4]),
        "one event after the 3rd"
    );
    Ok(())
}

async fn paging(c: Ctx) -> Outcome {
    seed(&c).await?;
    let all = read(&c, ReadOptions::from_start(100)).await?;
    let paged = read_to_end(&c, ReadOptions::from_start(5)).await?;
    ensure_eq!(
        positions(&paged),
        positions(&all),
        "positions read in pages of 5"
    );
    Ok(())
}

async fn type_filter(c: Ctx) -> Outcome {
    seed(&c).await?;
    let got = read(
        &c,
        ReadOptions::from_start(100).with_event_types([ty("Updated")?]),
    )
    .await?;
    ensure_eq!(got.len(), 6, "Updated events");
    ensure!(
        got.iter().all(|e| e.event_type == "Updated"),
        "filter returned other types"
    );
    ensure!(strictly_increasing(&got), "positions not increasing");
    Ok(())
}

async fn stream_type_filter(c: Ctx) -> Outcome {
    seed(&c).await?;
    let got = read(
        &c,
        ReadOptions::from_start(100).with_stream_type(StreamType::new("invoice")?),
    )
    .await?;
    ensure_eq!(
        payloads(&got),
        vec!["0-2", "1-2", "2-2", "3-2"],
        "events of invoice streams"
    );
    let orders = read(
        &c,
        ReadOptions::from_start(100).with_stream_type(StreamType::new("order")?),
    )
    .await?;
    ensure_eq!(orders.len(), 8, "events of order streams");
    let none = read(
        &c,
        ReadOptions::from_start(100).with_stream_type(StreamType::new("ord")?),
    )
    .await?;
    ensure_eq!(
        none.len(),
        0,
        "events of stream type `ord` (a prefix of `order`)"
    );
    Ok(())
}

async fn combined(c: Ctx) -> Outcome {
    seed(&c).await?;
    let all = read(&c, ReadOptions::from_start(100)).await?;
    let o = ReadOptions::new(all[0].cursor(), 2)
        .with_stream_type(StreamType::new("order")?)
        .with_event_types([ty("Created")?]);
    let got = read(&c, o).await?;
    // Created order events are 0-0, 0-1, 2-0, 2-1; from the 2nd position on: 0-1, 2-0.
    ensure_eq!(payloads(&got), vec!["0-1", "2-0"], "filtered page");
    Ok(())
}

async fn beyond_end(c: Ctx) -> Outcome {
    seed(&c).await?;
    let head = c.global()?.head().await?;
    let p = head.position().get();
    for after in [
        head,
        GlobalCursor::new(head.tx(), Position::new(p + 1000)),
        GlobalCursor::new(head.tx(), Position::new(u64::MAX)),
        GlobalCursor::new(u64::MAX, Position::new(u64::MAX)),
    ] {
        let got = page(&c, ReadOptions::new(after, 10)).await?;
        ensure_eq!(got.events.len(), 0, "events after {after}");
        ensure!(
            got.next >= after,
            "next {} went back from {after}",
            got.next
        );
    }
    Ok(())
}

async fn latest(c: Ctx) -> Outcome {
    let s = StreamName::new("order", "latest")?;
    let mut last = Position::ZERO;
    for n in [1usize, 3, 2] {
        let events = (0..n)
            .map(|i| ev("E", format!("{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let r = c.append(&s, ExpectedVersion::Any, events).await?;
        ensure_eq!(
            c.global()?.head().await?,
            r.last_cursor(),
            "head after an append of {n}"
        );
        ensure!(r.last_position() > last, "last position did not advance");
        last = r.last_position();
    }
    let all = read(&c, ReadOptions::from_start(100)).await?;
    ensure_eq!(
        all.last().map(|e| e.position),
        Some(last),
        "position of the last event read"
    );
    Ok(())
}

async fn equals_load(c: Ctx) -> Outcome {
    let sent = seed(&c).await?;
    let all = read(&c, ReadOptions::from_start(100)).await?;
    let s = &sent[0].0;
    let loaded = c.events().load(s, LoadOptions::new()).await?;
    let from_global: Vec<RawEvent> = all.into_iter().filter(|e| &e.stream == s).collect();
    ensure_eq!(
        from_global,
        loaded,
        "events of {s} from a global read compared with load"
    );
    Ok(())
}

async fn max_limit(c: Ctx) -> Outcome {
    seed(&c).await?;
    ensure_eq!(
        read(&c, ReadOptions::from_start(MAX_READ_LIMIT))
            .await?
            .len(),
        12,
        "events with the maximal limit"
    );
    Ok(())
}

async fn invalid_limit(c: Ctx) -> Outcome {
    seed(&c).await?;
    for limit in [0, MAX_READ_LIMIT + 1] {
        expect_err!(
            read(&c, ReadOptions::from_start(limit)).await,
            StoreError::Validation(ValidationError::InvalidLimit { .. }),
            "a global read with limit {limit}"
        );
    }
    Ok(())
}

async fn too_many_types(c: Ctx) -> Outcome {
    let types = (0..=MAX_FILTER_TYPES)
        .map(|i| ty(&format!("T{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    expect_err!(
        read(&c, ReadOptions::from_start(10).with_event_types(types)).await,
        StoreError::Validation(ValidationError::TooManyFilterTypes { .. }),
        "a global read filtering {} types",
        MAX_FILTER_TYPES + 1
    );
    Ok(())
}

async fn next_covers_page(c: Ctx) -> Outcome {
    seed(&c).await?;
    let mut after = GlobalCursor::START;
    for _ in 0..10 {
        let p = page(&c, ReadOptions::new(after, 5)).await?;
        ensure!(
            p.next >= after,
            "next {} is before the read's cursor {after}",
            p.next
        );
        let mut prev = after;
        for e in &p.events {
            ensure!(e.cursor() > prev, "cursor {} not after {prev}", e.cursor());
            prev = e.cursor();
        }
        ensure!(
            p.next >= prev,
            "next {} is before the page's last event {prev}",
            p.next
        );
        ensure!(
            p.head >= prev,
            "head {} is before an event read {prev}",
            p.head
        );
        if p.events.is_empty() {
            ensure!(
                p.is_caught_up(),
                "an empty page of a quiet store is not caught up"
            );
            return Ok(());
        }
        after = p.next;
    }
    Err(Failure(
        "paging by `next` did not reach the end in 10 pages".into(),
    ))
}

async fn filtered_advances(c: Ctx) -> Outcome {
    seed(&c).await?;
    let head = c.global()?.head().await?;
    let p = page(
        &c,
        ReadOptions::from_start(100).with_event_types([ty("Missing")?]),
    )
    .await?;
    ensure_eq!(p.events.len(), 0, "events of a type never written");
    ensure_eq!(p.next, head, "next of a filtered read that matched nothing");
    let s = page(
        &c,
        ReadOptions::from_start(100).with_stream_type(StreamType::new("nothing")?),
    )
    .await?;
    ensure_eq!(
        s.next,
        head,
        "next of a stream-type read that matched nothing"
    );
    // The matching events come before the end: next moves past the rest.
    let created = page(
        &c,
        ReadOptions::from_start(100).with_event_types([ty("Created")?]),
    )
    .await?;
    ensure_eq!(created.events.len(), 6, "Created events");
    ensure_eq!(created.next, head, "next past the trailing Updated events");
    Ok(())
}

async fn passes_deletes(c: Ctx) -> Outcome {
    let lifecycle = c.lifecycle()?;
    let (a, b, z) = (
        StreamName::new("del", "a")?,
        StreamName::new("del", "b")?,
        StreamName::new("del", "z")?,
    );
    c.append(&a, ExpectedVersion::Any, vec![ev("E", "a1")?])
        .await?;
    c.append(&b, ExpectedVersion::Any, vec![ev("E", "b1")?])
        .await?;
    c.append(&a, ExpectedVersion::Any, vec![ev("E", "a2")?])
        .await?;
    lifecycle.delete(&a).await?;
    c.append(&b, ExpectedVersion::Any, vec![ev("E", "b2")?])
        .await?;
    // A deleted range at the end of the log.
    let last = c
        .append(
            &z,
            ExpectedVersion::Any,
            vec![ev("E", "z1")?, ev("E", "z2")?],
        )
        .await?;
    lifecycle.delete(&z).await?;
    let p = page(&c, ReadOptions::from_start(100)).await?;
    ensure_eq!(
        payloads(&p.events),
        vec!["b1", "b2"],
        "events left after deletes"
    );
    ensure!(
        p.next >= last.last_cursor(),
        "next {} stops before the deleted tail {}",
        p.next,
        last.last_cursor()
    );
    let again = page(&c, ReadOptions::new(p.next, 100)).await?;
    ensure_eq!(again.events.len(), 0, "events after next");
    ensure_eq!(again.next, p.next, "next of a read at the end");
    let later = c
        .append(&b, ExpectedVersion::Any, vec![ev("E", "b3")?])
        .await?;
    let fresh = page(&c, ReadOptions::new(p.next, 100)).await?;
    ensure_eq!(
        payloads(&fresh.events),
        vec!["b3"],
        "the next commit after next"
    );
    ensure_eq!(fresh.next, later.last_cursor(), "next after the new commit");
    Ok(())
}

async fn pager_resumes(c: Ctx) -> Outcome {
    let sent = seed(&c).await?;
    let global = c.global()?;
    let mut pager = GlobalPager::new(global, ReadOptions::from_start(5));
    let mut seen = Vec::new();
    while let Some(p) = pager.next_page().await? {
        seen.extend(p.events);
    }
    ensure_eq!(seen.len(), sent.len(), "events seen by the pager");
    let cursor = pager.cursor();
    ensure_eq!(cursor, global.head().await?, "pager cursor at the end");
    c.append(&sent[0].0, ExpectedVersion::Any, vec![ev("E", "more")?])
        .await?;
    let rest = GlobalPager::new(global, ReadOptions::new(cursor, 5))
        .collect()
        .await?;
    ensure_eq!(
        payloads(&rest),
        vec!["more"],
        "events after the saved cursor"
    );
    Ok(())
}
