//! Global reads: order, from-position, limits, filters, latest position.

use eskit_core::limits::{MAX_FILTER_TYPES, MAX_READ_LIMIT};
use eskit_core::{
    EventStore, ExpectedVersion, GlobalReader, LoadOptions, Position, RawEvent, ReadOptions,
    StoreError, Stream, StreamType, ValidationError,
};

use super::{
    Ctx, Failure, GLOBAL, Outcome, Scenario, ensure, ensure_eq, ev, expect_err, scenario_list, ty,
};
use crate::history::{positions, strictly_increasing};

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![GLOBAL;
        "global.empty_store" => empty,
        "global.read_all_in_append_order" => in_order,
        "global.from_position_inclusive" => from_inclusive,
        "global.limit" => limit,
        "global.paging_sees_every_event_once" => paging,
        "global.event_type_filter" => type_filter,
        "global.stream_type_filter" => stream_type_filter,
        "global.combined_filters_with_limit" => combined,
        "global.beyond_end_is_empty" => beyond_end,
        "global.latest_position" => latest,
        "global.events_equal_loaded_events" => equals_load,
        "global.max_limit_accepted" => max_limit,
        "global.invalid_limit_rejected" => invalid_limit,
        "global.too_many_filter_types_rejected" => too_many_types,
    ]
}

/// 12 events over 3 streams of 2 types, interleaved; returns them in append order.
async fn seed(c: &Ctx) -> Result<Vec<(Stream, String)>, Failure> {
    let streams = [
        Stream::new("order", "o-1")?,
        Stream::new("order", "o-2")?,
        Stream::new("invoice", "i-1")?,
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

async fn read(c: &Ctx, o: ReadOptions) -> Result<Vec<RawEvent>, StoreError> {
    c.global()
        .map_err(|f| StoreError::backend(f.0))?
        .read_all(o)
        .await
}

fn payloads(events: &[RawEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

async fn empty(c: Ctx) -> Outcome {
    ensure_eq!(
        read(&c, ReadOptions::new(Position::ZERO, 100)).await?.len(),
        0,
        "events in an empty store"
    );
    ensure_eq!(
        c.global()?.latest_position().await?,
        Position::ZERO,
        "latest position of an empty store"
    );
    Ok(())
}

async fn in_order(c: Ctx) -> Outcome {
    let sent = seed(&c).await?;
    let got = read(&c, ReadOptions::new(Position::ZERO, 100)).await?;
    let want: Vec<String> = sent.iter().map(|(_, p)| p.clone()).collect();
    ensure_eq!(payloads(&got), want, "payloads in global order");
    let streams: Vec<&Stream> = got.iter().map(|e| &e.stream).collect();
    let want_streams: Vec<&Stream> = sent.iter().map(|(s, _)| s).collect();
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
    let all = read(&c, ReadOptions::new(Position::ZERO, 100)).await?;
    let p = all[5].position;
    let got = read(&c, ReadOptions::new(p, 100)).await?;
    ensure_eq!(
        positions(&got),
        positions(&all[5..]),
        "positions read from {p} (inclusive)"
    );
    let next = read(&c, ReadOptions::new(Position::new(p.get() + 1), 100)).await?;
    ensure_eq!(
        positions(&next),
        positions(&all[6..]),
        "positions read from {}",
        p.get() + 1
    );
    Ok(())
}

async fn limit(c: Ctx) -> Outcome {
    seed(&c).await?;
    let all = read(&c, ReadOptions::new(Position::ZERO, 100)).await?;
    let got = read(&c, ReadOptions::new(Position::ZERO, 5)).await?;
    ensure_eq!(positions(&got), positions(&all[..5]), "first 5 positions");
    let one = read(&c, ReadOptions::new(all[3].position, 1)).await?;
    ensure_eq!(
        positions(&one),
        positions(&all[3..4]),
        "one event from the 4th position"
    );
    Ok(())
}

async fn paging(c: Ctx) -> Outcome {
    seed(&c).await?;
    let all = read(&c, ReadOptions::new(Position::ZERO, 100)).await?;
    let mut paged = Vec::new();
    let mut from = Position::ZERO;
    for _ in 0..100 {
        let page = read(&c, ReadOptions::new(from, 5)).await?;
        let Some(last) = page.last() else { break };
        from = Position::new(last.position.get() + 1);
        paged.extend(page);
    }
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
        ReadOptions::new(Position::ZERO, 100).event_types([ty("Updated")?]),
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
        ReadOptions::new(Position::ZERO, 100).stream_type(StreamType::new("invoice")?),
    )
    .await?;
    ensure_eq!(
        payloads(&got),
        vec!["0-2", "1-2", "2-2", "3-2"],
        "events of invoice streams"
    );
    let orders = read(
        &c,
        ReadOptions::new(Position::ZERO, 100).stream_type(StreamType::new("order")?),
    )
    .await?;
    ensure_eq!(orders.len(), 8, "events of order streams");
    let none = read(
        &c,
        ReadOptions::new(Position::ZERO, 100).stream_type(StreamType::new("ord")?),
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
    let all = read(&c, ReadOptions::new(Position::ZERO, 100)).await?;
    let o = ReadOptions::new(all[1].position, 2)
        .stream_type(StreamType::new("order")?)
        .event_types([ty("Created")?]);
    let got = read(&c, o).await?;
    // Created order events are 0-0, 0-1, 2-0, 2-1; from the 2nd position on: 0-1, 2-0.
    ensure_eq!(payloads(&got), vec!["0-1", "2-0"], "filtered page");
    Ok(())
}

async fn beyond_end(c: Ctx) -> Outcome {
    seed(&c).await?;
    let latest = c.global()?.latest_position().await?;
    for from in [latest.get() + 1, latest.get() + 1000, u64::MAX] {
        ensure_eq!(
            read(&c, ReadOptions::new(Position::new(from), 10))
                .await?
                .len(),
            0,
            "events from position {from}"
        );
    }
    Ok(())
}

async fn latest(c: Ctx) -> Outcome {
    let s = Stream::new("order", "latest")?;
    let mut last = Position::ZERO;
    for n in [1usize, 3, 2] {
        let events = (0..n)
            .map(|i| ev("E", format!("{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let r = c.append(&s, ExpectedVersion::Any, events).await?;
        ensure_eq!(
            c.global()?.latest_position().await?,
            r.last_position(),
            "latest position after an append of {n}"
        );
        ensure!(r.last_position() > last, "last position did not advance");
        last = r.last_position();
    }
    let all = read(&c, ReadOptions::new(Position::ZERO, 100)).await?;
    ensure_eq!(
        all.last().map(|e| e.position),
        Some(last),
        "position of the last event read"
    );
    Ok(())
}

async fn equals_load(c: Ctx) -> Outcome {
    let sent = seed(&c).await?;
    let all = read(&c, ReadOptions::new(Position::ZERO, 100)).await?;
    let s = &sent[0].0;
    let loaded = c.events().load(s, LoadOptions::new()).await?;
    let from_global: Vec<RawEvent> = all.into_iter().filter(|e| &e.stream == s).collect();
    ensure_eq!(
        from_global,
        loaded,
        "events of {s} from read_all compared with load"
    );
    Ok(())
}

async fn max_limit(c: Ctx) -> Outcome {
    seed(&c).await?;
    ensure_eq!(
        read(&c, ReadOptions::new(Position::ZERO, MAX_READ_LIMIT))
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
            read(&c, ReadOptions::new(Position::ZERO, limit)).await,
            StoreError::Validation(ValidationError::InvalidLimit { .. }),
            "read_all with limit {limit}"
        );
    }
    Ok(())
}

async fn too_many_types(c: Ctx) -> Outcome {
    let types = (0..=MAX_FILTER_TYPES)
        .map(|i| ty(&format!("T{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    expect_err!(
        read(&c, ReadOptions::new(Position::ZERO, 10).event_types(types)).await,
        StoreError::Validation(ValidationError::TooManyFilterTypes { .. }),
        "read_all filtering {} types",
        MAX_FILTER_TYPES + 1
    );
    Ok(())
}
