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

/// The position of an event in the store's global order (the global sequence).
///
/// Positions start at 1, are unique, strictly increase in commit order, and are
/// never reused, also after a stream is deleted. [`Position::ZERO`] means
/// "before the first event", the natural start for a subscription.
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
