//! The block pool: a flat `Vec<Block>` plus an index-linked, doubly linked free list.
//!
//! Invariants (checked by [`BlockPool::check_invariants`]):
//! - a block is in the free list iff its `ref_cnt` is 0;
//! - `num_free` equals the free list's length;
//! - every entry of `cached` points at a block whose `hash` is that key.
//!
//! Costs: allocate, free, touch and lookup are O(1). Freed blocks keep their hash (they stay
//! prefix-cache hits) until the allocator hands them out again, oldest-freed first (LRU).

use super::hash::BlockHash;
use std::collections::HashMap;

/// Index of a physical KV block.
pub type BlockId = u32;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    /// Number of requests whose block table holds this block.
    ref_cnt: u32,
    /// Set once the block is full and registered in the prefix cache.
    hash: Option<BlockHash>,
    /// Free-list links (`NIL` at the ends or when not in the list).
    prev: u32,
    next: u32,
}

/// Fixed pool of KV blocks with an LRU free list and a prefix-cache index.
#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<Block>,
    /// Least recently freed block: the next to be handed out.
    head: u32,
    /// Most recently freed block.
    tail: u32,
    /// Length of the free list.
    num_free: usize,
    /// Full blocks by content hash; may point at free (evictable) blocks.
    cached: HashMap<BlockHash, BlockId>,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks.
    pub fn new(num_blocks: usize) -> Self {
        let mut pool = Self { blocks: vec![Block { ref_cnt: 0, hash: None, prev: NIL, next: NIL }; num_blocks], head: NIL, tail: NIL, num_free: 0, cached: HashMap::new() };
        for i in 0..num_blocks as u32 {
            pool.push_tail(i);
        }
        pool
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks with no owner (including cached-but-evictable ones).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    pub fn ref_cnt(&self, id: BlockId) -> u32 {
        self.blocks[id as usize].ref_cnt
    }

    fn push_tail(&mut self, id: BlockId) {
        let b = &mut self.blocks[id as usize];
        b.prev = self.tail;
        b.next = NIL;
        if self.tail != NIL {
            self.blocks[self.tail as usize].next = id;
        } else {
            self.head = id;
        }
        self.tail = id;
        self.num_free += 1;
    }

    fn unlink(&mut self, id: BlockId) {
        let (prev, next) = {
            let b = &self.blocks[id as usize];
            (b.prev, b.next)
        };
        if prev != NIL {
            self.blocks[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.blocks[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
        let b = &mut self.blocks[id as usize];
        b.prev = NIL;
        b.next = NIL;
        self.num_free -= 1;
    }

    /// Take the least recently freed block, evicting its cached content. `None` when empty.
    pub fn allocate(&mut self) -> Option<BlockId> {
        if self.head == NIL {
            return None;
        }
        let id = self.head;
        self.unlink(id);
        if let Some(h) = self.blocks[id as usize].hash.take() {
            if self.cached.get(&h) == Some(&id) {
                self.cached.remove(&h);
            }
        }
        self.blocks[id as usize].ref_cnt = 1;
        Some(id)
    }

    /// Take a reference on a cached block found by [`BlockPool::lookup`].
    pub fn touch(&mut self, id: BlockId) {
        if self.blocks[id as usize].ref_cnt == 0 {
            self.unlink(id);
        }
        self.blocks[id as usize].ref_cnt += 1;
    }

    /// Drop one reference; at zero the block joins the free list (keeping its hash).
    pub fn free(&mut self, id: BlockId) {
        let b = &mut self.blocks[id as usize];
        debug_assert!(b.ref_cnt > 0, "double free of block {id}");
        if b.ref_cnt == 0 {
            return;
        }
        b.ref_cnt -= 1;
        if b.ref_cnt == 0 {
            self.push_tail(id);
        }
    }

    /// Register a full block under its content hash (first writer wins).
    pub fn cache(&mut self, id: BlockId, hash: BlockHash) {
        if self.blocks[id as usize].hash.is_some() {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(hash) {
            e.insert(id);
            self.blocks[id as usize].hash = Some(hash);
        }
    }

    /// The cached block holding this content, if any.
    pub fn lookup(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Would `touch`ing this block take it off the free list?
    pub fn is_free(&self, id: BlockId) -> bool {
        self.blocks[id as usize].ref_cnt == 0
    }

    /// Forget every cached hash (after a failed step the cached content may be garbage).
    pub fn reset_prefix_cache(&mut self) {
        self.cached.clear();
        for b in &mut self.blocks {
            b.hash = None;
        }
    }

    /// Check every invariant in the module docs; returns a description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = vec![false; self.blocks.len()];
        let mut count = 0;
        let mut cur = self.head;
        let mut prev = NIL;
        while cur != NIL {
            let b = &self.blocks[cur as usize];
            if seen[cur as usize] {
                return Err(format!("free list cycles at {cur}"));
            }
            seen[cur as usize] = true;
            if b.ref_cnt != 0 {
                return Err(format!("block {cur} is free with ref_cnt {}", b.ref_cnt));
            }
            if b.prev != prev {
                return Err(format!("block {cur} has a broken prev link"));
            }
            prev = cur;
            cur = b.next;
            count += 1;
        }
        if prev != self.tail {
            return Err("tail does not end the free list".into());
        }
        if count != self.num_free {
            return Err(format!("num_free {} but list has {count}", self.num_free));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if b.ref_cnt == 0 && !seen[i] {
                return Err(format!("block {i} has ref_cnt 0 but is not free"));
            }
        }
        for (h, &id) in &self.cached {
            if self.blocks[id as usize].hash != Some(*h) {
                return Err(format!("cache entry for block {id} has a stale hash"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_all_then_exhausted() {
        let mut p = BlockPool::new(3);
        let ids: Vec<_> = (0..3).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert!(p.allocate().is_none());
        p.check_invariants().unwrap();
    }

    #[test]
    fn lru_order_and_eviction() {
        let mut p = BlockPool::new(2);
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        p.cache(a, BlockHash(7));
        p.free(b);
        p.free(a);
        assert_eq!(p.lookup(BlockHash(7)), Some(a));
        // b was freed first, so it is handed out first and a stays cached.
        assert_eq!(p.allocate(), Some(b));
        assert_eq!(p.lookup(BlockHash(7)), Some(a));
        // Now a is evicted.
        assert_eq!(p.allocate(), Some(a));
        assert_eq!(p.lookup(BlockHash(7)), None);
        p.check_invariants().unwrap();
    }

    #[test]
    fn touch_revives_cached_free_block() {
        let mut p = BlockPool::new(2);
        let a = p.allocate().unwrap();
        p.cache(a, BlockHash(1));
        p.free(a);
        assert_eq!(p.num_free(), 2);
        p.touch(a);
        assert_eq!(p.num_free(), 1);
        p.touch(a);
        assert_eq!(p.ref_cnt(a), 2);
        p.free(a);
        p.free(a);
        assert_eq!(p.num_free(), 2);
        p.check_invariants().unwrap();
    }
}
