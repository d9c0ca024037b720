//! Paged KV-cache bookkeeping: which physical block holds which tokens of which request.
//!
//! - [`BlockPool`]: a flat `Vec` of blocks, an index-linked LRU free list, and a map from
//!   block hash to cached block (automatic prefix caching with lazy eviction).
//! - [`KvCacheManager`]: per-request block tables, prefix-cache lookup, slot allocation.

mod block_pool;
mod hash;
mod manager;

pub use block_pool::{BlockId, BlockPool};
pub use hash::{hash_block, BlockHash};
pub use manager::{CachedPrefix, KvCacheManager};
