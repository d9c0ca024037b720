//! The paged KV cache layout shared by the CPU and CUDA kernels.
//!
//! Layout of one layer's cache (keys and values alike): `[num_blocks, block_size, num_kv_heads,
//! head_dim]`, row-major, f32 or f16 ([`KvDtype`]). Token at position `p` of a sequence lives in
//! slot `block_table[p / block_size] * block_size + p % block_size`. There is no per-request
//! contiguous KV buffer anywhere.

use half::{f16, slice::HalfFloatSliceExt};

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

/// Storage type of the cached keys and values. Attention always computes in f32; f16 halves
/// the pool's memory (llama.cpp's default) at the cost of rounding K/V to 11 significant bits.
/// The server picks per model (`LlamaModel::kv_dtype`): f16 for GGUF, f32 for safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDtype {
    F32,
    F16,
}

impl KvDtype {
    /// Bytes per stored element.
    pub fn size(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }

    /// `f32` / `f16`.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }
}

impl std::str::FromStr for KvDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(KvDtype::F32),
            "f16" | "float16" | "half" => Ok(KvDtype::F16),
            _ => Err(format!("unknown KV cache dtype `{s}` (expected f32 or f16)")),
        }
    }
}

/// One layer's keys or values.
#[derive(Debug)]
pub enum KvBuf {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl KvBuf {
    /// A zeroed buffer whose pages are all touched now. The pool is the server's largest
    /// allocation: faulting it in at start makes the resident size honest from the first scrape
    /// (no slow climb as the LRU free list cycles through never-used blocks) and makes a pool
    /// that does not fit fail at start-up rather than under load (an OOM kill mid-request).
    /// Memory not yet touched is asked to fault in as huge pages ([`crate::mem::advise_huge_pages`]).
    fn prefaulted(dtype: KvDtype, n: usize) -> Self {
        fn filled<T: Copy>(n: usize, zero: T) -> Vec<T> {
            let mut v = Vec::with_capacity(n);
            crate::mem::advise_huge_pages(&v);
            // Writes every element, so every page is faulted in now (black_box keeps the
            // stores).
            v.resize(n, zero);
            std::hint::black_box(v)
        }
        match dtype {
            KvDtype::F32 => KvBuf::F32(filled(n, 0.0)),
            KvDtype::F16 => KvBuf::F16(filled(n, f16::ZERO)),
        }
    }

    /// The buffer's address range (for [`crate::mem::collapse_huge_pages`]).
    pub fn range(&self) -> (usize, usize) {
        match self {
            KvBuf::F32(v) => crate::mem::range_of(v),
            KvBuf::F16(v) => crate::mem::range_of(v),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            KvBuf::F32(v) => v.len(),
            KvBuf::F16(v) => v.len(),
        }
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `range` as f32 (a copy; for references and tests).
    pub fn read(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        match self {
            KvBuf::F32(v) => v[range].to_vec(),
            KvBuf::F16(v) => v[range].iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// Store `src` (rounded to the buffer's type) at `at..at + src.len()`.
    pub fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            KvBuf::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            // `half`'s slice conversion: F16C 8 at a time where the CPU has it (the same
            // round-to-nearest-even bits as `f16::from_f32`, which detects the feature again
            // for every element).
            KvBuf::F16(v) => v[at..at + src.len()].convert_from_f32_slice(src),
        }
    }

    /// Set every element (tests poison the pool this way).
    pub fn fill(&mut self, x: f32) {
        match self {
            KvBuf::F32(v) => v.fill(x),
            KvBuf::F16(v) => v.fill(f16::from_f32(x)),
        }
    }
}

/// The paged KV cache: one key and one value buffer per layer.
#[derive(Debug)]
pub struct PagedKvCache {
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Per layer, `num_blocks * block_size * num_kv_heads * head_dim` elements, all of one dtype.
    pub keys: Vec<KvBuf>,
    pub values: Vec<KvBuf>,
}

impl PagedKvCache {
    pub fn new(num_layers: usize, num_blocks: usize, block_size: usize, num_kv_heads: usize, head_dim: usize, dtype: KvDtype) -> Self {
        let n = num_blocks * block_size * num_kv_heads * head_dim;
        let cache = Self {
            num_blocks,
            block_size,
            num_kv_heads,
            head_dim,
            keys: (0..num_layers).map(|_| KvBuf::prefaulted(dtype, n)).collect(),
            values: (0..num_layers).map(|_| KvBuf::prefaulted(dtype, n)).collect(),
        };
        // A decode step reads scattered blocks of every layer: onto huge pages when the pool
        // is big (a server's; not the tests' small ones, where the 2 MiB pages at the ends
        // would be most of the work).
        if n * dtype.size() >= 4 << 20 {
            let ranges: Vec<(usize, usize)> = cache.keys.iter().chain(&cache.values).map(KvBuf::range).collect();
            crate::mem::collapse_huge_pages(&ranges);
        }
        cache
    }

    /// Storage type of the pool.
    pub fn dtype(&self) -> KvDtype {
        match self.keys.first() {
            Some(KvBuf::F16(_)) => KvDtype::F16,
            _ => KvDtype::F32,
        }
    }

    /// Bytes of KV cache per token (keys and values, all layers).
    pub fn bytes_per_token(num_layers: usize, num_kv_heads: usize, head_dim: usize, dtype: KvDtype) -> usize {
        2 * num_layers * num_kv_heads * head_dim * dtype.size()
    }

    /// Elements per slot (one token's keys, or values, of one layer).
    pub fn slot_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Slot index of position `pos` under `block_table`.
    #[inline]
    pub fn slot(&self, block_table: &[u32], pos: usize) -> usize {
        block_table[pos / self.block_size] as usize * self.block_size + pos % self.block_size
    }

    /// One slot's keys of `layer` as f32 (all KV heads).
    pub fn key_row(&self, layer: usize, slot: usize) -> Vec<f32> {
        let w = self.slot_width();
        self.keys[layer].read(slot * w..(slot + 1) * w)
    }

    /// One slot's values of `layer` as f32 (all KV heads).
    pub fn value_row(&self, layer: usize, slot: usize) -> Vec<f32> {
        let w = self.slot_width();
        self.values[layer].read(slot * w..(slot + 1) * w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f16 store rounds exactly as `f16::from_f32` (the vector conversion and the scalar
    /// one agree), including ties, subnormals, overflow, infinities and NaN, at any length.
    #[test]
    fn f16_write_rounds_like_from_f32() {
        let mut vals = vec![0.0f32, -0.0, 1.0, -1.0, 65504.0, 65520.0, 1e6, -1e6, 6e-8, 3e-8, 1e-10, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        // Ties to even at 1.0 + 2^-11 and 1.0 + 3 * 2^-11, and a spread of values.
        vals.extend([1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11)]);
        vals.extend((0..37).map(|i| ((i * 7919 % 1999) as f32 - 999.0) * 0.0137));
        let mut buf = KvBuf::F16(vec![f16::ZERO; vals.len() + 3]);
        buf.write(3, &vals);
        let KvBuf::F16(got) = &buf else { unreachable!() };
        for (g, v) in got[3..].iter().zip(&vals) {
            assert_eq!(g.to_bits(), f16::from_f32(*v).to_bits(), "{v}");
        }
        assert!(got[..3].iter().all(|g| g.to_bits() == 0));
    }
}
