//! RELIABILITY C4 on memory and SQLite: a state view, and a transactional
//! read model rebuilt in place and in a shadow, equal the live one (by a
//! hash of their rows), and a zero-downtime rebuild serves the full view to
//! a reader throughout. The scenarios are `eskit_testing::processor`'s
//! `views` and `read_models`, which PostgreSQL runs too; the tests below
//! them are this crate's own.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use eskit_core::{
    error::BoxError,
    event::{GlobalCursor, RawEvent},
    memory::{MemoryCheckpointStore, MemoryReadModel, MemoryStore},
    store::{GlobalReader, ProjectionSink, ReadOptions, ShadowRebuild},
};
use eskit_processor::SubscriptionOptions;
use eskit_processor::rebuild::rebuild_in_shadow;
use eskit_processor::view::{ViewHandler, rebuild};
use eskit_sqlite::SqliteStore;
use eskit_sqlite::WriteTx;
use eskit_sqlite::read_model::{SqliteView, Tables};
use eskit_testing::processor::views::{
    Balances, amount, c4_a_view_rebuilt_from_zero_equals_the_live_one,
    expected_balances as expected, write_movements as write,
};
use rusqlite::Connection;

type TestResult = Result<(), BoxError>;

/// Defines one test per backend for a shared read-model scenario.
macro_rules! on_memory_and_sqlite {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> super::TestResult {
                    eskit_testing::processor::read_models::$scenario(&super::common::Memory).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> super::TestResult {
                    let backend = super::common::Sqlite::new(stringify!($scenario))?;
                    eskit_testing::processor::read_models::$scenario(&backend).await
                }
            )*
        }
    };
}

on_memory_and_sqlite![
    c4_a_read_model_rebuilt_from_zero_equals_the_live_one,
    a_zero_downtime_rebuild_serves_the_whole_view_throughout,
    a_shadow_rebuild_while_the_live_view_runs_and_writes_go_on,
    a_caught_up_shadow_is_fed_by_the_live_view,
    a_refused_swap_changes_nothing,
    a_notifying_sink_announces_each_stored_page,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_state_view_rebuilt_from_zero_equals_the_live_one() -> TestResult {
    c4_a_view_rebuilt_from_zero_equals_the_live_one(&common::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_state_view_rebuilt_from_zero_equals_the_live_one() -> TestResult {
    c4_a_view_rebuilt_from_zero_equals_the_live_one(&common::Sqlite::new("c4-state")?).await
}

fn options(name: &str) -> Result<SubscriptionOptions, eskit_processor::SubscriptionError> {
    SubscriptionOptions::new(name)?.with_batch_size(500)
}

#[tokio::test]
async fn a_rebuild_resets_the_view_before_it_replays() -> TestResult {
    let store = MemoryStore::new();
    write(&store, 0, 500).await?;
    let view = Arc::new(Balances::default());
    // Rubbish left from an earlier run must not survive the rebuild.
    view.set("account/ghost", 42)?;
    rebuild(
        store.clone(),
        MemoryCheckpointStore::new(),
        options("b")?,
        ViewHandler::new("b", Arc::clone(&view)),
    )
    .await?;
    assert_eq!(view.rows()?, expected(&store).await?);
    Ok(())
}

type Map = BTreeMap<String, i64>;

fn memory_model() -> Result<MemoryReadModel<Map>, BoxError> {
    Ok(MemoryReadModel::new("balances", |m: &mut Map, e| {
        *m.entry(e.stream.to_string()).or_insert(0) += amount(e)?;
        Ok(())
    })?)
}

fn map_rows(m: &Map) -> Vec<(String, i64)> {
    m.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

#[tokio::test]
async fn a_memory_read_model_applies_a_page_whole_or_not_at_all() -> TestResult {
    let store = MemoryStore::new();
    write(&store, 0, 300).await?;
    let page = store
        .read(ReadOptions::new(GlobalCursor::START, 300))
        .await?;
    let model = memory_model()?;
    // The first 200 events apply; the last 100 carry a bad payload.
    let (good, rest) = page.events.split_at(200);
    model.apply("balances", good, good[199].cursor()).await?;
    let before = map_rows(&model.read());
    let mut bad = rest.to_vec();
    bad[50].payload = b"not a number".to_vec();
    assert!(model.apply("balances", &bad, page.next).await.is_err());
    assert_eq!(
        map_rows(&model.read()),
        before,
        "a failed page left part of its effect"
    );
    assert_eq!(model.cursor("balances").await?, Some(good[199].cursor()));
    // A page delivered twice has its effect once.
    model.apply("balances", rest, page.next).await?;
    model.apply("balances", &page.events, page.next).await?;
    assert_eq!(map_rows(&model.read()), expected(&store).await?);
    Ok(())
}

#[test]
fn bad_view_tables_are_refused() -> TestResult {
    struct Named(&'static [&'static str]);
    impl SqliteView for Named {
        fn tables(&self) -> &[&'static str] {
            self.0
        }
        fn create(&self, _: &Connection, _: &Tables) -> Result<(), BoxError> {
            Ok(())
        }
        fn apply(&self, _: &mut WriteTx<'_>, _: &Tables, _: &[RawEvent]) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let store = SqliteStore::open_in_memory()?;
    for bad in [
        &[][..],
        &["a b"],
        &["1st"],
        &["eskit_events"],
        &["t", "T"],
        &["x\"; DROP TABLE eskit_events; --"],
    ] {
        assert!(
            store.read_model("m", Named(bad)).is_err(),
            "{bad:?} was accepted"
        );
    }
    assert!(store.read_model("", Named(&["t"])).is_err());
    assert!(store.read_model("m", Named(&["t", "u_2"])).is_ok());
    Ok(())
}

#[test]
fn rebuild_futures_are_send() -> TestResult {
    fn send<T: Send>(_: T) {}
    let store = SqliteStore::open_in_memory()?;
    let model = store.read_model("m", common::SqlBalances)?;
    send(rebuild_in_shadow(store.clone(), &model, options("m")?));
    send(model.swap_in_shadow());
    send(rebuild(
        MemoryStore::new(),
        MemoryCheckpointStore::new(),
        options("m")?,
        ViewHandler::new("m", Arc::new(Balances::default())),
    ));
    Ok(())
}
