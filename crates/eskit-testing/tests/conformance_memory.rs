//! The conformance suite against the memory backend. Runs without the libtest
//! harness so it prints one line per scenario and ends with the summary line
//! `conformance memory: N passed, M failed`.

use std::process::ExitCode;

use eskit_core::{
    error::BoxError,
    event::EventId,
    memory::{
        MemoryCheckpointStore, MemoryClaimStore, MemoryLockRegistry, MemoryReadModel, MemoryStore,
    },
    store::TenantScoped,
};
use eskit_testing::conformance::{Fixture, Suite};

fn main() -> ExitCode {
    Suite::new("memory", || async {
        let locks = MemoryLockRegistry::new();
        let store = MemoryStore::new();
        let checkpoints = MemoryCheckpointStore::new();
        let closer = store.clone();
        let sink = MemoryReadModel::new("sink-effects", |ids: &mut Vec<EventId>, e| {
            if e.payload == b"refuse" {
                return Err("the sink scenarios refuse this event".into());
            }
            ids.push(e.id);
            Ok(())
        })?;
        let effects = sink.clone();
        let (tenants, tenant_checkpoints) = (store.clone(), checkpoints.clone());
        Ok::<_, BoxError>(
            Fixture::store(store.clone())
                .with_queries(store.clone())
                .with_snapshots(store.snapshots())
                .with_checkpoints(checkpoints)
                .with_tenants(move |t| {
                    let scoped = tenants.for_tenant(t.clone());
                    Fixture::store(scoped.clone())
                        .with_queries(scoped.clone())
                        .with_snapshots(scoped.snapshots())
                        .with_checkpoints(tenant_checkpoints.for_tenant(t))
                })
                .with_sink(sink, move || {
                    std::future::ready(Ok(effects.read().to_vec()))
                })
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
