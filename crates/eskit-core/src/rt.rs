//! Runtime-agnostic helpers: a timer future that works under any executor and
//! a minimal `block_on` for examples, doctests and synchronous callers.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

/// The shared timer: pending sleeps keyed by deadline and a sequence number,
/// so that a dropped [`Sleep`] can remove its own entry at once instead of
/// keeping it (and its waker) alive until the deadline.
struct Timer {
    entries: Mutex<BTreeMap<EntryKey, Arc<SleepState>>>,
    wake: Condvar,
}

/// Deadline first, then registration order; unique per registered sleep.
type EntryKey = (Instant, u64);

struct SleepState {
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Timer {
    fn entries(&self) -> MutexGuard<'_, BTreeMap<EntryKey, Arc<SleepState>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            entries: Mutex::new(BTreeMap::new()),
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

/// How many sleeps the shared timer is holding: registered, not yet fired
/// and not dropped.
#[cfg(test)]
pub(crate) fn pending_timer_entries() -> usize {
    timer().entries().len()
}

fn run_timer(t: &'static Timer) {
    let mut due = Vec::new();
    let mut entries = t.entries();
    loop {
        let now = Instant::now();
        while let Some(entry) = entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        if !due.is_empty() {
            // Wake outside the lock: a waker may run code that drops or
            // registers another sleep, which takes the same lock.
            drop(entries);
            for state in due.drain(..) {
                state.done.store(true, Ordering::Release);
                let waker = state
                    .waker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(w) = waker {
                    w.wake();
                }
            }
            entries = t.entries();
            continue;
        }
        entries = match entries.first_key_value() {
            Some((&(at, _), _)) => {
                let wait = at.saturating_duration_since(Instant::now());
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
/// backoff, not high-frequency timers. Dropping a pending `Sleep` removes it
/// from the timer at once.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    at: Instant,
    registered: Option<Registration>,
}

/// A sleep's place in the shared timer.
#[derive(Debug)]
struct Registration {
    key: EntryKey,
    state: Arc<SleepState>,
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
    let now = Instant::now();
    Sleep {
        // A duration too long for `Instant` sleeps for as long as it can.
        at: now.checked_add(duration).unwrap_or_else(|| far_future(now)),
        registered: None,
    }
}

/// The latest instant reachable from `now`, about 30 years ahead at most.
fn far_future(now: Instant) -> Instant {
    let mut step = Duration::from_secs(30 * 365 * 86_400);
    loop {
        if let Some(at) = now.checked_add(step) {
            return at;
        }
        step /= 2;
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        if let Some(reg) = &self.registered {
            let state = &reg.state;
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
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let state = Arc::new(SleepState {
            done: AtomicBool::new(false),
            waker: Mutex::new(Some(cx.waker().clone())),
        });
        let key = (self.at, SEQ.fetch_add(1, Ordering::Relaxed));
        t.entries().insert(key, Arc::clone(&state));
        t.wake.notify_one();
        self.registered = Some(Registration { key, state });
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // A fired sleep is already gone from the timer; a pending one is
        // removed here so that its entry and waker are freed now. The timer
        // thread may wake up for a deadline nobody waits for any more, which
        // costs one spurious wake-up.
        if let Some(reg) = self.registered.take()
            && !reg.state.done.load(Ordering::Acquire)
        {
            timer().entries().remove(&reg.key);
        }
    }
}

/// Returns [`Poll::Pending`] once, after waking its own task, then
/// completes; created by [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

/// Lets other tasks of the same executor run before this one continues,
/// under any executor.
///
/// The future wakes its own task and returns [`Poll::Pending`] once, so the
/// executor puts the task back in its queue behind the others. Code that
/// never waits on anything (the in-memory store) awaits it once per
/// operation, so that concurrent tasks interleave as they would against a
/// real backend.
///
/// ```
/// use eskit_core::rt::{block_on, yield_now};
/// block_on(async {
///     yield_now().await;
/// });
/// ```
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
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
const BLOCK_ON_SPIN: Duration = Duration::from_micros(200);

/// Most threads that watch for a wake-up in [`block_on`] at the same time;
/// the others park at once.
const MAX_SPINNING: usize = 1;

/// Threads watching for a wake-up in [`block_on`] now.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

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
        // Only a few threads watch at a time: many callers waiting at once
        // (concurrent writers on a store's one writer thread) would
        // otherwise keep the cores busy yielding to each other while the
        // thread that answers them waits for one.
        if SPINNING.fetch_add(1, Ordering::AcqRel) < MAX_SPINNING {
            let until = Instant::now() + BLOCK_ON_SPIN;
            while !state.woken.load(Ordering::Acquire) && Instant::now() < until {
                thread::yield_now();
            }
        }
        SPINNING.fetch_sub(1, Ordering::AcqRel);
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

    /// Polls a future once with a waker that does nothing.
    fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn dropped_sleeps_leave_the_timer() {
        const SLEEPS: usize = 10_000;
        // Other tests of this crate sleep at the same time, only briefly and
        // never more than a handful at once.
        const OTHERS: usize = 100;
        let mut sleeps: Vec<Sleep> = (0..SLEEPS)
            .map(|_| sleep(Duration::from_secs(3600)))
            .collect();
        for s in &mut sleeps {
            assert!(poll_once(s).is_pending());
        }
        assert!(pending_timer_entries() >= SLEEPS, "the sleeps registered");
        drop(sleeps);
        let left = pending_timer_entries();
        assert!(
            left < OTHERS,
            "{left} entries left after dropping every sleep"
        );
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let mut s = sleep(Duration::MAX);
        assert!(poll_once(&mut s).is_pending());
    }

    #[test]
    fn yield_now_is_pending_once_and_wakes_itself() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut y = yield_now();
        assert!(Pin::new(&mut y).poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "woke its own task");
        assert!(Pin::new(&mut y).poll(&mut cx).is_ready());
        block_on(yield_now());
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
