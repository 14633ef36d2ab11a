//! A keyed hasher for maps keyed by trace ids (the in-flight registry, the ring's shards).
//!
//! Trace ids are mostly random already, so a keyed multiply-xor fold over the 16 bytes is
//! enough and several times cheaper than SipHash, which cost the ring about 400 instructions
//! per recorded span (an insert and an eviction, each hashing a trace id). The per-map random
//! key keeps ids chosen upstream from being aimed at one bucket.

use std::hash::{BuildHasher, Hasher, RandomState};

/// Builds [`FoldHasher`]s with a key drawn once per map.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHash {
    key: u64,
}

impl Default for IdHash {
    fn default() -> Self {
        IdHash {
            key: RandomState::new().hash_one(0u64) | 1,
        }
    }
}

impl BuildHasher for IdHash {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher(self.key)
    }
}

/// Folds 8-byte words into the state; a slice's length prefix is ignored (every key of one
/// map has the same length).
#[derive(Debug)]
pub(crate) struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
    }

    fn write_usize(&mut self, _length_prefix: usize) {}

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_ids_hash_equal_and_different_ids_differ() {
        let hash = IdHash::default();
        let a = [7u8; 16];
        let mut b = a;
        b[15] = 8;
        assert_eq!(hash.hash_one(a), hash.hash_one(a));
        assert_ne!(hash.hash_one(a), hash.hash_one(b));
        // Every byte counts, the first word's too.
        let mut c = a;
        c[0] = 0;
        assert_ne!(hash.hash_one(a), hash.hash_one(c));
    }

    #[test]
    fn keys_differ_between_maps() {
        let (x, y) = (IdHash::default(), IdHash::default());
        assert_ne!(x.hash_one([1u8; 16]), y.hash_one([1u8; 16]));
    }
}
