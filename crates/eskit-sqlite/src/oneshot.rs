//! A single-value channel whose receiver is a runtime-agnostic future: a
//! [`chunks`](crate::chunks) channel that carries one value.
//!
//! The SQLite threads answer each request through one of these; the caller's
//! task is woken through its [`Waker`](std::task::Waker), so no executor is
//! assumed. A value sent after the receiver is gone is dropped at once, on
//! the sending thread (a lock guard in a reply to a dropped request is
//! released right away).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::chunks;

/// The sending half; dropping it without sending wakes the receiver with
/// [`Canceled`].
pub(crate) struct Sender<T>(chunks::Sender<T>);

/// The receiving half, a future of the sent value.
pub(crate) struct Receiver<T>(chunks::Receiver<T>);

/// The sender was dropped without sending: the worker thread stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Canceled;

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = chunks::channel();
    (Sender(tx), Receiver(rx))
}

impl<T> Sender<T> {
    /// Delivers the value; when the receiver is gone it is dropped here.
    pub(crate) fn send(self, value: T) {
        // `false` (receiver gone) needs nothing more: the value is dropped.
        let _ = self.0.send(value);
    }
}

impl<T> Sender<T> {
    /// Delivers the value and hands back the receiver's waker instead of
    /// waking it (see [`WakeChain`]); `None` when nobody waits.
    pub(crate) fn send_deferred(self, value: T) -> Option<std::task::Waker> {
        self.0.send_deferred(value)
    }
}

/// Wakers of callers whose replies are delivered, woken by the callers
/// themselves instead of the thread that delivered them: a woken caller
/// wakes the next ([`pass_on`](Self::pass_on)) before it goes on. Waking a
/// parked thread is a system call of several microseconds on a virtual
/// machine; a writer that woke every caller of a group commit spent a fifth
/// of its time doing so, while the callers' cores sat idle.
///
/// No waker waits long: whoever delivers the next group wakes what is left
/// of the previous one first ([`start`](Self::start)), the writer wakes
/// what is left before it sleeps ([`flush`](Self::flush)), and a caller
/// that stops waiting (a dropped future) passes on too.
#[derive(Default)]
pub(crate) struct WakeChain {
    waiting: std::sync::Mutex<Vec<std::task::Waker>>,
}

impl WakeChain {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<std::task::Waker>> {
        // Only wakers are moved under the lock: a poisoned one still holds
        // a consistent list.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the first of `wakers` and leaves the rest to be passed on,
    /// after waking any left from an earlier group.
    pub(crate) fn start(&self, mut wakers: Vec<std::task::Waker>) {
        // Kept last first, so that `pass_on` pops them in reply order.
        wakers.reverse();
        let first = wakers.pop();
        let stale = { std::mem::replace(&mut *self.waiting(), wakers) };
        for w in stale {
            w.wake();
        }
        if let Some(w) = first {
            w.wake();
        }
    }

    /// Wakes every caller still waiting: for a thread about to sleep, or
    /// to run something else, so that none waits on a chain whose next
    /// link is slow (a task its executor has not polled yet).
    pub(crate) fn flush(&self) {
        let all = std::mem::take(&mut *self.waiting());
        for w in all {
            w.wake();
        }
    }

    /// Wakes the next waiting caller, if any.
    pub(crate) fn pass_on(&self) {
        let next = self.waiting().pop();
        if let Some(w) = next {
            w.wake();
        }
    }
}

/// Passes the [`WakeChain`] on when dropped: whether the reply it guards
/// came or its caller stopped waiting.
pub(crate) struct PassOn<'a>(pub(crate) &'a WakeChain);

impl Drop for PassOn<'_> {
    fn drop(&mut self) {
        self.0.pass_on();
    }
}

impl<T> Receiver<T> {
    /// Whether awaiting it would complete at once.
    pub(crate) fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Canceled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_next(cx).map(|v| v.ok_or(Canceled))
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_value_and_cancellation() {
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || tx.send(7));
        assert_eq!(eskit_core::rt::block_on(rx), Ok(7));
        assert!(t.join().is_ok());
        let (tx, rx) = channel::<u8>();
        drop(tx);
        assert_eq!(eskit_core::rt::block_on(rx), Err(Canceled));
    }

    /// A waker counting its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counters(n: usize) -> Vec<std::sync::Arc<Count>> {
        (0..n)
            .map(|_| std::sync::Arc::new(Count(std::sync::atomic::AtomicUsize::new(0))))
            .collect()
    }

    fn wakers(c: &[std::sync::Arc<Count>]) -> Vec<std::task::Waker> {
        c.iter()
            .map(|c| std::task::Waker::from(std::sync::Arc::clone(c)))
            .collect()
    }

    fn woken(c: &[std::sync::Arc<Count>]) -> Vec<usize> {
        c.iter()
            .map(|c| c.0.load(std::sync::atomic::Ordering::SeqCst))
            .collect()
    }

    #[test]
    fn a_chain_wakes_one_caller_and_each_woken_one_wakes_the_next() {
        let chain = WakeChain::default();
        let c = counters(4);
        chain.start(wakers(&c));
        assert_eq!(
            woken(&c),
            [1, 0, 0, 0],
            "only the first is woken by the writer"
        );
        chain.pass_on();
        chain.pass_on();
        assert_eq!(woken(&c), [1, 1, 1, 0], "woken in the order of the replies");
        chain.pass_on();
        assert_eq!(woken(&c), [1, 1, 1, 1]);
        // Passing on with nobody waiting does nothing.
        chain.pass_on();
        assert_eq!(woken(&c), [1, 1, 1, 1]);
        chain.start(Vec::new());
        assert_eq!(woken(&c), [1, 1, 1, 1]);
    }

    #[test]
    fn nobody_is_left_waiting_by_a_broken_chain() {
        let chain = WakeChain::default();
        let first = counters(3);
        chain.start(wakers(&first));
        // The next group's delivery wakes what the first left waiting.
        let second = counters(3);
        chain.start(wakers(&second));
        assert_eq!(woken(&first), [1, 1, 1]);
        assert_eq!(woken(&second), [1, 0, 0]);
        // A writer about to sleep wakes the rest.
        chain.flush();
        assert_eq!(woken(&second), [1, 1, 1]);
        // A caller that stops waiting passes on as one that got its reply.
        let third = counters(2);
        chain.start(wakers(&third));
        drop(PassOn(&chain));
        assert_eq!(woken(&third), [1, 1]);
    }

    #[test]
    fn a_deferred_reply_is_delivered_and_its_waker_handed_back() {
        let (tx, mut rx) = channel::<u8>();
        let c = counters(1);
        let waker = wakers(&c).remove(0);
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(std::pin::Pin::new(&mut rx).poll(&mut cx).is_pending());
        let handed = tx.send_deferred(5);
        assert_eq!(
            woken(&c),
            [0],
            "the sender does not wake the receiver itself"
        );
        assert!(handed.is_some());
        assert_eq!(
            std::pin::Pin::new(&mut rx).poll(&mut cx),
            std::task::Poll::Ready(Ok(5))
        );
        // Nobody waiting: no waker to hand back.
        let (tx, rx) = channel::<u8>();
        assert!(tx.send_deferred(1).is_none());
        drop(rx);
        let (tx, rx) = channel::<u8>();
        drop(rx);
        assert!(tx.send_deferred(1).is_none());
    }

    #[test]
    fn a_value_for_a_dropped_receiver_is_dropped_by_the_sender() {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = channel();
        drop(rx);
        tx.send(Flag(std::sync::Arc::clone(&dropped)));
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }
}
