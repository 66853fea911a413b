//! Benchmarks of the memory backend, with a `Mutex<Vec>` baseline. Run with
//! `cargo bench -p eskit-testing --bench memory [-- --workload W1]` or
//! through `cargo xtask bench --backend memory`.

use std::process::ExitCode;
use std::sync::Arc;

use eskit_core::{
    error::BoxError,
    memory::{MemorySnapshotStore, MemoryStore},
};
use eskit_testing::bench::{Baseline, Bench, MemoryBaseline};
use eskit_testing::conformance::Fixture;

fn main() -> ExitCode {
    Bench::new("memory", || async {
        Ok::<_, BoxError>(
            Fixture::store(MemoryStore::new()).with_snapshots(MemorySnapshotStore::new()),
        )
    })
    .baseline(|| async { Ok::<_, BoxError>(Arc::new(MemoryBaseline::new()) as Arc<dyn Baseline>) })
    .main()
}
