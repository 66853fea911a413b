//! Read models of tenants: the same read model name on two tenant handles
//! and the unscoped one keeps three sets of tables, so no tenant's query
//! sees another's rows, and a shadow rebuild of one tenant leaves the
//! others untouched.

mod common;

use common::{TempDir, TestResult, event, stream};
use eskit_core::error::BoxError;
use eskit_core::event::{ExpectedVersion, GlobalCursor, RawEvent, TenantId};
use eskit_core::rt::block_on;
use eskit_core::store::{
    AppendOptions, EventStore, GlobalReader, ProjectionSink, ReadOptions, ShadowRebuild,
    SwapOutcome, TenantScoped,
};
use eskit_sqlite::read_model::{SqliteView, Tables};
use eskit_sqlite::{SqliteStore, WriteTx};
use rusqlite::Connection;

/// One row per stream with the payloads seen, in order.
struct Seen;

impl SqliteView for Seen {
    fn tables(&self) -> &[&'static str] {
        &["seen"]
    }

    fn create(&self, conn: &Connection, t: &Tables) -> Result<(), BoxError> {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (stream TEXT PRIMARY KEY, payloads TEXT NOT NULL); \
             CREATE INDEX IF NOT EXISTS {} ON {} (payloads);",
            t.name("seen"),
            t.name("seen_by_payloads"),
            t.name("seen"),
        ))?;
        Ok(())
    }

    fn apply(&self, tx: &mut WriteTx<'_>, t: &Tables, events: &[RawEvent]) -> Result<(), BoxError> {
        let sql = format!(
            "INSERT INTO {} (stream, payloads) VALUES (?1, ?2) \
             ON CONFLICT (stream) DO UPDATE SET payloads = payloads || ',' || ?2",
            t.name("seen")
        );
        let mut insert = tx.connection().prepare_cached(&sql)?;
        for e in events {
            insert.execute([e.stream.to_string(), String::from_utf8(e.payload.clone())?])?;
        }
        Ok(())
    }
}

fn rows(
    model: &eskit_sqlite::read_model::SqliteReadModel<Seen>,
) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
    let sql = format!(
        "SELECT stream, payloads FROM {} ORDER BY stream",
        model.tables().name("seen")
    );
    Ok(block_on(model.query(move |c| {
        let mut s = c.prepare(&sql)?;
        let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }))?)
}

/// Applies everything the handle can read to its read model's live sink.
fn catch_up(
    store: &SqliteStore,
    model: &eskit_sqlite::read_model::SqliteReadModel<Seen>,
) -> TestResult {
    let batch = block_on(store.read(ReadOptions::new(GlobalCursor::START, 1_000)))?;
    block_on(model.sink().apply(model.name(), &batch.events, batch.next))?;
    Ok(())
}

#[test]
fn each_tenant_keeps_its_own_tables() -> TestResult {
    let dir = TempDir::new("read-model-tenants")?;
    let store = SqliteStore::open(dir.file("events.db"))?;
    let acme = store.for_tenant(TenantId::new("acme")?);
    let globex = store.for_tenant(TenantId::new("globex")?);
    for (handle, who) in [(&store, "none"), (&acme, "acme"), (&globex, "globex")] {
        for i in 0..3 {
            block_on(handle.append(
                &stream("order", &format!("{who}-{i}"))?,
                ExpectedVersion::Any,
                vec![event("Placed", &format!("{who}{i}"))?],
                AppendOptions::new(),
            ))?;
        }
    }
    let models = [
        store.read_model("orders", Seen)?,
        acme.read_model("orders", Seen)?,
        globex.read_model("orders", Seen)?,
    ];
    assert_eq!(models[0].tables().name("seen"), "seen");
    assert_ne!(models[1].tables(), models[2].tables());
    for (handle, model) in [&store, &acme, &globex].into_iter().zip(&models) {
        block_on(model.setup())?;
        catch_up(handle, model)?;
    }
    for (model, who) in models.iter().zip(["none", "acme", "globex"]) {
        let seen = rows(model)?;
        let expected: Vec<(String, String)> = (0..3)
            .map(|i| (format!("order/{who}-{i}"), format!("{who}{i}")))
            .collect();
        assert_eq!(seen, expected, "read model of {who}");
    }

    // A shadow rebuild of acme's read model swaps acme's tables only.
    let acme_model = &models[1];
    let shadow = block_on(acme_model.begin_shadow())?;
    let batch = block_on(acme.read(ReadOptions::new(GlobalCursor::START, 1_000)))?;
    block_on(shadow.apply(
        acme_model.shadow_name(),
        &batch.events[..1],
        batch.events[0].cursor(),
    ))?;
    block_on(shadow.apply(acme_model.shadow_name(), &batch.events[1..], batch.next))?;
    assert!(matches!(
        block_on(acme_model.swap_in_shadow())?,
        SwapOutcome::Swapped { .. }
    ));
    assert_eq!(rows(acme_model)?.len(), 3);
    assert_eq!(rows(&models[2])?.len(), 3);
    assert_eq!(rows(&models[0])?.len(), 3);
    // No shadow is left of any tenant: the next rebuild starts clean.
    assert!(matches!(
        block_on(models[2].swap_in_shadow())?,
        SwapOutcome::NoShadow
    ));
    assert!(matches!(
        block_on(acme_model.swap_in_shadow())?,
        SwapOutcome::NoShadow
    ));

    // Resetting globex's read model empties globex's tables only.
    block_on(models[2].reset())?;
    assert!(rows(&models[2])?.is_empty());
    assert_eq!(rows(acme_model)?.len(), 3);
    assert_eq!(rows(&models[0])?.len(), 3);
    block_on(store.close());
    Ok(())
}
