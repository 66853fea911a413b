//! The typed layer: [`EventSchema`] turns domain events into [`NewEvent`]s and
//! [`RawEvent`]s back into [`RecordedEvent`]s (codecs, registry, upcasting),
//! and [`TypedStore`] puts it in front of any bytes-level backend.
//!
//! This is the one place where typing happens (design rule 2): backends only
//! ever see bytes.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::error::{CodecError, StoreError};
use crate::event::{EventHeader, EventRecord, Metadata, NewEvent, RawEvent, RecordedEvent};
use crate::limits::MAX_FILTER_TYPES;
use crate::name::{EventType, StreamName, TenantId};
use crate::store::{
    AppendOptions, EventStore, GlobalBatch, GlobalReader, LoadOptions, ReadOptions, TenantScoped,
};
use crate::tag::Tag;
use crate::version::{ExpectedVersion, Version};

pub use crate::codec::{Codec, CodecContext, DomainEvent, EventCodec};
pub use crate::dispatch::{DispatchError, Dispatched, Dispatcher};
pub use crate::registry::{EventRegistry, RegistryError, derive_type_name};
pub use crate::upcast::UpcasterRegistry;

/// How events of type `E` become bytes and back: one writer codec, any number
/// of reader codecs (selected by the codec name stored with each event), an
/// [`EventRegistry`] and an [`UpcasterRegistry`].
pub struct EventSchema<E> {
    writer: Arc<dyn EventCodec<E>>,
    readers: HashMap<&'static str, Arc<dyn EventCodec<E>>>,
    /// `readers`' entry for the writer's codec name, the codec most stored
    /// events name: found by comparing names, without a hash per event.
    writer_reader: Arc<dyn EventCodec<E>>,
    registry: EventRegistry,
    upcasters: UpcasterRegistry,
    /// `E::event_types()`, for O(1) "is this mine" checks.
    own: HashSet<&'static str>,
}

impl<E: 'static> fmt::Debug for EventSchema<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut readers: Vec<_> = self.readers.keys().collect();
        readers.sort();
        f.debug_struct("EventSchema")
            .field("writer", &self.writer.name())
            .field("readers", &readers)
            .field("registry", &self.registry)
            .field("upcasters", &self.upcasters)
            .finish()
    }
}

impl<E: DomainEvent> EventSchema<E> {
    /// A schema that writes and reads with `codec`.
    pub fn new(codec: impl EventCodec<E>) -> Self {
        let writer: Arc<dyn EventCodec<E>> = Arc::new(codec);
        let mut readers = HashMap::new();
        readers.insert(writer.name(), Arc::clone(&writer));
        Self {
            writer_reader: Arc::clone(&writer),
            writer,
            readers,
            registry: EventRegistry::new(),
            upcasters: UpcasterRegistry::new(),
            own: E::event_types().iter().copied().collect(),
        }
    }

    /// Every stored name that decodes into `E`: `E`'s wire names
    /// ([`DomainEvent::event_types`]) and the registry's legacy aliases of
    /// them, sorted. A subscription filters the backend by these.
    pub fn wire_names(&self) -> Vec<EventType> {
        let mut names: Vec<EventType> = E::event_types()
            .iter()
            .filter_map(|n| EventType::from_static(n).ok())
            .collect();
        for (legacy, target) in self.registry.aliases() {
            if self.own.contains(target.as_str())
                && let Ok(t) = EventType::new(legacy)
            {
                names.push(t);
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Whether an event stored under `event_type` is one of `E`'s (directly
    /// or through a legacy alias).
    pub fn is_mine(&self, event_type: &str) -> bool {
        self.registry
            .resolve(event_type)
            .is_some_and(|c| self.own.contains(c.as_str()))
    }

    /// Decodes a stored event if it is one of `E`'s; `Ok(None)` ("not mine")
    /// for any other type, so a global read over many event types can skip
    /// what it does not handle.
    ///
    /// # Errors
    /// As [`decode`](Self::decode), for an event of one of `E`'s types.
    pub fn decode_if_mine(&self, raw: RawEvent) -> Result<Option<RecordedEvent<E>>, CodecError> {
        if !self.is_mine(raw.event_type.as_str()) {
            return Ok(None);
        }
        self.decode(raw).map(Some)
    }

    /// Also reads events written with `codec` (multi-codec migration: keep the
    /// old codec as a reader, write with the new one).
    #[must_use]
    pub fn with_reader(mut self, codec: impl EventCodec<E>) -> Self {
        let codec: Arc<dyn EventCodec<E>> = Arc::new(codec);
        if codec.name() == self.writer.name() {
            self.writer_reader = Arc::clone(&codec);
        }
        self.readers.insert(codec.name(), codec);
        self
    }

    /// Uses `registry` for names, aliases and schema versions.
    #[must_use]
    pub fn with_registry(mut self, registry: EventRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Uses `upcasters` to bring old payloads to the current schema version.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: UpcasterRegistry) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// The registry.
    pub fn registry(&self) -> &EventRegistry {
        &self.registry
    }

    /// The name of the codec new events are written with.
    pub fn writer_codec(&self) -> &'static str {
        self.writer.name()
    }

    /// Encodes one event with the writer codec, for an append to `stream`
    /// that stores `metadata` with it (the codec sees both through a
    /// [`CodecContext`]; pass what the append will store,
    /// [`AppendOptions::stored_metadata`], so that decoding sees the same).
    ///
    /// # Errors
    /// [`CodecError::Encode`] whose source is the [`InvalidName`](crate::event::InvalidName)
    /// when the event's name is not a valid event type,
    /// [`CodecError::UnknownEventType`] when a non-empty registry does not
    /// know it (or knows it only as a legacy alias), or the codec's error.
    pub fn encode(
        &self,
        event: &E,
        stream: &StreamName,
        metadata: &Metadata,
    ) -> Result<NewEvent, CodecError> {
        self.encode_for(event, stream, None, metadata)
    }

    /// Encodes one event like [`encode`](Self::encode), for an append by a
    /// handle of `tenant` (the codec sees it in the [`CodecContext`], as
    /// decoding will: the stored event carries its stream's tenant).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn encode_for(
        &self,
        event: &E,
        stream: &StreamName,
        tenant: Option<&TenantId>,
        metadata: &Metadata,
    ) -> Result<NewEvent, CodecError> {
        let name = event.event_type();
        // Validate first: an invalid name is a bug in the event type, not
        // an unknown name, and must not be copied into the error.
        let ty = EventType::from_static(name).map_err(|e| CodecError::encode(None, e))?;
        // A name missing from `E::event_types()` would be stored but skipped
        // by every typed subscription filtering on that list.
        if !self.own.contains(name) {
            return Err(CodecError::UnknownEventType {
                event_type: name.to_owned(),
            });
        }
        if !self.registry.is_empty() && self.registry.resolve(name).is_none_or(|c| c != name) {
            return Err(CodecError::UnknownEventType {
                event_type: name.to_owned(),
            });
        }
        let cx = CodecContext::new(stream, name, metadata).with_tenant(tenant);
        let mut payload = Vec::new();
        self.writer.encode_with(event, &cx, &mut payload)?;
        Ok(NewEvent::new(ty, payload)
            .with_schema_version(self.registry.schema_version(name))
            .with_codec(self.writer.name()))
    }

    /// Decodes a stored event: resolves aliases, picks the codec by the stored
    /// codec name, upcasts to the current schema version, decodes (the codec
    /// and the upcasters see the event's stream and metadata through a
    /// [`CodecContext`]).
    ///
    /// # Errors
    /// [`CodecError`] for an unknown type or codec, a missing upcaster, or
    /// malformed bytes.
    pub fn decode(&self, raw: RawEvent) -> Result<RecordedEvent<E>, CodecError> {
        let canonical = self.registry.resolve_type(&raw.event_type).ok_or_else(|| {
            CodecError::UnknownEventType {
                event_type: raw.event_type.to_string(),
            }
        })?;
        // Most stored events carry the writer's codec: a comparison of two
        // short names instead of a hash lookup per event.
        let codec = if raw.codec.as_str() == self.writer.name() {
            &self.writer_reader
        } else {
            self.readers
                .get(raw.codec.as_str())
                .ok_or_else(|| CodecError::UnknownCodec {
                    codec: raw.codec.to_string(),
                })?
        };
        let target = self.registry.schema_version(canonical.as_str());
        let cx = CodecContext::new(&raw.stream, canonical.as_str(), &raw.metadata)
            .with_tenant(raw.tenant.as_ref());
        let payload = self.upcasters.upcast_in(
            &cx,
            raw.codec.as_str(),
            &raw.payload,
            raw.schema_version,
            target,
        )?;
        let data = codec.decode_with(&cx, &payload)?;
        Ok(RecordedEvent {
            header: EventHeader {
                event_type: canonical,
                ..raw.header
            },
            data,
        })
    }
}

/// The outcome of [`TypedStore::append_detailed`].
#[derive(Debug, Clone, PartialEq)]
pub struct Appended<E> {
    /// The events as recorded.
    pub events: Vec<RecordedEvent<E>>,
    /// `true` when an idempotency key matched an earlier append: nothing was
    /// written, and `events` are the original events as stored (their
    /// data and metadata, not the retry's).
    pub deduplicated: bool,
}

/// A typed event store: a bytes-level backend `B` plus an [`EventSchema`].
///
/// ```
/// # use eskit_core::prelude::*;
/// # use eskit_core::{memory::MemoryStore, rt::block_on};
/// # #[derive(Debug, PartialEq)] struct Pinged(u8);
/// # impl DomainEvent for Pinged {
/// #     fn event_type(&self) -> &'static str { "Pinged" }
/// #     fn event_types() -> &'static [&'static str] { &["Pinged"] }
/// # }
/// # struct ByteCodec;
/// # impl EventCodec<Pinged> for ByteCodec {
/// #     fn name(&self) -> &'static str { "byte" }
/// #     fn encode(&self, e: &Pinged, out: &mut Vec<u8>) -> Result<(), CodecError> { out.push(e.0); Ok(()) }
/// #     fn decode(&self, _: &str, b: &[u8]) -> Result<Pinged, CodecError> {
/// #         b.first().map(|b| Pinged(*b)).ok_or_else(|| CodecError::decode(Some("Pinged"), "empty"))
/// #     }
/// # }
/// let store = TypedStore::new(MemoryStore::new(), EventSchema::new(ByteCodec));
/// let stream = StreamName::new("pinger", "p-1")?;
/// block_on(store.append(&stream, ExpectedVersion::NoStream, vec![Pinged(7)]))?;
/// let events = block_on(store.load(&stream))?;
/// assert_eq!(events[0].data, Pinged(7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TypedStore<B, E> {
    backend: B,
    schema: Arc<EventSchema<E>>,
    /// The tenant codecs see on encode (set by [`TenantScoped::for_tenant`]).
    tenant: Option<TenantId>,
}

impl<B: Clone, E> Clone for TypedStore<B, E> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            schema: Arc::clone(&self.schema),
            tenant: self.tenant.clone(),
        }
    }
}

/// Scopes the backend and tells the codecs the tenant on encode. Scope a
/// typed store this way rather than wrapping a scoped backend with
/// [`TypedStore::new`], whose codecs would see no tenant when encoding.
impl<B: TenantScoped, E> TenantScoped for TypedStore<B, E> {
    fn for_tenant(&self, tenant: TenantId) -> Self {
        Self {
            backend: self.backend.for_tenant(tenant.clone()),
            schema: Arc::clone(&self.schema),
            tenant: Some(tenant),
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }
}

impl<B: fmt::Debug, E: 'static> fmt::Debug for TypedStore<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedStore")
            .field("backend", &self.backend)
            .field("schema", &self.schema)
            .finish()
    }
}

impl<B: EventStore, E: DomainEvent> TypedStore<B, E> {
    /// Puts `schema` in front of `backend`.
    pub fn new(backend: B, schema: EventSchema<E>) -> Self {
        Self {
            backend,
            schema: Arc::new(schema),
            tenant: None,
        }
    }

    /// The bytes-level backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The schema.
    pub fn schema(&self) -> &EventSchema<E> {
        &self.schema
    }

    /// Appends events with default options.
    ///
    /// # Errors
    /// As [`EventStore::append`], plus [`StoreError::Codec`] when encoding fails.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<E>,
    ) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        self.append_with(stream, expected, events, AppendOptions::new())
            .await
    }

    /// Appends events with options, returning them as recorded.
    ///
    /// # Errors
    /// As [`EventStore::append`], plus [`StoreError::Codec`] when encoding fails.
    ///
    /// # Cancel safety
    /// As the backend's `append`.
    pub async fn append_with(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<E>,
        options: AppendOptions,
    ) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        Ok(self
            .append_detailed(stream, expected, events, options)
            .await?
            .events)
    }

    /// Appends events with options and says whether an idempotency key
    /// matched an earlier append (then nothing was written and the events
    /// are the original ones as stored, loaded back).
    ///
    /// # Errors
    /// As [`TypedStore::append_with`].
    ///
    /// # Cancel safety
    /// As the backend's `append`.
    pub async fn append_detailed(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<E>,
        options: AppendOptions,
    ) -> Result<Appended<E>, StoreError> {
        let tagged = events.into_iter().map(|e| (e, Vec::new())).collect();
        self.append_tagged(stream, expected, tagged, options).await
    }

    /// Appends events, each with its own [`Tag`]s, for decisions that
    /// select events across streams. Tags are a set per
    /// event (see [`NewEvent::with_tags`]); the recorded events carry them
    /// sorted and without duplicates.
    ///
    /// ```
    /// # use eskit_core::prelude::*;
    /// # use eskit_core::{memory::MemoryStore, rt::block_on};
    /// # #[derive(Debug, PartialEq)] struct Enrolled(u8);
    /// # impl DomainEvent for Enrolled {
    /// #     fn event_type(&self) -> &'static str { "Enrolled" }
    /// #     fn event_types() -> &'static [&'static str] { &["Enrolled"] }
    /// # }
    /// # struct ByteCodec;
    /// # impl EventCodec<Enrolled> for ByteCodec {
    /// #     fn name(&self) -> &'static str { "byte" }
    /// #     fn encode(&self, e: &Enrolled, out: &mut Vec<u8>) -> Result<(), CodecError> { out.push(e.0); Ok(()) }
    /// #     fn decode(&self, _: &str, b: &[u8]) -> Result<Enrolled, CodecError> {
    /// #         b.first().map(|b| Enrolled(*b)).ok_or_else(|| CodecError::decode(Some("Enrolled"), "empty"))
    /// #     }
    /// # }
    /// let store = TypedStore::new(MemoryStore::new(), EventSchema::new(ByteCodec));
    /// let stream = StreamName::new("enrolment", "s-1:c-1")?;
    /// let tags = vec![Tag::new("student:s-1")?, Tag::new("course:c-1")?];
    /// let done = block_on(store.append_tagged(
    ///     &stream, ExpectedVersion::NoStream, vec![(Enrolled(1), tags)], AppendOptions::new()))?;
    /// assert_eq!(done.events[0].tags[0].as_str(), "course:c-1");
    /// assert_eq!(block_on(store.load(&stream))?[0].tags, done.events[0].tags);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`TypedStore::append_with`].
    ///
    /// # Cancel safety
    /// As the backend's `append`.
    pub async fn append_tagged(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<(E, Vec<Tag>)>,
        options: AppendOptions,
    ) -> Result<Appended<E>, StoreError> {
        let metadata = options.stored_metadata();
        let mut encoded = Vec::with_capacity(events.len());
        let mut data = Vec::with_capacity(events.len());
        for (event, tags) in events {
            encoded.push(
                self.schema
                    .encode_for(&event, stream, self.tenant.as_ref(), &metadata)?
                    .with_tags(tags),
            );
            data.push(event);
        }
        let heads: Vec<(EventType, u32, Vec<Tag>)> = encoded
            .iter()
            .map(|e| {
                (
                    e.event_type().clone(),
                    e.schema_version(),
                    e.tags().to_vec(),
                )
            })
            .collect();
        let key = options.idempotency_key().map(str::to_owned);
        let result = self
            .backend
            .append(stream, expected, encoded, options)
            .await?;
        if result.deduplicated
            && let Some(key) = &key
        {
            return self.stored_outcome(stream, key, &result.records).await;
        }
        if result.records.len() != data.len() {
            // The backend broke its contract; the stored data may be fine.
            return Err(StoreError::internal(format!(
                "backend returned {} records for an append of {} events",
                result.records.len(),
                data.len()
            )));
        }
        let recorded = data
            .into_iter()
            .zip(heads)
            .zip(result.records)
            .map(
                |((data, (event_type, schema_version, tags)), r)| RecordedEvent {
                    header: EventHeader {
                        id: r.id,
                        stream: stream.clone(),
                        version: r.version,
                        position: r.position,
                        tx: r.tx,
                        event_type,
                        schema_version,
                        timestamp: r.timestamp,
                        metadata: metadata.clone(),
                        tags: tags.into(),
                        tenant: result.tenant.clone(),
                    },
                    data,
                },
            )
            .collect();
        Ok(Appended {
            events: recorded,
            deduplicated: result.deduplicated,
        })
    }

    /// The events of the earlier append with this key, as stored: the
    /// store reported `records` as deduplicated, and the retry's own events
    /// and metadata may differ from the stored ones (a new correlation id,
    /// for instance), so they are loaded rather than rebuilt.
    async fn stored_outcome(
        &self,
        stream: &StreamName,
        key: &str,
        records: &[EventRecord],
    ) -> Result<Appended<E>, StoreError> {
        let Some(events) = self.find_idempotent(stream, key).await? else {
            // Deduplicated, then gone: the stream was deleted in between.
            return Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            });
        };
        let same = events.len() == records.len()
            && events
                .iter()
                .zip(records)
                .all(|(e, r)| e.id == r.id && e.version == r.version);
        if !same {
            return Err(StoreError::Corrupt {
                detail: format!(
                    "the idempotency key's events of stream {} differ from the records of the deduplicated append",
                    stream.quoted()
                ),
            });
        }
        Ok(Appended {
            events,
            deduplicated: true,
        })
    }

    /// The events the append to `stream` with idempotency key `key` wrote,
    /// decoded; `None` when no append to the stream used the key (see
    /// [`EventStore::find_idempotent`]).
    ///
    /// # Errors
    /// As [`EventStore::find_idempotent`], plus [`StoreError::Codec`] when
    /// decoding fails.
    pub async fn find_idempotent(
        &self,
        stream: &StreamName,
        key: &str,
    ) -> Result<Option<Vec<RecordedEvent<E>>>, StoreError> {
        match self.backend.find_idempotent(stream, key).await? {
            Some(raw) => self.decode_all(raw).map(Some),
            None => Ok(None),
        }
    }

    /// Loads and decodes a whole stream.
    ///
    /// # Errors
    /// As [`EventStore::load`], plus [`StoreError::Codec`] when decoding fails.
    pub async fn load(&self, stream: &StreamName) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        self.load_with(stream, LoadOptions::new()).await
    }

    /// Loads and decodes events with version `>= from`.
    ///
    /// # Errors
    /// As [`TypedStore::load`].
    pub async fn load_from(
        &self,
        stream: &StreamName,
        from: Version,
    ) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        self.load_with(stream, LoadOptions::new().with_from(from))
            .await
    }

    /// Loads and decodes events passing `options`.
    ///
    /// # Errors
    /// As [`TypedStore::load`].
    pub async fn load_with(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        let raw = self.backend.load(stream, options).await?;
        self.decode_all(raw)
    }

    /// Loads events without decoding them.
    ///
    /// # Errors
    /// As [`EventStore::load`].
    pub async fn load_raw(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RawEvent>, StoreError> {
        self.backend.load(stream, options).await
    }

    /// Loads events without decoding them and hands them to `each` one by
    /// one, in version order, as the backend reads them
    /// ([`EventStore::load_each`]).
    ///
    /// # Errors
    /// As [`EventStore::load_each`].
    pub async fn load_raw_each<F>(
        &self,
        stream: &StreamName,
        options: LoadOptions,
        each: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(RawEvent) -> Result<(), StoreError> + Send,
    {
        self.backend.load_each(stream, options, each).await
    }

    /// The stream's last version.
    ///
    /// # Errors
    /// As [`EventStore::stream_version`].
    pub async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.backend.stream_version(stream).await
    }

    fn decode_all(&self, raw: Vec<RawEvent>) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        raw.into_iter()
            .map(|r| self.schema.decode(r).map_err(StoreError::from))
            .collect()
    }
}

impl<B: EventStore + GlobalReader, E: DomainEvent> TypedStore<B, E> {
    /// Reads the global log and decodes the events that are `E`'s, in cursor
    /// order; events of other types are "not mine" and skipped, never an
    /// error. Without a type filter in `options`, the read asks the backend
    /// for `E`'s wire names only ([`EventSchema::wire_names`]). The page's
    /// `next` moves past skipped events too.
    ///
    /// # Errors
    /// As [`GlobalReader::read`], plus [`StoreError::Codec`] for an event of
    /// one of `E`'s types that does not decode.
    pub async fn read(
        &self,
        options: ReadOptions,
    ) -> Result<GlobalBatch<RecordedEvent<E>>, StoreError> {
        let options = if options.event_types().is_empty() {
            let names = self.schema.wire_names();
            if names.len() <= MAX_FILTER_TYPES {
                options.with_event_types(names)
            } else {
                options
            }
        } else {
            options
        };
        let page = self.backend.read(options).await?;
        let mut events = Vec::with_capacity(page.events.len());
        let (next, head) = (page.next, page.head);
        for raw in page.events {
            if let Some(e) = self.schema.decode_if_mine(raw)? {
                events.push(e);
            }
        }
        Ok(GlobalBatch { events, next, head })
    }
}
