//! The event registry: stable wire names, their schema versions, legacy
//! aliases, and the reverse lookup from a Rust type to its name.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;

use crate::codec::DomainEvent;
use crate::name::{EventType, InvalidName, quote_name};

/// A registration that cannot be honoured; returned when the registry is
/// built, so configuration mistakes surface at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// A name is invalid.
    InvalidName(InvalidName),
    /// The name is registered already (as a name or an alias).
    Duplicate {
        /// The name.
        name: String,
    },
    /// An alias points at a name that is not registered.
    UnknownTarget {
        /// The alias.
        alias: String,
        /// The missing target.
        target: String,
    },
    /// A schema version of zero, or an upcaster that does not move forward.
    InvalidVersion {
        /// The event type.
        event_type: String,
        /// The version that was given.
        from: u32,
        /// The version it should lead to.
        to: u32,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName(e) => e.fmt(f),
            Self::Duplicate { name } => {
                write!(f, "event type {} is registered twice", quote_name(name))
            }
            Self::UnknownTarget { alias, target } => write!(
                f,
                "alias {} points at unregistered event type {}",
                quote_name(alias),
                quote_name(target)
            ),
            Self::InvalidVersion {
                event_type,
                from,
                to,
            } => write!(
                f,
                "invalid schema versions for {}: {from} -> {to}",
                quote_name(event_type)
            ),
        }
    }
}

impl std::error::Error for RegistryError {}

impl From<InvalidName> for RegistryError {
    fn from(e: InvalidName) -> Self {
        Self::InvalidName(e)
    }
}

/// Maps wire names to their current schema version, resolves legacy aliases
/// to current names, and maps Rust types to names.
///
/// An empty registry accepts every name (with schema version 1); once any
/// name is registered, only registered names and aliases are accepted.
///
/// ```
/// use eskit_core::typed::EventRegistry;
/// let mut reg = EventRegistry::new();
/// reg.register("MoneyDeposited")?;
/// reg.register_versioned("AccountOpened", 2)?;
/// reg.alias("Deposited", "MoneyDeposited")?;
/// assert_eq!(reg.resolve("Deposited").as_ref().map(|t| t.as_str()), Some("MoneyDeposited"));
/// assert_eq!(reg.schema_version("AccountOpened"), 2);
/// # Ok::<(), eskit_core::typed::RegistryError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventRegistry {
    names: HashMap<EventType, u32>,
    aliases: HashMap<String, EventType>,
    types: HashMap<TypeId, EventType>,
}

impl EventRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a wire name at schema version 1.
    ///
    /// # Errors
    /// [`RegistryError`] for an invalid or duplicate name.
    pub fn register(&mut self, name: &str) -> Result<&mut Self, RegistryError> {
        self.register_versioned(name, 1)
    }

    /// Registers a wire name whose current payload schema is `schema_version`.
    ///
    /// # Errors
    /// [`RegistryError`] for an invalid or duplicate name, or version 0.
    pub fn register_versioned(
        &mut self,
        name: &str,
        schema_version: u32,
    ) -> Result<&mut Self, RegistryError> {
        let ty = EventType::new(name)?;
        if schema_version == 0 {
            return Err(RegistryError::InvalidVersion {
                event_type: name.to_owned(),
                from: 0,
                to: 0,
            });
        }
        if self.names.contains_key(name) || self.aliases.contains_key(name) {
            return Err(RegistryError::Duplicate {
                name: name.to_owned(),
            });
        }
        self.names.insert(ty, schema_version);
        Ok(self)
    }

    /// Registers every wire name of an event enum, given one value per variant.
    ///
    /// # Errors
    /// [`RegistryError`] for an invalid or duplicate name.
    pub fn register_all<E: DomainEvent>(
        &mut self,
        samples: impl IntoIterator<Item = E>,
    ) -> Result<&mut Self, RegistryError> {
        for e in samples {
            self.register(e.event_type())?;
        }
        Ok(self)
    }

    /// Binds the Rust type `T` to a wire name (registering the name if new),
    /// for [`EventRegistry::name_of`].
    ///
    /// # Errors
    /// [`RegistryError::InvalidName`], or [`RegistryError::Duplicate`] when
    /// `T` is bound already.
    pub fn register_type<T: 'static>(&mut self, name: &str) -> Result<&mut Self, RegistryError> {
        let ty = EventType::new(name)?;
        if self.types.contains_key(&TypeId::of::<T>()) {
            return Err(RegistryError::Duplicate {
                name: name.to_owned(),
            });
        }
        if self.aliases.contains_key(name) {
            return Err(RegistryError::Duplicate {
                name: name.to_owned(),
            });
        }
        self.names.entry(ty.clone()).or_insert(1);
        self.types.insert(TypeId::of::<T>(), ty);
        Ok(self)
    }

    /// Binds `T` to its derived name: the last path segment of its Rust type
    /// name, without generics (`bank::Deposited` becomes `Deposited`).
    ///
    /// # Errors
    /// As [`EventRegistry::register_type`].
    pub fn register_type_derived<T: 'static>(&mut self) -> Result<&mut Self, RegistryError> {
        self.register_type::<T>(derive_type_name::<T>())
    }

    /// Makes `legacy`, a name found in old events, resolve to `target`.
    ///
    /// # Errors
    /// [`RegistryError`] when `legacy` is taken or `target` is unregistered.
    pub fn alias(&mut self, legacy: &str, target: &str) -> Result<&mut Self, RegistryError> {
        EventType::new(legacy)?;
        if self.names.contains_key(legacy) || self.aliases.contains_key(legacy) {
            return Err(RegistryError::Duplicate {
                name: legacy.to_owned(),
            });
        }
        let Some((target_ty, _)) = self.names.get_key_value(target) else {
            return Err(RegistryError::UnknownTarget {
                alias: legacy.to_owned(),
                target: target.to_owned(),
            });
        };
        self.aliases.insert(legacy.to_owned(), target_ty.clone());
        Ok(self)
    }

    /// The current name for `name` (itself, or the target of an alias).
    /// `None` for unknown names in a non-empty registry.
    pub fn resolve(&self, name: &str) -> Option<EventType> {
        if let Some((ty, _)) = self.names.get_key_value(name) {
            return Some(ty.clone());
        }
        if let Some(ty) = self.aliases.get(name) {
            return Some(ty.clone());
        }
        if self.names.is_empty() {
            return EventType::new(name).ok();
        }
        None
    }

    /// The current type for a stored `event_type`, as [`resolve`](Self::resolve)
    /// answers, without building the name again when the answer is
    /// `event_type` itself (an empty registry, or a name it holds): the
    /// type is then cloned, a reference count, not allocated. Decoding
    /// resolves every event it reads this way.
    pub(crate) fn resolve_type(&self, event_type: &EventType) -> Option<EventType> {
        let name = event_type.as_str();
        if let Some((ty, _)) = self.names.get_key_value(name) {
            return Some(ty.clone());
        }
        if let Some(ty) = self.aliases.get(name) {
            return Some(ty.clone());
        }
        self.names.is_empty().then(|| event_type.clone())
    }

    /// Whether `name` is registered as a name or an alias.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name) || self.aliases.contains_key(name)
    }

    /// The current schema version of `name` (resolving aliases); 1 when unknown.
    pub fn schema_version(&self, name: &str) -> u32 {
        let canonical = self.aliases.get(name).map_or(name, EventType::as_str);
        self.names.get(canonical).copied().unwrap_or(1)
    }

    /// The wire name bound to the Rust type of `value`.
    pub fn name_of<T: 'static>(&self, _value: &T) -> Option<&EventType> {
        self.types.get(&TypeId::of::<T>())
    }

    /// The wire name bound to the Rust type `T`.
    pub fn name_of_type<T: 'static>(&self) -> Option<&EventType> {
        self.types.get(&TypeId::of::<T>())
    }

    /// Every registered name (not aliases), sorted.
    pub fn names(&self) -> Vec<&EventType> {
        let mut v: Vec<_> = self.names.keys().collect();
        v.sort();
        v
    }

    /// Every legacy alias with the name it resolves to.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &EventType)> {
        self.aliases
            .iter()
            .map(|(legacy, target)| (legacy.as_str(), target))
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The last path segment of `T`'s Rust type name, without generic arguments.
pub fn derive_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Deposited;
    struct Wrapper<T>(T);

    #[test]
    fn derives_names() {
        assert_eq!(derive_type_name::<Deposited>(), "Deposited");
        assert_eq!(derive_type_name::<Wrapper<Deposited>>(), "Wrapper");
    }

    #[test]
    fn reverse_lookup_and_aliases() -> Result<(), RegistryError> {
        let mut reg = EventRegistry::new();
        reg.register_type_derived::<Deposited>()?;
        reg.alias("OldDeposited", "Deposited")?;
        assert_eq!(
            reg.name_of(&Deposited).map(EventType::as_str),
            Some("Deposited")
        );
        assert_eq!(
            reg.resolve("OldDeposited").as_ref().map(EventType::as_str),
            Some("Deposited")
        );
        assert_eq!(reg.resolve("Other"), None);
        assert!(matches!(
            reg.register("Deposited"),
            Err(RegistryError::Duplicate { .. })
        ));
        assert!(matches!(
            reg.alias("Deposited", "Deposited"),
            Err(RegistryError::Duplicate { .. })
        ));
        assert!(matches!(
            reg.alias("X", "Missing"),
            Err(RegistryError::UnknownTarget { .. })
        ));
        assert!(matches!(
            reg.register(""),
            Err(RegistryError::InvalidName(_))
        ));
        assert!(matches!(
            reg.register_versioned("V", 0),
            Err(RegistryError::InvalidVersion { .. })
        ));
        Ok(())
    }

    #[test]
    fn empty_registry_accepts_any_valid_name() {
        let reg = EventRegistry::new();
        assert_eq!(
            reg.resolve("Anything").as_ref().map(EventType::as_str),
            Some("Anything")
        );
        assert_eq!(reg.resolve(""), None);
        assert_eq!(reg.schema_version("Anything"), 1);
    }
}
