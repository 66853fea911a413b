//! Closing the store: after `close` through one handle, every call on every
//! handle gives [`StoreError::Closed`], and the commit feed ends.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use eskit_core::{
    error::{StoreError, error_chain},
    event::{ExpectedVersion, StreamName},
    store::{FeedError, LoadOptions, ReadOptions},
};

use super::{CLOSE, Ctx, Failure, Outcome, Scenario, ensure, ev, scenario_list, stream};

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![CLOSE;
        "close.every_call_on_every_handle_fails_closed" => every_call,
        "close.closing_twice_is_harmless" => twice,
        "close.operations_in_flight_end_ok_or_closed" => in_flight,
    ]
}

/// Fails unless `r` is [`StoreError::Closed`].
fn expect_closed<T>(r: Result<T, StoreError>, what: &str) -> Outcome {
    match r {
        Err(StoreError::Closed) => Ok(()),
        Err(e) => Err(Failure(format!(
            "{what} after close: expected the closed kind, got {e:?} ({})",
            error_chain(&e)
        ))),
        Ok(_) => Err(Failure(format!("{what} after close succeeded"))),
    }
}

/// Every operation of the store's traits, through the fixture's handles
/// (not the one that closed it), must give the closed kind.
async fn all_closed(c: &Ctx, s: &StreamName) -> Outcome {
    let events = c.events();
    expect_closed(
        events
            .dyn_append(
                s,
                ExpectedVersion::Any,
                vec![ev("Late", "x")?],
                eskit_core::store::AppendOptions::new(),
            )
            .await,
        "append",
    )?;
    expect_closed(events.dyn_load(s, LoadOptions::new()).await, "load")?;
    expect_closed(events.dyn_stream_version(s).await, "stream_version")?;
    let global = c.global()?;
    expect_closed(global.dyn_read(ReadOptions::from_start(10)).await, "read")?;
    expect_closed(global.dyn_head().await, "head")?;
    let lifecycle = c.lifecycle()?;
    expect_closed(lifecycle.dyn_status(s).await, "status")?;
    expect_closed(lifecycle.dyn_archive(s, "late").await, "archive")?;
    match c.feed()?.listen() {
        Err(FeedError::Closed) => Ok(()),
        Err(e) => Err(Failure(format!(
            "listen after close: expected FeedError::Closed, got {e:?}"
        ))),
        Ok(_) => Err(Failure("listen after close succeeded".into())),
    }
}

async fn every_call(c: Ctx) -> Outcome {
    let s = stream("close-1")?;
    c.append(&s, ExpectedVersion::NoStream, vec![ev("E", "1")?])
        .await?;
    let mut listener = c
        .feed()?
        .listen()
        .map_err(|e| Failure(format!("listen: {e}")))?;
    c.close().await?;
    // Once close returned, the listener has ended: no waiting needed.
    let ended = pin!(listener.changed())
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    ensure!(
        ended == Poll::Ready(Err(FeedError::Closed)),
        "a listener got {ended:?} right after close, not FeedError::Closed"
    );
    all_closed(&c, &s).await
}

async fn twice(c: Ctx) -> Outcome {
    let s = stream("close-2")?;
    c.append(&s, ExpectedVersion::NoStream, vec![ev("E", "1")?])
        .await?;
    c.close().await?;
    c.close().await?;
    all_closed(&c, &s).await
}

/// Appends that have not returned when the store closes either commit (and
/// say so) or fail with the closed kind; nothing else, and nothing hangs.
async fn in_flight(c: Ctx) -> Outcome {
    const WRITERS: usize = 4;
    /// Appends before the close, across all writers.
    const BEFORE_CLOSE: usize = 40;
    let done = Arc::new(AtomicUsize::new(0));
    let exited = Arc::new(AtomicUsize::new(0));
    let gate = c.gate(WRITERS + 1);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (c2, gate) = (c.clone(), gate.clone());
            let (done, exited) = (Arc::clone(&done), Arc::clone(&exited));
            c.spawn(async move {
                gate.wait().await;
                let outcome = write_until_closed(&c2, w, &done).await;
                exited.fetch_add(1, Ordering::SeqCst);
                outcome
            })
        })
        .collect();
    gate.wait().await;
    while done.load(Ordering::SeqCst) < BEFORE_CLOSE && exited.load(Ordering::SeqCst) < WRITERS {
        std::thread::yield_now();
        crate::executor::yield_now().await;
    }
    c.close().await?;
    for t in tasks {
        t.await??;
    }
    all_closed(&c, &stream("close-w0")?).await
}

/// Appends until the store is closed; the number of appends that committed.
async fn write_until_closed(c: &Ctx, w: usize, done: &AtomicUsize) -> Result<usize, Failure> {
    /// Most appends per writer: the close comes long before.
    const MAX_APPENDS: usize = 100_000;
    let s = stream(&format!("close-w{w}"))?;
    for i in 0..MAX_APPENDS {
        match c
            .append(&s, ExpectedVersion::Any, vec![ev("E", format!("{i}"))?])
            .await
        {
            Ok(_) => {
                done.fetch_add(1, Ordering::SeqCst);
            }
            Err(StoreError::Closed) => return Ok(i),
            Err(e) => {
                return Err(Failure(format!(
                    "writer {w} append {i} while closing: expected success or \
                     the closed kind, got {e:?} ({})",
                    error_chain(&e)
                )));
            }
        }
    }
    Err(Failure(format!("writer {w} never saw the store closed")))
}
