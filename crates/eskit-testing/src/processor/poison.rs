//! RELIABILITY C3, the poison event: the handler always fails on one event
//! in 10,000. With the dead-letter policy it is retried exactly
//! [`RETRIES`] times with backoff, dead-lettered in the backend's
//! dead-letter store with its position and error, and the other 9,999
//! events are handled; with "halt" (the default) the subscription stops on
//! it, its checkpoint never passes it and nothing after it is handled.
//! Each scenario runs [`RUNS`] times, on a fresh store each, with the
//! poison event at another position each time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use eskit_core::{
    error::BoxError,
    event::{EventType, ExpectedVersion, NewEvent, Position, RawEvent, StreamName},
    handler::RetryPolicy,
    store::{AppendOptions, CheckpointStore, DeadLetterStore, EventStore},
};
use eskit_processor::{
    ReplayError, Subscription, SubscriptionError, SubscriptionOptions, SubscriptionState,
    replay_dead_letter, replay_dead_letters,
};

use super::{Parts, ProcessorBackend, ScenarioResult, Shared, log_end};

/// Events in the log; one of them is poison.
pub const EVENTS: u64 = 10_000;
/// Retries after the first try (RELIABILITY C3's `max_retries`).
pub const RETRIES: u32 = 5;
/// Runs of each scenario (RELIABILITY C3: 10).
pub const RUNS: u64 = 10;
/// The retry policy's base delay: retry `n` waits at least half of
/// `BASE_DELAY * 2^n`, which the dead-letter scenario checks.
pub const BASE_DELAY: Duration = Duration::from_millis(2);

/// The poison event's position in run `run`.
fn poison_at(run: u64) -> u64 {
    1 + (4_320 + run * 997) % EVENTS
}

async fn seed<S: EventStore>(store: &S) -> ScenarioResult {
    let ty = EventType::new("Placed")?;
    let mut i = 0;
    while i < EVENTS {
        let s = StreamName::new("order", format!("o-{}", i % 11))?;
        let events = (0..100)
            .map(|_| NewEvent::new(ty.clone(), vec![]))
            .collect();
        store
            .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
        i += 100;
    }
    Ok(())
}

/// What the handler did.
#[derive(Default)]
struct Counts {
    handled: Shared<u64>,
    /// When the poison event was tried alone.
    poison_tries: Shared<Instant>,
}

fn options(name: &str) -> Result<SubscriptionOptions, BoxError> {
    Ok(SubscriptionOptions::new(name)?
        .with_batch_size(250)?
        .with_retry(RetryPolicy::new(RETRIES)?.with_base_delay(BASE_DELAY)))
}

type Handler = Box<dyn Fn(&[RawEvent]) -> Result<(), BoxError> + Send + Sync>;

/// Fails every page holding the event at `poison`.
fn handler(counts: &Arc<Counts>, poison: u64) -> Handler {
    let counts = Arc::clone(counts);
    Box::new(move |events: &[RawEvent]| {
        if events.iter().any(|e| e.position.get() == poison) {
            if events.len() == 1 {
                counts.poison_tries.extend([Instant::now()]);
            }
            return Err(format!("cannot price order at {poison}").into());
        }
        counts
            .handled
            .extend(events.iter().map(|e| e.position.get()));
        Ok(())
    })
}

/// C3 with the dead-letter policy on `backend`, [`RUNS`] times.
///
/// Also checks the dead letter's replay: refused (and kept) while the
/// handler still fails, handled and deleted once it is fixed.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn c3_poison_is_dead_lettered_and_the_rest_handled<B: ProcessorBackend>(
    backend: &B,
) -> ScenarioResult {
    for run in 0..RUNS {
        let parts = backend.fresh().await?;
        let result = dead_letter(&parts, poison_at(run)).await;
        backend.close(parts).await;
        result.map_err(|e| format!("run {run}: {e}"))?;
    }
    Ok(())
}

async fn dead_letter<B: ProcessorBackend>(parts: &Parts<B>, poison: u64) -> ScenarioResult {
    let Parts {
        store,
        checkpoints,
        dead_letters: letters,
    } = parts;
    seed(store).await?;
    let counts = Arc::new(Counts::default());
    let sub = Subscription::new(
        store.clone(),
        checkpoints.clone(),
        options("priced")?,
        handler(&counts, poison),
    )
    .with_dead_letters(letters.clone());
    let health = sub.health();
    let h = health.clone();
    sub.run(async move {
        while h.snapshot().state != SubscriptionState::Live {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await?;
    let tries = counts.poison_tries.snapshot();
    if tries.len() != 1 + RETRIES as usize {
        return Err(format!(
            "the poison event alone was tried {} times, not once and {RETRIES} retries",
            tries.len()
        )
        .into());
    }
    // Each retry waited its backoff: at least half of base * 2^n.
    for (n, w) in tries.windows(2).enumerate() {
        let least = BASE_DELAY * (1 << n) / 2;
        let waited = w[1].duration_since(w[0]);
        if waited < least {
            return Err(format!(
                "retry {n} came {waited:?} after the try before it, not {least:?}"
            )
            .into());
        }
    }
    let mut handled = counts.handled.snapshot();
    handled.sort_unstable();
    handled.dedup();
    if handled.len() as u64 != EVENTS - 1 || handled.contains(&poison) {
        return Err(format!(
            "{} distinct events handled (poison among them: {}), not the other {}",
            handled.len(),
            handled.contains(&poison),
            EVENTS - 1
        )
        .into());
    }
    if health.snapshot().dead_lettered != 1 {
        return Err(format!("health: {:?}", health.snapshot()).into());
    }
    let kept = letters.list("priced", 0, 10).await?;
    let [letter] = kept.as_slice() else {
        return Err(format!("{} dead letters, not 1", kept.len()).into());
    };
    if letter.event.position != Position::new(poison)
        || letter.attempts != 1 + RETRIES
        || !letter.error.contains("cannot price order")
        || letter.subscription != "priced"
    {
        return Err(format!(
            "the dead letter: position {}, {} attempts, error {:?}, subscription {}",
            letter.event.position, letter.attempts, letter.error, letter.subscription
        )
        .into());
    }
    // The checkpoint moved past the poison event: the run went on.
    let saved = checkpoints.load("priced").await?.ok_or("no checkpoint")?;
    if saved != log_end(store).await? {
        return Err(format!("the checkpoint {saved} is not at the head").into());
    }
    // Replayed with the handler still broken: refused, and the letter stays.
    let again = replay_dead_letters(letters, "priced", &handler(&counts, poison)).await;
    if !matches!(again, Err(ReplayError::Handler { id, .. }) if id == letter.id) {
        return Err(format!("a replay with the broken handler gave {again:?}").into());
    }
    if letters.list("priced", 0, 10).await?.len() != 1 {
        return Err("a failed replay removed the dead letter".into());
    }
    // Once fixed, the replay handles the poison event and removes the letter.
    let fixed_saw = Shared::<u64>::default();
    let saw = fixed_saw.clone();
    let fixed = move |events: &[RawEvent]| -> Result<(), BoxError> {
        saw.extend(events.iter().map(|e| e.position.get()));
        Ok(())
    };
    let replayed = replay_dead_letters(letters, "priced", &fixed).await?;
    if replayed != 1 || fixed_saw.snapshot() != [poison] {
        return Err(format!(
            "the fixed replay handled {replayed} letters: {:?}",
            fixed_saw.snapshot()
        )
        .into());
    }
    if !letters.list("priced", 0, 10).await?.is_empty() {
        return Err("the replayed dead letter is still listed".into());
    }
    if replay_dead_letter(letters, letter.id, &fixed)
        .await?
        .is_some()
    {
        return Err("a deleted dead letter was replayed again".into());
    }
    Ok(())
}

/// C3 with the "halt" policy on `backend`, [`RUNS`] times: the run stops
/// with the handler's error after one try and [`RETRIES`] retries, the
/// checkpoint (saved after every page) stays before the poison event, no
/// event after it is handled, and nothing is dead-lettered.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn c3_poison_halts_without_skipping<B: ProcessorBackend>(backend: &B) -> ScenarioResult {
    for run in 0..RUNS {
        let parts = backend.fresh().await?;
        let result = halt(&parts, poison_at(run)).await;
        backend.close(parts).await;
        result.map_err(|e| format!("run {run}: {e}"))?;
    }
    Ok(())
}

async fn halt<B: ProcessorBackend>(parts: &Parts<B>, poison: u64) -> ScenarioResult {
    seed(&parts.store).await?;
    let counts = Arc::new(Counts::default());
    let tries = Arc::new(AtomicU32::new(0));
    let t = Arc::clone(&tries);
    let inner = handler(&counts, poison);
    let sub = Subscription::new(
        parts.store.clone(),
        parts.checkpoints.clone(),
        options("halting")?.with_checkpoint_every(1)?,
        move |events: &[RawEvent]| {
            if events.iter().any(|e| e.position.get() == poison) {
                t.fetch_add(1, Ordering::SeqCst);
            }
            inner(events)
        },
    );
    // The run must stop on its own; one that skipped the poison event and
    // caught up would be stopped here and return `Ok`.
    let health = sub.health();
    let skipped_and_live = async move {
        while health.snapshot().state != SubscriptionState::Live {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    match sub.run(skipped_and_live).await {
        Err(SubscriptionError::Handler { attempts, .. }) if attempts == 1 + RETRIES => {}
        other => return Err(format!("expected the run to halt, got {other:?}").into()),
    }
    if tries.load(Ordering::SeqCst) != 1 + RETRIES {
        return Err(format!(
            "the poison page was tried {} times",
            tries.load(Ordering::SeqCst)
        )
        .into());
    }
    let saved = parts
        .checkpoints
        .load("halting")
        .await?
        .ok_or("no checkpoint")?;
    if saved.position().get() >= poison {
        return Err(format!("the checkpoint {saved} passed the poison event at {poison}").into());
    }
    let handled = counts.handled.snapshot();
    if handled.iter().any(|p| *p >= poison) {
        return Err("events at or after the poison were handled".into());
    }
    // Every page before the poison one was handled (the halt is on the
    // poison page, not earlier).
    if (handled.len() as u64) < poison.saturating_sub(250) {
        return Err(format!(
            "only {} events before the poison at {poison} were handled",
            handled.len()
        )
        .into());
    }
    if !parts.dead_letters.list("halting", 0, 10).await?.is_empty() {
        return Err("the halt policy dead-lettered an event".into());
    }
    Ok(())
}
