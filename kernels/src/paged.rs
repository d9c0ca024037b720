//! The paged KV cache layout shared by the CPU and CUDA kernels.
//!
//! Layout of one layer's cache (keys and values alike): `[num_blocks, block_size, num_kv_heads,
//! head_dim]`, f32, row-major. Token at position `p` of a sequence lives in slot
//! `block_table[p / block_size] * block_size + p % block_size`. There is no per-request
//! contiguous KV buffer anywhere.

/// Where one sequence's tokens sit in the flattened batch and in the cache.
#[derive(Debug, Clone)]
pub struct SeqMeta {
    /// First row of this sequence in the flattened `[num_tokens, ...]` activations.
    pub row_start: usize,
    /// Rows (new tokens) of this sequence in the batch.
    pub num_rows: usize,
    /// Position of the first new token (tokens before it are already cached).
    pub start_pos: usize,
    /// Physical block of each logical block; covers `start_pos + num_rows` positions.
    pub block_table: Vec<u32>,
}

/// The paged KV cache: one key and one value buffer per layer.
#[derive(Debug)]
pub struct PagedKvCache {
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Per layer, `num_blocks * block_size * num_kv_heads * head_dim` floats.
    pub keys: Vec<Vec<f32>>,
    pub values: Vec<Vec<f32>>,
}

/// A zeroed buffer whose pages are all touched now. The pool is the server's largest
/// allocation: faulting it in at start makes the resident size honest from the first scrape
/// (no slow climb as the LRU free list cycles through never-used blocks) and makes a pool that
/// does not fit fail at start-up rather than under load (an OOM kill mid-request).
fn prefaulted(n: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    // `vec![0.0; n]` maps lazily zeroed pages; black_box keeps the stores from being elided.
    let s = std::hint::black_box(&mut v[..]);
    for i in (0..n).step_by(1024) {
        s[i] = 0.0;
    }
    v
}

impl PagedKvCache {
    pub fn new(num_layers: usize, num_blocks: usize, block_size: usize, num_kv_heads: usize, head_dim: usize) -> Self {
        let n = num_blocks * block_size * num_kv_heads * head_dim;
        Self {
            num_blocks,
            block_size,
            num_kv_heads,
            head_dim,
            keys: (0..num_layers).map(|_| prefaulted(n)).collect(),
            values: (0..num_layers).map(|_| prefaulted(n)).collect(),
        }
    }

    /// Bytes of KV cache per token (f32 keys and values, all layers).
    pub fn bytes_per_token(num_layers: usize, num_kv_heads: usize, head_dim: usize) -> usize {
        2 * num_layers * num_kv_heads * head_dim * std::mem::size_of::<f32>()
    }

    /// Floats per slot (one token's keys, or values, of one layer).
    pub fn slot_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Slot index of position `pos` under `block_table`.
    #[inline]
    pub fn slot(&self, block_table: &[u32], pos: usize) -> usize {
        block_table[pos / self.block_size] as usize * self.block_size + pos % self.block_size
    }
}
