//! Lock registry contract: exclusion, release on drop, cancel safety,
//! fencing tokens and held leases.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use eskit_core::limits::MAX_NAME_BYTES;
use eskit_core::{
    error::{StoreError, ValidationError},
    store::{DynLockRegistry, FencingToken, LockGuard},
};

use super::{
    Capability, Ctx, Failure, Outcome, Scenario, ensure, ensure_eq, expect_err, scenario_list,
};
use crate::executor::yield_now;

const LOCKS: &[Capability] = &[Capability::Locks];

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![LOCKS;
        "lock.exclusive" => exclusive,
        "lock.released_on_drop" => released_on_drop,
        "lock.keys_independent" => independent,
        "lock.waiter_blocked_while_held" => waiter_blocked,
        "lock.cancelled_waiter_does_not_keep_lock" => cancelled_waiter,
        "lock.cancelled_waiter_after_handover" => cancelled_after_handover,
        "lock.mutual_exclusion_under_contention" => contention,
        "lock.invalid_key_rejected" => invalid_key,
        "lock.fencing_tokens_grow" => tokens_grow,
        "lock.fencing_tokens_grow_across_handles" => tokens_across_handles,
        "lock.fencing_token_grows_on_handover" => token_on_handover,
        "lock.held_guard_reports_held" => held_guard,
    ]
}

async fn exclusive(c: Ctx) -> Outcome {
    let l = c.locks()?;
    let _g = l.dyn_acquire("stream:order-1").await?;
    ensure!(
        l.dyn_try_acquire("stream:order-1").await?.is_none(),
        "try_acquire got a held lock"
    );
    Ok(())
}

async fn released_on_drop(c: Ctx) -> Outcome {
    let l = c.locks()?;
    let g = l.dyn_try_acquire("leader").await?;
    ensure!(g.is_some(), "try_acquire of a free lock returned None");
    drop(g);
    let again = l.dyn_try_acquire("leader").await?;
    ensure!(
        again.is_some(),
        "lock still held after its guard was dropped"
    );
    drop(again);
    let g = l.dyn_acquire("leader").await?;
    drop(g);
    ensure!(
        l.dyn_try_acquire("leader").await?.is_some(),
        "lock still held after an acquired guard was dropped"
    );
    Ok(())
}

async fn independent(c: Ctx) -> Outcome {
    let l = c.locks()?;
    let _a = l.dyn_acquire("key-a").await?;
    let b = l.dyn_try_acquire("key-b").await?;
    ensure!(b.is_some(), "holding key-a blocked key-b");
    ensure!(
        l.dyn_try_acquire("key-a/sub").await?.is_some(),
        "holding key-a blocked key-a/sub"
    );
    Ok(())
}

async fn waiter_blocked(c: Ctx) -> Outcome {
    let l = Arc::clone(c.locks()?);
    let held = l.dyn_acquire("contended").await?;
    let got = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (l, got) = (Arc::clone(&l), Arc::clone(&got));
        c.spawn(async move {
            let g = l.dyn_acquire("contended").await?;
            got.store(true, Ordering::SeqCst);
            drop(g);
            Ok::<_, StoreError>(())
        })
    };
    eskit_core::rt::sleep(Duration::from_millis(50)).await;
    ensure!(
        !got.load(Ordering::SeqCst),
        "a waiter got the lock while it was held"
    );
    drop(held);
    waiter.await??;
    ensure!(got.load(Ordering::SeqCst), "the waiter never got the lock");
    Ok(())
}

/// Polls a future once with a no-op waker.
fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

async fn cancelled_waiter(c: Ctx) -> Outcome {
    let l = c.locks()?;
    let held = l.dyn_acquire("cancel").await?;
    {
        let mut waiting = pin!(l.dyn_acquire("cancel"));
        ensure!(
            poll_once(waiting.as_mut()).is_pending(),
            "acquire of a held lock completed"
        );
    }
    drop(held);
    ensure!(
        l.dyn_try_acquire("cancel").await?.is_some(),
        "a cancelled waiter kept the lock"
    );
    Ok(())
}

async fn cancelled_after_handover(c: Ctx) -> Outcome {
    let l = c.locks()?;
    let held = l.dyn_acquire("handover").await?;
    {
        let mut waiting = pin!(l.dyn_acquire("handover"));
        ensure!(
            poll_once(waiting.as_mut()).is_pending(),
            "acquire of a held lock completed"
        );
        // Releasing may hand the lock to the waiter; dropping the waiter
        // before it observes that must pass the lock on, not keep it.
        drop(held);
        yield_now().await;
    }
    let mut free = false;
    for _ in 0..100 {
        if l.dyn_try_acquire("handover").await?.is_some() {
            free = true;
            break;
        }
        eskit_core::rt::sleep(Duration::from_millis(10)).await;
    }
    ensure!(free, "a waiter dropped after the release kept the lock");
    Ok(())
}

async fn contention(c: Ctx) -> Outcome {
    let l = Arc::clone(c.locks()?);
    let inside = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let writers = c.stress().writers.max(2);
    let per = 25;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (l, inside, total) = (Arc::clone(&l), Arc::clone(&inside), Arc::clone(&total));
            c.spawn(async move {
                for _ in 0..per {
                    let g = l.dyn_acquire("exclusive").await?;
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        return Err(Failure("two holders inside the lock at once".into()));
                    }
                    std::thread::yield_now();
                    yield_now().await;
                    total.fetch_add(1, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(g);
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    ensure_eq!(
        total.load(Ordering::SeqCst),
        writers * per,
        "critical sections completed"
    );
    Ok(())
}

async fn invalid_key(c: Ctx) -> Outcome {
    let l = c.locks()?;
    let long = "k".repeat(MAX_NAME_BYTES + 1);
    for key in ["", "a\0b", long.as_str()] {
        expect_err!(
            l.dyn_acquire(key).await,
            StoreError::Validation(ValidationError::Name(_)),
            "acquire key {}",
            super::short(&key)
        );
        expect_err!(
            l.dyn_try_acquire(key).await,
            StoreError::Validation(ValidationError::Name(_)),
            "try_acquire key {}",
            super::short(&key)
        );
    }
    Ok(())
}

/// Takes a free lock with `try_acquire`, failing when it is refused.
async fn take(l: &dyn DynLockRegistry, key: &str) -> Result<LockGuard, Failure> {
    l.dyn_try_acquire(key)
        .await?
        .ok_or_else(|| Failure(format!("try_acquire of the free lock {key} returned None")))
}

fn ensure_growing(seen: &[FencingToken]) -> Outcome {
    ensure!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens did not strictly increase: {seen:?}"
    );
    Ok(())
}

async fn tokens_grow(c: Ctx) -> Outcome {
    let l = c.locks()?;
    let mut seen = Vec::new();
    for i in 0..6 {
        let g = if i % 2 == 0 {
            l.dyn_acquire("fenced").await?
        } else {
            take(&**l, "fenced").await?
        };
        seen.push(g.fencing_token());
        drop(g);
        // Acquisitions of another key in between change nothing.
        drop(take(&**l, "fenced-other").await?);
        // Nor does a refused try_acquire while the key is held.
        let held = take(&**l, "fenced").await?;
        ensure!(
            l.dyn_try_acquire("fenced").await?.is_none(),
            "try_acquire got a held lock"
        );
        seen.push(held.fencing_token());
    }
    ensure_growing(&seen)
}

async fn tokens_across_handles(c: Ctx) -> Outcome {
    let (a, b) = (c.locks()?, c.other_locks()?);
    let mut seen = Vec::new();
    for i in 0..6 {
        let (this, that) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let g = this.dyn_acquire("shared-fence").await?;
        ensure!(
            that.dyn_try_acquire("shared-fence").await?.is_none(),
            "the other handle got a lock this handle holds"
        );
        seen.push(g.fencing_token());
        drop(g);
        // The other handle may learn of the release only by polling.
        let mut got = None;
        for _ in 0..200 {
            if let Some(g) = that.dyn_try_acquire("shared-fence").await? {
                got = Some(g);
                break;
            }
            eskit_core::rt::sleep(Duration::from_millis(10)).await;
        }
        let g =
            got.ok_or_else(|| Failure("a released lock stayed taken for the other handle".into()))?;
        seen.push(g.fencing_token());
    }
    ensure_growing(&seen)
}

async fn token_on_handover(c: Ctx) -> Outcome {
    let l = Arc::clone(c.locks()?);
    let held = l.dyn_acquire("handed").await?;
    let first = held.fencing_token();
    let waiter = {
        let l = Arc::clone(&l);
        c.spawn(async move {
            let g = l.dyn_acquire("handed").await?;
            Ok::<_, StoreError>(g.fencing_token())
        })
    };
    eskit_core::rt::sleep(Duration::from_millis(20)).await;
    drop(held);
    let next = waiter.await??;
    ensure!(
        next > first,
        "the waiter got token {next}, not above the previous holder's {first}"
    );
    Ok(())
}

async fn held_guard(c: Ctx) -> Outcome {
    let (l, other) = (c.locks()?, c.other_locks()?);
    let g = l.dyn_acquire("watched").await?;
    let mut lost = pin!(g.lost());
    ensure!(g.is_held(), "a fresh guard says it is not held");
    ensure!(
        g.lost_reason().is_none(),
        "a fresh guard has a loss reason: {:?}",
        g.lost_reason()
    );
    ensure!(
        poll_once(lost.as_mut()).is_pending(),
        "lost() completed for a held lock"
    );
    // Contention and other keys leave the lease alone.
    ensure!(
        other.dyn_try_acquire("watched").await?.is_none(),
        "the other handle got a held lock"
    );
    drop(take(&**l, "watched-other").await?);
    eskit_core::rt::sleep(Duration::from_millis(50)).await;
    ensure!(g.is_held(), "a held guard stopped saying it is held");
    ensure!(
        poll_once(lost.as_mut()).is_pending(),
        "lost() completed for a held lock"
    );
    Ok(())
}
