//! The PostgreSQL backend for the shared processor scenarios of
//! `eskit_testing::processor`: each fresh store a schema of its own on the
//! server `ESKIT_PG_URL` names. Included with `#[path]` next to `mod common;`.

#![allow(dead_code, unreachable_pub)]

use std::any::Any;
use std::path::Path;

use eskit_core::error::BoxError;
use eskit_pg::{PgCheckpointStore, PgDeadLetterStore, PgLockRegistry, PgOptions, PgStore};
use eskit_testing::processor::{Parts, ProcessBackend, ProcessorBackend};

/// PostgreSQL, a fresh schema per store (named after `prefix`).
pub struct Postgres {
    prefix: &'static str,
}

impl Postgres {
    pub fn new(prefix: &'static str) -> Self {
        Self { prefix }
    }

    async fn connect(schema: &str) -> Result<Parts<Self>, BoxError> {
        let store =
            PgStore::connect(PgOptions::new(crate::common::url()?).with_schema(schema)).await?;
        Ok(Parts {
            checkpoints: store.checkpoints(),
            dead_letters: store.dead_letters(),
            store,
        })
    }
}

impl ProcessorBackend for Postgres {
    type Store = PgStore;
    type Checkpoints = PgCheckpointStore;
    type DeadLetters = PgDeadLetterStore;

    async fn fresh(&self) -> Result<Parts<Self>, BoxError> {
        Self::connect(&crate::common::fresh_schema(self.prefix)).await
    }

    async fn close(&self, parts: Parts<Self>) {
        parts.store.close().await;
    }
}

impl ProcessBackend for Postgres {
    type Locks = PgLockRegistry;

    async fn create(&self, _dir: &Path) -> Result<(Parts<Self>, String), BoxError> {
        let schema = crate::common::fresh_schema(self.prefix);
        Ok((Self::connect(&schema).await?, schema))
    }

    async fn open(
        &self,
        _dir: &Path,
        schema: &str,
    ) -> Result<(Parts<Self>, Box<dyn Any + Send>), BoxError> {
        Ok((Self::connect(schema).await?, Box::new(())))
    }

    fn leader_locks(&self, store: &PgStore) -> Result<PgLockRegistry, BoxError> {
        Ok(store.locks())
    }

    fn lease_description(&self) -> String {
        "a session advisory lock, released when the holder's connection dies".into()
    }
}
