//! Turning stored rows into events, defensively, and the row checksum.
//!
//! **Invariant**: no event leaves this module unless its checksum matches and
//! every field parses; anything else is [`StoreError::Corrupt`].

use eskit_core::{
    backend::{metadata_from_json, metadata_to_json},
    error::StoreError,
    event::{
        EventHeader, EventId, Metadata, Position, Principal, PrincipalKind, RawEvent, StreamName,
        Tag, Tags, TenantId, Timestamp, Version,
    },
};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use crate::error::{corrupt, store_error};
use crate::kinds::{Kind, KindReader, SharedCache};

/// The event columns, in the order [`decode_event`] reads them (from index 0).
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.version, e.event_id, e.kind, e.payload, \
     e.timestamp, e.metadata, e.checksum, e.tags";

/// Number of columns in [`EVENT_COLUMNS`].
pub(crate) const EVENT_COLUMN_COUNT: usize = 9;

/// A tenant as stored: its id, or `''` for none.
pub(crate) fn tenant_key(tenant: Option<&TenantId>) -> &str {
    tenant.map_or("", TenantId::as_str)
}

/// A tag as the tag index keys it: `tenant NUL tag` for a tenant's event,
/// the tag alone otherwise (neither a tag nor a tenant holds a NUL, so no
/// two tenants' keys meet).
pub(crate) fn index_tag<'a>(tenant: &str, tag: &'a str) -> std::borrow::Cow<'a, str> {
    if tenant.is_empty() {
        std::borrow::Cow::Borrowed(tag)
    } else {
        std::borrow::Cow::Owned(format!("{tenant}\0{tag}"))
    }
}

/// The stored form of an event's tags: joined by NUL bytes (a tag never
/// holds one), `None` when it has none.
pub(crate) fn tags_blob(tags: &[Tag]) -> Option<Vec<u8>> {
    let (first, rest) = tags.split_first()?;
    let mut out = first.as_str().as_bytes().to_vec();
    for t in rest {
        out.push(0);
        out.extend_from_slice(t.as_str().as_bytes());
    }
    Some(out)
}

/// Parses stored tags; anything [`tags_blob`] does not write (a bad tag,
/// tags out of order or repeated) is `None`.
pub(crate) fn parse_tags(blob: &[u8]) -> Option<Tags> {
    parse_tags_in(blob, &[], &mut MetTags::default())
}

/// Slots in [`MetTags`]'s direct-mapped front.
const MET_TAG_SLOTS: usize = 256;

/// Distinct tags a read meets before [`MetTags`] sets up its front.
const MET_TAGS_BEFORE_FRONT: usize = 16;

/// Slots in [`MetTags`]'s direct-mapped cache of whole tag lists.
const MET_LIST_SLOTS: usize = 256;

/// Longest stored tag list (in bytes) that [`MetTags`] keeps whole; longer
/// lists are parsed tag by tag every time. Bounds the cache to
/// `MET_LIST_SLOTS` times this many bytes, plus the lists' tags.
const MAX_MET_LIST_BYTES: usize = 256;

/// Tag lists a read parses tag by tag before [`MetTags`] sets up its cache
/// of whole lists.
const MET_LISTS_BEFORE_CACHE: usize = 16;

/// One whole tag list a read has parsed: its stored bytes and its tags.
#[derive(Clone)]
pub(crate) struct MetList {
    blob: Arc<[u8]>,
    tags: Tags,
}

/// Most whole tag lists a store keeps for its reads: the lists earlier
/// reads parsed, so that a read meeting one again takes its tags instead of
/// parsing and checking them. Each holds at most `MAX_MET_LIST_BYTES` of stored bytes (and as many of
/// tag text), so the cache stays under about a megabyte. When it is full
/// and a read parses another list, it starts again empty; nothing fails.
pub const MAX_CACHED_TAG_LISTS: usize = 1024;

/// Whole tag lists by a hash of their stored bytes, shared by every read of
/// a store, so that a read meeting a list an earlier read parsed takes its
/// tags instead of parsing and checking them again. A list's tags are a
/// function of its bytes alone, so an entry is true for any file and any
/// transaction; an entry whose bytes differ from the list looked up (a
/// collision of the 64-bit hash) is a miss.
pub(crate) type TagListCache = SharedCache<MetList, MAX_CACHED_TAG_LISTS>;

/// The key of a whole list in the [`TagListCache`].
fn list_key(blob: &[u8]) -> i64 {
    i64::from_le_bytes(xxh3_64(blob).to_le_bytes())
}

/// The tags one read has built, so that its events share them: a
/// direct-mapped front (one slot per cheap hash of the bytes, so a lookup
/// does the same bounded work whatever tags a writer chose; a collision only
/// costs a miss) before a SipHash set. Holds no tag but the read's events'
/// and its query's.
///
/// Whole lists are kept too, in a direct-mapped cache keyed by a hash of
/// all their bytes: a query's events cycle through a few tag lists (one per
/// course, each with the term), and a list met before is then one
/// comparison of its bytes instead of a parse. A slot is filled once and
/// never replaced, so a read whose lists never repeat stores at most
/// `MET_LIST_SLOTS` of them; only lists that parsed whole enter it.
///
/// Behind the read's own lists, the store's [`TagListCache`] (when the read
/// has one) holds the lists earlier reads parsed.
#[derive(Default)]
pub(crate) struct MetTags {
    front: Vec<Option<Tag>>,
    set: HashSet<Tag>,
    lists: Vec<Option<MetList>>,
    /// Lists not found among the read's own, before it sets them up.
    list_misses: usize,
    shared: Option<Arc<TagListCache>>,
}

impl MetTags {
    /// The slot of a whole list: every byte counts (the lists of a read
    /// often differ only in the middle, `course:c-0001\0term:2026`).
    fn list_slot(bytes: &[u8]) -> usize {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut h = bytes.len() as u64;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h.rotate_left(23) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        let rest = words.remainder();
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        (h >> 56) as usize % MET_LIST_SLOTS
    }

    /// The tags of a whole list this read met before and kept, or that the
    /// store's cache holds.
    fn list(&mut self, blob: &[u8]) -> Option<Tags> {
        if blob.len() > MAX_MET_LIST_BYTES {
            return None;
        }
        let slot = Self::list_slot(blob);
        if let Some(Some(l)) = self.lists.get(slot)
            && *l.blob == *blob
        {
            return Some(l.tags.clone());
        }
        let found = self
            .shared
            .as_ref()
            .and_then(|c| c.get(list_key(blob)))
            .filter(|l| *l.blob == *blob)?;
        let tags = found.tags.clone();
        self.keep_local(slot, || found);
        Some(tags)
    }

    /// Remembers a list that parsed whole into `tags`, in the read's own
    /// lists and in the store's cache.
    fn keep_list(&mut self, blob: &[u8], tags: &Tags) {
        if blob.len() > MAX_MET_LIST_BYTES {
            return;
        }
        let list = MetList {
            blob: blob.into(),
            tags: tags.clone(),
        };
        if let Some(c) = &self.shared {
            c.put(list_key(blob), &list);
        }
        self.keep_local(Self::list_slot(blob), || list);
    }

    /// Keeps `list` in the read's own lists at `slot` when it is empty,
    /// once the read has missed enough lists for them to pay.
    fn keep_local(&mut self, slot: usize, list: impl FnOnce() -> MetList) {
        if self.lists.is_empty() {
            self.list_misses += 1;
            if self.list_misses < MET_LISTS_BEFORE_CACHE {
                return;
            }
            self.lists = (0..MET_LIST_SLOTS).map(|_| None).collect();
        }
        if let Some(s @ None) = self.lists.get_mut(slot) {
            *s = Some(list());
        }
    }

    fn slot(bytes: &[u8]) -> usize {
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        let n = bytes.len();
        let head = word(&bytes[..n.min(8)]);
        let tail = word(&bytes[n.saturating_sub(8)..]);
        let h = (head ^ tail.rotate_left(29) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 56) as usize % MET_TAG_SLOTS
    }

    /// The tag with these bytes: shared when met before, else checked
    /// (UTF-8, then [`Tag::new`]) and remembered.
    fn get(&mut self, bytes: &[u8]) -> Option<Tag> {
        // A read that meets few tags finds them in the set at once; the
        // front pays for its room only in reads that meet many.
        if self.front.is_empty() && self.set.len() >= MET_TAGS_BEFORE_FRONT {
            self.front = vec![None; MET_TAG_SLOTS];
        }
        let slot = Self::slot(bytes);
        if let Some(Some(t)) = self.front.get(slot)
            && t.as_str().as_bytes() == bytes
        {
            return Some(t.clone());
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let tag = match self.set.get(text) {
            Some(t) => t.clone(),
            None => {
                let t = Tag::new(text).ok()?;
                self.set.insert(t.clone());
                t
            }
        };
        if let Some(s) = self.front.get_mut(slot) {
            *s = Some(tag.clone());
        }
        Some(tag)
    }
}

/// Parses stored tags as [`parse_tags`] does, sharing each tag with the
/// earlier events of the same read: a whole list `met` kept is its tags
/// again; else a tag equal to the one at the same place
/// in `prev` (the previous event's tags) is cloned from there, else from
/// `met`, the tags the read has already built; only a tag found in neither
/// is checked and allocated. A clone is a reference count; bytes equal to a
/// tag's are a valid tag, so only new tags are checked for UTF-8. The events
/// of a query share their tags by design, so this saves an allocation and a
/// free per tag per event, and the comparison with `prev` most lookups.
pub(crate) fn parse_tags_in(blob: &[u8], prev: &[Tag], met: &mut MetTags) -> Option<Tags> {
    if let Some(tags) = met.list(blob) {
        return Some(tags);
    }
    // Events of one read mostly carry as many tags as the one before.
    let mut tags = Vec::with_capacity(prev.len().max(1));
    for (i, t) in blob.split(|&b| b == 0).enumerate() {
        let tag = match prev.get(i) {
            Some(p) if p.as_str().as_bytes() == t => p.clone(),
            _ => met.get(t)?,
        };
        tags.push(tag);
    }
    if !tags.windows(2).all(|w| w[0] < w[1]) {
        return None;
    }
    let tags = Tags::from(tags);
    met.keep_list(blob, &tags);
    Some(tags)
}

/// Tails up to this size are copied next to the small fields and hashed in
/// one call; longer ones are streamed, without a copy. Both give the same sum.
const INLINE_TAIL: usize = 4096;

/// An XXH3-64 over a length-prefixed encoding of every field, so that a
/// value moved between fields changes the sum too. The small fields are
/// gathered in a reused buffer; the large one (payload or snapshot state)
/// comes last.
pub(crate) struct Checksum<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Checksum<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.clear();
        Self { buf }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.buf.extend_from_slice(b);
        self
    }

    pub(crate) fn int(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Bytes gathered earlier by the same calls (a [`SumPart`]), as they were.
    pub(crate) fn raw(&mut self, part: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(part);
        self
    }

    /// A stream's names, as an event's checksum covers them.
    fn stream(&mut self, stream: &StreamName) -> &mut Self {
        self.bytes(stream.stream_type().as_str().as_bytes())
            .bytes(stream.stream_id().as_str().as_bytes())
    }

    /// An event's type, schema version and codec, as its checksum covers
    /// them.
    fn kind(&mut self, event_type: &str, schema_version: u32, codec: &str) -> &mut Self {
        self.bytes(event_type.as_bytes())
            .int(i64::from(schema_version))
            .bytes(codec.as_bytes())
    }

    pub(crate) fn opt(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.buf.push(0),
            Some(s) => {
                self.buf.push(1);
                self.bytes(s.as_bytes());
            }
        }
        self
    }

    /// The sum over the gathered fields followed by `tail` with its length,
    /// as the bits of an SQLite integer.
    pub(crate) fn finish(&mut self, tail: &[u8]) -> i64 {
        self.buf
            .extend_from_slice(&(tail.len() as u64).to_le_bytes());
        let sum = if tail.len() <= INLINE_TAIL {
            self.buf.extend_from_slice(tail);
            xxh3_64(self.buf)
        } else {
            let mut h = Xxh3Default::new();
            h.update(self.buf);
            h.update(tail);
            h.digest()
        };
        i64::from_le_bytes(sum.to_le_bytes())
    }
}

/// The stored form of one event's metadata: the core's flat wire shape as a
/// JSON object of strings in one `TEXT` column (queryable with SQLite's
/// `json_extract`, e.g. `$."x.region"`), `NULL` when empty.
pub(crate) struct StoredMetadata(pub(crate) Option<String>);

impl StoredMetadata {
    pub(crate) fn of(m: &Metadata) -> Self {
        Self(metadata_to_json(m))
    }

    /// The stored text, as the checksum sees it.
    pub(crate) fn text(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// Parses stored metadata: the flat wire shape every row is written in
/// now, or the nested shape of files written before it (principals as
/// objects, extras under `extra`); anything else is `None`.
pub(crate) fn parse_metadata(text: &str) -> Option<Metadata> {
    metadata_from_json(text)
        .ok()
        .or_else(|| parse_nested_metadata(text))
}

/// The nested shape rows were written in before the flat wire shape:
/// `{"correlation_id": .., "initiator": {"kind": .., "id": ..},
/// "extra": {..}}`. Read only; never written.
fn parse_nested_metadata(text: &str) -> Option<Metadata> {
    use serde_json::Value;
    let Value::Object(o) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let principal = |v: &Value| -> Option<Principal> {
        let Value::Object(p) = v else { return None };
        if p.len() != 2 {
            return None;
        }
        Some(Principal::new(
            PrincipalKind::parse(p.get("kind")?.as_str()?),
            p.get("id")?.as_str()?,
        ))
    };
    let mut m = Metadata::new();
    for (k, v) in &o {
        m = match k.as_str() {
            "correlation_id" => m.with_correlation_id(v.as_str()?),
            "causation_id" => m.with_causation_id(v.as_str()?),
            "idempotency_key" => m.with_idempotency_key(v.as_str()?),
            "initiator" => m.with_initiator(principal(v)?),
            "originator" => m.with_originator(principal(v)?),
            "extra" => {
                let Value::Object(extra) = v else { return None };
                let mut m = m;
                for (k, v) in extra {
                    m = m.with_extra(k.clone(), v.as_str()?);
                }
                m
            }
            _ => return None,
        };
    }
    Some(m)
}

/// Precedes the tags in an event row's checksum.
const TAGS_MARK: i64 = 0x7461_6773;

/// Precedes the tenant in an event row's checksum.
const TENANT_MARK: i64 = 0x7465_6e61;

/// The fields of an event row that its checksum covers.
pub(crate) struct SumFields<'a> {
    pub(crate) position: i64,
    pub(crate) stream: StreamOrPart<'a>,
    pub(crate) version: i64,
    pub(crate) event_id: &'a [u8; 16],
    pub(crate) kind: KindOrPart<'a>,
    pub(crate) payload: &'a [u8],
    pub(crate) timestamp: i64,
    pub(crate) meta: Option<&'a str>,
    pub(crate) tags: Option<&'a [u8]>,
    pub(crate) tenant: &'a str,
}

/// An event's type, schema version and codec for its checksum: the fields,
/// or the part a read gathered from them once.
pub(crate) enum KindOrPart<'a> {
    Fields {
        event_type: &'a str,
        schema_version: u32,
        codec: &'a str,
    },
    Part(&'a SumPart),
}

/// The checksum of an event row. A stream and a kind given as parts give
/// the same sum as their fields.
pub(crate) fn event_checksum(scratch: &mut Vec<u8>, f: &SumFields<'_>) -> i64 {
    let mut c = Checksum::new(scratch);
    c.int(f.position);
    match f.stream {
        StreamOrPart::Stream(s) => c.stream(s),
        StreamOrPart::Part(p) => c.raw(&p.0),
    };
    c.int(f.version).bytes(f.event_id);
    match f.kind {
        KindOrPart::Fields {
            event_type,
            schema_version,
            codec,
        } => c.kind(event_type, schema_version, codec),
        KindOrPart::Part(p) => c.raw(&p.0),
    };
    c.int(f.timestamp);
    c.opt(f.meta);
    // Rows without tags keep the sum they had before tags existed.
    if let Some(tags) = f.tags {
        c.int(TAGS_MARK).bytes(tags);
    }
    // So do rows of no tenant; a tenant's rows cannot be moved to another.
    if !f.tenant.is_empty() {
        c.int(TENANT_MARK).bytes(f.tenant.as_bytes());
    }
    c.finish(f.payload)
}

/// What an event's checksum covers of one stream or one kind, gathered once
/// for a read that checks many events of it ([`event_checksum`]).
pub(crate) struct SumPart(Vec<u8>);

impl SumPart {
    /// The part naming `stream`.
    pub(crate) fn stream(stream: &StreamName) -> Self {
        let mut v = Vec::new();
        Checksum::new(&mut v).stream(stream);
        Self(v)
    }

    /// The part naming `kind`.
    pub(crate) fn kind(kind: &Kind) -> Self {
        let mut v = Vec::new();
        Checksum::new(&mut v).kind(
            kind.event_type.as_str(),
            kind.schema_version,
            kind.codec.as_str(),
        );
        Self(v)
    }
}

/// A stream's [`SumPart`] as a read needs it: built for the second event
/// of the stream, so that a stream met once costs no more than before.
enum StreamPart {
    Unused,
    Once,
    Built(SumPart),
}

impl StreamPart {
    /// The names of `stream` for one more event's checksum.
    fn next<'a>(&'a mut self, stream: &'a StreamName) -> StreamOrPart<'a> {
        match self {
            Self::Unused => {
                *self = Self::Once;
                return StreamOrPart::Stream(stream);
            }
            Self::Once => *self = Self::Built(SumPart::stream(stream)),
            Self::Built(_) => {}
        }
        match self {
            Self::Built(p) => StreamOrPart::Part(p),
            _ => StreamOrPart::Stream(stream),
        }
    }
}

/// A stream for an event's checksum: its names, or the part they make.
pub(crate) enum StreamOrPart<'a> {
    Stream(&'a StreamName),
    Part(&'a SumPart),
}

/// Most rows a reader puts in one [`EventBatch`] before handing it over and
/// reading on: the caller builds events from one batch while the reader
/// fills the next, so a long load keeps both threads busy.
pub(crate) const BATCH_ROWS: usize = 128;

/// Room for the payloads, metadata and tags of a read's first batch; a
/// larger batch grows it.
const FIRST_BATCH_BYTES: usize = 32 * 1024;

/// Room for the fields a checksum covers (and a payload up to this size),
/// reserved once per read.
const CHECKSUM_SCRATCH_BYTES: usize = 1024;

/// A checksum's scratch buffer with room for its fields and a tail (payload
/// or snapshot state) of `tail` bytes, which [`Checksum::finish`] copies in
/// when it is short: reserved at once, where growing from nothing
/// reallocated it several times per checksum.
pub(crate) fn checksum_scratch(tail: usize) -> Vec<u8> {
    Vec::with_capacity(CHECKSUM_SCRATCH_BYTES + tail.min(INLINE_TAIL))
}

/// Rows read on a reader thread, in a compact form that crosses to the
/// caller's thread in one move; an [`Assembler`] then checks them and builds
/// the [`RawEvent`]s there. Allocating the events on the thread that uses
/// and frees them keeps their memory on one core.
pub(crate) struct EventBatch {
    heads: Vec<Head>,
    /// Each row's payload and metadata text, back to back, in row order.
    bytes: Vec<u8>,
    /// Kinds first met in this batch; numbers continue across batches.
    kinds: Vec<Kind>,
    /// Streams first met in this batch; numbers continue across batches.
    streams: Vec<StreamName>,
    /// How many events the whole read expects, when known (first batch).
    expected: usize,
    /// The tenant whose events these are (a read sees one tenant's only).
    tenant: Option<TenantId>,
}

impl EventBatch {
    /// The events of this batch alone, for a read built as one batch (the
    /// writer's reads inside its transaction).
    pub(crate) fn into_events(self) -> Result<Vec<RawEvent>, StoreError> {
        let mut a = Assembler::default();
        a.add(self)?;
        Ok(a.finish())
    }
}

/// One row as read; its payload ends at `payload_end` in the batch's bytes
/// and starts where the previous row's bytes ended, its metadata text
/// (when `has_meta`) follows up to `meta_end`, and its tags (when
/// `has_tags`) up to `tags_end`. The caller's side checks it
/// before it becomes an event.
struct Head {
    position: i64,
    version: i64,
    id: [u8; 16],
    timestamp: i64,
    checksum: i64,
    payload_end: usize,
    meta_end: usize,
    has_meta: bool,
    /// The stored tags follow the metadata up to here (when `has_tags`).
    tags_end: usize,
    has_tags: bool,
    kind: u32,
    stream: u32,
}

/// Builds the events of a read from its batches, on the caller's thread:
/// checks each row's checksum and fields, then allocates the event. Doing
/// the checks here, while the reader fills the next batch, keeps the
/// reader (the slower side) to SQLite work and copying.
#[derive(Default)]
pub(crate) struct Assembler {
    events: Vec<RawEvent>,
    kinds: Vec<Kind>,
    streams: Vec<StreamName>,
    /// What each kind adds to an event's checksum, by number.
    kind_parts: Vec<SumPart>,
    /// What each stream adds, by number, once a second event of the stream
    /// needs it (a query meets many streams once each).
    stream_parts: Vec<StreamPart>,
    scratch: Vec<u8>,
    /// The tags met so far, shared by the events that carry them.
    tags: MetTags,
    /// The events are taken batch by batch ([`Self::drain`]): room is
    /// reserved for one batch, not for the whole read.
    streaming: bool,
}

impl Assembler {
    /// An assembler whose caller takes the events of each batch before it
    /// adds the next ([`Self::drain`]), so one batch's room is reused for
    /// the whole read instead of a list of every event.
    pub(crate) fn streaming() -> Self {
        Self {
            streaming: true,
            ..Self::default()
        }
    }

    /// Uses the store's `lists` for tag lists this read has not met.
    pub(crate) fn with_tag_lists(mut self, lists: &Arc<TagListCache>) -> Self {
        self.tags.shared = Some(Arc::clone(lists));
        self
    }

    /// Makes the events share `tags` (the tags of a query) instead of
    /// building their own: comparing an event's tags with the query's then
    /// finds them by reference.
    pub(crate) fn sharing_tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags.set.extend(tags);
        self
    }

    /// Checks and adds the events of the next batch.
    pub(crate) fn add(&mut self, batch: EventBatch) -> Result<(), StoreError> {
        let lost = || corrupt("an event batch refers to a kind or stream it lacks");
        self.kind_parts
            .extend(batch.kinds.iter().map(SumPart::kind));
        self.stream_parts
            .extend(batch.streams.iter().map(|_| StreamPart::Unused));
        self.kinds.extend(batch.kinds);
        self.streams.extend(batch.streams);
        // `expected` is capped by the reader (`LOAD_CAPACITY_HINT_MAX`).
        let room = if self.streaming {
            batch.heads.len()
        } else {
            batch.expected.max(batch.heads.len())
        };
        self.events.reserve(room);
        self.scratch.reserve(CHECKSUM_SCRATCH_BYTES);
        let mut start = 0;
        // The stored tags of the event pushed last: events in a row often
        // carry the same tags (a query's events share them by design), and
        // then the last event's tags are cloned instead of parsed again.
        let mut last_tags: Option<&[u8]> = None;
        for h in batch.heads {
            let kind = self.kinds.get(h.kind as usize).ok_or_else(lost)?;
            let stream = self.streams.get(h.stream as usize).ok_or_else(lost)?;
            let payload = batch.bytes.get(start..h.payload_end).ok_or_else(lost)?;
            let position = h.position;
            let bad = |what: &str| corrupt(format!("invalid {what} at position {position}"));
            let meta_text = if h.has_meta {
                let raw = batch
                    .bytes
                    .get(h.payload_end..h.meta_end)
                    .ok_or_else(lost)?;
                Some(std::str::from_utf8(raw).map_err(|_| bad("metadata"))?)
            } else {
                None
            };
            let tags_raw = if h.has_tags {
                Some(batch.bytes.get(h.meta_end..h.tags_end).ok_or_else(lost)?)
            } else {
                None
            };
            start = h.tags_end;
            let stream_part = self
                .stream_parts
                .get_mut(h.stream as usize)
                .ok_or_else(lost)?;
            let kind_part = self.kind_parts.get(h.kind as usize).ok_or_else(lost)?;
            let expected = event_checksum(
                &mut self.scratch,
                &SumFields {
                    position: h.position,
                    stream: stream_part.next(stream),
                    version: h.version,
                    event_id: &h.id,
                    kind: KindOrPart::Part(kind_part),
                    payload,
                    timestamp: h.timestamp,
                    meta: meta_text,
                    tags: tags_raw,
                    tenant: tenant_key(batch.tenant.as_ref()),
                },
            );
            if h.checksum != expected {
                return Err(corrupt(format!(
                    "checksum mismatch for the event at position {position}"
                )));
            }
            let metadata = match meta_text {
                None => Metadata::new(),
                Some(t) => parse_metadata(t).ok_or_else(|| bad("metadata"))?,
            };
            let prev = self.events.last().map(|e| &e.tags);
            let tags = match (tags_raw, last_tags, prev) {
                (None, _, _) => Tags::new(),
                (Some(t), Some(l), Some(p)) if t == l => p.clone(),
                (Some(t), _, _) => {
                    let prev = prev.map_or(&[][..], Tags::as_slice);
                    parse_tags_in(t, prev, &mut self.tags).ok_or_else(|| bad("tags"))?
                }
            };
            last_tags = tags_raw;
            let to_u64 = |v: i64, what: &str| u64::try_from(v).map_err(|_| bad(what));
            self.events.push(RawEvent {
                header: EventHeader {
                    id: EventId::from_bytes(h.id),
                    stream: stream.clone(),
                    version: Version::new(to_u64(h.version, "version")?),
                    position: Position::new(to_u64(h.position, "position")?),
                    tx: 0,
                    event_type: kind.event_type.clone(),
                    schema_version: kind.schema_version,
                    timestamp: Timestamp::from_unix_micros(h.timestamp),
                    metadata,
                    tags,
                    tenant: batch.tenant.clone(),
                },
                codec: kind.codec.clone(),
                payload: payload.to_vec(),
            });
        }
        Ok(())
    }

    /// Takes the events added since the last call, in order.
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, RawEvent> {
        self.events.drain(..)
    }

    /// The events of every batch added, in order.
    pub(crate) fn finish(self) -> Vec<RawEvent> {
        self.events
    }
}

/// Hashes the store's own row ids (stream keys) with one multiplication:
/// the store hands them out in sequence, so nobody outside chooses them
/// to collide, and SipHash cost more than the lookup it served.
#[derive(Default)]
pub(crate) struct RowidHasher(u64);

impl Hasher for RowidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i64(&mut self, v: i64) {
        // Odd multiplier (2^64 / golden ratio): consecutive keys spread over
        // the high bits, which hashbrown's control bytes use.
        self.0 = (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The names of the stream with key `sid`, read from its row.
fn stored_stream(conn: &Connection, sid: i64) -> Result<StreamName, StoreError> {
    let names: Option<(String, String)> = conn
        .prepare_cached("SELECT stream_type, stream_id FROM eskit_streams WHERE sid = ?1")
        .and_then(|mut s| {
            s.query_row([sid], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(store_error)?;
    let (stream_type, stream_id) =
        names.ok_or_else(|| corrupt(format!("an event names the unknown stream {sid}")))?;
    StreamName::new(stream_type, stream_id).map_err(|e| corrupt(format!("stored stream name: {e}")))
}

/// Most stream names a store keeps at hand for reads across streams (a
/// query by tag, a global read): each entry spares a read that meets the
/// stream a lookup or a check and two allocations. When the cache is full
/// and a read meets another stream, it starts again empty; nothing fails.
pub const MAX_CACHED_STREAMS: usize = 16_384;

/// Committed stream names by stream key, shared by every connection that
/// reads events, so that a read across streams does not validate and
/// allocate the names of a stream an earlier read already built.
///
/// **Invariant**: a stream row is never deleted and its names never change
/// once committed (a hard delete removes the events and keeps the row), so
/// an entry stays true for the life of the file. Only reads of committed
/// rows use the cache: a stream created in a transaction that rolls back
/// never enters it. Every event's checksum covers its stream's names, so
/// even a file changed behind the store's back cannot make a wrong entry
/// reach a caller: the event fails its checksum instead.
pub(crate) type StreamCache = SharedCache<StreamName, MAX_CACHED_STREAMS>;

/// The integer in column `i` of `row`: read as the value it holds, without
/// `Row::get`'s conversion machinery (a read spends several of these on
/// every event).
pub(crate) fn int_column(row: &Row<'_>, i: usize) -> Result<i64, StoreError> {
    row.get_ref(i)
        .and_then(|v| Ok(v.as_i64()?))
        .map_err(store_error)
}

/// Stream keys a read across streams reserves room for when it meets its
/// first (more grow the map as usual).
const STREAMS_RESERVED: usize = 64;

/// Fills an [`EventBatch`] from rows selected with [`EVENT_COLUMNS`]: the
/// reader's side, kept to SQLite calls and copying.
pub(crate) struct BatchBuilder<'a> {
    heads: Vec<Head>,
    bytes: Vec<u8>,
    /// Names of the streams met since the last batch, handed over with it.
    streams: Vec<StreamName>,
    /// Streams met in this read, handed over or not: the next one's number.
    stream_count: usize,
    kinds: KindReader<'a>,
    /// Stream keys met, by number, for reads across streams.
    sids: HashMap<i64, u32, BuildHasherDefault<RowidHasher>>,
    last_sid: Option<i64>,
    last_stream_number: u32,
    /// Names of committed streams met by earlier reads.
    shared_streams: Option<&'a StreamCache>,
    /// Kinds already handed over in earlier batches.
    kinds_sent: usize,
    expected: usize,
    tenant: Option<TenantId>,
}

impl<'a> BatchBuilder<'a> {
    /// A builder for a read of `tenant`'s events expected to return
    /// `expected` rows (0: unknown).
    pub(crate) fn new(kinds: KindReader<'a>, expected: usize, tenant: Option<TenantId>) -> Self {
        Self {
            // A read of unknown size gets a whole batch's room at once:
            // growing from nothing cost a copy at every doubling.
            heads: Vec::with_capacity(if expected == 0 {
                BATCH_ROWS
            } else {
                expected.min(BATCH_ROWS)
            }),
            bytes: Vec::with_capacity(FIRST_BATCH_BYTES),
            streams: Vec::new(),
            stream_count: 0,
            kinds,
            sids: HashMap::default(),
            last_sid: None,
            last_stream_number: 0,
            shared_streams: None,
            kinds_sent: 0,
            expected,
            tenant,
        }
    }

    /// Uses `cache` for the names of streams not met yet in this read. Only
    /// for reads that see committed rows alone (see [`StreamCache`]).
    pub(crate) fn with_shared_streams(mut self, cache: &'a StreamCache) -> Self {
        self.shared_streams = Some(cache);
        self
    }

    /// Whether the current batch is full and should be handed over.
    pub(crate) fn is_full(&self) -> bool {
        self.heads.len() >= BATCH_ROWS
    }

    /// Hands over the rows gathered since the last batch, with the kinds
    /// and streams they are the first to use.
    pub(crate) fn take(&mut self) -> EventBatch {
        let bytes_hint = self.bytes.len();
        let heads = std::mem::replace(&mut self.heads, Vec::with_capacity(BATCH_ROWS));
        let bytes = std::mem::replace(&mut self.bytes, Vec::with_capacity(bytes_hint));
        self.batch_of(heads, bytes)
    }

    /// An [`EventBatch`] of `heads` and `bytes`, with the kinds and streams
    /// not handed over yet.
    fn batch_of(&mut self, heads: Vec<Head>, bytes: Vec<u8>) -> EventBatch {
        let kinds = self.kinds.met_since(self.kinds_sent);
        self.kinds_sent += kinds.len();
        // The names move over: the builder keeps only their numbers.
        let streams = std::mem::take(&mut self.streams);
        EventBatch {
            heads,
            bytes,
            kinds,
            streams,
            expected: std::mem::take(&mut self.expected),
            tenant: self.tenant.clone(),
        }
    }

    /// The number of the stream with key `sid`, reading its names the
    /// first time this read meets it.
    pub(crate) fn stream(&mut self, conn: &Connection, sid: i64) -> Result<u32, StoreError> {
        if self.last_sid == Some(sid) {
            return Ok(self.last_stream_number);
        }
        let number = match self.sids.get(&sid) {
            Some(n) => *n,
            None => {
                // The event's checksum covers the names: a wrong cache entry
                // could only surface as a mismatch, never as another
                // stream's name.
                let s = SharedCache::get_or_read(self.shared_streams, sid, || {
                    stored_stream(conn, sid)
                })?;
                let n = self.add_stream(s);
                if self.sids.capacity() == 0 {
                    // Reads across streams meet many: growing the map
                    // from nothing rehashed it at every doubling.
                    self.sids.reserve(STREAMS_RESERVED);
                }
                self.sids.insert(sid, n);
                n
            }
        };
        self.last_sid = Some(sid);
        self.last_stream_number = number;
        Ok(number)
    }

    /// Adds `stream` and returns its number.
    pub(crate) fn add_stream(&mut self, stream: StreamName) -> u32 {
        self.streams.push(stream);
        self.stream_count += 1;
        // A read holds at most `MAX_READ_LIMIT` rows, or one stream.
        u32::try_from(self.stream_count - 1).unwrap_or(u32::MAX)
    }

    /// Adds one row of stream number `stream`; the [`Assembler`] checks it.
    pub(crate) fn push(
        &mut self,
        conn: &Connection,
        row: &Row<'_>,
        stream: u32,
    ) -> Result<(), StoreError> {
        let position = int_column(row, 0)?;
        let version = int_column(row, 1)?;
        let event_id: &[u8] = row
            .get_ref(2)
            .and_then(|v| Ok(v.as_blob()?))
            .map_err(store_error)?;
        let kind = int_column(row, 3)?;
        let payload: &[u8] = row
            .get_ref(4)
            .and_then(|v| Ok(v.as_blob()?))
            .map_err(store_error)?;
        let timestamp = int_column(row, 5)?;
        let metadata_text: Option<&str> = row
            .get_ref(6)
            .and_then(|v| Ok(v.as_str_or_null()?))
            .map_err(store_error)?;
        let checksum = int_column(row, 7)?;
        let tags: Option<&[u8]> = row
            .get_ref(8)
            .and_then(|v| Ok(v.as_blob_or_null()?))
            .map_err(store_error)?;
        let id: [u8; 16] = event_id
            .try_into()
            .map_err(|_| corrupt(format!("invalid event id at position {position}")))?;
        let kind = self.kinds.resolve(conn, kind)?;
        let payload_end = self.bytes.len() + payload.len();
        self.bytes.extend_from_slice(payload);
        if let Some(t) = metadata_text {
            self.bytes.extend_from_slice(t.as_bytes());
        }
        let meta_end = self.bytes.len();
        if let Some(t) = tags {
            self.bytes.extend_from_slice(t);
        }
        self.heads.push(Head {
            position,
            version,
            id,
            timestamp,
            checksum,
            payload_end,
            meta_end,
            has_meta: metadata_text.is_some(),
            tags_end: self.bytes.len(),
            has_tags: tags.is_some(),
            kind,
            stream,
        });
        Ok(())
    }

    /// The last batch, ready to cross threads.
    pub(crate) fn finish(mut self) -> EventBatch {
        // Unlike `take`, no room is left behind for a next batch.
        let heads = std::mem::take(&mut self.heads);
        let bytes = std::mem::take(&mut self.bytes);
        self.batch_of(heads, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eskit_core::event::{CodecName, EventType};

    #[test]
    fn metadata_round_trips_and_garbage_is_refused() {
        let m = Metadata::new_chain(Principal::user("ada"))
            .with_causation_id("c")
            .with_idempotency_key("k")
            .with_extra("a", "\"quoted\"\n\u{1}");
        let text = StoredMetadata::of(&m).0.unwrap_or_default();
        assert_eq!(parse_metadata(&text), Some(m));
        assert!(StoredMetadata::of(&Metadata::new()).0.is_none());
        for bad in [
            "",
            "{",
            "[]",
            "null",
            "1e999",
            "{\"correlation_id\":1}",
            "{\"unknown\":\"x\"}",
            "{\"x.a\":\"1\",\"x.a\":\"2\"}",
            "{\"initiator.kind\":\"user\"}",
            "{\"initiator\":{\"kind\":\"user\"}}",
            "{\"initiator\":{\"kind\":\"user\",\"id\":\"a\",\"x\":1}}",
            "{\"extra\":{\"a\":NaN}}",
            "{\"extra\":[1]}",
            "{\"extra\":{\"a\":{}}}",
            "\u{0}",
        ] {
            assert_eq!(parse_metadata(bad), None, "{bad}");
        }
        let deep = "[".repeat(100_000);
        assert_eq!(parse_metadata(&deep), None);
    }

    /// The nested JSON rows were written in before the flat wire shape.
    fn nested_text(m: &Metadata) -> String {
        let principal =
            |p: &Principal| serde_json::json!({ "kind": p.kind().as_str(), "id": p.id() });
        let mut o = serde_json::Map::new();
        for (k, v) in [
            ("correlation_id", m.correlation_id()),
            ("causation_id", m.causation_id()),
            ("idempotency_key", m.idempotency_key()),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), v.into());
            }
        }
        if let Some(p) = m.initiator() {
            o.insert("initiator".into(), principal(p));
        }
        if let Some(p) = m.originator() {
            o.insert("originator".into(), principal(p));
        }
        if !m.extra().is_empty() {
            let extra = m
                .extra()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().into()))
                .collect();
            o.insert("extra".into(), serde_json::Value::Object(extra));
        }
        serde_json::Value::Object(o).to_string()
    }

    fn sample_metadata() -> Metadata {
        Metadata::new_chain(Principal::user("ada"))
            .continue_from(EventId::new(), Principal::service("billing"))
            .with_idempotency_key("retry-1")
            .with_extra("region", "eu")
            .with_extra("note", "{\"nested\": [1]}")
    }

    #[test]
    fn rows_are_written_flat_and_nested_rows_still_read() -> Result<(), Box<dyn std::error::Error>>
    {
        use eskit_core::{
            event::{EventType, ExpectedVersion, NewEvent},
            rt::block_on,
            store::{AppendOptions, EventStore, LoadOptions},
        };
        let dir = std::env::temp_dir().join(format!("eskit-sqlite-meta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("store.db");
        let m = sample_metadata();
        let stream = StreamName::new("order", "o-1")?;
        let store = crate::SqliteStore::open(&path)?;
        let events = ["A", "B"]
            .map(|t| EventType::new(t).map(|t| NewEvent::new(t, b"{}".to_vec())))
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        block_on(store.append(
            &stream,
            ExpectedVersion::NoStream,
            events,
            AppendOptions::new().with_metadata(m.clone()),
        ))?;
        block_on(store.close());
        drop(store);

        let c = Connection::open(&path)?;
        let stored: Vec<Option<String>> = c
            .prepare("SELECT metadata FROM eskit_events ORDER BY position")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let flat = metadata_to_json(&m);
        assert_eq!(stored, [flat.clone(), flat]);
        assert!(
            stored[0]
                .as_deref()
                .is_some_and(|t| t.contains("\"initiator.kind\":\"service\""))
        );

        // Turn the first row into one written before the flat shape, with
        // its checksum, as an older file holds it.
        let nested = nested_text(&m);
        type RowParts = (
            i64,
            String,
            String,
            i64,
            Vec<u8>,
            String,
            u32,
            String,
            Vec<u8>,
            i64,
            Option<Vec<u8>>,
        );
        let row: RowParts = c.query_row(
            "SELECT e.position, s.stream_type, s.stream_id, e.version, e.event_id, k.event_type, \
             k.schema_version, k.codec, e.payload, e.timestamp, e.tags FROM eskit_events e \
             JOIN eskit_streams s ON s.sid = e.stream JOIN eskit_event_kinds k ON k.kind = e.kind \
             ORDER BY e.position LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            },
        )?;
        let (position, st, sid, version, id, ty, schema, codec, payload, ts, tags) = row;
        let id: [u8; 16] = id.try_into().map_err(|_| "event id of 16 bytes")?;
        let stream = StreamName::new(st, sid)?;
        let sum = event_checksum(
            &mut Vec::new(),
            &SumFields {
                position,
                stream: StreamOrPart::Stream(&stream),
                version,
                event_id: &id,
                kind: KindOrPart::Fields {
                    event_type: &ty,
                    schema_version: schema,
                    codec: &codec,
                },
                payload: &payload,
                timestamp: ts,
                meta: Some(&nested),
                tags: tags.as_deref(),
                tenant: "",
            },
        );
        c.execute(
            "UPDATE eskit_events SET metadata = ?1, checksum = ?2 WHERE position = ?3",
            (&nested, sum, position),
        )?;
        drop(c);

        let store = crate::SqliteStore::open(&path)?;
        let loaded = block_on(store.load(&stream, LoadOptions::new()))?;
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].metadata, m, "the nested row");
        assert_eq!(loaded[1].metadata, m, "the flat row");
        // A retry with the key still finds the append through either row.
        assert_eq!(
            block_on(store.find_idempotent(&stream, "retry-1"))?.map(|e| e.len()),
            Some(2)
        );
        block_on(store.close());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn tags_round_trip_and_other_shapes_are_refused() -> Result<(), StoreError> {
        let t = |s: &str| Tag::new(s).map_err(StoreError::from);
        assert_eq!(tags_blob(&[]), None);
        let set = vec![t("a")?, t("b:c")?, t("é")?];
        let blob = tags_blob(&set).unwrap_or_default();
        assert_eq!(blob, b"a\0b:c\0\xc3\xa9");
        assert_eq!(parse_tags(&blob), Some(Tags::from(set)));
        for bad in [
            &b""[..],
            b"\0",
            b"a\0",
            b"a\0\0b",
            b"b\0a",
            b"a\0a",
            b"\xff",
        ] {
            assert_eq!(parse_tags(bad), None, "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn tags_shared_with_the_previous_event_parse_as_alone() -> Result<(), StoreError> {
        let t = |s: &str| Tag::new(s).map_err(StoreError::from);
        let prev = vec![t("course:c-1")?, t("term:2026")?];
        let mut met = MetTags::default();
        // Same place, other place, a new tag: each parses as it would alone,
        // and a tag equal to the previous event's is that tag, shared.
        for blob in [
            &b"course:c-1\0term:2026"[..],
            b"course:c-2\0term:2026",
            b"a\0course:c-1",
            b"term:2026",
        ] {
            let parsed = parse_tags_in(blob, &prev, &mut met);
            assert_eq!(parsed, parse_tags(blob), "{blob:?}");
            let Some(tags) = parsed else {
                return Err(corrupt("a valid blob was refused"));
            };
            for (i, tag) in tags.iter().enumerate() {
                if let Some(p) = prev.get(i).filter(|p| *p == tag) {
                    assert!(std::ptr::eq(p.as_str(), tag.as_str()), "{tag:?} not shared");
                }
            }
        }
        // The previous event's tags never make bad tags pass: order,
        // repeats and empty tags are checked on the result.
        for bad in [
            &b"term:2026\0course:c-1"[..],
            b"course:c-1\0course:c-1",
            b"course:c-1\0",
        ] {
            assert_eq!(parse_tags_in(bad, &prev, &mut met), None, "{bad:?}");
        }
        Ok(())
    }

    /// Tags parsed with nothing shared: the reference the sharing paths
    /// must agree with.
    fn tags_alone(blob: &[u8]) -> Option<Vec<Tag>> {
        let text = std::str::from_utf8(blob).ok()?;
        let tags = text
            .split('\0')
            .map(|t| Tag::new(t).ok())
            .collect::<Option<Vec<_>>>()?;
        tags.windows(2).all(|w| w[0] < w[1]).then_some(tags)
    }

    #[test]
    fn shared_tags_never_change_what_a_blob_parses_to() {
        // Blobs from pieces that make valid, repeated, unordered, empty and
        // invalid UTF-8 tags; one read's `MetTags` and the previous event's
        // tags carried across all of them, as in a read.
        let pieces: [&[u8]; 9] = [
            b"a",
            b"b",
            b"course:c-1",
            b"course:c-2",
            b"term:2026",
            b"\0",
            b"\xc3\xa9",
            b"\xff",
            b"\xc3",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut met = MetTags::default();
        let mut prev = Tags::new();
        let mut valid = 0;
        for _ in 0..20_000 {
            let mut blob = Vec::new();
            for _ in 0..next() % 6 {
                blob.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let shared = parse_tags_in(&blob, &prev, &mut met);
            assert_eq!(
                shared,
                tags_alone(&blob).map(Tags::from),
                "{blob:?} after {prev:?}"
            );
            if let Some(tags) = shared {
                valid += 1;
                prev = tags;
            }
        }
        assert!(
            valid > 1_000,
            "only {valid} valid blobs: the test proves little"
        );
    }

    #[test]
    fn the_stream_cache_stays_bounded_and_keeps_the_latest() -> Result<(), StoreError> {
        let cache = StreamCache::default();
        let name = |i: usize| StreamName::new("s", i.to_string()).map_err(StoreError::from);
        for i in 0..=MAX_CACHED_STREAMS {
            cache.put(i as i64, &name(i)?);
            assert!(cache.len() <= MAX_CACHED_STREAMS);
        }
        let last = MAX_CACHED_STREAMS as i64;
        assert_eq!(cache.get(last), Some(name(MAX_CACHED_STREAMS)?));
        // Putting a key already held never empties the cache.
        let before = cache.len();
        cache.put(last, &name(MAX_CACHED_STREAMS)?);
        assert_eq!(cache.len(), before);
        Ok(())
    }

    #[test]
    fn long_and_short_tails_hash_as_one_sequence() {
        for len in [0, 1, INLINE_TAIL - 1, INLINE_TAIL, INLINE_TAIL + 1, 100_000] {
            let tail: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut buf = Vec::new();
            let sum = Checksum::new(&mut buf).int(7).bytes(b"abc").finish(&tail);
            let mut whole = Vec::new();
            whole.extend_from_slice(&7_i64.to_le_bytes());
            whole.extend_from_slice(&3_u64.to_le_bytes());
            whole.extend_from_slice(b"abc");
            whole.extend_from_slice(&(len as u64).to_le_bytes());
            whole.extend_from_slice(&tail);
            assert_eq!(
                sum,
                i64::from_le_bytes(xxh3_64(&whole).to_le_bytes()),
                "{len}"
            );
        }
    }

    /// One event's fields for a checksum, all but its stream and kind fixed.
    fn fields<'a>(
        stream: StreamOrPart<'a>,
        kind: KindOrPart<'a>,
        meta: Option<&'a str>,
        tags: Option<&'a [u8]>,
        tenant: &'a str,
    ) -> SumFields<'a> {
        SumFields {
            position: 9,
            stream,
            version: 2,
            event_id: &[7; 16],
            kind,
            payload: b"{}",
            timestamp: 5,
            meta,
            tags,
            tenant,
        }
    }

    #[test]
    fn a_checksum_of_parts_is_the_checksum() -> Result<(), Box<dyn std::error::Error>> {
        let kind = Kind {
            event_type: EventType::new("Enrolled")?,
            schema_version: 3,
            codec: CodecName::new("json")?,
        };
        let stream = StreamName::new("course", "c-1")?;
        let other = StreamName::new("cours", "ec-1")?;
        let mut scratch = Vec::new();
        for (meta, tags, tenant) in [
            (None, None, ""),
            (Some("{\"a\":\"b\"}"), Some(&b"t1\0t2"[..]), "acme"),
            (None, Some(&b"x"[..]), ""),
        ] {
            let sum = |s: &StreamName, scratch: &mut Vec<u8>| {
                let kind = KindOrPart::Fields {
                    event_type: "Enrolled",
                    schema_version: 3,
                    codec: "json",
                };
                event_checksum(
                    scratch,
                    &fields(StreamOrPart::Stream(s), kind, meta, tags, tenant),
                )
            };
            let whole = sum(&stream, &mut scratch);
            // The stream by its names and by its part, once per event as a
            // read meets it: the first event, the second (the part is
            // built), the third (the part is reused); the kind by its part.
            let mut part = StreamPart::Unused;
            let kind_part = SumPart::kind(&kind);
            for _ in 0..3 {
                let f = fields(
                    part.next(&stream),
                    KindOrPart::Part(&kind_part),
                    meta,
                    tags,
                    tenant,
                );
                assert_eq!(event_checksum(&mut scratch, &f), whole);
            }
            assert!(matches!(part, StreamPart::Built(_)));
            // Names that run together the same way still differ.
            assert_ne!(sum(&other, &mut scratch), whole);
        }
        Ok(())
    }

    #[test]
    fn whole_tag_lists_are_kept_shared_and_bounded() -> Result<(), StoreError> {
        let mut met = MetTags::default();
        let blob = |i: usize| format!("course:c-{i:04}\0term:2026").into_bytes();
        // Past the first lists, each list parsed whole is kept once.
        let mut first = Vec::new();
        for i in 0..MET_LISTS_BEFORE_CACHE + 40 {
            let tags = parse_tags_in(&blob(i), &[], &mut met).ok_or_else(|| corrupt("refused"))?;
            first.push(tags);
        }
        let kept = met.lists.iter().flatten().count();
        assert!(kept >= 30, "only {kept} of 40 lists kept");
        for (i, tags) in first.iter().enumerate() {
            // A kept list is the list its blob parses to; a lookup finds it.
            let b = blob(i);
            let hit = met.list(&b);
            if let Some(Some(l)) = met.lists.get(MetTags::list_slot(&b))
                && *l.blob == *b
            {
                assert_eq!(hit.as_ref(), Some(tags));
            } else {
                assert_eq!(hit, None);
            }
            let again = parse_tags_in(&b, &[], &mut met).ok_or_else(|| corrupt("refused"))?;
            assert_eq!(&again, tags);
        }
        // However many lists a read meets, it keeps at most one per slot,
        // and none longer than the bound.
        for i in 0..10_000 {
            parse_tags_in(&blob(i), &[], &mut met).ok_or_else(|| corrupt("refused"))?;
        }
        let long: Vec<u8> = [&b"a"[..], b"\0", &[b'b'; MAX_MET_LIST_BYTES][..]].concat();
        let mut long_met = MetTags::default();
        for _ in 0..MET_LISTS_BEFORE_CACHE + 2 {
            parse_tags_in(&long, &[], &mut long_met).ok_or_else(|| corrupt("refused"))?;
        }
        assert!(long_met.lists.iter().all(Option::is_none));
        assert!(met.lists.len() <= MET_LIST_SLOTS);
        assert!(
            met.lists
                .iter()
                .flatten()
                .all(|l| l.blob.len() <= MAX_MET_LIST_BYTES)
        );
        Ok(())
    }

    #[test]
    fn reads_share_the_lists_earlier_reads_parsed() -> Result<(), StoreError> {
        let cache = Arc::new(TagListCache::default());
        let reader = || MetTags {
            shared: Some(Arc::clone(&cache)),
            ..MetTags::default()
        };
        let blob = b"course:c-1\0term:2026";
        let first = parse_tags_in(blob, &[], &mut reader()).ok_or_else(|| corrupt("refused"))?;
        // A later read takes the same tags, not a copy of them.
        let again = parse_tags_in(blob, &[], &mut reader()).ok_or_else(|| corrupt("refused"))?;
        assert_eq!(again, first);
        assert!(std::ptr::eq(again[0].as_str(), first[0].as_str()));
        // An entry under a list's key whose bytes differ (a hash collision)
        // is a miss: the list parses as itself.
        let other = b"a\0b";
        cache.put(
            list_key(other),
            &MetList {
                blob: Arc::from(&blob[..]),
                tags: first.clone(),
            },
        );
        let parsed = parse_tags_in(other, &[], &mut reader()).ok_or_else(|| corrupt("refused"))?;
        assert_eq!(parsed, parse_tags(other).ok_or_else(|| corrupt("refused"))?);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].as_str(), "a");
        // Bad bytes never enter it, however often they are read.
        for _ in 0..3 {
            assert_eq!(parse_tags_in(b"b\0a", &[], &mut reader()), None);
        }
        assert!(cache.get(list_key(b"b\0a")).is_none());
        // It stays bounded.
        let mut met = reader();
        for i in 0..MAX_CACHED_TAG_LISTS + 10 {
            parse_tags_in(format!("t{i}").as_bytes(), &[], &mut met)
                .ok_or_else(|| corrupt("refused"))?;
            assert!(cache.len() <= MAX_CACHED_TAG_LISTS);
        }
        Ok(())
    }
}
