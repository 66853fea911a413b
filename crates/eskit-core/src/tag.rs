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

/// The tags of one stored event: sorted, without duplicates, as
/// [`NewEvent::with_tags`](crate::event::NewEvent::with_tags) leaves them.
///
/// Reads as a slice of [`Tag`]s (it dereferences to `[Tag]`). Cloning
/// shares the list (a reference count, no allocation), so the events of one
/// read that carry the same tags can hold one list between them; no tags
/// hold no allocation at all. Tags compare, hash and sort as their slices.
///
/// ```
/// use eskit_core::event::{Tag, Tags};
/// let tags = Tags::from(vec![Tag::new("course:c-1")?, Tag::new("student:s-1")?]);
/// assert_eq!(tags.len(), 2);
/// assert_eq!(tags[0].as_str(), "course:c-1");
/// assert!(tags.contains(&Tag::new("student:s-1")?));
/// assert_eq!(tags.clone(), tags);
/// assert!(Tags::new().is_empty());
/// # Ok::<(), eskit_core::error::ValidationError>(())
/// ```
#[derive(Clone, Default)]
pub struct Tags(Option<Arc<[Tag]>>);

impl Tags {
    /// No tags.
    pub const fn new() -> Self {
        Self(None)
    }

    /// The tags as a slice.
    pub fn as_slice(&self) -> &[Tag] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// Whether `a` and `b` are one shared list (one a clone of the other),
    /// as [`Arc::ptr_eq`]; two lists of equal tags need not be. No tags
    /// share with no tags.
    pub fn ptr_eq(a: &Tags, b: &Tags) -> bool {
        match (&a.0, &b.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl std::ops::Deref for Tags {
    type Target = [Tag];
    fn deref(&self) -> &[Tag] {
        self.as_slice()
    }
}

impl AsRef<[Tag]> for Tags {
    fn as_ref(&self) -> &[Tag] {
        self.as_slice()
    }
}

impl Borrow<[Tag]> for Tags {
    fn borrow(&self) -> &[Tag] {
        self.as_slice()
    }
}

impl From<Vec<Tag>> for Tags {
    fn from(tags: Vec<Tag>) -> Self {
        if tags.is_empty() {
            Self(None)
        } else {
            Self(Some(Arc::from(tags)))
        }
    }
}

impl From<&[Tag]> for Tags {
    fn from(tags: &[Tag]) -> Self {
        if tags.is_empty() {
            Self(None)
        } else {
            Self(Some(Arc::from(tags)))
        }
    }
}

impl<const N: usize> From<[Tag; N]> for Tags {
    fn from(tags: [Tag; N]) -> Self {
        Self::from(Vec::from(tags))
    }
}

impl From<Tags> for Vec<Tag> {
    fn from(tags: Tags) -> Self {
        tags.to_vec()
    }
}

impl FromIterator<Tag> for Tags {
    fn from_iter<I: IntoIterator<Item = Tag>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = &'a Tag;
    type IntoIter = std::slice::Iter<'a, Tag>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl PartialEq for Tags {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => true,
            _ => self.as_slice() == other.as_slice(),
        }
    }
}

impl Eq for Tags {}

impl std::hash::Hash for Tags {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialOrd for Tags {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Tags {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl PartialEq<[Tag]> for Tags {
    fn eq(&self, other: &[Tag]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[Tag]> for Tags {
    fn eq(&self, other: &&[Tag]) -> bool {
        self.as_slice() == *other
    }
}

impl PartialEq<Vec<Tag>> for Tags {
    fn eq(&self, other: &Vec<Tag>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> PartialEq<[Tag; N]> for Tags {
    fn eq(&self, other: &[Tag; N]) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<Tags> for Vec<Tag> {
    fn eq(&self, other: &Tags) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<Tags> for [Tag] {
    fn eq(&self, other: &Tags) -> bool {
        self == other.as_slice()
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
    fn tags_share_on_clone_and_compare_as_slices() -> Result<(), ValidationError> {
        let (a, b) = (Tag::new("a")?, Tag::new("b")?);
        let tags = Tags::from(vec![a.clone(), b.clone()]);
        let shared = tags.clone();
        assert!(std::ptr::eq(shared.as_slice(), tags.as_slice()));
        assert!(Tags::ptr_eq(&shared, &tags));
        let separate: Tags = [a.clone(), b.clone()].into_iter().collect();
        assert_eq!(separate, tags);
        assert!(!Tags::ptr_eq(&separate, &tags));
        assert!(Tags::ptr_eq(&Tags::new(), &Tags::from(Vec::new())));
        assert_eq!(tags, vec![a.clone(), b.clone()]);
        assert_eq!(vec![a.clone(), b.clone()], tags);
        assert_eq!(tags, [a.clone(), b.clone()]);
        let (just_a, just_b) = (Tags::from(vec![a.clone()]), Tags::from(vec![b.clone()]));
        assert!(just_a < tags && just_b > tags);
        assert_eq!(Tags::from(Vec::new()), Tags::new());
        assert!(Tags::from(&[][..]).0.is_none(), "no tags hold no list");
        assert_eq!(format!("{tags:?}"), "[Tag(\"a\"), Tag(\"b\")]");
        assert_eq!(Vec::from(tags.clone()), vec![a, b]);
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
