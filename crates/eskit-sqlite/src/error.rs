//! Errors of opening a store and the SQLite-specific causes behind
//! [`StoreError::Backend`].

use std::path::PathBuf;

use eskit_core::StoreError;
use rusqlite::ErrorCode;

/// Opening or configuring a store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// `synchronous = OFF` was asked for; it can lose acknowledged appends on
    /// a crash, so the store refuses it.
    #[error("synchronous mode OFF is refused: it can lose acknowledged appends")]
    SynchronousOff,
    /// A synchronous mode name that is not `NORMAL`, `FULL` or `EXTRA`.
    #[error("unknown synchronous mode `{0}`")]
    UnknownSynchronous(String),
    /// An option is out of its allowed range.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The file exists but is not an SQLite database.
    #[error("{path} is not an sqlite database")]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file is an SQLite database that belongs to another application.
    #[error("{path} is an sqlite database but not an eskit store")]
    NotEskit {
        /// The file.
        path: PathBuf,
    },
    /// The store was written by a newer eskit-sqlite with a schema this
    /// version does not know.
    #[error("store schema version {found} is newer than the supported {supported}")]
    NewerSchema {
        /// The schema version in the file.
        found: i64,
        /// The newest schema version this crate knows.
        supported: i64,
    },
    /// The file or its directory cannot be written.
    #[error("{path} is read-only")]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// The file system does not support the write-ahead log the store needs.
    #[error("write-ahead log mode is unavailable for {path} (journal mode `{mode}`)")]
    WalUnavailable {
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The database file is damaged.
    #[error("{path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// The disk is full.
    #[error("no space left for {path}")]
    StorageFull {
        /// The file.
        path: PathBuf,
    },
    /// A worker thread could not be started.
    #[error("cannot start an sqlite worker thread")]
    Thread(#[source] std::io::Error),
    /// Any other SQLite failure.
    #[error("sqlite failure while opening {path}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
}

impl OpenError {
    pub(crate) fn from_sqlite(path: &std::path::Path, e: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Self::NotADatabase { path },
            Some(ErrorCode::DatabaseCorrupt) => Self::Corrupt { path, source: e },
            Some(ErrorCode::ReadOnly) => Self::ReadOnly { path },
            Some(ErrorCode::DiskFull) => Self::StorageFull { path },
            _ => Self::Sqlite { path, source: e },
        }
    }
}

/// The SQLite-specific cause carried by [`StoreError::Backend`]; find it with
/// [`SqliteError::of`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The disk is full; nothing of the failed operation was written.
    #[error("no space left on the database's file system")]
    StorageFull(#[source] rusqlite::Error),
    /// Another process held the write lock longer than the busy timeout.
    #[error("the database is locked by another connection")]
    Busy(#[source] rusqlite::Error),
    /// The database file became read-only.
    #[error("the database is read-only")]
    ReadOnly(#[source] rusqlite::Error),
    /// Too many requests are queued for the store's threads.
    #[error("too many queued requests (limit {limit})")]
    Overloaded {
        /// The queue bound, [`MAX_QUEUED_REQUESTS`](crate::MAX_QUEUED_REQUESTS).
        limit: usize,
    },
    /// The store's worker threads have stopped (closed or crashed).
    #[error("the store's sqlite threads have stopped")]
    Stopped,
    /// A value is out of the range SQLite stores (64-bit signed integers).
    #[error("{what} is out of range for sqlite")]
    OutOfRange {
        /// Which value.
        what: &'static str,
    },
    /// Any other SQLite failure.
    #[error("sqlite failure")]
    Sqlite(#[source] rusqlite::Error),
}

impl SqliteError {
    /// The SQLite cause of a store error, if it has one.
    pub fn of(e: &StoreError) -> Option<&Self> {
        match e {
            StoreError::Backend(b) => b.downcast_ref::<Self>(),
            _ => None,
        }
    }

    /// Whether the disk was full.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Self::StorageFull(_))
    }
}

/// Maps an SQLite failure onto the store's neutral meanings: damaged data
/// becomes [`StoreError::Corrupt`], everything else keeps its cause.
pub(crate) fn store_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            detail: e.to_string(),
        },
        Some(ErrorCode::DiskFull) => StoreError::backend(SqliteError::StorageFull(e)),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::backend(SqliteError::Busy(e))
        }
        Some(ErrorCode::ReadOnly) => StoreError::backend(SqliteError::ReadOnly(e)),
        _ => match e {
            // A column of an unexpected type or NULL where a value belongs:
            // the row was not written by this crate or was damaged.
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt {
                detail: e.to_string(),
            },
            e => StoreError::backend(SqliteError::Sqlite(e)),
        },
    }
}

pub(crate) fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        detail: detail.into(),
    }
}

pub(crate) fn stopped() -> StoreError {
    StoreError::backend(SqliteError::Stopped)
}
