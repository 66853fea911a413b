//! Correlation and causation from a triggering event into the commands a
//! processor sends: [`CausalContext`], and [`Reactor`], typed handlers that
//! get one per event.

use eskit_core::error::BoxError;
use eskit_core::event::{EventId, EventType, Metadata, Principal, RawEvent, RecordedEvent};
use eskit_core::handler::CommandOptions;
use eskit_core::store::{AppendOptions, BoxFuture};
use eskit_core::typed::Dispatcher;

use crate::BatchHandler;

/// The metadata for what a processor does because of one event: the
/// correlation id of the triggering event (or the event's id when it has
/// none, which starts the chain there), the triggering event's id as the
/// causation id, the trigger's originator, and the processor's principal as
/// the initiator.
///
/// Send commands with [`command_options`](Self::command_options) (or append
/// with [`append_options`](Self::append_options)) and every event they
/// append carries the chain.
///
/// ```
/// use eskit_core::event::{EventId, Metadata, Principal};
/// use eskit_processor::CausalContext;
/// let trigger = EventId::new();
/// let ctx = CausalContext::caused_by(
///     trigger,
///     &Metadata::new().with_correlation_id("order-42"),
///     Principal::automation("shipping"),
/// );
/// assert_eq!(ctx.metadata().correlation_id(), Some("order-42"));
/// assert_eq!(ctx.metadata().causation_id(), Some(trigger.to_string().as_str()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CausalContext {
    metadata: Metadata,
}

impl CausalContext {
    /// The context of work caused by the event `trigger` whose metadata is
    /// `trigger_metadata`, done by `principal`.
    pub fn caused_by(trigger: EventId, trigger_metadata: &Metadata, principal: Principal) -> Self {
        Self {
            metadata: trigger_metadata.continue_from(trigger, principal),
        }
    }

    /// The context of work caused by a stored event.
    pub fn from_event(event: &RawEvent, principal: Principal) -> Self {
        Self::caused_by(event.id, &event.metadata, principal)
    }

    /// The context of work caused by a decoded event.
    pub fn from_recorded<E>(event: &RecordedEvent<E>, principal: Principal) -> Self {
        Self::caused_by(event.id, &event.metadata, principal)
    }

    /// A context carrying `metadata` as it is (for work enqueued with the
    /// chain already in its metadata, as [`TodoFeed`](crate::TodoFeed)
    /// does).
    pub fn from_metadata(metadata: Metadata) -> Self {
        Self { metadata }
    }

    /// The metadata for the commands and events caused.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Command options carrying the metadata.
    pub fn command_options(&self) -> CommandOptions {
        CommandOptions::new().with_metadata(self.metadata.clone())
    }

    /// Append options carrying the metadata.
    pub fn append_options(&self) -> AppendOptions {
        AppendOptions::new().with_metadata(self.metadata.clone())
    }
}

/// Typed reactive handlers as a subscription's [`BatchHandler`]: each event
/// goes to the handlers a [`Dispatcher`] registered for its type, with a
/// [`CausalContext`] caused by that event, so the commands they send carry
/// the trigger's correlation and causation. Events no handler takes are
/// skipped without being decoded.
///
/// Give the subscription [`event_types`](Self::event_types) as its type
/// filter so the backend sends only those.
#[derive(Debug)]
pub struct Reactor {
    dispatcher: Dispatcher<CausalContext>,
    principal: Principal,
}

impl Reactor {
    /// Runs `dispatcher`'s handlers; the caused work is initiated by
    /// `principal` (the processor, usually `Principal::automation(name)`).
    pub fn new(dispatcher: Dispatcher<CausalContext>, principal: Principal) -> Self {
        Self {
            dispatcher,
            principal,
        }
    }

    /// Every stored type name a handler takes: the subscription's filter.
    pub fn event_types(&self) -> Vec<EventType> {
        self.dispatcher.event_types()
    }
}

impl BatchHandler for Reactor {
    fn handle<'a>(&'a self, events: &'a [RawEvent]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            for e in events {
                if !self.dispatcher.handles(e.event_type.as_str()) {
                    continue;
                }
                let ctx = CausalContext::from_event(e, self.principal.clone());
                self.dispatcher.dispatch(e.clone(), &ctx).await?;
            }
            Ok(())
        })
    }
}
