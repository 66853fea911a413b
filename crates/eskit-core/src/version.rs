//! Stream versions, global positions and expected versions.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

/// The version of an event within its stream. The first event is version 1;
/// [`Version::ZERO`] is the version of a stream with no events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Version(u64);

impl Version {
    /// The version of a stream that has no events.
    pub const ZERO: Self = Self(0);

    /// Wraps a raw version number.
    pub const fn new(v: u64) -> Self {
        Self(v)
    }

    /// The raw version number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after this one, or `None` on overflow.
    pub const fn next(self) -> Option<Self> {
        match self.0.checked_add(1) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// This version advanced by `n`, or `None` on overflow.
    pub const fn add(self, n: u64) -> Option<Self> {
        match self.0.checked_add(n) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Version {
    type Err = ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl From<u64> for Version {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

/// The position of an event in the store's global sequence.
///
/// Positions start at 1, are unique and are never reused, also after a stream
/// is deleted. Holes are normal (deleted streams, rolled-back transactions).
/// On backends that order the log by position alone (memory, SQLite) they
/// increase in commit order; on others the delivery order is the
/// [`GlobalCursor`]'s. [`Position::ZERO`] means "before the first event".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Position(u64);

impl Position {
    /// The position before the first event.
    pub const ZERO: Self = Self(0);

    /// Wraps a raw position.
    pub const fn new(p: u64) -> Self {
        Self(p)
    }

    /// The raw position.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The position after this one, or `None` on overflow.
    pub const fn next(self) -> Option<Self> {
        match self.0.checked_add(1) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Position {
    type Err = ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl From<u64> for Position {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

/// A point in a backend's global delivery order: a transaction key and a
/// position, compared in that order.
///
/// Backends that order the log by position alone (memory, SQLite) always use
/// transaction key 0, so their cursors compare as positions do. A backend
/// whose positions are taken before commit (PostgreSQL) orders by the
/// transaction that wrote each event first. Either way the cursor is what a
/// subscriber resumes from and what a checkpoint stores: a global read
/// returns events strictly after a cursor, and its [`GlobalBatch::next`]
/// is a cursor at or before which nothing can still appear.
///
/// [`GlobalCursor::START`] lies before every event. The text form is
/// `<tx>:<position>` (`0:42`); [`FromStr`] also takes a bare position (`42`).
///
/// [`GlobalBatch::next`]: crate::store::GlobalBatch::next
///
/// ```
/// use eskit_core::event::{GlobalCursor, Position};
/// let a = GlobalCursor::at(Position::new(7));
/// let b = GlobalCursor::new(1, Position::new(3));
/// assert!(GlobalCursor::START < a && a < b);
/// assert_eq!(a.to_string(), "0:7");
/// assert_eq!("0:7".parse::<GlobalCursor>()?, a);
/// assert_eq!("7".parse::<GlobalCursor>()?, a);
/// # Ok::<(), eskit_core::event::InvalidCursor>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GlobalCursor {
    tx: u64,
    position: Position,
}

impl GlobalCursor {
    /// Before every event: where a subscription with no checkpoint starts.
    pub const START: Self = Self {
        tx: 0,
        position: Position::ZERO,
    };

    /// A cursor of a backend with transaction keys.
    pub const fn new(tx: u64, position: Position) -> Self {
        Self { tx, position }
    }

    /// The cursor of `position` on a backend ordered by position alone.
    pub const fn at(position: Position) -> Self {
        Self { tx: 0, position }
    }

    /// The transaction key (0 on backends ordered by position alone).
    pub const fn tx(self) -> u64 {
        self.tx
    }

    /// The position.
    pub const fn position(self) -> Position {
        self.position
    }
}

impl fmt::Display for GlobalCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tx, self.position)
    }
}

/// A string that is not a [`GlobalCursor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCursor;

impl fmt::Display for InvalidCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a cursor: expected `<tx>:<position>` or `<position>`")
    }
}

impl std::error::Error for InvalidCursor {}

impl FromStr for GlobalCursor {
    type Err = InvalidCursor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidCursor);
            }
            t.parse::<u64>().map_err(|_| InvalidCursor)
        };
        match s.split_once(':') {
            Some((tx, p)) => Ok(Self::new(num(tx)?, Position::new(num(p)?))),
            None => Ok(Self::at(Position::new(num(s)?))),
        }
    }
}

/// What the writer believes about the stream's current version; checked
/// atomically with the append (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpectedVersion {
    /// No check: append whatever the stream's state (append-only logs).
    #[default]
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last version must be exactly this one.
    /// `Exact(Version::ZERO)` is the same as [`NoStream`](Self::NoStream).
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `current` satisfies this expectation.
    pub fn matches(self, current: Version) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == Version::ZERO,
            Self::StreamExists => current > Version::ZERO,
            Self::Exact(v) => current == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("stream exists"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

impl From<Version> for ExpectedVersion {
    fn from(v: Version) -> Self {
        Self::Exact(v)
    }
}
