//! The executor abstraction that gives the suite and the benchmarks real
//! concurrency without tying them to one async runtime.
//!
//! The memory store never yields, so interleaving futures inside one task
//! would prove nothing about concurrent writers. Scenarios therefore spawn
//! each writer through an [`Executor`], which runs it on another thread (the
//! std-thread [`ThreadExecutor`]) or on a runtime's worker pool (a tokio
//! runtime, supplied by tokio-based backends).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use eskit_core::store::BoxFuture;

/// Runs futures: one on the calling thread ([`Executor::block_on`]) and any
/// number concurrently ([`Executor::spawn`]).
///
/// Object safe, so a suite holds an `Arc<dyn Executor>`. The typed helpers
/// [`spawn`] and [`run`] sit on top.
///
/// A tokio-based backend implements it over a multi-threaded runtime:
/// `block_on` calls `Runtime::block_on(fut)` and `spawn` calls
/// `Runtime::spawn(fut)` and drops the join handle. A hand-written one:
///
/// ```
/// use eskit_core::store::BoxFuture;
/// struct OwnThreads;
/// impl eskit_testing::Executor for OwnThreads {
///     fn block_on(&self, fut: BoxFuture<'_, ()>) { eskit_core::rt::block_on(fut) }
///     fn spawn(&self, fut: BoxFuture<'static, ()>) {
///         std::thread::spawn(move || eskit_core::rt::block_on(fut));
///     }
/// }
/// let answer = eskit_testing::run(&OwnThreads, async { 42 })?;
/// assert_eq!(answer, 42);
/// # Ok::<(), eskit_testing::TaskError>(())
/// ```
pub trait Executor: Send + Sync + 'static {
    /// Runs `fut` to completion, blocking the calling thread.
    fn block_on(&self, fut: BoxFuture<'_, ()>);

    /// Starts `fut` running concurrently with the caller, on another thread
    /// or worker. If it cannot be started, dropping `fut` is enough: the
    /// [`Task`] waiting for it then reports [`TaskError`].
    fn spawn(&self, fut: BoxFuture<'static, ()>);
}

impl fmt::Debug for dyn Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Executor")
    }
}

/// Runs every spawned future on its own OS thread with
/// [`eskit_core::rt::block_on`]; no runtime needed.
///
/// ```
/// use eskit_testing::{ThreadExecutor, run, spawn};
/// let exec = ThreadExecutor::new();
/// let sum = run(&exec, async {
///     let tasks: Vec<_> = (0..4u32).map(|i| spawn(&exec, async move { i * 2 })).collect();
///     let mut sum = 0;
///     for t in tasks {
///         sum += t.await?;
///     }
///     Ok::<_, eskit_testing::TaskError>(sum)
/// })??;
/// assert_eq!(sum, 12);
/// # Ok::<(), eskit_testing::TaskError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadExecutor;

impl ThreadExecutor {
    /// The executor.
    pub fn new() -> Self {
        Self
    }
}

impl Executor for ThreadExecutor {
    fn block_on(&self, fut: BoxFuture<'_, ()>) {
        eskit_core::rt::block_on(fut);
    }

    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        // A failed spawn drops the closure and with it the future, which
        // closes the task's reply slot; the waiter then sees a TaskError.
        let _ = std::thread::Builder::new()
            .name("eskit-testing".into())
            .spawn(move || eskit_core::rt::block_on(fut));
    }
}

/// A spawned future did not deliver its output: it panicked, or the
/// executor dropped it without running it to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError;

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("spawned task ended without a result (it panicked or was dropped)")
    }
}

impl std::error::Error for TaskError {}

struct Slot<T> {
    value: Option<T>,
    closed: bool,
    waker: Option<Waker>,
}

type Shared<T> = Arc<Mutex<Slot<T>>>;

fn lock<T>(s: &Shared<T>) -> std::sync::MutexGuard<'_, Slot<T>> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Closes the slot when the spawned future finishes or is dropped (also
/// while unwinding from a panic), so the waiting [`Task`] always wakes.
struct Sender<T>(Shared<T>);

impl<T> Sender<T> {
    fn send(self, value: T) {
        lock(&self.0).value = Some(value);
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = lock(&self.0);
            slot.closed = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The output of a spawned future; await it to join.
///
/// Dropping a `Task` does not cancel the future, it only discards its output.
#[must_use = "a task's output is only observed by awaiting it"]
pub struct Task<T> {
    slot: Shared<T>,
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Task")
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = lock(&self.slot);
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Ok(v));
        }
        if slot.closed {
            return Poll::Ready(Err(TaskError));
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Spawns `fut` on `exec` and returns a [`Task`] to await its output.
pub fn spawn<T, F>(exec: &(impl Executor + ?Sized), fut: F) -> Task<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let slot: Shared<T> = Arc::new(Mutex::new(Slot {
        value: None,
        closed: false,
        waker: None,
    }));
    let sender = Sender(Arc::clone(&slot));
    exec.spawn(Box::pin(async move {
        let value = fut.await;
        sender.send(value);
    }));
    Task { slot }
}

/// Runs `fut` to completion on `exec`, blocking the calling thread, and
/// returns its output.
///
/// # Errors
/// [`TaskError`] when the executor returned without completing the future
/// (it panicked inside the runtime).
pub fn run<T, F>(exec: &(impl Executor + ?Sized), fut: F) -> Result<T, TaskError>
where
    F: Future<Output = T> + Send,
    T: Send,
{
    let mut out = None;
    {
        let out = &mut out;
        exec.block_on(Box::pin(async move {
            *out = Some(fut.await);
        }));
    }
    out.ok_or(TaskError)
}

/// A future that is pending once and then ready: lets other tasks on the
/// same executor thread run. On [`ThreadExecutor`] it costs one wake-up.
pub fn yield_now() -> impl Future<Output = ()> + Send {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panicking_task_reports_error() -> Result<(), TaskError> {
        let exec = ThreadExecutor::new();
        let r = run(&exec, async {
            let t = spawn(&exec, async {
                #[allow(clippy::panic)]
                {
                    panic!("boom")
                }
            });
            t.await
        })?;
        if r.is_ok() {
            return Err(TaskError);
        }
        Ok(())
    }
}
