//! The memory and SQLite backends for the shared processor scenarios of
//! `eskit_testing::processor`.

#![allow(dead_code, unreachable_pub)]

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eskit_core::{
    error::BoxError,
    memory::{MemoryCheckpointStore, MemoryDeadLetterStore, MemoryStore},
};
use eskit_sqlite::{
    SqliteCheckpointStore, SqliteDeadLetterStore, SqliteLockRegistry, SqliteOptions, SqliteStore,
};
use eskit_testing::processor::{Parts, ProcessBackend, ProcessorBackend};

/// The memory backend: each store with its own checkpoint and dead-letter
/// stores.
pub struct Memory;

impl ProcessorBackend for Memory {
    type Store = MemoryStore;
    type Checkpoints = MemoryCheckpointStore;
    type DeadLetters = MemoryDeadLetterStore;

    async fn fresh(&self) -> Result<Parts<Self>, BoxError> {
        Ok(Parts {
            store: MemoryStore::new(),
            checkpoints: MemoryCheckpointStore::new(),
            dead_letters: MemoryDeadLetterStore::new(),
        })
    }
}

/// The SQLite backend: each fresh store a file of its own, in a directory
/// removed when the backend is dropped.
pub struct Sqlite {
    dir: PathBuf,
    next: AtomicU64,
}

/// A leader lease short enough for the handover test to be quick.
pub const LEASE: Duration = Duration::from_secs(1);

impl Sqlite {
    pub fn new(test: &str) -> Result<Self, std::io::Error> {
        let dir =
            std::env::temp_dir().join(format!("eskit-processor-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            next: AtomicU64::new(0),
        })
    }

    fn parts(store: SqliteStore) -> Parts<Self> {
        Parts {
            checkpoints: store.checkpoints(),
            dead_letters: store.dead_letters(),
            store,
        }
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ProcessorBackend for Sqlite {
    type Store = SqliteStore;
    type Checkpoints = SqliteCheckpointStore;
    type DeadLetters = SqliteDeadLetterStore;

    async fn fresh(&self) -> Result<Parts<Self>, BoxError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let store = SqliteStore::open(self.dir.join(format!("events-{n}.db")))?;
        Ok(Self::parts(store))
    }

    async fn close(&self, parts: Parts<Self>) {
        parts.store.close().await;
    }
}

impl ProcessBackend for Sqlite {
    type Locks = SqliteLockRegistry;

    async fn create(&self, dir: &Path) -> Result<(Parts<Self>, String), BoxError> {
        let store = SqliteStore::open(dir.join("events.db"))?;
        Ok((Self::parts(store), String::new()))
    }

    async fn open(
        &self,
        dir: &Path,
        _location: &str,
    ) -> Result<(Parts<Self>, Box<dyn Any + Send>), BoxError> {
        let store = SqliteStore::connect(SqliteOptions::file(dir.join("events.db"))).await?;
        // Other processes' commits reach this one's feed through the watcher.
        let watch = store.watch_external_writes(Duration::from_millis(5))?;
        Ok((Self::parts(store), Box::new(watch)))
    }

    fn leader_locks(&self, store: &SqliteStore) -> Result<SqliteLockRegistry, BoxError> {
        Ok(store.locks_with_lease(LEASE)?)
    }

    fn lease_description(&self) -> String {
        format!("a lease of {LEASE:?}")
    }
}
