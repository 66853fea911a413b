//! The table names a read model's view declares, checked the same way by
//! every SQL backend before any of them reaches SQL.

use std::fmt;

use crate::limits::{MAX_VIEW_TABLE_NAME, MAX_VIEW_TABLES};

/// How a backend's SQL names tables, for [`check_view_tables`].
#[derive(Debug, Clone, Copy)]
pub struct TableNaming<'a> {
    /// Only lowercase letters (a backend that folds unquoted names to
    /// lowercase, as PostgreSQL does); otherwise letters of either case,
    /// and two names that differ only in case are the same table.
    pub lowercase_only: bool,
    /// Prefixes the backend keeps for its own tables, compared without
    /// case, as they are written in [`TableNaming::reserved_reason`].
    pub reserved_prefixes: &'a [&'a str],
    /// What a name with a reserved prefix is told.
    pub reserved_reason: &'static str,
    /// The names of the backend's own tables that have no reserved prefix.
    pub reserved_names: &'a [&'a str],
}

/// Why a view's table list was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewTableError {
    /// The view declares no table, or more than [`MAX_VIEW_TABLES`].
    Count(usize),
    /// A table name is refused.
    Table {
        /// The name, cut to [`MAX_VIEW_TABLE_NAME`] characters.
        table: String,
        /// Why.
        reason: &'static str,
    },
}

impl fmt::Display for ViewTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "a view declares 1 to {MAX_VIEW_TABLES} tables, not {n}"),
            Self::Table { table, reason } => {
                write!(f, "invalid view table name `{table}`: {reason}")
            }
        }
    }
}

impl std::error::Error for ViewTableError {}

/// Checks the tables a view declares: 1 to [`MAX_VIEW_TABLES`] names, each
/// 1 to [`MAX_VIEW_TABLE_NAME`] bytes of ASCII letters (lowercase only when
/// `naming` says so), digits and `_`, not starting with a digit, without a
/// reserved prefix, not one of the backend's own tables, none twice. A name
/// that passes can be written into SQL unquoted.
///
/// # Errors
/// The first refusal, as [`ViewTableError`].
///
/// # Examples
/// ```
/// use eskit_core::backend::{TableNaming, ViewTableError, check_view_tables};
///
/// let naming = TableNaming {
///     lowercase_only: true,
///     reserved_prefixes: &["eskit_"],
///     reserved_reason: "the prefix `eskit_` is reserved",
///     reserved_names: &["events"],
/// };
/// assert!(check_view_tables(&["orders", "order_lines"], &naming).is_ok());
/// assert!(matches!(
///     check_view_tables(&["events"], &naming),
///     Err(ViewTableError::Table { .. })
/// ));
/// assert_eq!(check_view_tables(&[], &naming), Err(ViewTableError::Count(0)));
/// ```
pub fn check_view_tables(tables: &[&str], naming: &TableNaming<'_>) -> Result<(), ViewTableError> {
    if tables.is_empty() || tables.len() > MAX_VIEW_TABLES {
        return Err(ViewTableError::Count(tables.len()));
    }
    let same = |a: &str, b: &str| {
        if naming.lowercase_only {
            a == b
        } else {
            a.eq_ignore_ascii_case(b)
        }
    };
    for (i, t) in tables.iter().enumerate() {
        let allowed = |b: u8| {
            b.is_ascii_digit()
                || b == b'_'
                || b.is_ascii_lowercase()
                || (!naming.lowercase_only && b.is_ascii_uppercase())
        };
        let reason = if t.is_empty() {
            Some("empty")
        } else if t.len() > MAX_VIEW_TABLE_NAME {
            Some("longer than MAX_VIEW_TABLE_NAME bytes")
        } else if !t.bytes().all(allowed) {
            Some(if naming.lowercase_only {
                "only lowercase ASCII letters, digits and `_` are allowed"
            } else {
                "only ASCII letters, digits and `_` are allowed"
            })
        } else if t.as_bytes()[0].is_ascii_digit() {
            Some("starts with a digit")
        } else if naming.reserved_prefixes.iter().any(|p| {
            t.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        }) {
            Some(naming.reserved_reason)
        } else if naming.reserved_names.iter().any(|r| same(r, t)) {
            Some("the store has a table of that name")
        } else if tables[..i].iter().any(|o| same(o, t)) {
            Some("declared twice")
        } else {
            None
        };
        if let Some(reason) = reason {
            let table = t.chars().take(MAX_VIEW_TABLE_NAME).collect();
            return Err(ViewTableError::Table { table, reason });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: TableNaming<'static> = TableNaming {
        lowercase_only: true,
        reserved_prefixes: &["eskit_", "pg_"],
        reserved_reason: "reserved",
        reserved_names: &["events"],
    };
    const LITE: TableNaming<'static> = TableNaming {
        lowercase_only: false,
        reserved_prefixes: &["eskit_", "sqlite_"],
        reserved_reason: "reserved",
        reserved_names: &[],
    };

    fn reason(r: Result<(), ViewTableError>) -> Option<&'static str> {
        match r {
            Err(ViewTableError::Table { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_view_tables(&["a", "b_2"], &PG), Ok(()));
        assert_eq!(check_view_tables(&["Orders", "x"], &LITE), Ok(()));
        assert_eq!(reason(check_view_tables(&[""], &PG)), Some("empty"));
        let long = "a".repeat(MAX_VIEW_TABLE_NAME + 1);
        assert_eq!(
            reason(check_view_tables(&[long.as_str()], &PG)),
            Some("longer than MAX_VIEW_TABLE_NAME bytes")
        );
        let exact = "a".repeat(MAX_VIEW_TABLE_NAME);
        assert_eq!(check_view_tables(&[exact.as_str()], &PG), Ok(()));
        for bad in ["Orders", "a-b", "a b", "a\"b", "ä", "a;drop"] {
            assert!(reason(check_view_tables(&[bad], &PG)).is_some(), "{bad}");
        }
        for bad in ["a-b", "ä", "a\0"] {
            assert!(reason(check_view_tables(&[bad], &LITE)).is_some(), "{bad}");
        }
        assert_eq!(
            reason(check_view_tables(&["1a"], &PG)),
            Some("starts with a digit")
        );
        assert_eq!(reason(check_view_tables(&["pg_x"], &PG)), Some("reserved"));
        assert_eq!(
            reason(check_view_tables(&["ESKIT_x"], &LITE)),
            Some("reserved")
        );
        assert_eq!(
            reason(check_view_tables(&["Sqlite_x"], &LITE)),
            Some("reserved")
        );
        assert_eq!(
            reason(check_view_tables(&["events"], &PG)),
            Some("the store has a table of that name")
        );
        assert_eq!(
            reason(check_view_tables(&["a", "a"], &PG)),
            Some("declared twice")
        );
        assert_eq!(
            reason(check_view_tables(&["a", "A"], &LITE)),
            Some("declared twice")
        );
    }

    #[test]
    fn counts_are_bounded() {
        assert_eq!(check_view_tables(&[], &PG), Err(ViewTableError::Count(0)));
        let names: Vec<String> = (0..=MAX_VIEW_TABLES).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            check_view_tables(&refs, &PG),
            Err(ViewTableError::Count(MAX_VIEW_TABLES + 1))
        );
        assert_eq!(check_view_tables(&refs[..MAX_VIEW_TABLES], &PG), Ok(()));
    }

    #[test]
    fn a_refused_name_is_cut() {
        let long = "Ä".repeat(200);
        match check_view_tables(&[long.as_str()], &PG) {
            Err(ViewTableError::Table { table, .. }) => {
                assert_eq!(table.chars().count(), MAX_VIEW_TABLE_NAME);
            }
            other => panic!("{other:?}"),
        }
    }
}
