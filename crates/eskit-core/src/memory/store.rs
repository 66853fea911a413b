use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::dcb::{AppendCondition, EventQueryReader, QueryOptions};
use crate::error::{LifecycleOp, StoreError};
use crate::event::{AppendResult, EventRecord, NewEvent, RawEvent};
use crate::feed::{CommitFeed, CommitNotifier, FeedError, Listener};
use crate::id::EventId;
use crate::metadata::validate_idempotency_key;
use crate::name::{NameKind, StreamName, TenantId, validate_name};
use crate::retry::idempotent_retry;
use crate::rt::yield_now;
use crate::store::{
    AppendOptions, CheckpointStore, EventStore, GlobalBatch, GlobalReader, LoadOptions,
    ReadOptions, Snapshot, SnapshotStore, StreamLifecycle, StreamState, StreamStatus, TenantScoped,
    validate_append, validate_cursor, validate_reason,
};
use crate::time::Timestamp;
use crate::version::{ExpectedVersion, GlobalCursor, Position, Version};

/// An event store kept in memory. Cloning shares the same data.
///
/// Implements [`EventStore`], [`GlobalReader`], [`EventQueryReader`] and
/// [`StreamLifecycle`] with
/// the same semantics as the durable backends, including idempotency keys and
/// a global sequence that is never reused.
///
/// Every operation yields to the executor once before it runs (see
/// [`yield_now`](crate::rt::yield_now)), so that concurrent tasks on one thread
/// interleave between operations as they would against a real backend.
///
/// ```
/// use eskit_core::{event::{EventType, ExpectedVersion, NewEvent, StreamName}, memory::MemoryStore, rt::block_on, store::{AppendOptions, EventStore, LoadOptions}};
/// let store = MemoryStore::new();
/// let stream = StreamName::new("account", "a-1")?;
/// let event = NewEvent::new(EventType::new("Opened")?, b"{}".to_vec());
/// block_on(store.append(&stream, ExpectedVersion::NoStream, vec![event], AppendOptions::new()))?;
/// let events = block_on(store.load(&stream, LoadOptions::new()))?;
/// assert_eq!(events.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    /// The tenant this handle sees ([`TenantScoped`]); `None` when unscoped.
    tenant: Option<TenantId>,
}

#[derive(Debug, Default)]
struct Shared {
    data: Mutex<Inner>,
    feed: CommitNotifier,
    /// The snapshots [`MemoryStore::snapshots`] hands out; a hard delete
    /// removes the stream's, as the durable backends do.
    snapshots: MemorySnapshotStore,
    /// Set by [`MemoryStore::close`]; every later operation fails.
    closed: AtomicBool,
}

impl Drop for Shared {
    /// The last handle is gone: listeners learn that no commit will come.
    fn drop(&mut self) {
        self.feed.close();
    }
}

#[derive(Debug, Default)]
struct Inner {
    last_position: u64,
    log: Vec<Arc<RawEvent>>,
    streams: HashMap<StreamName, StreamData>,
    /// The ids of every stored event: ids are unique across streams.
    ids: HashSet<EventId>,
}

#[derive(Debug)]
struct StreamData {
    /// The tenant that owns the stream, fixed by its first append.
    tenant: Option<TenantId>,
    events: Vec<Arc<RawEvent>>,
    version: Version,
    state: StreamState,
    reason: Option<String>,
    changed_at: Option<Timestamp>,
    idempotency: HashMap<String, (Vec<NewEvent>, Vec<EventRecord>)>,
}

impl StreamData {
    fn new(tenant: Option<TenantId>) -> Self {
        Self {
            tenant,
            events: Vec::new(),
            version: Version::ZERO,
            state: StreamState::Active,
            reason: None,
            changed_at: None,
            idempotency: HashMap::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the data half-written: every
    // mutation below is completed before anything that could panic runs.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot store of this store's data: every call returns a handle
    /// to the same snapshots, and [`StreamLifecycle::delete`] removes the
    /// deleted stream's snapshot from it, as the durable backends do (a
    /// [`MemorySnapshotStore::new`] of its own knows nothing of deletes).
    ///
    /// ```
    /// use eskit_core::{event::{EventType, ExpectedVersion, NewEvent, StreamName, Timestamp, Version}, memory::MemoryStore, rt::block_on, store::{AppendOptions, EventStore, Snapshot, SnapshotStore, StreamLifecycle}};
    /// let store = MemoryStore::new();
    /// let snapshots = store.snapshots();
    /// let s = StreamName::new("account", "a-1")?;
    /// let opened = NewEvent::new(EventType::new("Opened")?, vec![]);
    /// block_on(store.append(&s, ExpectedVersion::NoStream, vec![opened], AppendOptions::new()))?;
    /// block_on(snapshots.save(Snapshot {
    ///     stream: s.clone(),
    ///     version: Version::new(1),
    ///     schema_version: 1,
    ///     codec: "raw".into(),
    ///     state: vec![1],
    ///     created_at: Timestamp::now(),
    /// }))?;
    /// block_on(store.delete(&s))?;
    /// assert!(block_on(snapshots.load(&s))?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshots(&self) -> MemorySnapshotStore {
        MemorySnapshotStore {
            inner: Arc::clone(&self.shared.snapshots.inner),
            tenant: self.tenant.clone(),
            owners: Some(Arc::downgrade(&self.shared)),
        }
    }

    /// The stream's data, if it exists and this handle's tenant owns it.
    fn visible<'a>(&self, inner: &'a Inner, stream: &StreamName) -> Option<&'a StreamData> {
        inner
            .streams
            .get(stream)
            .filter(|d| d.tenant == self.tenant)
    }

    /// Closes the store for every handle (every clone): later operations
    /// on any of them fail with [`StoreError::Closed`], and the commit
    /// feed's listeners end with [`FeedError::Closed`]. The data is dropped
    /// with the last handle. Closing again does nothing.
    ///
    /// An operation that already started finishes; one that starts after
    /// this returns fails.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.feed.close();
    }

    /// Whether [`close`](Self::close) was called on any handle.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    fn append_sync(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        validate_append(&events, &options)?;
        let mut inner = lock(&self.shared.data);
        let Inner {
            last_position,
            log,
            streams,
            ids,
        } = &mut *inner;
        let data = streams
            .entry(stream.clone())
            .or_insert_with(|| StreamData::new(self.tenant.clone()));
        if data.tenant != self.tenant {
            return Err(StoreError::WrongTenant {
                stream: stream.clone(),
            });
        }
        let key = options.idempotency_key().map(str::to_owned);
        if let Some(key) = &key
            && let Some((previous, records)) = data.idempotency.get(key)
        {
            return idempotent_retry(stream, key, previous, &events, self.tenant.as_ref(), || {
                records.clone()
            });
        }
        data.state.check_append(stream)?;
        if !expected.matches(data.version) {
            let actual = data.version;
            if data.events.is_empty() && data.version == Version::ZERO {
                streams.remove(stream);
            }
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        // Checked under the same lock (and, as on SQLite, before event ids) as the write, so no append can come
        // between the check and the events.
        if let Some(cursor) = options
            .condition()
            .and_then(|c| first_match(log, c, self.tenant.as_ref()))
        {
            if data.events.is_empty() && data.version == Version::ZERO {
                streams.remove(stream);
            }
            return Err(StoreError::ConditionFailed { cursor });
        }
        // After the idempotency check: a retry with the original ids is
        // deduplicated, not refused. SQLite finds a reused id only when it
        // writes, after every other check: so does this store.
        if let Some(e) = events.iter().find(|e| ids.contains(&e.id())) {
            let id = e.id();
            if data.events.is_empty() && data.version == Version::ZERO {
                streams.remove(stream);
            }
            return Err(StoreError::DuplicateEventId { id });
        }
        let count = events.len() as u64;
        let overflow = || StoreError::internal("version or position overflow");
        data.version.add(count).ok_or_else(overflow)?;
        last_position.checked_add(count).ok_or_else(overflow)?;
        let timestamp = options.timestamp().unwrap_or_else(Timestamp::now);
        let metadata = options.stored_metadata();
        let kept = key.as_ref().map(|_| events.clone());
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            data.version = Version::new(data.version.get() + 1);
            *last_position += 1;
            let raw = Arc::new(
                RawEvent::from_new(
                    event,
                    stream.clone(),
                    data.version,
                    Position::new(*last_position),
                    timestamp,
                    metadata.clone(),
                )
                .with_tenant(self.tenant.clone()),
            );
            records.push(raw.record());
            ids.insert(raw.id);
            data.events.push(Arc::clone(&raw));
            log.push(raw);
        }
        if let (Some(key), Some(kept)) = (key, kept) {
            data.idempotency.insert(key, (kept, records.clone()));
        }
        Ok(AppendResult {
            records,
            deduplicated: false,
            tenant: self.tenant.clone(),
        })
    }

    fn transition(
        &self,
        stream: &StreamName,
        op: LifecycleOp,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(r) = reason {
            validate_reason(r)?;
        }
        let mut inner = lock(&self.shared.data);
        let Inner {
            last_position,
            log,
            streams,
            ids,
        } = &mut *inner;
        let Some(data) = streams.get_mut(stream).filter(|d| d.tenant == self.tenant) else {
            return StreamState::NotFound.transition(stream, op).map(|_| ());
        };
        data.state = data.state.transition(stream, op)?;
        data.changed_at = Some(Timestamp::now());
        match op {
            LifecycleOp::Tombstone | LifecycleOp::Archive => {
                data.reason = reason.map(str::to_owned);
            }
            LifecycleOp::Restore => data.reason = None,
            LifecycleOp::Delete => {
                // The deleted events' ids are free again, as in a database
                // whose unique index loses the deleted rows.
                for e in &data.events {
                    ids.remove(&e.id);
                }
                data.events.clear();
                data.idempotency.clear();
                log.retain(|e| &e.stream != stream);
                // Under the data lock, so no load sees the events gone and
                // the snapshot still there. Snapshot calls never take the
                // data lock, so the order cannot deadlock.
                lock(&self.shared.snapshots.inner).remove(&(data.tenant.clone(), stream.clone()));
            }
        }
        let latest = Position::new(*last_position);
        drop(inner);
        self.shared.feed.notify(latest);
        Ok(())
    }
}

impl TenantScoped for MemoryStore {
    fn for_tenant(&self, tenant: TenantId) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            tenant: Some(tenant),
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }
}

impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        yield_now().await;
        self.check_open()?;
        let result = self.append_sync(stream, expected, events, options)?;
        if !result.deduplicated {
            self.shared.feed.notify(result.last_position());
        }
        Ok(result)
    }

    async fn load(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RawEvent>, StoreError> {
        yield_now().await;
        self.check_open()?;
        options.validate()?;
        let inner = lock(&self.shared.data);
        let Some(data) = self.visible(&inner, stream) else {
            return Ok(Vec::new());
        };
        let start = options
            .from()
            .map_or(0, |v| v.get().saturating_sub(1))
            .min(data.events.len() as u64) as usize;
        Ok(data.events[start..]
            .iter()
            .filter(|e| options.matches(e.version, &e.event_type))
            .take(options.limit().unwrap_or(usize::MAX))
            .map(|e| RawEvent::clone(e))
            .collect())
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        yield_now().await;
        self.check_open()?;
        let inner = lock(&self.shared.data);
        Ok(self
            .visible(&inner, stream)
            .filter(|d| d.state != StreamState::Deleted)
            .map_or(Version::ZERO, |d| d.version))
    }

    async fn find_idempotent(
        &self,
        stream: &StreamName,
        key: &str,
    ) -> Result<Option<Vec<RawEvent>>, StoreError> {
        yield_now().await;
        validate_idempotency_key(key)?;
        let inner = lock(&self.shared.data);
        let Some(data) = self.visible(&inner, stream) else {
            return Ok(None);
        };
        let Some((_, records)) = data.idempotency.get(key) else {
            return Ok(None);
        };
        // Versions start at 1 and a stream's events are only ever removed
        // all together, with its keys: version `v` is at index `v - 1`.
        records
            .iter()
            .map(|r| {
                usize::try_from(r.version.get().wrapping_sub(1))
                    .ok()
                    .and_then(|i| data.events.get(i))
                    .map(|e| RawEvent::clone(e))
                    .ok_or_else(|| StoreError::Corrupt {
                        detail: format!(
                            "idempotency key of stream {} names missing version {}",
                            stream.quoted(),
                            r.version
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

impl GlobalReader for MemoryStore {
    /// Reads under the store's lock, so everything up to the newest assigned
    /// position has committed: the horizon is that position.
    async fn read(&self, options: ReadOptions) -> Result<GlobalBatch, StoreError> {
        yield_now().await;
        self.check_open()?;
        options.validate()?;
        let inner = lock(&self.shared.data);
        let after = options.after();
        // Cursors of this store have transaction key 0; one with a larger key
        // lies past every event.
        let start = if after.tx() > 0 {
            inner.log.len()
        } else {
            inner
                .log
                .partition_point(|e| e.position <= after.position())
        };
        let events = inner.log[start..]
            .iter()
            .filter(|e| e.tenant == self.tenant && options.matches(&e.stream, &e.event_type))
            .take(options.limit())
            .map(|e| RawEvent::clone(e))
            .collect();
        Ok(GlobalBatch::by_position(
            &options,
            events,
            Position::new(inner.last_position),
        ))
    }

    async fn head(&self) -> Result<GlobalCursor, StoreError> {
        yield_now().await;
        self.check_open()?;
        Ok(GlobalCursor::at(Position::new(
            lock(&self.shared.data).last_position,
        )))
    }
}

/// Where the log's events after `after` start (this store's cursors have
/// transaction key 0; one with a larger key lies past every event).
fn start_after(log: &[Arc<RawEvent>], after: GlobalCursor) -> usize {
    if after.tx() > 0 {
        log.len()
    } else {
        log.partition_point(|e| e.position <= after.position())
    }
}

/// The cursor of the first event after the condition's cursor that matches
/// its query.
fn first_match(
    log: &[Arc<RawEvent>],
    condition: &AppendCondition,
    tenant: Option<&TenantId>,
) -> Option<GlobalCursor> {
    log[start_after(log, condition.after())..]
        .iter()
        .find(|e| e.tenant.as_ref() == tenant && condition.query().matches_event(e))
        .map(|e| e.cursor())
}

impl EventQueryReader for MemoryStore {
    /// Reads under the store's lock, like [`GlobalReader::read`]: the
    /// horizon is the newest assigned position.
    async fn query(&self, options: QueryOptions) -> Result<GlobalBatch, StoreError> {
        yield_now().await;
        options.validate()?;
        let inner = lock(&self.shared.data);
        let events = inner.log[start_after(&inner.log, options.after())..]
            .iter()
            .filter(|e| e.tenant == self.tenant && options.query().matches_event(e))
            .take(options.limit())
            .map(|e| RawEvent::clone(e))
            .collect();
        Ok(GlobalBatch::query_by_position(
            &options,
            events,
            Position::new(inner.last_position),
        ))
    }
}

impl CommitFeed for MemoryStore {
    /// Listens to every commit of the store; a tenant-scoped handle's
    /// listener is [`for_part_of_the_feed`](Listener::for_part_of_the_feed).
    fn listen(&self) -> Result<Listener, FeedError> {
        self.shared.feed.listen_as(self.tenant.as_ref())
    }
}

impl StreamLifecycle for MemoryStore {
    async fn tombstone(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        yield_now().await;
        self.check_open()?;
        self.transition(stream, LifecycleOp::Tombstone, Some(reason))
    }

    async fn archive(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        yield_now().await;
        self.check_open()?;
        self.transition(stream, LifecycleOp::Archive, Some(reason))
    }

    async fn restore(&self, stream: &StreamName) -> Result<(), StoreError> {
        yield_now().await;
        self.check_open()?;
        self.transition(stream, LifecycleOp::Restore, None)
    }

    async fn delete(&self, stream: &StreamName) -> Result<(), StoreError> {
        yield_now().await;
        self.check_open()?;
        self.transition(stream, LifecycleOp::Delete, None)
    }

    async fn status(&self, stream: &StreamName) -> Result<StreamStatus, StoreError> {
        yield_now().await;
        self.check_open()?;
        let inner = lock(&self.shared.data);
        Ok(self
            .visible(&inner, stream)
            .map_or_else(StreamStatus::not_found, |d| StreamStatus {
                state: d.state,
                version: d.version,
                reason: d.reason.clone(),
                changed_at: d.changed_at,
            }))
    }
}

/// A key within one tenant's data (`None`: no tenant).
type TenantKey<K> = (Option<TenantId>, K);

/// A snapshot store kept in memory. Cloning shares the same data.
///
/// [`MemorySnapshotStore::new`] makes one on its own; use
/// [`MemoryStore::snapshots`] for one that a hard delete of the store's
/// streams keeps in step with.
#[derive(Debug, Clone, Default)]
pub struct MemorySnapshotStore {
    inner: Arc<Mutex<HashMap<TenantKey<StreamName>, Snapshot>>>,
    tenant: Option<TenantId>,
    /// The event store whose streams' tenants a save checks (from
    /// [`MemoryStore::snapshots`]); weak, as the store holds this one.
    owners: Option<std::sync::Weak<Shared>>,
}

impl MemorySnapshotStore {
    /// An empty snapshot store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many snapshots this handle's tenant has stored.
    pub fn len(&self) -> usize {
        lock(&self.inner)
            .keys()
            .filter(|(t, _)| *t == self.tenant)
            .count()
    }

    /// Whether this handle's tenant has no snapshot stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key(&self, stream: &StreamName) -> (Option<TenantId>, StreamName) {
        (self.tenant.clone(), stream.clone())
    }
}

impl TenantScoped for MemorySnapshotStore {
    fn for_tenant(&self, tenant: TenantId) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            tenant: Some(tenant),
            owners: self.owners.clone(),
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }
}

impl SnapshotStore for MemorySnapshotStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        yield_now().await;
        snapshot.validate()?;
        if let Some(shared) = self.owners.as_ref().and_then(std::sync::Weak::upgrade) {
            let owner = lock(&shared.data)
                .streams
                .get(&snapshot.stream)
                .map(|d| d.tenant.clone());
            if owner.is_some_and(|o| o != self.tenant) {
                return Err(StoreError::WrongTenant {
                    stream: snapshot.stream,
                });
            }
        }
        lock(&self.inner).insert(self.key(&snapshot.stream), snapshot);
        Ok(())
    }

    async fn load(&self, stream: &StreamName) -> Result<Option<Snapshot>, StoreError> {
        yield_now().await;
        Ok(lock(&self.inner).get(&self.key(stream)).cloned())
    }

    async fn invalidate(&self, stream: &StreamName) -> Result<(), StoreError> {
        yield_now().await;
        lock(&self.inner).remove(&self.key(stream));
        Ok(())
    }

    async fn invalidate_all(&self) -> Result<(), StoreError> {
        yield_now().await;
        lock(&self.inner).retain(|(t, _), _| *t != self.tenant);
        Ok(())
    }
}

/// A checkpoint store kept in memory. Cloning shares the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryCheckpointStore {
    inner: Arc<Mutex<HashMap<TenantKey<String>, GlobalCursor>>>,
    tenant: Option<TenantId>,
}

impl MemoryCheckpointStore {
    /// An empty checkpoint store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TenantScoped for MemoryCheckpointStore {
    fn for_tenant(&self, tenant: TenantId) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            tenant: Some(tenant),
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        yield_now().await;
        validate_name(NameKind::Checkpoint, name)?;
        Ok(lock(&self.inner)
            .get(&(self.tenant.clone(), name.to_owned()))
            .copied())
    }

    async fn save(&self, name: &str, cursor: GlobalCursor) -> Result<(), StoreError> {
        yield_now().await;
        validate_name(NameKind::Checkpoint, name)?;
        validate_cursor(cursor)?;
        lock(&self.inner).insert((self.tenant.clone(), name.to_owned()), cursor);
        Ok(())
    }
}
