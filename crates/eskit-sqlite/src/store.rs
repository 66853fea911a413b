//! The store handle and its event store, global reader and lifecycle traits.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use eskit_core::limits::MAX_READ_LIMIT;
use eskit_core::{
    backend::{CommitNotifier, validate_append, validate_idempotency_key, validate_reason},
    dcb::{EventQueryReader, QueryOptions},
    error::{LifecycleOp, StoreError},
    event::{
        AppendResult, ExpectedVersion, GlobalCursor, NewEvent, Position, RawEvent, StreamName,
        TenantId, Timestamp, Version,
    },
    store::{
        AppendOptions, CommitFeed, EventStore, GlobalBatch, GlobalReader, LoadOptions, ReadOptions,
        StreamLifecycle, StreamState, StreamStatus, TenantScoped,
    },
};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::append::{
    STATE_ACTIVE, STATE_ARCHIVED, STATE_DELETED, STATE_TOMBSTONED, delete_tags, keep_high_water,
    state_of, stream_row, to_version,
};
use crate::checkpoint::SqliteCheckpointStore;
use crate::chunks;
use crate::error::{OpenError, corrupt, stopped, store_error};
use crate::kinds::{KindCache, KindReader};
use crate::locks::SqliteLockRegistry;
use crate::notify::{ExternalWatcher, MIN_POLL_INTERVAL};
use crate::oneshot;
use crate::options::{Location, SqliteOptions, Synchronous};
use crate::relay::ChangeRelay;
use crate::row::{
    Assembler, BatchBuilder, EVENT_COLUMN_COUNT, EVENT_COLUMNS, EventBatch, StreamCache,
    TagListCache, tenant_key,
};
use crate::schema;
use crate::snapshot::SqliteSnapshotStore;
use crate::worker::{GROUP_COMMIT_LINGER, Part, PartSender, Workers};

/// An event store in one SQLite database file (or in memory).
///
/// Cloning is cheap and shares the connections. Implements
/// [`EventStore`], [`GlobalReader`] and [`StreamLifecycle`];
/// [`snapshots`](Self::snapshots) and [`checkpoints`](Self::checkpoints) give
/// the snapshot and checkpoint stores on the same database.
///
/// # Threads
/// One writer thread owns the write connection and commits appends that
/// arrive together in one transaction (group commit); each append is checked
/// before it writes, so that one conflict does not fail the others. Loads and
/// reads run on reader threads, each with its own connection; a reader
/// hands the rows over in batches of 128, and the caller's task checks them
/// (checksums, fields) and builds the events of one batch while the reader
/// fills the next (no SQLite call runs on the caller's thread, only checks
/// and copying). No
/// method blocks the calling thread except the `open*` constructors.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// The tenant this handle sees ([`TenantScoped`]); `None` when unscoped.
    tenant: Option<TenantId>,
}

struct Inner {
    workers: Workers,
    notifier: CommitNotifier,
    options: SqliteOptions,
    kinds: Arc<KindCache>,
    /// Names of committed streams, for reads across streams.
    streams: Arc<StreamCache>,
    /// Whole tag lists reads have parsed.
    tag_lists: Arc<TagListCache>,
}

impl Drop for Inner {
    /// The last handle is gone: listeners learn that no commit will come.
    fn drop(&mut self) {
        self.notifier.close();
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store in a file with default options.
    /// Blocks while it opens: call it before starting work, or use
    /// [`connect`](Self::connect) from async code.
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, OpenError> {
        Self::open_with(SqliteOptions::file(path))
    }

    /// Opens a private in-memory store.
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    pub fn open_in_memory() -> Result<Self, OpenError> {
        Self::open_with(SqliteOptions::in_memory())
    }

    /// Opens (or creates) a store: checks the file, switches it to WAL mode,
    /// sets the durability mode, creates or migrates the schema, and starts
    /// the writer and reader threads. Blocks while it opens.
    ///
    /// # Errors
    /// [`OpenError::NotADatabase`] for a file that is not SQLite,
    /// [`OpenError::NotEskit`] for another application's database,
    /// [`OpenError::NewerSchema`] for a store written by a newer version,
    /// [`OpenError::ReadOnly`], [`OpenError::Corrupt`],
    /// [`OpenError::InvalidOption`] for options out of range, or another
    /// SQLite failure.
    pub fn open_with(options: SqliteOptions) -> Result<Self, OpenError> {
        options.validate()?;
        let writer = schema::open_writer(&options)?;
        let readers = match options.location() {
            Location::Memory => Vec::new(),
            Location::File(_) => (0..options.readers())
                .map(|_| schema::open_reader(&options))
                .collect::<Result<_, _>>()?,
        };
        let notifier = CommitNotifier::new();
        let latest: i64 = writer
            .query_row(
                "SELECT coalesce(max(position), 0) FROM eskit_events",
                [],
                |r| r.get(0),
            )
            .map_err(|e| {
                OpenError::from_sqlite(options.path().unwrap_or(":memory:".as_ref()), e)
            })?;
        notifier.notify(Position::new(u64::try_from(latest).unwrap_or(0)));
        // With an fsync per commit, waiting a moment for more appends pays;
        // without one it only adds latency.
        let linger = match options.synchronous() {
            Synchronous::Normal => Duration::ZERO,
            _ => GROUP_COMMIT_LINGER,
        };
        let checkpoints = match options.location() {
            Location::Memory => None,
            Location::File(_) => Some(schema::open_checkpointer(&options)?),
        };
        let workers = Workers::start(
            writer,
            readers,
            options.calls_on_caller_thread(),
            checkpoints,
            notifier.clone(),
            linger,
        )
        .map_err(OpenError::Thread)?;
        Ok(Self {
            inner: Arc::new(Inner {
                workers,
                notifier,
                options,
                kinds: Arc::default(),
                streams: Arc::default(),
                tag_lists: Arc::default(),
            }),
            tenant: None,
        })
    }

    /// Opens a store like [`open_with`](Self::open_with), doing the blocking
    /// work on a new thread so an async caller is never blocked.
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    ///
    /// # Cancel safety
    /// Dropping the future lets the open finish in the background; the store
    /// is then closed again.
    pub async fn connect(options: SqliteOptions) -> Result<Self, OpenError> {
        let (tx, rx) = oneshot::channel();
        thread::Builder::new()
            .name("eskit-sqlite-open".into())
            .spawn(move || tx.send(Self::open_with(options)))
            .map_err(OpenError::Thread)?;
        rx.await
            .map_err(|_| OpenError::Thread(std::io::Error::other("the opening thread stopped")))?
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.inner.options
    }

    /// The in-process notifier, signalled after every commit of an append.
    pub fn notifier(&self) -> &CommitNotifier {
        &self.inner.notifier
    }

    /// The snapshot store on this database.
    pub fn snapshots(&self) -> SqliteSnapshotStore {
        SqliteSnapshotStore::new(self.clone())
    }

    /// The dead-letter store on this database.
    pub fn dead_letters(&self) -> crate::SqliteDeadLetterStore {
        crate::SqliteDeadLetterStore::new(self.clone())
    }

    /// The claim store (work queues) on this database, shared with every
    /// process that opens the same file.
    pub fn claims(&self) -> crate::SqliteClaimStore {
        crate::SqliteClaimStore::new(self.clone())
    }

    /// The checkpoint store on this database.
    pub fn checkpoints(&self) -> SqliteCheckpointStore {
        SqliteCheckpointStore::new(self.clone())
    }

    /// A lock registry on this database, shared with every process that
    /// opens the same file, with leases of [`LOCK_LEASE`](crate::LOCK_LEASE).
    /// Each registry is its own owner. It keeps the store open while it or
    /// a lock it handed out is alive.
    pub fn locks(&self) -> SqliteLockRegistry {
        SqliteLockRegistry::with_default_lease(self.clone())
    }

    /// A lock registry like [`locks`](Self::locks) with leases of `lease`:
    /// shorter leases hand a dead holder's locks over sooner and cost more
    /// renewals.
    ///
    /// # Errors
    /// [`OpenError::InvalidOption`] when `lease` is outside
    /// [`MIN_LOCK_LEASE`](crate::MIN_LOCK_LEASE)..=[`MAX_LOCK_LEASE`](crate::MAX_LOCK_LEASE).
    pub fn locks_with_lease(&self, lease: Duration) -> Result<SqliteLockRegistry, OpenError> {
        SqliteLockRegistry::new(self.clone(), lease)
    }

    /// A change relay on this database with a fresh origin id.
    pub fn change_relay(&self) -> ChangeRelay {
        ChangeRelay::new(self.clone())
    }

    /// Starts polling `PRAGMA data_version` every `interval` so that commits
    /// by other processes to the same file signal [`notifier`](Self::notifier).
    /// For an in-memory store no other process can write: the watcher is idle.
    ///
    /// Blocks while it opens its connection and takes its first reading, so
    /// every commit made after it returns is heard. When the watcher fails
    /// to read the file several times in a row, listeners get
    /// [`FeedError::Broken`](eskit_core::store::FeedError::Broken) once (poll
    /// meanwhile), and a wake-up when it reads again.
    ///
    /// # Errors
    /// [`OpenError::InvalidOption`] for an interval below
    /// [`MIN_POLL_INTERVAL`]; a failure to open the polling connection or to
    /// start its thread.
    pub fn watch_external_writes(&self, interval: Duration) -> Result<ExternalWatcher, OpenError> {
        if interval < MIN_POLL_INTERVAL {
            return Err(OpenError::InvalidOption {
                name: "poll interval",
                reason: "must be at least MIN_POLL_INTERVAL",
            });
        }
        match self.inner.options.location() {
            Location::Memory => Ok(ExternalWatcher::idle()),
            Location::File(_) => {
                let conn = schema::open_watcher(&self.inner.options)?;
                ExternalWatcher::start(conn, interval, self.inner.notifier.clone())
                    .map_err(OpenError::Thread)
            }
        }
    }

    /// Runs `PRAGMA integrity_check` and returns its findings; empty means
    /// the database is intact.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when SQLite cannot even read the file, or
    /// another backend failure.
    pub async fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        self.inner
            .workers
            .read(|c| {
                let mut stmt = c.prepare("PRAGMA integrity_check").map_err(store_error)?;
                let rows = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(store_error)?;
                let mut out = Vec::new();
                for r in rows {
                    let r = r.map_err(store_error)?;
                    if r != "ok" {
                        out.push(r);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Closes the store for every handle, as sqlx's `Pool::close` does:
    /// from the moment it is called, every call through any clone of this
    /// store (and the snapshot, checkpoint and lock stores it handed out)
    /// fails with [`StoreError::Closed`], and the commit feed ends its
    /// listeners with [`FeedError::Closed`](eskit_core::store::FeedError::Closed).
    ///
    /// Requests already queued finish first: appends queued before the call
    /// commit (or fail) as usual; later ones fail with the closed kind.
    /// Returns once every thread has closed its connection (the writer's
    /// close checkpoints the WAL), so the files can be removed or copied
    /// right after. Calling it again, from any handle, waits the same way.
    /// A watcher from [`watch_external_writes`](Self::watch_external_writes)
    /// has its own connection and stops only when it is dropped.
    ///
    /// Dropping the last handle without calling it also stops the threads,
    /// without waiting for them.
    ///
    /// # Cancel safety
    /// Cancel safe: the store is closed when `close` is called, before the
    /// future is first polled; awaiting it only waits for the threads, and
    /// dropping it leaves them to finish in the background.
    pub fn close(&self) -> impl Future<Output = ()> + Send + '_ {
        self.inner.workers.close();
        self.inner.notifier.close();
        self.inner.workers.stopped()
    }

    pub(crate) fn workers(&self) -> &Workers {
        &self.inner.workers
    }

    /// Runs `f` in an IMMEDIATE transaction on the writer thread.
    pub(crate) async fn write_tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner
            .workers
            .write(move |c| {
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(store_error)?;
                let out = f(&tx)?;
                tx.commit().map_err(store_error)?;
                Ok(out)
            })
            .await
    }

    pub(crate) fn signal(&self) {
        let n = &self.inner.notifier;
        n.notify(n.latest());
    }
}

/// Clamps a `u64` to SQLite's `i64` range; values above it match nothing.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// ` AND e.kind IN (...)` for the kinds of `types`, with their parameters
/// numbered from `first_param`; nothing when `types` is empty.
fn type_filter(types: &[eskit_core::event::EventType], first_param: usize) -> (String, Vec<Value>) {
    if types.is_empty() {
        return (String::new(), Vec::new());
    }
    let placeholders: Vec<String> = (0..types.len())
        .map(|i| format!("?{}", first_param + i))
        .collect();
    (
        format!(
            " AND e.kind IN (SELECT kind FROM eskit_event_kinds WHERE event_type IN ({}))",
            placeholders.join(", ")
        ),
        types
            .iter()
            .map(|t| Value::Text(t.as_str().to_owned()))
            .collect(),
    )
}

fn load_sync(
    c: &Connection,
    kinds: &KindCache,
    tenant: Option<&TenantId>,
    stream: &StreamName,
    options: &LoadOptions,
    tx: &PartSender<EventBatch>,
) -> Result<(), StoreError> {
    let _read = ReadTx::begin(c)?;
    // The stream's row gives its key, and its version sizes the result:
    // growing a vector of events page by page copies them again and again.
    let Some((sid, version, state)) = stream_row(c, stream, tenant_key(tenant))? else {
        return Ok(());
    };
    let limit = options
        .limit()
        .map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let from = options.from().map_or(0, |v| clamp(v.get()));
    let to = options.to().map_or(i64::MAX, |v| clamp(v.get()));
    let capacity = usize::try_from(
        (to.min(version) - from.max(1) + 1).clamp(0, limit.min(LOAD_CAPACITY_HINT_MAX)),
    )
    .unwrap_or(0);
    let (filter, type_params) = type_filter(options.event_types(), 5);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM eskit_events e \
         WHERE e.stream = ?1 AND e.version >= ?2 AND e.version <= ?3{filter} \
         ORDER BY e.version LIMIT ?4"
    );
    let mut params: Vec<Value> = vec![
        Value::Integer(sid),
        Value::Integer(from),
        Value::Integer(to),
        Value::Integer(limit),
    ];
    params.extend(type_params);
    let mut stmt = c.prepare_cached(&sql).map_err(store_error)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(store_error)?;
    let mut holes = HoleCheck::new(options, state, from, to.min(version), limit);
    let mut batch = BatchBuilder::new(KindReader::committed(kinds), capacity, tenant.cloned());
    let owner = batch.add_stream(stream.clone());
    while let Some(row) = rows.next().map_err(store_error)? {
        holes.row(stream, crate::row::int_column(row, 1)?)?;
        batch.push(c, row, owner)?;
        if batch.is_full() && !tx.send(Ok(Part::Chunk(batch.take()))) {
            return Ok(());
        }
    }
    if let Some(missing) = holes.missing_at_end() {
        // The stream row and the events were read in two statements: a
        // stream deleted in between has no events left and is no hole.
        // Deletion is final, so a stream not deleted now was not deleted
        // when its events were read.
        let deleted_since = holes.saw_none()
            && !matches!(stream_row(c, stream, tenant_key(tenant))?, Some((_, _, s)) if s != STATE_DELETED);
        if !deleted_since {
            return Err(missing_version(stream, missing));
        }
    }
    // `read_parts` sends the end right after: one wake-up for both.
    tx.queue(Ok(Part::Chunk(batch.finish())));
    Ok(())
}

/// Finds versions missing from a load: versions are read in order, so a
/// row missing inside a stream costs one comparison per row to notice.
///
/// Only a load that reads consecutive versions can see a hole, one without
/// a type filter: a type filter skips versions by design, so a missing row
/// looks like an event of another type and is not checked. A load reads
/// versions from `max(from, 1)`; every row from there on must follow the
/// previous one, and unless the limit cut the load short, the rows must go
/// on up to `min(to, version)`, the stream row's version. Rows above that
/// version are not a hole: an append may commit between the two reads.
struct HoleCheck {
    /// The version the next row must have; `None` when nothing is checked.
    next: Option<i64>,
    /// The last version the rows must reach.
    last: i64,
    rows: i64,
    limit: i64,
}

impl HoleCheck {
    fn new(options: &LoadOptions, state: i64, from: i64, last: i64, limit: i64) -> Self {
        // A deleted stream keeps its version but none of its events.
        let checked = options.event_types().is_empty() && state != STATE_DELETED;
        Self {
            next: checked.then_some(from.max(1)),
            last,
            rows: 0,
            limit,
        }
    }

    /// Checks the next row's version.
    fn row(&mut self, stream: &StreamName, version: i64) -> Result<(), StoreError> {
        self.rows += 1;
        match self.next {
            Some(want) if version != want => Err(missing_version(stream, want)),
            Some(want) => {
                // `None` past `i64::MAX`: no row can follow.
                self.next = want.checked_add(1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The first version missing after the last row, when the rows stopped
    /// short of the stream's version.
    fn missing_at_end(&self) -> Option<i64> {
        self.next
            .filter(|want| self.rows < self.limit && *want <= self.last)
    }

    fn saw_none(&self) -> bool {
        self.rows == 0
    }
}

fn missing_version(stream: &StreamName, version: i64) -> StoreError {
    corrupt(format!(
        "the event at version {version} of stream {stream} is missing"
    ))
}

/// Builds the events a reader hands over in batches, on the caller's thread,
/// with the horizon a global read sent.
async fn collect_events(
    lists: &Arc<TagListCache>,
    parts: chunks::Receiver<Result<Part<EventBatch>, StoreError>>,
) -> Result<(Vec<RawEvent>, Option<Position>), StoreError> {
    collect_into(Assembler::default().with_tag_lists(lists), parts).await
}

/// [`collect_events`] with `events` building them.
async fn collect_into(
    mut events: Assembler,
    mut parts: chunks::Receiver<Result<Part<EventBatch>, StoreError>>,
) -> Result<(Vec<RawEvent>, Option<Position>), StoreError> {
    let mut horizon = None;
    loop {
        match parts.next().await {
            Some(Ok(Part::Chunk(batch))) => events.add(batch)?,
            Some(Ok(Part::Horizon(h))) => horizon = Some(Position::new(h)),
            Some(Ok(Part::Done)) => return Ok((events.finish(), horizon)),
            Some(Err(e)) => return Err(e),
            None => return Err(stopped()),
        }
    }
}

/// The highest position ever assigned, as the last commit left it: the
/// newest event's, or the high-water mark a hard delete kept. Every position
/// at or below it has committed or will never exist; the next commit takes a
/// higher one.
const HORIZON_SQL: &str = "SELECT max(coalesce((SELECT max(position) FROM eskit_events), 0), \
     coalesce((SELECT high_water FROM eskit_sequence WHERE name = 'events'), 0))";

/// A read transaction on a reader connection, for the statements of one
/// read: they see one snapshot, and the connection takes and drops its read
/// lock once (system calls) instead of once per statement. Ends when
/// dropped; inside a transaction already open it adds nothing.
pub(crate) struct ReadTx<'c>(Option<&'c Connection>);

impl<'c> ReadTx<'c> {
    pub(crate) fn begin(c: &'c Connection) -> Result<Self, StoreError> {
        if !c.is_autocommit() {
            return Ok(Self(None));
        }
        crate::append::exec(c, "BEGIN")?;
        Ok(Self(Some(c)))
    }
}

impl Drop for ReadTx<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0.filter(|c| !c.is_autocommit()) {
            // A read transaction has nothing to keep; if even this fails,
            // the reader's next job rolls it back (`rollback_if_open`).
            let _ = crate::append::exec(c, "COMMIT");
        }
    }
}

pub(crate) fn horizon(c: &Connection) -> Result<u64, StoreError> {
    let h: i64 = c
        .prepare_cached(HORIZON_SQL)
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(store_error)?;
    u64::try_from(h).map_err(|_| corrupt("negative position"))
}

/// Most events a load reserves room for up front; longer loads grow.
const LOAD_CAPACITY_HINT_MAX: i64 = 16_384;

/// A global read: the horizon first, then the events after the cursor up to
/// it. Reading the horizon first and bounding the events by it keeps the two
/// consistent without a read transaction: commits after the horizon was read
/// hold only higher positions, which this read leaves to the next.
fn read_sync(
    c: &Connection,
    kinds: &KindCache,
    streams: &StreamCache,
    tenant: Option<&TenantId>,
    options: &ReadOptions,
    tx: &PartSender<EventBatch>,
) -> Result<(), StoreError> {
    let _read = ReadTx::begin(c)?;
    let horizon = horizon(c)?;
    if !tx.queue(Ok(Part::Horizon(horizon))) {
        return Ok(());
    }
    // This store's cursors have transaction key 0; one with a larger key lies
    // past every event.
    let after = options.after();
    if after.tx() > 0 || after.position().get() >= horizon {
        return Ok(());
    }
    let (type_sql, type_params) = type_filter(options.event_types(), 6);
    let stream_type_sql = if options.stream_type().is_some() {
        " AND e.stream IN (SELECT sid FROM eskit_streams WHERE stream_type = ?3)"
    } else {
        " AND ?3 IS NULL"
    };
    // Stream names are looked up once per stream (by key), not per row.
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, e.stream FROM eskit_events e \
         WHERE e.position > ?1 AND e.position <= ?4 AND e.tenant = ?5{stream_type_sql}{type_sql} \
         ORDER BY e.position LIMIT ?2"
    );
    let mut params: Vec<Value> = vec![
        Value::Integer(clamp(after.position().get())),
        Value::Integer(i64::try_from(options.limit().min(MAX_READ_LIMIT)).unwrap_or(0)),
        options
            .stream_type()
            .map_or(Value::Null, |t| Value::Text(t.as_str().to_owned())),
        Value::Integer(clamp(horizon)),
        Value::Text(tenant_key(tenant).to_owned()),
    ];
    params.extend(type_params);
    let mut stmt = c.prepare_cached(&sql).map_err(store_error)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(store_error)?;
    let mut batch = BatchBuilder::new(KindReader::committed(kinds), 0, tenant.cloned())
        .with_shared_streams(streams);
    while let Some(row) = rows.next().map_err(store_error)? {
        let sid = crate::row::int_column(row, EVENT_COLUMN_COUNT)?;
        let stream = batch.stream(c, sid)?;
        batch.push(c, row, stream)?;
        if batch.is_full() && !tx.send(Ok(Part::Chunk(batch.take()))) {
            return Ok(());
        }
    }
    // `read_parts` sends the end right after: one wake-up for both.
    tx.queue(Ok(Part::Chunk(batch.finish())));
    Ok(())
}

impl SqliteStore {
    /// This handle's tenant as stored (`''` for none).
    pub(crate) fn tenant_key(&self) -> String {
        tenant_key(self.tenant.as_ref()).to_owned()
    }
}

impl TenantScoped for SqliteStore {
    /// A handle on the same file and threads that sees and writes only
    /// `tenant`'s streams; the checkpoint, snapshot and dead-letter stores
    /// it hands out ([`checkpoints`](Self::checkpoints),
    /// [`snapshots`](Self::snapshots), [`dead_letters`](Self::dead_letters))
    /// and its [`write_transaction`](Self::write_transaction)s are scoped
    /// with it.
    fn for_tenant(&self, tenant: TenantId) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            tenant: Some(tenant),
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }
}

impl EventStore for SqliteStore {
    /// Appends through the writer thread's group commit.
    ///
    /// # Cancel safety
    /// Not cancel safe in the sense of "nothing happens": once the future has
    /// been polled, the append is queued and the writer commits it (or fails
    /// it) whole, whether or not the future is still alive; a future dropped
    /// before its first poll writes nothing. No append is ever partially
    /// written. To learn the outcome of a dropped append, retry it with the
    /// same idempotency key: `deduplicated: true` says the first one committed.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        validate_append(&events, &options)?;
        self.inner
            .workers
            .append(
                self.tenant.clone(),
                stream.clone(),
                expected,
                events,
                options,
            )
            .await
    }

    /// Loads on a reader thread. A version missing inside the stream (a
    /// row lost from the file) fails the load with
    /// [`StoreError::Corrupt`] instead of returning the events around it;
    /// a load filtered by event type cannot notice one.
    async fn load(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RawEvent>, StoreError> {
        options.validate()?;
        let stream = stream.clone();
        let tenant = self.tenant.clone();
        let kinds = Arc::clone(&self.inner.kinds);
        let parts = self.inner.workers.read_parts(move |c, tx| {
            load_sync(c, &kinds, tenant.as_ref(), &stream, &options, tx)
        })?;
        Ok(collect_events(&self.inner.tag_lists, parts).await?.0)
    }

    /// Loads on a reader thread like [`load`](EventStore::load), handing
    /// each batch's events to `each` as the batch arrives, while the reader
    /// reads the next: no list of the whole stream is built, and one
    /// batch's memory serves the whole load. The checks are the load's
    /// (checksums, missing versions); an error `each` returns stops the
    /// reader too.
    async fn load_each<F>(
        &self,
        stream: &StreamName,
        options: LoadOptions,
        mut each: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(RawEvent) -> Result<(), StoreError> + Send,
    {
        options.validate()?;
        let stream = stream.clone();
        let tenant = self.tenant.clone();
        let kinds = Arc::clone(&self.inner.kinds);
        let mut parts = self.inner.workers.read_parts(move |c, tx| {
            load_sync(c, &kinds, tenant.as_ref(), &stream, &options, tx)
        })?;
        let mut events = Assembler::streaming().with_tag_lists(&self.inner.tag_lists);
        loop {
            match parts.next().await {
                Some(Ok(Part::Chunk(batch))) => {
                    events.add(batch)?;
                    for event in events.drain() {
                        each(event)?;
                    }
                }
                Some(Ok(Part::Horizon(_))) => {}
                Some(Ok(Part::Done)) => return Ok(()),
                Some(Err(e)) => return Err(e),
                None => return Err(stopped()),
            }
        }
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        let stream = stream.clone();
        let tenant = self.tenant.clone();
        self.inner
            .workers
            .read(
                move |c| match stream_row(c, &stream, tenant_key(tenant.as_ref()))? {
                    None => Ok(Version::ZERO),
                    Some((_, _, STATE_DELETED)) => Ok(Version::ZERO),
                    Some((_, v, _)) => to_version(v),
                },
            )
            .await
    }

    /// Looks the key up in `eskit_idempotency` on a reader thread, then
    /// loads the versions it names.
    async fn find_idempotent(
        &self,
        stream: &StreamName,
        key: &str,
    ) -> Result<Option<Vec<RawEvent>>, StoreError> {
        validate_idempotency_key(key)?;
        let (name, owned) = (stream.clone(), key.to_owned());
        let tenant = self.tenant.clone();
        let entry: Option<(i64, i64)> = self
            .inner
            .workers
            .read(move |c| {
                let Some((sid, _, _)) = stream_row(c, &name, tenant_key(tenant.as_ref()))? else {
                    return Ok(None);
                };
                c.prepare_cached(
                    "SELECT first_version, event_count FROM eskit_idempotency \
                     WHERE stream = ?1 AND key = ?2",
                )
                .and_then(|mut s| {
                    s.query_row((sid, owned.as_str()), |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(store_error)
            })
            .await?;
        let Some((first, count)) = entry else {
            return Ok(None);
        };
        let bad = || {
            corrupt(format!(
                "idempotency entry of stream {} is out of range",
                stream.quoted()
            ))
        };
        let first = to_version(first)?;
        let count = u64::try_from(count).map_err(|_| bad())?;
        let last = first
            .get()
            .checked_add(count)
            .and_then(|end| end.checked_sub(1))
            .filter(|last| *last >= first.get())
            .ok_or_else(bad)?;
        let events = self
            .load(
                stream,
                LoadOptions::new()
                    .with_from(first)
                    .with_to(Version::new(last)),
            )
            .await?;
        if events.is_empty() {
            // Deleted between the lookup and the load: the key is gone too.
            return Ok(None);
        }
        if events.len() as u64 != count {
            return Err(corrupt(format!(
                "idempotency entry of stream {} names missing events",
                stream.quoted()
            )));
        }
        Ok(Some(events))
    }
}

impl GlobalReader for SqliteStore {
    /// Reads in position order: one writer assigns positions inside its
    /// commit, so every position at or below the highest one visible has
    /// committed, and that position is the read's horizon.
    async fn read(&self, options: ReadOptions) -> Result<GlobalBatch, StoreError> {
        options.validate()?;
        let kinds = Arc::clone(&self.inner.kinds);
        let streams = Arc::clone(&self.inner.streams);
        let tenant = self.tenant.clone();
        let read_options = options.clone();
        let parts = self.inner.workers.read_parts(move |c, tx| {
            read_sync(c, &kinds, &streams, tenant.as_ref(), &read_options, tx)
        })?;
        let (events, horizon) = collect_events(&self.inner.tag_lists, parts).await?;
        let horizon =
            horizon.ok_or_else(|| StoreError::internal("a global read sent no horizon"))?;
        Ok(GlobalBatch::by_position(&options, events, horizon))
    }

    async fn head(&self) -> Result<GlobalCursor, StoreError> {
        self.inner
            .workers
            .read(|c| horizon(c).map(|h| GlobalCursor::at(Position::new(h))))
            .await
    }
}

impl EventQueryReader for SqliteStore {
    /// Reads on a reader thread from the tag index (see the crate's
    /// storage notes), with the global read's horizon rule. Items without
    /// tags read the log in position order, as a filtered global read does.
    async fn query(&self, options: QueryOptions) -> Result<GlobalBatch, StoreError> {
        options.validate()?;
        let kinds = Arc::clone(&self.inner.kinds);
        let streams = Arc::clone(&self.inner.streams);
        let tenant = self.tenant.clone();
        let read_options = options.clone();
        let parts = self.inner.workers.read_parts(move |c, tx| {
            crate::query::query_sync(c, &kinds, &streams, tenant.as_ref(), &read_options, tx)
        })?;
        // The events share the query's own tags, so that checking each one
        // against the query finds them by reference.
        let assembler = Assembler::default()
            .with_tag_lists(&self.inner.tag_lists)
            .sharing_tags(
                options
                    .query()
                    .items()
                    .iter()
                    .flat_map(|i| i.tags().iter().cloned()),
            );
        let (events, horizon) = collect_into(assembler, parts).await?;
        let horizon =
            horizon.ok_or_else(|| StoreError::internal("a query read sent no horizon"))?;
        crate::query::check_matches(options.query(), &events)?;
        Ok(GlobalBatch::query_by_position(&options, events, horizon))
    }
}

impl SqliteStore {
    async fn transition(
        &self,
        stream: &StreamName,
        op: LifecycleOp,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(r) = reason {
            validate_reason(r)?;
        }
        let stream = stream.clone();
        let tenant = self.tenant.clone();
        let reason = reason.map(str::to_owned);
        self.write_tx(move |tx| {
            let Some((sid, _, code)) = stream_row(tx, &stream, tenant_key(tenant.as_ref()))? else {
                return StreamState::NotFound.transition(&stream, op).map(|_| ());
            };
            // The one transition table all backends share.
            state_of(code)?.transition(&stream, op)?;
            let now = Timestamp::now().as_unix_micros();
            let run = |sql: &str, p: &[&dyn rusqlite::ToSql]| {
                tx.prepare_cached(sql)
                    .and_then(|mut s| s.execute(p))
                    .map_err(store_error)
            };
            match op {
                LifecycleOp::Tombstone | LifecycleOp::Archive => {
                    let code = if op == LifecycleOp::Archive {
                        STATE_ARCHIVED
                    } else {
                        STATE_TOMBSTONED
                    };
                    run(
                        "UPDATE eskit_streams SET state = ?1, reason = ?2, changed_at = ?3 \
                         WHERE sid = ?4",
                        &[&code, &reason, &now, &sid],
                    )?;
                }
                LifecycleOp::Restore => {
                    run(
                        "UPDATE eskit_streams SET state = ?1, reason = NULL, changed_at = ?2 \
                         WHERE sid = ?3",
                        &[&STATE_ACTIVE, &now, &sid],
                    )?;
                }
                _ => {
                    keep_high_water(tx)?;
                    delete_tags(tx, sid, tenant_key(tenant.as_ref()))?;
                    run("DELETE FROM eskit_events WHERE stream = ?1", &[&sid])?;
                    run("DELETE FROM eskit_idempotency WHERE stream = ?1", &[&sid])?;
                    run(
                        "DELETE FROM eskit_snapshots WHERE stream_type = ?1 AND stream_id = ?2",
                        &[&stream.stream_type().as_str(), &stream.stream_id().as_str()],
                    )?;
                    run(
                        "UPDATE eskit_streams SET state = ?1, changed_at = ?2 WHERE sid = ?3",
                        &[&STATE_DELETED, &now, &sid],
                    )?;
                }
            }
            Ok(())
        })
        .await?;
        // Lifecycle changes wake listeners too (a deleted stream's events
        // are gone from the next read).
        self.signal();
        Ok(())
    }
}

impl CommitFeed for SqliteStore {
    /// Listens to this process's commits; add
    /// [`watch_external_writes`](Self::watch_external_writes) to hear other
    /// processes' too. The tenants of a file share it: a tenant-scoped
    /// handle's listener is
    /// [`for_part_of_the_feed`](eskit_core::store::Listener::for_part_of_the_feed).
    fn listen(&self) -> Result<eskit_core::store::Listener, eskit_core::store::FeedError> {
        self.inner.notifier.listen_as(self.tenant.as_ref())
    }
}

impl StreamLifecycle for SqliteStore {
    async fn tombstone(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        self.transition(stream, LifecycleOp::Tombstone, Some(reason))
            .await
    }

    async fn archive(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        self.transition(stream, LifecycleOp::Archive, Some(reason))
            .await
    }

    async fn restore(&self, stream: &StreamName) -> Result<(), StoreError> {
        self.transition(stream, LifecycleOp::Restore, None).await
    }

    /// Removes the stream's events, idempotency keys and snapshot in one
    /// transaction; the stream stays as `Deleted` so appends are refused.
    async fn delete(&self, stream: &StreamName) -> Result<(), StoreError> {
        self.transition(stream, LifecycleOp::Delete, None).await
    }

    async fn status(&self, stream: &StreamName) -> Result<StreamStatus, StoreError> {
        let stream = stream.clone();
        let tenant = self.tenant.clone();
        self.inner
            .workers
            .read(move |c| {
                let row: Option<(i64, i64, Option<String>, Option<i64>)> = c
                    .prepare_cached(
                        "SELECT version, state, reason, changed_at FROM eskit_streams \
                         WHERE stream_type = ?1 AND stream_id = ?2 AND tenant = ?3",
                    )
                    .and_then(|mut s| {
                        s.query_row(
                            (
                                stream.stream_type().as_str(),
                                stream.stream_id().as_str(),
                                tenant_key(tenant.as_ref()),
                            ),
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )
                        .optional()
                    })
                    .map_err(store_error)?;
                let Some((version, state, reason, changed_at)) = row else {
                    return Ok(StreamStatus::not_found());
                };
                Ok(StreamStatus {
                    state: state_of(state)?,
                    version: to_version(version)?,
                    reason,
                    changed_at: changed_at.map(Timestamp::from_unix_micros),
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eskit_core::dcb::{EventQuery, QueryItem};
    use eskit_core::event::{EventType, Tag};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};

    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The parts one of the reader functions sends for a read that fits
    /// one batch, with the number of times it woke a caller that waited
    /// for them from the start.
    fn parts_and_wakes(
        read: impl FnOnce(&PartSender<EventBatch>) -> Result<(), StoreError>,
    ) -> Result<(usize, usize), Box<dyn std::error::Error>> {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = chunks::channel();
        assert!(rx.poll_next(&mut cx).is_pending());
        read(&tx)?;
        let woken = wakes.0.load(Ordering::SeqCst);
        let mut parts = 0;
        while let std::task::Poll::Ready(Some(part)) = rx.poll_next(&mut cx) {
            part?;
            parts += 1;
        }
        Ok((parts, woken))
    }

    /// A short read used to wake its caller for its horizon, again for its
    /// one batch and again for its end: a thread switch each. Its parts now
    /// wait for the end (which `read_parts` sends), and wake the caller once.
    #[test]
    fn a_short_read_does_not_wake_its_caller_before_its_end()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!(
            "eskit-sqlite-short-read-wakes-{}-{}",
            std::process::id(),
            Timestamp::now().as_unix_micros()
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("events.db");
        let store = SqliteStore::open(&path)?;
        let stream = StreamName::new("course", "c-1")?;
        let tag = Tag::new("course:c-1")?;
        let events = (0..3)
            .map(|_| {
                Ok(NewEvent::new(EventType::new("Enrolled")?, b"{}".to_vec())
                    .with_tags([tag.clone()]))
            })
            .collect::<Result<Vec<_>, eskit_core::error::ValidationError>>()?;
        eskit_core::rt::block_on(store.append(
            &stream,
            ExpectedVersion::NoStream,
            events,
            AppendOptions::new(),
        ))?;
        eskit_core::rt::block_on(store.close());
        let c = Connection::open(&path)?;
        let kinds = KindCache::default();
        let streams = StreamCache::default();

        let query =
            QueryOptions::from_start(EventQuery::from(QueryItem::new().with_tags([tag])), 100);
        let (parts, woken) =
            parts_and_wakes(|tx| crate::query::query_sync(&c, &kinds, &streams, None, &query, tx))?;
        assert_eq!((parts, woken), (2, 0), "query: horizon and one batch");

        let read = ReadOptions::from_start(100);
        let (parts, woken) =
            parts_and_wakes(|tx| read_sync(&c, &kinds, &streams, None, &read, tx))?;
        assert_eq!((parts, woken), (2, 0), "global read: horizon and one batch");

        let (parts, woken) =
            parts_and_wakes(|tx| load_sync(&c, &kinds, None, &stream, &LoadOptions::new(), tx))?;
        assert_eq!((parts, woken), (1, 0), "load: one batch");
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
