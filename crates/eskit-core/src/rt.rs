//! Runtime-agnostic helpers: a timer future that works under any executor and
//! a minimal `block_on` for examples, doctests and synchronous callers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

struct Timer {
    entries: Mutex<BinaryHeap<Reverse<Entry>>>,
    wake: Condvar,
}

struct Entry {
    at: Instant,
    seq: u64,
    state: Arc<SleepState>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct SleepState {
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            entries: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
        }));
        // One background thread serves every sleep of the process. If the
        // thread cannot be spawned, sleeps fall back to completing at once
        // (see `Sleep::poll`), which only shortens backoff delays.
        let spawned = thread::Builder::new()
            .name("eskit-timer".into())
            .spawn(move || run_timer(t));
        if spawned.is_err() {
            TIMER_FAILED.store(true, Ordering::Relaxed);
        }
        t
    })
}

static TIMER_FAILED: AtomicBool = AtomicBool::new(false);

fn run_timer(t: &'static Timer) {
    let mut entries = t.entries.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        while let Some(Reverse(e)) = entries.peek() {
            if e.at > now {
                break;
            }
            if let Some(Reverse(e)) = entries.pop() {
                e.state.done.store(true, Ordering::Release);
                let waker = e
                    .state
                    .waker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
        entries = match entries.peek() {
            Some(Reverse(e)) => {
                let wait = e.at.saturating_duration_since(Instant::now());
                t.wake
                    .wait_timeout(entries, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => t.wake.wait(entries).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// A future that completes after a duration, under any executor.
///
/// Backed by one shared timer thread, so it suits rare waits such as conflict
/// backoff, not high-frequency timers.
#[derive(Debug)]
pub struct Sleep {
    at: Instant,
    state: Option<Arc<SleepState>>,
}

impl std::fmt::Debug for SleepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SleepState")
            .field("done", &self.done.load(Ordering::Relaxed))
            .finish()
    }
}

/// Completes after `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        at: Instant::now() + duration,
        state: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        if let Some(state) = &self.state {
            if state.done.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *state.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            // Re-check: the timer may have fired between the load and the store.
            if state.done.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        let t = timer();
        if TIMER_FAILED.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let state = Arc::new(SleepState {
            done: AtomicBool::new(false),
            waker: Mutex::new(Some(cx.waker().clone())),
        });
        t.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Reverse(Entry {
                at: self.at,
                seq: SEQ.fetch_add(1, Ordering::Relaxed),
                state: Arc::clone(&state),
            }));
        t.wake.notify_one();
        self.state = Some(state);
        Poll::Pending
    }
}

struct ThreadWaker {
    thread: thread::Thread,
    woken: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// How long [`block_on`] watches for a wake-up before it parks the thread.
/// Replies from a backend's own threads (SQLite) often come back within
/// tens of microseconds; catching them awake saves a thread wake-up, which
/// costs about as much on a virtual machine. It yields while watching, so
/// other threads (the backend's) keep the CPU they need.
const BLOCK_ON_SPIN: Duration = Duration::from_micros(50);

/// Runs a future to completion on the current thread.
///
/// Meant for examples, doctests and synchronous callers. Do not call it from
/// inside an async runtime's worker thread: it blocks that thread. While the
/// future is pending it first watches for a wake-up for a few microseconds
/// (`BLOCK_ON_SPIN`), then parks.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let state = Arc::new(ThreadWaker {
        thread: thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(Arc::clone(&state));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let until = Instant::now() + BLOCK_ON_SPIN;
        while !state.woken.load(Ordering::Acquire) && Instant::now() < until {
            thread::yield_now();
        }
        if !state.woken.swap(false, Ordering::AcqRel) {
            // `park` returns at once if `unpark` ran since the last park, so
            // a wake-up between the check and here is not lost.
            thread::park();
            state.woken.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_waits_at_least_the_duration() {
        let start = Instant::now();
        block_on(sleep(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn many_sleeps_complete() {
        let handles: Vec<_> = (0..8)
            .map(|i| thread::spawn(move || block_on(sleep(Duration::from_millis(i * 3)))))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
