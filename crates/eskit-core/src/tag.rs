//! Tags: short labels an event carries beside its stream, such as
//! `course:c-1` or `student:s-7`, so that decisions can select events
//! across streams (the Dynamic Consistency Boundary).

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::ValidationError;
use crate::limits::{MAX_TAG_BYTES, MAX_TAGS_PER_EVENT};
use crate::name::InvalidNameReason;

/// A validated tag: 1 to [`MAX_TAG_BYTES`] bytes of UTF-8 without NUL.
///
/// The text is free-form; `kind:id` (`course:c-1`) is the convention the
/// examples follow. Tags compare, hash and sort as their text. Cloning
/// never allocates.
///
/// ```
/// use eskit_core::{error::ValidationError, event::Tag};
/// let t = Tag::new("course:c-1")?;
/// assert_eq!(t.as_str(), "course:c-1");
/// assert!(matches!(Tag::new(""), Err(ValidationError::InvalidTag { .. })));
/// # Ok::<(), ValidationError>(())
/// ```
#[derive(Clone)]
pub struct Tag(Arc<str>);

impl std::hash::Hash for Tag {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the text, so that a `&str` finds it (`Borrow<str>`).
        self.as_str().hash(state);
    }
}

// As their text, which a shared tag (one clone of another) need not read:
// stores hand their readers' events clones of the tags they met.
impl PartialEq for Tag {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Tag {}

impl PartialOrd for Tag {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Tag {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl Tag {
    /// Validates and wraps a tag.
    ///
    /// # Errors
    /// [`ValidationError::InvalidTag`] when the tag is empty, longer than
    /// [`MAX_TAG_BYTES`] or contains NUL.
    pub fn new(tag: impl AsRef<str>) -> Result<Self, ValidationError> {
        let tag = tag.as_ref();
        let reason = if tag.is_empty() {
            InvalidNameReason::Empty
        } else if tag.len() > MAX_TAG_BYTES {
            InvalidNameReason::TooLong { len: tag.len() }
        } else if tag.as_bytes().contains(&0) {
            InvalidNameReason::ContainsNul
        } else {
            return Ok(Self(Arc::from(tag)));
        };
        Err(ValidationError::InvalidTag { reason })
    }

    /// The tag as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tag").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tag {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for Tag {
    type Error = ValidationError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for Tag {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Tag {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// The tags of one event as a set: sorted, without duplicates. Every
/// backend returns an event's tags in this form.
pub(crate) fn normalize(mut tags: Vec<Tag>) -> Vec<Tag> {
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// Checks one event's tag count against [`MAX_TAGS_PER_EVENT`].
///
/// # Errors
/// [`ValidationError::TooManyTags`].
pub(crate) fn validate_tags(index: usize, tags: &[Tag]) -> Result<(), ValidationError> {
    if tags.len() > MAX_TAGS_PER_EVENT {
        return Err(ValidationError::TooManyTags {
            index,
            count: tags.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let reason = |s: &str| match Tag::new(s) {
            Err(ValidationError::InvalidTag { reason }) => Some(reason),
            _ => None,
        };
        assert_eq!(reason(""), Some(InvalidNameReason::Empty));
        assert_eq!(reason("a\0b"), Some(InvalidNameReason::ContainsNul));
        let long = "x".repeat(MAX_TAG_BYTES + 1);
        assert_eq!(
            reason(&long),
            Some(InvalidNameReason::TooLong {
                len: MAX_TAG_BYTES + 1
            })
        );
        assert_eq!(reason(&long[1..]), None);
        assert_eq!(reason("é:ü"), None);
    }

    #[test]
    fn shared_and_separate_tags_compare_alike() -> Result<(), ValidationError> {
        use std::hash::BuildHasher;
        let a = Tag::new("course:c-1")?;
        let shared = a.clone();
        let separate = Tag::new("course:c-1")?;
        let other = Tag::new("course:c-2")?;
        let h = std::collections::hash_map::RandomState::new();
        for t in [&shared, &separate] {
            assert_eq!(t, &a);
            assert_eq!(t.cmp(&a), std::cmp::Ordering::Equal);
            assert_eq!(h.hash_one(t), h.hash_one(&a));
            assert_eq!(t.cmp(&other), std::cmp::Ordering::Less);
            assert_eq!(other.cmp(t), std::cmp::Ordering::Greater);
            assert_ne!(t, &other);
        }
        Ok(())
    }

    #[test]
    fn normalize_sorts_and_dedups() -> Result<(), ValidationError> {
        let t = |s| Tag::new(s);
        let tags = normalize(vec![t("b")?, t("a")?, t("b")?]);
        assert_eq!(tags, vec![t("a")?, t("b")?]);
        Ok(())
    }
}
