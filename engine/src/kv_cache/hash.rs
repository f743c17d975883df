//! Prefix hashes: a full block is identified by its tokens *and* everything before them, so
//! two sequences share a cached block only if their whole prefixes up to it are equal.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Identity of a full block's content including its entire prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub u64);

/// `hash(parent, tokens)`: the hash of a full block whose preceding block hashed to `parent`
/// (`None` for the first block of a sequence).
///
/// `DefaultHasher::new()` is SipHash with fixed keys, so hashes are stable within and across
/// processes of one build; a 64-bit collision between distinct prefixes is vanishingly rare.
pub fn hash_block(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    let mut hasher = DefaultHasher::new();
    parent.map(|p| p.0).hash(&mut hasher);
    tokens.hash(&mut hasher);
    BlockHash(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_parent_and_tokens() {
        let a = hash_block(None, &[1, 2, 3]);
        assert_eq!(a, hash_block(None, &[1, 2, 3]));
        assert_ne!(a, hash_block(None, &[1, 2, 4]));
        assert_ne!(hash_block(Some(a), &[5, 6]), hash_block(None, &[5, 6]));
    }
}
