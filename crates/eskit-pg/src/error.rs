//! Errors of connecting, and how driver errors map onto [`StoreError`].

use std::fmt;

use eskit_core::error::{BoxError, StoreError};

/// Why [`PgStore::connect`](crate::PgStore::connect) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PgError {
    /// The schema name is not `[a-z_][a-z0-9_]*` of at most 63 bytes.
    InvalidSchema {
        /// The name, quoted and cut for the message.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The server URL cannot be parsed (the message never repeats it: it
    /// may carry a password).
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The pool size is 0 or above [`MAX_POOL_SIZE`](crate::MAX_POOL_SIZE).
    InvalidPoolSize {
        /// The size given.
        size: u32,
    },
    /// The schema holds migrations newer than this version of the crate
    /// knows: a newer release wrote it.
    SchemaTooNew {
        /// The newest migration found.
        found: i32,
        /// The newest migration this crate has.
        known: i32,
    },
    /// The role name is not `[a-z_][a-z0-9_]*` of at most 63 bytes.
    InvalidRole {
        /// The name, quoted and cut for the message.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The schema lacks migrations this crate needs, and the connecting
    /// role may not apply them (it is an application role without DDL
    /// privileges): connect once as the schema's owner first.
    NotMigrated {
        /// The newest migration found (0 for none).
        found: i32,
        /// The newest migration this crate has.
        needed: i32,
    },
    /// [`PgOptions::require_row_security`](crate::PgOptions::require_row_security)
    /// was asked for, but the role is a superuser or has `BYPASSRLS`, so
    /// PostgreSQL would not apply the tenant policies to it.
    RowSecurityBypassed {
        /// The role the store connected as.
        role: String,
    },
    /// Connecting or migrating failed.
    Store(StoreError),
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidSchema { name, reason } => {
                write!(f, "invalid schema name {name}: {reason}")
            }
            Self::InvalidUrl { reason } => write!(f, "invalid server url: {reason}"),
            Self::InvalidPoolSize { size } => write!(
                f,
                "invalid pool size {size}: it must be 1 to {}",
                crate::MAX_POOL_SIZE
            ),
            Self::SchemaTooNew { found, known } => write!(
                f,
                "the schema has migration {found}, newer than the newest this crate knows ({known})"
            ),
            Self::InvalidRole { name, reason } => {
                write!(f, "invalid role name {name}: {reason}")
            }
            Self::NotMigrated { found, needed } => write!(
                f,
                "the schema has migration {found}, this crate needs {needed}, and this role may \
                 not migrate it: connect once as the schema's owner"
            ),
            Self::RowSecurityBypassed { role } => write!(
                f,
                "row-level security was required, but role {} bypasses it (a superuser or \
                 BYPASSRLS role)",
                eskit_core::backend::quote_name(role)
            ),
            Self::Store(_) => f.write_str("cannot open the store"),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// SQLSTATE of a unique violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// The SQLSTATE of a database error, if the error is one.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The constraint a database error names, if any.
pub(crate) fn constraint(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.constraint().map(str::to_owned),
        _ => None,
    }
}

/// Maps a driver error onto the neutral kinds; the original stays the source.
pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    let code = sqlstate(&e);
    match (&e, code.as_deref()) {
        (sqlx::Error::PoolClosed, _) => StoreError::Closed,
        (sqlx::Error::PoolTimedOut, _) => StoreError::timed_out(e),
        (sqlx::Error::Io(_) | sqlx::Error::Tls(_), _) => StoreError::unavailable(e),
        // Serialization failure, deadlock, lock not available: transient.
        (_, Some("40001" | "40P01" | "55P03")) => StoreError::overloaded(e),
        (_, Some("53100")) => StoreError::storage_full(e),
        (_, Some("57014")) => StoreError::timed_out(e),
        (_, Some(c)) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
            StoreError::unavailable(e)
        }
        _ => StoreError::Backend(BoxError::from(e)),
    }
}

/// Damaged or unexpected stored data.
pub(crate) fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        detail: detail.into(),
    }
}
