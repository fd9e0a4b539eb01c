//! A quick 64-bit fingerprint of bytes, eight a step, and the hasher the console's tables (and
//! the org-budget guard's) use with it. SipHash (std's) cost more than the rest of a request's
//! hand-over; the tables are small and bounded, so a key made to collide costs at most a scan of
//! one of them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(K).rotate_left(29)
}

/// A fingerprint of `bytes`: telling an answer read before costs this and a table lookup. A
/// collision would only leave a job's row as the earlier answer had it.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        hash = mix(
            hash,
            u64::from_le_bytes(chunk.try_into().expect("eight bytes")),
        );
    }
    for &byte in chunks.remainder() {
        hash = mix(hash, u64::from(byte));
    }
    hash ^ (hash >> 32)
}

/// [`fingerprint`] as a [`Hasher`].
#[derive(Default)]
pub struct Quick(u64);

impl Hasher for Quick {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix(self.0, fingerprint(bytes));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0, n);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// A map hashed with [`Quick`].
pub type QuickMap<K, V> = HashMap<K, V, BuildHasherDefault<Quick>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_differ_for_different_bytes_and_lengths() {
        let seen: std::collections::HashSet<u64> = [
            &b""[..],
            b"a",
            b"b",
            b"ab",
            b"abcdefgh",
            b"abcdefghi",
            b"abcdefgi",
        ]
        .iter()
        .map(|b| fingerprint(b))
        .collect();
        assert_eq!(seen.len(), 7);
        assert_eq!(fingerprint(b"same"), fingerprint(b"same"));
    }
}
