//! Snapshot store and checkpoint store contracts.

use eskit_core::limits::{MAX_NAME_BYTES, MAX_SNAPSHOT_BYTES};
use eskit_core::{
    error::{StoreError, ValidationError},
    event::{GlobalCursor, Position, StreamName, Timestamp, Version},
    store::Snapshot,
};

use super::{
    Capability, Ctx, Failure, Outcome, Scenario, ensure, ensure_eq, expect_err, scenario_list,
};

const SNAPSHOTS: &[Capability] = &[Capability::Snapshots];
const CHECKPOINTS: &[Capability] = &[Capability::Checkpoints];
const SNAPSHOTS_LIFECYCLE: &[Capability] = &[
    Capability::Events,
    Capability::Lifecycle,
    Capability::Snapshots,
];

pub(crate) fn scenarios() -> Vec<Scenario> {
    let mut v = scenario_list![SNAPSHOTS;
        "snapshot.missing_is_none" => snap_missing,
        "snapshot.save_load_round_trip" => snap_round_trip,
        "snapshot.save_replaces_previous" => snap_replace,
        "snapshot.empty_and_binary_state" => snap_binary,
        "snapshot.isolated_per_stream" => snap_isolated,
        "snapshot.invalidate" => snap_invalidate,
        "snapshot.invalidate_all" => snap_invalidate_all,
        "snapshot.invalid_snapshot_rejected" => snap_invalid,
    ];
    v.extend(scenario_list![SNAPSHOTS_LIFECYCLE;
        "snapshot.delete_removes_snapshots" => snap_deleted,
    ]);
    v.extend(scenario_list![CHECKPOINTS;
        "checkpoint.missing_is_none" => cp_missing,
        "checkpoint.save_load" => cp_save_load,
        "checkpoint.overwrite" => cp_overwrite,
        "checkpoint.zero_and_max_positions" => cp_extremes,
        "checkpoint.names_isolated" => cp_isolated,
        "checkpoint.special_names" => cp_special,
        "checkpoint.invalid_name_rejected" => cp_invalid,
        "checkpoint.concurrent_saves" => cp_concurrent,
        "checkpoint.cursor_round_trip" => cp_cursor,
    ]);
    v
}

fn snap(s: &StreamName, version: u64, state: &[u8]) -> Snapshot {
    Snapshot {
        stream: s.clone(),
        version: Version::new(version),
        schema_version: 2,
        codec: "json".into(),
        state: state.to_vec(),
        created_at: Timestamp::from_unix_micros(1_700_000_000_654_321),
    }
}

async fn load(c: &Ctx, s: &StreamName) -> Result<Option<Snapshot>, Failure> {
    Ok(c.snapshots()?.dyn_load(s).await?)
}

async fn snap_deleted(c: Ctx) -> Outcome {
    // The fixture's snapshot store and event store share the backend's
    // data: a hard delete removes the stream's snapshot with its events,
    // so a handler cannot rebuild the deleted stream's state from it.
    let gone = super::stream("snap-deleted")?;
    let kept = super::stream("snap-kept")?;
    for s in [&gone, &kept] {
        c.append(
            s,
            eskit_core::event::ExpectedVersion::NoStream,
            super::evs(2, "E", "x")?,
        )
        .await?;
        c.snapshots()?.dyn_save(snap(s, 2, b"state")).await?;
    }
    c.lifecycle()?.dyn_delete(&gone).await?;
    ensure_eq!(load(&c, &gone).await?, None, "snapshot of a deleted stream");
    ensure_eq!(
        load(&c, &kept).await?,
        Some(snap(&kept, 2, b"state")),
        "snapshot of another stream after the delete"
    );
    Ok(())
}

async fn snap_missing(c: Ctx) -> Outcome {
    ensure_eq!(
        load(&c, &StreamName::new("snap", "none")?).await?,
        None,
        "snapshot of a stream without one"
    );
    Ok(())
}

async fn snap_round_trip(c: Ctx) -> Outcome {
    let s = StreamName::new("snap", "rt")?;
    let mut sn = snap(&s, 42, b"{\"balance\":100}");
    sn.schema_version = 7;
    sn.codec = "cbor".into();
    c.snapshots()?.dyn_save(sn.clone()).await?;
    ensure_eq!(load(&c, &s).await?, Some(sn), "snapshot loaded back");
    Ok(())
}

async fn snap_replace(c: Ctx) -> Outcome {
    let s = StreamName::new("snap", "replace")?;
    c.snapshots()?.dyn_save(snap(&s, 10, b"old")).await?;
    let newer = snap(&s, 20, b"new");
    c.snapshots()?.dyn_save(newer.clone()).await?;
    ensure_eq!(
        load(&c, &s).await?,
        Some(newer),
        "snapshot after a second save"
    );
    Ok(())
}

async fn snap_binary(c: Ctx) -> Outcome {
    let a = StreamName::new("snap", "empty")?;
    let b = StreamName::new("snap", "binary")?;
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 0xFF, 0xC3, 0x28]).collect();
    c.snapshots()?.dyn_save(snap(&a, 1, b"")).await?;
    c.snapshots()?.dyn_save(snap(&b, 1, &bytes)).await?;
    ensure_eq!(
        load(&c, &a).await?.map(|s| s.state),
        Some(Vec::new()),
        "empty state"
    );
    ensure_eq!(
        load(&c, &b).await?.map(|s| s.state),
        Some(bytes),
        "binary state"
    );
    Ok(())
}

async fn snap_isolated(c: Ctx) -> Outcome {
    let streams = [
        StreamName::new("snap", "a")?,
        StreamName::new("snap", "b")?,
        StreamName::new("other", "a")?,
    ];
    for (i, s) in streams.iter().enumerate() {
        c.snapshots()?
            .dyn_save(snap(s, i as u64 + 1, format!("{i}").as_bytes()))
            .await?;
    }
    for (i, s) in streams.iter().enumerate() {
        let got = load(&c, s).await?;
        ensure_eq!(
            got.map(|g| (g.stream, g.version.get())),
            Some((s.clone(), i as u64 + 1)),
            "snapshot of {s}"
        );
    }
    Ok(())
}

async fn snap_invalidate(c: Ctx) -> Outcome {
    let a = StreamName::new("snap", "inv-a")?;
    let b = StreamName::new("snap", "inv-b")?;
    c.snapshots()?.dyn_save(snap(&a, 1, b"a")).await?;
    c.snapshots()?.dyn_save(snap(&b, 1, b"b")).await?;
    c.snapshots()?.dyn_invalidate(&a).await?;
    ensure_eq!(load(&c, &a).await?, None, "snapshot after invalidate");
    ensure!(
        load(&c, &b).await?.is_some(),
        "invalidate removed another stream's snapshot"
    );
    c.snapshots()?
        .dyn_invalidate(&StreamName::new("snap", "never")?)
        .await
        .map_err(|e| {
            Failure(format!(
                "invalidate of a missing snapshot: {}",
                eskit_core::error::error_chain(&e)
            ))
        })?;
    Ok(())
}

async fn snap_invalidate_all(c: Ctx) -> Outcome {
    let streams = [
        StreamName::new("snap", "all-a")?,
        StreamName::new("other", "all-b")?,
    ];
    for s in &streams {
        c.snapshots()?.dyn_save(snap(s, 1, b"x")).await?;
    }
    c.snapshots()?.dyn_invalidate_all().await?;
    for s in &streams {
        ensure_eq!(
            load(&c, s).await?,
            None,
            "snapshot of {s} after invalidate_all"
        );
    }
    c.snapshots()?.dyn_save(snap(&streams[0], 2, b"y")).await?;
    ensure!(
        load(&c, &streams[0]).await?.is_some(),
        "save after invalidate_all did not stick"
    );
    Ok(())
}

async fn snap_invalid(c: Ctx) -> Outcome {
    let s = StreamName::new("snap", "invalid")?;
    let mut zero = snap(&s, 1, b"x");
    zero.schema_version = 0;
    expect_err!(
        c.snapshots()?.dyn_save(zero).await,
        StoreError::Validation(ValidationError::ZeroSchemaVersion),
        "snapshot with schema version 0"
    );
    let mut codec = snap(&s, 1, b"x");
    codec.codec = String::new();
    expect_err!(
        c.snapshots()?.dyn_save(codec).await,
        StoreError::Validation(ValidationError::Name(_)),
        "snapshot with an empty codec name"
    );
    let big = snap(&s, 1, &vec![0u8; MAX_SNAPSHOT_BYTES + 1]);
    expect_err!(
        c.snapshots()?.dyn_save(big).await,
        StoreError::Validation(ValidationError::SnapshotTooLarge { .. }),
        "snapshot of {} bytes",
        MAX_SNAPSHOT_BYTES + 1
    );
    ensure_eq!(load(&c, &s).await?, None, "snapshot after rejected saves");
    Ok(())
}

/// The cursor the helpers store for position `p`: a transaction key derived
/// from `p`, so every scenario also checks that both parts round-trip.
fn cursor_of(p: u64) -> GlobalCursor {
    GlobalCursor::new(p ^ 5, Position::new(p))
}

async fn cp_load(c: &Ctx, name: &str) -> Result<Option<Position>, Failure> {
    match c.checkpoints()?.dyn_load(name).await? {
        None => Ok(None),
        Some(cur) => {
            let p = cur.position();
            ensure_eq!(
                cur,
                cursor_of(p.get()),
                "checkpoint {} as loaded",
                super::short(&name)
            );
            Ok(Some(p))
        }
    }
}

async fn cp_save(c: &Ctx, name: &str, p: u64) -> Outcome {
    Ok(c.checkpoints()?.dyn_save(name, cursor_of(p)).await?)
}

async fn cp_cursor(c: Ctx) -> Outcome {
    let max = eskit_core::limits::MAX_POSITION;
    for cur in [
        GlobalCursor::START,
        GlobalCursor::new(7, Position::new(3)),
        GlobalCursor::new(max, Position::ZERO),
        GlobalCursor::new(max, Position::new(max)),
    ] {
        c.checkpoints()?.dyn_save("cursor", cur).await?;
        ensure_eq!(
            c.checkpoints()?.dyn_load("cursor").await?,
            Some(cur),
            "checkpoint cursor {cur}"
        );
    }
    expect_err!(
        c.checkpoints()?
            .dyn_save("cursor", GlobalCursor::new(max + 1, Position::ZERO))
            .await,
        StoreError::Validation(ValidationError::OutOfRange { .. }),
        "a transaction key above MAX_POSITION"
    );
    Ok(())
}

async fn cp_missing(c: Ctx) -> Outcome {
    ensure_eq!(
        cp_load(&c, "never-saved").await?,
        None,
        "checkpoint never saved"
    );
    Ok(())
}

async fn cp_save_load(c: Ctx) -> Outcome {
    cp_save(&c, "projection-a", 42).await?;
    ensure_eq!(
        cp_load(&c, "projection-a").await?,
        Some(Position::new(42)),
        "saved checkpoint"
    );
    Ok(())
}

async fn cp_overwrite(c: Ctx) -> Outcome {
    for p in [10, 20, 15] {
        cp_save(&c, "overwrite", p).await?;
        ensure_eq!(
            cp_load(&c, "overwrite").await?,
            Some(Position::new(p)),
            "checkpoint after saving {p}"
        );
    }
    Ok(())
}

async fn cp_extremes(c: Ctx) -> Outcome {
    cp_save(&c, "zero", 0).await?;
    ensure_eq!(
        cp_load(&c, "zero").await?,
        Some(Position::ZERO),
        "a saved zero position (not None)"
    );
    // MAX_POSITION (i64::MAX) is the largest position every backend can hold.
    let max = eskit_core::limits::MAX_POSITION;
    cp_save(&c, "max", max).await?;
    ensure_eq!(
        cp_load(&c, "max").await?,
        Some(Position::new(max)),
        "position MAX_POSITION"
    );
    let over = c
        .checkpoints()?
        .dyn_save("over", GlobalCursor::at(Position::new(max + 1)))
        .await;
    ensure!(
        matches!(
            over,
            Err(StoreError::Validation(ValidationError::OutOfRange { .. }))
        ),
        "saving MAX_POSITION + 1: expected an out-of-range error, got {over:?}"
    );
    Ok(())
}

async fn cp_isolated(c: Ctx) -> Outcome {
    for (i, n) in ["a", "b", "a-b", "A"].iter().enumerate() {
        cp_save(&c, n, i as u64 + 1).await?;
    }
    for (i, n) in ["a", "b", "a-b", "A"].iter().enumerate() {
        ensure_eq!(
            cp_load(&c, n).await?,
            Some(Position::new(i as u64 + 1)),
            "checkpoint {n}"
        );
    }
    Ok(())
}

async fn cp_special(c: Ctx) -> Outcome {
    let long = "n".repeat(MAX_NAME_BYTES);
    let names = [
        "proj/orders.v2",
        "proj:é🎉",
        "'; DROP TABLE checkpoints;--",
        "*",
        ">",
        long.as_str(),
    ];
    for (i, n) in names.iter().enumerate() {
        cp_save(&c, n, i as u64 + 100).await?;
    }
    for (i, n) in names.iter().enumerate() {
        ensure_eq!(
            cp_load(&c, n).await?,
            Some(Position::new(i as u64 + 100)),
            "checkpoint {}",
            super::short(n)
        );
    }
    Ok(())
}

async fn cp_invalid(c: Ctx) -> Outcome {
    let long = "n".repeat(MAX_NAME_BYTES + 1);
    for name in ["", "a\0b", long.as_str()] {
        expect_err!(
            c.checkpoints()?.dyn_save(name, cursor_of(1)).await,
            StoreError::Validation(ValidationError::Name(_)),
            "save checkpoint {}",
            super::short(&name)
        );
        expect_err!(
            c.checkpoints()?.dyn_load(name).await,
            StoreError::Validation(ValidationError::Name(_)),
            "load checkpoint {}",
            super::short(&name)
        );
    }
    Ok(())
}

async fn cp_concurrent(c: Ctx) -> Outcome {
    let writers = c.stress().writers.max(2) as u64;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let c2 = c.clone();
            c.spawn(async move {
                for i in 0..50u64 {
                    cp_save(&c2, "contended", w * 1000 + i).await?;
                    cp_save(&c2, &format!("own-{w}"), i).await?;
                }
                Ok::<_, Failure>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let last = cp_load(&c, "contended").await?.map(Position::get);
    ensure!(
        last.is_some_and(|p| p % 1000 == 49 && p / 1000 < writers),
        "contended checkpoint is {last:?}, not the last save of one writer"
    );
    for w in 0..writers {
        ensure_eq!(
            cp_load(&c, &format!("own-{w}")).await?,
            Some(Position::new(49)),
            "checkpoint own-{w}"
        );
    }
    Ok(())
}
