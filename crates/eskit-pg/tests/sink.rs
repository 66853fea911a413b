//! SQL read models exactly once: a page's effects and its cursor commit
//! together, a page applied twice counts once, a refused page leaves both
//! untouched; checkpoints and snapshots saved inside the caller's
//! transaction.

mod common;

use eskit_core::error::{BoxError, StoreError};
use eskit_core::event::{
    EventType, ExpectedVersion, NewEvent, RawEvent, StreamName, TenantId, Timestamp, Version,
};
use eskit_core::store::{
    AppendOptions, BoxFuture, CheckpointStore, EventStore, LoadOptions, ProjectionSink, Snapshot,
    SnapshotStore, TenantScoped,
};
use eskit_pg::{PgOptions, PgProjection, PgStore};
use sqlx::{PgConnection, Row};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Adds the page's event count to one row; refuses pages holding an event
/// whose payload is `poison`.
struct Count {
    table: String,
}

impl PgProjection for Count {
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            sqlx::query(&format!("UPDATE {} SET n = n + $1", self.table))
                .bind(i64::try_from(events.len())?)
                .execute(&mut *conn)
                .await?;
            if events.iter().any(|e| e.payload == b"poison") {
                return Err("poison".into());
            }
            Ok(())
        })
    }
}

async fn count(store: &PgStore, table: &str) -> Result<i64, sqlx::Error> {
    sqlx::query(&format!("SELECT n FROM {table}"))
        .fetch_one(store.pool())
        .await?
        .try_get(0)
}

#[tokio::test]
async fn pages_apply_exactly_once() -> TestResult {
    let schema = common::fresh_schema("sink");
    let store = PgStore::connect(PgOptions::new(common::url()?).with_schema(&schema)).await?;
    let table = format!("\"{schema}\".totals");
    sqlx::query(&format!("CREATE TABLE {table} (n bigint NOT NULL)"))
        .execute(store.pool())
        .await?;
    sqlx::query(&format!("INSERT INTO {table} VALUES (0)"))
        .execute(store.pool())
        .await?;
    let s = StreamName::new("t", "1")?;
    let ty = EventType::new("E")?;
    let payloads: [&[u8]; 4] = [b"a", b"b", b"c", b"poison"];
    for p in payloads {
        store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![NewEvent::new(ty.clone(), p.to_vec())],
                AppendOptions::new(),
            )
            .await?;
    }
    let all = store.load(&s, LoadOptions::new()).await?;
    let sink = store.projection_sink(Count {
        table: table.clone(),
    });
    assert_eq!(sink.cursor("totals").await?, None);

    sink.apply("totals", &all[..2], all[1].cursor()).await?;
    assert_eq!(count(&store, &table).await?, 2);
    // The same page again (a retry): no effect.
    sink.apply("totals", &all[..2], all[1].cursor()).await?;
    assert_eq!(count(&store, &table).await?, 2);
    // An overlapping page: only the new event counts.
    sink.apply("totals", &all[1..3], all[2].cursor()).await?;
    assert_eq!(count(&store, &table).await?, 3);
    assert_eq!(sink.cursor("totals").await?, Some(all[2].cursor()));
    // A refused page rolls back its effect and its cursor.
    assert!(
        sink.apply("totals", &all[3..], all[3].cursor())
            .await
            .is_err()
    );
    assert_eq!(count(&store, &table).await?, 3);
    assert_eq!(sink.cursor("totals").await?, Some(all[2].cursor()));

    // Checkpoints inside the caller's transaction commit or roll back with it.
    let checkpoints = store.checkpoints();
    let mut tx = store.pool().begin().await?;
    checkpoints
        .save_in(&mut tx, "mine", all[0].cursor())
        .await?;
    tx.rollback().await?;
    assert_eq!(checkpoints.load("mine").await?, None);
    let mut tx = store.pool().begin().await?;
    checkpoints
        .save_in(&mut tx, "mine", all[1].cursor())
        .await?;
    tx.commit().await?;
    assert_eq!(checkpoints.load("mine").await?, Some(all[1].cursor()));
    store.close().await;
    Ok(())
}

fn snapshot_of(
    stream: &StreamName,
    version: u64,
    state: &[u8],
) -> Result<Snapshot, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Snapshot {
        stream: stream.clone(),
        version: Version::new(version),
        schema_version: 1,
        codec: "json".to_owned(),
        state: state.to_vec(),
        created_at: Timestamp::now(),
    })
}

#[tokio::test]
async fn snapshots_commit_and_roll_back_with_the_callers_append() -> TestResult {
    let schema = common::fresh_schema("snap_tx");
    let store = PgStore::connect(PgOptions::new(common::url()?).with_schema(&schema)).await?;
    let snapshots = store.snapshots();
    let s = StreamName::new("t", "1")?;
    let ty = EventType::new("E")?;

    // Rolled back: neither the event nor the snapshot stays.
    let mut tx = store.pool().begin().await?;
    store
        .append_in(
            &mut tx,
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(ty.clone(), b"a".to_vec())],
            AppendOptions::new(),
        )
        .await?;
    snapshots
        .save_in(&mut tx, snapshot_of(&s, 1, b"one")?)
        .await?;
    tx.rollback().await?;
    assert!(store.load(&s, LoadOptions::new()).await?.is_empty());
    assert_eq!(snapshots.load(&s).await?, None);

    // Committed: both.
    let mut tx = store.pool().begin().await?;
    store
        .append_in(
            &mut tx,
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(ty.clone(), b"a".to_vec())],
            AppendOptions::new(),
        )
        .await?;
    snapshots
        .save_in(&mut tx, snapshot_of(&s, 1, b"one")?)
        .await?;
    tx.commit().await?;
    assert_eq!(store.load(&s, LoadOptions::new()).await?.len(), 1);
    let loaded = snapshots.load(&s).await?.ok_or("snapshot missing")?;
    assert_eq!(
        (loaded.version.get(), loaded.state.as_slice()),
        (1, &b"one"[..])
    );

    // Another tenant's handle cannot snapshot the stream, in a transaction
    // either, and the stored snapshot stays.
    let other = store.for_tenant(TenantId::new("acme")?);
    let mut tx = store.pool().begin().await?;
    let refused = other
        .snapshots()
        .save_in(&mut tx, snapshot_of(&s, 1, b"theirs")?)
        .await;
    assert!(
        matches!(refused, Err(StoreError::WrongTenant { .. })),
        "{refused:?}"
    );
    tx.rollback().await?;
    let kept = snapshots.load(&s).await?.ok_or("snapshot missing")?;
    assert_eq!(kept.state, b"one");
    store.close().await;
    Ok(())
}
