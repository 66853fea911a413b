//! Upcasters: functions that rewrite stored payload bytes from one schema
//! version to the next, chained per event type.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::codec::CodecContext;
use crate::error::{BoxError, CodecError};
use crate::limits::MAX_UPCAST_STEPS;
use crate::name::{EventType, NameKind, validate_name};
use crate::registry::RegistryError;

/// A step; it gets the event's context when the caller has one
/// ([`UpcasterRegistry::upcast_in`], what the schema calls).
type UpcastFn =
    Arc<dyn Fn(Option<&CodecContext<'_>>, &[u8]) -> Result<Vec<u8>, BoxError> + Send + Sync>;

struct Step {
    to: u32,
    f: UpcastFn,
}

/// Upcaster chains per event type, working on raw payload bytes so the old
/// Rust types need not exist any more.
///
/// A step is either for one codec ([`register_for_codec`](Self::register_for_codec),
/// what typed upcasters use, because the bytes are in that codec's format) or
/// for payloads of any codec ([`register`](Self::register)); when both exist
/// for the same version, the codec's own step wins. Lookup of a step is O(1);
/// a chain v1 -> v2 -> v3 runs step by step, and a missing step is an error
/// naming it. A step that needs the event's [`CodecContext`] (one that
/// decrypts with the data subject's key, rewrites, and encrypts again) is
/// registered with [`register_for_codec_in_context`](Self::register_for_codec_in_context).
///
/// ```
/// use eskit_core::typed::UpcasterRegistry;
/// let mut up = UpcasterRegistry::new();
/// up.register("Renamed", 1, 2, |b| Ok(b.to_ascii_uppercase()))?;
/// up.register_for_codec("Renamed", "text", 2, 3, |b| Ok([b, b"!"].concat()))?;
/// let out = up.upcast("Renamed", "text", b"hi", 1, 3)?;
/// assert_eq!(&*out, b"HI!");
/// assert!(up.upcast("Renamed", "cbor", b"hi", 1, 3).is_err(), "no 2 -> 3 step for cbor");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct UpcasterRegistry {
    /// Steps for any codec: event type -> from version -> step.
    any: HashMap<EventType, HashMap<u32, Arc<Step>>>,
    /// Steps for one codec: codec -> event type -> from version -> step.
    by_codec: HashMap<String, HashMap<EventType, HashMap<u32, Arc<Step>>>>,
}

impl fmt::Debug for UpcasterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn steps(m: &HashMap<u32, Arc<Step>>) -> Vec<(u32, u32)> {
            let mut v: Vec<_> = m.iter().map(|(from, s)| (*from, s.to)).collect();
            v.sort_unstable();
            v
        }
        let mut m = f.debug_map();
        for (ty, s) in &self.any {
            m.entry(&format!("{ty} (any codec)"), &steps(s));
        }
        for (codec, types) in &self.by_codec {
            for (ty, s) in types {
                m.entry(&format!("{ty} ({codec})"), &steps(s));
            }
        }
        m.finish()
    }
}

fn insert_step(
    steps: &mut HashMap<EventType, HashMap<u32, Arc<Step>>>,
    event_type: &str,
    scope: &str,
    from: u32,
    to: u32,
    f: UpcastFn,
) -> Result<(), RegistryError> {
    let ty = EventType::new(event_type)?;
    if from == 0 || to <= from {
        return Err(RegistryError::InvalidVersion {
            event_type: event_type.to_owned(),
            from,
            to,
        });
    }
    let steps = steps.entry(ty).or_default();
    if steps.contains_key(&from) {
        return Err(RegistryError::Duplicate {
            name: format!("{event_type}@v{from} ({scope})"),
        });
    }
    steps.insert(from, Arc::new(Step { to, f }));
    Ok(())
}

impl UpcasterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step `from -> to` for `event_type`, for payloads of any codec.
    ///
    /// # Errors
    /// [`RegistryError`] for an invalid name, `from == 0`, `to <= from`, or a
    /// second step from the same version.
    pub fn register(
        &mut self,
        event_type: &str,
        from: u32,
        to: u32,
        f: impl Fn(&[u8]) -> Result<Vec<u8>, BoxError> + Send + Sync + 'static,
    ) -> Result<&mut Self, RegistryError> {
        insert_step(
            &mut self.any,
            event_type,
            "any codec",
            from,
            to,
            Arc::new(move |_: Option<&CodecContext<'_>>, b: &[u8]| f(b)),
        )?;
        Ok(self)
    }

    /// Registers the step `from -> to` for `event_type`, only for payloads
    /// written by the codec named `codec`.
    ///
    /// # Errors
    /// As [`UpcasterRegistry::register`], plus an invalid codec name.
    pub fn register_for_codec(
        &mut self,
        event_type: &str,
        codec: &str,
        from: u32,
        to: u32,
        f: impl Fn(&[u8]) -> Result<Vec<u8>, BoxError> + Send + Sync + 'static,
    ) -> Result<&mut Self, RegistryError> {
        self.insert_for_codec(
            event_type,
            codec,
            from,
            to,
            Arc::new(move |_: Option<&CodecContext<'_>>, b: &[u8]| f(b)),
        )
    }

    /// Registers the step `from -> to` for `event_type`, only for payloads
    /// written by the codec named `codec`, with the event's
    /// [`CodecContext`]: for a codec whose bytes depend on the context (an
    /// encrypting codec), the step can undo and redo what the codec did.
    ///
    /// [`EventSchema`](crate::typed::EventSchema) always runs steps with the
    /// context; [`upcast`](Self::upcast), which has none, fails such a step
    /// with [`CodecError::Upcast`].
    ///
    /// # Errors
    /// As [`UpcasterRegistry::register_for_codec`].
    pub fn register_for_codec_in_context(
        &mut self,
        event_type: &str,
        codec: &str,
        from: u32,
        to: u32,
        f: impl Fn(&CodecContext<'_>, &[u8]) -> Result<Vec<u8>, BoxError> + Send + Sync + 'static,
    ) -> Result<&mut Self, RegistryError> {
        self.insert_for_codec(
            event_type,
            codec,
            from,
            to,
            Arc::new(move |cx: Option<&CodecContext<'_>>, b: &[u8]| match cx {
                Some(cx) => f(cx, b),
                None => Err("this upcaster needs the event's codec context".into()),
            }),
        )
    }

    fn insert_for_codec(
        &mut self,
        event_type: &str,
        codec: &str,
        from: u32,
        to: u32,
        f: UpcastFn,
    ) -> Result<&mut Self, RegistryError> {
        validate_name(NameKind::Codec, codec)?;
        let steps = self.by_codec.entry(codec.to_owned()).or_default();
        insert_step(steps, event_type, codec, from, to, f)?;
        Ok(self)
    }

    fn step(&self, event_type: &str, codec: &str, from: u32) -> Option<&Arc<Step>> {
        self.by_codec
            .get(codec)
            .and_then(|t| t.get(event_type))
            .and_then(|s| s.get(&from))
            .or_else(|| self.any.get(event_type).and_then(|s| s.get(&from)))
    }

    /// Whether a step starts at `from` for `event_type` and `codec` (its own
    /// or one for any codec).
    pub fn has_step(&self, event_type: &str, codec: &str, from: u32) -> bool {
        self.step(event_type, codec, from).is_some()
    }

    /// The highest version any registered step for `event_type` leads to.
    pub fn latest_version(&self, event_type: &str) -> Option<u32> {
        self.any
            .get(event_type)
            .into_iter()
            .chain(self.by_codec.values().filter_map(|t| t.get(event_type)))
            .flat_map(|s| s.values().map(|s| s.to))
            .max()
    }

    /// Rewrites `payload`, written by `codec`, from schema version `from` to
    /// `target`. Returns the input unchanged (borrowed) when `from == target`.
    ///
    /// # Errors
    /// [`CodecError::NewerSchema`] when `from > target`,
    /// [`CodecError::MissingUpcaster`] for a gap in the chain (or a step that
    /// jumps past `target`), [`CodecError::TooManyUpcastSteps`] beyond
    /// [`MAX_UPCAST_STEPS`], [`CodecError::Upcast`] when a step fails.
    pub fn upcast<'a>(
        &self,
        event_type: &str,
        codec: &str,
        payload: &'a [u8],
        from: u32,
        target: u32,
    ) -> Result<Cow<'a, [u8]>, CodecError> {
        self.run(event_type, None, codec, payload, from, target)
    }

    /// [`upcast`](Self::upcast) for the event `cx` describes (its event type
    /// is `cx`'s), giving every step the context.
    ///
    /// # Errors
    /// As [`upcast`](Self::upcast).
    pub fn upcast_in<'a>(
        &self,
        cx: &CodecContext<'_>,
        codec: &str,
        payload: &'a [u8],
        from: u32,
        target: u32,
    ) -> Result<Cow<'a, [u8]>, CodecError> {
        self.run(cx.event_type(), Some(cx), codec, payload, from, target)
    }

    fn run<'a>(
        &self,
        event_type: &str,
        cx: Option<&CodecContext<'_>>,
        codec: &str,
        payload: &'a [u8],
        from: u32,
        target: u32,
    ) -> Result<Cow<'a, [u8]>, CodecError> {
        if from > target {
            return Err(CodecError::NewerSchema {
                event_type: event_type.to_owned(),
                stored: from,
                known: target,
            });
        }
        let mut data = Cow::Borrowed(payload);
        let mut version = from;
        for _ in 0..MAX_UPCAST_STEPS {
            if version == target {
                return Ok(data);
            }
            let missing = || CodecError::MissingUpcaster {
                event_type: event_type.to_owned(),
                from: version,
                target,
            };
            let step = self.step(event_type, codec, version).ok_or_else(missing)?;
            if step.to > target {
                return Err(missing());
            }
            data = Cow::Owned((step.f)(cx, &data).map_err(|source| CodecError::Upcast {
                event_type: event_type.to_owned(),
                from: version,
                source,
            })?);
            version = step.to;
        }
        if version == target {
            Ok(data)
        } else {
            Err(CodecError::TooManyUpcastSteps {
                event_type: event_type.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_failures_are_errors() -> Result<(), RegistryError> {
        let mut up = UpcasterRegistry::new();
        up.register("E", 1, 2, |b| Ok(b.to_vec()))?;
        up.register("E", 3, 4, |b| Ok(b.to_vec()))?;
        up.register("F", 1, 2, |_| Err("boom".into()))?;
        assert!(matches!(
            up.upcast("E", "c", b"x", 1, 4),
            Err(CodecError::MissingUpcaster {
                from: 2,
                target: 4,
                ..
            })
        ));
        assert!(matches!(
            up.upcast("E", "c", b"x", 5, 4),
            Err(CodecError::NewerSchema { .. })
        ));
        assert!(matches!(
            up.upcast("F", "c", b"x", 1, 2),
            Err(CodecError::Upcast { from: 1, .. })
        ));
        assert!(matches!(
            up.upcast("E", "c", b"x", 2, 2),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(
            up.register("E", 1, 3, |b| Ok(b.to_vec())),
            Err(RegistryError::Duplicate { .. })
        ));
        assert!(matches!(
            up.register("E", 2, 2, |b| Ok(b.to_vec())),
            Err(RegistryError::InvalidVersion { .. })
        ));
        assert_eq!(up.latest_version("E"), Some(4));
        Ok(())
    }

    #[test]
    fn codec_steps_win_and_stay_in_their_codec() -> Result<(), Box<dyn std::error::Error>> {
        let mut up = UpcasterRegistry::new();
        up.register("E", 1, 2, |_| Ok(b"any".to_vec()))?;
        up.register_for_codec("E", "json", 1, 2, |_| Ok(b"json".to_vec()))?;
        assert_eq!(&*up.upcast("E", "json", b"", 1, 2)?, b"json");
        assert_eq!(&*up.upcast("E", "cbor", b"", 1, 2)?, b"any");
        up.register_for_codec("E", "json", 2, 3, |b| Ok(b.to_vec()))?;
        assert!(up.has_step("E", "json", 2) && !up.has_step("E", "cbor", 2));
        assert!(matches!(
            up.upcast("E", "cbor", b"", 1, 3),
            Err(CodecError::MissingUpcaster { from: 2, .. })
        ));
        assert!(matches!(
            up.register_for_codec("E", "json", 1, 2, |b| Ok(b.to_vec())),
            Err(RegistryError::Duplicate { .. })
        ));
        assert!(matches!(
            up.register_for_codec("E", "", 5, 6, |b| Ok(b.to_vec())),
            Err(RegistryError::InvalidName(_))
        ));
        assert_eq!(up.latest_version("E"), Some(3));
        Ok(())
    }

    #[test]
    fn chains_are_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let mut up = UpcasterRegistry::new();
        let steps = MAX_UPCAST_STEPS as u32 + 1;
        for v in 1..=steps {
            up.register("Long", v, v + 1, |b| Ok([b, b"+"].concat()))?;
        }
        let max = MAX_UPCAST_STEPS as u32;
        let out = up.upcast("Long", "c", b"", 1, 1 + max)?;
        assert_eq!(
            out.len(),
            MAX_UPCAST_STEPS,
            "the longest allowed chain runs"
        );
        assert!(matches!(
            up.upcast("Long", "c", b"", 1, 2 + max),
            Err(CodecError::TooManyUpcastSteps { .. })
        ));
        Ok(())
    }
}
