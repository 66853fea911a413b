//! The todo-list processor on the memory and SQLite (file) claim stores:
//! each item handled once across workers and processors, failing items
//! retried then dead, leases renewed while a handler works, a crashed
//! worker's item taken over, graceful shutdown draining the batch in hand,
//! and a subscription feeding the queue idempotently.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eskit_core::{
    error::BoxError,
    event::{EventType, ExpectedVersion, NewEvent, Principal, RawEvent, StreamName},
    memory::{MemoryCheckpointStore, MemoryClaimStore, MemoryStore},
    store::{
        AppendOptions, ClaimOptions, ClaimStore, ClaimedItem, CommitFeed, DynClaimStore,
        EventStore, GlobalReader, NewWorkItem, WorkState,
    },
};
use eskit_processor::{
    CausalContext, Subscription, SubscriptionOptions, SubscriptionState, TodoFeed, TodoOptions,
    TodoProcessor, TodoStats, event_key,
};
use eskit_sqlite::SqliteStore;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> std::io::Result<Self> {
        let p =
            std::env::temp_dir().join(format!("eskit-processor-todo-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` with a memory claim store, then with a SQLite one on a file.
async fn on_both<F, Fut>(tag: &str, f: F) -> TestResult
where
    F: Fn(Arc<dyn DynClaimStore>) -> Fut,
    Fut: std::future::Future<Output = TestResult>,
{
    f(Arc::new(MemoryClaimStore::new())).await?;
    let dir = TempDir::new(tag)?;
    let store = SqliteStore::open(dir.0.join("events.db"))?;
    f(Arc::new(store.claims())).await?;
    store.close().await;
    Ok(())
}

fn fast(queue: &str, owner: &str) -> Result<TodoOptions, eskit_processor::TodoError> {
    TodoOptions::new(queue, owner)?
        .with_poll_interval(Duration::from_millis(2))?
        .with_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) -> TestResult {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        if tokio::time::Instant::now() > give_up {
            return Err(format!("gave up waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

type Counts = Arc<Mutex<HashMap<String, usize>>>;

fn counting(
    counts: &Counts,
) -> impl Fn(ClaimedItem, CausalContext) -> std::future::Ready<Result<(), BoxError>> + use<> {
    let counts = Arc::clone(counts);
    move |item: ClaimedItem, _ctx| {
        let r = counts
            .lock()
            .map(|mut c| *c.entry(item.key).or_default() += 1)
            .map_err(|_| "poisoned".into());
        std::future::ready(r)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_with_four_workers_each_handle_every_item_once() -> TestResult {
    on_both("once", |claims| async move {
        let n = 300;
        let items: Vec<_> = (0..n)
            .map(|i| NewWorkItem::new(format!("job-{i}"), vec![]))
            .collect();
        claims.enqueue("jobs", items).await?;
        let counts: Counts = Arc::default();
        let mut stats: Vec<TodoStats> = Vec::new();
        let mut runs = Vec::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        for node in ["node-a", "node-b"] {
            let p = TodoProcessor::new(
                Arc::clone(&claims),
                fast("jobs", node)?.with_workers(4)?.with_batch_size(5)?,
                counting(&counts),
            );
            stats.push(p.stats());
            let mut rx = stop_rx.clone();
            runs.push(tokio::spawn(p.run(async move {
                let _ = rx.wait_for(|s| *s).await;
            })));
        }
        until("every item completed", || {
            stats.iter().map(TodoStats::completed).sum::<u64>() >= n
        })
        .await?;
        stop_tx.send(true)?;
        for r in runs {
            r.await??;
        }
        let counts = counts.lock().map_err(|_| "poisoned")?;
        assert_eq!(counts.len(), n as usize);
        assert!(
            counts.values().all(|c| *c == 1),
            "an item was handled twice"
        );
        assert_eq!(stats.iter().map(TodoStats::completed).sum::<u64>(), n);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_item_is_tried_max_attempts_times_then_dead_and_the_rest_done() -> TestResult {
    on_both("poison", |claims| async move {
        let mut items = vec![NewWorkItem::new("poison", vec![])];
        items.extend((0..20).map(|i| NewWorkItem::new(format!("ok-{i}"), vec![])));
        claims.enqueue("q", items).await?;
        let tries: Counts = Arc::default();
        let t = Arc::clone(&tries);
        let p = TodoProcessor::new(
            Arc::clone(&claims),
            fast("q", "node")?.with_max_attempts(3)?.with_workers(2)?,
            move |item: ClaimedItem, _ctx| {
                let t = Arc::clone(&t);
                async move {
                    *t.lock()
                        .map_err(|_| "poisoned")?
                        .entry(item.key.clone())
                        .or_default() += 1;
                    if item.key == "poison" {
                        return Err(format!("cannot ship, attempt {}", item.attempt).into());
                    }
                    Ok(())
                }
            },
        );
        let stats = p.stats();
        let s = stats.clone();
        p.run(async move {
            while s.dead() < 1 || s.completed() < 20 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await?;
        assert_eq!(stats.retried(), 2, "failed attempts put back");
        assert_eq!(
            tries.lock().map_err(|_| "poisoned")?.get("poison"),
            Some(&3)
        );
        let dead = claims.dead("q", 0, 10).await?;
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].key, "poison");
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("cannot ship, attempt 3")
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_handler_keeps_its_claim_by_renewing_the_lease() -> TestResult {
    on_both("renew", |claims| async move {
        claims
            .enqueue("slow", vec![NewWorkItem::new("long", vec![])])
            .await?;
        let counts: Counts = Arc::default();
        let lease = Duration::from_millis(300);
        let mut runs = Vec::new();
        let mut stats = Vec::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        for node in ["node-a", "node-b"] {
            let c = Arc::clone(&counts);
            let p = TodoProcessor::new(
                Arc::clone(&claims),
                fast("slow", node)?.with_lease(lease)?,
                move |item: ClaimedItem, _ctx| {
                    let c = Arc::clone(&c);
                    async move {
                        *c.lock()
                            .map_err(|_| "poisoned")?
                            .entry(item.key)
                            .or_default() += 1;
                        // Four leases long: without renewals the other node
                        // would take the item meanwhile.
                        tokio::time::sleep(lease * 4).await;
                        Ok(())
                    }
                },
            );
            stats.push(p.stats());
            let mut rx = stop_rx.clone();
            runs.push(tokio::spawn(p.run(async move {
                let _ = rx.wait_for(|s| *s).await;
            })));
        }
        until("the item completed", || {
            stats.iter().map(TodoStats::completed).sum::<u64>() >= 1
        })
        .await?;
        // Give the other node time to (wrongly) take it again.
        tokio::time::sleep(lease * 2).await;
        stop_tx.send(true)?;
        for r in runs {
            r.await??;
        }
        assert_eq!(counts.lock().map_err(|_| "poisoned")?.get("long"), Some(&1));
        assert_eq!(stats.iter().map(TodoStats::lost).sum::<u64>(), 0);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_of_a_crashed_worker_goes_to_another_after_the_lease() -> TestResult {
    on_both("crashed", |claims| async move {
        let added = claims
            .enqueue("q", vec![NewWorkItem::new("a", vec![])])
            .await?;
        // A worker claims it and dies without a word.
        let crashed = claims
            .claim(
                "q",
                ClaimOptions::new("dead-worker", 1, Duration::from_millis(50))?,
            )
            .await?;
        assert_eq!(crashed.len(), 1);
        let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
        let a = Arc::clone(&attempts);
        let p = TodoProcessor::new(
            Arc::clone(&claims),
            fast("q", "node")?,
            move |item: ClaimedItem, _ctx| {
                let r = a
                    .lock()
                    .map(|mut v| v.push(item.attempt))
                    .map_err(|_| "poisoned".into());
                std::future::ready(r)
            },
        );
        let s = p.stats();
        p.run(async move {
            while s.completed() < 1 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await?;
        assert_eq!(*attempts.lock().map_err(|_| "poisoned")?, vec![2]);
        assert!(
            !claims.complete(crashed[0].claim).await?,
            "the crashed claim is stale"
        );
        let item = claims.get(added[0].id()).await?.ok_or("item gone")?;
        assert_eq!(item.state, WorkState::Done);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_item_in_hand_finish_and_store_its_outcome() -> TestResult {
    on_both("drain", |claims| async move {
        claims
            .enqueue(
                "q",
                vec![NewWorkItem::new("a", vec![]), NewWorkItem::new("b", vec![])],
            )
            .await?;
        let started = Arc::new(tokio::sync::Notify::new());
        let s = Arc::clone(&started);
        let p = TodoProcessor::new(
            Arc::clone(&claims),
            fast("q", "node")?.with_batch_size(2)?,
            move |_item: ClaimedItem, _ctx| {
                let s = Arc::clone(&s);
                async move {
                    s.notify_one();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(())
                }
            },
        );
        let stats = p.stats();
        // Shut down as soon as the first item is being handled.
        p.run(async move { started.notified().await }).await?;
        assert_eq!(stats.completed(), 2, "the batch in hand was finished");
        let a = claims.get(1).await?.ok_or("gone")?;
        assert_eq!(a.state, WorkState::Done);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_feeds_the_queue_once_per_key_even_when_redelivered() -> TestResult {
    feed_once_per_key(MemoryStore::new(), Arc::new(MemoryClaimStore::new())).await?;
    let dir = TempDir::new("feed")?;
    let store = SqliteStore::open(dir.0.join("events.db"))?;
    feed_once_per_key(store.clone(), Arc::new(store.claims())).await?;
    store.close().await;
    Ok(())
}

async fn feed_once_per_key<S>(store: S, claims: Arc<dyn DynClaimStore>) -> TestResult
where
    S: EventStore + GlobalReader + CommitFeed + Clone + 'static,
{
    let s = StreamName::new("order", "o-1")?;
    let placed = EventType::new("OrderPlaced")?;
    let other = EventType::new("OrderViewed")?;
    for i in 0..10 {
        let ty = if i % 2 == 0 { &placed } else { &other };
        store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![NewEvent::new(ty.clone(), vec![i])],
                AppendOptions::new(),
            )
            .await?;
    }
    // Two runs from scratch (no checkpoint kept): every event is delivered twice.
    for _ in 0..2 {
        let p = placed.clone();
        let feed = TodoFeed::new(
            Arc::clone(&claims),
            "ship",
            Principal::automation("shipper"),
            move |e: &RawEvent| {
                (e.event_type == p)
                    .then(|| NewWorkItem::new(event_key("ship", e.id), e.payload.clone()))
            },
        )?;
        let sub = Subscription::new(
            store.clone(),
            MemoryCheckpointStore::new(),
            SubscriptionOptions::new("feed")?,
            feed,
        );
        let health = sub.health();
        sub.run(async move {
            while health.snapshot().state != SubscriptionState::Live {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await?;
    }
    let counts: Counts = Arc::default();
    let p = TodoProcessor::new(
        Arc::clone(&claims),
        fast("ship", "node")?,
        counting(&counts),
    );
    let stats = p.stats();
    let st = stats.clone();
    p.run(async move {
        while st.completed() < 5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Long enough for a duplicate item, were there one, to be handled.
        tokio::time::sleep(Duration::from_millis(50)).await;
    })
    .await?;
    let counts = counts.lock().map_err(|_| "poisoned")?;
    assert_eq!(counts.len(), 5, "one item per OrderPlaced");
    assert!(counts.values().all(|c| *c == 1));
    assert_eq!(stats.completed(), 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_attempt_and_the_worker_goes_on() -> TestResult {
    on_both("panic", |claims| async move {
        claims
            .enqueue(
                "q",
                vec![
                    NewWorkItem::new("boom", vec![]),
                    NewWorkItem::new("fine", vec![]),
                ],
            )
            .await?;
        let p = TodoProcessor::new(
            Arc::clone(&claims),
            fast("q", "node")?.with_max_attempts(2)?,
            |item: ClaimedItem, _ctx| async move {
                #[allow(clippy::panic)]
                if item.key == "boom" {
                    panic!("a bug in the handler");
                }
                Ok(())
            },
        );
        let stats = p.stats();
        let s = stats.clone();
        p.run(async move {
            while s.dead() < 1 || s.completed() < 1 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await?;
        let dead = claims.dead("q", 0, 10).await?;
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].key, "boom");
        assert_eq!(dead[0].last_error.as_deref(), Some("the handler panicked"));
        Ok(())
    })
    .await
}
