//! Stream ids, stream types and event types: unusual names round-trip
//! exactly and stay isolated; invalid names give typed errors.

use eskit_core::limits::MAX_NAME_BYTES;
use eskit_core::{
    error::{StoreError, ValidationError},
    event::{
        EventType, ExpectedVersion, InvalidName, InvalidNameReason, NameKind, StreamId, StreamName,
        StreamType, Version,
    },
    store::EventStore,
};

use super::{
    Ctx, EVENTS, Failure, GLOBAL, Outcome, Scenario, ensure, ensure_eq, ev, scenario_list,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    let mut v = scenario_list![EVENTS;
        "names.special_stream_ids_round_trip" => special_ids,
        "names.special_stream_types_round_trip" => special_types,
        "names.special_event_types_round_trip" => special_event_types,
        "names.nfc_and_nfd_are_distinct" => nfc_nfd,
        "names.case_sensitive" => case_sensitive,
        "names.prefixes_isolated" => prefixes,
        "names.type_id_separator_no_collision" => separator_collision,
        "names.wildcard_ids_isolated" => wildcards,
        "names.max_length_stream_id" => max_id,
        "names.max_length_stream_type" => max_type,
        "names.max_length_event_type" => max_event_type,
        "names.invalid_names_rejected" => invalid_names,
    ];
    v.extend(scenario_list![GLOBAL;
        "names.special_stream_ids_in_global_read" => special_ids_global,
    ]);
    v
}

/// Names that are valid and must round-trip byte for byte: the malformed
/// names of RELIABILITY.md that the core accepts, plus separators, wildcards
/// of SQL, NATS and shells, control characters and unicode.
fn special_names() -> Vec<String> {
    [
        "order-123",
        "snake_case_id",
        "a/b",
        "a/b/c/",
        "a.b",
        "..",
        "../x",
        "a\\b",
        "*",
        ">",
        "a.*.>",
        "$JS.API",
        "CON",
        "NUL",
        " ",
        "  padded  ",
        "'; DROP TABLE events;--",
        "\"quoted\"",
        "%",
        "_",
        "a:b#c?d=e&f",
        "tab\there",
        "new\nline",
        "\u{202E}reversed",
        "\u{FEFF}bom",
        "日本語-ストリーム",
        "emoji-🎉🚀",
        "0190f7a2-6c1e-7b3d-9f00-5d2c1a0b9e11",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

async fn round_trip_all(c: &Ctx, streams: &[StreamName]) -> Outcome {
    for (i, s) in streams.iter().enumerate() {
        c.append(
            s,
            ExpectedVersion::NoStream,
            vec![ev("Named", format!("{i}"))?],
        )
        .await
        .map_err(|e| {
            Failure(format!(
                "append to {s:?}: {}",
                eskit_core::error::error_chain(&e)
            ))
        })?;
    }
    for (i, s) in streams.iter().enumerate() {
        let got = c.load_all(s).await?;
        ensure_eq!(got.len(), 1, "events loaded from {s:?}");
        ensure_eq!(&got[0].stream, s, "stream of the event loaded from {s:?}");
        ensure_eq!(
            got[0].payload,
            format!("{i}").into_bytes(),
            "payload loaded from {s:?}"
        );
        ensure_eq!(
            c.events().stream_version(s).await?,
            Version::new(1),
            "version of {s:?}"
        );
    }
    Ok(())
}

async fn special_ids(c: Ctx) -> Outcome {
    let streams = special_names()
        .into_iter()
        .map(|n| StreamName::new("named", n))
        .collect::<Result<Vec<_>, _>>()?;
    round_trip_all(&c, &streams).await
}

async fn special_types(c: Ctx) -> Outcome {
    let streams = special_names()
        .into_iter()
        .map(|n| StreamName::new(n, "id-1"))
        .collect::<Result<Vec<_>, _>>()?;
    round_trip_all(&c, &streams).await
}

async fn special_event_types(c: Ctx) -> Outcome {
    let s = StreamName::new("named", "event-types")?;
    let names = special_names();
    let events = names
        .iter()
        .map(|n| ev(n, n.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    c.append(&s, ExpectedVersion::NoStream, events).await?;
    let got = c.load_all(&s).await?;
    let types: Vec<&str> = got.iter().map(|e| e.event_type.as_str()).collect();
    let want: Vec<&str> = names.iter().map(String::as_str).collect();
    ensure_eq!(types, want, "event types loaded back");
    for n in &names {
        let only = c
            .events()
            .load(
                &s,
                eskit_core::store::LoadOptions::new()
                    .with_event_types([EventType::new(n.clone())?]),
            )
            .await?;
        ensure_eq!(only.len(), 1, "events when filtering on type {n:?}");
    }
    Ok(())
}

async fn distinct(c: &Ctx, streams: &[StreamName]) -> Outcome {
    // Stream i gets i + 1 events, so any mix-up shows in the counts.
    for (i, s) in streams.iter().enumerate() {
        let events = (0..=i)
            .map(|_| ev("E", s.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        c.append(s, ExpectedVersion::NoStream, events)
            .await
            .map_err(|e| {
                Failure(format!(
                    "first append to {s:?}: {}",
                    eskit_core::error::error_chain(&e)
                ))
            })?;
    }
    for (i, s) in streams.iter().enumerate() {
        let got = c.load_all(s).await?;
        ensure_eq!(got.len(), i + 1, "events in {s:?}");
        ensure!(
            got.iter().all(|e| &e.stream == s),
            "{s:?} returned another stream's events"
        );
    }
    Ok(())
}

async fn nfc_nfd(c: Ctx) -> Outcome {
    // "é" precomposed (NFC) and as e + combining acute (NFD).
    let streams = [
        StreamName::new("named", "caf\u{e9}")?,
        StreamName::new("named", "cafe\u{301}")?,
        StreamName::new("caf\u{e9}", "x")?,
        StreamName::new("cafe\u{301}", "x")?,
    ];
    distinct(&c, &streams).await
}

async fn case_sensitive(c: Ctx) -> Outcome {
    let streams = [
        StreamName::new("named", "Acc-1")?,
        StreamName::new("named", "acc-1")?,
        StreamName::new("named", "ACC-1")?,
        StreamName::new("Named", "acc-1")?,
    ];
    distinct(&c, &streams).await
}

async fn prefixes(c: Ctx) -> Outcome {
    let streams = ["p", "p-1", "p/1", "p.1", "p1", "p ", "pp"]
        .into_iter()
        .map(|id| StreamName::new("named", id))
        .collect::<Result<Vec<_>, _>>()?;
    distinct(&c, &streams).await
}

async fn separator_collision(c: Ctx) -> Outcome {
    let mut streams = Vec::new();
    for sep in ["/", ".", ":", "-", "_", "|", "\u{1f}"] {
        streams.push(StreamName::new(format!("a{sep}b"), "c")?);
        streams.push(StreamName::new("a", format!("b{sep}c"))?);
    }
    distinct(&c, &streams).await
}

async fn wildcards(c: Ctx) -> Outcome {
    let streams = [
        "abc", "%", "a%", "_", "a_c", "*", ">", "x.y", "x.*", "[ab]c", "?", ".*",
    ]
    .into_iter()
    .map(|id| StreamName::new("named", id))
    .collect::<Result<Vec<_>, _>>()?;
    distinct(&c, &streams).await
}

async fn max_id(c: Ctx) -> Outcome {
    let ascii = "i".repeat(MAX_NAME_BYTES);
    let wide = "\u{1D11E}".repeat(MAX_NAME_BYTES / 4);
    ensure_eq!(wide.len(), MAX_NAME_BYTES, "test name length");
    let streams = [
        StreamName::new("named", ascii)?,
        StreamName::new("named", wide)?,
    ];
    round_trip_all(&c, &streams).await
}

async fn max_type(c: Ctx) -> Outcome {
    let ascii = "t".repeat(MAX_NAME_BYTES);
    let wide = "é".repeat(MAX_NAME_BYTES / 2);
    let streams = [
        StreamName::new(ascii.clone(), "x")?,
        StreamName::new(wide, "x")?,
        StreamName::new(ascii, "i".repeat(MAX_NAME_BYTES))?,
    ];
    round_trip_all(&c, &streams).await
}

async fn max_event_type(c: Ctx) -> Outcome {
    let s = StreamName::new("named", "long-event-type")?;
    let name = "E".repeat(MAX_NAME_BYTES);
    c.append(&s, ExpectedVersion::NoStream, vec![ev(&name, "x")?])
        .await?;
    let got = c.load_all(&s).await?;
    ensure_eq!(
        got.first().map(|e| e.event_type.as_str()),
        Some(name.as_str()),
        "event type"
    );
    Ok(())
}

fn check_invalid<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, InvalidName>,
    kind: NameKind,
    reason: InvalidNameReason,
) -> Outcome {
    match r {
        Ok(v) => Err(Failure(format!(
            "{what}: expected InvalidName({reason:?}), got Ok({})",
            super::short(&v)
        ))),
        Err(e) => {
            ensure_eq!(e.kind(), kind, "{what}: kind");
            ensure_eq!(e.reason(), reason, "{what}: reason");
            let store: StoreError = e.clone().into();
            ensure!(
                matches!(store, StoreError::Validation(ValidationError::Name(_))),
                "{what}: as a store error it is {store:?}, not Validation(Name)"
            );
            Ok(())
        }
    }
}

async fn invalid_names(_c: Ctx) -> Outcome {
    let too_long = "x".repeat(MAX_NAME_BYTES + 1);
    let huge = "x".repeat(10 * 1024);
    let wide_too_long = "é".repeat(MAX_NAME_BYTES / 2) + "x";
    let cases: [(&str, InvalidNameReason); 5] = [
        ("", InvalidNameReason::Empty),
        (
            &too_long,
            InvalidNameReason::TooLong {
                len: MAX_NAME_BYTES + 1,
            },
        ),
        (
            &wide_too_long,
            InvalidNameReason::TooLong {
                len: MAX_NAME_BYTES + 1,
            },
        ),
        (&huge, InvalidNameReason::TooLong { len: 10 * 1024 }),
        ("x\0y", InvalidNameReason::ContainsNul),
    ];
    for (name, reason) in cases {
        let label = super::short(&name);
        check_invalid(
            &format!("stream id {label}"),
            StreamId::new(name),
            NameKind::StreamId,
            reason,
        )?;
        check_invalid(
            &format!("stream type {label}"),
            StreamType::new(name),
            NameKind::StreamType,
            reason,
        )?;
        check_invalid(
            &format!("event type {label}"),
            EventType::new(name),
            NameKind::EventType,
            reason,
        )?;
        check_invalid(
            &format!("stream (id {label})"),
            StreamName::new("ok", name),
            NameKind::StreamId,
            reason,
        )?;
    }
    Ok(())
}

async fn special_ids_global(c: Ctx) -> Outcome {
    let streams = special_names()
        .into_iter()
        .map(|n| StreamName::new("named", n))
        .collect::<Result<Vec<_>, _>>()?;
    for s in &streams {
        c.append(s, ExpectedVersion::NoStream, vec![ev("Named", "x")?])
            .await?;
    }
    let all = c.read_everything().await?;
    let got: Vec<&StreamName> = all.iter().map(|e| &e.stream).collect();
    let want: Vec<&StreamName> = streams.iter().collect();
    ensure_eq!(got, want, "streams of the global read, in append order");
    Ok(())
}
