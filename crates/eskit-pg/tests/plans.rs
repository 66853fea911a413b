//! The store's statements are planned as index probes even as generic
//! plans of a table that has no statistics yet.
//!
//! sqlx prepares every statement once per connection, and after five runs
//! PostgreSQL may keep a generic plan for good, planned when the tables
//! were small and never analyzed: a plan that scans a whole table is
//! cheap then, and reads the whole table on every run once it grew. A
//! private cluster runs with `plan_cache_mode = force_generic_plan` (every
//! run a generic plan, from the first) and `auto_explain` logging every
//! plan; the test runs each kind of append and read on fresh tables and
//! looks for a sequential scan of the store's event, stream or
//! idempotency table in the logged plans.

mod common;

use common::cluster::PrivateCluster;
use eskit_core::dcb::{AppendCondition, EventQuery, EventQueryReader, QueryItem, QueryOptions};
use eskit_core::event::{EventType, ExpectedVersion, GlobalCursor, NewEvent, StreamName, Tag};
use eskit_core::store::{AppendOptions, EventStore, GlobalReader, LoadOptions, ReadOptions};
use eskit_pg::{PgOptions, PgStore};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SETTINGS: &[(&str, &str)] = &[
    ("session_preload_libraries", "auto_explain"),
    ("auto_explain.log_min_duration", "0"),
    ("plan_cache_mode", "force_generic_plan"),
];

/// The store's tables that grow with its use.
const TABLES: &[&str] = &["events", "streams", "idempotency"];

fn event(tag: Option<&str>) -> Result<NewEvent, Error> {
    let e = NewEvent::new(EventType::new("Placed")?, b"{}".to_vec());
    Ok(match tag {
        Some(t) => e.with_tags([Tag::new(t)?]),
        None => e,
    })
}

#[tokio::test]
async fn generic_plans_probe_indexes() -> Result<(), Error> {
    let cluster = PrivateCluster::start(SETTINGS)?;
    let store = PgStore::connect(PgOptions::new(cluster.url()).with_schema("plans")).await?;
    let one = StreamName::new("order", "one")?;
    for n in 0..3 {
        let stream = StreamName::new("order", format!("new-{n}"))?;
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![event(None)?],
                AppendOptions::new(),
            )
            .await?;
        let key = AppendOptions::new().with_idempotency_key(format!("key-{n}"));
        store
            .append(
                &one,
                ExpectedVersion::Any,
                vec![event(Some("t"))?],
                key.clone(),
            )
            .await?;
        // The keyed retry and a conflict take the full transaction.
        store
            .append(&one, ExpectedVersion::Any, vec![event(Some("t"))?], key)
            .await?;
        let _ = store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![event(None)?],
                AppendOptions::new(),
            )
            .await;
    }
    let query = EventQuery::new().with_item(QueryItem::new().with_tags([Tag::new("t")?]));
    let seen = store
        .query(QueryOptions::from_start(query.clone(), 100))
        .await?;
    store
        .append(
            &one,
            ExpectedVersion::Any,
            vec![event(Some("t"))?],
            AppendOptions::new().with_condition(AppendCondition::new(query, seen.next)),
        )
        .await?;
    store.load(&one, LoadOptions::new()).await?;
    store.stream_version(&one).await?;
    store.read(ReadOptions::from_start(100)).await?;
    store
        .read(ReadOptions::from_start(100).with_after(GlobalCursor::START))
        .await?;
    store.head().await?;
    store.close().await;

    let log = cluster.log()?;
    let plans: Vec<&str> = log.split("plan:").skip(1).collect();
    let scans: Vec<String> = plans
        .iter()
        .filter(|p| {
            TABLES.iter().any(|t| {
                p.contains(&format!("Seq Scan on {t} "))
                    || p.contains(&format!("Seq Scan on {t}\n"))
            })
        })
        .map(|p| p.chars().take(2_000).collect())
        .collect();
    println!(
        "{} plans logged, {} with a sequential scan of a store table",
        plans.len(),
        scans.len()
    );
    assert!(
        plans.len() > 20,
        "auto_explain logged {} plans",
        plans.len()
    );
    assert!(
        scans.is_empty(),
        "plans scanning a whole table:\n{}",
        scans.join("\n----\n")
    );
    Ok(())
}
