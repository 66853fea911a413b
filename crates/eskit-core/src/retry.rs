//! The one decision every backend makes when an append's idempotency key
//! was already used on the stream: the same content is a retry
//! (deduplicated, nothing written), anything else a conflict.

use crate::error::StoreError;
use crate::event::{AppendResult, EventRecord, NewEvent, RawEvent, StreamName, Tag, TenantId};

/// What an idempotent retry is compared on: everything an event carries
/// except its id, stream position and metadata (a retry may carry a new
/// correlation id or timestamp and still be the same append).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventContent<'a> {
    /// The wire type name.
    pub event_type: &'a str,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The codec name.
    pub codec: &'a str,
    /// The encoded payload.
    pub payload: &'a [u8],
    /// The tags, sorted and without duplicates.
    pub tags: &'a [Tag],
}

/// An event whose [`EventContent`] a retry is compared on: what a backend
/// kept of the first append ([`RawEvent`] as stored, or the [`NewEvent`]s
/// themselves) and the retry's [`NewEvent`]s.
pub trait HasContent {
    /// The event's content.
    fn content(&self) -> EventContent<'_>;
}

impl HasContent for NewEvent {
    fn content(&self) -> EventContent<'_> {
        EventContent {
            event_type: self.event_type().as_str(),
            schema_version: self.schema_version(),
            codec: self.codec(),
            payload: self.payload(),
            tags: self.tags(),
        }
    }
}

impl HasContent for RawEvent {
    fn content(&self) -> EventContent<'_> {
        EventContent {
            event_type: self.event_type.as_str(),
            schema_version: self.schema_version,
            codec: self.codec.as_str(),
            payload: &self.payload,
            tags: &self.tags,
        }
    }
}

impl<T: HasContent + ?Sized> HasContent for &T {
    fn content(&self) -> EventContent<'_> {
        (**self).content()
    }
}

impl<T: HasContent + ?Sized> HasContent for std::sync::Arc<T> {
    fn content(&self) -> EventContent<'_> {
        (**self).content()
    }
}

/// Decides an append whose idempotency `key` an earlier append to `stream`
/// already used: `stored` are that append's events, `retry` this one's.
///
/// The same number of events with the same [`EventContent`] in the same
/// order is a retry: the result is the earlier append's `records()`, marked
/// deduplicated, and the backend writes nothing. Anything else is
/// [`StoreError::IdempotencyConflict`]. Every backend decides with this, so
/// they all agree on what counts as the same append.
///
/// ```
/// use eskit_core::backend::idempotent_retry;
/// use eskit_core::error::StoreError;
/// use eskit_core::event::{EventType, NewEvent, StreamName};
/// let stream = StreamName::new("order", "o-1")?;
/// let first = vec![NewEvent::new(EventType::new("Placed")?, b"1".to_vec())];
/// // A retry carries fresh ids and the same content: deduplicated.
/// let retry = vec![NewEvent::new(EventType::new("Placed")?, b"1".to_vec())];
/// let done = idempotent_retry(&stream, "k", &first, &retry, None, Vec::new)?;
/// assert!(done.deduplicated);
/// // Other content under the same key: a conflict.
/// let other = vec![NewEvent::new(EventType::new("Placed")?, b"2".to_vec())];
/// let err = idempotent_retry(&stream, "k", &first, &other, None, Vec::new);
/// assert!(matches!(err, Err(StoreError::IdempotencyConflict { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`StoreError::IdempotencyConflict`] naming the stream and the key.
pub fn idempotent_retry<S: HasContent, R: HasContent>(
    stream: &StreamName,
    key: &str,
    stored: &[S],
    retry: &[R],
    tenant: Option<&TenantId>,
    records: impl FnOnce() -> Vec<EventRecord>,
) -> Result<AppendResult, StoreError> {
    let same = stored.len() == retry.len()
        && stored
            .iter()
            .zip(retry)
            .all(|(a, b)| a.content() == b.content());
    if !same {
        return Err(StoreError::IdempotencyConflict {
            stream: stream.clone(),
            key: key.to_owned(),
        });
    }
    Ok(AppendResult {
        records: records(),
        deduplicated: true,
        tenant: tenant.cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, Metadata, Position, Timestamp, Version};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn event(ty: &str, payload: &[u8]) -> Result<NewEvent, Box<dyn std::error::Error>> {
        Ok(NewEvent::new(EventType::new(ty)?, payload.to_vec()).with_codec("json"))
    }

    fn check(stored: Vec<NewEvent>, retry: Vec<NewEvent>, deduplicated: bool) -> TestResult {
        let (stored, retry) = (&stored[..], &retry[..]);
        let stream = StreamName::new("s", "1")?;
        let raw: Vec<RawEvent> = stored
            .iter()
            .enumerate()
            .map(|(i, e)| {
                RawEvent::from_new(
                    e.clone(),
                    stream.clone(),
                    Version::new(i as u64 + 1),
                    Position::new(i as u64 + 1),
                    Timestamp::now(),
                    Metadata::new().with_correlation_id("first"),
                )
            })
            .collect();
        let records = || raw.iter().map(RawEvent::record).collect::<Vec<_>>();
        // Both what backends keep (the events as appended, or as stored)
        // decide the same.
        for outcome in [
            idempotent_retry(&stream, "k", stored, retry, None, records),
            idempotent_retry(&stream, "k", &raw, retry, None, records),
        ] {
            match outcome {
                Ok(r) => {
                    assert!(deduplicated, "{stored:?} / {retry:?} deduplicated");
                    assert!(r.deduplicated);
                    assert_eq!(r.records, records());
                }
                Err(StoreError::IdempotencyConflict { stream: s, key }) => {
                    assert!(!deduplicated, "{stored:?} / {retry:?} refused");
                    assert_eq!((s, key.as_str()), (stream.clone(), "k"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    #[test]
    fn the_same_content_is_a_retry_and_anything_else_a_conflict() -> TestResult {
        let a = event("A", b"1")?;
        let tagged = a.clone().with_tags([Tag::new("t")?]);
        check(vec![a.clone()], vec![event("A", b"1")?], true)?;
        check(
            vec![a.clone(), tagged.clone()],
            vec![a.clone(), tagged.clone()],
            true,
        )?;
        check(vec![a.clone()], vec![event("A", b"2")?], false)?;
        check(vec![a.clone()], vec![event("B", b"1")?], false)?;
        check(
            vec![a.clone()],
            vec![a.clone().with_schema_version(2)],
            false,
        )?;
        check(vec![a.clone()], vec![a.clone().with_codec("cbor")], false)?;
        check(vec![a.clone()], vec![tagged.clone()], false)?;
        check(vec![a.clone()], vec![a.clone(), a.clone()], false)?;
        check(
            vec![a.clone(), tagged.clone()],
            vec![tagged, a.clone()],
            false,
        )?;
        check(vec![a.clone(), a.clone()], vec![a], false)?;
        Ok(())
    }
}
