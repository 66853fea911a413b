//! Metadata round trips, batch application and bounds.

use eskit_core::limits::{MAX_METADATA_BYTES, MAX_METADATA_ENTRIES};
use eskit_core::{
    error::{StoreError, ValidationError},
    event::{ExpectedVersion, Metadata, Principal, PrincipalKind, RawEvent, Version},
    store::{AppendOptions, EventStore},
};

use super::{
    Ctx, EVENTS, Failure, Outcome, Scenario, ensure, ensure_eq, evs, expect_err, scenario_list,
    stream,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![EVENTS;
        "metadata.round_trip" => round_trip,
        "metadata.empty_round_trip" => empty,
        "metadata.all_principal_kinds" => principal_kinds,
        "metadata.other_kind_with_a_known_name" => other_known_kind,
        "metadata.max_entries" => max_entries,
        "metadata.unicode" => unicode,
        "metadata.special_characters_in_values" => special_values,
        "metadata.nul_in_values" => nul_values,
        "metadata.special_characters_in_keys" => special_keys,
        "metadata.applied_to_every_event_of_batch" => batch,
        "metadata.independent_per_append" => per_append,
        "metadata.at_max_bytes_accepted" => at_max_bytes,
        "metadata.too_many_entries_rejected" => too_many_entries,
        "metadata.too_large_rejected" => too_large,
        "metadata.invalid_key_rejected" => invalid_key,
    ]
}

async fn append_with(c: &Ctx, id: &str, n: usize, md: Metadata) -> Result<Vec<RawEvent>, Failure> {
    let s = stream(id)?;
    c.events()
        .append(
            &s,
            ExpectedVersion::Any,
            evs(n, "WithMeta", id)?,
            AppendOptions::new().with_metadata(md),
        )
        .await
        .map_err(|e| {
            Failure(format!(
                "append with metadata: {}",
                eskit_core::error::error_chain(&e)
            ))
        })?;
    c.load_all(&s).await
}

async fn check_round_trip(c: &Ctx, id: &str, md: Metadata) -> Outcome {
    let got = append_with(c, id, 1, md.clone()).await?;
    ensure_eq!(got.len(), 1, "events loaded");
    ensure_eq!(got[0].metadata, md, "metadata loaded back");
    Ok(())
}

async fn round_trip(c: Ctx) -> Outcome {
    let md = Metadata::new()
        .with_correlation_id("corr-1")
        .with_causation_id("cause-1")
        .with_initiator(Principal::user("alice"))
        .with_originator(Principal::service("billing"))
        .with_extra("tenant", "acme")
        .with_extra("trace", "00-abc-01");
    check_round_trip(&c, "md-round-trip", md).await
}

async fn empty(c: Ctx) -> Outcome {
    let got = append_with(&c, "md-empty", 1, Metadata::new()).await?;
    ensure!(
        got[0].metadata.is_empty(),
        "metadata of an event appended without any: {:?}",
        got[0].metadata
    );
    Ok(())
}

async fn principal_kinds(c: Ctx) -> Outcome {
    let kinds = [
        PrincipalKind::User,
        PrincipalKind::Automation,
        PrincipalKind::Service,
        PrincipalKind::System,
        PrincipalKind::Scheduler,
        PrincipalKind::Api,
        PrincipalKind::Other("robot".into()),
    ];
    for (i, k) in kinds.into_iter().enumerate() {
        let md = Metadata::new()
            .with_initiator(Principal::new(k.clone(), format!("id-{i}")))
            .with_originator(Principal::new(k, format!("origin-{i}")));
        check_round_trip(&c, &format!("md-principal-{i}"), md).await?;
    }
    Ok(())
}

async fn other_known_kind(c: Ctx) -> Outcome {
    // `Other("user")` names a known kind: it is one value with `User`, so
    // it reads back the same from every backend.
    let given = Principal::new(PrincipalKind::Other("user".into()), "ada");
    ensure_eq!(
        given.kind(),
        &PrincipalKind::User,
        "kind of a principal built as Other(\"user\")"
    );
    let md = Metadata::new().with_initiator(given);
    let got = append_with(&c, "md-other-known", 1, md.clone()).await?;
    ensure_eq!(got.len(), 1, "events loaded");
    ensure_eq!(got[0].metadata, md, "metadata loaded back");
    ensure_eq!(
        got[0].metadata.initiator().map(Principal::kind),
        Some(&PrincipalKind::User),
        "kind of the initiator loaded back"
    );
    Ok(())
}

async fn max_entries(c: Ctx) -> Outcome {
    let mut md = Metadata::new();
    for i in 0..MAX_METADATA_ENTRIES {
        md = md.with_extra(format!("key-{i:03}"), format!("value-{i}"));
    }
    check_round_trip(&c, "md-max-entries", md).await
}

async fn unicode(c: Ctx) -> Outcome {
    let md = Metadata::new()
        .with_correlation_id("相関-🔗")
        .with_initiator(Principal::user("Zoë Ångström"))
        .with_extra("greeting", "こんにちは世界")
        .with_extra("rtl", "\u{202E}مرحبا")
        .with_extra("combining", "e\u{301}");
    check_round_trip(&c, "md-unicode", md).await
}

async fn special_values(c: Ctx) -> Outcome {
    let md = Metadata::new()
        .with_extra("empty", "")
        .with_extra("quotes", "\"'`")
        .with_extra("backslash", "\\\\n not a newline")
        .with_extra("json", "{\"a\":[1,2]}")
        .with_extra("control", "\n\r\t\u{1}\u{7f}")
        .with_extra("html", "</script><!--")
        .with_extra("sql", "'; DROP TABLE events;--");
    check_round_trip(&c, "md-special", md).await
}

async fn nul_values(c: Ctx) -> Outcome {
    // NUL is refused in every metadata value (PostgreSQL jsonb cannot hold
    // \u0000 text), so every backend rejects it the same way.
    for (label, md) in [
        (
            "correlation",
            Metadata::new().with_correlation_id("corr\0id"),
        ),
        ("extra-value", Metadata::new().with_extra("nul", "a\0b")),
    ] {
        let e = rejected(&c, &format!("md-nul-{label}"), md).await?;
        expect_err!(
            Err::<(), _>(e),
            StoreError::Validation(ValidationError::MetadataContainsNul),
            "append with NUL in the {label}"
        );
    }
    Ok(())
}

async fn special_keys(c: Ctx) -> Outcome {
    let md = Metadata::new()
        .with_extra("a.b", "1")
        .with_extra("$key", "2")
        .with_extra("key with space", "3")
        .with_extra("ключ", "4")
        .with_extra("k".repeat(eskit_core::limits::MAX_NAME_BYTES), "5");
    check_round_trip(&c, "md-keys", md).await
}

async fn batch(c: Ctx) -> Outcome {
    let md = Metadata::new()
        .with_correlation_id("batch-corr")
        .with_extra("k", "v");
    let got = append_with(&c, "md-batch", 25, md.clone()).await?;
    ensure_eq!(got.len(), 25, "events loaded");
    for e in &got {
        ensure_eq!(e.metadata, md, "metadata of event {}", e.version);
    }
    Ok(())
}

async fn per_append(c: Ctx) -> Outcome {
    let s = stream("md-per-append")?;
    for i in 0..3 {
        let md = Metadata::new().with_extra("append", format!("{i}"));
        c.events()
            .append(
                &s,
                ExpectedVersion::Any,
                evs(2, "E", "x")?,
                AppendOptions::new().with_metadata(md),
            )
            .await?;
    }
    c.append(&s, ExpectedVersion::Any, evs(1, "E", "none")?)
        .await?;
    let got = c.load_all(&s).await?;
    let tags: Vec<Option<&str>> = got
        .iter()
        .map(|e| e.metadata.extra_value("append"))
        .collect();
    ensure_eq!(
        tags,
        vec![
            Some("0"),
            Some("0"),
            Some("1"),
            Some("1"),
            Some("2"),
            Some("2"),
            None
        ],
        "per-event metadata"
    );
    Ok(())
}

async fn at_max_bytes(c: Ctx) -> Outcome {
    let value = "v".repeat(MAX_METADATA_BYTES - 1);
    let md = Metadata::new().with_extra("k", value);
    ensure_eq!(md.size_bytes(), MAX_METADATA_BYTES, "test metadata size");
    check_round_trip(&c, "md-max-bytes", md).await
}

async fn rejected(c: &Ctx, id: &str, md: Metadata) -> Result<StoreError, Failure> {
    let s = stream(id)?;
    let r = c
        .events()
        .append(
            &s,
            ExpectedVersion::Any,
            evs(1, "E", "x")?,
            AppendOptions::new().with_metadata(md),
        )
        .await;
    let e = match r {
        Ok(v) => {
            return Err(Failure(format!(
                "expected a validation error, got Ok({})",
                super::short(&v)
            )));
        }
        Err(e) => e,
    };
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::ZERO,
        "version after a rejected append"
    );
    Ok(e)
}

async fn too_many_entries(c: Ctx) -> Outcome {
    let mut md = Metadata::new();
    for i in 0..=MAX_METADATA_ENTRIES {
        md = md.with_extra(format!("key-{i:03}"), "v");
    }
    let e = rejected(&c, "md-too-many", md).await?;
    expect_err!(
        Err::<(), _>(e),
        StoreError::Validation(ValidationError::TooManyMetadataEntries { .. }),
        "append with {} metadata entries",
        MAX_METADATA_ENTRIES + 1
    );
    Ok(())
}

async fn too_large(c: Ctx) -> Outcome {
    let md = Metadata::new().with_extra("k", "v".repeat(MAX_METADATA_BYTES));
    let e = rejected(&c, "md-too-large", md).await?;
    expect_err!(
        Err::<(), _>(e),
        StoreError::Validation(ValidationError::MetadataTooLarge { .. }),
        "append with {} bytes of metadata",
        MAX_METADATA_BYTES + 1
    );
    Ok(())
}

async fn invalid_key(c: Ctx) -> Outcome {
    for (label, key) in [("empty", String::new()), ("NUL", "a\0b".to_owned())] {
        let e = rejected(
            &c,
            &format!("md-bad-key-{label}"),
            Metadata::new().with_extra(key, "v"),
        )
        .await?;
        expect_err!(
            Err::<(), _>(e),
            StoreError::Validation(ValidationError::Name(_)),
            "append with a metadata key that is {label}"
        );
    }
    Ok(())
}
