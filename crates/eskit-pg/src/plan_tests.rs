//! The plans PostgreSQL picks for the store's own statements, against the
//! server named by `ESKIT_PG_URL` (a missing URL fails loudly): what the
//! statement texts must keep so that their indexes stay usable.

use eskit_core::dcb::{EventQuery, QueryItem};
use eskit_core::event::{EventType, ExpectedVersion, NewEvent, StreamName, Tag};
use eskit_core::store::{AppendOptions, EventStore};
use sqlx::Row;

use super::PgStore;
use crate::PgOptions;
use crate::dcb::match_clause;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Untagged events beside the tagged ones: enough that walking the cursor
/// index costs more than the tag index's few entries.
const UNTAGGED: u64 = 3_000;
const TAGGED: u64 = 20;

fn url() -> Result<String, String> {
    match std::env::var("ESKIT_PG_URL") {
        Ok(u) if !u.is_empty() => Ok(u),
        _ => Err(
            "ESKIT_PG_URL is not set: the plan tests need a PostgreSQL server \
                  (`cargo xtask servers` prints the line to export)"
                .to_owned(),
        ),
    }
}

fn schema_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// The text plan of `sql` with its parameters bound.
async fn plan(
    store: &PgStore,
    sql: &str,
    bind: impl FnOnce(
        sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let explain = format!("EXPLAIN {sql}");
    let rows = bind(sqlx::query(&explain))
        .fetch_all(&store.inner.pool)
        .await?;
    let lines: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    Ok(lines.join("\n"))
}

/// The tag index holds tagged events only; the DCB query read and the
/// append condition's check name its predicate, so both use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_queries_use_the_tag_index_of_tagged_events() -> TestResult {
    let schema = schema_name("plans");
    let store = PgStore::connect(PgOptions::new(url()?).with_schema(&schema)).await?;
    let ty = EventType::new("Happened")?;
    let tag = Tag::new("course:c-1")?;
    for batch in 0..UNTAGGED / 100 {
        let events = (0..100)
            .map(|i| NewEvent::new(ty.clone(), format!("{{\"n\":{i}}}").into_bytes()))
            .collect();
        store
            .append(
                &StreamName::new("order", format!("o-{batch}"))?,
                ExpectedVersion::NoStream,
                events,
                AppendOptions::new(),
            )
            .await?;
    }
    let tagged = (0..TAGGED)
        .map(|i| {
            NewEvent::new(ty.clone(), format!("{{\"n\":{i}}}").into_bytes())
                .with_tags([tag.clone()])
        })
        .collect();
    store
        .append(
            &StreamName::new("course", "c-1")?,
            ExpectedVersion::NoStream,
            tagged,
            AppendOptions::new(),
        )
        .await?;
    let s = &store.inner.sql.schema;
    sqlx::query(&format!("ANALYZE {s}.events"))
        .execute(&store.inner.pool)
        .await?;
    let query = EventQuery::from(QueryItem::new().with_tags([tag]));
    let tags = vec!["course:c-1".to_owned()];

    let (matches, _) = match_clause(&query, 5);
    let read = plan(&store, &store.inner.sql.query(&matches), |q| {
        q.bind("0")
            .bind(0_i64)
            .bind(100_i64)
            .bind("")
            .bind(tags.clone())
    })
    .await?;
    assert!(read.contains("events_tags"), "query read plan:\n{read}");

    let (matches, _) = match_clause(&query, 4);
    let check = plan(&store, &store.inner.sql.first_match(&matches), |q| {
        q.bind("0").bind(0_i64).bind("").bind(tags.clone())
    })
    .await?;
    assert!(check.contains("events_tags"), "append check plan:\n{check}");

    sqlx::query(&format!("DROP SCHEMA {s} CASCADE"))
        .execute(&store.inner.pool)
        .await?;
    store.close().await;
    Ok(())
}

/// A schema made before the tag index kept tagged events only gets the
/// new index when a store opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_schema_gets_the_tag_index_of_tagged_events() -> TestResult {
    let schema = schema_name("plans_old");
    let store = PgStore::connect(PgOptions::new(url()?).with_schema(&schema)).await?;
    let s = store.inner.sql.schema.clone();
    // Its own pool: closing a store closes the store's.
    let pool = sqlx::PgPool::connect(&url()?).await?;
    // Back to how migration 5 left it.
    for ddl in [
        format!("DROP INDEX {s}.events_tags"),
        format!("CREATE INDEX events_tags ON {s}.events USING gin (tags)"),
        format!("DELETE FROM {s}.eskit_migrations WHERE version = 6"),
    ] {
        sqlx::query(&ddl).execute(&pool).await?;
    }
    store.close().await;
    let definition =
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'events_tags'";
    let before: String = sqlx::query(definition)
        .bind(&schema)
        .fetch_one(&pool)
        .await?
        .try_get(0)?;
    assert!(!before.contains("WHERE"), "{before}");

    let store = PgStore::connect(PgOptions::new(url()?).with_schema(&schema)).await?;
    let after: String = sqlx::query(definition)
        .bind(&schema)
        .fetch_one(&pool)
        .await?
        .try_get(0)?;
    assert!(after.ends_with("WHERE (tags <> '{}'::text[])"), "{after}");
    let applied: i32 = sqlx::query(&format!("SELECT max(version) FROM {s}.eskit_migrations"))
        .fetch_one(&pool)
        .await?
        .try_get(0)?;
    assert_eq!(applied, crate::schema::latest());

    store.close().await;
    sqlx::query(&format!("DROP SCHEMA {s} CASCADE"))
        .execute(&pool)
        .await?;
    Ok(())
}
