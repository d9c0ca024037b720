//! Hash chains over full blocks: `H(parent, tokens)`.

use crate::request::TokenId;
use std::hash::{Hash, Hasher};

/// Identity of a full block's content *and* of everything before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash(pub u64);

/// Hash of a full block given the hash of the block before it (`None` for the first block).
/// Uses SipHash with fixed keys, so hashes are stable across runs of the same binary.
pub fn hash_block(parent: Option<BlockHash>, tokens: &[TokenId]) -> BlockHash {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x6868_6873_6572_7665, 0x626c_6f63_6b73_2121);
    parent.map(|p| p.0).unwrap_or(u64::MAX).hash(&mut h);
    tokens.hash(&mut h);
    BlockHash(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_parent_and_tokens() {
        let a = hash_block(None, &[1, 2, 3]);
        assert_eq!(a, hash_block(None, &[1, 2, 3]));
        assert_ne!(a, hash_block(None, &[1, 2, 4]));
        assert_ne!(hash_block(Some(a), &[1, 2, 3]), a);
        assert_ne!(hash_block(Some(a), &[5]), hash_block(None, &[5]));
    }
}
