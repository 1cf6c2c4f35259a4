//! Request identifiers of the flaky-servers challenge: exactly 24 ASCII alphanumeric characters.
//!
//! The challenge client and `http --body-id24` draw fresh ids from a seedable generator, and the
//! simulator uses [`is_valid_id`] to decide between a real attempt and a `400`.

use crate::rng::Rng;

/// Length of an id in bytes.
pub const ID_LEN: usize = 24;

/// An id; always valid ASCII alphanumerics when produced by [`IdGenerator`].
pub type Id = [u8; ID_LEN];

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Draws ids uniformly from the 62^24 alphanumeric strings (about 2^143, so collisions in a run
/// are not a practical concern).
#[derive(Debug, Clone)]
pub struct IdGenerator {
    rng: Rng,
}

impl IdGenerator {
    /// Ids reproducible from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        IdGenerator {
            rng: Rng::with_seed(seed),
        }
    }

    /// Ids seeded from entropy.
    pub fn new() -> Self {
        IdGenerator {
            rng: Rng::from_entropy(),
        }
    }

    pub fn next_id(&mut self) -> Id {
        let mut id = [0u8; ID_LEN];
        for byte in &mut id {
            *byte = ALPHABET[self.rng.below_one_draw(ALPHABET.len() as u64) as usize];
        }
        id
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

/// True when `body` is exactly 24 ASCII alphanumeric bytes.
pub fn is_valid_id(body: &[u8]) -> bool {
    body.len() == ID_LEN && body.iter().all(u8::is_ascii_alphanumeric)
}

/// Parses a 24-character id string (for ids arriving as JSON).
pub fn parse_id(text: &str) -> Option<Id> {
    let bytes = text.as_bytes();
    if !is_valid_id(bytes) {
        return None;
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(bytes);
    Some(id)
}

/// The id as a `&str` (ids are ASCII, so this never fails for valid ids).
pub fn id_str(id: &Id) -> &str {
    std::str::from_utf8(id).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_24_alphanumeric_characters() {
        let mut g = IdGenerator::with_seed(1);
        for _ in 0..1000 {
            let id = g.next_id();
            assert!(is_valid_id(&id), "{}", id_str(&id));
        }
    }

    #[test]
    fn ids_are_distinct() {
        let mut g = IdGenerator::with_seed(2);
        let ids: HashSet<Id> = (0..100_000).map(|_| g.next_id()).collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn ids_are_reproducible_from_a_seed() {
        let a: Vec<Id> = {
            let mut g = IdGenerator::with_seed(9);
            (0..10).map(|_| g.next_id()).collect()
        };
        let mut g = IdGenerator::with_seed(9);
        let b: Vec<Id> = (0..10).map(|_| g.next_id()).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], IdGenerator::with_seed(10).next_id());
    }

    #[test]
    fn ids_use_the_whole_alphabet() {
        let mut g = IdGenerator::with_seed(3);
        let seen: HashSet<u8> = (0..1000).flat_map(|_| g.next_id()).collect();
        assert_eq!(seen.len(), 62);
    }

    #[test]
    fn validation_rejects_wrong_length_and_symbols() {
        assert!(is_valid_id(b"abcdefghijklmnopqrstuvwx"));
        assert!(!is_valid_id(b"abcdefghijklmnopqrstuvw"));
        assert!(!is_valid_id(b"abcdefghijklmnopqrstuvwxy"));
        assert!(!is_valid_id(b"abcdefghijklmnopqrstuvw-"));
        assert!(!is_valid_id(b"abcdefghijklmnopqrstuvw\n"));
        assert!(parse_id("abcdefghijklmnopqrstuvwx").is_some());
        assert!(parse_id("short").is_none());
    }
}
