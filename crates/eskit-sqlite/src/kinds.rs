//! Event kinds: each distinct (event type, schema version, codec) is stored
//! once in `eskit_event_kinds`, and event rows carry its integer key.
//!
//! A load then reads one integer per event instead of two strings and a
//! number, and hands out shared names instead of fresh allocations.
//!
//! **Invariant**: a kind row is never changed or deleted once committed, so
//! a cached `kind -> names` entry stays true for the life of the file. Only
//! committed kinds enter a cache: readers see nothing else, and the writer
//! adds a batch's new kinds only after that batch's transaction commits.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{PoisonError, RwLock};

use eskit_core::{
    error::StoreError,
    event::{CodecName, EventType, NewEvent},
};
use rusqlite::{Connection, OptionalExtension};

use crate::error::{corrupt, store_error};
use crate::row::RowidHasher;

/// Most kinds a store keeps at hand for its reads. When the cache is full
/// and a read meets another kind, it starts again empty; nothing fails.
pub const MAX_CACHED_KINDS: usize = 65_536;

/// Most kinds one read keeps at hand before asking the shared cache.
const LOCAL_KINDS: usize = 16;

/// The names behind one kind key.
#[derive(Clone)]
pub(crate) struct Kind {
    pub(crate) event_type: EventType,
    pub(crate) schema_version: u32,
    pub(crate) codec: CodecName,
}

/// Values by row key, shared by every connection that reads events, for
/// rows that never change once committed (kinds; stream names, see
/// `row::StreamCache`). Holds at most `MAX` entries: a new key that would
/// pass it empties the cache first, so it keeps serving the keys in use.
pub(crate) struct SharedCache<V, const MAX: usize> {
    map: RwLock<HashMap<i64, V, BuildHasherDefault<RowidHasher>>>,
}

impl<V, const MAX: usize> Default for SharedCache<V, MAX> {
    fn default() -> Self {
        Self {
            map: RwLock::default(),
        }
    }
}

impl<V: Clone, const MAX: usize> SharedCache<V, MAX> {
    pub(crate) fn get(&self, key: i64) -> Option<V> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }

    pub(crate) fn put(&self, key: i64, value: &V) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, value.clone());
    }

    /// The value of `key` from `cache` when it holds one, else `read()`,
    /// then kept in `cache`.
    pub(crate) fn get_or_read<E>(
        cache: Option<&Self>,
        key: i64,
        read: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some(v) = cache.and_then(|c| c.get(key)) {
            return Ok(v);
        }
        let v = read()?;
        if let Some(c) = cache {
            c.put(key, &v);
        }
        Ok(v)
    }

    /// Number of entries held (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Committed kinds, shared by every connection that reads events.
pub(crate) type KindCache = SharedCache<Kind, MAX_CACHED_KINDS>;

/// Resolves kind keys during one read, numbering the kinds it meets: the
/// last one met, then those met before, then the shared cache (when the read
/// sees only committed rows), then the table.
pub(crate) struct KindReader<'a> {
    shared: Option<&'a KindCache>,
    keys: Vec<i64>,
    met: Vec<Kind>,
    index: HashMap<i64, u32>,
    last: usize,
}

impl<'a> KindReader<'a> {
    /// A resolver for a read outside any write transaction: what it looks
    /// up is committed, so it may fill the shared cache.
    pub(crate) fn committed(cache: &'a KindCache) -> Self {
        Self::with(Some(cache))
    }

    /// A resolver for a read inside the writer's open transaction, which may
    /// see kinds that are not committed yet: it never touches a shared cache.
    pub(crate) fn uncommitted() -> Self {
        Self::with(None)
    }

    fn with(shared: Option<&'a KindCache>) -> Self {
        Self {
            shared,
            keys: Vec::new(),
            met: Vec::new(),
            index: HashMap::new(),
            last: 0,
        }
    }

    /// The number of `key`'s kind among those this read has met.
    pub(crate) fn resolve(&mut self, conn: &Connection, key: i64) -> Result<u32, StoreError> {
        if self.keys.get(self.last) == Some(&key) {
            return Ok(self.last as u32);
        }
        let found = if self.keys.len() <= LOCAL_KINDS {
            self.keys.iter().position(|k| *k == key)
        } else {
            self.index.get(&key).map(|i| *i as usize)
        };
        let i = match found {
            Some(i) => i,
            None => {
                let kind = SharedCache::get_or_read(self.shared, key, || read_kind(conn, key))?;
                let i = self.keys.len();
                let number = u32::try_from(i)
                    .map_err(|_| corrupt("more kinds in one read than fit in u32"))?;
                if i == LOCAL_KINDS {
                    self.index
                        .extend(self.keys.iter().enumerate().map(|(n, k)| (*k, n as u32)));
                }
                if i >= LOCAL_KINDS {
                    self.index.insert(key, number);
                }
                self.keys.push(key);
                self.met.push(kind);
                i
            }
        };
        self.last = i;
        Ok(i as u32)
    }

    /// Copies of the kinds met from number `first` on.
    pub(crate) fn met_since(&self, first: usize) -> Vec<Kind> {
        self.met
            .get(first..)
            .map(<[Kind]>::to_vec)
            .unwrap_or_default()
    }
}

fn read_kind(conn: &Connection, key: i64) -> Result<Kind, StoreError> {
    let row: Option<(String, i64, String)> = conn
        .prepare_cached(
            "SELECT event_type, schema_version, codec FROM eskit_event_kinds WHERE kind = ?1",
        )
        .and_then(|mut s| {
            s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(store_error)?;
    let Some((event_type, schema_version, codec)) = row else {
        return Err(corrupt(format!("an event names the unknown kind {key}")));
    };
    let bad = |what: &str| corrupt(format!("invalid {what} in event kind {key}"));
    Ok(Kind {
        event_type: EventType::new(event_type).map_err(|_| bad("event type"))?,
        schema_version: u32::try_from(schema_version)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| bad("schema version"))?,
        codec: CodecName::new(codec).map_err(|_| bad("codec name"))?,
    })
}

/// The writer's map from names to committed kind keys.
#[derive(Default)]
pub(crate) struct KindKeys {
    by_type: HashMap<EventType, Vec<(u32, CodecName, i64)>>,
    len: usize,
}

/// Kinds an append resolved that are not known committed yet.
pub(crate) type FreshKinds = Vec<(Kind, i64)>;

impl KindKeys {
    fn get(&self, event: &NewEvent) -> Option<i64> {
        self.by_type
            .get(event.event_type().as_str())?
            .iter()
            .find(|(v, c, _)| *v == event.schema_version() && c.as_str() == event.codec())
            .map(|(_, _, key)| *key)
    }

    /// The key of `event`'s kind inside the writer's open transaction,
    /// inserting the kind when it is new. Kinds not yet known committed are
    /// pushed to `fresh`, for [`Self::committed`] once the batch commits.
    pub(crate) fn key_for(
        &self,
        conn: &Connection,
        event: &NewEvent,
        fresh: &mut FreshKinds,
    ) -> Result<i64, StoreError> {
        if let Some(key) = self.get(event) {
            return Ok(key);
        }
        let (ty, version, codec) = (
            event.event_type().as_str(),
            i64::from(event.schema_version()),
            event.codec(),
        );
        let found: Option<i64> = conn
            .prepare_cached(
                "SELECT kind FROM eskit_event_kinds \
                 WHERE event_type = ?1 AND schema_version = ?2 AND codec = ?3",
            )
            .and_then(|mut s| s.query_row((ty, version, codec), |r| r.get(0)).optional())
            .map_err(store_error)?;
        let key = match found {
            Some(key) => key,
            None => {
                conn.prepare_cached(
                    "INSERT INTO eskit_event_kinds (event_type, schema_version, codec) \
                     VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute((ty, version, codec)))
                .map_err(store_error)?;
                conn.last_insert_rowid()
            }
        };
        let codec = CodecName::new(codec).map_err(StoreError::from)?;
        fresh.push((
            Kind {
                event_type: event.event_type().clone(),
                schema_version: event.schema_version(),
                codec,
            },
            key,
        ));
        Ok(key)
    }

    /// Remembers kinds whose rows are now committed.
    pub(crate) fn committed(&mut self, fresh: FreshKinds) {
        for (kind, key) in fresh {
            if self.len >= MAX_CACHED_KINDS {
                return;
            }
            let entries = self.by_type.entry(kind.event_type).or_default();
            if !entries
                .iter()
                .any(|(v, c, _)| *v == kind.schema_version && *c == kind.codec)
            {
                entries.push((kind.schema_version, kind.codec, key));
                self.len += 1;
            }
        }
    }
}
