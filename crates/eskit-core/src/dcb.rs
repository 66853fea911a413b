//! The Dynamic Consistency Boundary (DCB): decisions over the events that
//! match a query over event types and [`Tag`]s, across streams, with a
//! condition on the append that records the decision.
//!
//! - [`EventQuery`] selects events: its [`QueryItem`]s are OR-ed; within an
//!   item, event types are OR-ed and tags AND-ed.
//! - [`EventQueryReader::query`] reads the matching events after a cursor,
//!   in cursor order, with the global read contract ([`GlobalBatch`]): its
//!   `next` moves past everything scanned, matching or not.
//! - [`AppendCondition`] makes an append fail with
//!   [`StoreError::ConditionFailed`] when an event matching its query was
//!   appended after the cursor the decision read up to.
//!
//! ```
//! use eskit_core::prelude::*;
//! use eskit_core::{dcb::{AppendCondition, QueryOptions, QueryPager}, memory::MemoryStore, rt::block_on};
//! let store = MemoryStore::new();
//! let course = Tag::new("course:c-1")?;
//! let enrolled = EventType::new("Enrolled")?;
//! let query = EventQuery::from(QueryItem::new().with_tags([course.clone()]));
//!
//! // Decide on what the query returns, up to the read's `next`.
//! let seen = block_on(QueryPager::new(&store, QueryOptions::from_start(query.clone(), 100)).collect())?;
//! assert!(seen.is_empty());
//! let read_up_to = GlobalCursor::START;
//!
//! let stream = StreamName::new("enrolment", "s-1")?;
//! let enrol = || NewEvent::new(enrolled.clone(), vec![]).with_tags([course.clone()]);
//! let options = AppendOptions::new().with_condition(AppendCondition::new(query.clone(), read_up_to));
//! block_on(store.append(&stream, ExpectedVersion::Any, vec![enrol()], options.clone()))?;
//!
//! // A second decision made on the same, now stale, read fails.
//! let late = block_on(store.append(&stream, ExpectedVersion::Any, vec![enrol()], options));
//! assert!(matches!(late, Err(StoreError::ConditionFailed { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;

use crate::error::{StoreError, ValidationError};
use crate::event::RawEvent;
use crate::limits::{MAX_FILTER_TYPES, MAX_QUERY_ITEMS, MAX_READ_LIMIT, MAX_TAGS_PER_EVENT};
use crate::name::EventType;
use crate::store::{GlobalBatch, PageOptions, PageSource, Pager};
use crate::tag::{Tag, normalize};
use crate::version::{GlobalCursor, Position};

pub use crate::dcb_decider::{DcbDecider, DcbHandled, DcbHandler, Tagged};

/// One part of an [`EventQuery`]: events of any of its types (any type when
/// it names none) that carry all of its tags (no tag needed when it names
/// none). `QueryItem::new()` alone matches every event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct QueryItem {
    event_types: Vec<EventType>,
    tags: Vec<Tag>,
}

impl QueryItem {
    /// An item that matches every event; narrow it with the `with_*` methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events of one of these types (replaces earlier types).
    #[must_use]
    pub fn with_event_types(mut self, types: impl IntoIterator<Item = EventType>) -> Self {
        let mut types: Vec<EventType> = types.into_iter().collect();
        types.sort();
        types.dedup();
        self.event_types = types;
        self
    }

    /// Only events that carry every one of these tags (replaces earlier tags).
    #[must_use]
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags = normalize(tags.into_iter().collect());
        self
    }

    /// The event types, sorted; empty means any type.
    pub fn event_types(&self) -> &[EventType] {
        &self.event_types
    }

    /// The tags an event must all carry, sorted.
    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }

    /// Whether an event of `event_type` carrying `tags` (sorted, as every
    /// event's are) matches this item.
    pub fn matches(&self, event_type: &EventType, tags: &[Tag]) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(event_type))
            && self.tags.iter().all(|t| tags.binary_search(t).is_ok())
    }
}

/// Which events a DCB decision depends on: those matching any of its
/// [`QueryItem`]s. A query without items matches no event.
///
/// At most [`MAX_QUERY_ITEMS`] items, each with at most
/// [`MAX_FILTER_TYPES`] types and [`MAX_TAGS_PER_EVENT`] tags (more could
/// never match one event); checked by [`validate`](Self::validate), which
/// every backend calls.
///
/// ```
/// use eskit_core::{dcb::{EventQuery, QueryItem}, event::{EventType, Tag}};
/// // Enrolments in course c-1, or anything about student s-1.
/// let q = EventQuery::new()
///     .with_item(QueryItem::new()
///         .with_event_types([EventType::new("Enrolled")?])
///         .with_tags([Tag::new("course:c-1")?]))
///     .with_item(QueryItem::new().with_tags([Tag::new("student:s-1")?]));
/// let student = [Tag::new("student:s-1")?];
/// assert!(q.matches(&EventType::new("Left")?, &student));
/// assert!(!q.matches(&EventType::new("Left")?, &[]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EventQuery {
    items: Vec<QueryItem>,
}

impl EventQuery {
    /// A query without items: it matches no event.
    pub fn new() -> Self {
        Self::default()
    }

    /// A query matching every event.
    pub fn all() -> Self {
        Self::from(QueryItem::new())
    }

    /// Also matches the events `item` matches.
    #[must_use]
    pub fn with_item(mut self, item: QueryItem) -> Self {
        self.items.push(item);
        self
    }

    /// The items, OR-ed.
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// Whether an event of `event_type` carrying `tags` (sorted) matches.
    pub fn matches(&self, event_type: &EventType, tags: &[Tag]) -> bool {
        self.items.iter().any(|i| i.matches(event_type, tags))
    }

    /// Whether a stored event matches.
    pub fn matches_event(&self, event: &RawEvent) -> bool {
        self.matches(&event.event_type, &event.tags)
    }

    /// Checks the bounds.
    ///
    /// # Errors
    /// [`ValidationError::TooManyQueryItems`],
    /// [`ValidationError::TooManyFilterTypes`] or
    /// [`ValidationError::TooManyQueryTags`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.items.len() > MAX_QUERY_ITEMS {
            return Err(ValidationError::TooManyQueryItems {
                count: self.items.len(),
            });
        }
        for (item, i) in self.items.iter().enumerate() {
            if i.event_types.len() > MAX_FILTER_TYPES {
                return Err(ValidationError::TooManyFilterTypes {
                    count: i.event_types.len(),
                });
            }
            if i.tags.len() > MAX_TAGS_PER_EVENT {
                return Err(ValidationError::TooManyQueryTags {
                    item,
                    count: i.tags.len(),
                });
            }
        }
        Ok(())
    }
}

impl From<QueryItem> for EventQuery {
    fn from(item: QueryItem) -> Self {
        Self { items: vec![item] }
    }
}

impl FromIterator<QueryItem> for EventQuery {
    fn from_iter<I: IntoIterator<Item = QueryItem>>(iter: I) -> Self {
        Self {
            items: iter.into_iter().collect(),
        }
    }
}

/// One query read: the events matching `query` strictly after a cursor, at
/// most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOptions {
    query: EventQuery,
    after: GlobalCursor,
    limit: usize,
}

impl QueryOptions {
    /// Events matching `query` strictly after `after`, at most `limit`.
    pub fn new(query: EventQuery, after: GlobalCursor, limit: usize) -> Self {
        Self {
            query,
            after,
            limit,
        }
    }

    /// Events matching `query` from the start of the log, at most `limit`.
    pub fn from_start(query: EventQuery, limit: usize) -> Self {
        Self::new(query, GlobalCursor::START, limit)
    }

    /// The same query after another cursor.
    #[must_use]
    pub fn with_after(mut self, after: GlobalCursor) -> Self {
        self.after = after;
        self
    }

    /// The query.
    pub fn query(&self) -> &EventQuery {
        &self.query
    }

    /// The cursor the read starts after (exclusive).
    pub fn after(&self) -> GlobalCursor {
        self.after
    }

    /// The most events returned.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Checks the bounds.
    ///
    /// # Errors
    /// [`ValidationError::InvalidLimit`] unless `1 <= limit <=
    /// MAX_READ_LIMIT`, or the query's error ([`EventQuery::validate`]).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.limit == 0 || self.limit > MAX_READ_LIMIT {
            return Err(ValidationError::InvalidLimit { limit: self.limit });
        }
        self.query.validate()
    }
}

impl GlobalBatch {
    /// A query page built by a backend ordered by position alone, from the
    /// matching events and its horizon, with the same rule as
    /// [`GlobalBatch::by_position`]: when the page is full, `next` is its
    /// last event; otherwise the read scanned up to the horizon.
    pub fn query_by_position(
        options: &QueryOptions,
        events: Vec<RawEvent>,
        horizon: Position,
    ) -> Self {
        let head = GlobalCursor::at(horizon);
        let scanned = match events.last() {
            Some(last) if events.len() >= options.limit() => last.cursor(),
            _ => head,
        };
        Self {
            next: scanned.max(options.after()),
            head,
            events,
        }
    }
}

/// Reads the events matching an [`EventQuery`], across all streams.
///
/// # Contract
/// The [`GlobalBatch`] contract of global reads: events in strictly
/// increasing cursor order, all after the read's cursor and matching the
/// query; no event at or before `next` can still appear (matching or
/// not), so a decision that read up to `next` and appends with
/// [`AppendCondition::new(query, next)`](AppendCondition::new) fails if,
/// and only if, a matching event it did not see was appended.
pub trait EventQueryReader: Send + Sync {
    /// Events matching `options.query()` strictly after `options.after()`,
    /// in cursor order, at most `options.limit()`; with the resume cursor
    /// and the head.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for invalid options, or a backend failure.
    fn query(
        &self,
        options: QueryOptions,
    ) -> impl Future<Output = Result<GlobalBatch, StoreError>> + Send;
}

impl PageOptions for QueryOptions {
    fn after(&self) -> GlobalCursor {
        QueryOptions::after(self)
    }
    fn with_after(self, after: GlobalCursor) -> Self {
        QueryOptions::with_after(self, after)
    }
    fn limit(&self) -> usize {
        QueryOptions::limit(self)
    }
}

impl<R: EventQueryReader + ?Sized> PageSource<QueryOptions> for R {
    fn read_page(
        &self,
        options: QueryOptions,
    ) -> impl Future<Output = Result<GlobalBatch, StoreError>> + Send {
        self.query(options)
    }
}

/// Pages through a query read with one [`EventQueryReader::query`] per page,
/// with the semantics of [`GlobalPager`](crate::store::GlobalPager) (it is the same
/// [`Pager`]). [`cursor`](Pager::cursor) at the end is the cursor to put in
/// the decision's [`AppendCondition`].
pub type QueryPager<'a, R> = Pager<'a, R, QueryOptions>;

/// "Fail if any event matching `query` was appended after `after`": the
/// consistency condition of a DCB decision, checked atomically with the
/// append it is given to ([`AppendOptions::with_condition`](crate::store::AppendOptions::with_condition)).
///
/// `after` is the `next` of the query read the decision was made on (the
/// [`Pager::cursor`] of the [`QueryPager`] once it ended). Events the append itself writes do
/// not count, nor do those of an idempotent retry (a retry returns the
/// original records, also when the condition no longer holds).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppendCondition {
    query: EventQuery,
    after: GlobalCursor,
}

impl AppendCondition {
    /// The append fails if an event matching `query` is after `after`.
    pub fn new(query: EventQuery, after: GlobalCursor) -> Self {
        Self { query, after }
    }

    /// The query.
    pub fn query(&self) -> &EventQuery {
        &self.query
    }

    /// The cursor the decision read up to.
    pub fn after(&self) -> GlobalCursor {
        self.after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Tag {
        Tag::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ty(s: &str) -> EventType {
        EventType::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn items_or_types_or_tags_and() {
        let item = QueryItem::new()
            .with_event_types([ty("A"), ty("B")])
            .with_tags([t("x"), t("y")]);
        assert!(item.matches(&ty("A"), &[t("x"), t("y"), t("z")]));
        assert!(item.matches(&ty("B"), &[t("x"), t("y")]));
        assert!(!item.matches(&ty("C"), &[t("x"), t("y")]));
        assert!(!item.matches(&ty("A"), &[t("x")]));
        let any_type = QueryItem::new().with_tags([t("x")]);
        assert!(any_type.matches(&ty("C"), &[t("x")]));
        assert!(QueryItem::new().matches(&ty("C"), &[]));
        let q = EventQuery::from(item).with_item(QueryItem::new().with_event_types([ty("C")]));
        assert!(q.matches(&ty("C"), &[]));
        assert!(!q.matches(&ty("A"), &[]));
        assert!(!EventQuery::new().matches(&ty("A"), &[]));
        assert!(EventQuery::all().matches(&ty("A"), &[]));
    }

    #[test]
    fn bounds() {
        let too_many: EventQuery = (0..=MAX_QUERY_ITEMS).map(|_| QueryItem::new()).collect();
        assert_eq!(
            too_many.validate(),
            Err(ValidationError::TooManyQueryItems {
                count: MAX_QUERY_ITEMS + 1
            })
        );
        let tags = (0..=MAX_TAGS_PER_EVENT).map(|i| t(&format!("t{i}")));
        let q = EventQuery::new()
            .with_item(QueryItem::new())
            .with_item(QueryItem::new().with_tags(tags));
        assert_eq!(
            q.validate(),
            Err(ValidationError::TooManyQueryTags {
                item: 1,
                count: MAX_TAGS_PER_EVENT + 1
            })
        );
        let types = (0..=MAX_FILTER_TYPES).map(|i| ty(&format!("T{i}")));
        let q = EventQuery::from(QueryItem::new().with_event_types(types));
        assert!(matches!(
            q.validate(),
            Err(ValidationError::TooManyFilterTypes { .. })
        ));
        let limit = QueryOptions::from_start(EventQuery::all(), 0).validate();
        assert_eq!(limit, Err(ValidationError::InvalidLimit { limit: 0 }));
    }
}
