//! RELIABILITY C1 on PostgreSQL through eskit-processor: 4 writers append
//! while 4 subscriptions (two filtered) run from empty, with their
//! checkpoints in the same schema; each sees exactly its part of the final
//! log, in cursor order, each event once.

mod common;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eskit_core::event::{
    EventType, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName, StreamType,
};
use eskit_core::store::{
    AppendOptions, CheckpointStore, EventStore, GlobalPager, GlobalReader, ReadOptions,
};
use eskit_pg::{PgOptions, PgStore};
use eskit_processor::{Subscription, SubscriptionOptions, SubscriptionState};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WRITERS: usize = 4;
/// Events each writer appends (RELIABILITY C1 quick size: 20 k in all).
const EVENTS_PER_WRITER: usize = 5_000;
/// A guard against a hang, not a timing goal.
const CATCH_UP_GUARD: Duration = Duration::from_secs(300);

/// What a subscription saw of one event.
type Seen = (GlobalCursor, String, u64);

fn seen(e: &RawEvent) -> Seen {
    (e.cursor(), e.stream.to_string(), e.version.get())
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn extend(&self, events: &[RawEvent]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(events.iter().map(seen));
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Appends in batches of 1 to 4 events to streams of two types, the event
/// types alternating.
async fn writer(store: PgStore, w: usize) -> Result<(), eskit_core::error::StoreError> {
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
                NewEvent::new(ty.clone(), format!("{w}-{}", i + k).into_bytes())
            })
            .collect();
        store
            .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
        i += n;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c1_every_subscription_sees_its_part_once_in_order() -> TestResult {
    let store =
        PgStore::connect(PgOptions::new(common::url()?).with_schema(common::fresh_schema("c1")))
            .await?;
    let checkpoints = store.checkpoints();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let filters: [(&str, Option<&str>, Option<&str>); 4] = [
        ("all-a", None, None),
        ("all-b", None, None),
        ("odd", Some("Odd"), None),
        ("invoices", None, Some("invoice")),
    ];
    let mut subs = Vec::new();
    for (name, ty, stream_type) in filters {
        let log = Log::default();
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
                sink.extend(events);
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
    let final_log = GlobalPager::new(&store, ReadOptions::from_start(1000))
        .collect()
        .await?;
    assert_eq!(final_log.len(), WRITERS * EVENTS_PER_WRITER);
    let head = store.head().await?;
    for (name, .., health, _) in &subs {
        let deadline = tokio::time::Instant::now() + CATCH_UP_GUARD;
        while !(health.snapshot().cursor >= head
            && health.snapshot().state == SubscriptionState::Live)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not catch up: {:?}",
                health.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
        let got_set: std::collections::HashSet<&Seen> = got.iter().collect();
        let skipped = want.iter().filter(|e| !got_set.contains(e)).count();
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert!(
            got == want,
            "{name}: expected {} events, saw {} ({skipped} skipped, {} duplicated, in order: {})",
            want.len(),
            got.len(),
            got.len() - unique.len(),
            unique == got
        );
        assert_eq!(health.snapshot().state, SubscriptionState::Stopped);
        assert_eq!(checkpoints.load(name).await?, Some(head));
    }
    store.close().await;
    Ok(())
}
