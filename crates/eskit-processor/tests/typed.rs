//! Typed handlers in a subscription: `Dispatcher::on::<E>` handlers get
//! decoded events; other types are skipped without being decoded, with the
//! backend filter or without it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eskit_core::error::CodecError;
use eskit_core::event::{EventType, ExpectedVersion, NewEvent, RecordedEvent, StreamName};
use eskit_core::memory::{MemoryCheckpointStore, MemoryStore};
use eskit_core::store::{AppendOptions, EventStore};
use eskit_core::typed::{Dispatcher, DomainEvent, EventCodec, EventSchema, TypedStore};
use eskit_processor::{Subscription, SubscriptionOptions, SubscriptionState, TypedHandlers};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Debug, Clone, PartialEq)]
struct Placed(u8);

impl DomainEvent for Placed {
    fn event_type(&self) -> &'static str {
        "Placed"
    }
    fn event_types() -> &'static [&'static str] {
        &["Placed"]
    }
}

/// One byte per event; counts its decodes.
#[derive(Clone, Default)]
struct Bytes(Arc<AtomicUsize>);

impl EventCodec<Placed> for Bytes {
    fn name(&self) -> &'static str {
        "byte"
    }
    fn encode(&self, e: &Placed, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.push(e.0);
        Ok(())
    }
    fn decode(&self, _: &str, b: &[u8]) -> Result<Placed, CodecError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        b.first()
            .map(|n| Placed(*n))
            .ok_or_else(|| CodecError::decode(Some("Placed"), "empty"))
    }
}

async fn run(filtered: bool) -> TestResult {
    let store = MemoryStore::new();
    let codec = Bytes::default();
    let typed = TypedStore::new(store.clone(), EventSchema::new(codec.clone()));
    let s = StreamName::new("order", "o-1")?;
    for n in 0..30u8 {
        typed
            .append(&s, ExpectedVersion::Any, vec![Placed(n)])
            .await?;
        let foreign = NewEvent::new(EventType::new("Shipped")?, vec![n]);
        store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![foreign],
                AppendOptions::new(),
            )
            .await?;
    }
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let handlers = TypedHandlers::new(
        Dispatcher::new().on(
            EventSchema::new(codec.clone()),
            |e: RecordedEvent<Placed>, seen: Arc<Mutex<Vec<u8>>>| async move {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(e.data.0);
                Ok(())
            },
        ),
        Arc::clone(&seen),
    );
    let mut options = SubscriptionOptions::new("typed")?.with_batch_size(7)?;
    if filtered {
        options = options.with_event_types(handlers.event_types());
    }
    let sub = Subscription::new(store, MemoryCheckpointStore::new(), options, handlers);
    let health = sub.health();
    sub.run(async move {
        while health.snapshot().state != SubscriptionState::Live {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await?;
    assert_eq!(
        *seen.lock().unwrap_or_else(PoisonError::into_inner),
        (0..30).collect::<Vec<u8>>()
    );
    assert_eq!(
        codec.0.load(Ordering::SeqCst),
        30,
        "only the handlers' events were decoded"
    );
    Ok(())
}

#[tokio::test]
async fn typed_handlers_with_the_backend_filter() -> TestResult {
    run(true).await
}

#[tokio::test]
async fn typed_handlers_skip_other_types_without_decoding() -> TestResult {
    run(false).await
}
