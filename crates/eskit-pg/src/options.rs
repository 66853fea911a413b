//! Connection options: the server URL, the schema the store lives in and
//! the pool size, all checked once by [`PgStore::connect`](crate::PgStore::connect).

use std::fmt;

use crate::error::PgError;

/// The longest schema name PostgreSQL keeps whole (`NAMEDATALEN - 1`);
/// a longer one would be cut silently, so two long names could share a schema.
pub const MAX_SCHEMA_BYTES: usize = 63;

/// The most connections one store's pool opens.
pub const MAX_POOL_SIZE: u32 = 256;

/// The default pool size.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// The default schema name.
pub const DEFAULT_SCHEMA: &str = "eskit";

/// A validated schema name: `[a-z_][a-z0-9_]*`, at most
/// [`MAX_SCHEMA_BYTES`] bytes. Only such a name is ever put into SQL text,
/// and always double-quoted.
///
/// ```
/// use eskit_pg::SchemaName;
/// assert!(SchemaName::new("orders_v2").is_ok());
/// assert!(SchemaName::new("events; DROP TABLE x").is_err());
/// assert!(SchemaName::new("Events").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// Checks a schema name.
    ///
    /// # Errors
    /// [`PgError::InvalidSchema`] for an empty name, one longer than
    /// [`MAX_SCHEMA_BYTES`], one not starting with `a-z` or `_`, or one with
    /// a byte outside `a-z`, `0-9` and `_`.
    pub fn new(name: impl Into<String>) -> Result<Self, PgError> {
        let name = name.into();
        match identifier_rule(&name) {
            None => Ok(Self(name)),
            Some(reason) => Err(PgError::InvalidSchema {
                name: eskit_core::backend::quote_name(&name).to_string(),
                reason,
            }),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an SQL identifier, double-quoted. Safe to splice: the
    /// name has no quote or other special character.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// The rule `name` breaks as an identifier the crate splices (quoted)
/// into SQL, or `None` when it keeps them all: `[a-z_][a-z0-9_]*`, at most
/// [`MAX_SCHEMA_BYTES`] bytes, not starting with `pg_`.
fn identifier_rule(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Some("it is empty");
    };
    if bytes.len() > MAX_SCHEMA_BYTES {
        return Some("it is longer than 63 bytes");
    }
    if !(first.is_ascii_lowercase() || *first == b'_') {
        return Some("it must start with a-z or _");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
    {
        return Some("only a-z, 0-9 and _ are allowed");
    }
    if name.starts_with("pg_") {
        return Some("names starting with pg_ are reserved");
    }
    None
}

/// A validated role name for [`PgStore::grant_access`](crate::PgStore::grant_access),
/// under the same rule as [`SchemaName`]: `[a-z_][a-z0-9_]*`, at most
/// [`MAX_SCHEMA_BYTES`] bytes, not starting with `pg_`; always
/// double-quoted in SQL.
///
/// ```
/// use eskit_pg::RoleName;
/// assert!(RoleName::new("orders_app").is_ok());
/// assert!(RoleName::new("app; DROP ROLE x").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleName(String);

impl RoleName {
    /// Checks a role name.
    ///
    /// # Errors
    /// [`PgError::InvalidRole`] when it breaks the rule.
    pub fn new(name: impl Into<String>) -> Result<Self, PgError> {
        let name = name.into();
        match identifier_rule(&name) {
            None => Ok(Self(name)),
            Some(reason) => Err(PgError::InvalidRole {
                name: eskit_core::backend::quote_name(&name).to_string(),
                reason,
            }),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an SQL identifier, double-quoted.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SchemaName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SchemaName {
    type Err = PgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// How to reach the server and where the store's tables live.
///
/// ```
/// use eskit_pg::PgOptions;
/// let options = PgOptions::new("postgres://app@127.0.0.1:5432/app")
///     .with_schema("billing")
///     .with_pool_size(4);
/// assert_eq!(options.schema(), "billing");
/// ```
#[derive(Clone)]
pub struct PgOptions {
    url: String,
    schema: String,
    pool_size: u32,
    runtime: Option<tokio::runtime::Handle>,
    require_row_security: bool,
    group_commit: bool,
}

impl fmt::Debug for PgOptions {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("require_row_security", &self.require_row_security)
            .field("group_commit", &self.group_commit)
            .finish_non_exhaustive()
    }
}

impl PgOptions {
    /// Options for the server at `url` (`postgres://user[:password]@host[:port]/database`),
    /// with the default schema and pool size.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            runtime: None,
            require_row_security: false,
            group_commit: false,
        }
    }

    /// Refuses to connect as a role that bypasses row-level security (a
    /// superuser or a `BYPASSRLS` role): [`PgStore::connect`](crate::PgStore::connect)
    /// then fails with [`PgError::RowSecurityBypassed`]. Use it for the
    /// application role, so a misconfigured URL cannot quietly turn the
    /// database's tenant wall off. See the crate docs, "Row-level security".
    #[must_use]
    pub fn require_row_security(mut self) -> Self {
        self.require_row_security = true;
        self
    }

    /// Whether [`require_row_security`](Self::require_row_security) was asked for.
    pub fn row_security_required(&self) -> bool {
        self.require_row_security
    }

    /// Group commit: standalone appends of this store that wait at the
    /// same time are written by one task in one transaction (at most
    /// [`MAX_GROUP_APPENDS`](crate::MAX_GROUP_APPENDS) of one tenant), each
    /// keeping its own outcome: a refused append (conflict, failed
    /// condition, duplicate id) writes nothing and the others commit; an
    /// idempotent retry is answered from the stored events. One commit
    /// (one WAL flush, one `NOTIFY`) serves the whole group. Off by
    /// default: PostgreSQL already lets concurrent commits share a WAL
    /// flush, and a group's appends run one after another on one
    /// connection, which measured slower than separate transactions with 8
    /// writers on a loaded 2-core machine (see the workspace's
    /// `docs/benchmarks.md`). Appends inside a caller's transaction
    /// ([`PgStore::append_in`](crate::PgStore::append_in)) are never grouped.
    #[must_use]
    pub fn with_group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// Whether group commit is on.
    pub fn group_commit(&self) -> bool {
        self.group_commit
    }

    /// Runs the store's work on this Tokio runtime. Without it the store
    /// uses the runtime current when connecting, or else starts a small one
    /// of its own (so it works under any executor).
    #[must_use]
    pub fn with_runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    pub(crate) fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.clone()
    }

    /// The schema that holds the store's tables (created if missing);
    /// checked by [`SchemaName::new`] when connecting.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the pool opens (1 to [`MAX_POOL_SIZE`]). The
    /// commit feed's `LISTEN` session has one connection more, of its own.
    #[must_use]
    pub fn with_pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema name as given.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The pool size.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// Checks the options without connecting.
    pub(crate) fn check(&self) -> Result<(SchemaName, sqlx::postgres::PgConnectOptions), PgError> {
        let schema = SchemaName::new(self.schema.clone())?;
        if self.pool_size == 0 || self.pool_size > MAX_POOL_SIZE {
            return Err(PgError::InvalidPoolSize {
                size: self.pool_size,
            });
        }
        let connect = parse_url(&self.url)?;
        Ok((schema, connect))
    }
}

/// Parses a server URL. Only `postgres://` and `postgresql://` URLs are
/// taken; the error never repeats the URL (it may hold a password).
pub(crate) fn parse_url(url: &str) -> Result<sqlx::postgres::PgConnectOptions, PgError> {
    use std::str::FromStr;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(PgError::InvalidUrl {
            reason: "it must start with postgres:// or postgresql://".to_owned(),
        });
    }
    if url.bytes().any(|b| b == 0 || b.is_ascii_control()) {
        return Err(PgError::InvalidUrl {
            reason: "it contains a control character".to_owned(),
        });
    }
    sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| PgError::InvalidUrl {
        reason: redact(&e.to_string(), url),
    })
}

/// The driver's message with the URL (and so a password) cut out.
fn redact(message: &str, url: &str) -> String {
    message.replace(url, "<url>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, ok: bool) {
        assert_eq!(SchemaName::new(name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn schema_names() {
        for good in ["eskit", "_x", "a1_b2", &"a".repeat(63)] {
            check(good, true);
        }
        let long_a = format!("{}a", "b".repeat(63));
        let long_b = format!("{}c", "b".repeat(63));
        for bad in [
            "",
            " ",
            "1abc",
            "Abc",
            "a-b",
            "a.b",
            "a\"b",
            "events; DROP TABLE x",
            "events\" --",
            "x\0y",
            "é",
            "pg_catalog",
            &long_a,
            &long_b,
        ] {
            check(bad, false);
        }
    }

    #[test]
    fn urls_are_parsed_defensively() {
        for bad in [
            "",
            "mysql://x",
            "postgres://u:p@host:notaport/db",
            "postgres://\0",
            "postgres://[::1",
            "postgres://u@h/db?sslmode=bogus",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?}");
        }
        assert!(parse_url("postgres://u:secret@127.0.0.1:5432/db").is_ok());
        let e = parse_url("postgres://u:secret@h:99999999/db")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn pool_size_is_bounded() {
        let o = PgOptions::new("postgres://u@h/db");
        assert!(o.clone().with_pool_size(0).check().is_err());
        assert!(o.clone().with_pool_size(MAX_POOL_SIZE + 1).check().is_err());
        assert!(o.with_pool_size(2).check().is_ok());
    }
}
