//! RELIABILITY C1, C2 (in one process, with a transactional sink), C3 and
//! C4 on PostgreSQL through eskit-processor, with the checkpoints and dead
//! letters in the store's schema. The scenarios
//! are `eskit_testing::processor`'s (the same memory and SQLite run); the
//! server comes from `ESKIT_PG_URL`.

mod common;
#[path = "common/processor.rs"]
mod pg_backend;

use std::collections::HashMap;

use eskit_core::event::EventId;
use eskit_testing::processor::Parts;
use eskit_testing::processor::exactly_once::{self, EffectsBackend};
use eskit_testing::processor::{delivery, poison, views};
use pg_backend::Postgres;
use sqlx::Row as _;

type TestResult = Result<(), eskit_core::error::BoxError>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c1_every_subscription_sees_its_part_once_in_order() -> TestResult {
    delivery::c1_every_subscription_sees_its_part_once_in_order(&Postgres::new("c1")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c3_poison_is_dead_lettered_and_the_rest_handled() -> TestResult {
    poison::c3_poison_is_dead_lettered_and_the_rest_handled(&Postgres::new("c3dl")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c3_poison_halts_without_skipping() -> TestResult {
    poison::c3_poison_halts_without_skipping(&Postgres::new("c3halt")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c4_a_state_view_rebuilt_from_zero_equals_the_live_one() -> TestResult {
    views::c4_a_view_rebuilt_from_zero_equals_the_live_one(&Postgres::new("c4")).await
}

/// One row per applied event in the schema's `effects` table, with no
/// unique key, so a redelivered effect shows as a second row.
pub struct Effects {
    table: String,
}

impl eskit_pg::PgProjection for Effects {
    fn apply<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        events: &'a [eskit_core::event::RawEvent],
    ) -> eskit_core::store::BoxFuture<'a, Result<(), eskit_core::error::BoxError>> {
        Box::pin(async move {
            let ids: Vec<Vec<u8>> = events.iter().map(|e| e.id.to_bytes().to_vec()).collect();
            sqlx::query(&format!(
                "INSERT INTO {} (event_id) SELECT * FROM UNNEST($1::bytea[])",
                self.table
            ))
            .bind(ids)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }
}

impl EffectsBackend for Postgres {
    type Sink = eskit_pg::PgSink<Effects>;

    async fn effects(
        &self,
        parts: &Parts<Self>,
    ) -> Result<Self::Sink, eskit_core::error::BoxError> {
        let table = format!("\"{}\".effects", parts.store.schema().as_str());
        sqlx::query(&format!(
            "CREATE TABLE {table} (n bigserial PRIMARY KEY, event_id bytea NOT NULL)"
        ))
        .execute(parts.store.pool())
        .await?;
        Ok(parts.store.projection_sink(Effects { table }))
    }

    async fn counts(
        &self,
        parts: &Parts<Self>,
        _: &Self::Sink,
    ) -> Result<HashMap<EventId, i64>, eskit_core::error::BoxError> {
        let rows = sqlx::query(&format!(
            "SELECT event_id, count(*) FROM \"{}\".effects GROUP BY event_id",
            parts.store.schema().as_str()
        ))
        .fetch_all(parts.store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: Vec<u8> = r.try_get(0)?;
                let bytes: [u8; 16] = id.try_into().map_err(|_| "an id of 16 bytes")?;
                Ok((EventId::from_bytes(bytes), r.try_get(1)?))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_a_subscriber_aborted_at_random_applies_every_event_exactly_once() -> TestResult {
    exactly_once::a_subscriber_aborted_at_random_applies_every_event_exactly_once(&Postgres::new(
        "c2once",
    ))
    .await
}
