//! The conformance suite against the memory backend. Runs without the libtest
//! harness so it prints one line per scenario and ends with the summary line
//! `conformance memory: N passed, M failed`.

use std::process::ExitCode;

use eskit_core::{
    error::BoxError,
    memory::{MemoryCheckpointStore, MemoryClaimStore, MemoryLockRegistry, MemoryStore},
};
use eskit_testing::conformance::{Fixture, Suite};

fn main() -> ExitCode {
    Suite::new("memory", || async {
        let locks = MemoryLockRegistry::new();
        let store = MemoryStore::new();
        let closer = store.clone();
        Ok::<_, BoxError>(
            Fixture::store(store.clone())
                .with_queries(store.clone())
                .with_snapshots(store.snapshots())
                .with_checkpoints(MemoryCheckpointStore::new())
                .with_claims(MemoryClaimStore::new())
                .with_locks(locks.clone())
                .with_other_locks(locks)
                .with_close(move || {
                    closer.close();
                    std::future::ready(())
                }),
        )
    })
    .require_all()
    .main()
}
