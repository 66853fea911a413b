//! Upcasters: functions that rewrite stored payload bytes from one schema
//! version to the next, chained per event type.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::error::{BoxError, CodecError};
use crate::limits::MAX_UPCAST_STEPS;
use crate::name::EventType;
use crate::registry::RegistryError;

type UpcastFn = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, BoxError> + Send + Sync>;

struct Step {
    to: u32,
    f: UpcastFn,
}

/// Upcaster chains per event type, working on raw payload bytes so the old
/// Rust types need not exist any more.
///
/// Lookup of the step for `(type, version)` is O(1); a chain v1 -> v2 -> v3
/// runs step by step, and a missing step is an error naming it.
///
/// ```
/// use eskit_core::UpcasterRegistry;
/// let mut up = UpcasterRegistry::new();
/// up.register("Renamed", 1, 2, |b| Ok(b.to_ascii_uppercase()))?;
/// up.register("Renamed", 2, 3, |b| Ok([b, b"!"].concat()))?;
/// let out = up.upcast("Renamed", b"hi", 1, 3)?;
/// assert_eq!(&*out, b"HI!");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct UpcasterRegistry {
    steps: HashMap<EventType, HashMap<u32, Arc<Step>>>,
}

impl fmt::Debug for UpcasterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (ty, steps) in &self.steps {
            let mut v: Vec<_> = steps.iter().map(|(from, s)| (*from, s.to)).collect();
            v.sort_unstable();
            m.entry(ty, &v);
        }
        m.finish()
    }
}

impl UpcasterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step `from -> to` for `event_type`.
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
        let ty = EventType::new(event_type)?;
        if from == 0 || to <= from {
            return Err(RegistryError::InvalidVersion {
                event_type: event_type.to_owned(),
                from,
                to,
            });
        }
        let steps = self.steps.entry(ty).or_default();
        if steps.contains_key(&from) {
            return Err(RegistryError::Duplicate {
                name: format!("{event_type}@v{from}"),
            });
        }
        steps.insert(from, Arc::new(Step { to, f: Arc::new(f) }));
        Ok(self)
    }

    /// Whether a step starts at `from` for `event_type`.
    pub fn has_step(&self, event_type: &str, from: u32) -> bool {
        self.steps
            .get(event_type)
            .is_some_and(|s| s.contains_key(&from))
    }

    /// The highest version any registered step leads to, if there are steps.
    pub fn latest_version(&self, event_type: &str) -> Option<u32> {
        self.steps
            .get(event_type)
            .and_then(|s| s.values().map(|s| s.to).max())
    }

    /// Rewrites `payload` from schema version `from` to `target`. Returns the
    /// input unchanged (borrowed) when `from == target`.
    ///
    /// # Errors
    /// [`CodecError::NewerSchema`] when `from > target`,
    /// [`CodecError::MissingUpcaster`] for a gap in the chain (or a step that
    /// jumps past `target`), [`CodecError::Upcast`] when a step fails.
    pub fn upcast<'a>(
        &self,
        event_type: &str,
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
        let steps = self.steps.get(event_type);
        for _ in 0..MAX_UPCAST_STEPS {
            if version == target {
                return Ok(data);
            }
            let missing = || CodecError::MissingUpcaster {
                event_type: event_type.to_owned(),
                from: version,
                target,
            };
            let step = steps.and_then(|s| s.get(&version)).ok_or_else(missing)?;
            if step.to > target {
                return Err(missing());
            }
            data = Cow::Owned((step.f)(&data).map_err(|source| CodecError::Upcast {
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
            up.upcast("E", b"x", 1, 4),
            Err(CodecError::MissingUpcaster {
                from: 2,
                target: 4,
                ..
            })
        ));
        assert!(matches!(
            up.upcast("E", b"x", 5, 4),
            Err(CodecError::NewerSchema { .. })
        ));
        assert!(matches!(
            up.upcast("F", b"x", 1, 2),
            Err(CodecError::Upcast { from: 1, .. })
        ));
        assert!(matches!(up.upcast("E", b"x", 2, 2), Ok(Cow::Borrowed(_))));
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
    fn chains_are_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let mut up = UpcasterRegistry::new();
        let steps = MAX_UPCAST_STEPS as u32 + 1;
        for v in 1..=steps {
            up.register("Long", v, v + 1, |b| Ok([b, b"+"].concat()))?;
        }
        let max = MAX_UPCAST_STEPS as u32;
        let out = up.upcast("Long", b"", 1, 1 + max)?;
        assert_eq!(
            out.len(),
            MAX_UPCAST_STEPS,
            "the longest allowed chain runs"
        );
        assert!(matches!(
            up.upcast("Long", b"", 1, 2 + max),
            Err(CodecError::TooManyUpcastSteps { .. })
        ));
        Ok(())
    }
}
