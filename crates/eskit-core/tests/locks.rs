//! The in-memory lock registry: exclusive, fair, cancel-safe.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use eskit_core::limits::MAX_NAME_BYTES;
use eskit_core::{
    LockRegistry, MemoryLockRegistry, NameKind, SingleWriter, StoreError, Stream, block_on,
    validate_name,
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

fn key(stream_type: &str, stream_id: &str) -> Result<String, eskit_core::InvalidName> {
    Ok(SingleWriter::lock_key(&Stream::new(
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
