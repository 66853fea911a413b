//! Correlation and causation flow from a triggering event into what a
//! processor does: the events its commands append carry correlation = the
//! trigger's correlation (or the trigger's id when it has none) and
//! causation = the trigger's id; through typed reactive handlers
//! ([`Reactor`]) and through the todo-list processor fed by a subscription.

use std::time::Duration;

use eskit_core::error::CodecError;
use eskit_core::event::{
    EventType, ExpectedVersion, Metadata, NewEvent, Principal, RawEvent, RecordedEvent, StreamName,
};
use eskit_core::handler::{CommandHandler, Decider};
use eskit_core::memory::{MemoryCheckpointStore, MemoryClaimStore, MemoryStore};
use eskit_core::store::{AppendOptions, ClaimedItem, EventStore, LoadOptions, NewWorkItem};
use eskit_core::typed::{Dispatcher, DomainEvent, EventCodec, EventSchema, TypedStore};

use eskit_processor::{
    CausalContext, Reactor, Subscription, SubscriptionOptions, SubscriptionState, TodoFeed,
    TodoOptions, TodoProcessor, event_key,
};

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

#[derive(Debug, Clone, PartialEq)]
struct Shipped(u8);

impl DomainEvent for Shipped {
    fn event_type(&self) -> &'static str {
        "Shipped"
    }
    fn event_types() -> &'static [&'static str] {
        &["Shipped"]
    }
}

/// One byte per event.
struct Byte;

impl EventCodec<Placed> for Byte {
    fn name(&self) -> &'static str {
        "byte"
    }
    fn encode(&self, e: &Placed, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.push(e.0);
        Ok(())
    }
    fn decode(&self, _: &str, b: &[u8]) -> Result<Placed, CodecError> {
        b.first()
            .map(|n| Placed(*n))
            .ok_or_else(|| CodecError::decode(Some("Placed"), "empty"))
    }
}

impl EventCodec<Shipped> for Byte {
    fn name(&self) -> &'static str {
        "byte"
    }
    fn encode(&self, e: &Shipped, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.push(e.0);
        Ok(())
    }
    fn decode(&self, _: &str, b: &[u8]) -> Result<Shipped, CodecError> {
        b.first()
            .map(|n| Shipped(*n))
            .ok_or_else(|| CodecError::decode(Some("Shipped"), "empty"))
    }
}

/// Shipping: the command `Ship(n)` always ships.
struct Shipping;

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

impl Decider for Shipping {
    type State = ();
    type Command = u8;
    type Event = Shipped;
    type Error = Never;
    fn initial_state(&self) {}
    fn decide(&self, (): &(), n: &u8) -> Result<Vec<Shipped>, Never> {
        Ok(vec![Shipped(*n)])
    }
    fn evolve(&self, (): (), _: &Shipped) {}
}

/// Appends two `Placed` events: one with a correlation id, one without.
async fn triggers(store: &MemoryStore) -> Result<Vec<RawEvent>, Box<dyn std::error::Error>> {
    let s = StreamName::new("order", "o-1")?;
    let with = AppendOptions::new().with_metadata(Metadata::new().with_correlation_id("req-42"));
    for (n, options) in [(1u8, with), (2, AppendOptions::new())] {
        let e = NewEvent::new(EventType::new("Placed")?, vec![n]).with_codec("byte");
        store
            .append(&s, ExpectedVersion::Any, vec![e], options)
            .await?;
    }
    Ok(store.load(&s, LoadOptions::new()).await?)
}

/// Checks the `Shipped` events of the `shipment` streams against their
/// triggers.
async fn check_chain(store: &MemoryStore, placed: &[RawEvent]) -> TestResult {
    for (n, trigger, correlation) in [
        (1u8, &placed[0], "req-42".to_owned()),
        (2, &placed[1], placed[1].id.to_string()),
    ] {
        let s = StreamName::new("shipment", format!("s-{n}"))?;
        let shipped = store.load(&s, LoadOptions::new()).await?;
        assert_eq!(shipped.len(), 1, "shipment {n}");
        let m = &shipped[0].metadata;
        assert_eq!(
            m.correlation_id(),
            Some(correlation.as_str()),
            "correlation of {n}"
        );
        assert_eq!(
            m.causation_id(),
            Some(trigger.id.to_string().as_str()),
            "causation of {n}"
        );
        assert_eq!(m.initiator(), Some(&Principal::automation("shipper")));
    }
    Ok(())
}

async fn until_live<R, C, H>(sub: Subscription<R, C, H>) -> TestResult
where
    R: eskit_core::store::GlobalReader + eskit_core::store::CommitFeed,
    C: eskit_core::store::CheckpointStore,
    H: eskit_processor::BatchHandler,
{
    let health = sub.health();
    sub.run(async move {
        while health.snapshot().state != SubscriptionState::Live {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_reactor_s_commands_carry_the_trigger_s_correlation_and_causation() -> TestResult {
    let store = MemoryStore::new();
    let placed = triggers(&store).await?;
    let shipping = std::sync::Arc::new(CommandHandler::new(
        Shipping,
        TypedStore::new(store.clone(), EventSchema::new(Byte)),
    ));
    let reactor = Reactor::new(
        Dispatcher::new().on(EventSchema::new(Byte), {
            let shipping = std::sync::Arc::clone(&shipping);
            move |e: RecordedEvent<Placed>, ctx: CausalContext| {
                let shipping = std::sync::Arc::clone(&shipping);
                async move {
                    let s = StreamName::new("shipment", format!("s-{}", e.data.0))?;
                    shipping
                        .handle_with(&s, &e.data.0, &ctx.command_options())
                        .await?;
                    Ok(())
                }
            }
        }),
        Principal::automation("shipper"),
    );
    let options = SubscriptionOptions::new("shipper")?.with_event_types(reactor.event_types());
    until_live(Subscription::new(
        store.clone(),
        MemoryCheckpointStore::new(),
        options,
        reactor,
    ))
    .await?;
    check_chain(&store, &placed).await
}

#[tokio::test]
async fn todo_items_fed_by_a_subscription_carry_the_chain_to_the_handler() -> TestResult {
    let store = MemoryStore::new();
    let placed = triggers(&store).await?;
    let claims = MemoryClaimStore::new();
    let feed = TodoFeed::new(
        claims.clone(),
        "ship",
        Principal::automation("shipper"),
        |e: &RawEvent| Some(NewWorkItem::new(event_key("ship", e.id), e.payload.clone())),
    )?;
    until_live(Subscription::new(
        store.clone(),
        MemoryCheckpointStore::new(),
        SubscriptionOptions::new("feed")?,
        feed,
    ))
    .await?;
    let target = store.clone();
    let p = TodoProcessor::new(
        claims,
        TodoOptions::new("ship", "node")?.with_poll_interval(Duration::from_millis(2))?,
        move |item: ClaimedItem, ctx: CausalContext| {
            let target = target.clone();
            async move {
                let n = item.payload.first().copied().ok_or("empty payload")?;
                let s = StreamName::new("shipment", format!("s-{n}"))?;
                let e = NewEvent::new(EventType::new("Shipped")?, vec![n]);
                target
                    .append(&s, ExpectedVersion::Any, vec![e], ctx.append_options())
                    .await?;
                Ok(())
            }
        },
    );
    let stats = p.stats();
    p.run(async move {
        while stats.completed() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await?;
    check_chain(&store, &placed).await
}
