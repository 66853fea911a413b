//! Stream lifecycle: tombstone, archive, restore, hard delete and status.

use eskit_core::limits::MAX_REASON_BYTES;
use eskit_core::{
    error::{LifecycleOp, StoreError, ValidationError},
    event::{ExpectedVersion, Position, StreamName, Timestamp, Version},
    store::{EventStore, GlobalReader, StreamLifecycle, StreamState, StreamStatus},
};

use super::{
    Ctx, Failure, LIFECYCLE, LIFECYCLE_GLOBAL, Outcome, Scenario, ensure, ensure_eq, evs,
    expect_err, scenario_list, stream,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    let mut v = scenario_list![LIFECYCLE;
        "lifecycle.status_of_missing_stream" => status_missing,
        "lifecycle.status_of_active_stream" => status_active,
        "lifecycle.tombstone_keeps_events_readable" => tombstone,
        "lifecycle.append_after_tombstone_rejected" => append_after_tombstone,
        "lifecycle.archive_keeps_events_readable" => archive,
        "lifecycle.append_after_archive_rejected" => append_after_archive,
        "lifecycle.restore_reopens_stream" => restore,
        "lifecycle.delete_removes_events" => delete,
        "lifecycle.append_after_delete_rejected" => append_after_delete,
        "lifecycle.delete_from_every_state" => delete_from_each,
        "lifecycle.tombstone_archived_stream" => tombstone_archived,
        "lifecycle.invalid_transitions_rejected" => invalid_transitions,
        "lifecycle.missing_stream_not_found" => missing_not_found,
        "lifecycle.reason_too_long_rejected" => reason_too_long,
        "lifecycle.other_streams_unaffected" => others_unaffected,
    ];
    v.extend(scenario_list![LIFECYCLE_GLOBAL;
        "lifecycle.positions_never_reused_after_delete" => positions_not_reused,
        "lifecycle.deleted_events_leave_global_read" => delete_global,
    ]);
    v
}

async fn setup(c: &Ctx, id: &str, n: usize) -> Result<StreamName, Failure> {
    let s = stream(id)?;
    c.append(&s, ExpectedVersion::NoStream, evs(n, "E", id)?)
        .await?;
    Ok(s)
}

async fn status(c: &Ctx, s: &StreamName) -> Result<StreamStatus, Failure> {
    Ok(c.lifecycle()?.status(s).await?)
}

async fn status_missing(c: Ctx) -> Outcome {
    let st = status(&c, &stream("lc-missing")?).await?;
    ensure_eq!(
        st,
        StreamStatus::not_found(),
        "status of a stream that never existed"
    );
    Ok(())
}

async fn status_active(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-active", 3).await?;
    let st = status(&c, &s).await?;
    ensure_eq!(st.state, StreamState::Active, "state");
    ensure_eq!(st.version, Version::new(3), "version in the status");
    ensure_eq!(st.reason, None, "reason");
    Ok(())
}

async fn expect_closed(c: &Ctx, s: &StreamName, archived: bool) -> Outcome {
    for exp in [
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(Version::new(2)),
    ] {
        let r = c.append(s, exp, evs(1, "E", "late")?).await;
        if archived {
            expect_err!(
                r,
                StoreError::StreamArchived { .. },
                "append expecting {exp} to archived {s}"
            );
        } else {
            let e = expect_err!(
                r,
                StoreError::StreamDeleted { .. },
                "append expecting {exp} to closed {s}"
            );
            ensure!(e.is_stream_closed(), "is_stream_closed() false");
        }
    }
    Ok(())
}

async fn tombstone(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-tomb", 2).await?;
    let before = Timestamp::now().as_unix_micros() - 300_000_000;
    c.lifecycle()?.tombstone(&s, "gdpr request 42").await?;
    let st = status(&c, &s).await?;
    ensure_eq!(st.state, StreamState::Tombstoned, "state");
    ensure_eq!(st.version, Version::new(2), "version in the status");
    ensure_eq!(st.reason.as_deref(), Some("gdpr request 42"), "reason");
    ensure!(
        st.changed_at.is_some_and(|t| t.as_unix_micros() >= before),
        "changed_at {:?} missing or long ago",
        st.changed_at
    );
    ensure_eq!(
        c.load_all(&s).await?.len(),
        2,
        "events still readable after tombstone"
    );
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::new(2),
        "stream version after tombstone"
    );
    Ok(())
}

async fn append_after_tombstone(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-tomb-append", 2).await?;
    c.lifecycle()?.tombstone(&s, "closed").await?;
    expect_closed(&c, &s, false).await?;
    ensure_eq!(
        c.load_all(&s).await?.len(),
        2,
        "events after rejected appends"
    );
    Ok(())
}

async fn archive(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-archive", 2).await?;
    c.lifecycle()?.archive(&s, "cold storage").await?;
    let st = status(&c, &s).await?;
    ensure_eq!(st.state, StreamState::Archived, "state");
    ensure_eq!(st.reason.as_deref(), Some("cold storage"), "reason");
    ensure_eq!(st.version, Version::new(2), "version in the status");
    ensure!(st.changed_at.is_some(), "changed_at missing");
    ensure_eq!(
        c.load_all(&s).await?.len(),
        2,
        "events still readable after archive"
    );
    Ok(())
}

async fn append_after_archive(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-archive-append", 2).await?;
    c.lifecycle()?.archive(&s, "cold").await?;
    expect_closed(&c, &s, true).await
}

async fn restore(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-restore", 2).await?;
    c.lifecycle()?.archive(&s, "cold").await?;
    c.lifecycle()?.restore(&s).await?;
    let st = status(&c, &s).await?;
    ensure_eq!(st.state, StreamState::Active, "state after restore");
    let r = c
        .append(
            &s,
            ExpectedVersion::Exact(Version::new(2)),
            evs(1, "E", "after")?,
        )
        .await?;
    ensure_eq!(
        r.last_version(),
        Version::new(3),
        "version of the first append after restore"
    );
    ensure_eq!(
        c.load_all(&s).await?.len(),
        3,
        "events after restore and append"
    );
    Ok(())
}

async fn delete(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-delete", 3).await?;
    c.lifecycle()?.delete(&s).await?;
    ensure_eq!(c.load_all(&s).await?.len(), 0, "events after delete");
    let st = status(&c, &s).await?;
    ensure_eq!(st.state, StreamState::Deleted, "state");
    ensure_eq!(
        st.version,
        Version::new(3),
        "last version kept in the status"
    );
    ensure!(st.changed_at.is_some(), "changed_at missing");
    Ok(())
}

async fn append_after_delete(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-delete-append", 2).await?;
    c.lifecycle()?.delete(&s).await?;
    expect_closed(&c, &s, false).await?;
    expect_err!(
        c.append(&s, ExpectedVersion::NoStream, evs(1, "E", "reuse")?)
            .await,
        StoreError::StreamDeleted { .. },
        "NoStream append re-creating a deleted stream"
    );
    Ok(())
}

async fn delete_from_each(c: Ctx) -> Outcome {
    let l = c.lifecycle()?.clone();
    let a = setup(&c, "lc-del-active", 1).await?;
    let b = setup(&c, "lc-del-archived", 1).await?;
    let t = setup(&c, "lc-del-tombstoned", 1).await?;
    l.archive(&b, "x").await?;
    l.tombstone(&t, "x").await?;
    for s in [&a, &b, &t] {
        l.delete(s).await.map_err(|e| {
            Failure(format!(
                "delete {s}: {}",
                eskit_core::error::error_chain(&e)
            ))
        })?;
        ensure_eq!(
            status(&c, s).await?.state,
            StreamState::Deleted,
            "state of {s}"
        );
        ensure_eq!(c.load_all(s).await?.len(), 0, "events of deleted {s}");
    }
    Ok(())
}

async fn tombstone_archived(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-tomb-archived", 1).await?;
    c.lifecycle()?.archive(&s, "first").await?;
    c.lifecycle()?.tombstone(&s, "second").await?;
    let st = status(&c, &s).await?;
    ensure_eq!(st.state, StreamState::Tombstoned, "state");
    ensure_eq!(
        st.reason.as_deref(),
        Some("second"),
        "reason of the latest transition"
    );
    Ok(())
}

async fn invalid_transitions(c: Ctx) -> Outcome {
    let l = c.lifecycle()?.clone();
    let check =
        |r: Result<(), StoreError>, state: StreamState, op: LifecycleOp, what: &str| -> Outcome {
            let e = expect_err!(r, StoreError::InvalidLifecycle { .. }, "{what}");
            if let StoreError::InvalidLifecycle {
                state: st,
                operation,
                ..
            } = e
            {
                ensure_eq!(
                    (st, operation),
                    (state, op),
                    "{what}: (state, operation) in the error"
                );
            }
            Ok(())
        };
    let active = setup(&c, "lc-inv-active", 1).await?;
    check(
        l.restore(&active).await,
        StreamState::Active,
        LifecycleOp::Restore,
        "restore an active stream",
    )?;
    let archived = setup(&c, "lc-inv-archived", 1).await?;
    l.archive(&archived, "x").await?;
    check(
        l.archive(&archived, "y").await,
        StreamState::Archived,
        LifecycleOp::Archive,
        "archive an archived stream",
    )?;
    let tomb = setup(&c, "lc-inv-tomb", 1).await?;
    l.tombstone(&tomb, "x").await?;
    check(
        l.tombstone(&tomb, "y").await,
        StreamState::Tombstoned,
        LifecycleOp::Tombstone,
        "tombstone a tombstoned stream",
    )?;
    check(
        l.archive(&tomb, "y").await,
        StreamState::Tombstoned,
        LifecycleOp::Archive,
        "archive a tombstoned stream",
    )?;
    check(
        l.restore(&tomb).await,
        StreamState::Tombstoned,
        LifecycleOp::Restore,
        "restore a tombstoned stream",
    )?;
    let del = setup(&c, "lc-inv-del", 1).await?;
    l.delete(&del).await?;
    check(
        l.delete(&del).await,
        StreamState::Deleted,
        LifecycleOp::Delete,
        "delete a deleted stream",
    )?;
    check(
        l.tombstone(&del, "y").await,
        StreamState::Deleted,
        LifecycleOp::Tombstone,
        "tombstone a deleted stream",
    )?;
    check(
        l.archive(&del, "y").await,
        StreamState::Deleted,
        LifecycleOp::Archive,
        "archive a deleted stream",
    )?;
    check(
        l.restore(&del).await,
        StreamState::Deleted,
        LifecycleOp::Restore,
        "restore a deleted stream",
    )?;
    Ok(())
}

async fn missing_not_found(c: Ctx) -> Outcome {
    let l = c.lifecycle()?.clone();
    let s = stream("lc-never")?;
    let results = [
        ("tombstone", l.tombstone(&s, "x").await),
        ("archive", l.archive(&s, "x").await),
        ("restore", l.restore(&s).await),
        ("delete", l.delete(&s).await),
    ];
    for (op, r) in results {
        let e = expect_err!(
            r,
            StoreError::StreamNotFound { .. },
            "{op} of a missing stream"
        );
        ensure!(e.is_not_found(), "is_not_found() false");
    }
    ensure_eq!(
        status(&c, &s).await?.state,
        StreamState::NotFound,
        "state after failed transitions"
    );
    Ok(())
}

async fn reason_too_long(c: Ctx) -> Outcome {
    let s = setup(&c, "lc-reason", 1).await?;
    let long = "r".repeat(MAX_REASON_BYTES + 1);
    for (op, r) in [
        ("tombstone", c.lifecycle()?.tombstone(&s, &long).await),
        ("archive", c.lifecycle()?.archive(&s, &long).await),
    ] {
        expect_err!(
            r,
            StoreError::Validation(ValidationError::ReasonTooLong { .. }),
            "{op} with a {} byte reason",
            long.len()
        );
    }
    // A NUL cannot be stored by every backend: refused everywhere.
    for (op, r) in [
        ("tombstone", c.lifecycle()?.tombstone(&s, "spam\0").await),
        ("archive", c.lifecycle()?.archive(&s, "spam\0").await),
    ] {
        expect_err!(
            r,
            StoreError::Validation(ValidationError::ReasonContainsNul),
            "{op} with a reason holding NUL"
        );
    }
    ensure_eq!(
        status(&c, &s).await?.state,
        StreamState::Active,
        "state after rejected transitions"
    );
    c.lifecycle()?
        .archive(&s, &"r".repeat(MAX_REASON_BYTES))
        .await?;
    ensure_eq!(
        status(&c, &s).await?.reason.map(|r| r.len()),
        Some(MAX_REASON_BYTES),
        "length of a maximal reason"
    );
    Ok(())
}

async fn others_unaffected(c: Ctx) -> Outcome {
    let keep = setup(&c, "lc-keep", 2).await?;
    let a = setup(&c, "lc-gone-1", 2).await?;
    let b = setup(&c, "lc-gone-2", 2).await?;
    let t = setup(&c, "lc-gone-3", 2).await?;
    c.lifecycle()?.delete(&a).await?;
    c.lifecycle()?.archive(&b, "x").await?;
    c.lifecycle()?.tombstone(&t, "x").await?;
    ensure_eq!(
        status(&c, &keep).await?.state,
        StreamState::Active,
        "state of the untouched stream"
    );
    let r = c
        .append(
            &keep,
            ExpectedVersion::Exact(Version::new(2)),
            evs(1, "E", "k")?,
        )
        .await?;
    ensure_eq!(
        r.last_version(),
        Version::new(3),
        "version of the untouched stream"
    );
    Ok(())
}

async fn positions_not_reused(c: Ctx) -> Outcome {
    let a = setup(&c, "lc-pos-a", 5).await?;
    let g = c.global()?.clone();
    let latest = g.head().await?.position();
    c.lifecycle()?.delete(&a).await?;
    let b = stream("lc-pos-b")?;
    let r = c
        .append(&b, ExpectedVersion::NoStream, evs(2, "E", "b")?)
        .await?;
    ensure!(
        r.records.iter().all(|r| r.position > latest),
        "positions after delete {:?} reuse positions up to {latest}",
        r.records
            .iter()
            .map(|r| r.position.get())
            .collect::<Vec<_>>()
    );
    ensure!(
        g.head().await? >= r.last_cursor(),
        "head behind the last append"
    );
    Ok(())
}

async fn delete_global(c: Ctx) -> Outcome {
    let keep = setup(&c, "lc-g-keep", 2).await?;
    let gone = setup(&c, "lc-g-gone", 3).await?;
    let keep2 = stream("lc-g-keep")?;
    c.append(&keep2, ExpectedVersion::Any, evs(1, "E", "k")?)
        .await?;
    let before: Vec<Position> = c
        .read_everything()
        .await?
        .into_iter()
        .filter(|e| e.stream == keep)
        .map(|e| e.position)
        .collect();
    c.lifecycle()?.delete(&gone).await?;
    let after = c.read_everything().await?;
    ensure!(
        after.iter().all(|e| e.stream != gone),
        "deleted events still in the global read"
    );
    let kept: Vec<Position> = after.iter().map(|e| e.position).collect();
    ensure_eq!(kept, before, "positions of the remaining events");
    Ok(())
}
