//! The in-memory lock registry: exclusive, fair, cancel-safe.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use eskit_core::{LockRegistry, MemoryLockRegistry, StoreError, block_on};

#[test]
fn try_acquire_is_exclusive_and_drop_releases() -> Result<(), StoreError> {
    let locks = MemoryLockRegistry::new();
    let g = block_on(locks.try_acquire("a"))?
        .ok_or_else(|| StoreError::backend("free lock refused"))?;
    assert!(block_on(locks.try_acquire("a"))?.is_none());
    assert!(
        block_on(locks.try_acquire("b"))?.is_some(),
        "other keys are independent"
    );
    drop(g);
    assert!(!locks.is_held("a"));
    assert!(block_on(locks.try_acquire("a"))?.is_some());
    assert!(matches!(
        block_on(locks.acquire("")),
        Err(StoreError::Validation(_))
    ));
    Ok(())
}

#[test]
fn a_cancelled_waiter_does_not_keep_the_lock() -> Result<(), StoreError> {
    let locks = MemoryLockRegistry::new();
    let held = block_on(locks.acquire("k"))?;
    {
        // Poll a waiter once so it queues, then drop it (cancellation).
        let mut waiter = pin!(locks.acquire("k"));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
    }
    drop(held);
    assert!(!locks.is_held("k"), "the lock is free again");
    assert!(block_on(locks.try_acquire("k"))?.is_some());
    Ok(())
}

#[test]
fn a_waiter_cancelled_after_handoff_passes_the_lock_on() -> Result<(), StoreError> {
    let locks = MemoryLockRegistry::new();
    let held = block_on(locks.acquire("k"))?;
    let mut cx = Context::from_waker(Waker::noop());
    let mut first = Box::pin(locks.acquire("k"));
    assert!(first.as_mut().poll(&mut cx).is_pending());
    let mut second = Box::pin(locks.acquire("k"));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    drop(held); // handed to `first`
    drop(first); // which goes away before taking it
    assert!(matches!(second.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    Ok(())
}

#[test]
fn acquire_gives_mutual_exclusion_across_threads() -> Result<(), StoreError> {
    let locks = MemoryLockRegistry::new();
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (locks, inside, max_seen) = (locks.clone(), inside.clone(), max_seen.clone());
            thread::spawn(move || -> Result<(), StoreError> {
                use std::sync::atomic::Ordering::SeqCst;
                for _ in 0..50 {
                    let _g = block_on(locks.acquire("shared"))?;
                    let now = inside.fetch_add(1, SeqCst) + 1;
                    max_seen.fetch_max(now, SeqCst);
                    thread::sleep(Duration::from_micros(50));
                    inside.fetch_sub(1, SeqCst);
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| StoreError::backend("worker panicked"))??;
    }
    assert_eq!(max_seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!locks.is_held("shared"));
    Ok(())
}
