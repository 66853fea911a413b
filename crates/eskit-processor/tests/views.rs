//! RELIABILITY C4 on memory and SQLite: a state view rebuilt from zero
//! equals the live one (by a hash of its rows; the scenario is
//! `eskit_testing::processor::views`'s), and a zero-downtime rebuild
//! on SQLite serves the full view to a reader throughout.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eskit_core::{
    error::BoxError,
    event::{GlobalCursor, RawEvent},
    memory::{MemoryCheckpointStore, MemoryReadModel, MemoryStore},
    store::{GlobalReader, ProjectionSink, ReadOptions, ShadowRebuild},
};
use eskit_processor::notifier::ChangeNotifier;
use eskit_processor::rebuild::rebuild_in_shadow;
use eskit_processor::view::{NotifyingSink, StateView, ViewHandler, rebuild, run_to_head};
use eskit_processor::{Subscription, SubscriptionOptions, SubscriptionState};
use eskit_sqlite::read_model::{SqliteView, Tables};
use eskit_sqlite::{SqliteReadModel, SqliteStore, WriteTx};
use eskit_testing::processor::views::{
    EVENTS, PER_APPEND, amount, c4_a_view_rebuilt_from_zero_equals_the_live_one,
    expected_balances as expected, hash_rows, write_movements as write,
};
use rusqlite::Connection;

type TestResult = Result<(), BoxError>;

/// The most events the busy-rebuild test writes while it waits.
const MAX_BUSY_EVENTS: usize = 200_000;

async fn head<R: GlobalReader>(reader: &R) -> Result<GlobalCursor, BoxError> {
    let mut after = GlobalCursor::START;
    loop {
        let page = reader.read(ReadOptions::new(after, 1000)).await?;
        if page.events.is_empty() {
            return Ok(after);
        }
        after = page.next;
    }
}

/// Waits until a subscription's health shows it live at `target` or later.
async fn reached(health: eskit_processor::HealthHandle, target: GlobalCursor) {
    loop {
        let h = health.snapshot();
        if (h.state == SubscriptionState::Live && h.cursor >= target)
            || h.state == SubscriptionState::Stopped
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// --- memory -------------------------------------------------------------

/// Balances per account in memory.
#[derive(Default)]
struct Balances(Mutex<BTreeMap<String, i64>>);

impl Balances {
    fn rows(&self) -> Vec<(String, i64)> {
        let b = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        b.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

impl StateView for Balances {
    async fn reset(&self) -> Result<(), BoxError> {
        self.0.lock().map_err(|_| "poisoned")?.clear();
        Ok(())
    }

    async fn apply(&self, events: &[RawEvent]) -> Result<(), BoxError> {
        let mut b = self.0.lock().map_err(|_| "poisoned")?;
        for e in events {
            *b.entry(e.stream.to_string()).or_insert(0) += amount(e)?;
        }
        Ok(())
    }
}

fn options(name: &str) -> Result<SubscriptionOptions, eskit_processor::SubscriptionError> {
    SubscriptionOptions::new(name)?.with_batch_size(500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_view_rebuilt_from_zero_equals_the_live_one() -> TestResult {
    c4_a_view_rebuilt_from_zero_equals_the_live_one(&common::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_state_view_rebuilt_from_zero_equals_the_live_one() -> TestResult {
    c4_a_view_rebuilt_from_zero_equals_the_live_one(&common::Sqlite::new("c4-state")?).await
}

#[tokio::test]
async fn a_rebuild_resets_the_view_before_it_replays() -> TestResult {
    let store = MemoryStore::new();
    write(&store, 0, 500).await?;
    let view = Arc::new(Balances::default());
    // Rubbish left from an earlier run must not survive the rebuild.
    view.0
        .lock()
        .map_err(|_| "poisoned")?
        .insert("account/ghost".into(), 42);
    rebuild(
        store.clone(),
        MemoryCheckpointStore::new(),
        options("b")?,
        ViewHandler::new("b", Arc::clone(&view)),
    )
    .await?;
    assert_eq!(view.rows(), expected(&store).await?);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_zero_downtime_rebuild_serves_the_whole_view_throughout() -> TestResult {
    let store = MemoryStore::new();
    let model = memory_model()?;
    write(&store, 0, EVENTS).await?;
    let sub = Subscription::with_sink(store.clone(), model.clone(), options("balances")?);
    let head = run_to_head(sub).await?;
    let rows = map_rows(&model.read());
    assert_eq!(rows, expected(&store).await?);
    let want = hash_rows(&rows);

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (model, done) = (model.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let (mut reads, mut wrong) = (0u64, 0u64);
            while !done.load(Ordering::Acquire) {
                if hash_rows(&map_rows(&model.read())) != want {
                    wrong += 1;
                }
                reads += 1;
                tokio::task::yield_now().await;
            }
            (reads, wrong)
        })
    };
    for _ in 0..2 {
        let cursor = rebuild_in_shadow(store.clone(), &model, options("balances")?).await?;
        assert_eq!(cursor, head);
    }
    done.store(true, Ordering::Release);
    let (reads, wrong) = reader.await?;
    println!("reads during the rebuilds: {reads}, wrong: {wrong}");
    assert!(reads > 0);
    assert_eq!(wrong, 0, "a reader saw an empty or partial view");
    assert_eq!(hash_rows(&map_rows(&model.read())), want);
    assert_eq!(model.cursor("balances").await?, Some(head));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_shadow_rebuild_while_the_live_view_runs_and_writes_go_on() -> TestResult {
    let store = MemoryStore::new();
    let model = memory_model()?;
    write(&store, 0, 10_000).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sub = Subscription::with_sink(store.clone(), model.clone(), options("balances")?);
    let health = sub.health();
    let run = tokio::spawn(sub.run(async move {
        let _ = stop_rx.await;
    }));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, done) = (store.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut written = 10_000;
            while !done.load(Ordering::Acquire) && written < MAX_BUSY_EVENTS {
                write(&store, written, 200)
                    .await
                    .map_err(|e| e.to_string())?;
                written += 200;
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(written)
        })
    };
    let rebuilt = rebuild_in_shadow(store.clone(), &model, options("balances")?).await;
    done.store(true, Ordering::Release);
    writer.await??;
    rebuilt?;
    let head = head(&store).await?;
    reached(health, head).await;
    let _ = stop_tx.send(());
    run.await??;
    assert_eq!(
        map_rows(&model.read()),
        expected(&store).await?,
        "an event was lost or applied twice around the swap"
    );
    Ok(())
}

#[tokio::test]
async fn memory_a_caught_up_shadow_is_fed_by_the_live_view() -> TestResult {
    let store = MemoryStore::new();
    let model = memory_model()?;
    write(&store, 0, 1_000).await?;
    let first = run_to_head(Subscription::with_sink(
        store.clone(),
        model.clone(),
        options("balances")?,
    ))
    .await?;
    let shadow = Arc::new(model.begin_shadow().await?);
    let fill = || -> Result<_, eskit_processor::SubscriptionError> {
        Ok(Subscription::with_sink(
            store.clone(),
            Arc::clone(&shadow),
            options(model.shadow_name())?,
        ))
    };
    assert_eq!(run_to_head(fill()?).await?, first);
    write(&store, 1_000, 1_000).await?;
    let second = run_to_head(Subscription::with_sink(
        store.clone(),
        model.clone(),
        options("balances")?,
    ))
    .await?;
    assert_eq!(
        shadow.cursor(model.shadow_name()).await?,
        Some(second),
        "the live view did not feed the caught-up shadow"
    );
    assert_eq!(run_to_head(fill()?).await?, second);
    assert_eq!(
        model.swap_in_shadow().await?,
        eskit_core::store::SwapOutcome::Swapped { cursor: second }
    );
    assert_eq!(map_rows(&model.read()), expected(&store).await?);
    // The swapped-in shadow's sink is spent.
    assert!(shadow.cursor(model.shadow_name()).await.is_err());
    Ok(())
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

// --- SQLite -------------------------------------------------------------

/// Balances per account in SQLite tables, with an index (so the swap has
/// one to rename) and a second table of per-account event counts.
struct SqlBalances;

impl SqliteView for SqlBalances {
    fn tables(&self) -> &[&'static str] {
        &["balances", "movements"]
    }

    fn create(&self, conn: &Connection, t: &Tables) -> Result<(), BoxError> {
        let (balances, movements) = (t.name("balances"), t.name("movements"));
        let by_balance = t.name("balances_by_balance");
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {balances} (account TEXT PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS {by_balance} ON {balances} (balance);
             CREATE TABLE IF NOT EXISTS {movements} (account TEXT PRIMARY KEY, n INTEGER NOT NULL);"
        ))?;
        Ok(())
    }

    fn apply(&self, tx: &mut WriteTx<'_>, t: &Tables, events: &[RawEvent]) -> Result<(), BoxError> {
        let conn = tx.connection();
        let mut balance = conn.prepare_cached(&format!(
            "INSERT INTO {} (account, balance) VALUES (?1, ?2)
             ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
            t.name("balances")
        ))?;
        let mut moved = conn.prepare_cached(&format!(
            "INSERT INTO {} (account, n) VALUES (?1, 1)
             ON CONFLICT (account) DO UPDATE SET n = n + 1",
            t.name("movements")
        ))?;
        for e in events {
            let account = e.stream.to_string();
            balance.execute((&account, amount(e)?))?;
            moved.execute([&account])?;
        }
        Ok(())
    }
}

type Rows = Vec<(String, i64)>;

async fn sql_rows(
    model: &SqliteReadModel<SqlBalances>,
) -> Result<(Rows, i64), eskit_core::error::StoreError> {
    model
        .query(|c| {
            let mut s = c.prepare("SELECT account, balance FROM balances ORDER BY account")?;
            let rows = s
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Rows, _>>()?;
            let moved: i64 = c.query_row("SELECT coalesce(sum(n), 0) FROM movements", [], |r| {
                r.get(0)
            })?;
            Ok((rows, moved))
        })
        .await
}

/// The names of the tables and indexes of the view's tables: no shadow
/// one may be left behind, and the index keeps its live name.
async fn schema(
    model: &SqliteReadModel<SqlBalances>,
) -> Result<Vec<String>, eskit_core::error::StoreError> {
    model
        .query(|c| {
            let mut s = c.prepare(
                "SELECT name FROM sqlite_master WHERE sql IS NOT NULL \
                 AND tbl_name IN ('balances', 'movements', 'eskit_shadow_balances', 'eskit_shadow_movements') \
                 ORDER BY name",
            )?;
            s.query_map([], |r| r.get(0))?.collect()
        })
        .await
}

struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new(tag: &str) -> Result<Self, std::io::Error> {
        let dir = std::env::temp_dir().join(format!("eskit-views-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
    fn file(&self) -> std::path::PathBuf {
        self.0.join("events.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running live subscription: its stop signal, health and task.
type Live = (
    tokio::sync::oneshot::Sender<()>,
    eskit_processor::HealthHandle,
    tokio::task::JoinHandle<Result<(), eskit_processor::SubscriptionError>>,
);

/// Runs the live subscription of `model` until `stop` fires.
fn spawn_live(
    store: &SqliteStore,
    model: &SqliteReadModel<SqlBalances>,
) -> Result<Live, eskit_processor::SubscriptionError> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sub = Subscription::with_sink(store.clone(), model.sink(), options(model.name())?);
    let health = sub.health();
    let run = tokio::spawn(sub.run(async move {
        let _ = stop_rx.await;
    }));
    Ok((stop_tx, health, run))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_view_rebuilt_from_zero_equals_the_live_one() -> TestResult {
    let db = TempDb::new("c4")?;
    let store = SqliteStore::open(db.file())?;
    let model = store.read_model("balances", SqlBalances)?;
    model.setup().await?;

    let (stop, health, run) = spawn_live(&store, &model)?;
    write(&store, 0, EVENTS).await?;
    let head = head(&store).await?;
    reached(health, head).await;
    let _ = stop.send(());
    run.await??;

    let want = expected(&store).await?;
    let (rows, moved) = sql_rows(&model).await?;
    assert_eq!(rows, want, "the live view misses or repeats an event");
    assert_eq!(moved, i64::try_from(EVENTS)?);
    let live_hash = hash_rows(&rows);
    assert_eq!(model.cursor().await?, Some(head));

    // Rebuilt in place: emptied, then replayed from the start.
    model.reset().await?;
    assert_eq!(sql_rows(&model).await?.0, Vec::new());
    assert_eq!(model.cursor().await?, None);
    let sub = Subscription::with_sink(store.clone(), model.sink(), options("balances")?);
    assert_eq!(run_to_head(sub).await?, head);
    let (rows, moved) = sql_rows(&model).await?;
    assert_eq!(hash_rows(&rows), live_hash);
    assert_eq!(moved, i64::try_from(EVENTS)?);

    // Rebuilt in a shadow, then swapped in.
    let cursor = rebuild_in_shadow(store.clone(), &model, options("balances")?).await?;
    assert_eq!(cursor, head);
    let (rows, moved) = sql_rows(&model).await?;
    assert_eq!(hash_rows(&rows), live_hash);
    assert_eq!(moved, i64::try_from(EVENTS)?);
    assert_eq!(model.cursor().await?, Some(head));
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_zero_downtime_rebuild_serves_the_whole_view_throughout() -> TestResult {
    let db = TempDb::new("zdt")?;
    let store = SqliteStore::open(db.file())?;
    let model = store.read_model("balances", SqlBalances)?;
    model.setup().await?;
    write(&store, 0, EVENTS).await?;
    let sub = Subscription::with_sink(store.clone(), model.sink(), options("balances")?);
    let head = run_to_head(sub).await?;
    let (rows, _) = sql_rows(&model).await?;
    let want = hash_rows(&rows);

    // A reader queries without pause while the view is rebuilt twice (the
    // second rebuild finds the indexes the first one swapped in).
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (model, done) = (model.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let (mut reads, mut wrong) = (0u64, 0u64);
            while !done.load(Ordering::Acquire) {
                let (rows, moved) = sql_rows(&model).await?;
                reads += 1;
                if hash_rows(&rows) != want || moved != EVENTS as i64 {
                    wrong += 1;
                }
            }
            Ok::<_, eskit_core::error::StoreError>((reads, wrong))
        })
    };
    for _ in 0..2 {
        let cursor = rebuild_in_shadow(store.clone(), &model, options("balances")?).await?;
        assert_eq!(cursor, head);
        assert_eq!(
            schema(&model).await?,
            ["balances", "balances_by_balance", "movements"]
        );
    }
    done.store(true, Ordering::Release);
    let (reads, wrong) = reader.await??;
    println!("reads during the rebuilds: {reads}, wrong: {wrong}");
    assert!(reads > 0);
    assert_eq!(wrong, 0, "a reader saw an empty or partial view");
    assert_eq!(hash_rows(&sql_rows(&model).await?.0), want);
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_shadow_rebuild_while_the_live_view_runs_and_writes_go_on() -> TestResult {
    let db = TempDb::new("busy")?;
    let store = SqliteStore::open(db.file())?;
    let model = store.read_model("balances", SqlBalances)?;
    model.setup().await?;
    write(&store, 0, 10_000).await?;
    let (stop, health, run) = spawn_live(&store, &model)?;

    // Writes go on, without pause, until the rebuild is done; the live
    // subscription keeps going before, during and after the swap.
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, done) = (store.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut written = 10_000;
            while !done.load(Ordering::Acquire) && written < MAX_BUSY_EVENTS {
                write(&store, written, 200)
                    .await
                    .map_err(|e| e.to_string())?;
                written += 200;
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(written)
        })
    };
    let rebuilt = rebuild_in_shadow(store.clone(), &model, options("balances")?).await;
    done.store(true, Ordering::Release);
    let written = writer.await??;
    rebuilt?;
    println!(
        "events written while the view was rebuilt: {}",
        written - 10_000
    );
    let head = head(&store).await?;
    reached(health, head).await;
    let _ = stop.send(());
    run.await??;
    let (rows, moved) = sql_rows(&model).await?;
    assert_eq!(
        rows,
        expected(&store).await?,
        "an event was lost or applied twice around the swap"
    );
    assert_eq!(moved, i64::try_from(written)?);
    assert_eq!(model.cursor().await?, Some(head));
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn a_caught_up_shadow_is_fed_by_the_live_view_so_the_swap_succeeds() -> TestResult {
    let db = TempDb::new("feed")?;
    let store = SqliteStore::open(db.file())?;
    let model = store.read_model("balances", SqlBalances)?;
    model.setup().await?;
    let live = || -> Result<_, eskit_processor::SubscriptionError> {
        Ok(Subscription::with_sink(
            store.clone(),
            model.sink(),
            options("balances")?,
        ))
    };
    write(&store, 0, 1_000).await?;
    let first = run_to_head(live()?).await?;
    let shadow = model.begin_shadow().await?;
    let fill = || -> Result<_, eskit_processor::SubscriptionError> {
        Ok(Subscription::with_sink(
            store.clone(),
            shadow.clone(),
            options(model.shadow_name())?,
        ))
    };
    assert_eq!(run_to_head(fill()?).await?, first);

    // The live view moves on while the shadow's subscription is idle: each
    // of its pages goes to the shadow too, so the swap is not refused.
    write(&store, 1_000, 1_000).await?;
    let second = run_to_head(live()?).await?;
    assert_eq!(
        shadow.cursor(model.shadow_name()).await?,
        Some(second),
        "the live view did not feed the caught-up shadow"
    );
    // The shadow's own subscription catching up afterwards finds nothing
    // left to apply.
    assert_eq!(run_to_head(fill()?).await?, second);
    assert_eq!(
        model.swap_in_shadow().await?,
        eskit_core::store::SwapOutcome::Swapped { cursor: second }
    );
    let (rows, moved) = sql_rows(&model).await?;
    assert_eq!(
        rows,
        expected(&store).await?,
        "the fed shadow lost or repeated an event"
    );
    assert_eq!(moved, 2_000);

    // A shadow that is behind is not fed; dropping it stops everything.
    let _behind = model.begin_shadow().await?;
    write(&store, 2_000, 100).await?;
    run_to_head(live()?).await?;
    model.drop_shadow().await?;
    assert_eq!(
        model.swap_in_shadow().await?,
        eskit_core::store::SwapOutcome::NoShadow
    );
    assert_eq!(sql_rows(&model).await?.0, expected(&store).await?);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn a_swap_without_a_shadow_or_behind_the_live_view_changes_nothing() -> TestResult {
    let db = TempDb::new("swap")?;
    let store = SqliteStore::open(db.file())?;
    let model = store.read_model("balances", SqlBalances)?;
    model.setup().await?;
    assert_eq!(
        model.swap_in_shadow().await?,
        eskit_core::store::SwapOutcome::NoShadow
    );
    write(&store, 0, 1_000).await?;
    let shadow = model.begin_shadow().await?;
    let sub = Subscription::with_sink(store.clone(), model.sink(), options("balances")?);
    let head = run_to_head(sub).await?;
    let before = sql_rows(&model).await?;
    // The shadow has nothing yet: the live view is ahead.
    let outcome = model.swap_in_shadow().await?;
    assert!(
        matches!(outcome, eskit_core::store::SwapOutcome::Behind { shadow: None, live } if live == head)
    );
    assert_eq!(sql_rows(&model).await?, before);
    drop(shadow);
    Ok(())
}

#[tokio::test]
async fn a_notifying_sink_announces_each_stored_page() -> TestResult {
    let db = TempDb::new("notify")?;
    let store = SqliteStore::open(db.file())?;
    let model = store.read_model("balances", SqlBalances)?;
    model.setup().await?;
    let notifier = ChangeNotifier::new();
    let mut a0 = notifier.watch("balances", "account/a-0");
    let a1 = notifier.watch("balances", "account/a-1");
    // One append of 100 events, all to account a-0.
    write(&store, 0, PER_APPEND).await?;
    let sink = NotifyingSink::new(model.sink(), notifier.clone(), "balances");
    run_to_head(Subscription::with_sink(
        store.clone(),
        sink,
        options("balances")?,
    ))
    .await?;
    assert_eq!(a0.changed().await?, 1);
    assert!(!a1.has_changed()?);
    // The announcement follows the commit: a woken reader sees the page.
    assert_eq!(sql_rows(&model).await?.0, expected(&store).await?);
    store.close().await;
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
    let model = store.read_model("m", SqlBalances)?;
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
