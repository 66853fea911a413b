//! Typed dispatch over the global log: handlers registered per event type,
//! found by the stored type name in O(1), each decoding only what it handles.
//!
//! A subscription reads raw events (a [`GlobalBatch`](crate::store::GlobalBatch)) and
//! hands each to [`Dispatcher::dispatch`]. An event no handler registered for
//! is "not mine": it is skipped without being decoded, never an error.
//! [`Dispatcher::event_types`] lists every name the handlers take, so the read
//! can ask the backend for those types only.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::codec::DomainEvent;
use crate::error::{BoxError, CodecError};
use crate::event::{RawEvent, RecordedEvent};
use crate::name::{EventType, quote_name};
use crate::store::BoxFuture;
use crate::typed::EventSchema;
use crate::version::GlobalCursor;

/// Why dispatching an event failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum DispatchError {
    /// The event has a type a handler registered for, but does not decode.
    Decode {
        /// Where the event stands in the log.
        cursor: GlobalCursor,
        /// Its stored type name.
        event_type: EventType,
        /// The codec's error.
        source: CodecError,
    },
    /// A handler returned an error.
    Handler {
        /// Where the event stands in the log.
        cursor: GlobalCursor,
        /// Its stored type name.
        event_type: EventType,
        /// The handler's error.
        source: BoxError,
    },
}

impl DispatchError {
    /// Where the failing event stands in the log.
    pub fn cursor(&self) -> GlobalCursor {
        match self {
            Self::Decode { cursor, .. } | Self::Handler { cursor, .. } => *cursor,
        }
    }
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode {
                cursor, event_type, ..
            } => write!(
                f,
                "event {} at {cursor} does not decode",
                quote_name(event_type.as_str())
            ),
            Self::Handler {
                cursor, event_type, ..
            } => write!(
                f,
                "the handler of event {} at {cursor} failed",
                quote_name(event_type.as_str())
            ),
        }
    }
}

impl std::error::Error for DispatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode { source, .. } => Some(source),
            Self::Handler { source, .. } => Some(source.as_ref()),
        }
    }
}

/// What [`Dispatcher::dispatch`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    /// This many handlers ran (one or more).
    Handled(usize),
    /// No handler takes the event's type; it was not decoded.
    NotMine,
}

/// One registered handler, erased over its event type.
trait Route<C>: Send + Sync {
    fn handle(&self, raw: RawEvent, ctx: C) -> BoxFuture<'static, Result<(), DispatchError>>;
}

struct Typed<E, F> {
    schema: Arc<EventSchema<E>>,
    handler: F,
}

impl<E, F, Fut, C> Route<C> for Typed<E, F>
where
    E: DomainEvent,
    C: Send + 'static,
    F: Fn(RecordedEvent<E>, C) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn handle(&self, raw: RawEvent, ctx: C) -> BoxFuture<'static, Result<(), DispatchError>> {
        let (cursor, event_type) = (raw.cursor(), raw.event_type.clone());
        match self.schema.decode(raw) {
            Err(source) => Box::pin(std::future::ready(Err(DispatchError::Decode {
                cursor,
                event_type,
                source,
            }))),
            Ok(event) => {
                let fut = (self.handler)(event, ctx);
                Box::pin(async move {
                    fut.await.map_err(|source| DispatchError::Handler {
                        cursor,
                        event_type,
                        source,
                    })
                })
            }
        }
    }
}

/// Typed handlers looked up by stored event type. `C` is a context every
/// handler gets a clone of (a store handle, a command bus; `()` for none).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use eskit_core::prelude::*;
/// use eskit_core::{handler::Handled, memory::MemoryStore, rt::block_on, typed::{Dispatched, Dispatcher}};
/// # #[derive(Debug, PartialEq)] enum Order { Placed(u8) }
/// # impl DomainEvent for Order {
/// #     fn event_type(&self) -> &'static str { "OrderPlaced" }
/// #     fn event_types() -> &'static [&'static str] { &["OrderPlaced"] }
/// # }
/// # struct ByteCodec;
/// # impl EventCodec<Order> for ByteCodec {
/// #     fn name(&self) -> &'static str { "byte" }
/// #     fn encode(&self, Order::Placed(n): &Order, out: &mut Vec<u8>) -> Result<(), CodecError> { out.push(*n); Ok(()) }
/// #     fn decode(&self, _: &str, b: &[u8]) -> Result<Order, CodecError> {
/// #         b.first().map(|n| Order::Placed(*n)).ok_or_else(|| CodecError::decode(Some("OrderPlaced"), "empty"))
/// #     }
/// # }
/// let totals = Arc::new(Mutex::new(0u32));
/// let dispatcher = Dispatcher::new().on(
///     EventSchema::new(ByteCodec),
///     |e: RecordedEvent<Order>, totals: Arc<Mutex<u32>>| async move {
///         let Order::Placed(n) = e.data;
///         *totals.lock().map_err(|_| "poisoned")? += u32::from(n);
///         Ok(())
///     },
/// );
/// let store = TypedStore::new(MemoryStore::new(), EventSchema::new(ByteCodec));
/// let s = StreamName::new("order", "o-1")?;
/// block_on(store.append(&s, ExpectedVersion::Any, vec![Order::Placed(3), Order::Placed(4)]))?;
/// let other = NewEvent::new(EventType::new("Shipped")?, vec![]);
/// block_on(store.backend().append(&s, ExpectedVersion::Any, vec![other], AppendOptions::new()))?;
///
/// let page = block_on(store.backend().read(ReadOptions::from_start(100)))?;
/// let mut outcomes = Vec::new();
/// for raw in page.events {
///     outcomes.push(block_on(dispatcher.dispatch(raw, &totals))?);
/// }
/// assert_eq!(outcomes, [Dispatched::Handled(1), Dispatched::Handled(1), Dispatched::NotMine]);
/// assert_eq!(*totals.lock().map_err(|_| "poisoned")?, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Dispatcher<C = ()> {
    routes: HashMap<EventType, Vec<usize>>,
    handlers: Vec<Box<dyn Route<C>>>,
}

impl<C> fmt::Debug for Dispatcher<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<&EventType> = self.routes.keys().collect();
        types.sort();
        f.debug_struct("Dispatcher")
            .field("handlers", &self.handlers.len())
            .field("event_types", &types)
            .finish()
    }
}

impl<C> Default for Dispatcher<C> {
    fn default() -> Self {
        Self {
            routes: HashMap::new(),
            handlers: Vec::new(),
        }
    }
}

impl<C: Clone + Send + 'static> Dispatcher<C> {
    /// A dispatcher with no handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `handler` for every event that decodes into `E` with `schema`:
    /// `E`'s wire names and the schema's legacy aliases of them
    /// ([`EventSchema::wire_names`]). Several handlers may take one type;
    /// they run in registration order.
    #[must_use]
    pub fn on<E, F, Fut>(mut self, schema: impl Into<Arc<EventSchema<E>>>, handler: F) -> Self
    where
        E: DomainEvent,
        F: Fn(RecordedEvent<E>, C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let schema = schema.into();
        let index = self.handlers.len();
        for name in schema.wire_names() {
            self.routes.entry(name).or_default().push(index);
        }
        self.handlers.push(Box::new(Typed { schema, handler }));
        self
    }

    /// Every stored type name some handler takes, sorted: the type filter
    /// for the read that feeds this dispatcher.
    pub fn event_types(&self) -> Vec<EventType> {
        let mut v: Vec<EventType> = self.routes.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether some handler takes events stored under `event_type`.
    pub fn handles(&self, event_type: &str) -> bool {
        self.routes.contains_key(event_type)
    }

    /// Hands one event to the handlers of its type, in registration order;
    /// an event of a type no handler takes is [`Dispatched::NotMine`] and
    /// is not decoded.
    ///
    /// # Errors
    /// The first [`DispatchError`]; later handlers of the event do not run.
    ///
    /// # Cancel safety
    /// Not cancel safe: a handler dropped half-way may have done part of its
    /// work. Subscriptions redeliver from their checkpoint.
    pub async fn dispatch(&self, raw: RawEvent, ctx: &C) -> Result<Dispatched, DispatchError> {
        let Some(indices) = self.routes.get(raw.event_type.as_str()) else {
            return Ok(Dispatched::NotMine);
        };
        let Some((last, first)) = indices.split_last() else {
            return Ok(Dispatched::NotMine);
        };
        for i in first {
            if let Some(h) = self.handlers.get(*i) {
                h.handle(raw.clone(), ctx.clone()).await?;
            }
        }
        if let Some(h) = self.handlers.get(*last) {
            h.handle(raw, ctx.clone()).await?;
        }
        Ok(Dispatched::Handled(indices.len()))
    }
}
