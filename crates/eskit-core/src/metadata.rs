//! Event metadata: correlation, causation, principals, idempotency key and a bounded extra map.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::ValidationError;
use crate::id::EventId;
use crate::limits::{MAX_IDEMPOTENCY_KEY_BYTES, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES};
use crate::name::{NameKind, validate_name};

/// The kind of actor behind an action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PrincipalKind {
    /// A human user.
    User,
    /// An automation or reactive processor.
    Automation,
    /// Another service.
    Service,
    /// The system itself (migrations, maintenance).
    System,
    /// A scheduled job.
    Scheduler,
    /// An API client.
    Api,
    /// Any other kind, by name. A [`Principal`] never holds a known name
    /// here: [`Principal::new`] turns `Other("user")` into
    /// [`PrincipalKind::User`], as every backend reads it back.
    Other(String),
}

impl PrincipalKind {
    /// The kind's stable string form, as stored.
    pub fn as_str(&self) -> &str {
        match self {
            Self::User => "user",
            Self::Automation => "automation",
            Self::Service => "service",
            Self::System => "system",
            Self::Scheduler => "scheduler",
            Self::Api => "api",
            Self::Other(s) => s,
        }
    }

    /// Parses the stored string form; unknown names become [`PrincipalKind::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "user" => Self::User,
            "automation" => Self::Automation,
            "service" => Self::Service,
            "system" => Self::System,
            "scheduler" => Self::Scheduler,
            "api" => Self::Api,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who performed an action: a kind and an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    kind: PrincipalKind,
    id: String,
}

impl Principal {
    /// A principal of any kind. The kind is made canonical: an
    /// [`PrincipalKind::Other`] carrying a known kind's name becomes that
    /// kind, so the principal compares equal to what any backend returns
    /// after storing it (backends store the name and parse it back).
    pub fn new(kind: PrincipalKind, id: impl Into<String>) -> Self {
        let kind = match kind {
            PrincipalKind::Other(name) => PrincipalKind::parse(&name),
            known => known,
        };
        Self {
            kind,
            id: id.into(),
        }
    }

    /// A human user.
    pub fn user(id: impl Into<String>) -> Self {
        Self::new(PrincipalKind::User, id)
    }

    /// An automation, such as a reactive processor.
    pub fn automation(id: impl Into<String>) -> Self {
        Self::new(PrincipalKind::Automation, id)
    }

    /// Another service.
    pub fn service(id: impl Into<String>) -> Self {
        Self::new(PrincipalKind::Service, id)
    }

    /// The system itself.
    pub fn system(id: impl Into<String>) -> Self {
        Self::new(PrincipalKind::System, id)
    }

    /// The principal's kind.
    pub fn kind(&self) -> &PrincipalKind {
        &self.kind
    }

    /// The principal's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// Context stored with every event: who, why, and as part of which flow.
///
/// Build with the chainable `with_*` methods; [`Metadata::validate`] checks the
/// bounds ([`MAX_METADATA_ENTRIES`], [`MAX_METADATA_BYTES`]) and every store
/// calls it before an append.
///
/// ```
/// use eskit_core::event::{Metadata, Principal};
/// let first = Metadata::new_chain(Principal::user("alice"));
/// let next = first.continue_from(eskit_core::event::EventId::new(), Principal::automation("mailer"));
/// assert_eq!(next.correlation_id(), first.correlation_id());
/// assert_eq!(next.originator(), Some(&Principal::user("alice")));
/// ```
#[derive(Clone, Default)]
pub struct Metadata {
    // Boxed so that events without metadata (most of them) carry one word
    // instead of the whole record: every loaded event has a `Metadata`.
    fields: Option<Box<Fields>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Fields {
    correlation_id: Option<String>,
    causation_id: Option<String>,
    initiator: Option<Principal>,
    originator: Option<Principal>,
    idempotency_key: Option<String>,
    extra: BTreeMap<String, String>,
}

static NO_FIELDS: Fields = Fields {
    correlation_id: None,
    causation_id: None,
    initiator: None,
    originator: None,
    idempotency_key: None,
    extra: BTreeMap::new(),
};

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.f() == other.f()
    }
}

impl Eq for Metadata {}

impl std::hash::Hash for Metadata {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.f().hash(state);
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.f();
        f.debug_struct("Metadata")
            .field("correlation_id", &m.correlation_id)
            .field("causation_id", &m.causation_id)
            .field("initiator", &m.initiator)
            .field("originator", &m.originator)
            .field("idempotency_key", &m.idempotency_key)
            .field("extra", &m.extra)
            .finish()
    }
}

impl Metadata {
    fn from_fields(fields: Fields) -> Self {
        Self {
            fields: Some(Box::new(fields)),
        }
    }

    fn f(&self) -> &Fields {
        self.fields.as_deref().unwrap_or(&NO_FIELDS)
    }

    fn f_mut(&mut self) -> &mut Fields {
        self.fields.get_or_insert_with(Box::default)
    }

    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new causal chain: a fresh correlation id, with `principal` as
    /// both initiator and originator.
    pub fn new_chain(principal: Principal) -> Self {
        Self::from_fields(Fields {
            correlation_id: Some(EventId::new().to_string()),
            initiator: Some(principal.clone()),
            originator: Some(principal),
            ..Fields::default()
        })
    }

    /// Continues the chain of an event with this metadata: the correlation id
    /// and originator carry over, the causation id becomes `source_event`, and
    /// `principal` becomes the initiator. Extra entries are not carried over.
    pub fn continue_from(&self, source_event: EventId, principal: Principal) -> Self {
        let source = source_event.to_string();
        Self::from_fields(Fields {
            correlation_id: Some(
                self.f()
                    .correlation_id
                    .clone()
                    .unwrap_or_else(|| source.clone()),
            ),
            causation_id: Some(source),
            originator: self
                .f()
                .originator
                .clone()
                .or_else(|| self.f().initiator.clone())
                .or_else(|| Some(principal.clone())),
            initiator: Some(principal),
            idempotency_key: None,
            extra: BTreeMap::new(),
        })
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.f_mut().correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.f_mut().causation_id = Some(id.into());
        self
    }

    /// Sets the initiator (who directly caused the event).
    #[must_use]
    pub fn with_initiator(mut self, p: Principal) -> Self {
        self.f_mut().initiator = Some(p);
        self
    }

    /// Sets the originator (who started the causal chain).
    #[must_use]
    pub fn with_originator(mut self, p: Principal) -> Self {
        self.f_mut().originator = Some(p);
        self
    }

    /// Sets the idempotency key recorded with the events.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.f_mut().idempotency_key = Some(key.into());
        self
    }

    /// Adds one extra entry; bounds are checked by [`Metadata::validate`] or,
    /// eagerly, by [`Metadata::set_extra`].
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.f_mut().extra.insert(key.into(), value.into());
        self
    }

    /// Inserts one extra entry, enforcing the bounds now.
    ///
    /// # Errors
    /// [`ValidationError`] when the key is not a valid name or the entry
    /// would exceed [`MAX_METADATA_ENTRIES`] or [`MAX_METADATA_BYTES`]; the
    /// metadata is then unchanged.
    pub fn set_extra(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), ValidationError> {
        let key = key.into();
        validate_name(NameKind::MetadataKey, &key)?;
        let value = value.into();
        let previous = self.f_mut().extra.insert(key.clone(), value);
        if let Err(e) = self.validate() {
            match previous {
                Some(p) => self.f_mut().extra.insert(key, p),
                None => self.f_mut().extra.remove(&key),
            };
            return Err(e);
        }
        Ok(())
    }

    /// The correlation id, grouping related events across streams and services.
    pub fn correlation_id(&self) -> Option<&str> {
        self.f().correlation_id.as_deref()
    }

    /// The causation id: the event or command that caused this event.
    pub fn causation_id(&self) -> Option<&str> {
        self.f().causation_id.as_deref()
    }

    /// Who directly caused the event.
    pub fn initiator(&self) -> Option<&Principal> {
        self.f().initiator.as_ref()
    }

    /// Who started the causal chain.
    pub fn originator(&self) -> Option<&Principal> {
        self.f().originator.as_ref()
    }

    /// The idempotency key the events were appended with.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.f().idempotency_key.as_deref()
    }

    /// Extra entries, sorted by key.
    pub fn extra(&self) -> &BTreeMap<String, String> {
        &self.f().extra
    }

    /// One extra entry.
    pub fn extra_value(&self, key: &str) -> Option<&str> {
        self.f().extra.get(key).map(String::as_str)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self.f() == NO_FIELDS
    }

    /// The size counted against [`MAX_METADATA_BYTES`]: the sum of the
    /// lengths of every string held.
    pub fn size_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let principal =
            |p: &Option<Principal>| p.as_ref().map_or(0, |p| p.kind.as_str().len() + p.id.len());
        opt(&self.f().correlation_id)
            + opt(&self.f().causation_id)
            + opt(&self.f().idempotency_key)
            + principal(&self.f().initiator)
            + principal(&self.f().originator)
            + self
                .f()
                .extra
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// Every string held, keys included.
    fn strings(&self) -> impl Iterator<Item = &str> {
        let principals = [&self.f().initiator, &self.f().originator]
            .into_iter()
            .flatten()
            .flat_map(|p| [p.kind.as_str(), p.id.as_str()]);
        [
            &self.f().correlation_id,
            &self.f().causation_id,
            &self.f().idempotency_key,
        ]
        .into_iter()
        .filter_map(|s| s.as_deref())
        .chain(principals)
        .chain(
            self.f()
                .extra
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
        )
    }

    /// Checks every bound: entry count, total size, key names, idempotency
    /// key length, and no NUL characters in any value.
    ///
    /// # Errors
    /// The first [`ValidationError`] found.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.f().extra.len() > MAX_METADATA_ENTRIES {
            return Err(ValidationError::TooManyMetadataEntries {
                count: self.f().extra.len(),
            });
        }
        for key in self.f().extra.keys() {
            validate_name(NameKind::MetadataKey, key)?;
        }
        if let Some(key) = &self.f().idempotency_key {
            validate_idempotency_key(key)?;
        }
        if self.strings().any(|s| s.contains('\0')) {
            return Err(ValidationError::MetadataContainsNul);
        }
        let size = self.size_bytes();
        if size > MAX_METADATA_BYTES {
            return Err(ValidationError::MetadataTooLarge { len: size });
        }
        Ok(())
    }
}

/// Checks an idempotency key: non-empty, at most [`MAX_IDEMPOTENCY_KEY_BYTES`]
/// and without NUL (the key is kept in the append's metadata, where no
/// backend takes a NUL, so no append can have used such a key).
///
/// # Errors
/// [`ValidationError::InvalidIdempotencyKey`] with the key's length;
/// [`ValidationError::MetadataContainsNul`] for a key with NUL.
pub fn validate_idempotency_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(ValidationError::InvalidIdempotencyKey { len: key.len() });
    }
    if key.contains('\0') {
        return Err(ValidationError::MetadataContainsNul);
    }
    Ok(())
}

// Every loaded event carries a `Metadata`; keep it one pointer wide.
const _: () = assert!(std::mem::size_of::<Metadata>() == std::mem::size_of::<usize>());
