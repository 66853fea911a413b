//! Store configuration.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::error::OpenError;

/// Most reader threads (and reader connections) a store may be configured with.
pub const MAX_READERS: usize = 16;

/// Most appends the writer commits in one transaction (group commit).
pub const MAX_GROUP_COMMIT: usize = 256;

/// The default busy timeout: how long a write waits for another process
/// holding the database's write lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How commits reach the disk, SQLite's `PRAGMA synchronous` in WAL mode.
///
/// | mode | after an application crash (`kill -9`) | after a power loss or OS crash |
/// |---|---|---|
/// | [`Normal`](Self::Normal) (default) | every acknowledged append survives | the appends since the last WAL checkpoint may be lost; the store stays consistent |
/// | [`Full`](Self::Full) | every acknowledged append survives | every acknowledged append survives (the WAL is synced on each commit) |
/// | [`Extra`](Self::Extra) | as `Full` | as `Full`, and the directory is synced too |
///
/// `OFF` is refused: [`FromStr`] turns `"off"` into
/// [`OpenError::SynchronousOff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Synchronous {
    /// `synchronous = NORMAL`: the WAL is synced only at checkpoints.
    #[default]
    Normal,
    /// `synchronous = FULL`: the WAL is synced before every commit returns.
    Full,
    /// `synchronous = EXTRA`: as `Full`, plus directory syncs.
    Extra,
}

impl Synchronous {
    /// The pragma value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
            Self::Extra => "EXTRA",
        }
    }

    /// The number `PRAGMA synchronous` reports for this mode.
    pub(crate) fn level(self) -> i64 {
        match self {
            Self::Normal => 1,
            Self::Full => 2,
            Self::Extra => 3,
        }
    }
}

impl fmt::Display for Synchronous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Synchronous {
    type Err = OpenError;

    /// Parses `normal`, `full` or `extra` (any case, or SQLite's numbers 1-3).
    ///
    /// # Errors
    /// [`OpenError::SynchronousOff`] for `off` or `0`;
    /// [`OpenError::UnknownSynchronous`] for anything else.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "normal" | "1" => Ok(Self::Normal),
            "full" | "2" => Ok(Self::Full),
            "extra" | "3" => Ok(Self::Extra),
            "off" | "0" => Err(OpenError::SynchronousOff),
            _ => Err(OpenError::UnknownSynchronous(s.to_owned())),
        }
    }
}

/// Where and how to open a store. Build with [`SqliteOptions::file`] or
/// [`SqliteOptions::in_memory`] and the chainable `with_*` methods.
///
/// ```
/// use eskit_sqlite::{SqliteOptions, Synchronous};
/// let opts = SqliteOptions::file("events.db")
///     .with_synchronous(Synchronous::Full)
///     .with_readers(2);
/// assert_eq!(opts.synchronous(), Synchronous::Full);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    location: Location,
    synchronous: Synchronous,
    readers: usize,
    busy_timeout: Duration,
    calls_on_caller_thread: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    File(PathBuf),
    Memory,
}

impl SqliteOptions {
    /// A database file, created when missing. The path `:memory:` means
    /// [`SqliteOptions::in_memory`].
    pub fn file(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let location = if path == Path::new(":memory:") {
            Location::Memory
        } else {
            Location::File(path.to_path_buf())
        };
        Self {
            location,
            synchronous: Synchronous::default(),
            readers: 2,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            calls_on_caller_thread: false,
        }
    }

    /// A private in-memory database, gone when the store is dropped. All
    /// requests run on the one writer thread (an in-memory database has a
    /// single connection).
    pub fn in_memory() -> Self {
        Self::file(":memory:")
    }

    /// Sets the durability mode (default [`Synchronous::Normal`]).
    #[must_use]
    pub fn with_synchronous(mut self, s: Synchronous) -> Self {
        self.synchronous = s;
        self
    }

    /// Sets how many reader threads serve loads and reads (default 2,
    /// 1 to [`MAX_READERS`]). Ignored for in-memory stores.
    #[must_use]
    pub fn with_readers(mut self, n: usize) -> Self {
        self.readers = n;
        self
    }

    /// Runs the store's SQLite work on the thread that awaits it instead
    /// of on the store's own threads (default `false`, the store's threads).
    ///
    /// A read runs with one of the store's read connections, lent to the
    /// calling thread (which waits for one when all
    /// [`readers`](Self::with_readers) are in use). A write (append, caller
    /// transaction, checkpoint save, lease) is queued as usual, then the
    /// calling thread takes the writer connection (waiting for the thread
    /// that has it) and runs every write queued, its own and those of
    /// callers that queued meanwhile, so concurrent appends still share one
    /// transaction (group commit). WAL checkpoints stay on their own thread.
    /// Every guarantee of the store holds the same: the conformance suite
    /// runs whole in this mode.
    ///
    /// What it saves is the hand-off to a store thread and back on every
    /// call, which costs more than a small read or a single append. What it
    /// costs: the awaiting thread blocks while SQLite works, and while it
    /// waits for another caller's write. Turn it on only when no async
    /// executor's thread awaits the store: a synchronous program driving
    /// the store with [`eskit_core::rt::block_on`], threads of your own, or
    /// Tokio's `spawn_blocking`. On an executor's worker thread a slow call
    /// (a cold disk, a long stream, an fsync) would stall every task of that
    /// thread. A call finishes inside its first poll, so a timeout around
    /// it takes effect only after it returned. Ignored for in-memory stores.
    ///
    /// ```
    /// use eskit_sqlite::SqliteOptions;
    /// let opts = SqliteOptions::file("events.db").with_calls_on_caller_thread(true);
    /// assert!(opts.calls_on_caller_thread());
    /// ```
    #[must_use]
    pub fn with_calls_on_caller_thread(mut self, on: bool) -> Self {
        self.calls_on_caller_thread = on;
        self
    }

    /// Sets how long a write waits for another process holding the write
    /// lock (default [`DEFAULT_BUSY_TIMEOUT`]).
    #[must_use]
    pub fn with_busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }

    /// The durability mode.
    pub fn synchronous(&self) -> Synchronous {
        self.synchronous
    }

    /// The number of reader threads.
    pub fn readers(&self) -> usize {
        self.readers
    }

    /// The busy timeout.
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// Whether the store's SQLite work runs on the calling thread (see
    /// [`with_calls_on_caller_thread`](Self::with_calls_on_caller_thread)).
    pub fn calls_on_caller_thread(&self) -> bool {
        self.calls_on_caller_thread
    }

    /// The database file, `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::File(p) => Some(p),
            Location::Memory => None,
        }
    }

    pub(crate) fn location(&self) -> &Location {
        &self.location
    }

    pub(crate) fn validate(&self) -> Result<(), OpenError> {
        if self.readers == 0 || self.readers > MAX_READERS {
            return Err(OpenError::InvalidOption {
                name: "readers",
                reason: "must be 1 to MAX_READERS",
            });
        }
        if self.busy_timeout > Duration::from_secs(3600) {
            return Err(OpenError::InvalidOption {
                name: "busy_timeout",
                reason: "must be at most one hour",
            });
        }
        Ok(())
    }
}
