//! Validated names: stream types, stream ids, event types, and the [`StreamName`] pair.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use crate::limits::{MAX_NAME_BYTES, MAX_QUOTED_NAME_CHARS};

/// What a name names; carried by [`InvalidName`] so errors say which value was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameKind {
    /// A [`StreamType`].
    StreamType,
    /// A [`StreamId`].
    StreamId,
    /// An [`EventType`].
    EventType,
    /// A codec name.
    Codec,
    /// A checkpoint or subscription name.
    Checkpoint,
    /// A lock key.
    Lock,
    /// A metadata key.
    MetadataKey,
    /// A [`TenantId`].
    Tenant,
    /// A work queue's name.
    Queue,
    /// A work item's key.
    WorkKey,
    /// The owner of a work claim.
    ClaimOwner,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::StreamType => "stream type",
            Self::StreamId => "stream id",
            Self::EventType => "event type",
            Self::Codec => "codec name",
            Self::Checkpoint => "checkpoint name",
            Self::Lock => "lock key",
            Self::MetadataKey => "metadata key",
            Self::Tenant => "tenant id",
            Self::Queue => "queue name",
            Self::WorkKey => "work item key",
            Self::ClaimOwner => "claim owner",
        })
    }
}

/// Why a name was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidNameReason {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`].
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
    },
    /// The name contains a NUL byte, which several backends cannot store.
    ContainsNul,
}

/// A name that failed validation: empty, longer than [`MAX_NAME_BYTES`], or containing NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InvalidName {
    kind: NameKind,
    reason: InvalidNameReason,
}

impl InvalidName {
    /// Which kind of name was rejected.
    pub fn kind(&self) -> NameKind {
        self.kind
    }

    /// Why it was rejected.
    pub fn reason(&self) -> InvalidNameReason {
        self.reason
    }
}

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            InvalidNameReason::Empty => write!(f, "{} is empty", self.kind),
            InvalidNameReason::TooLong { len } => write!(
                f,
                "{} is {len} bytes long, the maximum is {MAX_NAME_BYTES}",
                self.kind
            ),
            InvalidNameReason::ContainsNul => write!(f, "{} contains a NUL byte", self.kind),
        }
    }
}

impl std::error::Error for InvalidName {}

/// Checks a name against the shared rules: non-empty, at most [`MAX_NAME_BYTES`], no NUL.
///
/// # Errors
/// Returns [`InvalidName`] naming `kind` and the broken rule.
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), InvalidName> {
    let reason = if name.is_empty() {
        InvalidNameReason::Empty
    } else if name.len() > MAX_NAME_BYTES {
        InvalidNameReason::TooLong { len: name.len() }
    } else if name.as_bytes().contains(&0) {
        InvalidNameReason::ContainsNul
    } else {
        return Ok(());
    };
    Err(InvalidName { kind, reason })
}

/// Storage of a validated name: a static string, or a shared one so that
/// clones (one per loaded event for its stream and type) never allocate.
#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Repr {
    fn as_str(&self) -> &str {
        match self {
            Self::Static(s) => s,
            Self::Shared(s) => s,
        }
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        name_type!($(#[$doc])* $name, $kind, []);
    };
    ($(#[$doc:meta])* $name:ident, $kind:expr, [$($known:literal),*]) => {
        $(#[$doc])*
        ///
        /// Cloning never allocates: the text is static or shared.
        #[derive(Clone)]
        pub struct $name(Repr);

        impl $name {
            /// Validates and wraps a name.
            ///
            /// # Errors
            /// Returns [`InvalidName`] when the name is empty, longer than
            /// [`MAX_NAME_BYTES`](crate::limits::MAX_NAME_BYTES) or contains NUL.
            pub fn new(name: impl AsRef<str>) -> Result<Self, InvalidName> {
                let name = name.as_ref();
                // Well-known names stay static: their clones (one per
                // event read) touch no reference count.
                match name {
                    $($known => return Ok(Self(Repr::Static($known))),)*
                    _ => {}
                }
                validate_name($kind, name)?;
                Ok(Self(Repr::Shared(Arc::from(name))))
            }

            /// Validates and wraps a static name without allocating.
            ///
            /// # Errors
            /// As [`Self::new`].
            pub fn from_static(name: &'static str) -> Result<Self, InvalidName> {
                validate_name($kind, name)?;
                Ok(Self(Repr::Static(name)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.as_str()).finish()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                // Must hash like `str`, because `Borrow<str>` lets maps look
                // names up by `&str`.
                self.as_str().hash(state);
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidName;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

name_type!(
    /// The category of a stream, such as `account` or `order`.
    StreamType,
    NameKind::StreamType
);
name_type!(
    /// The business identifier of a stream within its type, such as `acc-42`.
    StreamId,
    NameKind::StreamId
);
name_type!(
    /// The stable wire name of an event, stored beside its payload.
    EventType,
    NameKind::EventType
);
name_type!(
    /// A tenant: the owner of a set of streams that no other tenant's handle
    /// sees or writes (see [`TenantScoped`](crate::store::TenantScoped)).
    TenantId,
    NameKind::Tenant
);
name_type!(
    /// The name of the codec that encoded a stored payload, such as `json`.
    CodecName,
    NameKind::Codec,
    ["raw", "json", "cbor", "protobuf"]
);

impl CodecName {
    /// Wraps a codec name taken from a [`NewEvent`](crate::event::NewEvent), whose
    /// name the append validated: static names stay static.
    pub(crate) fn from_cow_unchecked(name: std::borrow::Cow<'static, str>) -> Self {
        match name {
            std::borrow::Cow::Borrowed(s) => Self(Repr::Static(s)),
            std::borrow::Cow::Owned(s) => Self(Repr::Shared(Arc::from(s))),
        }
    }
}

/// One stream: its type and its id. Streams of different types never share events.
///
/// ```
/// use eskit_core::event::StreamName;
/// let s = StreamName::new("account", "acc-1")?;
/// assert_eq!(s.to_string(), "account/acc-1");
/// # Ok::<(), eskit_core::event::InvalidName>(())
/// ```
#[derive(Clone)]
pub struct StreamName(Arc<StreamParts>);

/// A stream's two names, behind one reference count: a clone of a
/// [`StreamName`] (one per event read) costs one count, not two.
#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
struct StreamParts {
    stream_type: StreamType,
    stream_id: StreamId,
}

impl StreamName {
    /// Validates both parts and builds a stream reference.
    ///
    /// # Errors
    /// Returns [`InvalidName`] for the first part that is invalid.
    pub fn new(
        stream_type: impl AsRef<str>,
        stream_id: impl AsRef<str>,
    ) -> Result<Self, InvalidName> {
        Ok(Self::from_parts(
            StreamType::new(stream_type)?,
            StreamId::new(stream_id)?,
        ))
    }

    /// Builds a stream reference from already validated parts.
    pub fn from_parts(stream_type: StreamType, stream_id: StreamId) -> Self {
        Self(Arc::new(StreamParts {
            stream_type,
            stream_id,
        }))
    }

    /// The stream's type.
    pub fn stream_type(&self) -> &StreamType {
        &self.0.stream_type
    }

    /// The stream's id within its type.
    pub fn stream_id(&self) -> &StreamId {
        &self.0.stream_id
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamName")
            .field("stream_type", &self.0.stream_type)
            .field("stream_id", &self.0.stream_id)
            .finish()
    }
}

impl PartialEq for StreamName {
    fn eq(&self, other: &Self) -> bool {
        // Names read from one store share their parts.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for StreamName {}

impl Hash for StreamName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialOrd for StreamName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for StreamName {
    fn cmp(&self, other: &Self) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return Ordering::Equal;
        }
        self.0.cmp(&other.0)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.stream_type, self.0.stream_id)
    }
}

impl StreamName {
    /// The stream as error messages show it: `` `type/id` ``, escaped and
    /// cut like [`quote_name`].
    ///
    /// ```
    /// use eskit_core::event::StreamName;
    /// let s = StreamName::new("account", "acc\n1")?;
    /// assert_eq!(s.quoted().to_string(), "`account/acc\\n1`");
    /// # Ok::<(), eskit_core::event::InvalidName>(())
    /// ```
    pub fn quoted(&self) -> QuotedName<'_> {
        QuotedName {
            first: self.0.stream_type.as_str(),
            second: Some(self.0.stream_id.as_str()),
        }
    }
}

/// Quotes a user-supplied name for an error message: in backticks, with
/// backslashes, backticks and invisible or control characters escaped (a
/// NUL becomes `\0`), and cut after [`MAX_QUOTED_NAME_CHARS`] characters,
/// with the whole name's length in bytes after a cut.
///
/// Every error message of the core that quotes a name goes through this,
/// so a message stays one readable line of bounded length whatever the
/// name holds.
///
/// ```
/// use eskit_core::backend::quote_name;
/// assert_eq!(quote_name("Deposited").to_string(), "`Deposited`");
/// assert_eq!(quote_name("a\0b`c").to_string(), "`a\\0b\\`c`");
/// let long = quote_name(&"x".repeat(1000)).to_string();
/// assert!(long.ends_with("x...` (1000 bytes)"));
/// ```
pub fn quote_name(name: &str) -> QuotedName<'_> {
    QuotedName {
        first: name,
        second: None,
    }
}

/// A name formatted for an error message; made by [`quote_name`] and
/// [`StreamName::quoted`].
#[derive(Debug, Clone, Copy)]
pub struct QuotedName<'a> {
    first: &'a str,
    /// A stream's id, written after the type and a `/`.
    second: Option<&'a str>,
}

impl fmt::Display for QuotedName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        f.write_char('`')?;
        let mut budget = MAX_QUOTED_NAME_CHARS;
        let mut cut = write_escaped(f, self.first, &mut budget)?;
        if let Some(second) = self.second
            && !cut
        {
            // The `/` counts against the budget like any other character.
            if budget == 0 {
                cut = true;
            } else {
                budget -= 1;
                f.write_char('/')?;
                cut = write_escaped(f, second, &mut budget)?;
            }
        }
        if cut {
            f.write_str("...`")?;
            let len = self.first.len() + self.second.map_or(0, |s| s.len() + 1);
            write!(f, " ({len} bytes)")
        } else {
            f.write_char('`')
        }
    }
}

/// Writes `s` escaped, at most `budget` characters of it; returns whether
/// it had to stop early.
fn write_escaped(
    f: &mut fmt::Formatter<'_>,
    s: &str,
    budget: &mut usize,
) -> Result<bool, fmt::Error> {
    use fmt::Write;
    for c in s.chars() {
        if *budget == 0 {
            return Ok(true);
        }
        *budget -= 1;
        match c {
            '\\' | '`' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            '\0' => f.write_str("\\0")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if is_hidden(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    Ok(false)
}

/// Characters that would make a message lie about its text: controls, and
/// invisible or direction-changing format characters.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(s: &StreamName) -> u64 {
        let mut h = DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    }

    #[test]
    fn stream_names_compare_by_their_parts_whether_shared_or_not() {
        let a = StreamName::new("account", "acc-1").unwrap();
        let shared = a.clone();
        let separate = StreamName::new("account", "acc-1").unwrap();
        let other_id = StreamName::new("account", "acc-2").unwrap();
        let other_type = StreamName::new("order", "acc-1").unwrap();
        assert_eq!(a, shared);
        assert_eq!(a, separate);
        assert_eq!(hash_of(&a), hash_of(&separate));
        assert_eq!(a.cmp(&shared), Ordering::Equal);
        assert_eq!(a.cmp(&separate), Ordering::Equal);
        assert_ne!(a, other_id);
        assert_ne!(a, other_type);
        // Ordered by type, then id.
        assert!(a < other_id && other_id < other_type);
        let from_parts = StreamName::from_parts(
            StreamType::new("account").unwrap(),
            StreamId::new("acc-1").unwrap(),
        );
        assert_eq!(from_parts, a);
        assert_eq!(
            format!("{a:?}"),
            "StreamName { stream_type: StreamType(\"account\"), stream_id: StreamId(\"acc-1\") }"
        );
        assert_eq!(a.stream_type().as_str(), "account");
        assert_eq!(a.stream_id().as_str(), "acc-1");
    }

    #[test]
    fn well_known_codec_names_are_static_and_others_shared() {
        for name in ["raw", "json", "cbor", "protobuf"] {
            let c = CodecName::new(name).unwrap();
            assert!(matches!(c.0, Repr::Static(_)), "{name}");
            assert_eq!(c.as_str(), name);
        }
        let c = CodecName::new("sealed").unwrap();
        assert!(matches!(c.0, Repr::Shared(_)));
        // The check still applies to every other name.
        assert!(CodecName::new("").is_err());
        assert!(CodecName::new("a\0b").is_err());
        // Only codec names are kept static.
        assert!(matches!(EventType::new("json").unwrap().0, Repr::Shared(_)));
    }
}
