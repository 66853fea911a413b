//! Changes relayed between processes: what a backend's change relay stores
//! and gives back, and the checks every relay runs on a change before it
//! touches storage.

use crate::error::ValidationError;
use crate::event::{NameKind, Timestamp};
use crate::limits::MAX_READ_LIMIT;
use crate::name::validate_name;

/// One change read back from a backend's change relay (for example
/// "projection `orders` updated entity `o-1`").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedChange {
    /// The change's id; a reader asking for changes after an id never
    /// misses one that commits later. Ids are never reused.
    pub id: u64,
    /// The origin id of the relay that broadcast it, so a reader can skip
    /// its own.
    pub origin: String,
    /// What changed, for example a projection name.
    pub topic: String,
    /// Which entity changed, if one.
    pub key: Option<String>,
    /// When it was broadcast.
    pub created_at: Timestamp,
}

/// Checks a change before it is broadcast: the topic follows the
/// checkpoint-name rules, the key (if any) the stream-id rules.
///
/// # Errors
/// [`ValidationError`] for an empty, oversized or NUL-containing topic or
/// key.
pub fn validate_change(topic: &str, key: Option<&str>) -> Result<(), ValidationError> {
    validate_name(NameKind::Checkpoint, topic).map_err(ValidationError::from)?;
    if let Some(k) = key {
        validate_name(NameKind::StreamId, k).map_err(ValidationError::from)?;
    }
    Ok(())
}

/// Checks the limit of a read of relayed changes.
///
/// # Errors
/// [`ValidationError::InvalidLimit`] unless `1 <= limit <=`
/// [`MAX_READ_LIMIT`].
pub fn validate_change_limit(limit: usize) -> Result<(), ValidationError> {
    if limit == 0 || limit > MAX_READ_LIMIT {
        return Err(ValidationError::InvalidLimit { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_checked_before_they_are_stored() {
        assert!(validate_change("orders", Some("o-1")).is_ok());
        assert!(validate_change("orders", None).is_ok());
        assert!(validate_change("", None).is_err());
        assert!(validate_change("orders", Some("")).is_err());
        assert!(validate_change("or\0ders", None).is_err());
        assert!(validate_change(&"x".repeat(10_000), None).is_err());
        assert!(validate_change_limit(1).is_ok());
        assert!(validate_change_limit(MAX_READ_LIMIT).is_ok());
        assert!(validate_change_limit(0).is_err());
        assert!(validate_change_limit(MAX_READ_LIMIT + 1).is_err());
    }
}
