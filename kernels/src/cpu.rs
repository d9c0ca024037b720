//! CPU paged attention: the plain-Rust reference implementation (and the CPU serving path).
//!
//! Shapes (all f32, row-major):
//! - `q`: `[num_rows, num_heads * head_dim]` (RoPE applied)
//! - `k_new`, `v_new`: `[num_rows, num_kv_heads * head_dim]` (RoPE applied to keys)
//! - cache: see [`PagedKvCache`]
//! - output: `[num_rows, num_heads * head_dim]`
//!
//! Query row `r` of sequence `s` sits at position `start_pos + (r - row_start)` and attends
//! causally to positions `0..=that` of its own sequence, read through the block table. GQA:
//! query head `h` uses KV head `h / (num_heads / num_kv_heads)`.

use crate::paged::{PagedKvCache, SeqMeta};
use rayon::prelude::*;

/// Write the new keys and values of every sequence into their slots (`reshape_and_cache`).
pub fn write_kv(cache: &mut PagedKvCache, layer: usize, seqs: &[SeqMeta], k_new: &[f32], v_new: &[f32]) {
    let w = cache.slot_width();
    for s in seqs {
        for i in 0..s.num_rows {
            let slot = cache.slot(&s.block_table, s.start_pos + i);
            let row = s.row_start + i;
            cache.keys[layer][slot * w..(slot + 1) * w].copy_from_slice(&k_new[row * w..(row + 1) * w]);
            cache.values[layer][slot * w..(slot + 1) * w].copy_from_slice(&v_new[row * w..(row + 1) * w]);
        }
    }
}

/// Attention for every query row over the paged cache (which must already hold the new KV).
pub fn paged_attention(cache: &PagedKvCache, layer: usize, seqs: &[SeqMeta], q: &[f32], num_heads: usize) -> Vec<f32> {
    let hd = cache.head_dim;
    let qw = num_heads * hd;
    let num_rows = q.len() / qw;
    let mut out = vec![0f32; num_rows * qw];
    // Map each row to its sequence.
    let mut row_seq = vec![0usize; num_rows];
    for (si, s) in seqs.iter().enumerate() {
        row_seq[s.row_start..s.row_start + s.num_rows].fill(si);
    }
    let keys = &cache.keys[layer];
    let values = &cache.values[layer];
    let group = num_heads / cache.num_kv_heads;
    let kvw = cache.slot_width();
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(qw).enumerate().for_each(|(row, out_row)| {
        let s = &seqs[row_seq[row]];
        let pos = s.start_pos + (row - s.row_start);
        let ctx = pos + 1;
        let slots: Vec<usize> = (0..ctx).map(|p| cache.slot(&s.block_table, p)).collect();
        let mut scores = vec![0f32; ctx];
        for h in 0..num_heads {
            let kvh = h / group;
            let qh = &q[row * qw + h * hd..row * qw + (h + 1) * hd];
            // Eight keys at a time: eight independent FMA chains (each in index order, so the
            // rounding is that of `dot`), instead of one latency-bound chain.
            let mut j = 0;
            while j + 8 <= ctx {
                let ks: [&[f32]; 8] = std::array::from_fn(|l| {
                    let slot = slots[j + l];
                    &keys[slot * kvw + kvh * hd..slot * kvw + (kvh + 1) * hd]
                });
                let mut acc = [0f32; 8];
                for d in 0..hd {
                    for l in 0..8 {
                        acc[l] = qh[d].mul_add(ks[l][d], acc[l]);
                    }
                }
                for l in 0..8 {
                    scores[j + l] = acc[l] * scale;
                }
                j += 8;
            }
            for (jj, &slot) in slots.iter().enumerate().skip(j) {
                let k = &keys[slot * kvw + kvh * hd..slot * kvw + (kvh + 1) * hd];
                scores[jj] = dot(qh, k) * scale;
            }
            let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            let o = &mut out_row[h * hd..(h + 1) * hd];
            for (j, &slot) in slots.iter().enumerate() {
                let w = scores[j] / sum;
                let v = &values[slot * kvw + kvh * hd..slot * kvw + (kvh + 1) * hd];
                for (oi, vi) in o.iter_mut().zip(v) {
                    *oi = w.mul_add(*vi, *oi);
                }
            }
        }
    });
    out
}

/// Fused multiply-adds in index order: the same rounding as a GEMM micro-kernel's k-loop
/// (candle's CPU matmul), so short contexts agree bit for bit with dense attention.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0f32;
    for (x, y) in a.iter().zip(b) {
        s = x.mul_add(*y, s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paged_matches_contiguous_with_gqa_and_scattered_blocks() {
        let (nh, nkv, hd, bs) = (6, 2, 8, 4);
        let total = 11; // positions 0..11, the last 3 are new
        let mut cache = PagedKvCache::new(1, 16, bs, nkv, hd);
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
        let got = paged_attention(&cache, 0, &meta, &q, nh);
        let want = crate::reference::attention(&q, &k, &v, nh, nkv, hd, 8);
        for (a, b) in got.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
