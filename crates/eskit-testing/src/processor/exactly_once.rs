//! RELIABILITY C2 in its simplest form, in one process: a subscription
//! driving a transactional projection sink is aborted at random moments
//! while a writer appends, and restarted. Each page's effects and its
//! cursor commit together, so the read model holds every event's effect
//! exactly once: 0 redelivered effects, 0 lost.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eskit_core::{
    error::BoxError,
    event::{EventId, EventType, ExpectedVersion, NewEvent, StreamName},
    store::{AppendOptions, EventStore, ProjectionSink},
};
use eskit_processor::{Subscription, SubscriptionOptions};

use super::{Parts, ProcessorBackend, ScenarioResult, all_events, log_end, reached};

/// Appends the writer makes.
pub const APPENDS: usize = 300;
/// Events per append.
pub const EVENTS_PER_APPEND: usize = 4;
/// Aborted runs.
pub const KILLS: usize = 20;
/// The projection's name.
pub const NAME: &str = "effects";

/// A backend's effects projection: one record per applied event, with no
/// unique key, so an effect applied twice shows as a second record.
pub trait EffectsBackend: ProcessorBackend {
    /// The sink.
    type Sink: ProjectionSink + Clone + Send + Sync + 'static;

    /// The effects sink over `parts`' store (creating what it needs).
    fn effects(
        &self,
        parts: &Parts<Self>,
    ) -> impl Future<Output = Result<Self::Sink, BoxError>> + Send;

    /// How many records each event id has.
    fn counts(
        &self,
        parts: &Parts<Self>,
        sink: &Self::Sink,
    ) -> impl Future<Output = Result<HashMap<EventId, i64>, BoxError>> + Send;
}

/// SplitMix64, for the random moments of kill tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `ESKIT_SEED` or else the clock; prints
    /// `ESKIT_SEED=<seed>` so a failing run can be repeated. Returns the
    /// seed too.
    pub fn from_env_or_clock() -> (Self, u64) {
        let seed = std::env::var("ESKIT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
        #[allow(clippy::print_stdout)]
        {
            println!("ESKIT_SEED={seed}");
        }
        (Self(seed), seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The scenario on `backend`: [`KILLS`] runs aborted after 0.5 to 30 ms
/// while a writer appends [`APPENDS`] times, then a last run to the end.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn a_subscriber_aborted_at_random_applies_every_event_exactly_once<B: EffectsBackend>(
    backend: &B,
) -> ScenarioResult {
    let parts = backend.fresh().await?;
    let result = aborted(backend, &parts).await;
    backend.close(parts).await;
    result
}

async fn aborted<B: EffectsBackend>(backend: &B, parts: &Parts<B>) -> ScenarioResult {
    let (mut rng, seed) = Rng::from_env_or_clock();
    let sink = backend.effects(parts).await?;
    let writer = {
        let store = parts.store.clone();
        tokio::spawn(async move {
            let ty = EventType::new("Placed").map_err(|e| e.to_string())?;
            for i in 0..APPENDS {
                let s = StreamName::new("order", format!("o-{i}")).map_err(|e| e.to_string())?;
                let events = (0..EVENTS_PER_APPEND)
                    .map(|_| NewEvent::new(ty.clone(), b"{}".to_vec()))
                    .collect();
                store
                    .append(&s, ExpectedVersion::NoStream, events, AppendOptions::new())
                    .await
                    .map_err(|e| e.to_string())?;
                if i % 16 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
            Ok::<_, String>(())
        })
    };
    let options = || SubscriptionOptions::new(NAME)?.with_batch_size(7);
    for _ in 0..KILLS {
        let sub = Subscription::with_sink(parts.store.clone(), sink.clone(), options()?);
        let run = tokio::spawn(sub.run(std::future::pending()));
        tokio::time::sleep(Duration::from_micros(500 + rng.next_u64() % 30_000)).await;
        run.abort();
        // Cancelled, or finished with an error worth seeing.
        if let Ok(r) = run.await {
            r?;
        }
    }
    writer.await??;

    // A last run to the end of the log.
    let end = log_end(&parts.store).await?;
    let sub = Subscription::with_sink(parts.store.clone(), sink.clone(), options()?);
    let health = sub.health();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(sub.run(async move {
        let _ = stop_rx.await;
    }));
    reached(NAME, &health, end).await?;
    let _ = stop_tx.send(());
    run.await??;

    let events = all_events(&parts.store).await?;
    let total = APPENDS * EVENTS_PER_APPEND;
    if events.len() != total {
        return Err(format!("the log holds {} events, not {total}", events.len()).into());
    }
    let counts = backend.counts(parts, &sink).await?;
    let redelivered: i64 = counts.values().map(|c| c - 1).filter(|c| *c > 0).sum();
    let lost = events
        .iter()
        .filter(|e| !counts.contains_key(&e.id))
        .count();
    let unexpected = (counts.len() + lost).saturating_sub(events.len());
    #[allow(clippy::print_stdout)]
    {
        println!("events {total}, redelivered {redelivered}, lost {lost}, unexpected {unexpected}");
    }
    if redelivered != 0 || lost != 0 || unexpected != 0 {
        return Err(format!(
            "{redelivered} effects applied twice, {lost} missing, {unexpected} unexpected (seed {seed})"
        )
        .into());
    }
    let cursor = sink.cursor(NAME).await?;
    if cursor != Some(end) {
        return Err(format!("the sink's cursor is {cursor:?}, the log ends at {end}").into());
    }
    Ok(())
}
