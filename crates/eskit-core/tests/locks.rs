//! The in-memory lock registry: exclusive, fair, cancel-safe.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use eskit_core::limits::MAX_NAME_BYTES;
use eskit_core::{
    backend::validate_name,
    error::StoreError,
    event::{NameKind, StreamName},
    handler::SingleWriter,
    memory::MemoryLockRegistry,
    rt::block_on,
    store::LockRegistry,
};

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

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key(stream_type: &str, stream_id: &str) -> Result<String, eskit_core::event::InvalidName> {
    Ok(SingleWriter::lock_key(&StreamName::new(
        stream_type,
        stream_id,
    )?))
}

#[test]
fn lock_keys_of_usual_names_are_readable() -> TestResult {
    assert_eq!(key("account", "acc-1")?, "stream:account/acc-1");
    assert_eq!(key("order", "tenant/42")?, "stream:order/tenant/42");
    assert_eq!(key("a/b", "c")?, "stream:a%2Fb/c");
    assert_eq!(key("50%", "c")?, "stream:50%25/c");
    Ok(())
}

#[test]
fn a_slash_in_the_type_or_the_id_gives_different_locks() -> TestResult {
    assert_ne!(key("a/b", "c")?, key("a", "b/c")?);
    assert_ne!(key("a%2Fb", "c")?, key("a/b", "c")?);
    assert_ne!(key("a%", "2Fb/c")?, key("a/b", "c")?);
    Ok(())
}

#[test]
fn long_lock_keys_are_bounded_hashed_and_pinned() -> TestResult {
    let x256 = "x".repeat(256);
    assert_eq!(
        key("t", &x256)?,
        format!("stream#4be42dbf132d245c:t/{}", &x256[..198])
    );
    // The cut never splits a character: 7 bytes of type, then 2-byte `é`s.
    assert_eq!(
        key("a/bc", &"é".repeat(128))?,
        format!("stream#3c54583e500db3a9:a%2Fbc/{}", "é".repeat(96))
    );
    // Two long keys that differ only after the kept bytes still differ.
    let (mut a, mut b) = (x256.clone(), x256.clone());
    a.replace_range(255.., "a");
    b.replace_range(255.., "b");
    assert_ne!(key("t", &a)?, key("t", &b)?);
    // Escaping can triple the type; the key stays a valid lock name.
    for (t, id) in [("/".repeat(256), x256.clone()), ("ü".repeat(128), x256)] {
        let k = key(&t, &id)?;
        assert!(k.len() <= MAX_NAME_BYTES, "{} bytes", k.len());
        validate_name(NameKind::Lock, &k)?;
    }
    Ok(())
}

fn take(locks: &MemoryLockRegistry, key: &str) -> Result<eskit_core::store::LockGuard, StoreError> {
    block_on(locks.try_acquire(key))?.ok_or_else(|| StoreError::backend("free lock refused"))
}

#[test]
fn fencing_tokens_grow_with_every_acquisition_of_a_key() -> Result<(), StoreError> {
    let locks = MemoryLockRegistry::new();
    let other_handle = locks.clone();
    let mut seen = Vec::new();
    for i in 0..6 {
        // Alternate handles and the two ways to acquire.
        let l = if i % 2 == 0 { &locks } else { &other_handle };
        let g = if i % 3 == 0 {
            block_on(l.acquire("leader"))?
        } else {
            take(l, "leader")?
        };
        seen.push(g.fencing_token());
        // Another key's acquisitions come in between.
        drop(take(l, "elsewhere")?);
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "tokens did not strictly increase: {seen:?}"
    );
    // A waiter handed the lock on release gets a larger token too.
    let held = block_on(locks.acquire("leader"))?;
    let before = held.fencing_token();
    let mut waiter = Box::pin(locks.acquire("leader"));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(waiter.as_mut().poll(&mut cx).is_pending());
    drop(held);
    let Poll::Ready(next) = waiter.as_mut().poll(&mut cx) else {
        return Err(StoreError::backend(
            "the waiter did not get the released lock",
        ));
    };
    assert!(next?.fencing_token() > before);
    Ok(())
}

#[test]
fn a_shortened_lock_key_is_never_the_key_of_another_stream() -> TestResult {
    let long = key("t", &"x".repeat(256))?;
    // Spell the shortened key out as a stream, `stream:<type>/<id>`: it must
    // get a key of its own.
    if let Some((t, id)) = long
        .strip_prefix("stream:")
        .and_then(|rest| rest.split_once('/'))
    {
        assert_ne!(key(t, id)?, long);
    }
    assert!(!long.starts_with("stream:"), "{long}");
    Ok(())
}

#[test]
fn a_held_memory_lease_is_never_lost_until_the_registry_closes() -> Result<(), StoreError> {
    let locks = MemoryLockRegistry::new();
    let g = take(&locks, "k")?;
    assert!(g.is_held());
    assert!(g.lost_reason().is_none());
    let mut lost = pin!(g.lost());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(lost.as_mut().poll(&mut cx).is_pending());
    // Other activity on the registry leaves the lease alone.
    drop(take(&locks, "other")?);
    assert!(block_on(locks.try_acquire("k"))?.is_none());
    assert!(lost.as_mut().poll(&mut cx).is_pending());
    assert!(g.is_held());
    Ok(())
}

#[test]
fn closing_the_registry_ends_leases_wakes_watchers_and_refuses_acquisitions()
-> Result<(), StoreError> {
    let locks = MemoryLockRegistry::new();
    let g = Arc::new(take(&locks, "leader")?);
    // A watcher blocked on another thread is woken by the close.
    let watcher = {
        let g = Arc::clone(&g);
        thread::spawn(move || block_on(g.lost()))
    };
    let mut waiting = Box::pin(locks.acquire("leader"));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    thread::sleep(Duration::from_millis(20));
    locks.clone().close();
    let reason = watcher
        .join()
        .map_err(|_| StoreError::backend("watcher panicked"))?;
    assert!(
        matches!(reason, eskit_core::store::LeaseLost::Closed),
        "{reason:?}"
    );
    assert!(!g.is_held());
    assert!(matches!(
        g.lost_reason(),
        Some(eskit_core::store::LeaseLost::Closed)
    ));
    // A lost future made after the loss completes at once.
    assert!(matches!(
        block_on(g.lost()),
        eskit_core::store::LeaseLost::Closed
    ));
    assert!(matches!(
        waiting.as_mut().poll(&mut cx),
        Poll::Ready(Err(StoreError::Backend(_)))
    ));
    assert!(block_on(locks.try_acquire("leader")).is_err());
    assert!(block_on(locks.acquire("new")).is_err());
    assert!(!locks.is_held("leader"));
    drop(g);
    locks.close();
    Ok(())
}

#[test]
fn a_dropped_lost_future_stops_watching() -> Result<(), StoreError> {
    let locks = MemoryLockRegistry::new();
    let g = take(&locks, "k")?;
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..3 {
        // Each round registers a waker and drops it, as select! in a loop does.
        let mut lost = pin!(g.lost());
        assert!(lost.as_mut().poll(&mut cx).is_pending());
        assert!(lost.as_mut().poll(&mut cx).is_pending());
    }
    let mut last = pin!(g.lost());
    assert!(last.as_mut().poll(&mut cx).is_pending());
    locks.close();
    assert!(matches!(
        last.as_mut().poll(&mut cx),
        Poll::Ready(eskit_core::store::LeaseLost::Closed)
    ));
    Ok(())
}

#[test]
fn a_lease_keeps_its_first_loss_reason() {
    use eskit_core::store::{Lease, LeaseLost};
    let lease = Lease::new();
    let watcher = lease.clone();
    assert!(!watcher.is_lost() && watcher.lost_reason().is_none());
    assert!(lease.lose(LeaseLost::Expired));
    assert!(
        !lease.lose(LeaseLost::TakenOver),
        "a second loss replaced the first"
    );
    assert!(watcher.is_lost());
    assert!(matches!(watcher.lost_reason(), Some(LeaseLost::Expired)));
    assert!(matches!(block_on(watcher.lost()), LeaseLost::Expired));
}
