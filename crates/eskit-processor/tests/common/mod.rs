//! The memory and SQLite backends for the shared processor scenarios of
//! `eskit_testing::processor`.

#![allow(dead_code, unreachable_pub)]

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;

use eskit_core::{
    error::BoxError,
    event::{GlobalCursor, RawEvent},
    memory::{MemoryCheckpointStore, MemoryDeadLetterStore, MemoryReadModel, MemoryStore},
    store::ProjectionSink,
};
use eskit_sqlite::read_model::{SqliteView, Tables, ViewProjection};
use eskit_sqlite::{
    SqliteCheckpointStore, SqliteDeadLetterStore, SqliteLockRegistry, SqliteOptions,
    SqliteReadModel, SqliteSink, SqliteStore, WriteTx,
};
use eskit_testing::processor::read_models::ReadModelBackend;
use eskit_testing::processor::views::{Row, amount};
use eskit_testing::processor::{Parts, ProcessBackend, ProcessorBackend};
use rusqlite::Connection;

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

// --- read models ----------------------------------------------------------

/// The memory read model's value: balances by account and movements.
#[derive(Debug, Clone, Default)]
pub struct Book {
    balances: BTreeMap<String, i64>,
    moved: i64,
}

impl ReadModelBackend for Memory {
    type Model = MemoryReadModel<Book>;
    type Sink = MemoryReadModel<Book>;

    fn balances(&self, _: &Parts<Self>, name: &str) -> Result<Self::Model, BoxError> {
        Ok(MemoryReadModel::new(name, |b: &mut Book, e| {
            *b.balances.entry(e.stream.to_string()).or_insert(0) += amount(e)?;
            b.moved += 1;
            Ok(())
        })?)
    }

    async fn setup(&self, _: &Self::Model) -> Result<(), BoxError> {
        Ok(())
    }

    fn sink(&self, model: &Self::Model) -> Self::Sink {
        model.clone()
    }

    async fn rows(&self, model: &Self::Model) -> Result<(Vec<Row>, i64), BoxError> {
        let book = model.read();
        let rows = book.balances.iter().map(|(k, v)| (k.clone(), *v)).collect();
        Ok((rows, book.moved))
    }

    async fn cursor(&self, model: &Self::Model) -> Result<Option<GlobalCursor>, BoxError> {
        Ok(model.cursor(model.name()).await?)
    }

    async fn reset(&self, model: &Self::Model) -> Result<(), BoxError> {
        model.reset();
        Ok(())
    }

    async fn drop_shadow(&self, model: &Self::Model) -> Result<(), BoxError> {
        model.drop_shadow();
        Ok(())
    }
}

/// Balances per account in SQLite tables, with an index (so the swap has
/// one to rename) and a second table of per-account event counts.
pub struct SqlBalances;

impl SqliteView for SqlBalances {
    fn tables(&self) -> &[&'static str] {
        &["balances", "movements"]
    }

    fn create(&self, conn: &Connection, t: &Tables) -> Result<(), BoxError> {
        let (balances, movements) = (t.name("balances"), t.name("movements"));
        let by_balance = t.name("balances_by_balance");
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {balances} (account TEXT PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS {by_balance} ON {balances} (balance);
             CREATE TABLE IF NOT EXISTS {movements} (account TEXT PRIMARY KEY, n INTEGER NOT NULL);"
        ))?;
        Ok(())
    }

    fn apply(&self, tx: &mut WriteTx<'_>, t: &Tables, events: &[RawEvent]) -> Result<(), BoxError> {
        let conn = tx.connection();
        let mut balance = conn.prepare_cached(&format!(
            "INSERT INTO {} (account, balance) VALUES (?1, ?2)
             ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
            t.name("balances")
        ))?;
        let mut moved = conn.prepare_cached(&format!(
            "INSERT INTO {} (account, n) VALUES (?1, 1)
             ON CONFLICT (account) DO UPDATE SET n = n + 1",
            t.name("movements")
        ))?;
        for e in events {
            let account = e.stream.to_string();
            balance.execute((&account, amount(e)?))?;
            moved.execute([&account])?;
        }
        Ok(())
    }
}

/// The balances and the movements of `model`, in one read transaction.
pub async fn sql_rows(
    model: &SqliteReadModel<SqlBalances>,
) -> Result<(Vec<Row>, i64), eskit_core::error::StoreError> {
    model
        .query(|c| {
            let mut s = c.prepare("SELECT account, balance FROM balances ORDER BY account")?;
            let rows = s
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<Row>, _>>()?;
            let moved: i64 = c.query_row("SELECT coalesce(sum(n), 0) FROM movements", [], |r| {
                r.get(0)
            })?;
            Ok((rows, moved))
        })
        .await
}

impl ReadModelBackend for Sqlite {
    type Model = SqliteReadModel<SqlBalances>;
    type Sink = SqliteSink<ViewProjection<SqlBalances>>;

    fn balances(&self, parts: &Parts<Self>, name: &str) -> Result<Self::Model, BoxError> {
        Ok(parts.store.read_model(name, SqlBalances)?)
    }

    async fn setup(&self, model: &Self::Model) -> Result<(), BoxError> {
        Ok(model.setup().await?)
    }

    fn sink(&self, model: &Self::Model) -> Self::Sink {
        model.sink()
    }

    async fn rows(&self, model: &Self::Model) -> Result<(Vec<Row>, i64), BoxError> {
        Ok(sql_rows(model).await?)
    }

    async fn cursor(&self, model: &Self::Model) -> Result<Option<GlobalCursor>, BoxError> {
        Ok(model.cursor().await?)
    }

    async fn reset(&self, model: &Self::Model) -> Result<(), BoxError> {
        Ok(model.reset().await?)
    }

    async fn drop_shadow(&self, model: &Self::Model) -> Result<(), BoxError> {
        Ok(model.drop_shadow().await?)
    }

    /// No shadow table or index is left behind, and the index keeps its
    /// live name.
    async fn check_after_swap(&self, model: &Self::Model) -> Result<(), BoxError> {
        let names: Vec<String> = model
            .query(|c| {
                let mut s = c.prepare(
                    "SELECT name FROM sqlite_master WHERE sql IS NOT NULL \
                     AND tbl_name IN ('balances', 'movements', 'eskit_shadow_balances', 'eskit_shadow_movements') \
                     ORDER BY name",
                )?;
                s.query_map([], |r| r.get(0))?.collect()
            })
            .await?;
        if names != ["balances", "balances_by_balance", "movements"] {
            return Err(format!("after the swap the tables and indexes are {names:?}").into());
        }
        Ok(())
    }
}

// --- exactly-once effects ---------------------------------------------------

impl eskit_testing::processor::exactly_once::EffectsBackend for Memory {
    type Sink = MemoryReadModel<Vec<eskit_core::event::EventId>>;

    async fn effects(&self, _: &Parts<Self>) -> Result<Self::Sink, BoxError> {
        Ok(MemoryReadModel::new(
            eskit_testing::processor::exactly_once::NAME,
            |ids: &mut Vec<eskit_core::event::EventId>, e| {
                ids.push(e.id);
                Ok(())
            },
        )?)
    }

    async fn counts(
        &self,
        _: &Parts<Self>,
        sink: &Self::Sink,
    ) -> Result<std::collections::HashMap<eskit_core::event::EventId, i64>, BoxError> {
        let mut counts = std::collections::HashMap::new();
        for id in sink.read().iter() {
            *counts.entry(*id).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

/// One row per applied event in the `effects` table, with no unique key,
/// so a redelivered effect shows as a second row.
pub struct Effects;

impl eskit_sqlite::SqliteProjection for Effects {
    fn apply(&self, tx: &mut WriteTx<'_>, events: &[RawEvent]) -> Result<(), BoxError> {
        let mut insert = tx
            .connection()
            .prepare_cached("INSERT INTO effects (event_id, position) VALUES (?1, ?2)")?;
        for e in events {
            insert.execute((&e.id.to_bytes()[..], i64::try_from(e.position.get())?))?;
        }
        Ok(())
    }
}

impl eskit_testing::processor::exactly_once::EffectsBackend for Sqlite {
    type Sink = SqliteSink<Effects>;

    async fn effects(&self, parts: &Parts<Self>) -> Result<Self::Sink, BoxError> {
        parts
            .store
            .write_transaction(|tx| {
                tx.connection().execute_batch(
                    "CREATE TABLE IF NOT EXISTS effects (event_id BLOB NOT NULL, position INTEGER NOT NULL)",
                )
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(parts.store.projection_sink(Effects))
    }

    async fn counts(
        &self,
        parts: &Parts<Self>,
        _: &Self::Sink,
    ) -> Result<std::collections::HashMap<eskit_core::event::EventId, i64>, BoxError> {
        let rows: Vec<(Vec<u8>, i64)> = parts
            .store
            .write_transaction(|tx| {
                let mut s = tx
                    .connection()
                    .prepare("SELECT event_id, count(*) FROM effects GROUP BY event_id")?;
                let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| e.to_string())?;
        rows.into_iter()
            .map(|(id, n)| {
                let bytes: [u8; 16] = id.try_into().map_err(|_| "an id of 16 bytes")?;
                Ok((eskit_core::event::EventId::from_bytes(bytes), n))
            })
            .collect()
    }
}
