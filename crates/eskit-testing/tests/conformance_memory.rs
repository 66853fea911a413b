//! The conformance suite against the memory backend. Runs without the libtest
//! harness so it prints one line per scenario and ends with the summary line
//! `conformance memory: N passed, M failed`.

use std::process::ExitCode;

use eskit_core::{
    BoxError, MemoryCheckpointStore, MemoryLockRegistry, MemorySnapshotStore, MemoryStore,
};
use eskit_testing::conformance::{Fixture, Suite};

fn main() -> ExitCode {
    Suite::new("memory", || async {
        let locks = MemoryLockRegistry::new();
        let store = MemoryStore::new();
        Ok::<_, BoxError>(
            Fixture::store(store.clone())
                .with_queries(store)
                .with_snapshots(MemorySnapshotStore::new())
                .with_checkpoints(MemoryCheckpointStore::new())
                .with_locks(locks.clone())
                .with_other_locks(locks),
        )
    })
    .require_all()
    .main()
}
