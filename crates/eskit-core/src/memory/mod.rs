//! In-memory backends for every store trait: for tests, prototypes and as the
//! model the conformance suite and property tests compare other backends with.

mod lock;
mod read_model;
mod store;

pub use lock::MemoryLockRegistry;
pub use read_model::{MemoryReadModel, MemoryShadow};
pub use store::{MemoryCheckpointStore, MemorySnapshotStore, MemoryStore};

pub use crate::claim::MemoryClaimStore;
pub use crate::dead_letter::MemoryDeadLetterStore;
