//! RELIABILITY C1: 4 writers append while 4 subscriptions (two filtered)
//! run from empty; each sees exactly its part of the final log, in cursor
//! order, each event once (0 skipped, 0 reordered, 0 duplicated).

use eskit_core::{
    error::StoreError,
    event::{EventType, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName, StreamType},
    store::{AppendOptions, CheckpointStore, EventStore, GlobalReader},
};
use eskit_processor::{Subscription, SubscriptionOptions, SubscriptionState};

use super::{ProcessorBackend, ScenarioResult, Shared, all_events, log_end, reached};

/// Concurrent writers.
pub const WRITERS: usize = 4;
/// Events each writer appends (RELIABILITY C1's quick size: 20 k in all).
pub const EVENTS_PER_WRITER: usize = 5_000;

/// What a subscription saw of one event.
type Seen = (GlobalCursor, String, u64);

fn seen(e: &RawEvent) -> Seen {
    (e.cursor(), e.stream.to_string(), e.version.get())
}

/// Appends in batches of 1 to 4 events to streams of two types, the event
/// types alternating.
async fn writer<S: EventStore>(store: S, w: usize) -> Result<(), StoreError> {
    let odd = EventType::from_static("Odd")?;
    let even = EventType::from_static("Even")?;
    let mut i = 0;
    while i < EVENTS_PER_WRITER {
        let n = (1 + (i + w) % 4).min(EVENTS_PER_WRITER - i);
        let stream_type = if i % 3 == 0 { "invoice" } else { "order" };
        let s = StreamName::new(stream_type, format!("w{w}-{}", i % 7))?;
        let events = (0..n)
            .map(|k| {
                let ty = if (i + k) % 2 == 0 { &even } else { &odd };
                NewEvent::new(ty.clone(), format!("{w}/{}", i + k).into_bytes())
            })
            .collect();
        store
            .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
        i += n;
        if i % 200 < 4 {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// C1 on `backend`; the checkpoints go to its checkpoint store, and each
/// must stand at the head after the graceful stop.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn c1_every_subscription_sees_its_part_once_in_order<B: ProcessorBackend>(
    backend: &B,
) -> ScenarioResult {
    let parts = backend.fresh().await?;
    let result = c1(&parts.store, &parts.checkpoints).await;
    backend.close(parts).await;
    result
}

async fn c1<S, C>(store: &S, checkpoints: &C) -> ScenarioResult
where
    S: EventStore + GlobalReader + eskit_core::store::CommitFeed + Clone + Send + Sync + 'static,
    C: CheckpointStore + Clone + Send + Sync + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let filters: [(&str, Option<&str>, Option<&str>); 4] = [
        ("all-a", None, None),
        ("all-b", None, None),
        ("odd", Some("Odd"), None),
        ("invoices", None, Some("invoice")),
    ];
    let mut subs = Vec::new();
    for (name, ty, stream_type) in filters {
        let log = Shared::<Seen>::default();
        let sink = log.clone();
        let mut options = SubscriptionOptions::new(name)?
            .with_batch_size(97)?
            .with_checkpoint_every(300)?;
        if let Some(t) = ty {
            options = options.with_event_types([EventType::new(t)?]);
        }
        if let Some(t) = stream_type {
            options = options.with_stream_type(StreamType::new(t)?);
        }
        let sub = Subscription::new(
            store.clone(),
            checkpoints.clone(),
            options,
            move |events: &[RawEvent]| {
                sink.extend(events.iter().map(seen));
                Ok(())
            },
        );
        let health = sub.health();
        let mut stop = stop_rx.clone();
        let task = tokio::spawn(sub.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        subs.push((name, ty, stream_type, log, health, task));
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(store.clone(), w)))
        .collect();
    for w in writers {
        w.await??;
    }
    let final_log = all_events(store).await?;
    if final_log.len() != WRITERS * EVENTS_PER_WRITER {
        return Err(format!(
            "the writers appended {} events, the log holds {}",
            WRITERS * EVENTS_PER_WRITER,
            final_log.len()
        )
        .into());
    }
    let head = log_end(store).await?;
    for (name, .., health, _) in &subs {
        reached(name, health, head).await?;
    }
    stop_tx.send(true)?;
    for (name, ty, stream_type, log, health, task) in subs {
        task.await??;
        let want: Vec<Seen> = final_log
            .iter()
            .filter(|e| ty.is_none_or(|t| e.event_type == t))
            .filter(|e| stream_type.is_none_or(|t| e.stream.stream_type() == t))
            .map(seen)
            .collect();
        let got = log.take();
        if got != want {
            let got_set: std::collections::HashSet<&Seen> = got.iter().collect();
            let skipped = want.iter().filter(|e| !got_set.contains(e)).count();
            let mut unique = got.clone();
            unique.sort();
            unique.dedup();
            return Err(format!(
                "{name}: expected {} events, saw {} ({skipped} skipped, {} duplicated, in order: {})",
                want.len(),
                got.len(),
                got.len() - unique.len(),
                unique == got
            )
            .into());
        }
        let state = health.snapshot().state;
        if state != SubscriptionState::Stopped {
            return Err(format!("{name} is {state:?} after its run returned").into());
        }
        let saved = checkpoints.load(name).await?;
        if saved != Some(head) {
            return Err(format!(
                "{name}'s checkpoint after a graceful stop is {saved:?}, not the head {head}"
            )
            .into());
        }
    }
    Ok(())
}
