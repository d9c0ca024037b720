//! Per-request block tables on top of the [`BlockPool`].
//!
//! Block tables are append-only while a request holds its blocks; they are released all at
//! once (finish, abort, preemption). Full blocks are hashed as `H(parent, tokens)` and
//! registered in the pool so that later requests with the same prefix reuse them.

use super::block_pool::{BlockId, BlockPool};
use super::hash::{hash_block, BlockHash};
use crate::request::{RequestId, TokenId};
use std::collections::HashMap;

/// A cached prefix found by [`KvCacheManager::find_cached_prefix`]; not yet referenced.
#[derive(Debug, Clone, Default)]
pub struct CachedPrefix {
    pub blocks: Vec<BlockId>,
    pub hashes: Vec<BlockHash>,
}

impl CachedPrefix {
    /// Number of tokens the prefix covers.
    pub fn num_tokens(&self, block_size: usize) -> usize {
        self.blocks.len() * block_size
    }
}

#[derive(Debug, Default)]
struct ReqBlocks {
    /// Physical block for each logical block of the request.
    blocks: Vec<BlockId>,
    /// Hashes of the leading full blocks registered so far (`len <= blocks.len()`).
    hashes: Vec<BlockHash>,
}

/// Owns the block pool and every request's block table.
#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    enable_prefix_caching: bool,
    reqs: HashMap<RequestId, ReqBlocks>,
    /// Prompt tokens looked up in the prefix cache (counter).
    pub prefix_query_tokens: u64,
    /// Prompt tokens found in the prefix cache (counter).
    pub prefix_hit_tokens: u64,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, enable_prefix_caching: bool) -> Self {
        Self { pool: BlockPool::new(num_blocks), block_size, enable_prefix_caching, reqs: HashMap::new(), prefix_query_tokens: 0, prefix_hit_tokens: 0 }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn num_blocks(&self) -> usize {
        self.pool.num_blocks()
    }
    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }
    /// Fraction of blocks held by requests.
    pub fn usage(&self) -> f64 {
        let n = self.pool.num_blocks().max(1);
        1.0 - self.pool.num_free() as f64 / n as f64
    }
    /// Blocks needed to hold `num_tokens` tokens.
    pub fn blocks_for(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size)
    }

    /// Longest run of cached full blocks at the start of `tokens`, leaving at least one token
    /// to compute (the last token's logits are needed).
    pub fn find_cached_prefix(&mut self, tokens: &[TokenId]) -> CachedPrefix {
        let mut out = CachedPrefix::default();
        if !self.enable_prefix_caching || tokens.is_empty() {
            return out;
        }
        let max_blocks = (tokens.len() - 1) / self.block_size;
        let mut parent = None;
        for i in 0..max_blocks {
            let h = hash_block(parent, &tokens[i * self.block_size..(i + 1) * self.block_size]);
            match self.pool.lookup(h) {
                Some(b) => {
                    out.blocks.push(b);
                    out.hashes.push(h);
                    parent = Some(h);
                }
                None => break,
            }
        }
        out
    }

    /// Count one prefix-cache lookup that was used for an admission.
    pub fn record_prefix_lookup(&mut self, query_tokens: usize, hit_tokens: usize) {
        self.prefix_query_tokens += query_tokens as u64;
        self.prefix_hit_tokens += hit_tokens as u64;
    }

    /// Number of leading blocks of the request registered in the prefix cache.
    pub fn num_hashed_blocks(&self, id: RequestId) -> usize {
        self.reqs.get(&id).map_or(0, |r| r.hashes.len())
    }

    /// Grow the request's block table to hold `total_tokens` tokens, taking `prefix` first
    /// (only on a request's first allocation). Returns `false` and changes nothing when the
    /// pool cannot supply the blocks.
    pub fn allocate(&mut self, id: RequestId, prefix: &CachedPrefix, total_tokens: usize) -> bool {
        let have = self.reqs.get(&id).map_or(0, |r| r.blocks.len()) + prefix.blocks.len();
        let new = self.blocks_for(total_tokens).saturating_sub(have);
        let revived = prefix.blocks.iter().filter(|&&b| self.pool.is_free(b)).count();
        if new + revived > self.pool.num_free() {
            return false;
        }
        let req = self.reqs.entry(id).or_default();
        debug_assert!(prefix.blocks.is_empty() || req.blocks.is_empty());
        for &b in &prefix.blocks {
            self.pool.touch(b);
            req.blocks.push(b);
        }
        req.hashes.extend_from_slice(&prefix.hashes);
        for _ in 0..new {
            match self.pool.allocate() {
                Some(b) => req.blocks.push(b),
                None => return false, // unreachable: counted above
            }
        }
        true
    }

    /// Register the request's blocks that are full within its first `num_tokens` of `tokens`.
    /// Call once their KV is (or, within the same step, will be) written.
    pub fn cache_full_blocks(&mut self, id: RequestId, tokens: &[TokenId], num_tokens: usize) {
        if !self.enable_prefix_caching {
            return;
        }
        let Some(req) = self.reqs.get_mut(&id) else { return };
        let full = (num_tokens.min(tokens.len()) / self.block_size).min(req.blocks.len());
        while req.hashes.len() < full {
            let i = req.hashes.len();
            let h = hash_block(req.hashes.last().copied(), &tokens[i * self.block_size..(i + 1) * self.block_size]);
            self.pool.cache(req.blocks[i], h);
            req.hashes.push(h);
        }
    }

    /// Release all of a request's blocks, last block first (so tails are evicted first).
    pub fn free(&mut self, id: RequestId) {
        if let Some(req) = self.reqs.remove(&id) {
            for &b in req.blocks.iter().rev() {
                self.pool.free(b);
            }
        }
    }

    /// The request's block table (empty if it holds none).
    pub fn block_table(&self, id: RequestId) -> &[BlockId] {
        self.reqs.get(&id).map_or(&[], |r| r.blocks.as_slice())
    }

    /// Number of requests holding blocks.
    pub fn num_requests(&self) -> usize {
        self.reqs.len()
    }

    /// Drop all prefix-cache entries.
    pub fn reset_prefix_cache(&mut self) {
        self.pool.reset_prefix_cache();
        for r in self.reqs.values_mut() {
            r.hashes.clear();
        }
    }

    /// Pool invariants plus: every block's `ref_cnt` equals the number of tables holding it.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.pool.check_invariants()?;
        let mut refs = vec![0u32; self.pool.num_blocks()];
        for r in self.reqs.values() {
            for &b in &r.blocks {
                refs[b as usize] += 1;
            }
        }
        for (b, &n) in refs.iter().enumerate() {
            if self.pool.ref_cnt(b as BlockId) != n {
                return Err(format!("block {b}: ref_cnt {} but held {n} times", self.pool.ref_cnt(b as BlockId)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_shared_and_capped() {
        let mut m = KvCacheManager::new(8, 4, true);
        let toks: Vec<u32> = (0..12).collect();
        let p = m.find_cached_prefix(&toks);
        assert!(p.blocks.is_empty());
        assert!(m.allocate(1, &p, 12));
        m.cache_full_blocks(1, &toks, 12);
        // Same 12 tokens: at most 11 may come from cache -> 2 full blocks.
        let p2 = m.find_cached_prefix(&toks);
        assert_eq!(p2.blocks, m.block_table(1)[..2].to_vec());
        assert!(m.allocate(2, &p2, 12));
        assert_eq!(m.block_table(2)[..2], m.block_table(1)[..2]);
        assert_ne!(m.block_table(2)[2], m.block_table(1)[2]);
        m.check_invariants().unwrap();
        m.free(1);
        m.free(2);
        assert_eq!(m.num_free_blocks(), 8);
        m.check_invariants().unwrap();
        // Still cached after free.
        assert_eq!(m.find_cached_prefix(&toks).blocks.len(), 2);
    }

    #[test]
    fn allocation_failure_changes_nothing() {
        let mut m = KvCacheManager::new(2, 4, true);
        assert!(!m.allocate(1, &CachedPrefix::default(), 9));
        assert_eq!(m.num_free_blocks(), 2);
        assert!(m.block_table(1).is_empty());
        assert!(m.allocate(1, &CachedPrefix::default(), 8));
        assert_eq!(m.num_free_blocks(), 0);
    }
}
