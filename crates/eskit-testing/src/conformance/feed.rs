//! The commit feed: wake-ups after commits, coalescing, cancel safety, the
//! listener cap, lifecycle signals.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use eskit_core::limits::MAX_LISTENERS;
use eskit_core::{
    event::{ExpectedVersion, Position},
    store::{FeedError, Listener},
};

use super::{
    Ctx, FEED, FEED_LIFECYCLE, Failure, Outcome, Scenario, ensure, ensure_eq, ev, expect_err,
    scenario_list, stream,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    let mut all = scenario_list![FEED;
        "feed.returned_append_has_woken_listeners" => append_wakes,
        "feed.signals_coalesce" => coalesce,
        "feed.dropped_changed_loses_no_signal" => dropped_changed,
        "feed.a_thousand_listeners_wake_on_one_commit" => thousand,
        "feed.listener_cap_is_a_typed_error" => cap,
        "feed.new_listener_waits_for_the_next_commit" => new_waits,
    ];
    all.extend(scenario_list![FEED_LIFECYCLE;
        "feed.lifecycle_changes_wake_listeners" => lifecycle,
    ]);
    all
}

/// Polls a `changed()` future once, without waiting.
fn poll_once(l: &mut Listener) -> Poll<Result<Position, FeedError>> {
    let mut fut = pin!(l.changed());
    fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

fn listen(c: &Ctx) -> Result<Listener, Failure> {
    c.feed()?
        .listen()
        .map_err(|e| Failure(format!("listen: {e}")))
}

async fn append_wakes(c: Ctx) -> Outcome {
    let mut l = listen(&c)?;
    ensure!(
        poll_once(&mut l).is_pending(),
        "a listener woke before any commit"
    );
    let r = c
        .append(
            &stream("feed-1")?,
            ExpectedVersion::Any,
            vec![ev("E", "1")?],
        )
        .await?;
    match poll_once(&mut l) {
        Poll::Ready(Ok(p)) => ensure!(
            p >= r.last_position(),
            "the wake-up carried position {p}, before the append's {}",
            r.last_position()
        ),
        other => return Err(Failure(format!("after a returned append: {other:?}"))),
    }
    ensure!(
        poll_once(&mut l).is_pending(),
        "one commit woke the listener twice"
    );
    Ok(())
}

async fn coalesce(c: Ctx) -> Outcome {
    let mut l = listen(&c)?;
    let s = stream("feed-co")?;
    let mut last = Position::ZERO;
    for i in 0..5 {
        last = c
            .append(&s, ExpectedVersion::Any, vec![ev("E", format!("{i}"))?])
            .await?
            .last_position();
    }
    ensure_eq!(
        poll_once(&mut l),
        Poll::Ready(Ok(last)),
        "five commits, one wake-up"
    );
    ensure!(
        poll_once(&mut l).is_pending(),
        "coalesced signals woke the listener again"
    );
    Ok(())
}

async fn dropped_changed(c: Ctx) -> Outcome {
    let mut l = listen(&c)?;
    // A `changed()` that registered its waker and was then dropped.
    ensure!(poll_once(&mut l).is_pending(), "woke before any commit");
    c.append(
        &stream("feed-drop")?,
        ExpectedVersion::Any,
        vec![ev("E", "x")?],
    )
    .await?;
    ensure!(
        matches!(poll_once(&mut l), Poll::Ready(Ok(_))),
        "the commit after a dropped changed() was lost"
    );
    Ok(())
}

async fn thousand(c: Ctx) -> Outcome {
    let mut ls = (0..1000)
        .map(|_| listen(&c))
        .collect::<Result<Vec<_>, _>>()?;
    for l in &mut ls {
        ensure!(
            poll_once(l).is_pending(),
            "a listener woke before any commit"
        );
    }
    c.append(
        &stream("feed-k")?,
        ExpectedVersion::Any,
        vec![ev("E", "k")?],
    )
    .await?;
    let mut woken = 0;
    for l in &mut ls {
        if matches!(poll_once(l), Poll::Ready(Ok(_))) {
            woken += 1;
        }
    }
    ensure_eq!(woken, 1000, "listeners woken by one commit");
    Ok(())
}

async fn cap(c: Ctx) -> Outcome {
    let held = (0..MAX_LISTENERS)
        .map(|_| listen(&c))
        .collect::<Result<Vec<_>, _>>()?;
    expect_err!(
        c.feed()?.listen(),
        FeedError::TooManyListeners { .. },
        "listener number {}",
        MAX_LISTENERS + 1
    );
    drop(held);
    listen(&c)?;
    Ok(())
}

async fn new_waits(c: Ctx) -> Outcome {
    c.append(
        &stream("feed-new")?,
        ExpectedVersion::Any,
        vec![ev("E", "a")?],
    )
    .await?;
    let mut l = listen(&c)?;
    ensure!(
        poll_once(&mut l).is_pending(),
        "a new listener woke for a commit made before it listened"
    );
    Ok(())
}

async fn lifecycle(c: Ctx) -> Outcome {
    let lc = c.lifecycle()?;
    let s = stream("feed-lc")?;
    c.append(&s, ExpectedVersion::Any, vec![ev("E", "a")?])
        .await?;
    let mut l = listen(&c)?;
    let steps: [(&str, _); 4] = [
        ("archive", lc.dyn_archive(&s, "old")),
        ("restore", lc.dyn_restore(&s)),
        ("tombstone", lc.dyn_tombstone(&s, "closed")),
        ("delete", lc.dyn_delete(&s)),
    ];
    for (what, op) in steps {
        op.await?;
        ensure!(
            matches!(poll_once(&mut l), Poll::Ready(Ok(_))),
            "{what} did not wake the listener"
        );
    }
    Ok(())
}
