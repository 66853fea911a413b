//! Event ids: 128-bit, time-ordered (UUID version 7 layout), generated without dependencies.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The unique id of one stored event, formatted as a UUID.
///
/// New ids follow the UUID version 7 layout: 48 bits of Unix milliseconds, then
/// random bits mixed with a process-wide counter, so ids from one process never
/// collide and ids from different processes collide with negligible probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(u128);

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn random_u64(salt: u64) -> u64 {
    // RandomState is seeded from the OS once per process and varied per instance.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish()
}

impl EventId {
    /// Generates a new time-ordered id.
    pub fn new() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            & 0xFFFF_FFFF_FFFF;
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let rand = random_u64(count);
        // 12 bits rand_a (from the counter, so ids within one millisecond sort
        // mostly by creation), 62 bits rand_b (random xor counter).
        let rand_a = (count & 0xFFF) as u128;
        let rand_b = ((rand ^ count.rotate_left(32)) & 0x3FFF_FFFF_FFFF_FFFF) as u128;
        let v = ((millis as u128) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b;
        Self(v)
    }

    /// Wraps a raw 128-bit value.
    pub const fn from_u128(v: u128) -> Self {
        Self(v)
    }

    /// The raw 128-bit value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The 16 big-endian bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Builds an id from 16 big-endian bytes.
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(b))
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xFFFF_FFFF_FFFF
        )
    }
}

/// A string that is not a UUID in its canonical hyphenated or simple hex form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEventId;

impl fmt::Display for InvalidEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("event id is not a 32-digit hex UUID")
    }
}

impl std::error::Error for InvalidEventId {}

impl FromStr for EventId {
    type Err = InvalidEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = match s.len() {
            36 => {
                let b = s.as_bytes();
                if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                    return Err(InvalidEventId);
                }
                s.chars().filter(|c| *c != '-').collect()
            }
            32 => s.to_owned(),
            _ => return Err(InvalidEventId),
        };
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidEventId);
        }
        u128::from_str_radix(&hex, 16)
            .map(Self)
            .map_err(|_| InvalidEventId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_parse_back() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = EventId::new();
            assert!(seen.insert(id));
            assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
            assert_eq!(id.to_string().as_bytes()[14], b'7', "version nibble");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "xyz",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef-0123456789abcde",
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(InvalidEventId), "{bad}");
        }
        assert!(
            "0192f4e1-7a00-7000-8000-000000000001"
                .parse::<EventId>()
                .is_ok()
        );
    }
}
