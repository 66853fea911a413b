//! Event envelopes: what an append carries ([`NewEvent`]), what a backend
//! stores and returns ([`RawEvent`]), and the typed view ([`RecordedEvent`]);
//! with what they carry: names ([`StreamName`], [`EventType`]), versions and
//! positions, [`Metadata`], [`EventId`], [`Tag`]s and [`Timestamp`]s.

use std::borrow::Cow;

use crate::tag::normalize;

pub use crate::id::{EventId, InvalidEventId};
pub use crate::metadata::{Metadata, Principal, PrincipalKind};
pub use crate::name::{
    CodecName, EventType, InvalidName, InvalidNameReason, NameKind, StreamId, StreamName,
    StreamType, TenantId,
};
pub use crate::tag::{Tag, Tags};
pub use crate::time::Timestamp;
pub use crate::version::{ExpectedVersion, GlobalCursor, InvalidCursor, Position, Version};

/// One event to append, already encoded: the bytes-level input of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    id: EventId,
    event_type: EventType,
    schema_version: u32,
    codec: Cow<'static, str>,
    payload: Vec<u8>,
    tags: Tags,
}

impl NewEvent {
    /// An event with a fresh id, schema version 1 and codec name `raw`.
    pub fn new(event_type: EventType, payload: Vec<u8>) -> Self {
        Self {
            id: EventId::new(),
            event_type,
            schema_version: 1,
            codec: Cow::Borrowed("raw"),
            payload,
            tags: Tags::new(),
        }
    }

    /// Sets the event id (for imports and migrations that keep ids).
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Sets the schema version of the payload (1 or more).
    #[must_use]
    pub fn with_schema_version(mut self, v: u32) -> Self {
        self.schema_version = v;
        self
    }

    /// Sets the name of the codec that produced the payload.
    #[must_use]
    pub fn with_codec(mut self, codec: impl Into<Cow<'static, str>>) -> Self {
        self.codec = codec.into();
        self
    }

    /// Sets the event's tags, replacing earlier ones. Tags are a set: they
    /// are kept sorted and without duplicates, and every backend returns
    /// them in that form. At most
    /// [`MAX_TAGS_PER_EVENT`](crate::limits::MAX_TAGS_PER_EVENT) distinct
    /// tags per event (checked when appending).
    ///
    /// ```
    /// use eskit_core::event::{EventType, NewEvent, Tag};
    /// let e = NewEvent::new(EventType::new("Enrolled")?, vec![])
    ///     .with_tags([Tag::new("student:s-1")?, Tag::new("course:c-1")?]);
    /// assert_eq!(e.tags()[0].as_str(), "course:c-1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags = Tags::from(normalize(tags.into_iter().collect()));
        self
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The event's tags, sorted and without duplicates.
    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }

    /// The event's wire type name.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The payload's schema version.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The codec name.
    pub fn codec(&self) -> &str {
        &self.codec
    }

    /// The encoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// What every stored event carries besides its payload: the one envelope
/// header shared by [`RawEvent`] (bytes) and [`RecordedEvent`] (decoded).
///
/// Both dereference to it, so `event.stream` or `event.metadata` read the
/// header's fields on either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeader {
    /// Unique id of the event.
    pub id: EventId,
    /// The stream it belongs to.
    pub stream: StreamName,
    /// Its version within the stream, from 1.
    pub version: Version,
    /// Its global position.
    pub position: Position,
    /// The backend's transaction key, the first part of the event's
    /// [`GlobalCursor`]; 0 on backends ordered by position alone.
    pub tx: u64,
    /// Its wire type name (on a [`RecordedEvent`], the canonical name after
    /// alias resolution).
    pub event_type: EventType,
    /// Schema version of the stored payload, before upcasting.
    pub schema_version: u32,
    /// When it was recorded (or the custom timestamp it was appended with).
    pub timestamp: Timestamp,
    /// Its metadata.
    pub metadata: Metadata,
    /// Its tags, sorted and without duplicates; clones share them.
    pub tags: Tags,
    /// The tenant that owns its stream; `None` outside any tenant.
    pub tenant: Option<TenantId>,
}

impl EventHeader {
    /// Where this event stands in the global delivery order.
    pub fn cursor(&self) -> GlobalCursor {
        GlobalCursor::new(self.tx, self.position)
    }

    /// What the store assigned to this event.
    pub fn record(&self) -> EventRecord {
        EventRecord {
            id: self.id,
            version: self.version,
            position: self.position,
            tx: self.tx,
            timestamp: self.timestamp,
        }
    }
}

/// A stored event as bytes: the output of every backend read. Its
/// [`EventHeader`] fields are reachable directly (`raw.stream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The envelope: id, stream, version, position, type, metadata, tags, tenant.
    pub header: EventHeader,
    /// Name of the codec that produced the payload.
    pub codec: CodecName,
    /// The encoded payload.
    pub payload: Vec<u8>,
}

impl std::ops::Deref for RawEvent {
    type Target = EventHeader;
    fn deref(&self) -> &EventHeader {
        &self.header
    }
}

impl std::ops::DerefMut for RawEvent {
    fn deref_mut(&mut self) -> &mut EventHeader {
        &mut self.header
    }
}

impl RawEvent {
    /// Where this event stands in the global delivery order.
    pub fn cursor(&self) -> GlobalCursor {
        self.header.cursor()
    }

    /// Builds a stored event from an appended one and what the store assigned
    /// (transaction key 0 and no tenant: see [`with_tx`](Self::with_tx) and
    /// [`with_tenant`](Self::with_tenant)).
    pub fn from_new(
        event: NewEvent,
        stream: StreamName,
        version: Version,
        position: Position,
        timestamp: Timestamp,
        metadata: Metadata,
    ) -> Self {
        Self {
            header: EventHeader {
                id: event.id,
                stream,
                version,
                position,
                tx: 0,
                event_type: event.event_type,
                schema_version: event.schema_version,
                timestamp,
                metadata,
                tags: event.tags,
                tenant: None,
            },
            codec: CodecName::from_cow_unchecked(event.codec),
            payload: event.payload,
        }
    }

    /// Sets the transaction key (backends that order by transaction).
    #[must_use]
    pub fn with_tx(mut self, tx: u64) -> Self {
        self.header.tx = tx;
        self
    }

    /// Sets the owning tenant.
    #[must_use]
    pub fn with_tenant(mut self, tenant: Option<TenantId>) -> Self {
        self.header.tenant = tenant;
        self
    }

    /// What the store assigned to this event.
    pub fn record(&self) -> EventRecord {
        self.header.record()
    }
}

/// What a store assigned to one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventRecord {
    /// The event's id.
    pub id: EventId,
    /// Its version in the stream.
    pub version: Version,
    /// Its global position.
    pub position: Position,
    /// The backend's transaction key (0 on backends ordered by position alone).
    pub tx: u64,
    /// Its recorded timestamp.
    pub timestamp: Timestamp,
}

impl EventRecord {
    /// Where the event stands in the global delivery order.
    pub fn cursor(&self) -> GlobalCursor {
        GlobalCursor::new(self.tx, self.position)
    }
}

/// The outcome of a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// One record per appended event, in order.
    pub records: Vec<EventRecord>,
    /// `true` when an idempotency key matched an earlier append: nothing was
    /// written and `records` describe the original events.
    pub deduplicated: bool,
    /// The tenant that owns the stream (the appending handle's).
    pub tenant: Option<TenantId>,
}

impl AppendResult {
    /// The stream's version after the append.
    pub fn last_version(&self) -> Version {
        self.records.last().map_or(Version::ZERO, |r| r.version)
    }

    /// The global position of the last appended event.
    pub fn last_position(&self) -> Position {
        self.records.last().map_or(Position::ZERO, |r| r.position)
    }

    /// The cursor of the last appended event: a reader that has reached it
    /// has seen the append (read your own writes).
    pub fn last_cursor(&self) -> GlobalCursor {
        self.records
            .last()
            .map_or(GlobalCursor::START, EventRecord::cursor)
    }
}

/// A stored event with its payload decoded into `E`. Its [`EventHeader`]
/// fields are reachable directly (`event.version`).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent<E> {
    /// The envelope, as stored (the type name is the canonical one).
    pub header: EventHeader,
    /// The decoded event.
    pub data: E,
}

impl<E> std::ops::Deref for RecordedEvent<E> {
    type Target = EventHeader;
    fn deref(&self) -> &EventHeader {
        &self.header
    }
}

impl<E> std::ops::DerefMut for RecordedEvent<E> {
    fn deref_mut(&mut self) -> &mut EventHeader {
        &mut self.header
    }
}

impl<E> RecordedEvent<E> {
    /// Replaces the data, keeping the envelope.
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> RecordedEvent<F> {
        RecordedEvent {
            header: self.header,
            data: f(self.data),
        }
    }

    /// Where the event stands in the global delivery order.
    pub fn cursor(&self) -> GlobalCursor {
        self.header.cursor()
    }
}
