//! The lean baseline behind one thread hop (backend `sqlite-hop`): the same
//! rusqlite code as the `sqlite` baseline, run on one dedicated thread that
//! owns the connection, each call sent to it over a channel with a reply the
//! caller's task awaits, as the store reaches its writer and reader threads.
//! Next to the store, this row says how much of the store's gap to the
//! caller's-thread baseline is the hop (which keeps SQLite off the caller's
//! executor) and how much is the store's own work. The payloads are copied
//! once to cross the thread, as the store's owned events do.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use eskit_core::{error::BoxError, rt::block_on, store::BoxFuture};
use eskit_sqlite::Synchronous;
use eskit_testing::bench::Baseline;

use crate::RusqliteBaseline;

/// The reply slot a caller awaits: the value, or the waker to call once it
/// is there.
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The worker dropped the job without answering (it stopped).
    lost: bool,
}

struct Reply<T>(Arc<Mutex<Slot<T>>>);

impl<T> Future for Reply<T> {
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Ok(v));
        }
        if s.lost {
            return Poll::Ready(Err("the baseline's thread stopped".into()));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Answers a [`Reply`]; dropped unanswered, it tells the caller.
struct Answer<T>(Arc<Mutex<Slot<T>>>);

impl<T> Answer<T> {
    fn send(self, v: T) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.value = Some(v);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.lost = s.value.is_none();
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Baseline state (a connection, or the whole lean baseline) owned by one
/// dedicated thread; each [`Hop::call`] runs there and is awaited.
pub(crate) struct Hop<T> {
    jobs: Mutex<mpsc::Sender<Job<T>>>,
}

type Job<T> = Box<dyn FnOnce(&mut T) + Send>;

/// The lean baseline behind the hop.
pub(crate) type HopBaseline = Hop<RusqliteBaseline>;

impl HopBaseline {
    pub(crate) fn create(path: PathBuf, sync: Synchronous) -> Result<Self, BoxError> {
        Hop::new(RusqliteBaseline::create(path, sync)?)
    }
}

impl<T: Send + 'static> Hop<T> {
    /// Moves `state` to a thread of its own.
    pub(crate) fn new(mut state: T) -> Result<Self, BoxError> {
        let (tx, rx) = mpsc::channel::<Job<T>>();
        std::thread::Builder::new()
            .name("baseline-hop".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut state);
                }
            })?;
        Ok(Self {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on the state's thread and awaits its result.
    pub(crate) fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut T) -> Result<R, BoxError> + Send + 'static,
    ) -> BoxFuture<'_, Result<R, BoxError>> {
        let slot = Arc::new(Mutex::new(Slot {
            value: None,
            waker: None,
            lost: false,
        }));
        let answer = Answer(Arc::clone(&slot));
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Box::new(move |b| answer.send(f(b))));
        Box::pin(async move {
            sent.map_err(|_| "the baseline's thread stopped")?;
            Reply(slot).await?
        })
    }
}

impl Baseline for HopBaseline {
    fn append<'a>(
        &'a self,
        stream: &'a str,
        expected: Option<u64>,
        payloads: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        let (stream, payloads) = (stream.to_owned(), payloads.to_vec());
        self.call(move |b| block_on(b.append(&stream, expected, &payloads)))
    }

    fn version<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, BoxError>> {
        let stream = stream.to_owned();
        self.call(move |b| block_on(b.version(&stream)))
    }

    fn load<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<usize, BoxError>> {
        let stream = stream.to_owned();
        self.call(move |b| block_on(b.load(&stream)))
    }

    fn read_all(&self, from: u64, limit: usize) -> BoxFuture<'_, Result<Vec<u64>, BoxError>> {
        self.call(move |b| block_on(b.read_all(from, limit)))
    }

    fn save_snapshot<'a>(
        &'a self,
        stream: &'a str,
        version: u64,
        state: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        let (stream, state) = (stream.to_owned(), state.to_vec());
        self.call(move |b| block_on(b.save_snapshot(&stream, version, &state)))
    }

    fn load_snapshot<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BoxError>> {
        let stream = stream.to_owned();
        self.call(move |b| block_on(b.load_snapshot(&stream)))
    }
}
