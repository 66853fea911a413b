//! Damaged event rows, written behind the store's back, come out of every
//! read as `StoreError::Corrupt`, never as a panic or as a wrong event:
//! loads, global reads and DCB query reads each decode them, against the
//! server named by `ESKIT_PG_URL` (a missing URL fails loudly).

mod common;

use eskit_core::dcb::{EventQuery, EventQueryReader, QueryItem, QueryOptions};
use eskit_core::error::StoreError;
use eskit_core::event::{EventType, ExpectedVersion, GlobalCursor, NewEvent, StreamName, Tag};
use eskit_core::store::{AppendOptions, EventStore, GlobalReader, LoadOptions, ReadOptions};
use eskit_pg::{PgOptions, PgStore};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Events of the stream each case damages one of.
const EVENTS: u64 = 3;

/// Which reads return the damaged row: a load selects by stream, so a row
/// whose stream name was damaged is no longer one of its rows.
#[derive(Clone, Copy, PartialEq)]
enum SeenBy {
    Every,
    ReadsOnly,
}

/// Damages the row of version `version` with `set` (an SQL `SET` list),
/// then expects every read that returns it to fail as corrupt.
async fn check(set: &str, version: u64, seen: SeenBy) -> TestResult {
    let schema = common::fresh_schema("damaged");
    let store = PgStore::connect(PgOptions::new(common::url()?).with_schema(&schema)).await?;
    let stream = StreamName::new("order", "o-1")?;
    let ty = EventType::new("Happened")?;
    let tag = Tag::new("t")?;
    let events = (0..EVENTS)
        .map(|i| {
            NewEvent::new(ty.clone(), format!("{{\"n\":{i}}}").into_bytes())
                .with_tags([tag.clone()])
        })
        .collect();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            events,
            AppendOptions::new(),
        )
        .await?;
    // Sound rows decode (and the statements are prepared on the pool's
    // connections before the damage).
    assert_eq!(store.load(&stream, LoadOptions::new()).await?.len(), 3);
    sqlx::query(&format!(
        "UPDATE \"{schema}\".events SET {set} WHERE stream_id = 'o-1' AND version = $1"
    ))
    .bind(i64::try_from(version)?)
    .execute(store.pool())
    .await?;

    let load = store.load(&stream, LoadOptions::new()).await;
    let read = store
        .read(ReadOptions::new(GlobalCursor::START, 100))
        .await
        .map(|b| b.events);
    let query = store
        .query(QueryOptions::new(
            EventQuery::from(QueryItem::new().with_tags([tag])),
            GlobalCursor::START,
            100,
        ))
        .await
        .map(|b| b.events);
    let corrupt = |r: &Result<Vec<_>, StoreError>| matches!(r, Err(StoreError::Corrupt { .. }));
    if seen == SeenBy::Every {
        assert!(
            corrupt(&load),
            "{set} (version {version}): load gave {load:?}"
        );
    } else {
        assert_eq!(
            load.as_ref().map(Vec::len).ok(),
            Some(2),
            "{set}: load gave {load:?}"
        );
    }
    assert!(
        corrupt(&read),
        "{set} (version {version}): read gave {read:?}"
    );
    assert!(
        corrupt(&query),
        "{set} (version {version}): query gave {query:?}"
    );

    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(store.pool())
        .await?;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_corrupt() -> TestResult {
    use SeenBy::{Every, ReadsOnly};
    // Version 1 is the first row of each result, version 2 follows a
    // sound row (whose names and tags the decoder may reuse).
    for version in [1, 2] {
        for (set, seen) in [
            ("event_type = ''", Every),
            ("event_type = repeat('e', 10000)", Every),
            ("codec = ''", Every),
            ("schema_version = 0", Every),
            ("schema_version = 5000000000", Every),
            ("position = -position", Every),
            ("version = -version - 10", ReadsOnly),
            ("metadata = 'x'::bytea", Every),
            ("metadata = '{\"unknown\":1}'::bytea", Every),
            ("tags = ARRAY['t', '']", Every),
            ("tags = ARRAY['t', NULL]", Every),
            ("tags = '{{t},{u}}'", Every),
            ("tags = ARRAY['t', repeat('x', 100000)]", Every),
            ("stream_type = ''", ReadsOnly),
            ("stream_id = repeat('s', 10000)", ReadsOnly),
        ] {
            check(set, version, seen).await?;
        }
    }
    Ok(())
}
