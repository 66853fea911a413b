//! The change notifier: one announcement wakes any number of waiters,
//! changes coalesce for a busy waiter, entity watches are isolated, and a
//! multi-watch debounces and falls back to polling.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eskit_processor::notifier::{
    ChangeNotifier, MIN_DEBOUNCE, MIN_POLL_FALLBACK, MultiWatchError, NotifierClosed, Wake,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WAITERS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_wakes_ten_thousand_waiters() -> TestResult {
    let notifier = ChangeNotifier::new();
    let woken = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(WAITERS);
    for i in 0..WAITERS {
        // Half wait on the view, half on the entity that changes.
        let (mut view, mut entity) = if i % 2 == 0 {
            (Some(notifier.subscribe("orders")), None)
        } else {
            (None, Some(notifier.watch("orders", "order/o-1")))
        };
        let woken = Arc::clone(&woken);
        tasks.push(tokio::spawn(async move {
            let seq = match (&mut view, &mut entity) {
                (Some(v), _) => v.changed().await?,
                (_, Some(e)) => e.changed().await?,
                _ => 0,
            };
            woken.fetch_add(1, Ordering::Relaxed);
            // Dropped here, not whenever the runtime drops the finished
            // task, so the slot check below sees every watch gone.
            drop((view, entity));
            Ok::<_, NotifierClosed>(seq)
        }));
    }
    assert_eq!(notifier.watched_keys("orders"), 1);
    assert_eq!(notifier.notify("orders", ["order/o-1"]), 1);
    for t in tasks {
        assert_eq!(t.await??, 1);
    }
    assert_eq!(woken.load(Ordering::Relaxed), WAITERS);
    // The last watch of the key is gone: its slot is freed.
    assert_eq!(notifier.watched_keys("orders"), 0);
    Ok(())
}

#[tokio::test]
async fn a_busy_waiter_sees_the_latest_change_once() -> TestResult {
    let notifier = ChangeNotifier::new();
    let mut view = notifier.subscribe("orders");
    let mut entity = notifier.watch("orders", "order/o-1");
    for i in 0..100 {
        notifier.notify("orders", [format!("order/o-{}", i % 2)]);
    }
    assert!(view.has_changed()?);
    assert_eq!(view.changed().await?, 100);
    assert!(!view.has_changed()?, "100 changes must give one wake-up");
    // o-1 changed on every odd announcement, last at sequence 100.
    assert_eq!(entity.changed().await?, 100);
    assert!(!entity.has_changed()?);
    notifier.notify("orders", ["order/o-0"]);
    assert_eq!(view.changed().await?, 101);
    assert!(!entity.has_changed()?);
    Ok(())
}

#[tokio::test]
async fn entity_watches_and_views_are_isolated() -> TestResult {
    let notifier = ChangeNotifier::new();
    let a1 = notifier.watch("balances", "account/a-1");
    let mut a2 = notifier.watch("balances", "account/a-2");
    let same_key_other_view = notifier.watch("orders", "account/a-2");
    let other_view = notifier.subscribe("orders");
    notifier.notify("balances", ["account/a-2", "account/a-3"]);
    assert!(!a1.has_changed()?);
    assert!(a2.has_changed()?);
    assert_eq!(a2.changed().await?, 1);
    assert!(!same_key_other_view.has_changed()?);
    assert!(!other_view.has_changed()?);
    // A watch made after a change does not see it.
    let late = notifier.watch("balances", "account/a-3");
    assert!(!late.has_changed()?);
    assert_eq!(notifier.sequence("balances"), 1);
    assert_eq!(notifier.sequence("unknown"), 0);
    // Two watches of one key share its slot until the last one goes.
    let a1_again = notifier.watch("balances", "account/a-1");
    drop(a1);
    notifier.notify("balances", ["account/a-1"]);
    assert!(a1_again.has_changed()?);
    assert_eq!(notifier.watched_keys("balances"), 3);
    Ok(())
}

#[tokio::test]
async fn closing_wakes_every_waiter_with_an_error() -> TestResult {
    let notifier = ChangeNotifier::new();
    let mut view = notifier.subscribe("v");
    let mut entity = notifier.watch("v", "k");
    let waiting = tokio::spawn(async move { view.changed().await });
    tokio::task::yield_now().await;
    notifier.close();
    assert_eq!(waiting.await?, Err(NotifierClosed));
    assert_eq!(entity.changed().await, Err(NotifierClosed));
    assert_eq!(notifier.notify("v", ["k"]), 0);
    assert_eq!(notifier.subscribe("v").changed().await, Err(NotifierClosed));
    assert_eq!(
        notifier.watch("v", "k").changed().await,
        Err(NotifierClosed)
    );
    let mut multi = notifier.multi().view("v").build()?;
    assert_eq!(multi.next().await, Err(NotifierClosed));
    Ok(())
}

// Paused time: the runtime moves the clock when every task waits, so the
// order of the sleeps is all that matters, not the machine's speed.
#[tokio::test(start_paused = true)]
async fn a_multi_watch_reports_which_entries_changed() -> TestResult {
    let notifier = ChangeNotifier::new();
    let mut multi = notifier
        .multi()
        .view("orders")
        .entity("balances", "account/a-1")
        .entity("balances", "account/a-2")
        .build()?;
    assert_eq!(multi.len(), 3);
    notifier.notify("balances", ["account/a-2"]);
    assert_eq!(
        multi.next().await?,
        Wake {
            changed: vec![2],
            polled: false
        }
    );
    // Changes that came before the call are returned at once, together.
    notifier.notify("orders", ["order/o-1"]);
    notifier.notify("balances", ["account/a-1"]);
    notifier.notify("balances", ["account/a-1"]);
    assert_eq!(multi.next().await?.changed, vec![0, 1]);

    // A change while it waits wakes it.
    let n = notifier.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        n.notify("orders", ["order/o-2"]);
    });
    assert_eq!(multi.next().await?.changed, vec![0]);
    later.await?;
    Ok(())
}

// Paused time: the runtime moves the clock when every task waits, so the
// order of the sleeps is all that matters, not the machine's speed.
#[tokio::test(start_paused = true)]
async fn a_debounced_multi_watch_gives_one_wake_up_for_a_burst() -> TestResult {
    let notifier = ChangeNotifier::new();
    let mut multi = notifier
        .multi()
        .view("orders")
        .view("balances")
        .with_debounce(Duration::from_secs(1))
        .build()?;
    let n = notifier.clone();
    let burst = tokio::spawn(async move {
        n.notify("orders", ["order/o-1"]);
        // The rest of the burst comes during the debounce.
        tokio::time::sleep(Duration::from_millis(5)).await;
        for _ in 0..10 {
            n.notify("balances", ["account/a-1"]);
            n.notify("orders", ["order/o-1"]);
        }
    });
    let wake = multi.next().await?;
    burst.await?;
    assert_eq!(wake.changed, vec![0, 1]);
    assert!(!wake.polled);
    Ok(())
}

// Paused time: the runtime moves the clock when every task waits, so the
// order of the sleeps is all that matters, not the machine's speed.
#[tokio::test(start_paused = true)]
async fn a_multi_watch_polls_when_nothing_changes() -> TestResult {
    let notifier = ChangeNotifier::new();
    let mut multi = notifier
        .multi()
        .entity("orders", "order/o-1")
        .with_poll_fallback(MIN_POLL_FALLBACK)
        .build()?;
    // Changes of other entities do not count as a change.
    notifier.notify("orders", ["order/o-2"]);
    assert_eq!(
        multi.next().await?,
        Wake {
            changed: vec![],
            polled: true
        }
    );
    Ok(())
}

// Paused time: the runtime moves the clock when every task waits, so the
// order of the sleeps is all that matters, not the machine's speed.
#[tokio::test(start_paused = true)]
async fn a_change_is_not_lost_when_a_debounced_wait_is_dropped() -> TestResult {
    let notifier = ChangeNotifier::new();
    let mut multi = notifier
        .multi()
        .view("orders")
        .with_debounce(Duration::from_secs(30))
        .build()?;
    let n = notifier.clone();
    let announce = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        n.notify("orders", ["order/o-1"]);
    });
    // Dropped during the debounce, after the change woke it.
    let dropped = tokio::time::timeout(Duration::from_millis(200), multi.next()).await;
    assert!(dropped.is_err());
    announce.await?;
    let wake = tokio::time::timeout(Duration::from_secs(5), multi.next()).await??;
    assert_eq!(wake.changed, vec![0]);
    Ok(())
}

#[test]
fn multi_watch_options_are_checked() {
    let notifier = ChangeNotifier::new();
    assert_eq!(notifier.multi().build().err(), Some(MultiWatchError::Empty));
    let short = MIN_DEBOUNCE / 2;
    assert_eq!(
        notifier
            .multi()
            .view("v")
            .with_debounce(short)
            .build()
            .err(),
        Some(MultiWatchError::DebounceTooShort(short))
    );
    let short = MIN_POLL_FALLBACK / 2;
    assert_eq!(
        notifier
            .multi()
            .view("v")
            .with_poll_fallback(short)
            .build()
            .err(),
        Some(MultiWatchError::PollTooShort(short))
    );
    let mut many = notifier.multi();
    for i in 0..=eskit_processor::notifier::MAX_MULTI_ENTRIES {
        many = many.entity("v", &format!("k{i}"));
    }
    assert!(matches!(
        many.build().err(),
        Some(MultiWatchError::TooMany { .. })
    ));
}
