//! Appends and loads, stream isolation, expected versions and conflicts.

use eskit_core::{
    error::StoreError,
    event::{ExpectedVersion, StreamName, Version},
    store::EventStore,
};

use super::{
    Ctx, EVENTS, Outcome, Scenario, ensure, ensure_eq, ev, evs, expect_err, scenario_list, stream,
};
use crate::history::{contiguous_from_one, versions};

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![EVENTS;
        "append.round_trip" => round_trip,
        "append.missing_stream_loads_empty" => missing_stream,
        "append.stream_isolation" => stream_isolation,
        "append.stream_type_isolation" => stream_type_isolation,
        "append.sequential_appends" => sequential_appends,
        "append.records_describe_events" => records_describe_events,
        "append.insertion_order_preserved" => insertion_order,
        "append.stream_version_tracks_appends" => stream_version_tracks,
        "expected.any_on_new_stream" => any_new,
        "expected.any_on_existing_stream" => any_existing,
        "expected.no_stream_on_new_stream" => no_stream_new,
        "expected.no_stream_on_existing_stream_conflicts" => no_stream_existing,
        "expected.stream_exists_on_existing_stream" => exists_existing,
        "expected.stream_exists_on_missing_stream_conflicts" => exists_missing,
        "expected.exact_matching_version" => exact_ok,
        "expected.exact_stale_version_conflicts" => exact_stale,
        "expected.exact_future_version_conflicts" => exact_ahead,
        "expected.exact_zero_means_no_stream" => exact_zero,
        "expected.conflict_writes_nothing" => conflict_writes_nothing,
        "expected.failed_append_leaves_no_stream" => failed_leaves_no_stream,
        "concurrency.no_stream_race_has_one_winner" => no_stream_race,
        "concurrency.exact_version_race_has_one_winner" => exact_race,
        "concurrency.append_any_from_many_writers" => append_any_concurrent,
    ]
}

async fn round_trip(c: Ctx) -> Outcome {
    let s = stream("round-trip")?;
    let sent = vec![
        ev("Opened", "a")?,
        ev("Deposited", "b")?,
        ev("Closed", "c")?,
    ];
    c.append(&s, ExpectedVersion::NoStream, sent.clone())
        .await?;
    let got = c.load_all(&s).await?;
    ensure_eq!(got.len(), 3, "events loaded");
    for (i, (g, e)) in got.iter().zip(&sent).enumerate() {
        ensure_eq!(g.id, e.id(), "event {i} id");
        ensure_eq!(&g.event_type, e.event_type(), "event {i} type");
        ensure_eq!(g.payload.as_slice(), e.payload(), "event {i} payload");
        ensure_eq!(g.version, Version::new(i as u64 + 1), "event {i} version");
        ensure_eq!(&g.stream, &s, "event {i} stream");
    }
    Ok(())
}

async fn missing_stream(c: Ctx) -> Outcome {
    let s = stream("never-written")?;
    ensure_eq!(c.load_all(&s).await?.len(), 0, "events of a missing stream");
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::ZERO,
        "version of a missing stream"
    );
    Ok(())
}

async fn stream_isolation(c: Ctx) -> Outcome {
    let a = stream("iso-a")?;
    let b = stream("iso-b")?;
    c.append(&a, ExpectedVersion::Any, evs(3, "A", "a")?)
        .await?;
    c.append(&b, ExpectedVersion::Any, evs(2, "B", "b")?)
        .await?;
    let la = c.load_all(&a).await?;
    let lb = c.load_all(&b).await?;
    ensure_eq!(la.len(), 3, "events in {a}");
    ensure_eq!(lb.len(), 2, "events in {b}");
    ensure!(
        la.iter().all(|e| e.stream == a),
        "{a} returned foreign events"
    );
    ensure!(
        lb.iter().all(|e| e.stream == b),
        "{b} returned foreign events"
    );
    ensure_eq!(versions(&lb), vec![1, 2], "versions in {b}");
    Ok(())
}

async fn stream_type_isolation(c: Ctx) -> Outcome {
    let a = StreamName::new("order", "same-id")?;
    let b = StreamName::new("invoice", "same-id")?;
    c.append(&a, ExpectedVersion::NoStream, evs(2, "OrderPlaced", "o")?)
        .await?;
    c.append(&b, ExpectedVersion::NoStream, evs(1, "InvoiceSent", "i")?)
        .await?;
    ensure_eq!(c.load_all(&a).await?.len(), 2, "events in {a}");
    let lb = c.load_all(&b).await?;
    ensure_eq!(lb.len(), 1, "events in {b}");
    ensure_eq!(
        lb[0].stream.stream_type().as_str(),
        "invoice",
        "stream type"
    );
    ensure_eq!(
        c.events().stream_version(&b).await?,
        Version::new(1),
        "version of {b}"
    );
    Ok(())
}

async fn sequential_appends(c: Ctx) -> Outcome {
    let s = stream("sequential")?;
    for i in 0..10u64 {
        let r = c
            .append(
                &s,
                ExpectedVersion::Exact(Version::new(i)),
                vec![ev("Step", format!("{i}"))?],
            )
            .await?;
        ensure_eq!(
            r.last_version(),
            Version::new(i + 1),
            "version after append {i}"
        );
        ensure!(!r.deduplicated, "append {i} reported as deduplicated");
    }
    let got = c.load_all(&s).await?;
    ensure!(
        contiguous_from_one(&got),
        "versions not 1..10: {:?}",
        versions(&got)
    );
    ensure_eq!(got.len(), 10, "events after 10 appends");
    Ok(())
}

async fn records_describe_events(c: Ctx) -> Outcome {
    let s = stream("records")?;
    c.append(&s, ExpectedVersion::Any, evs(2, "Pre", "p")?)
        .await?;
    let sent = evs(4, "Batch", "b")?;
    let r = c
        .append(&s, ExpectedVersion::Exact(Version::new(2)), sent.clone())
        .await?;
    ensure_eq!(r.records.len(), 4, "records returned");
    for (i, (rec, e)) in r.records.iter().zip(&sent).enumerate() {
        ensure_eq!(rec.id, e.id(), "record {i} id");
        ensure_eq!(
            rec.version,
            Version::new(i as u64 + 3),
            "record {i} version"
        );
    }
    ensure!(
        r.records.windows(2).all(|w| w[0].position < w[1].position),
        "record positions not increasing: {:?}",
        r.records
            .iter()
            .map(|r| r.position.get())
            .collect::<Vec<_>>()
    );
    ensure_eq!(r.last_version(), Version::new(6), "last version");
    let loaded = c.load_all(&s).await?;
    let tail: Vec<_> = loaded[2..].iter().map(|e| e.record()).collect();
    ensure_eq!(tail, r.records, "records compared with loaded events");
    Ok(())
}

async fn insertion_order(c: Ctx) -> Outcome {
    let s = stream("order")?;
    let mut n = 0usize;
    for batch in [1usize, 7, 3, 13, 1, 25] {
        let events = (0..batch)
            .map(|_| {
                n += 1;
                ev("Numbered", format!("{n:04}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        c.append(&s, ExpectedVersion::Any, events).await?;
    }
    let got = c.load_all(&s).await?;
    let payloads: Vec<String> = got
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    let want: Vec<String> = (1..=n).map(|i| format!("{i:04}")).collect();
    ensure_eq!(payloads, want, "payload order");
    ensure!(contiguous_from_one(&got), "versions: {:?}", versions(&got));
    Ok(())
}

async fn stream_version_tracks(c: Ctx) -> Outcome {
    let s = stream("version-tracks")?;
    let mut want = 0u64;
    for n in [1usize, 4, 2] {
        c.append(&s, ExpectedVersion::Any, evs(n, "E", "x")?)
            .await?;
        want += n as u64;
        ensure_eq!(
            c.events().stream_version(&s).await?,
            Version::new(want),
            "stream version"
        );
    }
    Ok(())
}

async fn any_new(c: Ctx) -> Outcome {
    let s = stream("any-new")?;
    let r = c
        .append(&s, ExpectedVersion::Any, evs(2, "E", "x")?)
        .await?;
    ensure_eq!(
        r.last_version(),
        Version::new(2),
        "version after Any on a new stream"
    );
    Ok(())
}

async fn any_existing(c: Ctx) -> Outcome {
    let s = stream("any-existing")?;
    c.append(&s, ExpectedVersion::Any, evs(3, "E", "x")?)
        .await?;
    let r = c
        .append(&s, ExpectedVersion::Any, evs(1, "E", "y")?)
        .await?;
    ensure_eq!(
        r.last_version(),
        Version::new(4),
        "version after Any on an existing stream"
    );
    Ok(())
}

async fn no_stream_new(c: Ctx) -> Outcome {
    let s = stream("no-stream-new")?;
    let r = c
        .append(&s, ExpectedVersion::NoStream, evs(1, "E", "x")?)
        .await?;
    ensure_eq!(r.last_version(), Version::new(1), "version after NoStream");
    Ok(())
}

fn check_conflict(
    e: &StoreError,
    s: &StreamName,
    want_expected: ExpectedVersion,
    want_actual: Version,
) -> Outcome {
    ensure!(e.is_conflict(), "is_conflict() is false for {e:?}");
    if let StoreError::WrongExpectedVersion {
        stream,
        expected,
        actual,
    } = e
    {
        ensure_eq!(stream, s, "stream in the conflict error");
        ensure_eq!(
            *expected,
            want_expected,
            "expected version in the conflict error"
        );
        ensure_eq!(*actual, want_actual, "actual version in the conflict error");
    }
    Ok(())
}

async fn no_stream_existing(c: Ctx) -> Outcome {
    let s = stream("no-stream-existing")?;
    c.append(&s, ExpectedVersion::Any, evs(1, "E", "x")?)
        .await?;
    let e = expect_err!(
        c.append(&s, ExpectedVersion::NoStream, evs(1, "E", "y")?)
            .await,
        StoreError::WrongExpectedVersion { .. },
        "NoStream on a stream at version 1"
    );
    check_conflict(&e, &s, ExpectedVersion::NoStream, Version::new(1))
}

async fn exists_existing(c: Ctx) -> Outcome {
    let s = stream("exists")?;
    c.append(&s, ExpectedVersion::Any, evs(2, "E", "x")?)
        .await?;
    let r = c
        .append(&s, ExpectedVersion::StreamExists, evs(1, "E", "y")?)
        .await?;
    ensure_eq!(
        r.last_version(),
        Version::new(3),
        "version after StreamExists"
    );
    Ok(())
}

async fn exists_missing(c: Ctx) -> Outcome {
    let s = stream("exists-missing")?;
    let e = expect_err!(
        c.append(&s, ExpectedVersion::StreamExists, evs(1, "E", "y")?)
            .await,
        StoreError::WrongExpectedVersion { .. },
        "StreamExists on a missing stream"
    );
    check_conflict(&e, &s, ExpectedVersion::StreamExists, Version::ZERO)
}

async fn exact_ok(c: Ctx) -> Outcome {
    let s = stream("exact")?;
    c.append(&s, ExpectedVersion::Any, evs(3, "E", "x")?)
        .await?;
    let r = c
        .append(
            &s,
            ExpectedVersion::Exact(Version::new(3)),
            evs(2, "E", "y")?,
        )
        .await?;
    ensure_eq!(r.last_version(), Version::new(5), "version after Exact(3)");
    Ok(())
}

async fn exact_stale(c: Ctx) -> Outcome {
    let s = stream("exact-stale")?;
    c.append(&s, ExpectedVersion::Any, evs(2, "E", "x")?)
        .await?;
    let e = expect_err!(
        c.append(
            &s,
            ExpectedVersion::Exact(Version::new(1)),
            evs(1, "E", "y")?
        )
        .await,
        StoreError::WrongExpectedVersion { .. },
        "Exact(1) on a stream at version 2"
    );
    check_conflict(
        &e,
        &s,
        ExpectedVersion::Exact(Version::new(1)),
        Version::new(2),
    )
}

async fn exact_ahead(c: Ctx) -> Outcome {
    let s = stream("exact-ahead")?;
    c.append(&s, ExpectedVersion::Any, evs(2, "E", "x")?)
        .await?;
    let e = expect_err!(
        c.append(
            &s,
            ExpectedVersion::Exact(Version::new(5)),
            evs(1, "E", "y")?
        )
        .await,
        StoreError::WrongExpectedVersion { .. },
        "Exact(5) on a stream at version 2"
    );
    check_conflict(
        &e,
        &s,
        ExpectedVersion::Exact(Version::new(5)),
        Version::new(2),
    )
}

async fn exact_zero(c: Ctx) -> Outcome {
    let s = stream("exact-zero")?;
    c.append(&s, ExpectedVersion::Exact(Version::ZERO), evs(1, "E", "x")?)
        .await?;
    let e = expect_err!(
        c.append(&s, ExpectedVersion::Exact(Version::ZERO), evs(1, "E", "y")?)
            .await,
        StoreError::WrongExpectedVersion { .. },
        "Exact(0) on a stream at version 1"
    );
    check_conflict(
        &e,
        &s,
        ExpectedVersion::Exact(Version::ZERO),
        Version::new(1),
    )
}

async fn conflict_writes_nothing(c: Ctx) -> Outcome {
    let s = stream("conflict-nothing")?;
    c.append(&s, ExpectedVersion::Any, evs(2, "E", "x")?)
        .await?;
    let before = c.load_all(&s).await?;
    for exp in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(Version::new(1)),
        ExpectedVersion::Exact(Version::new(3)),
    ] {
        expect_err!(
            c.append(&s, exp, evs(5, "E", "z")?).await,
            StoreError::WrongExpectedVersion { .. },
            "append expecting {exp} on a stream at version 2"
        );
    }
    let after = c.load_all(&s).await?;
    ensure_eq!(after, before, "stream after rejected appends");
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::new(2),
        "version after rejected appends"
    );
    Ok(())
}

async fn failed_leaves_no_stream(c: Ctx) -> Outcome {
    let s = stream("failed-no-trace")?;
    expect_err!(
        c.append(&s, ExpectedVersion::StreamExists, evs(1, "E", "x")?)
            .await,
        StoreError::WrongExpectedVersion { .. },
        "StreamExists on a missing stream"
    );
    expect_err!(
        c.append(
            &s,
            ExpectedVersion::Exact(Version::new(4)),
            evs(1, "E", "x")?
        )
        .await,
        StoreError::WrongExpectedVersion { .. },
        "Exact(4) on a missing stream"
    );
    ensure_eq!(
        c.load_all(&s).await?.len(),
        0,
        "events after failed appends"
    );
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::ZERO,
        "version after failed appends"
    );
    let r = c
        .append(&s, ExpectedVersion::NoStream, evs(1, "E", "y")?)
        .await?;
    ensure_eq!(
        r.last_version(),
        Version::new(1),
        "first real append's version"
    );
    Ok(())
}

/// `writers` tasks append once each with `expected`; returns (ok, conflicts).
async fn race(
    c: &Ctx,
    s: &StreamName,
    expected: ExpectedVersion,
    writers: usize,
) -> Result<(usize, usize), super::Failure> {
    let gate = c.gate(writers);
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let (c2, s, gate) = (c.clone(), s.clone(), gate.clone());
            c.spawn(async move {
                gate.wait().await;
                let events = vec![ev("Raced", format!("writer-{i}"))?];
                Ok::<_, super::Failure>(c2.append(&s, expected, events).await)
            })
        })
        .collect();
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await?? {
            Ok(_) => ok += 1,
            Err(e) if e.is_conflict() => conflicts += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((ok, conflicts))
}

async fn no_stream_race(c: Ctx) -> Outcome {
    let s = stream("race-no-stream")?;
    let writers = c.stress().writers.max(2);
    let (ok, conflicts) = race(&c, &s, ExpectedVersion::NoStream, writers).await?;
    ensure_eq!(
        (ok, conflicts),
        (1, writers - 1),
        "(successes, conflicts) of {writers} racing NoStream appends"
    );
    ensure_eq!(c.load_all(&s).await?.len(), 1, "events after the race");
    Ok(())
}

async fn exact_race(c: Ctx) -> Outcome {
    let s = stream("race-exact")?;
    c.append(&s, ExpectedVersion::Any, evs(3, "E", "x")?)
        .await?;
    let writers = c.stress().writers.max(2);
    let (ok, conflicts) = race(&c, &s, ExpectedVersion::Exact(Version::new(3)), writers).await?;
    ensure_eq!(
        (ok, conflicts),
        (1, writers - 1),
        "(successes, conflicts) of {writers} racing Exact(3) appends"
    );
    let got = c.load_all(&s).await?;
    ensure_eq!(got.len(), 4, "events after the race");
    ensure!(contiguous_from_one(&got), "versions: {:?}", versions(&got));
    Ok(())
}

async fn append_any_concurrent(c: Ctx) -> Outcome {
    let s = stream("any-concurrent")?;
    let writers = c.stress().writers.max(2);
    let per = 50usize;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let c2 = c.clone();
            let s = s.clone();
            c.spawn(async move {
                for i in 0..per {
                    let e = vec![ev("Any", format!("{w}-{i}"))?];
                    c2.append(&s, ExpectedVersion::Any, e).await.map_err(|e| {
                        super::Failure(format!(
                            "writer {w} append {i}: {}",
                            eskit_core::error::error_chain(&e)
                        ))
                    })?;
                }
                Ok::<_, super::Failure>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let got = c.load_all(&s).await?;
    ensure_eq!(
        got.len(),
        writers * per,
        "events after concurrent Any appends"
    );
    ensure!(contiguous_from_one(&got), "versions not contiguous");
    // Each writer's own events keep their order.
    for w in 0..writers {
        let mine: Vec<String> = got
            .iter()
            .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
            .filter(|p| p.starts_with(&format!("{w}-")))
            .collect();
        let want: Vec<String> = (0..per).map(|i| format!("{w}-{i}")).collect();
        ensure_eq!(mine, want, "order of writer {w}'s events");
    }
    Ok(())
}
