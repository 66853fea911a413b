//! One wire shape for [`Metadata`], shared by every backend: a list of
//! string pairs with flat key names ([`Metadata::to_wire`]), and a JSON
//! object of strings for backends that store it as text.
//!
//! The parsers are strict and defensive: an unknown key, a key given twice,
//! half a principal, or a value breaking [`Metadata::validate`] is a
//! [`MetadataWireError`]; input past the bounds is refused before it is
//! looked at, and nothing in it can make them panic or recurse.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

use crate::error::ValidationError;
use crate::limits::{
    MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_METADATA_JSON_BYTES, MAX_METADATA_WIRE_PAIRS,
    MAX_NAME_BYTES,
};
use crate::metadata::{Metadata, Principal, PrincipalKind};
use crate::name::{NameKind, quote_name, validate_name};

const CORRELATION_ID: &str = "correlation_id";
const CAUSATION_ID: &str = "causation_id";
const IDEMPOTENCY_KEY: &str = "idempotency_key";
const INITIATOR_KIND: &str = "initiator.kind";
const INITIATOR_ID: &str = "initiator.id";
const ORIGINATOR_KIND: &str = "originator.kind";
const ORIGINATOR_ID: &str = "originator.id";
/// Prefix of an extra entry's key.
const EXTRA_PREFIX: &str = "x.";

// Every pair of valid metadata is one of the seven named fields or an extra.
const _: () = assert!(MAX_METADATA_WIRE_PAIRS == MAX_METADATA_ENTRIES + 7);
// The JSON of any valid metadata fits: each byte of a key or value takes at
// most 6 bytes escaped (`\u001f`), each pair adds 6 (quotes, colon, comma),
// and keys are at most 16 bytes (named) or 2 + the extra key (counted in
// the metadata's size).
const _: () = assert!(
    6 * (MAX_METADATA_BYTES + 16 * MAX_METADATA_WIRE_PAIRS) + 6 * MAX_METADATA_WIRE_PAIRS + 2
        <= MAX_METADATA_JSON_BYTES
);

/// Why metadata in the wire shape could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataWireError {
    /// The JSON text is longer than [`MAX_METADATA_JSON_BYTES`].
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// The JSON text is not one object whose values are all strings.
    MalformedJson {
        /// Byte offset where reading stopped.
        offset: usize,
        /// What was expected there.
        expected: &'static str,
    },
    /// More than [`MAX_METADATA_WIRE_PAIRS`] pairs.
    TooManyPairs {
        /// How many pairs were seen before giving up.
        count: usize,
    },
    /// A key that is none of the wire shape's keys.
    UnknownKey {
        /// The key, cut to [`MAX_NAME_BYTES`].
        key: String,
    },
    /// A key given more than once.
    DuplicateKey {
        /// The key, cut to [`MAX_NAME_BYTES`].
        key: String,
    },
    /// A principal's kind without its id, or its id without its kind.
    IncompletePrincipal {
        /// `initiator` or `originator`.
        role: &'static str,
    },
    /// The pairs make metadata that breaks a bound or a rule.
    Invalid(ValidationError),
}

impl fmt::Display for MetadataWireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len } => write!(
                f,
                "metadata JSON of {len} bytes exceeds {MAX_METADATA_JSON_BYTES}"
            ),
            Self::MalformedJson { offset, expected } => {
                write!(
                    f,
                    "malformed metadata JSON at byte {offset}: expected {expected}"
                )
            }
            Self::TooManyPairs { count } => write!(
                f,
                "more than {MAX_METADATA_WIRE_PAIRS} metadata pairs ({count} seen)"
            ),
            Self::UnknownKey { key } => write!(f, "unknown metadata key {}", quote_name(key)),
            Self::DuplicateKey { key } => {
                write!(f, "metadata key {} given twice", quote_name(key))
            }
            Self::IncompletePrincipal { role } => {
                write!(f, "metadata {role} needs both a kind and an id")
            }
            Self::Invalid(_) => f.write_str("invalid metadata"),
        }
    }
}

impl StdError for MetadataWireError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ValidationError> for MetadataWireError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e)
    }
}

/// `key` cut to at most [`MAX_NAME_BYTES`], on a character boundary, so an
/// error never holds a huge input.
fn bounded_key(key: &str) -> String {
    let mut end = key.len().min(MAX_NAME_BYTES);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key[..end].to_owned()
}

impl Metadata {
    /// The metadata as flat wire pairs, the one shape every backend stores,
    /// in a fixed order: the named fields, then the extra entries sorted by
    /// key.
    ///
    /// | Key | Value |
    /// |---|---|
    /// | `correlation_id` | [`Metadata::correlation_id`] |
    /// | `causation_id` | [`Metadata::causation_id`] |
    /// | `idempotency_key` | [`Metadata::idempotency_key`] |
    /// | `initiator.kind`, `initiator.id` | [`Metadata::initiator`]: both or neither |
    /// | `originator.kind`, `originator.id` | [`Metadata::originator`]: both or neither |
    /// | `x.<key>` | the extra entry `<key>` ([`Metadata::extra`]) |
    ///
    /// A principal's kind is its stored string form ([`PrincipalKind::as_str`]).
    /// Flat pairs fit every medium: a SQL `TEXT`/`JSONB` column (SQLite and
    /// PostgreSQL store the same JSON object, queryable by key), or message
    /// headers (NATS), one pair per header. An absent field has no pair; empty
    /// metadata is no pairs.
    ///
    /// ```
    /// use eskit_core::event::{Metadata, Principal};
    /// let m = Metadata::new()
    ///     .with_correlation_id("c-1")
    ///     .with_initiator(Principal::user("ada"))
    ///     .with_extra("tenant_region", "eu");
    /// let pairs: Vec<(String, String)> =
    ///     m.to_wire().into_iter().map(|(k, v)| (k.into_owned(), v.to_owned())).collect();
    /// assert_eq!(pairs, [
    ///     ("correlation_id".to_owned(), "c-1".to_owned()),
    ///     ("initiator.kind".to_owned(), "user".to_owned()),
    ///     ("initiator.id".to_owned(), "ada".to_owned()),
    ///     ("x.tenant_region".to_owned(), "eu".to_owned()),
    /// ]);
    /// assert_eq!(Metadata::from_wire(pairs)?, m);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_wire(&self) -> Vec<(Cow<'static, str>, &str)> {
        let mut out: Vec<(Cow<'static, str>, &str)> = Vec::with_capacity(7 + self.extra().len());
        for (key, value) in [
            (CORRELATION_ID, self.correlation_id()),
            (CAUSATION_ID, self.causation_id()),
            (IDEMPOTENCY_KEY, self.idempotency_key()),
        ] {
            if let Some(v) = value {
                out.push((Cow::Borrowed(key), v));
            }
        }
        for (p, kind, id) in [
            (self.initiator(), INITIATOR_KIND, INITIATOR_ID),
            (self.originator(), ORIGINATOR_KIND, ORIGINATOR_ID),
        ] {
            if let Some(p) = p {
                out.push((Cow::Borrowed(kind), p.kind().as_str()));
                out.push((Cow::Borrowed(id), p.id()));
            }
        }
        for (k, v) in self.extra() {
            out.push((Cow::Owned(format!("{EXTRA_PREFIX}{k}")), v.as_str()));
        }
        out
    }

    /// Reads metadata from flat wire pairs, in any order.
    ///
    /// # Errors
    /// [`MetadataWireError`]: more than [`MAX_METADATA_WIRE_PAIRS`] pairs,
    /// an unknown or repeated key, half a principal, or metadata that fails
    /// [`Metadata::validate`] (bad extra key, idempotency key, NUL, size).
    pub fn from_wire<K, V>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, MetadataWireError>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut correlation = None;
        let mut causation = None;
        let mut idempotency = None;
        let mut principals: [(Option<String>, Option<String>); 2] = Default::default();
        let mut m = Metadata::new();
        let mut count = 0;
        for (key, value) in pairs {
            count += 1;
            if count > MAX_METADATA_WIRE_PAIRS {
                return Err(MetadataWireError::TooManyPairs { count });
            }
            let key = key.as_ref();
            let slot = match key {
                CORRELATION_ID => &mut correlation,
                CAUSATION_ID => &mut causation,
                IDEMPOTENCY_KEY => &mut idempotency,
                INITIATOR_KIND => &mut principals[0].0,
                INITIATOR_ID => &mut principals[0].1,
                ORIGINATOR_KIND => &mut principals[1].0,
                ORIGINATOR_ID => &mut principals[1].1,
                _ => {
                    let Some(extra) = key.strip_prefix(EXTRA_PREFIX) else {
                        return Err(MetadataWireError::UnknownKey {
                            key: bounded_key(key),
                        });
                    };
                    validate_name(NameKind::MetadataKey, extra).map_err(ValidationError::from)?;
                    if m.extra_value(extra).is_some() {
                        return Err(MetadataWireError::DuplicateKey {
                            key: bounded_key(key),
                        });
                    }
                    m = m.with_extra(extra, value);
                    continue;
                }
            };
            if slot.is_some() {
                return Err(MetadataWireError::DuplicateKey {
                    key: bounded_key(key),
                });
            }
            *slot = Some(value.into());
        }
        if let Some(v) = correlation {
            m = m.with_correlation_id(v);
        }
        if let Some(v) = causation {
            m = m.with_causation_id(v);
        }
        if let Some(v) = idempotency {
            m = m.with_idempotency_key(v);
        }
        let [initiator, originator] = principals;
        if let Some(p) = principal(initiator, "initiator")? {
            m = m.with_initiator(p);
        }
        if let Some(p) = principal(originator, "originator")? {
            m = m.with_originator(p);
        }
        m.validate()?;
        Ok(m)
    }
}

fn principal(
    (kind, id): (Option<String>, Option<String>),
    role: &'static str,
) -> Result<Option<Principal>, MetadataWireError> {
    match (kind, id) {
        (None, None) => Ok(None),
        (Some(kind), Some(id)) => Ok(Some(Principal::new(PrincipalKind::parse(&kind), id))),
        _ => Err(MetadataWireError::IncompletePrincipal { role }),
    }
}

/// The metadata as a flat JSON object of strings ([`Metadata::to_wire`]'s
/// pairs, in that order), or `None` for empty metadata, for backends that
/// store it as text.
///
/// ```
/// use eskit_core::backend::{metadata_from_json, metadata_to_json};
/// use eskit_core::event::{Metadata, Principal};
/// let m = Metadata::new().with_originator(Principal::service("billing"));
/// let text = metadata_to_json(&m).ok_or("not empty")?;
/// assert_eq!(text, r#"{"originator.kind":"service","originator.id":"billing"}"#);
/// assert_eq!(metadata_from_json(&text)?, m);
/// assert_eq!(metadata_to_json(&Metadata::new()), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn metadata_to_json(metadata: &Metadata) -> Option<String> {
    if metadata.is_empty() {
        return None;
    }
    Some(encode_flat_json(metadata.to_wire()))
}

/// Reads metadata stored by [`metadata_to_json`].
///
/// # Errors
/// As [`decode_flat_json`] and [`Metadata::from_wire`].
pub fn metadata_from_json(text: &str) -> Result<Metadata, MetadataWireError> {
    Metadata::from_wire(decode_flat_json(text)?)
}

/// Writes string pairs as one JSON object, in the given order, escaping
/// what JSON requires (quote, backslash, control characters). The caller
/// keeps keys unique; [`decode_flat_json`] reads the text back.
pub fn encode_flat_json<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, k.as_ref());
        out.push(':');
        push_json_string(&mut out, v.as_ref());
    }
    out.push('}');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let b = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Reads one JSON object whose values are all strings into its pairs, in
/// text order, keeping repeated keys (the caller decides about them).
/// Standard JSON: whitespace between tokens, every string escape, surrogate
/// pairs; nothing after the object.
///
/// # Errors
/// [`MetadataWireError::TooLarge`] past [`MAX_METADATA_JSON_BYTES`],
/// [`MetadataWireError::TooManyPairs`] past [`MAX_METADATA_WIRE_PAIRS`],
/// [`MetadataWireError::MalformedJson`] for anything else that is not such
/// an object (nested values, numbers, bad escapes, lone surrogates, raw
/// control characters, trailing bytes).
pub fn decode_flat_json(text: &str) -> Result<Vec<(String, String)>, MetadataWireError> {
    if text.len() > MAX_METADATA_JSON_BYTES {
        return Err(MetadataWireError::TooLarge { len: text.len() });
    }
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    let mut pairs = Vec::new();
    p.ws();
    p.expect(b'{', "'{'")?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.at += 1;
    } else {
        loop {
            if pairs.len() == MAX_METADATA_WIRE_PAIRS {
                return Err(MetadataWireError::TooManyPairs {
                    count: pairs.len() + 1,
                });
            }
            let key = p.string("a string key")?;
            p.ws();
            p.expect(b':', "':'")?;
            p.ws();
            let value = p.string("a string value")?;
            pairs.push((key, value));
            p.ws();
            match p.peek() {
                Some(b',') => {
                    p.at += 1;
                    p.ws();
                }
                Some(b'}') => {
                    p.at += 1;
                    break;
                }
                _ => return Err(p.error("',' or '}'")),
            }
        }
    }
    p.ws();
    if p.at != p.s.len() {
        return Err(p.error("the end of the text"));
    }
    Ok(pairs)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn error(&self, expected: &'static str) -> MetadataWireError {
        MetadataWireError::MalformedJson {
            offset: self.at,
            expected,
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), MetadataWireError> {
        if self.peek() != Some(byte) {
            return Err(self.error(expected));
        }
        self.at += 1;
        Ok(())
    }

    /// Four hex digits after `\u`.
    fn hex4(&mut self) -> Result<u32, MetadataWireError> {
        let mut n = 0;
        for _ in 0..4 {
            let d = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or_else(|| self.error("four hex digits"))?;
            n = n * 16 + d;
            self.at += 1;
        }
        Ok(n)
    }

    /// A JSON string, the parser at its opening quote.
    fn string(&mut self, expected: &'static str) -> Result<String, MetadataWireError> {
        self.expect(b'"', expected)?;
        let mut out = String::new();
        loop {
            // Copy the run of plain bytes up to the next quote, backslash or
            // control byte at once; the input is UTF-8 and the run ends on
            // an ASCII byte, so it is whole characters.
            let start = self.at;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            let run = std::str::from_utf8(&self.s[start..self.at])
                .map_err(|_| self.error("UTF-8 text"))?;
            out.push_str(run);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.at += 1;
                            let c = self.unicode_escape()?;
                            out.push(c);
                            continue;
                        }
                        _ => return Err(self.error("an escape character")),
                    };
                    self.at += 1;
                    out.push(c);
                }
                Some(_) => return Err(self.error("an escaped control character")),
                None => return Err(self.error("a closing quote")),
            }
        }
    }

    /// The character of a `\uXXXX` escape (the parser after `\u`), joining
    /// a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, MetadataWireError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.s.get(self.at..self.at + 2) != Some(b"\\u") {
                    return Err(self.error("a low surrogate escape"));
                }
                self.at += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.error("a low surrogate"));
                }
                0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("a high surrogate first")),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.error("a Unicode scalar value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Result<&[(&str, &str)], MetadataWireError>) {
        let got = decode_flat_json(text);
        match expect {
            Ok(pairs) => {
                let want: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                assert_eq!(got, Ok(want), "{text:?}");
            }
            Err(e) => assert_eq!(got, Err(e), "{text:?}"),
        }
    }

    fn malformed(offset: usize, expected: &'static str) -> MetadataWireError {
        MetadataWireError::MalformedJson { offset, expected }
    }

    #[test]
    fn flat_json_reads_standard_objects_and_nothing_else() {
        check("{}", Ok(&[]));
        check(" \t\r\n{ } \n", Ok(&[]));
        check(r#"{"a":"b","a":"c"}"#, Ok(&[("a", "b"), ("a", "c")]));
        check(
            r#"{ "k" : "\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00" }"#,
            Ok(&[("k", "\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{1f600}")]),
        );
        check("{\"é\":\"ü\"}", Ok(&[("é", "ü")]));
        check("", Err(malformed(0, "'{'")));
        check("[]", Err(malformed(0, "'{'")));
        check("{", Err(malformed(1, "a string key")));
        check(r#"{"a"}"#, Err(malformed(4, "':'")));
        check(r#"{"a":1}"#, Err(malformed(5, "a string value")));
        check(r#"{"a":{}}"#, Err(malformed(5, "a string value")));
        check(r#"{"a":"b",}"#, Err(malformed(9, "a string key")));
        check(r#"{"a":"b"} x"#, Err(malformed(10, "the end of the text")));
        check(r#"{"a":"b""#, Err(malformed(8, "',' or '}'")));
        check(r#"{"a":"b"#, Err(malformed(7, "a closing quote")));
        check(
            "{\"a\":\"\n\"}",
            Err(malformed(6, "an escaped control character")),
        );
        check(r#"{"a":"\x"}"#, Err(malformed(7, "an escape character")));
        check(r#"{"a":"\u12"}"#, Err(malformed(10, "four hex digits")));
        check(
            r#"{"a":"\ud800"}"#,
            Err(malformed(12, "a low surrogate escape")),
        );
        check(
            r#"{"a":"\ud800\u0041"}"#,
            Err(malformed(18, "a low surrogate")),
        );
        check(
            r#"{"a":"\udc00"}"#,
            Err(malformed(12, "a high surrogate first")),
        );
        let too_big = " ".repeat(MAX_METADATA_JSON_BYTES + 1);
        assert_eq!(
            decode_flat_json(&too_big),
            Err(MetadataWireError::TooLarge { len: too_big.len() })
        );
        let many = encode_flat_json((0..=MAX_METADATA_WIRE_PAIRS).map(|i| (format!("k{i}"), "")));
        assert_eq!(
            decode_flat_json(&many),
            Err(MetadataWireError::TooManyPairs {
                count: MAX_METADATA_WIRE_PAIRS + 1
            })
        );
    }

    #[test]
    fn encoding_escapes_what_json_requires() {
        let text = encode_flat_json([("q\"b\\", "\u{1}\n\r\t\u{1f}é")]);
        assert_eq!(text, r#"{"q\"b\\":"\u0001\n\r\t\u001fé"}"#);
        assert_eq!(
            decode_flat_json(&text),
            Ok(vec![("q\"b\\".to_owned(), "\u{1}\n\r\t\u{1f}é".to_owned())])
        );
    }

    fn from(pairs: &[(&str, &str)]) -> Result<Metadata, MetadataWireError> {
        Metadata::from_wire(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn from_wire_is_strict() {
        let full = Metadata::new_chain(Principal::user("ada"))
            .with_causation_id("c")
            .with_idempotency_key("k")
            .with_extra("a.b", "x")
            .with_extra("z", "");
        let pairs: Vec<(String, String)> = full
            .to_wire()
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.to_owned()))
            .collect();
        assert_eq!(Metadata::from_wire(pairs.iter().rev().cloned()), Ok(full));
        assert_eq!(from(&[]), Ok(Metadata::new()));
        assert_eq!(
            from(&[("initiator.kind", "bot"), ("initiator.id", "7")]),
            Ok(Metadata::new()
                .with_initiator(Principal::new(PrincipalKind::Other("bot".into()), "7")))
        );
        assert_eq!(
            from(&[("initiator", "ada")]),
            Err(MetadataWireError::UnknownKey {
                key: "initiator".into()
            })
        );
        assert_eq!(
            from(&[("extra", "{}")]),
            Err(MetadataWireError::UnknownKey {
                key: "extra".into()
            })
        );
        let long = "y".repeat(10_000);
        assert_eq!(
            from(&[(long.as_str(), "")]),
            Err(MetadataWireError::UnknownKey {
                key: "y".repeat(MAX_NAME_BYTES)
            })
        );
        assert_eq!(
            from(&[("causation_id", "a"), ("causation_id", "a")]),
            Err(MetadataWireError::DuplicateKey {
                key: "causation_id".into()
            })
        );
        assert_eq!(
            from(&[("x.k", "a"), ("x.k", "b")]),
            Err(MetadataWireError::DuplicateKey { key: "x.k".into() })
        );
        assert_eq!(
            from(&[("originator.id", "a")]),
            Err(MetadataWireError::IncompletePrincipal { role: "originator" })
        );
        assert_eq!(
            from(&[("initiator.kind", "user")]),
            Err(MetadataWireError::IncompletePrincipal { role: "initiator" })
        );
        assert!(matches!(
            from(&[("x.", "a")]),
            Err(MetadataWireError::Invalid(ValidationError::Name(_)))
        ));
        assert_eq!(
            from(&[("idempotency_key", "")]),
            Err(MetadataWireError::Invalid(
                ValidationError::InvalidIdempotencyKey { len: 0 }
            ))
        );
        assert_eq!(
            from(&[("correlation_id", "a\0")]),
            Err(MetadataWireError::Invalid(
                ValidationError::MetadataContainsNul
            ))
        );
        let big = "v".repeat(MAX_METADATA_BYTES + 1);
        assert!(matches!(
            from(&[("correlation_id", big.as_str())]),
            Err(MetadataWireError::Invalid(
                ValidationError::MetadataTooLarge { .. }
            ))
        ));
        let keys: Vec<String> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| format!("x.k{i}"))
            .collect();
        assert!(matches!(
            Metadata::from_wire(keys.iter().map(|k| (k.as_str(), ""))),
            Err(MetadataWireError::Invalid(
                ValidationError::TooManyMetadataEntries { .. }
            ))
        ));
        let too_many: Vec<String> = (0..=MAX_METADATA_WIRE_PAIRS)
            .map(|i| format!("x.k{i}"))
            .collect();
        assert_eq!(
            Metadata::from_wire(too_many.iter().map(|k| (k.as_str(), ""))),
            Err(MetadataWireError::TooManyPairs {
                count: MAX_METADATA_WIRE_PAIRS + 1
            })
        );
    }

    #[test]
    fn the_largest_valid_metadata_fits_the_json_bound() -> Result<(), MetadataWireError> {
        // Extra keys of control characters escape to six bytes each.
        let key_len = MAX_NAME_BYTES;
        let value_len =
            (MAX_METADATA_BYTES - MAX_METADATA_ENTRIES * key_len) / MAX_METADATA_ENTRIES;
        let mut m = Metadata::new();
        for i in 0..MAX_METADATA_ENTRIES {
            let mut key = format!("{i:03}");
            key.push_str(&"\u{1}".repeat(key_len - key.len()));
            m = m.with_extra(key, "\u{1f}".repeat(value_len));
        }
        m.validate()?;
        let text = metadata_to_json(&m).unwrap_or_default();
        assert!(text.len() > 5 * MAX_METADATA_BYTES, "{}", text.len());
        assert_eq!(metadata_from_json(&text)?, m);
        Ok(())
    }
}
