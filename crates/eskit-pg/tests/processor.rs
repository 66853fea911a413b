//! RELIABILITY C1, C3 and C4 on PostgreSQL through eskit-processor, with
//! the checkpoints and dead letters in the store's schema. The scenarios
//! are `eskit_testing::processor`'s (the same memory and SQLite run); the
//! server comes from `ESKIT_PG_URL`.

mod common;
#[path = "common/processor.rs"]
mod pg_backend;

use eskit_testing::processor::{delivery, poison, views};
use pg_backend::Postgres;

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
