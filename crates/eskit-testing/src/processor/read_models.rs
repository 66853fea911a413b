//! Transactional read models with a zero-downtime rebuild
//! ([`ShadowRebuild`]), on every backend that has them: RELIABILITY C4 for
//! a read model written with its cursor (rebuilt in place and in a shadow,
//! equal to the live one by hash), a reader that never sees an empty or
//! partial view while it is rebuilt, a rebuild while the live view runs and
//! writes go on, a caught-up shadow fed by the live view, refused swaps and
//! change announcements.
//!
//! Each backend brings the same read model, "balances": per account (the
//! stream name `account/a-<n>`) the sum of its movements
//! ([`amount`](super::views::amount)), and the number of movements, in two
//! tables (or the backend's equivalent).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eskit_core::{
    error::BoxError,
    event::GlobalCursor,
    store::{ProjectionSink, ShadowRebuild, SwapOutcome},
};
use eskit_processor::notifier::ChangeNotifier;
use eskit_processor::rebuild::rebuild_in_shadow;
use eskit_processor::view::{NotifyingSink, run_to_head};
use eskit_processor::{Subscription, SubscriptionOptions};

use super::views::{
    EVENTS, PER_APPEND, Row, expected_balances, hash_rows, write_movements, write_while_live,
};
use super::{Parts, ProcessorBackend, ScenarioResult, log_end, reached};

/// The most events the busy-rebuild scenario writes while it waits.
pub const MAX_BUSY_EVENTS: usize = 200_000;

/// The read model's name.
pub const NAME: &str = "balances";

/// A backend's balances read model.
pub trait ReadModelBackend: ProcessorBackend {
    /// The read model.
    type Model: ShadowRebuild + Clone + Send + Sync + 'static;
    /// Its live sink.
    type Sink: ProjectionSink + Clone + Send + Sync + 'static;

    /// The balances read model `name` over `parts`' store.
    ///
    /// # Errors
    /// Whatever the backend refuses.
    fn balances(&self, parts: &Parts<Self>, name: &str) -> Result<Self::Model, BoxError>;

    /// Creates what the read model needs (tables); idempotent.
    fn setup(&self, model: &Self::Model) -> impl Future<Output = ScenarioResult> + Send;

    /// The sink that writes the live read model.
    fn sink(&self, model: &Self::Model) -> Self::Sink;

    /// The balances by account, in account order, and the number of
    /// movements in all, read from one snapshot of the read model.
    fn rows(
        &self,
        model: &Self::Model,
    ) -> impl Future<Output = Result<(Vec<Row>, i64), BoxError>> + Send;

    /// The live cursor.
    fn cursor(
        &self,
        model: &Self::Model,
    ) -> impl Future<Output = Result<Option<GlobalCursor>, BoxError>> + Send;

    /// Empties the read model and its cursor (a rebuild in place).
    fn reset(&self, model: &Self::Model) -> impl Future<Output = ScenarioResult> + Send;

    /// Drops the shadow and its cursor.
    fn drop_shadow(&self, model: &Self::Model) -> impl Future<Output = ScenarioResult> + Send;

    /// Checks what the backend itself promises after a swap (for example
    /// the names of the tables and indexes left). The default checks
    /// nothing.
    fn check_after_swap(&self, model: &Self::Model) -> impl Future<Output = ScenarioResult> + Send {
        let _ = model;
        std::future::ready(Ok(()))
    }
}

fn options(name: &str) -> Result<SubscriptionOptions, eskit_processor::SubscriptionError> {
    SubscriptionOptions::new(name)?.with_batch_size(500)
}

fn live<B: ReadModelBackend>(
    backend: &B,
    parts: &Parts<B>,
    model: &B::Model,
) -> Result<
    Subscription<
        B::Store,
        impl eskit_core::store::CheckpointStore + use<B>,
        impl eskit_processor::BatchHandler + use<B>,
    >,
    BoxError,
> {
    Ok(Subscription::with_sink(
        parts.store.clone(),
        backend.sink(model),
        options(NAME)?,
    ))
}

/// Runs `scenario` on a fresh store and its balances read model (set up),
/// closing the store afterwards.
async fn with_model<B, F, Fut>(backend: &B, scenario: F) -> ScenarioResult
where
    B: ReadModelBackend,
    F: FnOnce(Parts<B>, B::Model) -> Fut,
    Fut: Future<Output = (Parts<B>, ScenarioResult)>,
{
    let parts = backend.fresh().await?;
    let model = match backend.balances(&parts, NAME) {
        Ok(m) => m,
        Err(e) => {
            backend.close(parts).await;
            return Err(e);
        }
    };
    if let Err(e) = backend.setup(&model).await {
        backend.close(parts).await;
        return Err(e);
    }
    let (parts, result) = scenario(parts, model).await;
    backend.close(parts).await;
    result
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> ScenarioResult {
    if ok { Ok(()) } else { Err(what().into()) }
}

/// C4 for the read model: its live sink follows the log while
/// [`WRITERS`](super::views::WRITERS) writers append [`EVENTS`] events; then it is reset and
/// replayed in place, then rebuilt in a shadow and swapped in. Each time it
/// equals the balances computed from the log (by hash), with one movement
/// per event and its cursor at the head.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn c4_a_read_model_rebuilt_from_zero_equals_the_live_one<B: ReadModelBackend>(
    backend: &B,
) -> ScenarioResult {
    with_model(backend, |parts, model| async move {
        let r = c4(backend, &parts, &model).await;
        (parts, r)
    })
    .await
}

async fn c4<B: ReadModelBackend>(
    backend: &B,
    parts: &Parts<B>,
    model: &B::Model,
) -> ScenarioResult {
    let store = &parts.store;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sub = live(backend, parts, model)?;
    let health = sub.health();
    let run = tokio::spawn(sub.run(async move {
        let _ = stop_rx.await;
    }));
    let head = write_while_live(store, NAME, &health, stop_tx, run).await?;

    let want = expected_balances(store).await?;
    let events = i64::try_from(EVENTS)?;
    let (rows, moved) = backend.rows(model).await?;
    ensure(rows == want, || {
        "the live read model misses or repeats an event".into()
    })?;
    ensure(moved == events, || {
        format!("{moved} movements, not {events}")
    })?;
    let live_hash = hash_rows(&rows);
    let cursor = backend.cursor(model).await?;
    ensure(cursor == Some(head), || {
        format!("the live cursor is {cursor:?}, the head {head}")
    })?;

    // Rebuilt in place: emptied, then replayed from the start.
    backend.reset(model).await?;
    let (rows, moved) = backend.rows(model).await?;
    ensure(rows.is_empty() && moved == 0, || {
        "the reset left rows".into()
    })?;
    let cursor = backend.cursor(model).await?;
    ensure(cursor.is_none(), || {
        format!("the reset left the cursor {cursor:?}")
    })?;
    let reached_at = run_to_head(live(backend, parts, model)?).await?;
    ensure(reached_at == head, || {
        format!("the replay stopped at {reached_at}")
    })?;
    let (rows, moved) = backend.rows(model).await?;
    ensure(hash_rows(&rows) == live_hash && moved == events, || {
        "the read model replayed in place differs from the live one".into()
    })?;

    // Rebuilt in a shadow, then swapped in.
    let cursor = rebuild_in_shadow(store.clone(), model, options(NAME)?).await?;
    ensure(cursor == head, || {
        format!("the shadow rebuild stopped at {cursor}")
    })?;
    let (rows, moved) = backend.rows(model).await?;
    ensure(hash_rows(&rows) == live_hash && moved == events, || {
        "the read model rebuilt in a shadow differs from the live one".into()
    })?;
    let cursor = backend.cursor(model).await?;
    ensure(cursor == Some(head), || {
        format!("after the swap the cursor is {cursor:?}")
    })?;
    backend.check_after_swap(model).await
}

/// A reader queries the read model without pause while it is rebuilt in a
/// shadow twice (the second rebuild finds what the first swapped in): it
/// never sees an empty or partial view.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn a_zero_downtime_rebuild_serves_the_whole_view_throughout<B: ReadModelBackend>(
    backend: &B,
) -> ScenarioResult {
    with_model(backend, |parts, model| async move {
        let r = zero_downtime(backend, &parts, &model).await;
        (parts, r)
    })
    .await
}

async fn zero_downtime<B: ReadModelBackend>(
    backend: &B,
    parts: &Parts<B>,
    model: &B::Model,
) -> ScenarioResult {
    let store = &parts.store;
    write_movements(store, 0, EVENTS).await?;
    let head = run_to_head(live(backend, parts, model)?).await?;
    let (rows, moved) = backend.rows(model).await?;
    ensure(rows == expected_balances(store).await?, || {
        "the live read model misses or repeats an event".into()
    })?;
    let want = (hash_rows(&rows), moved);
    let done = AtomicBool::new(false);
    let reader = async {
        let (mut reads, mut wrong) = (0u64, 0u64);
        while !done.load(Ordering::Acquire) {
            let (rows, moved) = backend.rows(model).await?;
            reads += 1;
            if (hash_rows(&rows), moved) != want {
                wrong += 1;
            }
            tokio::task::yield_now().await;
        }
        Ok::<_, BoxError>((reads, wrong))
    };
    let rebuilds = async {
        let result = async {
            for _ in 0..2 {
                let cursor = rebuild_in_shadow(store.clone(), model, options(NAME)?).await?;
                ensure(cursor == head, || format!("a rebuild stopped at {cursor}"))?;
                backend.check_after_swap(model).await?;
            }
            Ok::<_, BoxError>(())
        }
        .await;
        done.store(true, Ordering::Release);
        result
    };
    let (read, rebuilt) = tokio::join!(reader, rebuilds);
    rebuilt?;
    let (reads, wrong) = read?;
    ensure(reads > 0, || "the reader never read".into())?;
    ensure(wrong == 0, || {
        format!("{wrong} of {reads} reads saw an empty or partial view")
    })?;
    let (rows, moved) = backend.rows(model).await?;
    ensure((hash_rows(&rows), moved) == want, || {
        "the rebuilt read model differs".into()
    })
}

/// The live subscription keeps running and writes go on, without pause,
/// until a shadow rebuild is done: nothing is lost or applied twice around
/// the swap.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn a_shadow_rebuild_while_the_live_view_runs_and_writes_go_on<B: ReadModelBackend>(
    backend: &B,
) -> ScenarioResult {
    with_model(backend, |parts, model| async move {
        let r = busy(backend, &parts, &model).await;
        (parts, r)
    })
    .await
}

async fn busy<B: ReadModelBackend>(
    backend: &B,
    parts: &Parts<B>,
    model: &B::Model,
) -> ScenarioResult {
    let store = &parts.store;
    write_movements(store, 0, 10_000).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sub = live(backend, parts, model)?;
    let health = sub.health();
    let run = tokio::spawn(sub.run(async move {
        let _ = stop_rx.await;
    }));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, done) = (store.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut written = 10_000;
            while !done.load(Ordering::Acquire) && written < MAX_BUSY_EVENTS {
                write_movements(&store, written, 2 * PER_APPEND)
                    .await
                    .map_err(|e| e.to_string())?;
                written += 2 * PER_APPEND;
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(written)
        })
    };
    let rebuilt = rebuild_in_shadow(store.clone(), model, options(NAME)?).await;
    done.store(true, Ordering::Release);
    let written = writer.await??;
    rebuilt?;
    let head = log_end(store).await?;
    reached(NAME, &health, head).await?;
    let _ = stop_tx.send(());
    run.await??;
    let (rows, moved) = backend.rows(model).await?;
    ensure(rows == expected_balances(store).await?, || {
        "an event was lost or applied twice around the swap".into()
    })?;
    ensure(moved == i64::try_from(written)?, || {
        format!("{moved} movements, {written} events")
    })?;
    let cursor = backend.cursor(model).await?;
    ensure(cursor == Some(head), || {
        format!("the cursor is {cursor:?}, the head {head}")
    })?;
    backend.check_after_swap(model).await
}

/// A shadow that has caught up is fed by the live view while its own
/// subscription is idle, so the swap is not refused; its own subscription
/// catching up afterwards applies nothing twice. A shadow that is behind is
/// not fed, and dropping it leaves nothing to swap.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn a_caught_up_shadow_is_fed_by_the_live_view<B: ReadModelBackend>(
    backend: &B,
) -> ScenarioResult {
    with_model(backend, |parts, model| async move {
        let r = fed(backend, &parts, &model).await;
        (parts, r)
    })
    .await
}

async fn fed<B: ReadModelBackend>(
    backend: &B,
    parts: &Parts<B>,
    model: &B::Model,
) -> ScenarioResult {
    let store = &parts.store;
    write_movements(store, 0, 1_000).await?;
    let first = run_to_head(live(backend, parts, model)?).await?;
    let shadow = Arc::new(model.begin_shadow().await?);
    let fill = || -> Result<_, eskit_processor::SubscriptionError> {
        Ok(Subscription::with_sink(
            store.clone(),
            Arc::clone(&shadow),
            options(model.shadow_name())?,
        ))
    };
    let filled = run_to_head(fill()?).await?;
    ensure(filled == first, || {
        format!("the shadow filled to {filled}, not {first}")
    })?;

    // The live view moves on while the shadow's subscription is idle: each
    // of its pages goes to the shadow too.
    write_movements(store, 1_000, 1_000).await?;
    let second = run_to_head(live(backend, parts, model)?).await?;
    let fed_to = shadow.cursor(model.shadow_name()).await?;
    ensure(fed_to == Some(second), || {
        format!(
            "the live view did not feed the caught-up shadow: it is at {fed_to:?}, not {second}"
        )
    })?;
    let again = run_to_head(fill()?).await?;
    ensure(again == second, || {
        format!("the shadow's own run stopped at {again}")
    })?;
    let swapped = model.swap_in_shadow().await?;
    ensure(swapped == SwapOutcome::Swapped { cursor: second }, || {
        format!("the swap gave {swapped:?}")
    })?;
    let (rows, moved) = backend.rows(model).await?;
    ensure(rows == expected_balances(store).await?, || {
        "the fed shadow lost or repeated an event".into()
    })?;
    ensure(moved == 2_000, || format!("{moved} movements, not 2000"))?;

    // A shadow that is behind is not fed; dropping it stops everything.
    let _behind = model.begin_shadow().await?;
    write_movements(store, 2_000, 100).await?;
    run_to_head(live(backend, parts, model)?).await?;
    backend.drop_shadow(model).await?;
    let swapped = model.swap_in_shadow().await?;
    ensure(swapped == SwapOutcome::NoShadow, || {
        format!("a swap after the shadow was dropped gave {swapped:?}")
    })?;
    let (rows, _) = backend.rows(model).await?;
    ensure(rows == expected_balances(store).await?, || {
        "dropping the shadow changed the live read model".into()
    })
}

/// A swap without a shadow, or with a shadow behind the live read model,
/// is refused and changes nothing.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn a_refused_swap_changes_nothing<B: ReadModelBackend>(backend: &B) -> ScenarioResult {
    with_model(backend, |parts, model| async move {
        let r = refused(backend, &parts, &model).await;
        (parts, r)
    })
    .await
}

async fn refused<B: ReadModelBackend>(
    backend: &B,
    parts: &Parts<B>,
    model: &B::Model,
) -> ScenarioResult {
    let swapped = model.swap_in_shadow().await?;
    ensure(swapped == SwapOutcome::NoShadow, || {
        format!("a swap without a shadow gave {swapped:?}")
    })?;
    write_movements(&parts.store, 0, 1_000).await?;
    let _shadow = model.begin_shadow().await?;
    let head = run_to_head(live(backend, parts, model)?).await?;
    let before = backend.rows(model).await?;
    // The shadow has nothing yet: the live view is ahead.
    let swapped = model.swap_in_shadow().await?;
    ensure(
        swapped
            == SwapOutcome::Behind {
                shadow: None,
                live: head,
            },
        || format!("a swap of an empty shadow gave {swapped:?}"),
    )?;
    ensure(backend.rows(model).await? == before, || {
        "a refused swap changed the read model".into()
    })
}

/// A [`NotifyingSink`] over the live sink announces each stored page under
/// the view's name and each event's stream, after the commit: a woken
/// reader sees the page.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn a_notifying_sink_announces_each_stored_page<B: ReadModelBackend>(
    backend: &B,
) -> ScenarioResult {
    with_model(backend, |parts, model| async move {
        let r = notifying(backend, &parts, &model).await;
        (parts, r)
    })
    .await
}

async fn notifying<B: ReadModelBackend>(
    backend: &B,
    parts: &Parts<B>,
    model: &B::Model,
) -> ScenarioResult {
    let notifier = ChangeNotifier::new();
    let mut a0 = notifier.watch(NAME, "account/a-0");
    let a1 = notifier.watch(NAME, "account/a-1");
    // One append of PER_APPEND events, all to account a-0.
    write_movements(&parts.store, 0, PER_APPEND).await?;
    let sink = NotifyingSink::new(backend.sink(model), notifier.clone(), NAME);
    run_to_head(Subscription::with_sink(
        parts.store.clone(),
        sink,
        options(NAME)?,
    ))
    .await?;
    let changed = a0.changed().await?;
    ensure(changed == 1, || {
        format!("account a-0 changed {changed} times, not once")
    })?;
    ensure(!a1.has_changed()?, || "account a-1 was announced".into())?;
    ensure(
        backend.rows(model).await?.0 == expected_balances(&parts.store).await?,
        || "a woken reader did not see the page".into(),
    )
}
