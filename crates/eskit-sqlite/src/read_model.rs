//! Read models in the store's own database: a view whose tables are
//! written in the transaction that stores its cursor, and rebuilt without
//! downtime in shadow tables that are swapped in by renaming.
//!
//! **Invariant**: the live tables carry the view's own names, the shadow
//! tables the same names behind [`SHADOW_PREFIX`]. A swap is one write
//! transaction: it drops the live tables, renames the shadow ones, moves
//! the shadow's cursor to the live checkpoint and deletes the shadow's.
//! Readers (WAL snapshots) see the old tables or the new ones, never a
//! mix, never an empty set.
//!
//! **Invariant (tenants)**: a read model made on a tenant's handle writes
//! and swaps only tables named with that tenant's prefix ([`Tables`]), so
//! tenants sharing a read model name never share a row.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use eskit_core::{
    backend::{TableNaming, ViewTableError, check_view_tables, validate_name},
    error::{BoxError, StoreError},
    event::{GlobalCursor, InvalidName, NameKind, RawEvent},
    store::{ProjectionSink, ShadowRebuild, SwapOutcome},
};
use rusqlite::Connection;

use crate::checkpoint::{read_checkpoint, write_checkpoint};
use crate::error::store_error;
use crate::store::SqliteStore;
use crate::tx::{SqliteProjection, SqliteSink, TxError, WriteTx};

/// The prefix of a view's shadow tables (and of indexes named through
/// [`Tables::name`]) while a zero-downtime rebuild fills them.
pub const SHADOW_PREFIX: &str = "eskit_shadow_";
/// The suffix of the checkpoint name a shadow's subscription uses.
pub const SHADOW_SUFFIX: &str = ".shadow";
/// The prefix of a tenant's read-model tables, before the tenant id in hex
/// (see [`Tables`]).
pub const TENANT_TABLE_PREFIX: &str = "eskit_t";
pub use eskit_core::limits::{MAX_VIEW_TABLE_NAME, MAX_VIEW_TABLES};

/// Why [`SqliteStore::read_model`] refused a view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadModelError {
    /// The read model's name (its checkpoint name) is not valid, or is too
    /// long once [`SHADOW_SUFFIX`] is added.
    #[error("invalid read model name")]
    Name(#[source] InvalidName),
    /// A table name the view declares is refused.
    #[error("invalid view table name `{table}`: {reason}")]
    Table {
        /// The name (cut to [`MAX_VIEW_TABLE_NAME`] bytes).
        table: String,
        /// Why.
        reason: &'static str,
    },
    /// The view declares no table, or more than [`MAX_VIEW_TABLES`].
    #[error("a view declares 1 to {MAX_VIEW_TABLES} tables, not {0}")]
    TableCount(usize),
}

/// The table names a [`SqliteView`] writes: its own names for the live
/// tables, the same behind [`SHADOW_PREFIX`] for a shadow. A tenant's read
/// model (made on a [`TenantScoped::for_tenant`](eskit_core::store::TenantScoped::for_tenant) handle) puts
/// [`TENANT_TABLE_PREFIX`] and the tenant id in hex before them, so each
/// tenant has tables of its own and no query of one tenant sees another's
/// rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tables {
    prefix: Cow<'static, str>,
    shadow: bool,
}

impl Tables {
    /// The live names of a read model of no tenant.
    pub const LIVE: Self = Self {
        prefix: Cow::Borrowed(""),
        shadow: false,
    };
    /// The shadow names of a read model of no tenant.
    pub const SHADOW: Self = Self {
        prefix: Cow::Borrowed(SHADOW_PREFIX),
        shadow: true,
    };

    /// The names for the tenant key `tenant` (`""` for none).
    fn scoped(tenant: &str, shadow: bool) -> Self {
        if tenant.is_empty() {
            return if shadow { Self::SHADOW } else { Self::LIVE };
        }
        let mut prefix = String::from(if shadow { SHADOW_PREFIX } else { "" });
        prefix.push_str(TENANT_TABLE_PREFIX);
        for b in tenant.bytes() {
            prefix.push_str(&format!("{b:02x}"));
        }
        prefix.push('_');
        Self {
            prefix: Cow::Owned(prefix),
            shadow,
        }
    }

    /// The name to use in SQL for the view's table (or index) `name`.
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether these are the shadow names.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }
}

/// A read model kept in tables of the store's database.
///
/// Write every table and index name through [`Tables::name`], so the same
/// code fills the live tables and a shadow. Table names are ASCII letters,
/// digits and `_`, so they need no quoting.
pub trait SqliteView: Send + Sync + 'static {
    /// The view's tables (their live names), 1 to [`MAX_VIEW_TABLES`].
    fn tables(&self) -> &[&'static str];

    /// Creates the tables and their indexes under `tables`' names, with
    /// `IF NOT EXISTS`: it also runs after a swap, with the live names, to
    /// give the swapped-in indexes their live names again.
    ///
    /// # Errors
    /// A failed statement; nothing is created then.
    fn create(&self, conn: &Connection, tables: &Tables) -> Result<(), BoxError>;

    /// Applies one page (in cursor order, possibly empty) to the tables
    /// named by `tables`, inside the transaction that also stores the
    /// cursor.
    ///
    /// # Errors
    /// Whatever the view refuses; the page is rolled back, cursor included.
    fn apply(
        &self,
        tx: &mut WriteTx<'_>,
        tables: &Tables,
        events: &[RawEvent],
    ) -> Result<(), BoxError>;
}

/// A [`SqliteView`] bound to a set of table names: the projection inside
/// the read model's sinks. The live one also feeds a caught-up shadow (see
/// [`SqliteReadModel::sink`]).
pub struct ViewProjection<V> {
    view: Arc<V>,
    tables: Tables,
    /// For the live projection: the shadow's checkpoint name and tables.
    feeds: Option<(Arc<str>, Tables)>,
}

impl<V> fmt::Debug for ViewProjection<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewProjection")
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl<V: SqliteView> SqliteProjection for ViewProjection<V> {
    fn apply(&self, tx: &mut WriteTx<'_>, events: &[RawEvent]) -> Result<(), BoxError> {
        self.view.apply(tx, &self.tables, events)
    }

    fn apply_page(
        &self,
        tx: &mut WriteTx<'_>,
        events: &[RawEvent],
        before: Option<GlobalCursor>,
        next: GlobalCursor,
    ) -> Result<(), BoxError> {
        self.view.apply(tx, &self.tables, events)?;
        match &self.feeds {
            Some((name, shadow)) => {
                feed_shadow(&*self.view, tx, name, shadow, events, before, next)
            }
            None => Ok(()),
        }
    }
}

/// Applies a live page to the shadow too, in the live page's transaction,
/// when the shadow has every event before the page (its cursor is at or
/// past the live cursor before it): from then on the shadow cannot fall
/// behind the live read model, and the swap cannot be refused, however
/// fast events come. A shadow still further behind is left to its own
/// subscription. Events at or before the shadow's cursor are skipped and
/// its cursor never moves back, so the shadow's own subscription, running
/// at the same time, applies nothing twice.
fn feed_shadow<V: SqliteView>(
    view: &V,
    tx: &mut WriteTx<'_>,
    shadow_name: &str,
    tables: &Tables,
    events: &[RawEvent],
    before: Option<GlobalCursor>,
    next: GlobalCursor,
) -> Result<(), BoxError> {
    let Some(shadow) = tx.checkpoint(shadow_name)? else {
        return Ok(());
    };
    if shadow < before.unwrap_or(GlobalCursor::START)
        || !table_exists(tx.connection(), &tables.name(view.tables()[0]))?
    {
        return Ok(());
    }
    let fresh = events
        .iter()
        .position(|e| e.cursor() > shadow)
        .unwrap_or(events.len());
    view.apply(tx, tables, &events[fresh..])?;
    if next > shadow {
        tx.save_checkpoint(shadow_name, next)?;
    }
    Ok(())
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(store_error)
}

/// A read model in the store's database: its tables, its checkpoint and
/// its shadow. Made by [`SqliteStore::read_model`].
///
/// ```
/// use eskit_core::{error::BoxError, event::RawEvent};
/// use eskit_sqlite::{SqliteStore, WriteTx, read_model::{SqliteView, Tables}};
/// use rusqlite::Connection;
///
/// struct Counts;
///
/// impl SqliteView for Counts {
///     fn tables(&self) -> &[&'static str] {
///         &["counts"]
///     }
///     fn create(&self, conn: &Connection, t: &Tables) -> Result<(), BoxError> {
///         let counts = t.name("counts");
///         conn.execute_batch(&format!(
///             "CREATE TABLE IF NOT EXISTS {counts} (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)"
///         ))?;
///         Ok(())
///     }
///     fn apply(&self, tx: &mut WriteTx<'_>, t: &Tables, events: &[RawEvent]) -> Result<(), BoxError> {
///         let sql = format!(
///             "INSERT INTO {} (stream, n) VALUES (?1, 1) ON CONFLICT (stream) DO UPDATE SET n = n + 1",
///             t.name("counts")
///         );
///         let mut insert = tx.connection().prepare_cached(&sql)?;
///         for e in events {
///             insert.execute([e.stream.to_string()])?;
///         }
///         Ok(())
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # eskit_core::rt::block_on(async {
/// let store = SqliteStore::open_in_memory()?;
/// let counts = store.read_model("counts", Counts)?;
/// counts.setup().await?;
/// let rows: i64 = counts
///     .query(|c| c.query_row("SELECT count(*) FROM counts", [], |r| r.get(0)))
///     .await?;
/// assert_eq!(rows, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
pub struct SqliteReadModel<V> {
    store: SqliteStore,
    name: Arc<str>,
    shadow_name: Arc<str>,
    live: Tables,
    shadow: Tables,
    view: Arc<V>,
}

impl<V> fmt::Debug for SqliteReadModel<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteReadModel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<V> Clone for SqliteReadModel<V> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            name: Arc::clone(&self.name),
            shadow_name: Arc::clone(&self.shadow_name),
            live: self.live.clone(),
            shadow: self.shadow.clone(),
            view: Arc::clone(&self.view),
        }
    }
}

fn check_tables(tables: &[&str]) -> Result<(), ReadModelError> {
    let naming = TableNaming {
        lowercase_only: false,
        reserved_prefixes: &["eskit_", "sqlite_"],
        reserved_reason: "the prefixes `eskit_` and `sqlite_` are reserved",
        reserved_names: &[],
    };
    check_view_tables(tables, &naming).map_err(|e| match e {
        ViewTableError::Table { table, reason } => ReadModelError::Table { table, reason },
        _ => ReadModelError::TableCount(tables.len()),
    })
}

fn tx_error(e: TxError<BoxError>) -> StoreError {
    match e {
        TxError::Aborted(e) => match e.downcast::<StoreError>() {
            Ok(e) => *e,
            Err(e) => StoreError::backend(e),
        },
        TxError::Store(e) => e,
    }
}

fn drop_tables(conn: &Connection, tables: &[&str], names: &Tables) -> Result<(), BoxError> {
    for t in tables {
        conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", names.name(t)))?;
    }
    Ok(())
}

fn delete_checkpoint(conn: &Connection, tenant: &str, name: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM eskit_checkpoints WHERE tenant = ?1 AND name = ?2",
        [tenant, name],
    )
    .map(drop)
    .map_err(store_error)
}

impl SqliteStore {
    /// A read model `name` (also its checkpoint name) kept in this store's
    /// database by `view`. Create its tables with
    /// [`setup`](SqliteReadModel::setup) and drive it with a subscription
    /// over [`sink`](SqliteReadModel::sink).
    ///
    /// # Errors
    /// [`ReadModelError`] for a bad name or table list.
    pub fn read_model<V: SqliteView>(
        &self,
        name: &str,
        view: V,
    ) -> Result<SqliteReadModel<V>, ReadModelError> {
        validate_name(NameKind::Checkpoint, name).map_err(ReadModelError::Name)?;
        let shadow_name = format!("{name}{SHADOW_SUFFIX}");
        validate_name(NameKind::Checkpoint, &shadow_name).map_err(ReadModelError::Name)?;
        check_tables(view.tables())?;
        let tenant = self.tenant_key();
        Ok(SqliteReadModel {
            store: self.clone(),
            name: name.into(),
            shadow_name: shadow_name.into(),
            live: Tables::scoped(&tenant, false),
            shadow: Tables::scoped(&tenant, true),
            view: Arc::new(view),
        })
    }
}

impl<V: SqliteView> SqliteReadModel<V> {
    /// The read model's name (its checkpoint name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The view.
    pub fn view(&self) -> &V {
        &self.view
    }

    /// The live table names of this read model: the view's own names, or
    /// for a tenant's read model the tenant's (see [`Tables`]). Build the
    /// SQL of a [`query`](Self::query) with them.
    pub fn tables(&self) -> &Tables {
        &self.live
    }

    fn names(&self) -> (Tables, Tables) {
        (self.live.clone(), self.shadow.clone())
    }

    /// Creates the live tables if they do not exist.
    ///
    /// # Errors
    /// A failed statement or transaction.
    pub async fn setup(&self) -> Result<(), StoreError> {
        let view = Arc::clone(&self.view);
        let live = self.live.clone();
        self.store
            .write_transaction(move |tx| view.create(tx.connection(), &live))
            .await
            .map_err(tx_error)
    }

    /// The sink that applies pages to the live tables and stores the
    /// cursor in the same transaction: give it to
    /// `Subscription::with_sink` under the read model's name.
    ///
    /// While a shadow rebuild runs and the shadow has caught up with the
    /// live cursor, each live page is applied to the shadow as well, in the
    /// same transaction, so the shadow stays caught up until the swap.
    pub fn sink(&self) -> SqliteSink<ViewProjection<V>> {
        self.store.projection_sink(ViewProjection {
            view: Arc::clone(&self.view),
            tables: self.live.clone(),
            feeds: Some((Arc::clone(&self.shadow_name), self.shadow.clone())),
        })
    }

    /// The live cursor, `None` before the first page.
    ///
    /// # Errors
    /// A failed read.
    pub async fn cursor(&self) -> Result<Option<GlobalCursor>, StoreError> {
        self.sink().cursor(&self.name).await
    }

    /// Empties the read model in one transaction: drops and recreates the
    /// live tables, deletes its checkpoint and drops any shadow, so its next subscription
    /// replays from the start. Readers see the tables empty until then;
    /// for a rebuild that keeps serving, use the shadow
    /// ([`ShadowRebuild`]).
    ///
    /// # Errors
    /// A failed statement or transaction; nothing changed then.
    pub async fn reset(&self) -> Result<(), StoreError> {
        let view = Arc::clone(&self.view);
        let (name, shadow) = (Arc::clone(&self.name), Arc::clone(&self.shadow_name));
        let tenant = self.store.tenant_key();
        let (live, shadow_tables) = self.names();
        self.store
            .write_transaction(move |tx| {
                let conn = tx.connection();
                drop_tables(conn, view.tables(), &live)?;
                drop_tables(conn, view.tables(), &shadow_tables)?;
                view.create(conn, &live)?;
                delete_checkpoint(conn, &tenant, &name)?;
                delete_checkpoint(conn, &tenant, &shadow)?;
                Ok::<_, BoxError>(())
            })
            .await
            .map_err(tx_error)
    }

    /// Drops the shadow (its tables and its checkpoint), for a rebuild
    /// given up on: a shadow left behind by a crashed rebuild that had
    /// caught up is otherwise fed by every live page until the next
    /// rebuild begins. The live read model is untouched.
    ///
    /// # Errors
    /// A failed statement or transaction; nothing changed then.
    pub async fn drop_shadow(&self) -> Result<(), StoreError> {
        let (view, shadow) = (Arc::clone(&self.view), Arc::clone(&self.shadow_name));
        let tenant = self.store.tenant_key();
        let tables = self.shadow.clone();
        self.store
            .write_transaction(move |tx| {
                drop_tables(tx.connection(), view.tables(), &tables)?;
                delete_checkpoint(tx.connection(), &tenant, &shadow)?;
                Ok::<_, BoxError>(())
            })
            .await
            .map_err(tx_error)
    }

    /// Runs `f` on a reader connection, inside one read transaction (one
    /// snapshot of the database, however many statements `f` runs).
    ///
    /// # Errors
    /// [`StoreError`] for a failed statement (mapped like every SQLite
    /// failure) or a closed store.
    pub async fn query<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.store
            .workers()
            .read(move |c| {
                let tx = c.unchecked_transaction().map_err(store_error)?;
                let out = f(&tx).map_err(store_error)?;
                tx.finish().map_err(store_error)?;
                Ok(out)
            })
            .await
    }
}

impl<V: SqliteView> ShadowRebuild for SqliteReadModel<V> {
    type Shadow = SqliteSink<ViewProjection<V>>;

    fn shadow_name(&self) -> &str {
        &self.shadow_name
    }

    /// Drops earlier shadow tables, creates empty ones and deletes the
    /// shadow's checkpoint, in one transaction.
    async fn begin_shadow(&self) -> Result<Self::Shadow, StoreError> {
        let (view, name) = (Arc::clone(&self.view), Arc::clone(&self.shadow_name));
        let tenant = self.store.tenant_key();
        let tables = self.shadow.clone();
        self.store
            .write_transaction(move |tx| {
                drop_tables(tx.connection(), view.tables(), &tables)?;
                view.create(tx.connection(), &tables)?;
                delete_checkpoint(tx.connection(), &tenant, &name)?;
                Ok::<_, BoxError>(())
            })
            .await
            .map_err(tx_error)?;
        Ok(self.store.projection_sink(ViewProjection {
            view: Arc::clone(&self.view),
            tables: self.shadow.clone(),
            feeds: None,
        }))
    }

    /// In one transaction: unless the shadow is behind the live cursor,
    /// drops the live tables, renames the shadow tables to the live names,
    /// drops the indexes that kept shadow names and creates them again
    /// under live names ([`SqliteView::create`]), stores the shadow's
    /// cursor as the live one and deletes the shadow's checkpoint.
    async fn swap_in_shadow(&self) -> Result<SwapOutcome, StoreError> {
        let view = Arc::clone(&self.view);
        let (name, shadow_name) = (Arc::clone(&self.name), Arc::clone(&self.shadow_name));
        let tenant = self.store.tenant_key();
        let (live_tables, shadow_tables) = self.names();
        self.store
            .write_transaction(move |tx| {
                let conn = tx.connection();
                let shadow = read_checkpoint(conn, &tenant, &shadow_name)?;
                let live = read_checkpoint(conn, &tenant, &name)?;
                if !table_exists(conn, &shadow_tables.name(view.tables()[0]))? {
                    return Ok(SwapOutcome::NoShadow);
                }
                let cursor = match (shadow, live) {
                    (s, Some(l)) if s.is_none_or(|s| s < l) => {
                        return Ok(SwapOutcome::Behind { shadow: s, live: l });
                    }
                    (s, _) => s.unwrap_or(GlobalCursor::START),
                };
                for t in view.tables() {
                    let (live, shadow) = (live_tables.name(t), shadow_tables.name(t));
                    conn.execute_batch(&format!(
                        "DROP TABLE IF EXISTS {live}; ALTER TABLE {shadow} RENAME TO {live};"
                    ))?;
                }
                // Indexes keep their names through a rename: drop the
                // shadow-named ones so the shadow prefix is free for the
                // next rebuild, and create them under live names.
                let tables: Vec<String> =
                    view.tables().iter().map(|t| live_tables.name(t)).collect();
                let stale: Vec<(String, String)> = {
                    let mut s = conn.prepare(
                        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' \
                         AND sql IS NOT NULL AND substr(name, 1, length(?1)) = ?1",
                    )?;
                    let rows =
                        s.query_map([shadow_tables.name("")], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect::<Result<_, _>>()?
                };
                for (index, table) in stale {
                    if tables.contains(&table) {
                        let index = index.replace('"', "\"\"");
                        conn.execute_batch(&format!("DROP INDEX \"{index}\""))?;
                    }
                }
                view.create(conn, &live_tables)?;
                delete_checkpoint(conn, &tenant, &shadow_name)?;
                write_checkpoint(conn, &tenant, &name, cursor)?;
                Ok::<_, BoxError>(SwapOutcome::Swapped { cursor })
            })
            .await
            .map_err(tx_error)
    }
}
