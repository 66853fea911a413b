//! A channel of several values whose receiver is polled like a stream, with
//! no executor assumed: a reader thread sends a long read in chunks, so the
//! caller builds events from one chunk while the next is being read. The
//! [`oneshot`](crate::oneshot) replies are this channel carrying one value.
//!
//! Unbounded on purpose: a read's chunks add up to the read's result, which
//! the caller holds in full at the end anyway.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

struct State<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Critical sections only move plain values: a poisoned lock still
        // guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receiver is gone: a value sent now would be dropped unread.
struct Gone;

/// The sending half. Dropping it ends the stream.
pub(crate) struct Sender<T> {
    inner: Arc<Inner<T>>,
}

/// The receiving half. Dropping it tells the sender to stop.
pub(crate) struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waker: None,
            sender_gone: false,
            receiver_gone: false,
        }),
    });
    (
        Sender {
            inner: Arc::clone(&inner),
        },
        Receiver { inner },
    )
}

impl<T> Sender<T> {
    /// Queues a value and wakes the receiver; `false` when the receiver is
    /// gone and more work would be wasted.
    pub(crate) fn send(&self, value: T) -> bool {
        match self.push(value, true) {
            Ok(waker) => {
                if let Some(w) = waker {
                    w.wake();
                }
                true
            }
            Err(Gone) => false,
        }
    }

    /// Queues a value and hands back the receiver's waker instead of waking
    /// it, for the caller to wake (or have woken) later; `None` when the
    /// receiver is not waiting or is gone.
    pub(crate) fn send_deferred(&self, value: T) -> Option<Waker> {
        self.push(value, true).ok().flatten()
    }

    /// Queues a value without waking the receiver, for a value that more
    /// will follow soon: the next [`send`](Self::send), or dropping the
    /// sender, wakes the receiver for all of them at once. Each wake-up of
    /// a parked caller is a thread switch, and a short read that woke its
    /// caller for its horizon, its one batch and its end paid three.
    /// `false` when the receiver is gone.
    pub(crate) fn queue(&self, value: T) -> bool {
        self.push(value, false).is_ok()
    }

    /// Queues a value unless the receiver is gone, taking the receiver's
    /// waker with it when `take_waker`.
    fn push(&self, value: T, take_waker: bool) -> Result<Option<Waker>, Gone> {
        let mut s = self.inner.lock();
        if s.receiver_gone {
            return Err(Gone);
        }
        s.queue.push_back(value);
        Ok(if take_waker { s.waker.take() } else { None })
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.inner.lock();
            s.sender_gone = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// Polls for the next value: `Ready(None)` once the sender is gone and
    /// all values were taken.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.inner.lock();
        if let Some(v) = s.queue.pop_front() {
            return Poll::Ready(Some(v));
        }
        if s.sender_gone {
            return Poll::Ready(None);
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Whether a poll would be ready now: a value is queued, or the sender
    /// is gone.
    pub(crate) fn is_ready(&self) -> bool {
        let s = self.inner.lock();
        !s.queue.is_empty() || s.sender_gone
    }

    /// The next value, or `None` once the sender is gone and all values
    /// were taken.
    pub(crate) async fn next(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.receiver_gone = true;
        s.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_values_in_order_then_ends() {
        let (tx, mut rx) = channel();
        let t = std::thread::spawn(move || (0..1000).all(|i| tx.send(i)));
        let got = eskit_core::rt::block_on(async {
            let mut got = Vec::new();
            while let Some(v) = rx.next().await {
                got.push(v);
            }
            got
        });
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert!(matches!(t.join(), Ok(true)));
    }

    #[test]
    fn queued_values_wait_for_the_next_send_or_the_end() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = channel();
        assert!(rx.poll_next(&mut cx).is_pending());
        assert!(tx.queue(1));
        assert!(tx.queue(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "queue woke the receiver");
        assert!(tx.send(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        for want in 1..=3 {
            assert_eq!(rx.poll_next(&mut cx), Poll::Ready(Some(want)));
        }
        assert!(rx.poll_next(&mut cx).is_pending());
        assert!(tx.queue(4));
        drop(tx);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "the end wakes for a queued value"
        );
        assert_eq!(rx.poll_next(&mut cx), Poll::Ready(Some(4)));
        assert_eq!(rx.poll_next(&mut cx), Poll::Ready(None));
        drop(rx);
    }

    #[test]
    fn a_dropped_receiver_stops_the_sender() {
        let (tx, rx) = channel();
        assert!(tx.send(1));
        drop(rx);
        assert!(!tx.send(2));
        assert!(!tx.queue(3));
    }
}
