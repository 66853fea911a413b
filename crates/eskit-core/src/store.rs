//! The backend traits: bytes-level event store, global reader, stream
//! lifecycle, snapshots, checkpoints and locks, with their options.
//!
//! Every trait uses static dispatch with `Send` futures; [`crate::store`]
//! has object-safe twins for runtime-chosen backends.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::dcb::AppendCondition;
use crate::error::{LifecycleOp, StoreError, ValidationError};
use crate::event::{AppendResult, NewEvent, RawEvent};
use crate::id::EventId;
use crate::limits::{
    MAX_APPEND_BYTES, MAX_EVENTS_PER_APPEND, MAX_FILTER_TYPES, MAX_PAYLOAD_BYTES, MAX_POSITION,
    MAX_READ_LIMIT, MAX_REASON_BYTES, MAX_SNAPSHOT_BYTES,
};
use crate::metadata::{Metadata, validate_idempotency_key};
use crate::name::{EventType, NameKind, StreamName, StreamType, TenantId, validate_name};
use crate::time::Timestamp;
use crate::version::{ExpectedVersion, GlobalCursor, Position, Version};

/// Options of one append. The default appends with the current time, no
/// metadata and no idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendOptions {
    idempotency_key: Option<String>,
    timestamp: Option<Timestamp>,
    metadata: Metadata,
    condition: Option<AppendCondition>,
}

impl AppendOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deduplicates retries: a later append to the same stream with the same
    /// key and the same events writes nothing and returns the original
    /// records; with different events it fails with
    /// [`StoreError::IdempotencyConflict`]. The key is also stored in the
    /// events' metadata.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Records the events with this timestamp instead of the current time
    /// (imports, migrations).
    #[must_use]
    pub fn with_timestamp(mut self, t: Timestamp) -> Self {
        self.timestamp = Some(t);
        self
    }

    /// Metadata applied to every event of the append.
    #[must_use]
    pub fn with_metadata(mut self, m: Metadata) -> Self {
        self.metadata = m;
        self
    }

    /// Appends only if no event matching the condition's query was
    /// appended after its cursor (DCB), checked atomically with the write;
    /// otherwise fails with [`StoreError::ConditionFailed`] and writes
    /// nothing. Combines with the expected version: both must hold.
    #[must_use]
    pub fn with_condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }

    /// The append condition, if any.
    pub fn condition(&self) -> Option<&AppendCondition> {
        self.condition.as_ref()
    }

    /// The idempotency key, from the options or else from the metadata.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key
            .as_deref()
            .or_else(|| self.metadata.idempotency_key())
    }

    /// The custom timestamp, if any.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata to store with each event: the given metadata with the
    /// idempotency key of the options (which wins over one in the metadata).
    pub fn stored_metadata(&self) -> Metadata {
        match &self.idempotency_key {
            Some(k) if self.metadata.idempotency_key() != Some(k) => {
                self.metadata.clone().with_idempotency_key(k.clone())
            }
            _ => self.metadata.clone(),
        }
    }
}

/// Which events of one stream a load returns. The default returns all of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadOptions {
    from: Option<Version>,
    to: Option<Version>,
    event_types: Vec<EventType>,
    limit: Option<usize>,
}

impl LoadOptions {
    /// All events.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events with version `>= v`.
    #[must_use]
    pub fn with_from(mut self, v: Version) -> Self {
        self.from = Some(v);
        self
    }

    /// Only events with version `<= v`.
    #[must_use]
    pub fn with_to(mut self, v: Version) -> Self {
        self.to = Some(v);
        self
    }

    /// Only events of these types.
    #[must_use]
    pub fn with_event_types(mut self, types: impl IntoIterator<Item = EventType>) -> Self {
        self.event_types = types.into_iter().collect();
        self
    }

    /// At most `n` events (after the other filters).
    #[must_use]
    pub fn with_limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// The first version wanted, if bounded.
    pub fn from(&self) -> Option<Version> {
        self.from
    }

    /// The last version wanted, if bounded.
    pub fn to(&self) -> Option<Version> {
        self.to
    }

    /// The event types wanted; empty means all.
    pub fn event_types(&self) -> &[EventType] {
        &self.event_types
    }

    /// The limit, if any.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Whether an event passes the version range and type filter (not the limit).
    pub fn matches(&self, version: Version, event_type: &EventType) -> bool {
        self.from.is_none_or(|f| version >= f)
            && self.to.is_none_or(|t| version <= t)
            && (self.event_types.is_empty() || self.event_types.contains(event_type))
    }

    /// Checks the options' bounds.
    ///
    /// # Errors
    /// [`ValidationError`] for an empty range, a zero limit or too many types.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let (Some(from), Some(to)) = (self.from, self.to)
            && to < from
        {
            return Err(ValidationError::InvalidVersionRange { from, to });
        }
        if self.limit == Some(0) {
            return Err(ValidationError::InvalidLimit { limit: 0 });
        }
        if self.event_types.len() > MAX_FILTER_TYPES {
            return Err(ValidationError::TooManyFilterTypes {
                count: self.event_types.len(),
            });
        }
        Ok(())
    }
}

/// Which events a global read returns: those strictly after a cursor, at
/// most `limit`, optionally only some event types or one stream type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    after: GlobalCursor,
    limit: usize,
    event_types: Vec<EventType>,
    stream_type: Option<StreamType>,
}

impl ReadOptions {
    /// Events strictly after `after` in cursor order, at most `limit` of them.
    pub fn new(after: GlobalCursor, limit: usize) -> Self {
        Self {
            after,
            limit,
            event_types: Vec::new(),
            stream_type: None,
        }
    }

    /// Events from the start of the log, at most `limit` of them.
    pub fn from_start(limit: usize) -> Self {
        Self::new(GlobalCursor::START, limit)
    }

    /// Only events of these types (the filter runs in the backend).
    #[must_use]
    pub fn with_event_types(mut self, types: impl IntoIterator<Item = EventType>) -> Self {
        self.event_types = types.into_iter().collect();
        self
    }

    /// Only events of streams of this type.
    #[must_use]
    pub fn with_stream_type(mut self, t: StreamType) -> Self {
        self.stream_type = Some(t);
        self
    }

    /// The same filters, after another cursor.
    #[must_use]
    pub fn with_after(mut self, after: GlobalCursor) -> Self {
        self.after = after;
        self
    }

    /// The cursor the read starts after (exclusive).
    pub fn after(&self) -> GlobalCursor {
        self.after
    }

    /// The most events returned.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Event types wanted; empty means all.
    pub fn event_types(&self) -> &[EventType] {
        &self.event_types
    }

    /// The stream type wanted, if any.
    pub fn stream_type(&self) -> Option<&StreamType> {
        self.stream_type.as_ref()
    }

    /// Whether an event passes the filters (not the cursor or limit).
    pub fn matches(&self, stream: &StreamName, event_type: &EventType) -> bool {
        self.stream_type
            .as_ref()
            .is_none_or(|t| stream.stream_type() == t)
            && (self.event_types.is_empty() || self.event_types.contains(event_type))
    }

    /// Checks the bounds.
    ///
    /// # Errors
    /// [`ValidationError::InvalidLimit`] unless `1 <= limit <= MAX_READ_LIMIT`;
    /// [`ValidationError::TooManyFilterTypes`] for an oversized filter.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.limit == 0 || self.limit > MAX_READ_LIMIT {
            return Err(ValidationError::InvalidLimit { limit: self.limit });
        }
        if self.event_types.len() > MAX_FILTER_TYPES {
            return Err(ValidationError::TooManyFilterTypes {
                count: self.event_types.len(),
            });
        }
        Ok(())
    }
}

/// One page of a global read: the events, where to resume, and the head.
///
/// # The read contract
/// - `events` are in strictly increasing cursor order, all after the read's
///   cursor, and pass its filters.
/// - **Gap safety**: no event at or before [`next`](Self::next) can still
///   appear. A backend never returns an event while an event before it in
///   cursor order can still commit, and `next` moves past everything it
///   scanned: filtered-out events, holes left by deletes and rollbacks. A
///   subscriber resumes from `next` and never waits on a hole.
/// - `next` is at least the read's cursor and at least every returned
///   event's cursor.
/// - [`head`](Self::head) is the newest cursor the backend had committed
///   when it read; `next >= head` means the reader had caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalBatch<T = RawEvent> {
    /// The events, in cursor order.
    pub events: Vec<T>,
    /// Where the next read resumes (exclusive); store it as the checkpoint
    /// once the events are processed.
    pub next: GlobalCursor,
    /// The newest committed cursor the backend saw.
    pub head: GlobalCursor,
}

impl<T> GlobalBatch<T> {
    /// Whether the reader had caught up with the head when it read.
    pub fn is_caught_up(&self) -> bool {
        self.next >= self.head
    }

    /// The same page with its events mapped (decoded, filtered).
    pub fn map_events<U>(self, f: impl FnOnce(Vec<T>) -> Vec<U>) -> GlobalBatch<U> {
        GlobalBatch {
            events: f(self.events),
            next: self.next,
            head: self.head,
        }
    }
}

impl GlobalBatch {
    /// A page built by a backend ordered by position alone, from the events
    /// that passed the filters and the highest position it could see (its
    /// horizon: everything at or below it has committed, nothing more will
    /// commit there). Applies the contract: when the page is full, `next` is
    /// its last event; otherwise the read scanned up to the horizon.
    pub fn by_position(options: &ReadOptions, events: Vec<RawEvent>, horizon: Position) -> Self {
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

/// The options of a paged read ([`ReadOptions`], a DCB query's
/// `QueryOptions`): where it resumes and how many events a page holds.
pub trait PageOptions: Clone + Send + Sync {
    /// The cursor the read starts after.
    fn after(&self) -> GlobalCursor;
    /// The same options, resuming after another cursor.
    #[must_use]
    fn with_after(self, after: GlobalCursor) -> Self;
    /// The most events one page holds.
    fn limit(&self) -> usize;
}

impl PageOptions for ReadOptions {
    fn after(&self) -> GlobalCursor {
        ReadOptions::after(self)
    }
    fn with_after(self, after: GlobalCursor) -> Self {
        ReadOptions::with_after(self, after)
    }
    fn limit(&self) -> usize {
        ReadOptions::limit(self)
    }
}

/// A reader that returns one page for options `O`: every [`GlobalReader`]
/// for [`ReadOptions`], every DCB query reader for its query options.
pub trait PageSource<O>: Send + Sync {
    /// One page after `options`' cursor.
    fn read_page(&self, options: O)
    -> impl Future<Output = Result<GlobalBatch, StoreError>> + Send;
}

impl<R: GlobalReader + ?Sized> PageSource<ReadOptions> for R {
    fn read_page(
        &self,
        options: ReadOptions,
    ) -> impl Future<Output = Result<GlobalBatch, StoreError>> + Send {
        self.read(options)
    }
}

/// The one paging loop over a cursor-ordered read: one read per page, each
/// resuming from the previous page's `next`. [`GlobalPager`] pages a global
/// read, `QueryPager` a DCB query read.
///
/// [`next_page`](Self::next_page) returns `None` once a page came back empty
/// without moving the cursor, or short and caught up with the head, so a
/// loop over it ends at the end of the log (as seen then).
#[derive(Debug)]
pub struct Pager<'a, R: ?Sized, O> {
    reader: &'a R,
    options: O,
    done: bool,
}

/// Pages through a global read with one [`GlobalReader::read`] per page,
/// resuming each from the previous page's `next`: the one paging loop.
///
/// [`next_page`](Self::next_page) returns `None` once a page came back empty
/// without moving the cursor or the reader had caught up with the head, so
/// a loop over it ends at the end of the log (as seen then).
///
/// ```
/// use eskit_core::{event::{EventType, ExpectedVersion, NewEvent, StreamName}, memory::MemoryStore, rt::block_on, store::{AppendOptions, EventStore, GlobalPager, ReadOptions}};
/// let store = MemoryStore::new();
/// let s = StreamName::new("counter", "c-1")?;
/// let events = (0..5).map(|_| NewEvent::new(EventType::new("Ticked").unwrap(), vec![])).collect();
/// block_on(store.append(&s, ExpectedVersion::Any, events, AppendOptions::new()))?;
/// let mut pager = GlobalPager::new(&store, ReadOptions::from_start(2));
/// let mut seen = 0;
/// while let Some(page) = block_on(pager.next_page())? {
///     seen += page.events.len();
/// }
/// assert_eq!(seen, 5);
/// assert_eq!(pager.cursor().position().get(), 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type GlobalPager<'a, R> = Pager<'a, R, ReadOptions>;

impl<'a, R: PageSource<O> + ?Sized, O: PageOptions> Pager<'a, R, O> {
    /// Pages through `reader` from `options`' cursor, with its limit and filters.
    pub fn new(reader: &'a R, options: O) -> Self {
        Self {
            reader,
            options,
            done: false,
        }
    }

    /// Where the next page resumes: the last page's `next`.
    pub fn cursor(&self) -> GlobalCursor {
        self.options.after()
    }

    /// The next page, or `None` at the end of the log. A page may hold no
    /// events yet move the cursor (a filtered read that matched nothing).
    ///
    /// # Errors
    /// The reader's error (the pager stays where it was, so the call can be
    /// repeated), or [`StoreError::Internal`] when a page moved the cursor
    /// back (a backend that broke the read contract).
    pub async fn next_page(&mut self) -> Result<Option<GlobalBatch>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let before = self.options.after();
        let page = self.reader.read_page(self.options.clone()).await?;
        if page.next < before {
            // A backend that broke the read contract, not damaged data.
            return Err(StoreError::internal(format!(
                "a paged read moved its cursor back from {before} to {}",
                page.next
            )));
        }
        self.options = self.options.clone().with_after(page.next);
        let partial = page.events.len() < self.options.limit();
        if (page.events.is_empty() && page.next == before) || (partial && page.is_caught_up()) {
            self.done = true;
            if page.events.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some(page))
    }

    /// Every remaining event, in cursor order.
    ///
    /// # Errors
    /// As [`next_page`](Self::next_page).
    pub async fn collect(self) -> Result<Vec<RawEvent>, StoreError> {
        Ok(self.collect_with_cursor().await?.0)
    }

    /// Every remaining event and the cursor the read ended at (for a DCB
    /// decision: the cursor its append condition names).
    ///
    /// # Errors
    /// As [`next_page`](Self::next_page).
    pub async fn collect_with_cursor(
        mut self,
    ) -> Result<(Vec<RawEvent>, GlobalCursor), StoreError> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page.events);
        }
        Ok((all, self.cursor()))
    }
}

/// Checks an append against every bound before a backend touches storage.
/// Every backend calls this first, so all reject the same inputs.
///
/// # Errors
/// The first [`ValidationError`] found.
pub fn validate_append(
    events: &[NewEvent],
    options: &AppendOptions,
) -> Result<(), ValidationError> {
    if events.is_empty() {
        return Err(ValidationError::NoEvents);
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(ValidationError::TooManyEvents {
            count: events.len(),
        });
    }
    let mut total = 0usize;
    for (index, e) in events.iter().enumerate() {
        let len = e.payload().len();
        if len > MAX_PAYLOAD_BYTES {
            return Err(ValidationError::PayloadTooLarge { index, len });
        }
        if e.schema_version() == 0 {
            return Err(ValidationError::ZeroSchemaVersion);
        }
        crate::tag::validate_tags(index, e.tags())?;
        validate_name(NameKind::Codec, e.codec())?;
        total = total.saturating_add(len);
    }
    if total > MAX_APPEND_BYTES {
        return Err(ValidationError::AppendTooLarge { len: total });
    }
    check_unique_ids(events)?;
    if let Some(key) = options.idempotency_key() {
        validate_idempotency_key(key)?;
    }
    if let Some(c) = options.condition() {
        c.query().validate()?;
        validate_cursor(c.after())?;
    }
    options.stored_metadata().validate()
}

/// Refuses two events of one append with the same id.
fn check_unique_ids(events: &[NewEvent]) -> Result<(), ValidationError> {
    if events.len() < 2 {
        return Ok(());
    }
    let mut ids: Vec<EventId> = events.iter().map(NewEvent::id).collect();
    ids.sort_unstable();
    match ids.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(ValidationError::DuplicateEventId { id: w[0] }),
        None => Ok(()),
    }
}

/// Checks a position or version against [`MAX_POSITION`].
///
/// # Errors
/// [`ValidationError::OutOfRange`].
pub fn validate_in_range(value: u64) -> Result<(), ValidationError> {
    if value > MAX_POSITION {
        return Err(ValidationError::OutOfRange { value });
    }
    Ok(())
}

/// Checks a tombstone or archive reason against [`MAX_REASON_BYTES`].
///
/// # Errors
/// [`ValidationError::ReasonTooLong`].
pub fn validate_reason(reason: &str) -> Result<(), ValidationError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(ValidationError::ReasonTooLong { len: reason.len() });
    }
    if reason.contains('\0') {
        return Err(ValidationError::ReasonContainsNul);
    }
    Ok(())
}

/// A store handle that can be narrowed to one tenant.
///
/// Every stream belongs to one tenant, or to none, from its first append
/// on. A handle scoped with [`for_tenant`](Self::for_tenant) sees and
/// writes only its tenant's streams; the unscoped handle only the streams
/// of no tenant. Seeing means: loads, versions, global and query reads,
/// snapshots and lifecycle operations of a stream owned by someone else
/// behave as for a stream that does not exist, and its events never appear
/// in a read. An append to such a stream fails with
/// [`StoreError::WrongTenant`] and writes nothing. Checkpoints are kept per
/// tenant: two tenants may use one checkpoint name.
///
/// Global positions are shared by all tenants, so a tenant's reads have
/// holes where other tenants' events stand; cursors and
/// [`GlobalBatch::head`] stay store-wide.
///
/// ```
/// use eskit_core::event::{EventType, NewEvent, StreamName, TenantId};
/// use eskit_core::memory::MemoryStore;
/// use eskit_core::store::{AppendOptions, EventStore, TenantScoped};
/// use eskit_core::event::ExpectedVersion;
/// # eskit_core::rt::block_on(async {
/// let store = MemoryStore::new();
/// let acme = store.for_tenant(TenantId::new("acme")?);
/// let order = StreamName::new("order", "o-1")?;
/// let placed = NewEvent::new(EventType::new("OrderPlaced")?, b"{}".to_vec());
/// acme.append(&order, ExpectedVersion::NoStream, vec![placed], AppendOptions::new()).await?;
///
/// // Another tenant (and the unscoped handle) does not see the stream.
/// let globex = store.for_tenant(TenantId::new("globex")?);
/// assert!(globex.load(&order, Default::default()).await?.is_empty());
/// assert!(store.load(&order, Default::default()).await?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub trait TenantScoped: Sized {
    /// A handle on the same store that sees and writes only `tenant`'s
    /// streams, reads and feed.
    #[must_use]
    fn for_tenant(&self, tenant: TenantId) -> Self;

    /// The tenant this handle is scoped to; `None` for an unscoped handle.
    fn tenant(&self) -> Option<&TenantId>;
}

/// The bytes-level event store every backend implements.
///
/// # Cancel safety
/// A dropped `append` future has either committed all of its events or none;
/// a backend documents how a caller finds out which (an idempotency key makes
/// the retry safe either way).
pub trait EventStore: Send + Sync {
    /// Appends events to one stream atomically, checking `expected` first.
    ///
    /// # Errors
    /// [`StoreError::WrongExpectedVersion`] on a conflict,
    /// [`StoreError::StreamDeleted`] / [`StoreError::StreamArchived`] for a
    /// closed stream, [`StoreError::IdempotencyConflict`] for a reused key,
    /// [`StoreError::DuplicateEventId`] for an event id already stored (an
    /// idempotent retry with the original ids is deduplicated instead),
    /// [`StoreError::Validation`] for inputs out of bounds (two events of
    /// the append with one id among them).
    fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send;

    /// Loads a stream's events in version order; a missing stream gives an
    /// empty list, not an error.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for invalid options, or a backend failure.
    fn load(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> impl Future<Output = Result<Vec<RawEvent>, StoreError>> + Send;

    /// Loads like [`load`](Self::load) and hands the events to `each` one by
    /// one, in version order; the first error `each` returns ends the load
    /// and is returned. A load that fails after some events (a damaged row
    /// further on) may have handed those to `each` first. For a fold that keeps nothing of an event once it
    /// has applied it (a command handler rebuilding its state): a backend
    /// that reads in batches overrides this so that only one batch is held
    /// at a time, not a list of the whole stream. The default loads the
    /// list first.
    ///
    /// # Errors
    /// As [`load`](Self::load), or the first error of `each`.
    fn load_each<F>(
        &self,
        stream: &StreamName,
        options: LoadOptions,
        mut each: F,
    ) -> impl Future<Output = Result<(), StoreError>> + Send
    where
        F: FnMut(RawEvent) -> Result<(), StoreError> + Send,
    {
        async move {
            for event in self.load(stream, options).await? {
                each(event)?;
            }
            Ok(())
        }
    }

    /// The version of the stream's last stored event, [`Version::ZERO`] when
    /// it has none (also after a hard delete, while
    /// [`StreamLifecycle::status`] keeps the last version the stream reached).
    ///
    /// # Errors
    /// A backend failure.
    fn stream_version(
        &self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<Version, StoreError>> + Send;

    /// The events the append to `stream` with idempotency key `key` wrote,
    /// as stored (ids, versions, positions, timestamps, metadata), in
    /// version order; `None` when no append to the stream used the key,
    /// or the stream was deleted since (a delete forgets its keys).
    ///
    /// A retry with the key returns these events' records; this is how a
    /// caller learns the original outcome of a keyed append without
    /// appending again (the command handler looks a key up before it
    /// decides).
    ///
    /// The default implementation loads the whole stream and keeps the
    /// events whose metadata carries the key (every keyed append stores its
    /// key there); backends override it with a lookup.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for an invalid key, or a backend failure.
    fn find_idempotent(
        &self,
        stream: &StreamName,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<RawEvent>>, StoreError>> + Send {
        async move {
            validate_idempotency_key(key)?;
            let events: Vec<RawEvent> = self
                .load(stream, LoadOptions::new())
                .await?
                .into_iter()
                .filter(|e| e.metadata.idempotency_key() == Some(key))
                .collect();
            Ok((!events.is_empty()).then_some(events))
        }
    }
}

/// Reads across all streams in global (cursor) order.
///
/// The contract subscriptions build on is [`GlobalBatch`]'s: events in cursor
/// order, and a resume cursor before which nothing can still appear. A
/// subscriber that stores `next` and resumes from it sees every event once,
/// also when writers commit concurrently and out of position order.
pub trait GlobalReader: Send + Sync {
    /// Events strictly after `options.after()`, in cursor order, at most
    /// `options.limit()`, passing the filters; with the resume cursor and head.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for invalid options, or a backend failure.
    fn read(
        &self,
        options: ReadOptions,
    ) -> impl Future<Output = Result<GlobalBatch, StoreError>> + Send;

    /// The newest committed cursor, [`GlobalCursor::START`] for an empty store.
    ///
    /// # Errors
    /// A backend failure.
    fn head(&self) -> impl Future<Output = Result<GlobalCursor, StoreError>> + Send;
}

/// The lifecycle state of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamState {
    /// The stream has never had events.
    NotFound,
    /// The stream accepts appends.
    Active,
    /// The stream is read-only until restored.
    Archived,
    /// The stream is closed for good; its events stay readable for audit.
    Tombstoned,
    /// The stream's events were removed; the stream stays closed.
    Deleted,
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotFound => "not found",
            Self::Active => "active",
            Self::Archived => "archived",
            Self::Tombstoned => "tombstoned",
            Self::Deleted => "deleted",
        })
    }
}

impl StreamState {
    /// Whether a stream in this state accepts appends (active, or not yet created).
    pub fn accepts_appends(self) -> bool {
        matches!(self, Self::Active | Self::NotFound)
    }

    /// The error an append to a stream in this state gets, if any. Every
    /// backend uses this so closed streams fail the same way everywhere.
    ///
    /// # Errors
    /// [`StoreError::StreamArchived`] or [`StoreError::StreamDeleted`].
    pub fn check_append(self, stream: &StreamName) -> Result<(), StoreError> {
        match self {
            Self::Archived => Err(StoreError::StreamArchived {
                stream: stream.clone(),
            }),
            Self::Tombstoned | Self::Deleted => Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            }),
            Self::Active | Self::NotFound => Ok(()),
        }
    }

    /// The state a lifecycle operation leads to from this state. The one
    /// table of allowed transitions every backend follows: active ->
    /// archived -> active (restore); active or archived -> tombstoned; any
    /// existing state -> deleted.
    ///
    /// # Errors
    /// [`StoreError::StreamNotFound`] for a stream that never existed,
    /// [`StoreError::InvalidLifecycle`] for a transition the table refuses.
    pub fn transition(
        self,
        stream: &StreamName,
        op: LifecycleOp,
    ) -> Result<StreamState, StoreError> {
        let next = match (self, op) {
            (Self::NotFound, _) => {
                return Err(StoreError::StreamNotFound {
                    stream: stream.clone(),
                });
            }
            (Self::Active | Self::Archived, LifecycleOp::Tombstone) => Self::Tombstoned,
            (Self::Active, LifecycleOp::Archive) => Self::Archived,
            (Self::Archived, LifecycleOp::Restore) => Self::Active,
            (Self::Active | Self::Archived | Self::Tombstoned, LifecycleOp::Delete) => {
                Self::Deleted
            }
            (state, operation) => {
                return Err(StoreError::InvalidLifecycle {
                    stream: stream.clone(),
                    state,
                    operation,
                });
            }
        };
        Ok(next)
    }
}

/// A stream's lifecycle state, its last version and why it last changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStatus {
    /// The state.
    pub state: StreamState,
    /// The last version the stream reached (kept after deletion).
    pub version: Version,
    /// The reason given with the last tombstone or archive.
    pub reason: Option<String>,
    /// When the state last changed away from active.
    pub changed_at: Option<Timestamp>,
}

impl StreamStatus {
    /// The status of a stream that never existed.
    pub fn not_found() -> Self {
        Self {
            state: StreamState::NotFound,
            version: Version::ZERO,
            reason: None,
            changed_at: None,
        }
    }
}

/// Stream lifecycle management. Transitions:
/// active -> archived -> active (restore); active or archived -> tombstoned;
/// any existing state -> deleted. Closed streams reject appends.
pub trait StreamLifecycle: Send + Sync {
    /// Closes the stream for good; its events stay readable.
    ///
    /// # Errors
    /// [`StoreError::StreamNotFound`], or [`StoreError::InvalidLifecycle`]
    /// when already tombstoned or deleted.
    fn tombstone(
        &self,
        stream: &StreamName,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes the stream read-only until [`restore`](Self::restore).
    ///
    /// # Errors
    /// [`StoreError::StreamNotFound`], or [`StoreError::InvalidLifecycle`]
    /// unless the stream is active.
    fn archive(
        &self,
        stream: &StreamName,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Re-opens an archived stream.
    ///
    /// # Errors
    /// [`StoreError::StreamNotFound`], or [`StoreError::InvalidLifecycle`]
    /// unless the stream is archived.
    fn restore(&self, stream: &StreamName) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the stream's events for good (and its snapshots where the
    /// backend keeps them). Global positions are never reused.
    ///
    /// # Errors
    /// [`StoreError::StreamNotFound`], or [`StoreError::InvalidLifecycle`]
    /// when already deleted.
    fn delete(&self, stream: &StreamName) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stream's lifecycle status.
    ///
    /// # Errors
    /// A backend failure.
    fn status(
        &self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<StreamStatus, StoreError>> + Send;
}

/// A stored snapshot of a stream's state, encoded as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream.
    pub stream: StreamName,
    /// The stream version the state includes.
    pub version: Version,
    /// Schema version of the state; a mismatch invalidates the snapshot.
    pub schema_version: u32,
    /// Name of the codec that encoded the state.
    pub codec: String,
    /// The encoded state.
    pub state: Vec<u8>,
    /// When it was taken.
    pub created_at: Timestamp,
}

impl Snapshot {
    /// Checks the snapshot's bounds.
    ///
    /// # Errors
    /// [`ValidationError`] for an oversized state, a zero schema version or a
    /// bad codec name.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.state.len() > MAX_SNAPSHOT_BYTES {
            return Err(ValidationError::SnapshotTooLarge {
                len: self.state.len(),
            });
        }
        if self.schema_version == 0 {
            return Err(ValidationError::ZeroSchemaVersion);
        }
        validate_in_range(self.version.get())?;
        validate_name(NameKind::Codec, &self.codec)?;
        Ok(())
    }
}

/// Stores one snapshot per stream.
pub trait SnapshotStore: Send + Sync {
    /// Saves a snapshot, replacing the stream's previous one.
    ///
    /// # Errors
    /// [`StoreError::Validation`], or a backend failure.
    fn save(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stream's snapshot, if any.
    ///
    /// # Errors
    /// A backend failure.
    fn load(
        &self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Removes the stream's snapshot; a missing one is not an error.
    ///
    /// # Errors
    /// A backend failure.
    fn invalidate(
        &self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes every snapshot (after a change to the state's shape or to `evolve`).
    ///
    /// # Errors
    /// A backend failure.
    fn invalidate_all(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Stores the cursor a named subscription has processed up to.
pub trait CheckpointStore: Send + Sync {
    /// The saved cursor, `None` when the subscription never saved one.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad name, or a backend failure.
    fn load(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<GlobalCursor>, StoreError>> + Send;

    /// Saves the cursor (a [`GlobalBatch::next`] the subscription has
    /// processed up to).
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad name or a cursor part above
    /// [`MAX_POSITION`], or a backend failure.
    fn save(
        &self,
        name: &str,
        cursor: GlobalCursor,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Checks a cursor's parts against [`MAX_POSITION`] (backends store them as
/// signed 64-bit integers).
///
/// # Errors
/// [`ValidationError::OutOfRange`].
pub fn validate_cursor(cursor: GlobalCursor) -> Result<(), ValidationError> {
    validate_in_range(cursor.tx())?;
    validate_in_range(cursor.position().get())
}

// Locks: guards, leases and fencing tokens. Their imports stay here, with the
// section they serve.
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A number handed out with every acquisition of a lock: each acquisition of
/// a key gets a larger token than every earlier acquisition of that key, by
/// any handle or process sharing the locks, also after the lock was released
/// or its holder died.
///
/// A holder passes its token with every write it makes under the lock, and
/// the resource written to refuses a token smaller than the largest it has
/// seen: a holder that lost its lease without noticing yet (a paused
/// process, a clock jump) is then fenced off by the next holder's first
/// write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FencingToken(u64);

impl FencingToken {
    /// The largest token a backend hands out (it fits a signed 64-bit
    /// column). A backend whose counter reached it refuses further
    /// acquisitions with an error rather than reuse a token.
    pub const MAX: Self = Self(i64::MAX as u64);

    /// Wraps a raw token.
    pub const fn new(token: u64) -> Self {
        Self(token)
    }

    /// The raw token.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for FencingToken {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// Why a lock's lease ended while its [`LockGuard`] was still alive.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LeaseLost {
    /// The lease ran out before a renewal extended it: the holder's
    /// renewals did not reach the store in time.
    Expired,
    /// The stored lease no longer names this guard: another holder took the
    /// key (after the lease looked expired to it, for instance because of a
    /// clock jump) or the lease was removed.
    TakenOver,
    /// The registry or its store was closed; nothing renews the lease.
    Closed,
    /// Renewing failed with this error, and the lease ran out before a
    /// later renewal succeeded.
    RenewalFailed(Arc<StoreError>),
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Expired => "the lock's lease expired",
            Self::TakenOver => "another holder took the lock",
            Self::Closed => "the lock registry is closed",
            Self::RenewalFailed(_) => "renewing the lock's lease failed",
        })
    }
}

impl std::error::Error for LeaseLost {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::RenewalFailed(e) => Some(&**e),
            _ => None,
        }
    }
}

/// The backend's side of one acquisition's lease: a backend makes one per
/// acquisition, gives a clone to [`LockGuard::new`], and calls
/// [`Lease::lose`] when the lock is lost. Clones share the same state.
#[derive(Clone, Default)]
pub struct Lease {
    state: Arc<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    /// Set once, together with `inner.reason`; read without the mutex.
    lost: AtomicBool,
    inner: Mutex<LeaseInner>,
}

#[derive(Default)]
struct LeaseInner {
    reason: Option<LeaseLost>,
    next_waiter: u64,
    waiters: Vec<(u64, Waker)>,
}

impl LeaseState {
    fn inner(&self) -> MutexGuard<'_, LeaseInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lease {
    /// A lease that is held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the lease lost and wakes every [`LockLost`] future. The first
    /// reason stays; returns whether this call ended the lease.
    pub fn lose(&self, reason: LeaseLost) -> bool {
        let waiters = {
            let mut inner = self.state.inner();
            if inner.reason.is_some() {
                return false;
            }
            inner.reason = Some(reason);
            self.state.lost.store(true, Ordering::Release);
            std::mem::take(&mut inner.waiters)
        };
        // Woken outside the mutex: a waker may run code that looks at the lease.
        for (_, w) in waiters {
            w.wake();
        }
        true
    }

    /// Whether [`lose`](Self::lose) was called.
    pub fn is_lost(&self) -> bool {
        self.state.lost.load(Ordering::Acquire)
    }

    /// Why the lease was lost, `None` while it is held.
    pub fn lost_reason(&self) -> Option<LeaseLost> {
        if !self.is_lost() {
            return None;
        }
        self.state.inner().reason.clone()
    }

    /// A future that completes when the lease is lost.
    pub fn lost(&self) -> LockLost {
        LockLost {
            state: Arc::clone(&self.state),
            waiter: None,
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("lost", &self.lost_reason())
            .finish()
    }
}

/// Completes with the reason when a lock's lease is lost; from
/// [`LockGuard::lost`]. It owns what it needs, so it can be moved into
/// another task, and it never completes while the lease is held.
///
/// # Cancel safety
/// Cancel safe: dropping it only stops watching, and a new one can be made
/// at any time (inside `select!` in a loop, for instance).
#[must_use = "futures do nothing unless polled"]
pub struct LockLost {
    state: Arc<LeaseState>,
    /// Our entry in the lease's waiter list once we waited.
    waiter: Option<u64>,
}

impl Future for LockLost {
    type Output = LeaseLost;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LeaseLost> {
        let this = &mut *self;
        let mut inner = this.state.inner();
        if let Some(reason) = &inner.reason {
            return Poll::Ready(reason.clone());
        }
        match this.waiter {
            Some(id) => {
                if let Some((_, w)) = inner.waiters.iter_mut().find(|(i, _)| *i == id) {
                    w.clone_from(cx.waker());
                }
            }
            None => {
                let id = inner.next_waiter;
                inner.next_waiter = inner.next_waiter.wrapping_add(1);
                inner.waiters.push((id, cx.waker().clone()));
                this.waiter = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for LockLost {
    fn drop(&mut self) {
        if let Some(id) = self.waiter {
            self.state.inner().waiters.retain(|(i, _)| *i != id);
        }
    }
}

impl fmt::Debug for LockLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockLost")
            .field("lost", &self.state.lost.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// Proof of a held lock; dropping it releases the lock.
///
/// A guard carries the acquisition's [`FencingToken`] and reports when its
/// lease is lost ([`is_held`](Self::is_held), [`lost`](Self::lost)). A
/// leader stops its work when [`lost`](Self::lost) completes and passes
/// [`fencing_token`](Self::fencing_token) with every write it makes as
/// leader.
///
/// # Clocks
/// Loss is reported when the holder's side notices it, which is not the
/// same instant everywhere: a backend whose leases expire by time (the
/// SQLite one compares wall-clock time across processes) hands the key to
/// the next holder once the lease looks expired to *that* holder. A paused
/// process, or a wall clock set forward, can make another holder take the
/// key before this guard reports the loss (each backend documents the
/// bound); a wall clock set back makes a dead holder's lease last longer.
/// [`is_held`](Self::is_held) is therefore the holder's belief, and the
/// fencing token is what keeps two holders' writes apart.
pub struct LockGuard {
    token: FencingToken,
    lease: Lease,
    _release: Box<dyn Send + Sync>,
}

impl LockGuard {
    /// A guard for an acquisition with this token, whose loss is reported
    /// through `lease`, holding a value whose `Drop` releases the lock.
    pub fn new(token: FencingToken, lease: Lease, release: impl Send + Sync + 'static) -> Self {
        Self {
            token,
            lease,
            _release: Box::new(release),
        }
    }

    /// This acquisition's fencing token.
    pub fn fencing_token(&self) -> FencingToken {
        self.token
    }

    /// Whether the lease is still held, as far as this process knows (see
    /// [Clocks](Self#clocks)).
    pub fn is_held(&self) -> bool {
        !self.lease.is_lost()
    }

    /// Why the lease was lost, `None` while it is held.
    pub fn lost_reason(&self) -> Option<LeaseLost> {
        self.lease.lost_reason()
    }

    /// A future that completes when the lease is lost; it never completes
    /// while the lock is held.
    ///
    /// ```
    /// use eskit_core::{memory::MemoryLockRegistry, rt::block_on, store::LockRegistry};
    /// use std::future::Future;
    /// use std::task::{Context, Waker};
    ///
    /// let locks = MemoryLockRegistry::new();
    /// let guard = block_on(locks.acquire("processor:mail"))?;
    /// let mut lost = std::pin::pin!(guard.lost());
    /// assert!(lost.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
    /// locks.close();
    /// assert!(!guard.is_held());
    /// println!("stopped: {}", block_on(lost));
    /// # Ok::<(), eskit_core::error::StoreError>(())
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe, see [`LockLost`].
    pub fn lost(&self) -> LockLost {
        self.lease.lost()
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("fencing_token", &self.token)
            .field("lost", &self.lease.lost_reason())
            .finish_non_exhaustive()
    }
}

/// Named mutual exclusion: per-stream single-writer locks and leader election
/// (one holder of `processor:<name>` runs the processor).
///
/// # Contract
/// - At most one guard of a key is held at a time across every handle and
///   process sharing the locks, as far as the holders' clocks agree (see
///   [`LockGuard#clocks`]).
/// - Each acquisition of a key gets a larger [`FencingToken`] than every
///   earlier one of that key, also after releases, restarts and expired
///   leases; tokens are never reused.
/// - A guard reports when its lease is lost: [`LockGuard::is_held`] turns
///   false and [`LockGuard::lost`] completes with a [`LeaseLost`] reason.
///   When a lease can be lost, and how soon the holder learns of it, is
///   each backend's to document.
pub trait LockRegistry: Send + Sync {
    /// Waits until the lock is held.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes never leaves the lock held.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad key, or a backend failure.
    fn acquire(&self, key: &str) -> impl Future<Output = Result<LockGuard, StoreError>> + Send;

    /// Takes the lock if free; `None` when another holder has it.
    ///
    /// # Errors
    /// [`StoreError::Validation`] for a bad key, or a backend failure.
    fn try_acquire(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<LockGuard>, StoreError>> + Send;
}
