//! Event fields and edge cases: ids, positions, timestamps, payload bounds,
//! batch bounds, schema versions and codec names.

use std::collections::HashSet;
use std::time::Duration;

use eskit_core::limits::{MAX_APPEND_BYTES, MAX_EVENTS_PER_APPEND, MAX_PAYLOAD_BYTES};
use eskit_core::{
    error::{StoreError, ValidationError},
    event::{EventId, ExpectedVersion, NewEvent, Position, StreamName, Timestamp, Version},
    store::{AppendOptions, EventStore},
};

use super::{
    Ctx, EVENTS, LIFECYCLE, Outcome, Scenario, ensure, ensure_eq, ev, evs, expect_err,
    scenario_list, stream, ty,
};
use crate::history::{contiguous_from_one, positions, strictly_increasing};

pub(crate) fn scenarios() -> Vec<Scenario> {
    let mut v = scenario_list![EVENTS;
        "fields.all_populated" => all_populated,
        "fields.unique_ids" => unique_ids,
        "fields.given_ids_preserved" => ids_preserved,
        "fields.duplicate_id_in_one_append_rejected" => duplicate_id_in_batch,
        "fields.duplicate_id_across_appends_rejected" => duplicate_id_across,
        "fields.concurrent_duplicate_ids_write_once" => duplicate_id_concurrent,
        "fields.idempotent_retry_with_the_same_ids_deduplicates" => duplicate_id_retry,
        "fields.positions_strictly_increasing" => positions_increase,
        "fields.timestamps_sane" => timestamps_sane,
        "fields.custom_timestamp_round_trip" => custom_timestamp,
        "fields.schema_version_and_codec_round_trip" => schema_codec,
        "edge.payload_at_max_accepted" => payload_max,
        "edge.payload_over_max_rejected" => payload_over,
        "edge.empty_payload" => empty_payload,
        "edge.binary_payload" => binary_payload,
        "edge.unicode_payload" => unicode_payload,
        "edge.many_streams" => many_streams,
        "edge.many_events" => many_events,
        "edge.zero_events_rejected" => zero_events,
        "edge.max_events_per_append_accepted" => max_events,
        "edge.too_many_events_rejected" => too_many_events,
        "edge.append_too_large_rejected" => append_too_large,
        "edge.zero_schema_version_rejected" => zero_schema,
        "edge.invalid_codec_name_rejected" => bad_codec,
    ];
    v.extend(scenario_list![LIFECYCLE;
        "fields.id_of_a_deleted_event_free_again" => duplicate_id_after_delete,
    ]);
    v
}

fn with_id(event_type: &str, id: u128) -> Result<NewEvent, super::Failure> {
    Ok(ev(event_type, format!("id-{id}"))?.with_id(EventId::from_u128(id)))
}

async fn duplicate_id_in_batch(c: Ctx) -> Outcome {
    let s = stream("dup-id-batch")?;
    let events = vec![with_id("E", 7)?, with_id("E", 8)?, with_id("F", 7)?];
    let e = expect_err!(
        c.append(&s, ExpectedVersion::Any, events).await,
        StoreError::Validation(ValidationError::DuplicateEventId { .. }),
        "an append whose first and third events share an id"
    );
    if let StoreError::Validation(ValidationError::DuplicateEventId { id }) = e {
        ensure_eq!(id, EventId::from_u128(7), "id in the error");
    }
    ensure_eq!(c.load_all(&s).await?.len(), 0, "events after the refusal");
    Ok(())
}

async fn duplicate_id_across(c: Ctx) -> Outcome {
    let a = stream("dup-id-a")?;
    let b = stream("dup-id-b")?;
    c.append(&a, ExpectedVersion::NoStream, vec![with_id("E", 41)?])
        .await?;
    // Another stream, the same stream, and an id second in a batch: each
    // refused whole.
    for (s, events, what) in [
        (&b, vec![with_id("E", 41)?], "another stream"),
        (&a, vec![with_id("E", 41)?], "the same stream"),
        (
            &b,
            vec![with_id("E", 42)?, with_id("E", 41)?],
            "another stream, second event of the batch",
        ),
        (
            &b,
            // Past the first few dozen events of a large batch, which a
            // backend may write in parts.
            (100..170)
                .map(|i| with_id("E", i))
                .chain([with_id("E", 41)])
                .chain((170..180).map(|i| with_id("E", i)))
                .collect::<Result<Vec<_>, _>>()?,
            "another stream, 71st of 81 events",
        ),
    ] {
        let e = expect_err!(
            c.append(s, ExpectedVersion::Any, events).await,
            StoreError::DuplicateEventId { .. },
            "an append reusing a stored id ({what})"
        );
        if let StoreError::DuplicateEventId { id } = e {
            ensure_eq!(id, EventId::from_u128(41), "id in the error ({what})");
        }
        ensure!(
            !e.is_conflict(),
            "a duplicate id must not be retried as a conflict"
        );
    }
    ensure_eq!(c.load_all(&a).await?.len(), 1, "events of the first stream");
    ensure_eq!(
        c.load_all(&b).await?.len(),
        0,
        "events of the second stream"
    );
    ensure_eq!(
        c.events().stream_version(&b).await?,
        Version::ZERO,
        "version of the second stream"
    );
    // The refused appends took nothing: the next append goes on as usual.
    let r = c
        .append(&b, ExpectedVersion::NoStream, vec![with_id("E", 42)?])
        .await?;
    ensure_eq!(
        r.last_version(),
        Version::new(1),
        "version of the next append"
    );
    Ok(())
}

async fn duplicate_id_concurrent(c: Ctx) -> Outcome {
    let writers = c.stress().writers.max(2);
    let gate = c.gate(writers);
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let (c2, gate) = (c.clone(), gate.clone());
            c.spawn(async move {
                let s = stream(&format!("dup-id-concurrent-{i}"))?;
                gate.wait().await;
                // Each writer also appends an event of its own, so a batch
                // of several appends holds both refused and written ones.
                let own = c2
                    .append(
                        &s,
                        ExpectedVersion::Any,
                        vec![with_id("Own", 1_000 + i as u128)?],
                    )
                    .await;
                let shared = c2
                    .append(&s, ExpectedVersion::Any, vec![with_id("Shared", 99)?])
                    .await;
                Ok::<_, super::Failure>((own, shared))
            })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        let (own, shared) = t.await??;
        own?;
        match shared {
            Ok(_) => written += 1,
            Err(StoreError::DuplicateEventId { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ensure_eq!(
        written,
        1,
        "appends of the shared id that wrote, of {writers}"
    );
    let all = (0..writers)
        .map(|i| stream(&format!("dup-id-concurrent-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut events = 0;
    for s in &all {
        events += c.load_all(s).await?.len();
    }
    ensure_eq!(events, writers + 1, "events stored");
    Ok(())
}

async fn duplicate_id_retry(c: Ctx) -> Outcome {
    let s = stream("dup-id-retry")?;
    let events = vec![with_id("E", 5)?, with_id("E", 6)?];
    let keyed = || AppendOptions::new().with_idempotency_key("same-ids");
    let first = c
        .events()
        .append(&s, ExpectedVersion::NoStream, events.clone(), keyed())
        .await?;
    let again = c
        .events()
        .append(&s, ExpectedVersion::NoStream, events, keyed())
        .await?;
    ensure!(
        again.deduplicated,
        "retry with the original ids not deduplicated"
    );
    ensure_eq!(
        again.records,
        first.records,
        "records returned by the retry"
    );
    ensure_eq!(c.load_all(&s).await?.len(), 2, "events after the retry");
    Ok(())
}

async fn duplicate_id_after_delete(c: Ctx) -> Outcome {
    let a = stream("dup-id-deleted")?;
    let b = stream("dup-id-after-delete")?;
    c.append(&a, ExpectedVersion::NoStream, vec![with_id("E", 77)?])
        .await?;
    c.lifecycle()?.dyn_delete(&a).await?;
    c.append(&b, ExpectedVersion::NoStream, vec![with_id("E", 77)?])
        .await?;
    ensure_eq!(
        c.load_all(&b)
            .await?
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![EventId::from_u128(77)],
        "ids of the stream appended after the delete"
    );
    Ok(())
}

async fn all_populated(c: Ctx) -> Outcome {
    let s = StreamName::new("fields", "f-1")?;
    let before = Timestamp::now();
    let sent = ev("Populated", "payload")?
        .with_schema_version(3)
        .with_codec("json");
    c.append(&s, ExpectedVersion::NoStream, vec![sent.clone()])
        .await?;
    let got = c.load_all(&s).await?;
    let e = got
        .first()
        .ok_or_else(|| super::Failure("no event loaded".into()))?;
    ensure_eq!(e.id, sent.id(), "id");
    ensure_eq!(&e.stream, &s, "stream");
    ensure_eq!(e.stream.stream_type().as_str(), "fields", "stream type");
    ensure_eq!(e.stream.stream_id().as_str(), "f-1", "stream id");
    ensure_eq!(e.version, Version::new(1), "version");
    ensure!(e.position > Position::ZERO, "position is zero");
    ensure_eq!(e.event_type.as_str(), "Populated", "event type");
    ensure_eq!(e.schema_version, 3, "schema version");
    ensure_eq!(e.codec.as_str(), "json", "codec");
    ensure_eq!(e.payload.as_slice(), b"payload".as_slice(), "payload");
    ensure!(
        e.metadata.is_empty(),
        "metadata not empty: {:?}",
        e.metadata
    );
    ensure!(
        e.timestamp.as_unix_micros() > before.as_unix_micros() - 300_000_000,
        "timestamp {} long before the append at {before}",
        e.timestamp
    );
    Ok(())
}

async fn unique_ids(c: Ctx) -> Outcome {
    let mut seen = HashSet::new();
    for i in 0..20 {
        let s = stream(&format!("ids-{}", i % 4))?;
        c.append(&s, ExpectedVersion::Any, evs(10, "E", "x")?)
            .await?;
    }
    for i in 0..4 {
        for e in c.load_all(&stream(&format!("ids-{i}"))?).await? {
            ensure!(seen.insert(e.id), "event id {} appears twice", e.id);
        }
    }
    ensure_eq!(seen.len(), 200, "distinct ids");
    Ok(())
}

async fn ids_preserved(c: Ctx) -> Outcome {
    let s = stream("given-ids")?;
    let ids = [
        EventId::from_u128(1),
        EventId::from_u128(u128::MAX),
        EventId::from_u128(0x0190_f7a2_6c1e_7b3d_9f00_5d2c_1a0b_9e11),
    ];
    let events = ids
        .iter()
        .map(|id| Ok(ev("E", "x")?.with_id(*id)))
        .collect::<Result<Vec<NewEvent>, super::Failure>>()?;
    let r = c.append(&s, ExpectedVersion::NoStream, events).await?;
    let rec: Vec<EventId> = r.records.iter().map(|r| r.id).collect();
    ensure_eq!(rec, ids.to_vec(), "ids in the append result");
    let got: Vec<EventId> = c.load_all(&s).await?.iter().map(|e| e.id).collect();
    ensure_eq!(got, ids.to_vec(), "ids loaded back");
    Ok(())
}

async fn positions_increase(c: Ctx) -> Outcome {
    let mut last = Position::ZERO;
    for i in 0..12 {
        let s = stream(&format!("pos-{}", i % 3))?;
        let r = c
            .append(&s, ExpectedVersion::Any, evs(1 + i % 4, "E", "x")?)
            .await?;
        for rec in &r.records {
            ensure!(
                rec.position > last,
                "append {i}: position {} not after {last}",
                rec.position
            );
            last = rec.position;
        }
    }
    for i in 0..3 {
        let got = c.load_all(&stream(&format!("pos-{i}"))?).await?;
        ensure!(
            strictly_increasing(&got),
            "positions in pos-{i}: {:?}",
            positions(&got)
        );
        ensure!(
            contiguous_from_one(&got),
            "versions in pos-{i} not contiguous"
        );
    }
    Ok(())
}

async fn timestamps_sane(c: Ctx) -> Outcome {
    // Backends may use the server's clock; allow five minutes of skew.
    let skew = Duration::from_secs(300).as_micros() as i64;
    let before = Timestamp::now().as_unix_micros();
    let s = stream("timestamps")?;
    c.append(&s, ExpectedVersion::Any, evs(3, "E", "x")?)
        .await?;
    c.append(&s, ExpectedVersion::Any, evs(2, "E", "y")?)
        .await?;
    let after = Timestamp::now().as_unix_micros();
    let got = c.load_all(&s).await?;
    for e in &got {
        let t = e.timestamp.as_unix_micros();
        ensure!(
            t >= before - skew && t <= after + skew,
            "timestamp {} of version {} is outside the append window {}..{}",
            e.timestamp,
            e.version,
            Timestamp::from_unix_micros(before),
            Timestamp::from_unix_micros(after)
        );
    }
    ensure!(
        got[..3].iter().all(|e| e.timestamp == got[0].timestamp),
        "events of one append carry different timestamps"
    );
    Ok(())
}

async fn custom_timestamp(c: Ctx) -> Outcome {
    let cases = [
        ("2001", Timestamp::from_unix_micros(978_307_200_000_001)),
        (
            "odd-micros",
            Timestamp::from_unix_micros(1_700_000_000_123_457),
        ),
        ("epoch", Timestamp::UNIX_EPOCH),
        ("before-epoch", Timestamp::from_unix_micros(-86_400_000_001)),
        ("2100", Timestamp::from_unix_micros(4_102_444_800_999_999)),
    ];
    for (label, t) in cases {
        let s = stream(&format!("custom-ts-{label}"))?;
        let r = c
            .events()
            .append(
                &s,
                ExpectedVersion::Any,
                evs(2, "Imported", "x")?,
                AppendOptions::new().with_timestamp(t),
            )
            .await?;
        ensure!(
            r.records.iter().all(|r| r.timestamp == t),
            "{label}: timestamps in the append result"
        );
        for e in c.load_all(&s).await? {
            ensure_eq!(
                e.timestamp,
                t,
                "{label}: timestamp of version {}",
                e.version
            );
        }
    }
    Ok(())
}

async fn schema_codec(c: Ctx) -> Outcome {
    let s = stream("schema-codec")?;
    let sent = vec![
        ev("A", "1")?.with_schema_version(1).with_codec("json"),
        ev("A", "2")?.with_schema_version(7).with_codec("cbor"),
        ev("B", "3")?
            .with_schema_version(u32::MAX)
            .with_codec("protobuf"),
        ev("B", "4")?.with_codec("application/vnd.custom+json; v=2"),
    ];
    c.append(&s, ExpectedVersion::NoStream, sent.clone())
        .await?;
    let got = c.load_all(&s).await?;
    for (g, e) in got.iter().zip(&sent) {
        ensure_eq!(
            g.schema_version,
            e.schema_version(),
            "schema version of version {}",
            g.version
        );
        ensure_eq!(
            g.codec.as_str(),
            e.codec(),
            "codec of version {}",
            g.version
        );
    }
    ensure_eq!(got.len(), 4, "events loaded");
    Ok(())
}

async fn payload_max(c: Ctx) -> Outcome {
    let s = stream("payload-max")?;
    let payload: Vec<u8> = (0..MAX_PAYLOAD_BYTES).map(|i| (i % 251) as u8).collect();
    c.append(
        &s,
        ExpectedVersion::NoStream,
        vec![ev("Big", payload.clone())?],
    )
    .await?;
    let got = c.load_all(&s).await?;
    ensure_eq!(got.len(), 1, "events loaded");
    ensure!(
        got[0].payload == payload,
        "payload of {MAX_PAYLOAD_BYTES} bytes changed (got {} bytes)",
        got[0].payload.len()
    );
    Ok(())
}

async fn payload_over(c: Ctx) -> Outcome {
    let s = stream("payload-over")?;
    let events = vec![
        ev("Small", "x")?,
        ev("Big", vec![7u8; MAX_PAYLOAD_BYTES + 1])?,
    ];
    let e = expect_err!(
        c.append(&s, ExpectedVersion::Any, events).await,
        StoreError::Validation(ValidationError::PayloadTooLarge { .. }),
        "payload of {} bytes",
        MAX_PAYLOAD_BYTES + 1
    );
    if let StoreError::Validation(ValidationError::PayloadTooLarge { index, len }) = e {
        ensure_eq!(
            (index, len),
            (1, MAX_PAYLOAD_BYTES + 1),
            "(index, len) in the error"
        );
    }
    ensure_eq!(
        c.load_all(&s).await?.len(),
        0,
        "events after the rejected batch"
    );
    Ok(())
}

async fn empty_payload(c: Ctx) -> Outcome {
    let s = stream("empty-payload")?;
    c.append(
        &s,
        ExpectedVersion::Any,
        vec![ev("Empty", Vec::new())?, ev("Empty", "")?],
    )
    .await?;
    let got = c.load_all(&s).await?;
    ensure_eq!(got.len(), 2, "events loaded");
    ensure!(
        got.iter().all(|e| e.payload.is_empty()),
        "empty payloads came back non-empty"
    );
    Ok(())
}

async fn binary_payload(c: Ctx) -> Outcome {
    let s = stream("binary")?;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let payloads: Vec<Vec<u8>> = vec![
        all_bytes.clone(),
        all_bytes.into_iter().rev().collect(),
        vec![0],
        vec![0, 0, 0],
        vec![0xC3, 0x28, 0xA0, 0xA1],
        vec![0xFF, 0xFE, 0xFD],
        vec![0xEF, 0xBB, 0xBF, b'{', b'}'],
        b"\\u0000 not a NUL".to_vec(),
    ];
    let events = payloads
        .iter()
        .map(|p| ev("Binary", p.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    c.append(&s, ExpectedVersion::Any, events).await?;
    let got: Vec<Vec<u8>> = c
        .load_all(&s)
        .await?
        .into_iter()
        .map(|e| e.payload)
        .collect();
    ensure_eq!(got, payloads, "binary payloads");
    Ok(())
}

async fn unicode_payload(c: Ctx) -> Outcome {
    let s = stream("unicode")?;
    let texts = [
        "héllo wörld",
        "日本語のテキスト",
        "🎉🚀👍🏽",
        "\u{202E}rtl",
        "{\"k\":\"ü\"}",
    ];
    let events = texts
        .iter()
        .map(|t| ev("Text", *t))
        .collect::<Result<Vec<_>, _>>()?;
    c.append(&s, ExpectedVersion::Any, events).await?;
    let got: Vec<String> = c
        .load_all(&s)
        .await?
        .into_iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    ensure_eq!(got, texts.to_vec(), "unicode payloads");
    Ok(())
}

async fn many_streams(c: Ctx) -> Outcome {
    let n = 200;
    for i in 0..n {
        let s = stream(&format!("many-{i}"))?;
        c.append(&s, ExpectedVersion::NoStream, evs(1 + i % 3, "E", "x")?)
            .await?;
    }
    for i in 0..n {
        let s = stream(&format!("many-{i}"))?;
        ensure_eq!(c.load_all(&s).await?.len(), 1 + i % 3, "events in {s}");
    }
    Ok(())
}

async fn many_events(c: Ctx) -> Outcome {
    let s = stream("many-events")?;
    for b in 0..4u64 {
        c.append(
            &s,
            ExpectedVersion::Exact(Version::new(b * 500)),
            evs(500, "E", &format!("b{b}"))?,
        )
        .await?;
    }
    let got = c.load_all(&s).await?;
    ensure_eq!(got.len(), 2000, "events loaded");
    ensure!(contiguous_from_one(&got), "versions not contiguous");
    ensure_eq!(
        got[1999].payload.as_slice(),
        b"b3-499".as_slice(),
        "last payload"
    );
    Ok(())
}

async fn zero_events(c: Ctx) -> Outcome {
    let s = stream("zero-events")?;
    for exp in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
        expect_err!(
            c.append(&s, exp, Vec::new()).await,
            StoreError::Validation(ValidationError::NoEvents),
            "append of no events expecting {exp}"
        );
    }
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::ZERO,
        "version after empty appends"
    );
    Ok(())
}

fn tiny(n: usize) -> Result<Vec<NewEvent>, super::Failure> {
    let t = ty("Tiny")?;
    Ok((0..n)
        .map(|i| NewEvent::new(t.clone(), (i as u32).to_le_bytes().to_vec()))
        .collect())
}

async fn max_events(c: Ctx) -> Outcome {
    let s = stream("max-events")?;
    let r = c
        .append(&s, ExpectedVersion::NoStream, tiny(MAX_EVENTS_PER_APPEND)?)
        .await?;
    ensure_eq!(r.records.len(), MAX_EVENTS_PER_APPEND, "records returned");
    let got = c.load_all(&s).await?;
    ensure_eq!(got.len(), MAX_EVENTS_PER_APPEND, "events loaded");
    ensure!(contiguous_from_one(&got), "versions not contiguous");
    Ok(())
}

async fn too_many_events(c: Ctx) -> Outcome {
    let s = stream("too-many-events")?;
    expect_err!(
        c.append(&s, ExpectedVersion::Any, tiny(MAX_EVENTS_PER_APPEND + 1)?)
            .await,
        StoreError::Validation(ValidationError::TooManyEvents { .. }),
        "append of {} events",
        MAX_EVENTS_PER_APPEND + 1
    );
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::ZERO,
        "version after the rejected append"
    );
    Ok(())
}

async fn append_too_large(c: Ctx) -> Outcome {
    let s = stream("append-too-large")?;
    let n = MAX_APPEND_BYTES / MAX_PAYLOAD_BYTES + 1;
    let events = (0..n)
        .map(|_| ev("Big", vec![1u8; MAX_PAYLOAD_BYTES]))
        .collect::<Result<Vec<_>, _>>()?;
    expect_err!(
        c.append(&s, ExpectedVersion::Any, events).await,
        StoreError::Validation(ValidationError::AppendTooLarge { .. }),
        "append of {n} maximal payloads"
    );
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::ZERO,
        "version after the rejected append"
    );
    Ok(())
}

async fn zero_schema(c: Ctx) -> Outcome {
    let s = stream("zero-schema")?;
    expect_err!(
        c.append(
            &s,
            ExpectedVersion::Any,
            vec![ev("E", "x")?.with_schema_version(0)]
        )
        .await,
        StoreError::Validation(ValidationError::ZeroSchemaVersion),
        "schema version 0"
    );
    Ok(())
}

async fn bad_codec(c: Ctx) -> Outcome {
    let s = stream("bad-codec")?;
    for codec in ["", "a\0b"] {
        expect_err!(
            c.append(
                &s,
                ExpectedVersion::Any,
                vec![ev("E", "x")?.with_codec(codec)]
            )
            .await,
            StoreError::Validation(ValidationError::Name(_)),
            "codec name {codec:?}"
        );
    }
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::ZERO,
        "version after the rejected appends"
    );
    Ok(())
}
