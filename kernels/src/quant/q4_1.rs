//! Q4_1 weights × Q8_1 activations: ggml's `vec_dot_q4_1_q8_1` arithmetic (candle's generic
//! path is the reference), with an AVX2 + FMA kernel. candle 0.11 has no x86 SIMD for Q4_1.
//!
//! Layout: the weight blocks are split at load into nibbles (`[u8; 16]` per block) and scale/min
//! converted once to f32, so the hot loop does no f16 conversion. The kernel works on a tile of up
//! to 4 activation rows per weight row: each weight block is unpacked once and multiplied with
//! 4 rows' int8 blocks (the unpack is amortised and the weights stay in L1 across rows), and block
//! results are accumulated in float vectors, reduced once per output (ggml's AVX2 scheme). The
//! integer dot of each block is exact; only the order of float additions differs from candle's
//! scalar loop (relative differences ~1e-6, checked against [`dot_scalar`] below).

use super::q4_1_x16::{self as x16, X16};
pub use super::q8_1::BlockQ8_1;
use super::q8_1::{quantize_q8_1, quantize_q8_1_into};
use super::{QuantMatrix, QK};

/// A Q4_1 weight matrix `[n, k]` (row-major, rows of `k / 32` blocks), in the row layout or,
/// after [`Q4_1Matrix::interleaved`], in the 16-row interleaved layout of module `q4_1_x16`.
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    /// Row layout: nibbles of every block (low nibbles are elements 0..16, high nibbles 16..32).
    /// Empty when `x16` holds the weights.
    pub(super) qs: Vec<[u8; 16]>,
    /// Per-block scale and min, f16 in the file, f32 here.
    pub(super) d: Vec<f32>,
    pub(super) m: Vec<f32>,
    /// The interleaved layout; when set, the row layout above is empty and every product
    /// (int8, f32 and reference paths) runs on this one.
    pub(super) x16: Option<X16>,
    pub n: usize,
    pub k: usize,
}

/// One weight row: nibbles, scales, mins.
struct Row<'a> {
    qs: &'a [[u8; 16]],
    d: &'a [f32],
    m: &'a [f32],
}

impl Q4_1Matrix {
    /// From raw GGUF bytes of a `[n, k]` Q4_1 tensor (blocks of f16 d, f16 m, 16 bytes).
    pub fn from_bytes(bytes: &[u8], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(QK) || bytes.len() != n * k / QK * 20 {
            return None;
        }
        let nblocks = bytes.len() / 20;
        let (mut qs, mut d, mut m) = (Vec::with_capacity(nblocks), Vec::with_capacity(nblocks), Vec::with_capacity(nblocks));
        for c in bytes.chunks_exact(20) {
            d.push(half::f16::from_le_bytes([c[0], c[1]]).to_f32());
            m.push(half::f16::from_le_bytes([c[2], c[3]]).to_f32());
            qs.push(c[4..20].try_into().unwrap_or([0; 16]));
        }
        Some(Self { qs, d, m, x16: None, n, k })
    }

    /// The same matrix in the interleaved layout where the CPU can run one of its kernels
    /// ([`x16::has_vnni512`], [`x16::has_avx2_x16`]), else unchanged. Outputs are candle's
    /// bits in the interleaved layout (the row layout's AVX2 kernel differs in float rounding).
    pub fn interleaved(self) -> Self {
        if self.x16.is_some() || !(x16::has_vnni512() || x16::has_avx2_x16()) {
            return self;
        }
        self.into_x16()
    }

    /// The address ranges of the weight data (for [`crate::mem::collapse_huge_pages`]).
    pub fn buffers(&self) -> Vec<(usize, usize)> {
        use crate::mem::range_of;
        let mut r = vec![range_of(&self.qs), range_of(&self.d), range_of(&self.m)];
        if let Some(x) = &self.x16 {
            r.extend(x.buffers());
        }
        r
    }

    /// The interleaved layout whatever the CPU (its scalar reference runs anywhere).
    pub fn into_x16(self) -> Self {
        if self.x16.is_some() {
            return self;
        }
        let x = X16::pack(&self.qs, &self.d, &self.m, self.n, self.k / QK);
        Self { qs: Vec::new(), d: Vec::new(), m: Vec::new(), x16: Some(x), n: self.n, k: self.k }
    }

    /// The bytes of the interleaved groups that hold output columns `j0..j1`: scales, mins,
    /// nibbles as `(address, length)`; none in the row layout.
    pub fn column_ranges(&self, j0: usize, j1: usize) -> Vec<(usize, usize)> {
        match &self.x16 {
            Some(x) if j0 < j1 => x.group_ranges(j0 / x16::G, j1.div_ceil(x16::G).min(self.n.div_ceil(x16::G))).to_vec(),
            _ => vec![],
        }
    }

    /// Whether the weights are in the interleaved layout.
    pub fn is_interleaved(&self) -> bool {
        self.x16.is_some()
    }

    fn row(&self, j: usize) -> Row<'_> {
        let nb = self.k / QK;
        let r = j * nb..(j + 1) * nb;
        Row { qs: &self.qs[r.clone()], d: &self.d[r.clone()], m: &self.m[r] }
    }

    /// `x [m, k] · Wᵀ → [m, n]`, rows of `x` quantized to Q8_1 as candle does.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        super::matmul_many(&[self], x, m, true).pop().unwrap_or_default()
    }
}

// SAFETY: `dot_panel` writes every element of its window: the interleaved kernels every
// row of every group that overlaps it (`group_tiles`) or every (row, column) (the scalar loops),
// the default every (row, column).
unsafe impl QuantMatrix for Q4_1Matrix {
    type Act = BlockQ8_1;
    fn n(&self) -> usize {
        self.n
    }
    fn k(&self) -> usize {
        self.k
    }
    fn quantize(xs: &[f32]) -> BlockQ8_1 {
        quantize_q8_1(xs)
    }
    fn quantize_into(x: &[f32], out: &mut [BlockQ8_1]) {
        quantize_q8_1_into(x, out)
    }
    fn dot_tile(&self, j: usize, ys: &[&[BlockQ8_1]], out: &mut [f32], simd: bool) {
        if let Some(x) = &self.x16 {
            for (o, y) in out.iter_mut().zip(ys) {
                *o = x.dot_scalar(j, y);
            }
            return;
        }
        let w = self.row(j);
        if simd {
            dot_tile_dispatch(&w, ys, out);
        } else {
            for (o, y) in out.iter_mut().zip(ys) {
                *o = dot_scalar(&w, y);
            }
        }
    }
    fn dot_panel(&self, j0: usize, j1: usize, rows: &[&[BlockQ8_1]], part: &mut super::PanelOut, simd: bool) {
        match &self.x16 {
            Some(x) => x.panel(j0, j1, rows, part, simd),
            None => super::dot_panel_rows(self, j0, j1, rows, part, simd),
        }
    }
}

/// The reference: ggml's generic `vec_dot_q4_1_q8_1` (candle's path), block by block.
fn dot_scalar(w: &Row, y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (b, yb) in y.iter().enumerate() {
        let q = &w.qs[b];
        let mut sumi = 0i32;
        for (j, &qj) in q.iter().enumerate().take(16) {
            let v0 = qj as i32 & 0x0F;
            let v1 = qj as i32 >> 4;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + 16] as i32;
        }
        sumf += sumi as f32 * w.d[b] * yb.d + w.m[b] * yb.s;
    }
    sumf
}

/// One weight row against up to 4 activation rows (`out.len()` of them).
#[inline]
fn dot_tile_dispatch(w: &Row, ys: &[&[BlockQ8_1]], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only called when AVX2 and FMA were detected at run time.
    unsafe {
        match ys.len() {
            4 => dot_tile::<4>(w, ys, out),
            3 => dot_tile::<3>(w, ys, out),
            2 => dot_tile::<2>(w, ys, out),
            _ => dot_tile::<1>(w, ys, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (o, y) in out.iter_mut().zip(ys) {
        *o = dot_scalar(w, y);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_tile<const R: usize>(w: &Row, ys: &[&[BlockQ8_1]], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let mask = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut msum = [0f32; R];
    let nb = w.qs.len();
    for b in 0..nb {
        let q = _mm_loadu_si128(w.qs.get_unchecked(b).as_ptr() as *const __m128i);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        let xv = _mm256_set_m128i(hi, lo);
        let wd = *w.d.get_unchecked(b);
        let wm = *w.m.get_unchecked(b);
        for r in 0..R {
            let yb = ys.get_unchecked(r).get_unchecked(b);
            let yv = _mm256_loadu_si256(yb.qs.as_ptr() as *const __m256i);
            let p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(xv, yv), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(wd * yb.d), acc[r]);
            msum[r] += wm * yb.s;
        }
    }
    for r in 0..R {
        *out.get_unchecked_mut(r) = super::hsum8(acc[r]) + msum[r];
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data as data;
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// The SIMD tile kernel against the scalar reference (same blocks, same integer dots; float
    /// sums in a different order), and the reference against candle's own Q4_1 matmul.
    #[test]
    fn simd_matches_scalar_reference_and_candle() {
        let (n, k, m) = (70, 256, 7);
        let w = Tensor::from_vec(data(n * k, 1), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let mat = Q4_1Matrix::from_bytes(&q.data().unwrap(), n, k).unwrap();
        let x = data(m * k, 2);
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        let candle = QMatMul::from_qtensor(q).unwrap().forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let nb = k / QK;
        let xq: Vec<BlockQ8_1> = x.chunks_exact(QK).map(quantize_q8_1).collect();
        let reference: Vec<f32> = (0..m).flat_map(|r| (0..n).map(move |j| (r, j))).map(|(r, j)| dot_scalar(&mat.row(j), &xq[r * nb..(r + 1) * nb])).collect();
        // The scalar reference is candle's arithmetic exactly.
        assert_eq!(reference, candle);
        let got = mat.matmul(&x, m);
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            assert!((g - r).abs() <= 1e-5 * r.abs().max(1.0), "output {i}: {g} vs {r}");
        }
        // Every tile width gives the same result for a row (tiles do not mix rows).
        for t in 1..=4 {
            let ys: Vec<&[BlockQ8_1]> = (0..t).map(|r| &xq[r * nb..(r + 1) * nb]).collect();
            let mut out = [0f32; 4];
            dot_tile_dispatch(&mat.row(3), &ys, &mut out[..t]);
            assert_eq!(out[0].to_bits(), got[3].to_bits(), "tile width {t}");
        }
    }
}
