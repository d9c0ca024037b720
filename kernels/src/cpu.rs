//! CPU paged attention: the serving kernels and the plain-Rust reference for the CUDA twins.
//!
//! Shapes (row-major; activations f32, cache f32 or f16):
//! - `q`: `[num_rows, num_heads * head_dim]` (RoPE applied)
//! - `k_new`, `v_new`: `[num_rows, num_kv_heads * head_dim]` (RoPE applied to keys)
//! - cache: see [`PagedKvCache`]
//! - output: `[num_rows, num_heads * head_dim]`
//!
//! Query row `r` of sequence `s` sits at position `start_pos + (r - row_start)` and attends
//! causally to positions `0..=that` of its own sequence, read through the block table. GQA:
//! query head `h` uses KV head `h / (num_heads / num_kv_heads)`.
//!
//! Arithmetic: f32 throughout (f16 cache elements are widened exactly). With AVX2 + FMA + F16C
//! and a head dimension that is a multiple of 8, the scores, the softmax's `exp` and the weighted
//! value sums run in 8-wide vectors ([`crate::simd`], [`crate::act`]); otherwise a scalar loop
//! with libm's `exp`. Both are checked against the f64 reference (`tests/paged_random.rs`); they
//! differ from each other in summation order and in `exp` (within 2e-7 relative).

use crate::paged::{KvBuf, PagedKvCache, SeqMeta};
use half::{bf16, f16};

/// An element type of the cache.
pub trait KvElem: Copy + Send + Sync + 'static {
    /// True for f16 (the SIMD loads widen it with F16C).
    const IS_F16: bool;
    /// Whether the SIMD loops can read it (f32, f16); bf16 takes the scalar loop.
    const SIMD: bool;
    fn to_f32(self) -> f32;
    /// Round an f32 to this type (round to nearest even).
    fn from_f32(x: f32) -> Self;
}

impl KvElem for f32 {
    const IS_F16: bool = false;
    const SIMD: bool = true;
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl KvElem for f16 {
    const IS_F16: bool = true;
    const SIMD: bool = true;
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl KvElem for bf16 {
    const IS_F16: bool = false;
    const SIMD: bool = false;
    #[inline]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

/// Where the cache's elements are: the geometry of [`PagedKvCache`] without the buffers, for
/// kernels that work on caller-owned slices (the CPU twins of the CUDA kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheGeom {
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl CacheGeom {
    /// Elements per slot (one token's keys, or values, of one layer).
    pub fn slot_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Slot index of position `pos` under `block_table`.
    #[inline]
    pub fn slot(&self, block_table: &[u32], pos: usize) -> usize {
        block_table[pos / self.block_size] as usize * self.block_size + pos % self.block_size
    }

    /// Element offset (slot times [`slot_width`](Self::slot_width)) of positions `0..ctx` under
    /// `block_table`: [`slot`](Self::slot)'s values, computed block by block (the block size is
    /// not a constant here, and two 64-bit divisions per position were a measurable part of a
    /// decode step's attention). Panics if the table is too short for `ctx` positions, as
    /// `slot` does (a caller bug).
    pub fn slot_offsets(&self, block_table: &[u32], ctx: usize) -> Vec<usize> {
        let (bs, w) = (self.block_size, self.slot_width());
        let offs: Vec<usize> = block_table.iter().flat_map(|&b| (0..bs).map(move |i| (b as usize * bs + i) * w)).take(ctx).collect();
        assert_eq!(offs.len(), ctx, "block table of {} blocks for {ctx} positions", block_table.len());
        offs
    }
}

impl PagedKvCache {
    /// The cache's geometry.
    pub fn geom(&self) -> CacheGeom {
        CacheGeom { block_size: self.block_size, num_kv_heads: self.num_kv_heads, head_dim: self.head_dim }
    }
}

/// CPU twin of `cuda/reshape_and_cache.cu`: row `i` of `k_new` / `v_new` (`width` elements
/// each) goes to slot `slot_mapping[i]` of the caches (`[slots, width]`), rounded to their type;
/// a negative slot skips the row. Panics on a slot outside the cache (a caller bug).
pub fn reshape_and_cache<T: KvElem>(key_cache: &mut [T], value_cache: &mut [T], width: usize, slot_mapping: &[i64], k_new: &[f32], v_new: &[f32]) {
    for (i, &slot) in slot_mapping.iter().enumerate() {
        let Ok(slot) = usize::try_from(slot) else { continue };
        let (src_k, src_v) = (&k_new[i * width..(i + 1) * width], &v_new[i * width..(i + 1) * width]);
        for (d, s) in key_cache[slot * width..(slot + 1) * width].iter_mut().zip(src_k) {
            *d = T::from_f32(*s);
        }
        for (d, s) in value_cache[slot * width..(slot + 1) * width].iter_mut().zip(src_v) {
            *d = T::from_f32(*s);
        }
    }
}

/// The slot of every new token of `seqs` (rows in order), as `reshape_and_cache` takes them.
pub fn slot_mapping(geom: CacheGeom, seqs: &[SeqMeta], num_rows: usize) -> Vec<i64> {
    let mut m = vec![-1i64; num_rows];
    for s in seqs {
        for i in 0..s.num_rows {
            m[s.row_start + i] = geom.slot(&s.block_table, s.start_pos + i) as i64;
        }
    }
    m
}

/// Attention for every query row over caller-owned cache slices (the CPU twin of
/// `cuda/paged_attention.cu` and `cuda/paged_prefill.cu`; see [`paged_attention`]).
pub fn paged_attention_slices<T: KvElem>(geom: CacheGeom, keys: &[T], values: &[T], seqs: &[SeqMeta], q: &[f32], num_heads: usize) -> Vec<f32> {
    let simd = T::SIMD && crate::simd::available() && geom.head_dim.is_multiple_of(8);
    attend(geom, keys, values, seqs, q, num_heads, simd)
}

/// Write the new keys and values of every sequence into their slots (`reshape_and_cache`),
/// rounding to the cache's dtype.
pub fn write_kv(cache: &mut PagedKvCache, layer: usize, seqs: &[SeqMeta], k_new: &[f32], v_new: &[f32]) {
    let w = cache.slot_width();
    for s in seqs {
        for i in 0..s.num_rows {
            let slot = cache.slot(&s.block_table, s.start_pos + i);
            let row = s.row_start + i;
            cache.keys[layer].write(slot * w, &k_new[row * w..(row + 1) * w]);
            cache.values[layer].write(slot * w, &v_new[row * w..(row + 1) * w]);
        }
    }
}

/// Attention for every query row over the paged cache (which must already hold the new KV).
pub fn paged_attention(cache: &PagedKvCache, layer: usize, seqs: &[SeqMeta], q: &[f32], num_heads: usize) -> Vec<f32> {
    let simd = crate::simd::available() && cache.head_dim.is_multiple_of(8);
    match (&cache.keys[layer], &cache.values[layer]) {
        (KvBuf::F32(k), KvBuf::F32(v)) => attend(cache.geom(), k, v, seqs, q, num_heads, simd),
        (KvBuf::F16(k), KvBuf::F16(v)) => attend(cache.geom(), k, v, seqs, q, num_heads, simd),
        // Keys and values of different dtypes (`PagedKvCache::new` never makes this): widen both.
        (k, v) => attend(cache.geom(), &k.read(0..k.len()), &v.read(0..v.len()), seqs, q, num_heads, simd),
    }
}

/// Same as [`paged_attention`] but always the scalar loop (for tests and comparisons).
pub fn paged_attention_scalar(cache: &PagedKvCache, layer: usize, seqs: &[SeqMeta], q: &[f32], num_heads: usize) -> Vec<f32> {
    match (&cache.keys[layer], &cache.values[layer]) {
        (KvBuf::F32(k), KvBuf::F32(v)) => attend(cache.geom(), k, v, seqs, q, num_heads, false),
        (KvBuf::F16(k), KvBuf::F16(v)) => attend(cache.geom(), k, v, seqs, q, num_heads, false),
        (k, v) => attend(cache.geom(), &k.read(0..k.len()), &v.read(0..v.len()), seqs, q, num_heads, false),
    }
}

fn attend<T: KvElem>(cache: CacheGeom, keys: &[T], values: &[T], seqs: &[SeqMeta], q: &[f32], num_heads: usize, simd: bool) -> Vec<f32> {
    let hd = cache.head_dim;
    let qw = num_heads * hd;
    let num_rows = q.len() / qw;
    let mut out = vec![0f32; num_rows * qw];
    let mut row_seq = vec![usize::MAX; num_rows];
    for (si, s) in seqs.iter().enumerate() {
        row_seq[s.row_start..s.row_start + s.num_rows].fill(si);
    }
    let group = num_heads / cache.num_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    // The 16-lane grouped weighted sum (same bits as the per-head one).
    let wide = simd && hd.is_multiple_of(16) && crate::simd::available_512();
    // One task per row, or per (row, KV head) when there are few rows (a decode step of one or
    // two sequences), so that they still spread over the cores. Measured on 2 cores: one row
    // 5.7 → 5.3 ms per step in a first pair, no difference beyond the noise in 6 later pairs;
    // with 16 rows the finer split looked slower. The arithmetic of a head does not depend on
    // the split.
    let nkv = cache.num_kv_heads;
    let per_head = num_rows < 4 * crate::pool::threads();
    crate::pool::for_each_chunk_mut(&mut out, if per_head { group * hd } else { qw }, |i, piece| {
        let (row, heads) = if per_head { (i / nkv, i % nkv..i % nkv + 1) } else { (i, 0..nkv) };
        let Some(s) = seqs.get(row_seq[row]) else { return };
        let ctx = s.start_pos + (row - s.row_start) + 1;
        // One element offset per position; the kernels below rely on it.
        let offs = cache.slot_offsets(&s.block_table, ctx);
        // Scores of the task's KV heads' query heads (`heads.len() * group` rows of `ctx`, KV
        // head by KV head), computed position by position for all of them: a key row's bytes
        // are read in address order.
        let kvn = heads.len();
        let mut scores = vec![0f32; kvn * group * ctx];
        let off0 = heads.start * hd;
        let q_t = &q[row * qw + heads.start * group * hd..row * qw + heads.end * group * hd];
        // SAFETY (every `unsafe` below): `simd` is only true when AVX2, FMA and F16C were
        // detected at run time and hd is a multiple of 8; every offset + off0 + kvn * hd is
        // inside the layer buffer; `q_t` holds `kvn * group` heads of hd values.
        match (simd, group) {
            (true, 1) => unsafe { crate::simd::scores_group::<T, 1>(q_t, hd, kvn, keys, &offs, off0, scale, &mut scores, Some(values)) },
            (true, 2) => unsafe { crate::simd::scores_group::<T, 2>(q_t, hd, kvn, keys, &offs, off0, scale, &mut scores, Some(values)) },
            (true, 3) => unsafe { crate::simd::scores_group::<T, 3>(q_t, hd, kvn, keys, &offs, off0, scale, &mut scores, Some(values)) },
            (true, 4) => unsafe { crate::simd::scores_group::<T, 4>(q_t, hd, kvn, keys, &offs, off0, scale, &mut scores, Some(values)) },
            (true, _) => {
                for (r, sc) in scores.chunks_mut(ctx).enumerate() {
                    let off = off0 + (r / group) * hd;
                    unsafe { crate::simd::scores_group::<T, 1>(&q_t[r * hd..(r + 1) * hd], hd, 1, keys, &offs, off, scale, sc, None) };
                }
            }
            (false, _) => {
                for (r, sc) in scores.chunks_mut(ctx).enumerate() {
                    let off = off0 + (r / group) * hd;
                    for (s, &o) in sc.iter_mut().zip(&offs) {
                        *s = dot(&q_t[r * hd..(r + 1) * hd], &keys[o + off..o + off + hd]) * scale;
                    }
                }
            }
        }
        // Softmax numerators and 1 / their sum per query head.
        let inv: Vec<f32> = scores
            .chunks_mut(ctx)
            .map(|sc| {
                let sum = if simd {
                    crate::act::softmax_numerators(sc)
                } else {
                    let max = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    sc.iter_mut().for_each(|x| *x = (*x - max).exp());
                    sc.iter().sum()
                };
                1.0 / sum
            })
            .collect();
        // The 8-lane grouped weighted sum takes normalized weights (`e * inv`, the product the
        // other kernels form on the fly: the same bits).
        let narrow_group = simd && !wide && group <= 4 && hd.is_multiple_of(16);
        if narrow_group {
            for (sc, &i) in scores.chunks_mut(ctx).zip(&inv) {
                sc.iter_mut().for_each(|e| *e *= i);
            }
        }
        for (gi, g) in heads.clone().enumerate() {
            let o_g = &mut piece[gi * group * hd..(gi + 1) * group * hd];
            let off_h = g * hd;
            let sc_g = &scores[gi * group * ctx..(gi + 1) * group * ctx];
            let inv_g = &inv[gi * group..(gi + 1) * group];
            if (wide || narrow_group) && group <= 4 {
                // SAFETY: `wide` means AVX-512F, FMA and F16C were detected and hd is a multiple
                // of 16, `narrow_group` AVX2, FMA and F16C and hd a multiple of 16; `o_g` holds
                // `group` heads, `sc_g` `group` rows of `ctx`, offsets as above.
                unsafe {
                    match (wide, group) {
                        (true, 1) => crate::simd::weighted_sum_group::<T, 1>(o_g, hd, values, &offs, off_h, sc_g, inv_g),
                        (true, 2) => crate::simd::weighted_sum_group::<T, 2>(o_g, hd, values, &offs, off_h, sc_g, inv_g),
                        (true, 3) => crate::simd::weighted_sum_group::<T, 3>(o_g, hd, values, &offs, off_h, sc_g, inv_g),
                        (true, _) => crate::simd::weighted_sum_group::<T, 4>(o_g, hd, values, &offs, off_h, sc_g, inv_g),
                        (false, 1) => crate::simd::weighted_sum_group8::<T, 1>(o_g, hd, values, &offs, off_h, sc_g),
                        (false, 2) => crate::simd::weighted_sum_group8::<T, 2>(o_g, hd, values, &offs, off_h, sc_g),
                        (false, 3) => crate::simd::weighted_sum_group8::<T, 3>(o_g, hd, values, &offs, off_h, sc_g),
                        (false, _) => crate::simd::weighted_sum_group8::<T, 4>(o_g, hd, values, &offs, off_h, sc_g),
                    }
                }
                continue;
            }
            for (i, sc) in sc_g.chunks(ctx).enumerate() {
                let o = &mut o_g[i * hd..(i + 1) * hd];
                if simd {
                    unsafe { crate::simd::weighted_sum(o, values, &offs, off_h, sc, inv_g[i]) };
                } else {
                    for (&e, &off) in sc.iter().zip(&offs) {
                        let w = e * inv_g[i];
                        for (oi, vi) in o.iter_mut().zip(&values[off + off_h..off + off_h + hd]) {
                            *oi = w.mul_add(vi.to_f32(), *oi);
                        }
                    }
                }
            }
        }
    });
    out
}

/// Fused multiply-adds in index order.
#[inline]
fn dot<T: KvElem>(a: &[f32], b: &[T]) -> f32 {
    let mut s = 0f32;
    for (x, y) in a.iter().zip(b) {
        s = x.mul_add(y.to_f32(), s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paged::KvDtype;

    #[test]
    fn paged_matches_contiguous_with_gqa_and_scattered_blocks() {
        let (nh, nkv, hd, bs) = (6, 2, 8, 4);
        let total = 11; // positions 0..11, the last 3 are new
        let mut cache = PagedKvCache::new(1, 16, bs, nkv, hd, KvDtype::F32);
        let table = vec![9u32, 2, 14];
        let f = |i: usize| ((i * 7919 % 1000) as f32 / 500.0) - 1.0;
        let k: Vec<f32> = (0..total * nkv * hd).map(|i| f(i + 1)).collect();
        let v: Vec<f32> = (0..total * nkv * hd).map(|i| f(i + 77)).collect();
        let q: Vec<f32> = (0..3 * nh * hd).map(|i| f(i + 333)).collect();
        // Earlier positions were written by an earlier step.
        let w = nkv * hd;
        write_kv(&mut cache, 0, &[SeqMeta { row_start: 0, num_rows: 8, start_pos: 0, block_table: table.clone() }], &k[..8 * w], &v[..8 * w]);
        let meta = [SeqMeta { row_start: 0, num_rows: 3, start_pos: 8, block_table: table }];
        write_kv(&mut cache, 0, &meta, &k[8 * w..], &v[8 * w..]);
        let want = crate::reference::attention(&q, &k, &v, nh, nkv, hd, 8);
        for got in [paged_attention(&cache, 0, &meta, &q, nh), paged_attention_scalar(&cache, 0, &meta, &q, nh)] {
            for (a, b) in got.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    /// The default model's shape (9 query heads on 3 KV heads of 64, f16 cache) with few rows
    /// (a task per row and KV head) and with many (a task per row, every KV head's scores read
    /// position by position, the grouped weighted sums): both match the reference, and the
    /// SIMD and scalar kernels agree.
    #[test]
    fn default_shape_matches_reference_for_few_and_many_rows() {
        let (nh, nkv, hd, bs) = (9, 3, 64, 16);
        // Values exact in f16, so the cache holds what the reference reads.
        let f = |i: usize| ((i * 7919 % 512) as f32 / 256.0) - 1.0;
        for (start, rows) in [(37usize, 1usize), (10, 3), (10, 70)] {
            let total = start + rows;
            let w = nkv * hd;
            let mut cache = PagedKvCache::new(1, 64, bs, nkv, hd, KvDtype::F16);
            let table: Vec<u32> = (0..total.div_ceil(bs) as u32).map(|b| (b * 37 + 5) % 64).collect();
            let k: Vec<f32> = (0..total * w).map(|i| f(i + 1)).collect();
            let v: Vec<f32> = (0..total * w).map(|i| f(i + 77)).collect();
            let q: Vec<f32> = (0..rows * nh * hd).map(|i| f(i + 333) * 0.25).collect();
            write_kv(&mut cache, 0, &[SeqMeta { row_start: 0, num_rows: start, start_pos: 0, block_table: table.clone() }], &k[..start * w], &v[..start * w]);
            let meta = [SeqMeta { row_start: 0, num_rows: rows, start_pos: start, block_table: table }];
            write_kv(&mut cache, 0, &meta, &k[start * w..], &v[start * w..]);
            let want = crate::reference::attention(&q, &k, &v, nh, nkv, hd, start);
            for got in [paged_attention(&cache, 0, &meta, &q, nh), paged_attention_scalar(&cache, 0, &meta, &q, nh)] {
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((*a as f64 - b).abs() < 1e-5, "rows {rows}, element {i}: {a} vs {b}");
                }
            }
        }
    }

    /// Offsets computed block by block equal each position's `slot` times the slot width, and a
    /// table too short for the context panics.
    #[test]
    fn slot_offsets_equal_slot_per_position() {
        let geom = CacheGeom { block_size: 4, num_kv_heads: 3, head_dim: 8 };
        let table = [9u32, 2, 14, 0];
        for ctx in [0, 1, 4, 5, 11, 16] {
            let want: Vec<usize> = (0..ctx).map(|p| geom.slot(&table, p) * 24).collect();
            assert_eq!(geom.slot_offsets(&table, ctx), want, "ctx {ctx}");
        }
        assert!(std::panic::catch_unwind(|| geom.slot_offsets(&table, 17)).is_err());
    }
}
