//! Appends, checkpoints and the caller's own writes in one transaction on
//! the writer thread, and the read-model sink built on it.
//!
//! **Invariant**: a [`WriteTx`] runs between two group commits, inside one
//! `BEGIN IMMEDIATE` transaction on the writer connection, so its appends
//! take positions from the same counter as every other append and nothing
//! else writes meanwhile. The commit notifier hears of its appends only
//! after `COMMIT` succeeded; a rollback signals nothing. Kinds its appends
//! created are remembered by the writer only after the commit, and the
//! writer's cached next position is dropped while the transaction runs and
//! set to the one after its last append at commit.

use std::fmt;
use std::sync::Arc;

use eskit_core::{
    backend::{CommitNotifier, validate_append, validate_cursor, validate_name},
    error::{BoxError, StoreError},
    event::{
        AppendResult, ExpectedVersion, GlobalCursor, NameKind, NewEvent, Position, RawEvent,
        RecordedEvent, StreamName, TenantId, Version,
    },
    store::{AppendOptions, ProjectionSink, SinkError, TenantScoped},
    typed::{DomainEvent, EventSchema},
};
use rusqlite::Connection;

use crate::append::{
    Checked, STATE_DELETED, WriterState, batch_start, check_append, exec, load_versions,
    stream_row, to_version, write_append,
};
use crate::checkpoint::{read_checkpoint, write_checkpoint};
use crate::kinds::{FreshKinds, KindKeys};
use crate::row::tenant_key;
use crate::store::SqliteStore;
use crate::worker::{AppendRequest, rollback_if_open};

/// Why [`SqliteStore::write_transaction`] committed nothing.
#[derive(Debug)]
pub enum TxError<E> {
    /// The closure returned this error; the transaction was rolled back.
    Aborted(E),
    /// The store failed: the transaction could not begin or commit, the
    /// closure panicked, or the store is closed. Nothing was committed,
    /// except where [`StoreError::is_outcome_unknown`] says the outcome
    /// is unknown.
    Store(StoreError),
}

impl<E: fmt::Display> fmt::Display for TxError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aborted(e) => write!(f, "the transaction was aborted: {e}"),
            Self::Store(_) => f.write_str("the transaction failed in the store"),
        }
    }
}

// Bounded by `Debug + Display` rather than `Error`, so that a closure's
// boxed error (`Box<dyn Error + Send + Sync>`, which is not itself an
// `Error`) still gives an error type `?` can carry. The closure's error is
// in the message, so it is not repeated as a source.
impl<E: fmt::Debug + fmt::Display> std::error::Error for TxError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Aborted(_) => None,
            Self::Store(e) => Some(e),
        }
    }
}

/// One write transaction on the writer thread, handed to the closure of
/// [`SqliteStore::write_transaction`]. Appends made through it and the
/// statements run on [`connection`](Self::connection) commit together or
/// not at all.
pub struct WriteTx<'a> {
    conn: &'a Connection,
    /// The tenant of the store handle that opened the transaction.
    tenant: Option<TenantId>,
    kinds: &'a KindKeys,
    next: i64,
    fresh: FreshKinds,
    newest: Option<Position>,
}

impl fmt::Debug for WriteTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTx")
            .field("next_position", &self.next)
            .finish_non_exhaustive()
    }
}

impl WriteTx<'_> {
    /// Appends like [`EventStore::append`](eskit_core::store::EventStore::append),
    /// with the same checks (expected version, lifecycle, idempotency,
    /// condition, bounds), inside this transaction. Reads on
    /// [`connection`](Self::connection) see the events at once; other
    /// connections see them when the transaction commits. A refused or
    /// failed append leaves the transaction as it was before the call, so
    /// the closure may go on or give up.
    ///
    /// # Errors
    /// The [`StoreError`] a normal append would return.
    pub fn append(
        &mut self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        validate_append(&events, &options)?;
        let request = AppendRequest {
            tenant: self.tenant.clone(),
            stream: stream.clone(),
            expected,
            events,
            options,
        };
        let plan = match check_append(self.conn, &request, self.next)? {
            Checked::Deduplicated(r) => return Ok(r),
            Checked::Write(plan) => plan,
        };
        // A write that fails half-way (a duplicate event id found by the
        // unique index) is undone to here, with the position counter and
        // the kinds it created.
        exec(self.conn, "SAVEPOINT eskit_tx_append")?;
        let (next, fresh) = (self.next, self.fresh.len());
        match write_append(
            self.conn,
            self.kinds,
            &request,
            plan,
            &mut self.next,
            &mut self.fresh,
        ) {
            Ok(r) => {
                exec(self.conn, "RELEASE eskit_tx_append")?;
                self.newest = self.newest.max(Some(r.last_position()));
                Ok(r)
            }
            Err(e) => {
                self.next = next;
                self.fresh.truncate(fresh);
                exec(self.conn, "ROLLBACK TO eskit_tx_append")?;
                exec(self.conn, "RELEASE eskit_tx_append")?;
                Err(e)
            }
        }
    }

    /// Every event of `stream` as this transaction sees it (its own
    /// appends included), in version order: what a decider folds before
    /// it decides inside the transaction. Typed code decodes them with its
    /// [`EventSchema`](eskit_core::typed::EventSchema) and appends what
    /// [`EventSchema::encode`](eskit_core::typed::EventSchema::encode) returns.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a row that fails its checksum, or a
    /// failed read.
    pub fn load_stream(&self, stream: &StreamName) -> Result<Vec<RawEvent>, StoreError> {
        match stream_row(self.conn, stream, tenant_key(self.tenant.as_ref()))? {
            None | Some((_, _, STATE_DELETED)) => Ok(Vec::new()),
            Some((sid, version, _)) => {
                load_versions(self.conn, stream, self.tenant.as_ref(), sid, 1, version)
            }
        }
    }

    /// The stream's version as this transaction sees it (zero for a stream
    /// that does not exist or was deleted).
    ///
    /// # Errors
    /// A failed read, or [`StoreError::Corrupt`] for a negative version.
    pub fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        match stream_row(self.conn, stream, tenant_key(self.tenant.as_ref()))? {
            None | Some((_, _, STATE_DELETED)) => Ok(Version::ZERO),
            Some((_, v, _)) => to_version(v),
        }
    }

    /// [`append`](Self::append) for typed events: each is encoded with
    /// `schema` (as [`TypedStore`](eskit_core::typed::TypedStore) does) before the
    /// append.
    ///
    /// # Errors
    /// [`StoreError::Codec`] when an event does not encode (nothing is
    /// appended), else as [`append`](Self::append).
    pub fn append_typed<E: DomainEvent>(
        &mut self,
        schema: &EventSchema<E>,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[E],
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        let metadata = options.stored_metadata();
        let events = events
            .iter()
            .map(|e| schema.encode_for(e, stream, self.tenant.as_ref(), &metadata))
            .collect::<Result<Vec<_>, _>>()?;
        self.append(stream, expected, events, options)
    }

    /// [`load_stream`](Self::load_stream) decoded with `schema`; events of
    /// types the schema does not know are skipped, as a typed load skips
    /// them.
    ///
    /// # Errors
    /// [`StoreError::Codec`] for a payload that does not decode, else as
    /// [`load_stream`](Self::load_stream).
    pub fn load_typed<E: DomainEvent>(
        &self,
        schema: &EventSchema<E>,
        stream: &StreamName,
    ) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        let mut out = Vec::new();
        for raw in self.load_stream(stream)? {
            if let Some(e) = schema.decode_if_mine(raw)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Saves `cursor` as the checkpoint `name` in this transaction (the row
    /// [`SqliteCheckpointStore`](crate::SqliteCheckpointStore) reads).
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad name or cursor, or a failed
    /// write.
    pub fn save_checkpoint(&mut self, name: &str, cursor: GlobalCursor) -> Result<(), StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        validate_cursor(cursor)?;
        write_checkpoint(self.conn, tenant_key(self.tenant.as_ref()), name, cursor)
    }

    /// The checkpoint `name` as this transaction sees it.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad name, or a failed read.
    pub fn checkpoint(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        read_checkpoint(self.conn, tenant_key(self.tenant.as_ref()), name)
    }

    /// The writer connection, inside the open transaction, for the caller's
    /// own tables. Do not end the transaction on it (`COMMIT`, `ROLLBACK`,
    /// `BEGIN`) and do not write the `eskit_*` tables directly: appends go
    /// through [`append`](Self::append).
    pub fn connection(&self) -> &Connection {
        self.conn
    }
}

impl SqliteStore {
    /// Runs `f` in one write transaction on the writer thread, between
    /// group commits, and commits when it returns `Ok`: its appends
    /// ([`WriteTx::append`]), checkpoints ([`WriteTx::save_checkpoint`]) and
    /// its own statements on [`WriteTx::connection`] are stored together,
    /// or none of them. The [`notifier`](Self::notifier) is signalled with
    /// the newest appended position right after the commit, before this
    /// future completes; a rollback signals nothing.
    ///
    /// `f` runs on the writer thread and holds up every other write while
    /// it runs: keep it short and never block in it.
    ///
    /// ```
    /// use eskit_core::{store::AppendOptions, event::{EventType, ExpectedVersion, NewEvent, StreamName}, rt::block_on};
    /// use eskit_sqlite::SqliteStore;
    ///
    /// let store = SqliteStore::open_in_memory()?;
    /// block_on(store.write_transaction(|tx| {
    ///     tx.connection().execute_batch("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)")?;
    ///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    /// }))?;
    /// let order = StreamName::new("order", "o-1")?;
    /// block_on(store.write_transaction(move |tx| {
    ///     let placed = NewEvent::new(EventType::new("Placed")?, b"{}".to_vec());
    ///     tx.append(&order, ExpectedVersion::NoStream, vec![placed], AppendOptions::new())?;
    ///     tx.connection().execute("INSERT INTO orders (id) VALUES ('o-1')", [])?;
    ///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    /// }))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`TxError::Aborted`] with `f`'s error (rolled back);
    /// [`TxError::Store`] when the transaction could not begin or commit,
    /// when `f` panicked (rolled back) or ended the transaction itself
    /// (outcome unknown), or when the store is closed.
    ///
    /// # Cancel safety
    /// As for appends: once the future has been polled the transaction is
    /// queued and runs to its end (commit or rollback) whether or not the
    /// future is still alive; a future dropped before its first poll runs
    /// nothing. It never commits in part.
    pub async fn write_transaction<T, E, F>(&self, f: F) -> Result<T, TxError<E>>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
    {
        let tenant = self.tenant().cloned();
        self.workers()
            .transaction(move |conn, state, notifier| run(conn, state, notifier, tenant, f))
            .await
            .map_err(TxError::Store)?
    }

    /// A [`ProjectionSink`] over this store's database: `projection`
    /// applies each page inside a [`WriteTx`] whose commit also stores the
    /// cursor, so every event's effect on the read model lands exactly once.
    pub fn projection_sink<P: SqliteProjection>(&self, projection: P) -> SqliteSink<P> {
        SqliteSink {
            store: self.clone(),
            projection: Arc::new(projection),
        }
    }
}

/// The writer-thread half of [`SqliteStore::write_transaction`].
fn run<T, E>(
    conn: &mut Connection,
    state: &mut WriterState,
    notifier: &CommitNotifier,
    tenant: Option<TenantId>,
    f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, E>,
) -> Result<T, TxError<E>> {
    exec(conn, "BEGIN IMMEDIATE").map_err(TxError::Store)?;
    let (data_version, next) = match batch_start(conn, state) {
        Ok(v) => v,
        Err(e) => {
            rollback_if_open(conn);
            return Err(TxError::Store(e));
        }
    };
    // Until the commit, the remembered position is in doubt (also if `f`
    // panics: the writer then rolls back and the next batch asks again).
    state.next = None;
    let mut tx = WriteTx {
        conn,
        tenant,
        kinds: &state.kinds,
        next,
        fresh: FreshKinds::new(),
        newest: None,
    };
    let out = f(&mut tx);
    let WriteTx {
        next,
        fresh,
        newest,
        ..
    } = tx;
    let value = match out {
        Ok(v) => v,
        Err(e) => {
            rollback_if_open(conn);
            return Err(TxError::Aborted(e));
        }
    };
    if conn.is_autocommit() {
        // The closure committed or rolled back on its own: which one is
        // not known here, so subscribers are told to look.
        if let Some(p) = newest {
            notifier.notify(p);
        }
        return Err(TxError::Store(StoreError::internal(
            "the transaction closure ended the transaction itself",
        )));
    }
    if let Err(e) = exec(conn, "COMMIT") {
        rollback_if_open(conn);
        return Err(TxError::Store(e));
    }
    state.kinds.committed(fresh);
    state.next = Some((data_version, next));
    if let Some(p) = newest {
        notifier.notify(p);
    }
    Ok(value)
}

/// A read model kept in the store's own database, applied page by page in
/// the transaction that also stores its cursor. Wrap it with
/// [`SqliteStore::projection_sink`].
pub trait SqliteProjection: Send + Sync + 'static {
    /// Applies one page (in cursor order, possibly empty) to the read
    /// model through `tx` (its [`connection`](WriteTx::connection) for the
    /// model's tables; it may also append). Returning `Err` rolls the page
    /// back, cursor included.
    ///
    /// # Errors
    /// Whatever the projection refuses; the subscription retries the page.
    fn apply(&self, tx: &mut WriteTx<'_>, events: &[RawEvent]) -> Result<(), BoxError>;

    /// [`apply`](Self::apply), told the page's cursors as well: `before`,
    /// the cursor stored before the page (`None` for none), and `next`, the
    /// one stored after it in the same transaction. For projections that
    /// keep more than one cursor (a read model feeding its shadow during a
    /// rebuild). The default calls [`apply`](Self::apply).
    ///
    /// # Errors
    /// As for [`apply`](Self::apply).
    fn apply_page(
        &self,
        tx: &mut WriteTx<'_>,
        events: &[RawEvent],
        before: Option<GlobalCursor>,
        next: GlobalCursor,
    ) -> Result<(), BoxError> {
        let _ = (before, next);
        self.apply(tx, events)
    }
}

impl<F> SqliteProjection for F
where
    F: Fn(&mut WriteTx<'_>, &[RawEvent]) -> Result<(), BoxError> + Send + Sync + 'static,
{
    fn apply(&self, tx: &mut WriteTx<'_>, events: &[RawEvent]) -> Result<(), BoxError> {
        self(tx, events)
    }
}

/// A [`ProjectionSink`] that applies a [`SqliteProjection`] and stores the
/// cursor in `eskit_checkpoints` in one transaction. Get one with
/// [`SqliteStore::projection_sink`].
pub struct SqliteSink<P> {
    store: SqliteStore,
    projection: Arc<P>,
}

impl<P> fmt::Debug for SqliteSink<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSink")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<P> Clone for SqliteSink<P> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            projection: Arc::clone(&self.projection),
        }
    }
}

impl<P: SqliteProjection> ProjectionSink for SqliteSink<P> {
    /// Reads the checkpoint on a reader thread.
    async fn cursor(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        validate_name(NameKind::Checkpoint, name)?;
        let name = name.to_owned();
        let tenant = self.store.tenant_key();
        self.store
            .workers()
            .read(move |c| read_checkpoint(c, &tenant, &name))
            .await
    }

    /// Runs the projection and the checkpoint in one
    /// [`write_transaction`](SqliteStore::write_transaction). Inside it,
    /// events at or before the stored cursor are skipped and the cursor
    /// never moves back, so a page applied twice (a retry after an unknown
    /// outcome, or a dropped run whose transaction was still queued when
    /// the next run read the cursor) has its effect once.
    ///
    /// # Cancel safety
    /// As for `write_transaction`: once polled the page is applied or
    /// rolled back whole; [`cursor`](Self::cursor) tells which.
    async fn apply(
        &self,
        name: &str,
        events: &[RawEvent],
        next: GlobalCursor,
    ) -> Result<(), SinkError> {
        validate_name(NameKind::Checkpoint, name).map_err(StoreError::from)?;
        validate_cursor(next).map_err(StoreError::from)?;
        let (name, events) = (name.to_owned(), events.to_vec());
        let projection = Arc::clone(&self.projection);
        self.store
            .write_transaction(move |tx| {
                let stored = tx.checkpoint(&name)?;
                let fresh = match stored {
                    Some(c) => events
                        .iter()
                        .position(|e| e.cursor() > c)
                        .unwrap_or(events.len()),
                    None => 0,
                };
                if stored.is_some_and(|c| c >= next) && fresh == events.len() {
                    return Ok(());
                }
                projection
                    .apply_page(tx, &events[fresh..], stored, next)
                    .map_err(SinkError::Projection)?;
                tx.save_checkpoint(&name, stored.map_or(next, |c| c.max(next)))?;
                Ok::<_, SinkError>(())
            })
            .await
            .map_err(|e| match e {
                TxError::Aborted(e) => e,
                TxError::Store(e) => SinkError::Store(e),
            })
    }
}
