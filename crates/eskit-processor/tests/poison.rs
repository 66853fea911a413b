//! RELIABILITY C3, the poison event, on memory and SQLite (each with its
//! own dead-letter and checkpoint stores): dead-lettered after exactly the
//! configured retries with the other 9,999 events handled, or halted on
//! without skipping. The scenarios are `eskit_testing::processor::poison`'s.

mod common;

use eskit_testing::processor::poison::{
    c3_poison_halts_without_skipping, c3_poison_is_dead_lettered_and_the_rest_handled,
};

type TestResult = Result<(), eskit_core::error::BoxError>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_poison_is_dead_lettered_and_the_rest_handled() -> TestResult {
    c3_poison_is_dead_lettered_and_the_rest_handled(&common::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_poison_halts_without_skipping() -> TestResult {
    c3_poison_halts_without_skipping(&common::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_is_dead_lettered_and_the_rest_handled() -> TestResult {
    c3_poison_is_dead_lettered_and_the_rest_handled(&common::Sqlite::new("poison-dl")?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_halts_without_skipping() -> TestResult {
    c3_poison_halts_without_skipping(&common::Sqlite::new("poison-halt")?).await
}
