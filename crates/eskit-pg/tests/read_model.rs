//! Read models in the store's schema (`PgStore::read_model`): RELIABILITY
//! C4 and the zero-downtime shadow rebuild through
//! `eskit_testing::processor::read_models` (the scenarios memory and
//! SQLite run), the conformance suite's `sink.*` group through a read
//! model's sink, tenants rebuilding apart, and refused names. The server
//! comes from `ESKIT_PG_URL`.

mod common;
#[path = "common/processor.rs"]
mod pg_backend;

use eskit_core::{
    error::BoxError,
    event::{
        EventId, EventType, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName, TenantId,
    },
    store::{AppendOptions, BoxFuture, EventStore, GlobalReader, ShadowRebuild, TenantScoped},
};
use eskit_pg::read_model::{PgView, PgViewSink, ReadModelError, Tables};
use eskit_pg::{PgOptions, PgReadModel, PgStore};
use eskit_processor::SubscriptionOptions;
use eskit_processor::rebuild::rebuild_in_shadow;
use eskit_processor::view::run_to_head;
use eskit_testing::conformance::{Fixture, Suite};
use eskit_testing::processor::Parts;
use eskit_testing::processor::read_models::ReadModelBackend;
use eskit_testing::processor::views::{Row, amount, expected_balances};
use pg_backend::Postgres;
use sqlx::{PgConnection, Row as _};

type TestResult = Result<(), BoxError>;

/// Balances per account and movements per account, each page in two
/// statements (its sums per account, through `UNNEST`).
pub struct PgBalances;

impl PgView for PgBalances {
    fn tables(&self) -> &[&'static str] {
        &["balances", "movements"]
    }

    fn create<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        t: &'a Tables,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            for sql in [
                format!(
                    "CREATE TABLE IF NOT EXISTS {} (tenant text NOT NULL, account text NOT NULL, \
                     balance bigint NOT NULL, PRIMARY KEY (tenant, account))",
                    t.name("balances")
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {} (tenant, balance)",
                    t.index("balances_by_balance"),
                    t.name("balances")
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {} (tenant text NOT NULL, account text NOT NULL, \
                     n bigint NOT NULL, PRIMARY KEY (tenant, account))",
                    t.name("movements")
                ),
            ] {
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
            Ok(())
        })
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        t: &'a Tables,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let mut sums = std::collections::BTreeMap::<String, (i64, i64)>::new();
            for e in events {
                let s = sums.entry(e.stream.to_string()).or_default();
                s.0 += amount(e)?;
                s.1 += 1;
            }
            let accounts: Vec<&String> = sums.keys().collect();
            let amounts: Vec<i64> = sums.values().map(|s| s.0).collect();
            let counts: Vec<i64> = sums.values().map(|s| s.1).collect();
            for (table, column, values) in [
                (t.name("balances"), "balance", &amounts),
                (t.name("movements"), "n", &counts),
            ] {
                sqlx::query(&format!(
                    "INSERT INTO {table} AS t (tenant, account, {column}) \
                     SELECT $1, a, v FROM UNNEST($2::text[], $3::bigint[]) AS u(a, v) \
                     ON CONFLICT (tenant, account) DO UPDATE SET {column} = t.{column} + excluded.{column}"
                ))
                .bind(t.tenant())
                .bind(&accounts)
                .bind(values)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        })
    }
}

/// The balances and movements of `model`'s tenant, in one statement (one
/// snapshot).
async fn pg_rows(
    model: &PgReadModel<PgBalances>,
    store: &PgStore,
) -> Result<(Vec<Row>, i64), BoxError> {
    let t = model.tables();
    let row = sqlx::query(&format!(
        "SELECT coalesce((SELECT sum(n) FROM {m} WHERE tenant = $1), 0)::bigint, \
         coalesce(array_agg(account ORDER BY account), '{{}}'), \
         coalesce(array_agg(balance ORDER BY account), '{{}}') \
         FROM {b} WHERE tenant = $1",
        m = t.name("movements"),
        b = t.name("balances"),
    ))
    .bind(t.tenant())
    .fetch_one(store.pool())
    .await?;
    let moved: i64 = row.try_get(0)?;
    let accounts: Vec<String> = row.try_get(1)?;
    let balances: Vec<i64> = row.try_get(2)?;
    Ok((accounts.into_iter().zip(balances).collect(), moved))
}

impl ReadModelBackend for Postgres {
    type Model = PgReadModel<PgBalances>;
    type Sink = PgViewSink<PgBalances>;

    fn balances(&self, parts: &Parts<Self>, name: &str) -> Result<Self::Model, BoxError> {
        Ok(parts.store.read_model(name, PgBalances)?)
    }

    async fn setup(&self, model: &Self::Model) -> TestResult {
        Ok(model.setup().await?)
    }

    fn sink(&self, model: &Self::Model) -> Self::Sink {
        model.sink()
    }

    async fn rows(&self, model: &Self::Model) -> Result<(Vec<Row>, i64), BoxError> {
        pg_rows(model, model.store()).await
    }

    async fn cursor(&self, model: &Self::Model) -> Result<Option<GlobalCursor>, BoxError> {
        Ok(model.cursor().await?)
    }

    async fn reset(&self, model: &Self::Model) -> TestResult {
        Ok(model.reset().await?)
    }

    async fn drop_shadow(&self, model: &Self::Model) -> TestResult {
        Ok(model.drop_shadow().await?)
    }
}

macro_rules! on_postgres {
    ($($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() -> TestResult {
                eskit_testing::processor::read_models::$scenario(&Postgres::new("rm")).await
            }
        )*
    };
}

on_postgres![
    c4_a_read_model_rebuilt_from_zero_equals_the_live_one,
    a_zero_downtime_rebuild_serves_the_whole_view_throughout,
    a_shadow_rebuild_while_the_live_view_runs_and_writes_go_on,
    a_caught_up_shadow_is_fed_by_the_live_view,
    a_refused_swap_changes_nothing,
    a_notifying_sink_announces_each_stored_page,
];

/// Appends `appends` deposits of 1 to 10 streams of tenant `tenant` (stream
/// names belong to one tenant).
async fn deposit(store: &PgStore, tenant: &str, appends: usize) -> TestResult {
    let ty = EventType::new("Deposited")?;
    for i in 0..appends {
        let s = StreamName::new("account", format!("{tenant}-{}", i % 10))?;
        let e = NewEvent::new(ty.clone(), format!("{}", 1 + i % 10).into_bytes());
        store
            .append(&s, ExpectedVersion::Any, vec![e], AppendOptions::new())
            .await?;
    }
    Ok(())
}

/// Two tenants share the tables: one rebuilds (in place and in a shadow)
/// and resets, the other's rows and cursor stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_rebuild_and_reset_their_own_rows_only() -> TestResult {
    let store = PgStore::connect(
        PgOptions::new(common::url()?).with_schema(common::fresh_schema("rm_tenants")),
    )
    .await?;
    let (a, b) = (
        store.for_tenant(TenantId::new("a")?),
        store.for_tenant(TenantId::new("b")?),
    );
    let options = || SubscriptionOptions::new("balances")?.with_batch_size(500);
    let mut models = Vec::new();
    for (handle, tenant, events) in [(&a, "a", 300), (&b, "b", 200)] {
        deposit(handle, tenant, events).await?;
        let model = handle.read_model("balances", PgBalances)?;
        model.setup().await?;
        run_to_head(eskit_processor::Subscription::with_sink(
            handle.clone(),
            model.sink(),
            options()?,
        ))
        .await?;
        assert_eq!(
            pg_rows(&model, handle).await?.0,
            expected_balances(handle).await?
        );
        models.push(model);
    }
    let b_before = pg_rows(&models[1], &b).await?;
    let b_cursor = models[1].cursor().await?;
    deposit(&a, "a", 100).await?;
    rebuild_in_shadow(a.clone(), &models[0], options()?).await?;
    assert_eq!(
        pg_rows(&models[0], &a).await?.0,
        expected_balances(&a).await?
    );
    assert_eq!(
        pg_rows(&models[1], &b).await?,
        b_before,
        "a's swap touched b's rows"
    );
    models[0].reset().await?;
    assert_eq!(pg_rows(&models[0], &a).await?, (Vec::new(), 0));
    assert_eq!(
        pg_rows(&models[1], &b).await?,
        b_before,
        "a's reset touched b's rows"
    );
    assert_eq!(models[1].cursor().await?, b_cursor);
    // b's shadow is b's alone: begun while a's was dropped.
    let _b_shadow = models[1].begin_shadow().await?;
    models[0].drop_shadow().await?;
    assert_eq!(
        models[1].swap_in_shadow().await?,
        eskit_core::store::SwapOutcome::Behind {
            shadow: None,
            live: b.head().await?,
        }
    );
    store.close().await;
    Ok(())
}

/// A view whose table lacks the tenant column is refused at setup, and
/// bad names are refused before any SQL runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_views_are_refused() -> TestResult {
    struct Named(&'static [&'static str], bool);
    impl PgView for Named {
        fn tables(&self) -> &[&'static str] {
            self.0
        }
        fn create<'a>(
            &'a self,
            conn: &'a mut PgConnection,
            t: &'a Tables,
        ) -> BoxFuture<'a, Result<(), BoxError>> {
            Box::pin(async move {
                let tenant = if self.1 { "tenant text NOT NULL, " } else { "" };
                for table in self.0 {
                    sqlx::query(&format!(
                        "CREATE TABLE IF NOT EXISTS {} ({tenant}x bigint)",
                        t.name(table)
                    ))
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        }
        fn apply<'a>(
            &'a self,
            _: &'a mut PgConnection,
            _: &'a Tables,
            _: &'a [RawEvent],
        ) -> BoxFuture<'a, Result<(), BoxError>> {
            Box::pin(async { Ok(()) })
        }
    }
    let store = PgStore::connect(
        PgOptions::new(common::url()?).with_schema(common::fresh_schema("rm_bad")),
    )
    .await?;
    for bad in [
        &[][..],
        &["a b"],
        &["Upper"],
        &["1st"],
        &["eskit_x"],
        &["pg_x"],
        &["events"],
        &["checkpoints"],
        &["dead_letters"],
        &["t", "t"],
        &["x\"; DROP TABLE events; --"],
        &["a_name_of_forty_nine_bytes_is_too_long_for_a_view"],
    ] {
        assert!(
            store.read_model("m", Named(bad, true)).is_err(),
            "{bad:?} was accepted"
        );
    }
    assert!(matches!(
        store.read_model("", Named(&["t"], true)),
        Err(ReadModelError::Name(_))
    ));
    let ok = store.read_model("m", Named(&["t", "u_2"], true))?;
    ok.setup().await?;
    let no_tenant = store.read_model("n", Named(&["v"], false))?;
    let err = no_tenant
        .setup()
        .await
        .err()
        .ok_or("a table without a tenant column was accepted")?;
    let source = std::error::Error::source(&err).ok_or("no source")?;
    assert!(
        matches!(
            source.downcast_ref::<ReadModelError>(),
            Some(ReadModelError::NoTenantColumn { table }) if table == "v"
        ),
        "{err:?}"
    );
    // The failed setup rolled back: the table was not created.
    let exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL")
        .bind(no_tenant.tables().name("v"))
        .fetch_one(store.pool())
        .await?
        .try_get(0)?;
    assert!(!exists);
    store.close().await;
    Ok(())
}

/// Each event's id, in order, for the conformance `sink.*` scenarios; a
/// `refuse` payload refuses the page.
struct RecordIds;

impl PgView for RecordIds {
    fn tables(&self) -> &[&'static str] {
        &["sink_effects"]
    }

    fn create<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        t: &'a Tables,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {} (tenant text NOT NULL, n bigserial, id bytea NOT NULL, \
                 PRIMARY KEY (tenant, n))",
                t.name("sink_effects")
            ))
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        t: &'a Tables,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            for e in events {
                if e.payload == b"refuse" {
                    return Err("the sink scenarios refuse this event".into());
                }
                sqlx::query(&format!(
                    "INSERT INTO {} (tenant, id) VALUES ($1, $2)",
                    t.name("sink_effects")
                ))
                .bind(t.tenant())
                .bind(e.id.to_bytes().to_vec())
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        })
    }
}

/// The conformance suite's projection-sink scenarios pass through a read
/// model's live sink.
#[test]
fn the_sink_conformance_group_passes_through_a_read_model() -> TestResult {
    let url = common::url()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let report = Suite::new("postgres read model", move || {
        let options = PgOptions::new(url.clone())
            .with_schema(common::fresh_schema("rm_conf"))
            .with_runtime(handle.clone());
        let handle = handle.clone();
        async move {
            let store = PgStore::connect(options).await?;
            let model = store.read_model("sink-projection", RecordIds)?;
            let setup = model.clone();
            handle.spawn(async move { setup.setup().await }).await??;
            let (reader, table) = (store.clone(), model.tables().name("sink_effects"));
            let closer = store.clone();
            Ok::<_, BoxError>(
                Fixture::store(store.clone())
                    .with_sink(model.sink(), move || {
                        let (store, table, handle) =
                            (reader.clone(), table.clone(), handle.clone());
                        async move {
                            let rows = handle
                                .spawn(async move {
                                    sqlx::query(&format!("SELECT id FROM {table} ORDER BY n"))
                                        .fetch_all(store.pool())
                                        .await
                                })
                                .await??;
                            rows.iter()
                                .map(|r| {
                                    let bytes: Vec<u8> = r.try_get(0)?;
                                    let bytes: [u8; 16] =
                                        bytes.try_into().map_err(|_| "an id of 16 bytes")?;
                                    Ok(EventId::from_bytes(bytes))
                                })
                                .collect::<Result<Vec<_>, BoxError>>()
                        }
                    })
                    .with_close(move || closer.close()),
            )
        }
    })
    .filter("sink.")
    .run();
    runtime.shutdown_background();
    assert!(report.is_success(), "{report}");
    assert!(
        report.summary().contains("7 passed"),
        "{}",
        report.summary()
    );
    Ok(())
}
