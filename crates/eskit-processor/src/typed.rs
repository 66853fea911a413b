//! Typed handlers in a subscription: a core [`Dispatcher`] as the page
//! handler.

use eskit_core::error::BoxError;
use eskit_core::event::{EventType, RawEvent};
use eskit_core::store::BoxFuture;
use eskit_core::typed::Dispatcher;

use crate::BatchHandler;

/// A [`Dispatcher`] and the context its handlers get, as a subscription's
/// [`BatchHandler`]: each event of a page goes to the handlers registered
/// for its type (`Dispatcher::on::<E>(..)`), in order; events no handler
/// takes are skipped without being decoded.
///
/// Give the subscription [`event_types`](Self::event_types) as its type
/// filter so the backend sends only those:
/// `options.with_event_types(handler.event_types())`.
#[derive(Debug)]
pub struct TypedHandlers<C = ()> {
    dispatcher: Dispatcher<C>,
    ctx: C,
}

impl<C: Clone + Send + Sync + 'static> TypedHandlers<C> {
    /// Runs `dispatcher`'s handlers with clones of `ctx`.
    pub fn new(dispatcher: Dispatcher<C>, ctx: C) -> Self {
        Self { dispatcher, ctx }
    }

    /// Every stored type name a handler takes: the subscription's filter.
    pub fn event_types(&self) -> Vec<EventType> {
        self.dispatcher.event_types()
    }
}

impl<C: Clone + Send + Sync + 'static> BatchHandler for TypedHandlers<C> {
    fn handle<'a>(&'a self, events: &'a [RawEvent]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            for e in events {
                self.dispatcher.dispatch(e.clone(), &self.ctx).await?;
            }
            Ok(())
        })
    }
}
