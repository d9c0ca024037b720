//! Quantized weight × activation matrix products (ggml block formats), CPU.
//!
//! Each weight format quantizes the activations the way candle does for it (Q8_1 for Q4_1,
//! Q8_0 for Q8_0) and has a scalar reference dot product with candle's arithmetic and an AVX2
//! tile kernel that multiplies one weight row with up to 4 activation rows (the weight block is
//! loaded and unpacked once per tile). The integer part of every block dot is exact; only the
//! order of float additions may differ from the reference (tests in each format's module).
//!
//! Where the CPU has AVX-512 VNNI ([`has_vnni512`]) the model loads both formats interleaved 16
//! weight rows at a time (`interleaved()`; modules `q4_1_x16`, `q8_0_x16`) and a `vpdpbusd` kernel
//! computes 16 outputs at once, with candle's arithmetic bit for bit, for any number of rows.
//! Where it has AVX2 but not VNNI-512 ([`has_avx2_x16`]: AMD Zen 2/3, older Intel) both are
//! interleaved the same way and AVX2 kernels (`vpmaddubsw`, 8 lanes) compute the same bits.
//!
//! [`matmul_many`] is the shared driver: several matrices of one input width applied to the
//! same activations (Q/K/V, gate/up) in one parallel loop over runs of 16 columns (module
//! `panels`: one contiguous region of the weights per thread), so the weights are read once
//! per step for every row of the batch.

pub mod dense;
pub mod isa;
mod panels;
pub mod q4_1;
mod q4_1_x16;
pub mod q8_0;
mod q8_0_x16;
mod q8_1;

pub use q4_1_x16::{has_avx2_x16, has_vnni512};

pub use dense::{matmul_f32_many, matmul_split};
pub use q4_1::Q4_1Matrix;
pub use q8_0::Q8_0Matrix;

pub use panels::PanelOut;
use panels::{run_panels, Tasks};

/// Quantization block length of every supported format.
pub const QK: usize = 32;

/// A quantized `[n, k]` weight matrix (row-major, rows of `k / 32` blocks).
///
/// # Safety
/// [`Self::dot_panel`] must write every element of the window it is given: the matmuls hand it
/// memory that was not zero-filled and read all of it afterwards (the default does).
pub unsafe trait QuantMatrix: Sync {
    /// The activation block type the weights are multiplied with.
    type Act: Copy + Send + Sync;
    /// Output width (rows of the weight matrix).
    fn n(&self) -> usize;
    /// Input width.
    fn k(&self) -> usize;
    /// One block of 32 activations, quantized with candle's arithmetic.
    fn quantize(xs: &[f32]) -> Self::Act;
    /// The blocks of `x` (32 values each) into `out` (as many as both hold), as
    /// [`Self::quantize`] gives them; a format may override it with a faster loop that gives
    /// the same blocks.
    fn quantize_into(x: &[f32], out: &mut [Self::Act]) {
        for (o, c) in out.iter_mut().zip(x.chunks_exact(QK)) {
            *o = Self::quantize(c);
        }
    }
    /// Weight row `j` against `ys.len()` (1–4) activation rows into `out`; `simd` selects the
    /// AVX2 tile kernel (callers pass it only when [`has_avx2_fma`]), else the scalar reference.
    fn dot_tile(&self, j: usize, ys: &[&[Self::Act]], out: &mut [f32], simd: bool);

    /// Weight rows `j0..j1` against every row of `rows` into `part` (`[rows.len(), j1 - j0]`,
    /// a window onto the output), walking [`Self::dot_tile`] (one weight row × up to 4
    /// activation rows). A format may override it with a larger register tile, as long as each
    /// output is computed with the same arithmetic whatever the tile (outputs must not depend on
    /// the batch) and every element of `part` is written (the trait's safety contract).
    fn dot_panel(&self, j0: usize, j1: usize, rows: &[&[Self::Act]], part: &mut PanelOut, simd: bool) {
        dot_panel_rows(self, j0, j1, rows, part, simd)
    }
}

/// [`QuantMatrix::dot_panel`]'s default: [`QuantMatrix::dot_tile`] over weight rows `j0..j1`,
/// up to 4 activation rows at a time.
fn dot_panel_rows<W: QuantMatrix + ?Sized>(w: &W, j0: usize, j1: usize, rows: &[&[W::Act]], part: &mut PanelOut, simd: bool) {
    let m = rows.len();
    for j in j0..j1 {
        let mut r = 0;
        while r < m {
            let t = (m - r).min(4);
            let mut res = [0f32; 4];
            w.dot_tile(j, &rows[r..r + t], &mut res[..t], simd);
            for (i, v) in res[..t].iter().enumerate() {
                part.write(r + i, j - j0, &[*v]);
            }
            r += t;
        }
    }
}

/// Whether the AVX2 + FMA tile kernels can run here (checked once).
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *A.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x [m, k] · Wᵀ → [m, n]` for each matrix of `ws` that has input width `k` of the first (the
/// others get zeros). `x` is quantized once. `simd = false` forces the scalar reference.
pub fn matmul_many<W: QuantMatrix>(ws: &[&W], x: &[f32], m: usize, simd: bool) -> Vec<Vec<f32>> {
    let Some(first) = ws.first() else { return vec![] };
    let k = first.k();
    let nb = k / QK;
    let xq = quantize_rows::<W>(x, m, nb);
    let rows: Vec<&[W::Act]> = (0..m).map(|r| &xq[r * nb..(r + 1) * nb]).collect();
    let simd = simd && has_avx2_fma();
    let shapes: Vec<(usize, usize)> = ws.iter().map(|w| (w.n(), w.k())).collect();
    // SAFETY: `dot_panel` writes every element of its window (`QuantMatrix`'s contract).
    unsafe { run_panels(&shapes, m, Tasks::Streams(STREAM_UNIT), |i, j0, j1, part| ws[i].dot_panel(j0, j1, &rows, part, simd)) }
}

/// Output columns per unit of [`matmul_many`]'s parallel runs (one interleaved group).
const STREAM_UNIT: usize = 16;

/// Hints the kernel pool's helpers ([`crate::pool::prefetch_hint`]) to prefetch, each, the
/// first `budget` bytes of the part of the fused matmul `ws` that it will stream when
/// [`matmul_many`] runs it (its region of the columns, cut as the loop cuts them). For a
/// decode step of few rows, called right after the previous matmul: the serial work before
/// the next one then overlaps with its first bytes' memory traffic. Only interleaved weights
/// are hinted.
pub fn prefetch_next(ws: &[&Q4_1Matrix], budget: usize) {
    let threads = crate::pool::threads();
    if threads > 1 {
        crate::pool::prefetch_hint((1..threads).map(|t| helper_ranges(ws, t, threads, budget)).collect());
    }
}

/// The byte ranges of thread `t`'s region of the fused matmul `ws` (of `threads`), its first
/// `budget` bytes (rounded up to whole interleaved groups): for each matrix the region touches,
/// its scales and mins, then its nibbles.
fn helper_ranges(ws: &[&Q4_1Matrix], t: usize, threads: usize, budget: usize) -> Vec<(usize, usize)> {
    let total: usize = ws.iter().map(|w| w.n).sum();
    let (u0, u1) = crate::pool::region(t, threads, total.div_ceil(STREAM_UNIT));
    let (c0, c1) = (u0 * STREAM_UNIT, (u1 * STREAM_UNIT).min(total));
    let mut at = 0;
    let starts: Vec<Option<(usize, usize)>> = ws
        .iter()
        .map(|w| {
            at += w.n;
            Some((at - w.n, w.n))
        })
        .collect();
    let (mut ranges, mut left) = (Vec::new(), budget);
    // The region's pieces per matrix, as `run_panels` cuts a run of columns.
    for (i, j0, j1) in panels::split_columns(&starts, c0, c1) {
        if left == 0 {
            break;
        }
        // 16 bytes of nibbles and 4 of scale and min per 32 weights of a column.
        let per_col = (ws[i].k / QK * 20).max(1);
        let j1 = j1.min(j0 + left.div_ceil(per_col).div_ceil(STREAM_UNIT) * STREAM_UNIT);
        left = left.saturating_sub((j1 - j0) * per_col);
        ranges.extend(ws[i].column_ranges(j0, j1));
    }
    ranges
}

/// The activations `x` (`[m, nb * 32]`) quantized, `[m, nb]` blocks: with several rows, the
/// rows are split over the pool's threads (the same blocks, each computed by one thread):
/// quantizing is otherwise serial work between the parallel matmul loops, with the helpers
/// waiting (~2.5 % of a 16-row step's samples on a 2-core Zen 4 VM).
fn quantize_rows<W: QuantMatrix>(x: &[f32], m: usize, nb: usize) -> Vec<W::Act> {
    let mut xq = vec![W::quantize(&[0.0; QK]); m * nb];
    let threads = crate::pool::threads();
    if m < 2 * threads || nb == 0 {
        W::quantize_into(x, &mut xq);
        return xq;
    }
    let rows_per = m.div_ceil(threads);
    crate::pool::for_each_chunk_mut(&mut xq, rows_per * nb, |i, out| {
        let start = i * rows_per * nb * QK;
        W::quantize_into(&x[start..(start + out.len() * QK).min(x.len())], out);
    });
    xq
}

/// Sum of the 8 lanes in candle's order (`hsum_float_8`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum8(x: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// Deterministic test values in [-2, 2) (an LCG), shared by the formats' tests.
#[cfg(test)]
pub(crate) fn test_data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

/// A random `[n, k]` Q4_1 matrix for the tests: f16 `d` in [0, 0.1), f16 `m` in [-0.4, 0.4),
/// random nibbles (row layout).
#[cfg(test)]
pub(crate) fn test_q4_1_matrix(n: usize, k: usize, seed: u32) -> Q4_1Matrix {
    let raw = test_data(n * k / QK * 20, seed);
    let mut bytes = Vec::with_capacity(raw.len());
    for c in raw.chunks_exact(20) {
        bytes.extend(half::f16::from_f32(c[0].abs() / 20.0).to_le_bytes());
        bytes.extend(half::f16::from_f32(c[1] / 5.0).to_le_bytes());
        bytes.extend(c[2..18].iter().map(|v| ((v + 2.0) * 64.0) as u8));
    }
    Q4_1Matrix::from_bytes(&bytes, n, k).unwrap_or_else(|| panic!("test matrix {n}x{k}"))
}

#[cfg(test)]
mod cut_tests {
    use super::*;

    /// The threads' prefetch regions of a fused matmul (matrices of 16-multiple widths but the
    /// last, as the models' are), without a budget, cover every byte of every matrix's
    /// interleaved data exactly once, and only that; with a budget, a region
    /// starts where it did and stops within a group past the budget.
    #[test]
    fn prefetch_regions_cover_the_weights_once() {
        let ws: Vec<Q4_1Matrix> = [(48usize, 64usize), (16, 64), (33, 64)].iter().enumerate().map(|(i, &(n, k))| test_q4_1_matrix(n, k, i as u32).into_x16()).collect();
        let refs: Vec<&Q4_1Matrix> = ws.iter().collect();
        for threads in [2usize, 3, 5] {
            let mut got: Vec<(usize, usize)> = (0..threads).flat_map(|t| helper_ranges(&refs, t, threads, usize::MAX)).filter(|r| r.1 > 0).collect();
            got.sort();
            // Adjacent pieces of one buffer merge; the result is each matrix's three buffers.
            let mut merged: Vec<(usize, usize)> = Vec::new();
            for (a, l) in got {
                match merged.last_mut() {
                    Some(last) if last.0 + last.1 == a => last.1 += l,
                    _ => {
                        assert!(merged.last().is_none_or(|last| last.0 + last.1 < a), "overlap at {a:#x}, {threads} threads");
                        merged.push((a, l));
                    }
                }
            }
            let mut want: Vec<(usize, usize)> = refs.iter().flat_map(|w| w.column_ranges(0, w.n)).collect();
            want.sort();
            assert_eq!(merged, want, "{threads} threads");
        }
        for budget in [1usize, 700, 5000] {
            let full = helper_ranges(&refs, 1, 2, usize::MAX);
            let cut = helper_ranges(&refs, 1, 2, budget);
            let bytes = |r: &[(usize, usize)]| r.iter().map(|x| x.1).sum::<usize>();
            // A group of 16 columns of k = 64 is 16 * 2 * 20 = 640 bytes.
            assert!(bytes(&cut) >= budget.min(bytes(&full)) && bytes(&cut) < budget + 640, "budget {budget}: {} bytes", bytes(&cut));
            assert_eq!(cut.first().map(|r| r.0), full.first().map(|r| r.0));
        }
    }

    /// Rows quantized over the pool equal each block quantized alone, for row counts below and
    /// above the split and uneven splits.
    #[test]
    fn rows_quantized_in_parallel_equal_blocks_alone() {
        let nb = 5;
        for m in [1, 2, 3, 4, 5, 7, 9, 16] {
            let x = test_data(m * nb * QK, 40 + m as u32);
            let got = quantize_rows::<Q4_1Matrix>(&x, m, nb);
            assert_eq!(got.len(), m * nb);
            for (i, (g, c)) in got.iter().zip(x.chunks_exact(QK)).enumerate() {
                let want = Q4_1Matrix::quantize(c);
                assert_eq!((g.parts().0, g.parts().1.to_bits(), g.parts().2.to_bits()), (want.parts().0, want.parts().1.to_bits(), want.parts().2.to_bits()), "m = {m}, block {i}");
            }
        }
    }
}
