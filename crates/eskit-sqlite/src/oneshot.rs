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
