//! Loading with options: from a version, ranges, limits, type filters.

use eskit_core::limits::MAX_FILTER_TYPES;
use eskit_core::{
    error::{StoreError, ValidationError},
    event::{ExpectedVersion, RawEvent, StreamName, Version},
    store::{EventStore, LoadOptions},
};

use super::{
    Ctx, EVENTS, Failure, Outcome, Scenario, ensure, ensure_eq, ev, expect_err, scenario_list,
    stream, ty,
};
use crate::history::versions;

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![EVENTS;
        "load.from_version" => from_version,
        "load.from_version_one_or_zero_is_everything" => from_start,
        "load.to_version" => to_version,
        "load.version_range" => version_range,
        "load.single_version_range" => single_version,
        "load.limit" => limit,
        "load.limit_with_from_version" => limit_from,
        "load.limit_larger_than_stream" => limit_large,
        "load.event_type_filter" => type_filter,
        "load.type_filter_then_limit" => type_filter_limit,
        "load.type_filter_with_range" => type_filter_range,
        "load.type_filter_matching_nothing" => type_filter_none,
        "load.beyond_end_is_empty" => beyond_end,
        "load.range_reaching_past_end" => range_past_end,
        "load.invalid_version_range_rejected" => invalid_range,
        "load.zero_limit_rejected" => zero_limit,
        "load.too_many_filter_types_rejected" => too_many_types,
    ]
}

/// A stream with 10 events: odd versions `Odd`, even versions `Even`.
async fn ten(c: &Ctx) -> Result<StreamName, Failure> {
    let s = stream("ten")?;
    let events = (1..=10)
        .map(|v| ev(if v % 2 == 0 { "Even" } else { "Odd" }, format!("{v}")))
        .collect::<Result<Vec<_>, _>>()?;
    c.append(&s, ExpectedVersion::NoStream, events).await?;
    Ok(s)
}

async fn load(c: &Ctx, s: &StreamName, o: LoadOptions) -> Result<Vec<RawEvent>, StoreError> {
    c.events().load(s, o).await
}

fn v(n: u64) -> Version {
    Version::new(n)
}

async fn from_version(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(&c, &s, LoadOptions::new().with_from(v(4))).await?;
    ensure_eq!(
        versions(&got),
        (4..=10).collect::<Vec<_>>(),
        "versions from 4"
    );
    Ok(())
}

async fn from_start(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    for from in [0, 1] {
        let got = load(&c, &s, LoadOptions::new().with_from(v(from))).await?;
        ensure_eq!(got.len(), 10, "events from version {from}");
    }
    Ok(())
}

async fn to_version(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(&c, &s, LoadOptions::new().with_to(v(3))).await?;
    ensure_eq!(versions(&got), vec![1, 2, 3], "versions up to 3");
    Ok(())
}

async fn version_range(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(&c, &s, LoadOptions::new().with_from(v(3)).with_to(v(7))).await?;
    ensure_eq!(versions(&got), vec![3, 4, 5, 6, 7], "versions 3..=7");
    Ok(())
}

async fn single_version(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(&c, &s, LoadOptions::new().with_from(v(6)).with_to(v(6))).await?;
    ensure_eq!(versions(&got), vec![6], "versions 6..=6");
    ensure_eq!(
        got[0].payload.as_slice(),
        b"6".as_slice(),
        "payload of version 6"
    );
    Ok(())
}

async fn limit(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(&c, &s, LoadOptions::new().with_limit(3)).await?;
    ensure_eq!(versions(&got), vec![1, 2, 3], "versions with limit 3");
    Ok(())
}

async fn limit_from(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(&c, &s, LoadOptions::new().with_from(v(8)).with_limit(2)).await?;
    ensure_eq!(versions(&got), vec![8, 9], "versions from 8 with limit 2");
    Ok(())
}

async fn limit_large(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(&c, &s, LoadOptions::new().with_limit(1_000_000)).await?;
    ensure_eq!(got.len(), 10, "events with a limit above the stream length");
    Ok(())
}

async fn type_filter(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(&c, &s, LoadOptions::new().with_event_types([ty("Even")?])).await?;
    ensure_eq!(
        versions(&got),
        vec![2, 4, 6, 8, 10],
        "versions of Even events"
    );
    let both = load(
        &c,
        &s,
        LoadOptions::new().with_event_types([ty("Even")?, ty("Odd")?]),
    )
    .await?;
    ensure_eq!(both.len(), 10, "events of both types");
    Ok(())
}

async fn type_filter_limit(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(
        &c,
        &s,
        LoadOptions::new()
            .with_event_types([ty("Odd")?])
            .with_limit(2),
    )
    .await?;
    ensure_eq!(
        versions(&got),
        vec![1, 3],
        "first two Odd events (limit applies after the filter)"
    );
    Ok(())
}

async fn type_filter_range(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let o = LoadOptions::new()
        .with_event_types([ty("Even")?])
        .with_from(v(3))
        .with_to(v(8));
    let got = load(&c, &s, o).await?;
    ensure_eq!(versions(&got), vec![4, 6, 8], "Even events in 3..=8");
    Ok(())
}

async fn type_filter_none(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(
        &c,
        &s,
        LoadOptions::new().with_event_types([ty("Missing")?]),
    )
    .await?;
    ensure_eq!(got.len(), 0, "events of an unused type");
    Ok(())
}

async fn beyond_end(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    for from in [11, 12, 1000, u64::MAX] {
        let got = load(&c, &s, LoadOptions::new().with_from(v(from))).await?;
        ensure_eq!(
            got.len(),
            0,
            "events from version {from} of a 10-event stream"
        );
    }
    Ok(())
}

async fn range_past_end(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let got = load(&c, &s, LoadOptions::new().with_from(v(9)).with_to(v(50))).await?;
    ensure_eq!(
        versions(&got),
        vec![9, 10],
        "versions 9..=50 of a 10-event stream"
    );
    Ok(())
}

async fn invalid_range(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let e = expect_err!(
        load(&c, &s, LoadOptions::new().with_from(v(5)).with_to(v(4))).await,
        StoreError::Validation(ValidationError::InvalidVersionRange { .. }),
        "load with range 5..=4"
    );
    ensure!(e.is_validation(), "is_validation() false");
    Ok(())
}

async fn zero_limit(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    expect_err!(
        load(&c, &s, LoadOptions::new().with_limit(0)).await,
        StoreError::Validation(ValidationError::InvalidLimit { limit: 0 }),
        "load with limit 0"
    );
    Ok(())
}

async fn too_many_types(c: Ctx) -> Outcome {
    let s = ten(&c).await?;
    let types = (0..=MAX_FILTER_TYPES)
        .map(|i| ty(&format!("T{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    expect_err!(
        load(&c, &s, LoadOptions::new().with_event_types(types)).await,
        StoreError::Validation(ValidationError::TooManyFilterTypes { .. }),
        "load filtering {} types",
        MAX_FILTER_TYPES + 1
    );
    let types = (0..MAX_FILTER_TYPES)
        .map(|i| ty(&format!("T{i}")))
        .chain([ty("Odd")])
        .skip(1)
        .collect::<Result<Vec<_>, _>>()?;
    let got = load(&c, &s, LoadOptions::new().with_event_types(types)).await?;
    ensure_eq!(
        got.len(),
        5,
        "Odd events with a filter of exactly {MAX_FILTER_TYPES} types"
    );
    Ok(())
}
