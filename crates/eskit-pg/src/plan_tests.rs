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
        format!("DROP FUNCTION {s}.read_page"),
        format!("DELETE FROM {s}.eskit_migrations WHERE version >= 6"),
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

/// Events the never-analyzed table of the global read test holds, in
/// transactions of [`SEED_BATCH`].
const SEEDED: i64 = 60_000;
const SEED_BATCH: i64 = 10_000;
/// The page the global read test asks for.
const PAGE: i64 = 1_000;

/// A global read page walks the cursor index in order and stops at its
/// limit, also on a table never analyzed since a bulk load (whose
/// estimates once made the planner scan every row after the cursor with a
/// bitmap and sort them): the rows the statement fetches through indexes,
/// counted by PostgreSQL for the current transaction, stay near the page
/// size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_read_page_walks_the_cursor_index_on_a_fresh_table() -> TestResult {
    let schema = schema_name("plans_read");
    let store = PgStore::connect(PgOptions::new(url()?).with_schema(&schema)).await?;
    let s = store.inner.sql.schema.clone();
    let pool = store.inner.pool.clone();
    // No analyze may run behind the test's back.
    sqlx::query(&format!(
        "ALTER TABLE {s}.events SET (autovacuum_enabled = false)"
    ))
    .execute(&pool)
    .await?;
    for first in (0..SEEDED).step_by(usize::try_from(SEED_BATCH)?) {
        sqlx::query(&format!(
            "INSERT INTO {s}.events (position, tx, tenant, stream_type, stream_id, version, \
             event_id, event_type, schema_version, codec, payload, recorded_at) \
             SELECT nextval('{s}.positions'), pg_current_xact_id(), '', 'order', \
             'o-' || ($1 / $2), g - $1, decode(md5(g::text), 'hex'), 'Happened', 1, 'raw', \
             convert_to('{{\"n\":' || g || '}}', 'UTF8'), 0 \
             FROM generate_series($1 + 1, $1 + $2) AS g"
        ))
        .bind(first)
        .bind(SEED_BATCH)
        .execute(&pool)
        .await?;
    }
    let analyzed: Option<i64> = sqlx::query(
        "SELECT coalesce(analyze_count, 0) + coalesce(autoanalyze_count, 0) \
         FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'events'",
    )
    .bind(&schema)
    .fetch_optional(&pool)
    .await?
    .map(|r| r.try_get(0))
    .transpose()?;
    assert_eq!(analyzed.unwrap_or(0), 0, "the events table was analyzed");

    // From the middle of the log: the first event of the fourth batch.
    let cursor = sqlx::query(&format!(
        "SELECT tx::text, position FROM {s}.events ORDER BY tx, position OFFSET $1 LIMIT 1"
    ))
    .bind(SEEDED / 2)
    .fetch_one(&pool)
    .await?;
    let (tx, position): (String, i64) = (cursor.try_get(0)?, cursor.try_get(1)?);

    let mut conn = pool.acquire().await?;
    let mut t = sqlx::Connection::begin(&mut *conn).await?;
    let rows = sqlx::query(&store.inner.sql.read)
        .bind(&tx)
        .bind(position)
        .bind(Vec::<String>::new())
        .bind(None::<String>)
        .bind(PAGE)
        .bind("")
        .fetch_all(&mut *t)
        .await?;
    assert_eq!(i64::try_from(rows.len())?, PAGE);
    let read: i64 = sqlx::query(
        "SELECT coalesce(sum(idx_tup_fetch), 0)::int8 FROM pg_stat_xact_user_tables \
         WHERE schemaname = $1 AND relname = 'events'",
    )
    .bind(&schema)
    .fetch_one(&mut *t)
    .await?
    .try_get(0)?;
    t.rollback().await?;
    drop(conn);
    // The page and the head's one row, with room to spare; scanning
    // everything after the cursor fetches 30,000.
    assert!(read <= 2 * PAGE, "a page of {PAGE} fetched {read} rows");

    store.close().await;
    let cleanup = sqlx::PgPool::connect(&url()?).await?;
    sqlx::query(&format!("DROP SCHEMA {s} CASCADE"))
        .execute(&cleanup)
        .await?;
    Ok(())
}
