//! Tenants: a tenant's handles see and write only its own streams, reads,
//! checkpoints and snapshots; the unscoped handle only the streams of no
//! tenant; a write to another tenant's stream is refused and writes
//! nothing.

use std::collections::BTreeMap;

use eskit_core::{
    dcb::{AppendCondition, EventQuery, EventQueryReader, QueryItem, QueryOptions},
    error::StoreError,
    event::{ExpectedVersion, GlobalCursor, Position, RawEvent, Timestamp, Version},
    store::{
        AppendOptions, CheckpointStore, EventStore, GlobalReader, Snapshot, SnapshotStore,
        StreamLifecycle,
    },
};

use super::{
    Capability, Context, Ctx, Failure, Outcome, Scenario, dcb::tag, ensure, ensure_eq, ev,
    scenario_list, stream,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    let mut all = scenario_list![TENANTS;
        "tenants.streams_are_invisible_across_tenants" => invisible,
        "tenants.writes_to_another_tenants_stream_are_refused" => refused,
        "tenants.global_reads_see_one_tenant" => global_reads,
        "tenants.concurrent_tenants_never_cross" => concurrent,
    ];
    all.extend(scenario_list![TENANTS_LIFECYCLE;
        "tenants.lifecycle_of_another_tenants_stream_is_not_found" => lifecycle,
    ]);
    all.extend(scenario_list![TENANTS_QUERIES;
        "tenants.queries_and_conditions_see_one_tenant" => queries,
    ]);
    all.extend(scenario_list![TENANTS_STATE;
        "tenants.checkpoints_and_snapshots_are_per_tenant" => state,
    ]);
    all
}

const TENANTS: &[Capability] = &[
    Capability::Events,
    Capability::GlobalReads,
    Capability::Tenants,
];
const TENANTS_LIFECYCLE: &[Capability] = &[
    Capability::Events,
    Capability::Lifecycle,
    Capability::Tenants,
];
const TENANTS_QUERIES: &[Capability] =
    &[Capability::Events, Capability::Queries, Capability::Tenants];
const TENANTS_STATE: &[Capability] = &[
    Capability::Events,
    Capability::Checkpoints,
    Capability::Snapshots,
    Capability::Tenants,
];

fn is_wrong_tenant<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::WrongTenant { .. }))
}

/// Fails unless every event carries `tenant` (`None`: no tenant).
fn all_of(events: &[RawEvent], tenant: Option<&str>, what: &str) -> Outcome {
    if let Some(e) = events
        .iter()
        .find(|e| e.tenant.as_ref().map(|t| t.as_str()) != tenant)
    {
        return Err(Failure(format!(
            "{what}: the event at position {} of {} carries tenant {:?}, expected {tenant:?}",
            e.position,
            e.stream,
            e.tenant.as_ref().map(|t| t.as_str())
        )));
    }
    Ok(())
}

async fn invisible(c: Ctx) -> Outcome {
    let (acme, globex) = (c.tenant("acme")?, c.tenant("globex")?);
    let s = stream("tenant-invisible")?;
    let r = acme
        .append(&s, ExpectedVersion::NoStream, vec![ev("Placed", "a1")?])
        .await
        .ctx("acme's first append")?;
    ensure_eq!(
        r.tenant.as_ref().map(|t| t.as_str()),
        Some("acme"),
        "the tenant an append reports"
    );
    let mine = acme.load_all(&s).await?;
    ensure_eq!(mine.len(), 1, "events acme loads from its stream");
    all_of(&mine, Some("acme"), "acme's load")?;
    for (who, other) in [("globex", &globex), ("the unscoped handle", &c)] {
        let seen = other.load_all(&s).await?;
        ensure!(
            seen.is_empty(),
            "{who} loaded {} of acme's events",
            seen.len()
        );
        let v = other
            .events()
            .stream_version(&s)
            .await
            .ctx("stream_version")?;
        ensure_eq!(v, Version::ZERO, "the version {who} sees of acme's stream");
        let key = other
            .events()
            .find_idempotent(&s, "k")
            .await
            .ctx("find_idempotent")?;
        ensure!(
            key.is_none(),
            "{who} found an idempotency key of acme's stream"
        );
    }
    Ok(())
}

async fn refused(c: Ctx) -> Outcome {
    let (acme, globex) = (c.tenant("acme")?, c.tenant("globex")?);
    let theirs = stream("tenant-refused-acme")?;
    let plain = stream("tenant-refused-plain")?;
    acme.append(
        &theirs,
        ExpectedVersion::NoStream,
        vec![ev("Placed", "a1")?],
    )
    .await
    .ctx("acme's append")?;
    c.append(&plain, ExpectedVersion::NoStream, vec![ev("Placed", "p1")?])
        .await
        .ctx("the unscoped append")?;
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(Version::new(1)),
    ] {
        let r = globex
            .append(&theirs, expected, vec![ev("Stolen", "g")?])
            .await;
        ensure!(
            is_wrong_tenant(&r),
            "globex appending to acme's stream ({expected:?}): expected WrongTenant, got {r:?}"
        );
        let r = c.append(&theirs, expected, vec![ev("Stolen", "u")?]).await;
        ensure!(
            is_wrong_tenant(&r),
            "the unscoped handle appending to acme's stream ({expected:?}): expected \
             WrongTenant, got {r:?}"
        );
    }
    let r = acme
        .append(&plain, ExpectedVersion::Any, vec![ev("Stolen", "a")?])
        .await;
    ensure!(
        is_wrong_tenant(&r),
        "acme appending to a stream of no tenant: expected WrongTenant, got {r:?}"
    );
    // An idempotent retry through the wrong tenant is refused too, not
    // reported as the owner's earlier append.
    let keyed = AppendOptions::new().with_idempotency_key("tenant-key");
    acme.events()
        .append(
            &theirs,
            ExpectedVersion::Any,
            vec![ev("Keyed", "k")?],
            keyed.clone(),
        )
        .await
        .ctx("acme's keyed append")?;
    let r = globex
        .events()
        .append(
            &theirs,
            ExpectedVersion::Any,
            vec![ev("Keyed", "k")?],
            keyed,
        )
        .await;
    ensure!(
        is_wrong_tenant(&r),
        "globex retrying acme's idempotency key: expected WrongTenant, got {r:?}"
    );
    // Nothing was written by the refused appends.
    let kept: Vec<Vec<u8>> = acme
        .load_all(&theirs)
        .await?
        .into_iter()
        .map(|e| e.payload)
        .collect();
    ensure_eq!(
        kept,
        vec![b"a1".to_vec(), b"k".to_vec()],
        "acme's stream after refused appends"
    );
    let kept = c.load_all(&plain).await?;
    ensure_eq!(kept.len(), 1, "the plain stream after refused appends");
    Ok(())
}

async fn global_reads(c: Ctx) -> Outcome {
    let (acme, globex) = (c.tenant("acme")?, c.tenant("globex")?);
    let handles = [(Some("acme"), &acme), (Some("globex"), &globex), (None, &c)];
    let mut expected: BTreeMap<Option<&str>, Vec<Vec<u8>>> = BTreeMap::new();
    // Interleaved: each round appends once per handle, to streams of its own.
    for round in 0..20 {
        for (i, (tenant, h)) in handles.iter().enumerate() {
            let s = stream(&format!("tenant-read-{i}-{}", round % 3))?;
            let payload = format!("{}-{round}", tenant.unwrap_or("none"));
            h.append(&s, ExpectedVersion::Any, vec![ev("Tick", payload.clone())?])
                .await
                .ctx("an interleaved append")?;
            expected
                .entry(*tenant)
                .or_default()
                .push(payload.into_bytes());
        }
    }
    for (tenant, h) in handles {
        let all = h.read_everything().await?;
        all_of(&all, tenant, "a global read")?;
        let payloads: Vec<Vec<u8>> = all.iter().map(|e| e.payload.clone()).collect();
        ensure_eq!(
            Some(&payloads),
            expected.get(&tenant),
            "what {tenant:?} reads of the global log, in order"
        );
        ensure!(
            all.windows(2).all(|w| w[0].cursor() < w[1].cursor()),
            "{tenant:?}'s global read is not in cursor order"
        );
    }
    // A read past the tenant's last event, from another tenant's cursor,
    // returns nothing and moves on.
    let globex_last = globex
        .read_everything()
        .await?
        .last()
        .map(RawEvent::cursor)
        .ok_or_else(|| Failure("globex read no events".into()))?;
    let after = acme
        .global()?
        .read(eskit_core::store::ReadOptions::from_start(100).with_after(globex_last))
        .await
        .ctx("acme reading after globex's cursor")?;
    all_of(
        &after.events,
        Some("acme"),
        "a read after another tenant's cursor",
    )?;
    ensure!(
        after.next >= globex_last,
        "a read's next cursor went back: {:?} < {:?}",
        after.next,
        globex_last
    );
    Ok(())
}

async fn concurrent(c: Ctx) -> Outcome {
    const WRITERS: usize = 3;
    const APPENDS: usize = 40;
    let names = ["acme", "globex"];
    let gate = c.gate(names.len() * WRITERS);
    let mut tasks = Vec::new();
    for name in names {
        let t = c.tenant(name)?;
        for w in 0..WRITERS {
            let (events, gate) = (t.events().clone(), gate.clone());
            tasks.push(c.spawn(async move {
                gate.wait().await;
                for i in 0..APPENDS {
                    let s = stream(&format!("tenant-race-{name}-{w}"))?;
                    events
                        .append(
                            &s,
                            ExpectedVersion::Any,
                            vec![ev("Tick", format!("{name}/{w}/{i}"))?],
                            AppendOptions::new(),
                        )
                        .await
                        .ctx("a racing append")?;
                }
                Ok::<(), Failure>(())
            }));
        }
    }
    for t in tasks {
        t.await??;
    }
    for name in names {
        let all = c.tenant(name)?.read_everything().await?;
        all_of(&all, Some(name), "a read after racing tenants")?;
        ensure_eq!(all.len(), WRITERS * APPENDS, "events {name} reads");
        let crossed = all
            .iter()
            .filter(|e| !e.payload.starts_with(format!("{name}/").as_bytes()))
            .count();
        ensure_eq!(crossed, 0, "events of another tenant in {name}'s read");
    }
    let plain = c.read_everything().await?;
    ensure!(
        plain.is_empty(),
        "the unscoped handle read {} tenant events",
        plain.len()
    );
    Ok(())
}

async fn lifecycle(c: Ctx) -> Outcome {
    let (acme, globex) = (c.tenant("acme")?, c.tenant("globex")?);
    let s = stream("tenant-lifecycle")?;
    acme.append(&s, ExpectedVersion::NoStream, vec![ev("Placed", "a")?])
        .await
        .ctx("acme's append")?;
    let l = globex.lifecycle()?;
    let status = l.status(&s).await.ctx("globex's status")?;
    ensure_eq!(
        status.state,
        eskit_core::store::StreamState::NotFound,
        "the state globex sees of acme's stream"
    );
    for (what, r) in [
        ("tombstone", l.tombstone(&s, "no").await),
        ("archive", l.archive(&s, "no").await),
        ("delete", l.delete(&s).await),
    ] {
        ensure!(r.is_err(), "globex could {what} acme's stream");
    }
    let unscoped = c.lifecycle()?.delete(&s).await;
    ensure!(
        unscoped.is_err(),
        "the unscoped handle could delete acme's stream"
    );
    let kept = acme.load_all(&s).await?;
    ensure_eq!(kept.len(), 1, "acme's events after others' lifecycle calls");
    let status = acme.lifecycle()?.status(&s).await.ctx("acme's status")?;
    ensure_eq!(
        status.state,
        eskit_core::store::StreamState::Active,
        "acme's stream state"
    );
    Ok(())
}

async fn queries(c: Ctx) -> Outcome {
    let (acme, globex) = (c.tenant("acme")?, c.tenant("globex")?);
    let course = tag("course:c-1")?;
    let item = || QueryItem::new().with_tags([course.clone()]);
    for (name, h) in [("acme", &acme), ("globex", &globex), ("none", &c)] {
        let s = stream(&format!("tenant-query-{name}"))?;
        h.append(
            &s,
            ExpectedVersion::Any,
            vec![
                ev("Enrolled", format!("{name}-1"))?.with_tags([course.clone()]),
                ev("Other", format!("{name}-2"))?,
            ],
        )
        .await
        .ctx("a tagged append")?;
    }
    for (name, h) in [("acme", &acme), ("globex", &globex), ("none", &c)] {
        let tenant = (name != "none").then_some(name);
        for (what, query) in [
            ("a tag query", EventQuery::from(item())),
            ("a type-only query", EventQuery::all()),
        ] {
            let page = h
                .queries()?
                .query(QueryOptions::from_start(query, 100))
                .await
                .ctx(what)?;
            all_of(&page.events, tenant, what)?;
            ensure!(
                page.events
                    .iter()
                    .all(|e| e.payload.starts_with(name.as_bytes())),
                "{what} of {name} returned another tenant's event"
            );
        }
    }
    // Acme decides from its own read of the tag; globex appending an event
    // with the same tag afterwards does not fail acme's condition.
    let page = acme
        .queries()?
        .query(QueryOptions::from_start(EventQuery::from(item()), 100))
        .await
        .ctx("acme's decision read")?;
    globex
        .append(
            &stream("tenant-query-globex")?,
            ExpectedVersion::Any,
            vec![ev("Enrolled", "globex-3")?.with_tags([course.clone()])],
        )
        .await
        .ctx("globex's later append")?;
    let condition = AppendCondition::new(EventQuery::from(item()), page.next);
    acme.events()
        .append(
            &stream("tenant-query-acme")?,
            ExpectedVersion::Any,
            vec![ev("Enrolled", "acme-3")?.with_tags([course.clone()])],
            AppendOptions::new().with_condition(condition.clone()),
        )
        .await
        .ctx("acme's conditional append after another tenant's matching event")?;
    // Its own new event does fail the same condition.
    let r = acme
        .events()
        .append(
            &stream("tenant-query-acme")?,
            ExpectedVersion::Any,
            vec![ev("Enrolled", "acme-4")?.with_tags([course])],
            AppendOptions::new().with_condition(condition),
        )
        .await;
    ensure!(
        matches!(r, Err(StoreError::ConditionFailed { .. })),
        "acme's condition after its own matching event: expected ConditionFailed, got {r:?}"
    );
    Ok(())
}

async fn state(c: Ctx) -> Outcome {
    let (acme, globex) = (c.tenant("acme")?, c.tenant("globex")?);
    let at = |p| GlobalCursor::at(Position::new(p));
    acme.checkpoints()?
        .save("projector", at(7))
        .await
        .ctx("acme's checkpoint")?;
    globex
        .checkpoints()?
        .save("projector", at(3))
        .await
        .ctx("globex's checkpoint")?;
    for (name, h, want) in [
        ("acme", &acme, Some(at(7))),
        ("globex", &globex, Some(at(3))),
        ("the unscoped handle", &c, None),
    ] {
        let got = h
            .checkpoints()?
            .load("projector")
            .await
            .ctx("a checkpoint")?;
        ensure_eq!(got, want, "the checkpoint {name} loads");
    }
    let s = stream("tenant-snapshot")?;
    acme.append(&s, ExpectedVersion::NoStream, vec![ev("Placed", "a")?])
        .await
        .ctx("acme's append")?;
    let snapshot = |state: &[u8]| Snapshot {
        stream: s.clone(),
        version: Version::new(1),
        schema_version: 1,
        codec: "raw".into(),
        state: state.to_vec(),
        created_at: Timestamp::from_unix_micros(1_000_000),
    };
    acme.snapshots()?
        .save(snapshot(b"acme"))
        .await
        .ctx("acme's snapshot")?;
    let r = globex.snapshots()?.save(snapshot(b"globex")).await;
    ensure!(
        is_wrong_tenant(&r),
        "globex saving a snapshot of acme's stream: expected WrongTenant, got {r:?}"
    );
    let seen = globex
        .snapshots()?
        .load(&s)
        .await
        .ctx("globex's snapshot load")?;
    ensure!(seen.is_none(), "globex loaded acme's snapshot");
    let seen = c
        .snapshots()?
        .load(&s)
        .await
        .ctx("an unscoped snapshot load")?;
    ensure!(seen.is_none(), "the unscoped handle loaded acme's snapshot");
    globex
        .snapshots()?
        .invalidate_all()
        .await
        .ctx("globex invalidating its snapshots")?;
    let kept = acme
        .snapshots()?
        .load(&s)
        .await
        .ctx("acme's snapshot load")?;
    ensure_eq!(
        kept.map(|k| k.state),
        Some(b"acme".to_vec()),
        "acme's snapshot after globex invalidated its own"
    );
    Ok(())
}
