//! The threads that own the connections, and the requests sent to them.
//!
//! **Invariant**: no SQLite call ever runs on a caller's thread after open,
//! unless the store was opened with `SqliteOptions::with_calls_on_caller_thread`.
//! One writer thread owns the only write connection; reader threads each own
//! a read connection. Requests travel over channels and answer through a
//! [`oneshot`] whose receiver is the caller's future (sqlx's SQLite driver
//! pattern), so no async runtime is assumed.
//!
//! With calls on the caller's thread there are no writer or reader threads:
//! a read borrows a connection from [`LentReaders`]; a write is queued the
//! same way, then the caller takes the writer connection ([`CallerWriter`])
//! and runs every queued job, so one caller commits the appends of the
//! callers that queued behind it (group commit), and every job still runs
//! on one connection at a time, in queue order.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use eskit_core::{
    error::StoreError,
    event::{AppendResult, ExpectedVersion, NewEvent, StreamName, TenantId},
    store::AppendOptions,
};
use rusqlite::Connection;

use crate::append::{WriterState, commit_appends};
use crate::chunks;
use crate::error::{SqliteError, stopped};
use crate::oneshot;
use crate::options::MAX_GROUP_COMMIT;
use crate::wal::{self, Checkpointer};
use eskit_core::backend::CommitNotifier;

/// Most requests queued for the writer, and separately for the readers,
/// before new ones are refused with [`SqliteError::Overloaded`].
pub const MAX_QUEUED_REQUESTS: usize = 65_536;

pub(crate) type ReadFn = Box<dyn FnOnce(&Connection) + Send>;

/// What a reader thread is sent.
pub(crate) enum ReadJob {
    /// Run this on the reader's connection.
    Run(ReadFn),
    /// Close the connection and exit (one per reader, sent by close).
    Stop,
}

/// One part of a result handed over in parts by [`Workers::read_parts`].
pub(crate) enum Part<T> {
    /// The next part.
    Chunk(T),
    /// A global read's horizon: the highest position it could see, sent
    /// before its events. Everything at or below it had committed.
    Horizon(u64),
    /// Every part was sent.
    Done,
}

/// Where a reader sends the parts of its result.
pub(crate) type PartSender<T> = chunks::Sender<Result<Part<T>, StoreError>>;
pub(crate) type WriteFn = Box<dyn FnOnce(&mut Connection) + Send>;

/// What an append asks for, checked and written by the writer.
pub(crate) struct AppendRequest {
    /// The tenant of the appending handle; `None` when unscoped.
    pub(crate) tenant: Option<TenantId>,
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) options: AppendOptions,
}

pub(crate) struct AppendJob {
    pub(crate) request: AppendRequest,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// A caller's transaction: run with the writer's connection, its cached
/// state and the notifier, between group commits.
pub(crate) type TxFn = Box<dyn FnOnce(&mut Connection, &mut WriterState, &CommitNotifier) + Send>;

pub(crate) enum WriteJob {
    Append(Box<AppendJob>),
    Write(WriteFn),
    Transaction(TxFn),
    Read(ReadFn),
    /// Close the connection and exit, after every job queued before.
    Stop,
}

/// A bounded queue in front of a worker: the counter is raised on send and
/// lowered when a worker takes the request.
struct Queue<T> {
    tx: mpsc::Sender<T>,
    pending: Arc<AtomicUsize>,
}

impl<T> Queue<T> {
    fn send(&self, job: T) -> Result<(), StoreError> {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_REQUESTS {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::overloaded(SqliteError::Overloaded {
                limit: MAX_QUEUED_REQUESTS,
            }));
        }
        self.tx.send(job).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            stopped()
        })
    }

    /// Queues `job` past the bound (for the stop signals of close).
    fn send_unbounded(&self, job: T) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(job).is_err() {
            // The worker has already exited: nothing left to stop.
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Counts the threads that still hold a connection, and wakes whoever waits
/// for none to be left.
#[derive(Default)]
struct Running {
    state: Mutex<RunningState>,
}

#[derive(Default)]
struct RunningState {
    threads: usize,
    waiters: Vec<Waker>,
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, RunningState> {
        // Critical sections only count and move wakers.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a thread about to start; dropping the guard (when the thread
    /// ends, or with a closure that never ran) counts it out.
    fn enter(self: &Arc<Self>) -> RunningGuard {
        self.lock().threads += 1;
        RunningGuard(Arc::clone(self))
    }

    /// Resolves once every counted thread has ended.
    fn none_left(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            let mut s = self.lock();
            if s.threads == 0 {
                return Poll::Ready(());
            }
            if !s.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                s.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

/// Held by a worker thread for as long as it holds its connection.
struct RunningGuard(Arc<Running>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let waiters = {
            let mut s = self.0.lock();
            s.threads = s.threads.saturating_sub(1);
            if s.threads == 0 {
                std::mem::take(&mut s.waiters)
            } else {
                Vec::new()
            }
        };
        for w in waiters {
            w.wake();
        }
    }
}

/// Who runs the writer's jobs.
enum Writer {
    /// The writer thread, fed through its queue.
    Thread(Queue<WriteJob>),
    /// The callers' threads.
    Caller(Box<CallerWriter>),
}

impl Writer {
    /// Sends `job`; with callers running the writer's jobs, this may run
    /// it (and others) here, or wait until `answered`.
    fn send(&self, job: WriteJob, answered: Option<&dyn Fn() -> bool>) -> Result<(), StoreError> {
        match self {
            Self::Thread(q) => q.send(job),
            Self::Caller(c) => c.send(job, answered),
        }
    }
}

/// What every handle of one store shares. [`Workers::close`], or dropping
/// the last handle, stops the threads; they finish what was queued before
/// and exit.
pub(crate) struct Workers {
    writer: Writer,
    readers: Option<Queue<ReadJob>>,
    reader_threads: usize,
    /// The read connections lent to callers' threads, when reads run
    /// there (`SqliteOptions::with_calls_on_caller_thread`); there are no
    /// reader threads then.
    lent: Option<LentReaders>,
    /// Set by [`Workers::close`]: requests are refused from then on.
    closed: AtomicBool,
    /// How the callers of a group commit wake one another.
    chain: Arc<oneshot::WakeChain>,
    /// The threads (writer and readers), or with calls on the caller's
    /// thread the writer and the lent read connections, not closed yet.
    running: Arc<Running>,
}

impl Workers {
    pub(crate) fn start(
        writer_conn: Connection,
        reader_conns: Vec<Connection>,
        on_caller: bool,
        checkpoint_conn: Option<Connection>,
        notifier: CommitNotifier,
        linger: Duration,
    ) -> std::io::Result<Self> {
        let running = Arc::new(Running::default());
        let chain = Arc::new(oneshot::WakeChain::default());
        let checkpointer = match checkpoint_conn {
            Some(conn) => {
                let guard = running.enter();
                Some(Checkpointer::start(conn, move || drop(guard))?)
            }
            None => None,
        };
        // An in-memory database has no reader connections: its one
        // connection stays on the writer thread.
        let on_caller = on_caller && !reader_conns.is_empty();
        let writer = if on_caller {
            if checkpointer.is_some() {
                wal::hook(&writer_conn);
            }
            Writer::Caller(Box::new(CallerWriter::new(
                CallerCore {
                    core: WriterCore::new(writer_conn, linger, Arc::clone(&chain)),
                    checkpointer,
                    _running: running.enter(),
                },
                notifier,
            )))
        } else {
            let (tx, rx) = mpsc::channel();
            let pending = Arc::new(AtomicUsize::new(0));
            let queued = Arc::clone(&pending);
            let guard = running.enter();
            let writer_chain = Arc::clone(&chain);
            thread::Builder::new()
                .name("eskit-sqlite-writer".into())
                .spawn(move || {
                    if let Some(c) = checkpointer {
                        wal::attach(&writer_conn, c);
                    }
                    // `run_writer` owns the connection and closes it (which
                    // checkpoints the WAL when it is the last one) before
                    // the guard counts it out; the checkpoint thread stops
                    // after it.
                    run_writer(writer_conn, &rx, &queued, &notifier, linger, writer_chain);
                    wal::detach();
                    drop(guard);
                })?;
            Writer::Thread(Queue { tx, pending })
        };
        let (reader_conns, lent) = if on_caller {
            (
                Vec::new(),
                Some(LentReaders::new(reader_conns, running.enter())),
            )
        } else {
            (reader_conns, None)
        };
        let reader_threads = reader_conns.len();
        let readers = if reader_conns.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel::<ReadJob>();
            let rx = Arc::new(Mutex::new(rx));
            let pending = Arc::new(AtomicUsize::new(0));
            for (i, conn) in reader_conns.into_iter().enumerate() {
                let rx = Arc::clone(&rx);
                let pending = Arc::clone(&pending);
                let guard = running.enter();
                thread::Builder::new()
                    .name(format!("eskit-sqlite-reader-{i}"))
                    .spawn(move || {
                        run_reader(&conn, &rx, &pending);
                        drop(conn);
                        drop(guard);
                    })?;
            }
            Some(Queue { tx, pending })
        };
        Ok(Self {
            writer,
            readers,
            reader_threads,
            lent,
            closed: AtomicBool::new(false),
            chain,
            running,
        })
    }

    /// Refuses requests from now on and tells every thread to stop after
    /// what is already queued. Idempotent.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        match &self.writer {
            Writer::Thread(q) => q.send_unbounded(WriteJob::Stop),
            Writer::Caller(c) => c.close(),
        }
        if let Some(l) = &self.lent {
            l.close();
        }
        if let Some(q) = &self.readers {
            for _ in 0..self.reader_threads {
                q.send_unbounded(ReadJob::Stop);
            }
        }
    }

    /// Resolves once every thread has closed its connection.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + '_ {
        self.running.none_left()
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(stopped());
        }
        Ok(())
    }

    /// What a request whose reply never came reports: the store closed
    /// meanwhile, or else the job panicked on its thread (a bug).
    fn lost_reply(&self) -> StoreError {
        if self.closed.load(Ordering::Acquire) {
            stopped()
        } else {
            StoreError::internal("an sqlite worker dropped a request without answering it")
        }
    }

    fn send_read(&self, job: ReadFn) -> Result<(), StoreError> {
        self.check_open()?;
        if let Some(l) = &self.lent {
            return l.run(job);
        }
        match &self.readers {
            Some(q) => q.send(ReadJob::Run(job)),
            None => self.writer.send(WriteJob::Read(job), None),
        }
    }

    /// Sends a job for the writer; `answered` tells whether its reply has
    /// come (`None` for a job nobody waits for).
    fn send_write(
        &self,
        job: WriteJob,
        answered: Option<&dyn Fn() -> bool>,
    ) -> Result<(), StoreError> {
        self.check_open()?;
        self.writer.send(job, answered)
    }

    /// Runs `f` on a reader connection (the writer's for in-memory stores).
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send_read(Box::new(move |c| tx.send(f(c))))?;
        rx.await.map_err(|_| self.lost_reply())?
    }

    /// Runs `f` on a reader connection like [`Self::read`], letting it hand
    /// over its result in parts through the sender it is given; the
    /// receiver yields them as they come, then [`Part::Done`] when `f`
    /// returned `Ok`, or the error it returned. A receiver that is dropped
    /// makes the sender refuse further parts, so `f` can stop early. Parts
    /// `f` queues without waking the receiver (`chunks::Sender::queue`)
    /// reach it with the end at the latest: the end is always sent, and a
    /// panic in `f` drops the sender, which wakes the receiver too.
    pub(crate) fn read_parts<T, F>(
        &self,
        f: F,
    ) -> Result<chunks::Receiver<Result<Part<T>, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &PartSender<T>) -> Result<(), StoreError> + Send + 'static,
    {
        let (tx, rx) = chunks::channel();
        self.send_read(Box::new(move |c| {
            let end = f(c, &tx).map(|()| Part::Done);
            tx.send(end);
        }))?;
        Ok(rx)
    }

    /// Queues `f` for the writer connection without waiting for it; for
    /// work started where nothing can wait, such as a guard's `Drop`.
    pub(crate) fn submit(
        &self,
        f: impl FnOnce(&mut Connection) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.send_write(WriteJob::Write(Box::new(f)), None)
    }

    /// Runs `f` with the writer's connection, state and notifier, between
    /// group commits.
    pub(crate) async fn transaction<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &mut WriterState, &CommitNotifier) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send_write(
            WriteJob::Transaction(Box::new(move |c, s, n| {
                tx.send(f(c, s, n));
            })),
            Some(&|| rx.is_ready()),
        )?;
        rx.await.map_err(|_| self.lost_reply())
    }

    /// Runs `f` on the writer connection, between group commits.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send_write(
            WriteJob::Write(Box::new(move |c| tx.send(f(c)))),
            Some(&|| rx.is_ready()),
        )?;
        rx.await.map_err(|_| self.lost_reply())?
    }

    pub(crate) async fn append(
        &self,
        tenant: Option<TenantId>,
        stream: StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send_write(
            WriteJob::Append(Box::new(AppendJob {
                request: AppendRequest {
                    tenant,
                    stream,
                    expected,
                    events,
                    options,
                },
                reply,
            })),
            Some(&|| rx.is_ready()),
        )?;
        let _pass_on = oneshot::PassOn(&self.chain);
        rx.await.map_err(|_| self.lost_reply())?
    }
}

/// Read connections lent, one at a time, to the threads that call the
/// store, instead of reader threads: a read runs on the caller's thread,
/// with no hand-off either way.
struct LentReaders {
    pool: Mutex<Lendable>,
    returned: Condvar,
}

struct Lendable {
    idle: Vec<Connection>,
    /// Connections a caller is using now.
    out: usize,
    /// Callers waiting for a connection to come back: one is woken per
    /// connection returned, and none when nobody waits (a wake-up is a
    /// system call even with no thread to wake).
    waiting: usize,
    closed: bool,
    /// Counts the pool in [`Running`] until its last connection is closed.
    guard: Option<RunningGuard>,
}

impl LentReaders {
    fn new(conns: Vec<Connection>, guard: RunningGuard) -> Self {
        Self {
            pool: Mutex::new(Lendable {
                idle: conns,
                out: 0,
                waiting: 0,
                closed: false,
                guard: Some(guard),
            }),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lendable> {
        // Critical sections only move connections and counters.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `job` on an idle connection, on this thread; waits for one to
    /// come back when every connection is out.
    fn run(&self, job: ReadFn) -> Result<(), StoreError> {
        let conn = {
            let mut p = self.lock();
            loop {
                if p.closed {
                    return Err(stopped());
                }
                if let Some(c) = p.idle.pop() {
                    p.out += 1;
                    break c;
                }
                p.waiting += 1;
                p = self
                    .returned
                    .wait(p)
                    .unwrap_or_else(PoisonError::into_inner);
                p.waiting -= 1;
            }
        };
        // A panicking job drops its reply sender, so its caller gets an
        // error; the connection goes back to the pool.
        let _ = catch_unwind(AssertUnwindSafe(|| job(&conn)));
        rollback_if_open(&conn);
        let (closed_last, wake) = {
            let mut p = self.lock();
            p.out -= 1;
            let wake = p.waiting > 0;
            if p.closed {
                drop(conn);
                ((p.out == 0).then(|| p.guard.take()), wake)
            } else {
                p.idle.push(conn);
                (None, wake)
            }
        };
        if wake {
            self.returned.notify_one();
        }
        drop(closed_last);
        Ok(())
    }

    /// Closes the idle connections now and the others as they come back.
    fn close(&self) {
        let (idle, guard) = {
            let mut p = self.lock();
            p.closed = true;
            let idle = std::mem::take(&mut p.idle);
            let guard = if p.out == 0 { p.guard.take() } else { None };
            (idle, guard)
        };
        self.returned.notify_all();
        drop(idle);
        drop(guard);
    }
}

fn run_reader(conn: &Connection, rx: &Mutex<mpsc::Receiver<ReadJob>>, pending: &AtomicUsize) {
    loop {
        // Holding the lock while waiting in `recv` makes the shared receiver
        // a multi-consumer queue: the next idle reader takes the next job. A
        // reader that just finished watches briefly for the next job, which
        // a caller reading in a loop sends right after its reply.
        let job = recv_soon(&rx.lock().unwrap_or_else(PoisonError::into_inner));
        let Ok(job) = job else { return };
        pending.fetch_sub(1, Ordering::AcqRel);
        let ReadJob::Run(job) = job else { return };
        // A panicking job drops its reply sender, so its caller gets an error;
        // the thread keeps serving.
        let _ = catch_unwind(AssertUnwindSafe(|| job(conn)));
    }
}

/// The writer connection and what the writer keeps between jobs, on
/// whichever thread runs them (the writer thread, or a caller's).
struct WriterCore {
    conn: Connection,
    state: WriterState,
    /// Appends in the previous group commit: the concurrency to expect.
    last_batch: usize,
    linger: Duration,
}

impl WriterCore {
    fn new(conn: Connection, linger: Duration, chain: Arc<oneshot::WakeChain>) -> Self {
        Self {
            conn,
            state: WriterState {
                chain,
                ..WriterState::default()
            },
            last_batch: 1,
            linger,
        }
    }

    /// Runs `job`. An append takes the appends queued behind it, from
    /// `more`, into the same transaction (group commit); a job of another
    /// kind met there is returned, to run next.
    fn run(
        &mut self,
        job: WriteJob,
        more: &mut dyn FnMut() -> Option<WriteJob>,
        notifier: &CommitNotifier,
    ) -> Option<WriteJob> {
        let mut next = None;
        match job {
            WriteJob::Append(a) => {
                let mut batch = vec![*a];
                // Every append that queued up while the last commit was
                // running goes into this transaction. When the last commit
                // carried several appends (concurrent writers) and commits
                // cost an fsync, wait up to `linger` for as many again:
                // their writers are waking up from the last reply.
                let deadline = Instant::now() + self.linger;
                let want = self.last_batch.min(MAX_GROUP_COMMIT);
                loop {
                    while batch.len() < MAX_GROUP_COMMIT {
                        match more() {
                            Some(WriteJob::Append(a)) => batch.push(*a),
                            Some(other) => {
                                next = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    if next.is_some()
                        || want <= 1
                        || batch.len() >= want
                        || Instant::now() >= deadline
                    {
                        break;
                    }
                    thread::yield_now();
                }
                self.last_batch = batch.len();
                let (conn, state) = (&mut self.conn, &mut self.state);
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    commit_appends(conn, state, batch, notifier);
                }));
            }
            WriteJob::Write(f) => {
                let _ = catch_unwind(AssertUnwindSafe(|| f(&mut self.conn)));
            }
            WriteJob::Transaction(f) => {
                let (conn, state) = (&mut self.conn, &mut self.state);
                let _ = catch_unwind(AssertUnwindSafe(|| f(conn, state, notifier)));
            }
            WriteJob::Read(f) => {
                let _ = catch_unwind(AssertUnwindSafe(|| f(&self.conn)));
            }
            // Ends the writer thread's loop, which looks for it first.
            WriteJob::Stop => {}
        }
        rollback_if_open(&self.conn);
        next
    }
}

fn run_writer(
    conn: Connection,
    rx: &mpsc::Receiver<WriteJob>,
    pending: &AtomicUsize,
    notifier: &CommitNotifier,
    linger: Duration,
    chain: Arc<oneshot::WakeChain>,
) {
    let mut core = WriterCore::new(conn, linger, chain);
    let mut more = || match rx.try_recv() {
        Ok(j) => {
            pending.fetch_sub(1, Ordering::AcqRel);
            Some(j)
        }
        Err(_) => None,
    };
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => {
                let job = match try_recv_watching(rx, WRITER_WATCH, WRITER_WATCH) {
                    Ok(None) => {
                        // Nothing came while the callers of the last group
                        // woke one another: wake any still waiting before
                        // sleeping.
                        core.state.chain.flush();
                        rx.recv()
                    }
                    other => other.and_then(|j| j.ok_or(mpsc::RecvError)),
                };
                let Ok(job) = job else { break };
                pending.fetch_sub(1, Ordering::AcqRel);
                job
            }
        };
        if matches!(job, WriteJob::Stop) {
            break;
        }
        next = core.run(job, &mut more, notifier);
    }
    // No caller of the last group waits on a link that never comes.
    core.state.chain.flush();
}

thread_local! {
    /// The caller-run writer (by address) whose jobs this thread is
    /// running now: a write it sends meanwhile (a lock guard dropped by a
    /// job) is queued for the same run instead of waiting for itself.
    static SERVING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The writer's jobs run on the callers' threads, one caller at a time
/// (`SqliteOptions::with_calls_on_caller_thread`). A caller queues its
/// job; when no caller is running the queue it runs it (its own job and
/// every job queued meanwhile, so concurrent appends share a transaction);
/// otherwise it waits until its job is answered.
///
/// **Invariant**: `busy` goes back to `false`, under the same lock, only
/// with the queue empty, or with a caller waiting (which then runs the
/// queue), so a job queued while `busy` is always run. A caller stops
/// running the queue once its own job is answered and another caller
/// waits, so no caller serves the others for long.
struct CallerWriter {
    shared: Mutex<Shared>,
    /// Signalled after each job the running caller finished.
    ran: Condvar,
    /// `None` once closed. Only the caller running the queue locks it.
    core: Mutex<Option<CallerCore>>,
    notifier: CommitNotifier,
}

#[derive(Default)]
struct Shared {
    queue: std::collections::VecDeque<WriteJob>,
    /// A caller is running the queue.
    busy: bool,
    /// Callers waiting for their job to be answered.
    waiting: usize,
}

/// Dropped in field order: the connection, then the checkpoint thread's
/// handle, then the count in [`Running`].
struct CallerCore {
    core: WriterCore,
    checkpointer: Option<Checkpointer>,
    _running: RunningGuard,
}

impl CallerWriter {
    fn new(core: CallerCore, notifier: CommitNotifier) -> Self {
        Self {
            shared: Mutex::default(),
            ran: Condvar::new(),
            core: Mutex::new(Some(core)),
            notifier,
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Critical sections only move jobs and flags.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Queues `job`, then runs the queue on this thread or, when another
    /// caller is running it, waits until `answered` (never, for a job
    /// nobody waits for: it returns at once).
    fn send(&self, job: WriteJob, answered: Option<&dyn Fn() -> bool>) -> Result<(), StoreError> {
        let mut shared = self.shared();
        if shared.queue.len() >= MAX_QUEUED_REQUESTS {
            return Err(StoreError::overloaded(SqliteError::Overloaded {
                limit: MAX_QUEUED_REQUESTS,
            }));
        }
        shared.queue.push_back(job);
        if shared.busy {
            // A write sent by a job this thread is running (a lock guard
            // it drops) is run by the same run of the queue.
            if SERVING.get() == self.id() {
                return Ok(());
            }
            let Some(answered) = answered else {
                return Ok(());
            };
            shared.waiting += 1;
            // The running caller answers and broadcasts without this lock,
            // so a broadcast can fall between the check and the wait; the
            // next one comes after its next job or when it leaves the
            // queue, both of which take this lock first.
            while shared.busy && !answered() {
                shared = self
                    .ran
                    .wait(shared)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            shared.waiting -= 1;
            let mine = answered();
            if mine && (shared.busy || shared.queue.is_empty()) {
                return Ok(());
            }
            // The caller running the queue left it to the waiting ones:
            // this one runs it now, to the end when its own job is done.
            shared.busy = true;
            drop(shared);
            self.run_queue(if mine { None } else { Some(answered) });
            return Ok(());
        }
        shared.busy = true;
        drop(shared);
        self.run_queue(answered);
        Ok(())
    }

    /// Runs jobs until the queue is empty, or until `answered` and another
    /// caller waits to run the rest; then lets the next caller in.
    fn run_queue(&self, answered: Option<&dyn Fn() -> bool>) {
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        let outer = SERVING.replace(self.id());
        let mut lent = None;
        if let Some(c) = core.as_mut() {
            lent = wal::lend(c.checkpointer.take());
        }
        let mut next = None;
        loop {
            let job = match next.take() {
                Some(j) => Some(j),
                None => {
                    let mut shared = self.shared();
                    let done = shared.waiting > 0 && answered.is_some_and(|a| a());
                    let job = if done { None } else { shared.queue.pop_front() };
                    if job.is_none() {
                        shared.busy = false;
                    }
                    job
                }
            };
            let Some(job) = job else { break };
            match core.as_mut() {
                Some(c) => {
                    next = c
                        .core
                        .run(job, &mut || self.shared().queue.pop_front(), &self.notifier);
                    // The callers waiting here may be parked on the queue's
                    // condition rather than polled: wake them all now, as
                    // the replies used to.
                    c.core.state.chain.flush();
                }
                // Closed: the job is dropped, and its caller hears so.
                None => drop(job),
            }
            self.ran.notify_all();
        }
        if let Some(c) = core.as_mut() {
            c.checkpointer = wal::lend(lent);
        }
        SERVING.set(outer);
        self.ran.notify_all();
    }

    /// Runs what is queued, then closes the connection.
    fn close(&self) {
        let mut shared = self.shared();
        while shared.busy {
            shared = self
                .ran
                .wait(shared)
                .unwrap_or_else(PoisonError::into_inner);
        }
        shared.busy = true;
        drop(shared);
        self.run_queue(None);
        let closing = self
            .core
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(closing);
    }
}

/// Longest wait for more appends before a group commit, used only when
/// commits fsync (synchronous FULL or EXTRA) and the previous commit showed
/// concurrent writers. An fsync here takes hundreds of microseconds, so
/// waiting this long to share one is cheap.
pub const GROUP_COMMIT_LINGER: Duration = Duration::from_micros(200);

/// How long a reader keeps looking for the next request before it sleeps.
/// A caller reading in a loop sends its next request within microseconds
/// of its reply; catching it here saves a thread wake-up per read.
const SPIN: Duration = Duration::from_micros(50);

/// How long the writer spins (without yielding) for the next request
/// before it sleeps. A caller appending in a loop sends its next append
/// within a few microseconds of its reply. The writer does not yield while
/// it waits: with many concurrent appenders on few cores, a yielding writer
/// took CPU time from the callers it was waiting for (W2 fell by a third).
const WRITER_WATCH: Duration = Duration::from_micros(20);

/// The first part of [`SPIN`], spent without giving up the core: a caller
/// reading in a loop answers within a few microseconds, and a `sched_yield`
/// round trip costs about as much.
const SPIN_HOT: Duration = Duration::from_micros(5);

/// A reader's wait for its next request: see [`SPIN`].
fn recv_soon<T>(rx: &mpsc::Receiver<T>) -> Result<T, mpsc::RecvError> {
    recv_watching(rx, SPIN_HOT, SPIN)
}

/// Waits for the next request: spins for `hot`, then yields until `total`,
/// then sleeps in `recv`.
fn recv_watching<T>(
    rx: &mpsc::Receiver<T>,
    hot: Duration,
    total: Duration,
) -> Result<T, mpsc::RecvError> {
    match try_recv_watching(rx, hot, total)? {
        Some(j) => Ok(j),
        None => rx.recv(),
    }
}

/// Watches for the next request as [`recv_watching`] does, without the
/// sleep: `None` when none came within `total`.
fn try_recv_watching<T>(
    rx: &mpsc::Receiver<T>,
    hot: Duration,
    total: Duration,
) -> Result<Option<T>, mpsc::RecvError> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(j) => return Ok(Some(j)),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
            Err(mpsc::TryRecvError::Empty) => {
                let waited = start.elapsed();
                if waited < hot {
                    std::hint::spin_loop();
                } else if waited < total {
                    thread::yield_now();
                } else {
                    return Ok(None);
                }
            }
        }
    }
}

/// Leaves the connection outside any transaction after a job, whatever the
/// job did, so the next job starts clean.
pub(crate) fn rollback_if_open(conn: &Connection) {
    if !conn.is_autocommit() {
        // If even the rollback fails the connection is unusable and the next
        // BEGIN reports it.
        let _ = conn.execute_batch("ROLLBACK");
    }
}
