//! Q8_0 weights × Q8_0 activations (ggml's `vec_dot_q8_0_q8_0`), for the default model's tied
//! embedding / LM head (49152 × 576, the largest matrix of the model).
//!
//! candle's AVX2 path converts both f16 scales per block and dot-products one activation row at
//! a time; here the weight scales are converted once at load and one weight row is multiplied
//! with a tile of up to 4 activation rows (`|w|` computed once per block). The arithmetic per
//! output is candle's AVX2 arithmetic step for step (same per-block integer dot, same float
//! FMA into 8 lanes, same horizontal sum), so results equal candle's bit for bit on AVX2
//! machines; the scalar reference is ggml's generic loop (checked within 1e-5 below). Where
//! the CPU has AVX-512 VNNI, or AVX2 and F16C, the weights are interleaved (module `q8_0_x16`)
//! and its kernels compute the generic loop's arithmetic exactly instead (one float step per
//! block, not 8).

use super::q8_0_x16::X16;
use super::{QuantMatrix, QK};

/// One Q8_0 block of activations: 32 int8 values and scale `d` (rounded through f16, as f32).
/// Aligned to 32 bytes so that the kernel's 32-byte loads never straddle a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct BlockQ8_0 {
    qs: [i8; 32],
    d: f32,
    /// `-128 · Σ qs`: the start of the interleaved kernel's integer sums, whose weights carry
    /// a +128 bias (module `q8_0_x16`).
    bias: i32,
}

impl BlockQ8_0 {
    pub(super) fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
    pub(super) fn d(&self) -> f32 {
        self.d
    }
    pub(super) fn bias(&self) -> i32 {
        self.bias
    }
}

/// 32 weight quants, 32-byte aligned (same reason).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Quants([i8; 32]);

/// A Q8_0 weight matrix `[n, k]`, also readable row by row (embedding lookup), in the row
/// layout or, after [`Q8_0Matrix::interleaved`], the 16-row layout of module `q8_0_x16`.
#[derive(Debug, Clone)]
pub struct Q8_0Matrix {
    /// Quants of every block, row-major; empty when `x16` holds the weights.
    qs: Vec<Quants>,
    /// Per-block scale, f16 in the file, f32 here (exact).
    d: Vec<f32>,
    /// The interleaved layout; when set, the row layout above is empty.
    pub(super) x16: Option<X16>,
    pub n: usize,
    pub k: usize,
}

impl Q8_0Matrix {
    /// From raw GGUF bytes of a `[n, k]` Q8_0 tensor (blocks of f16 d + 32 int8).
    pub fn from_bytes(bytes: &[u8], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(QK) || bytes.len() != n * k / QK * 34 {
            return None;
        }
        let nblocks = bytes.len() / 34;
        let (mut qs, mut d) = (Vec::with_capacity(nblocks), Vec::with_capacity(nblocks));
        for c in bytes.chunks_exact(34) {
            d.push(half::f16::from_le_bytes([c[0], c[1]]).to_f32());
            qs.push(Quants(std::array::from_fn(|i| c[2 + i] as i8)));
        }
        Some(Self { qs, d, x16: None, n, k })
    }

    /// The same matrix in the interleaved layout where the CPU can run one of its kernels
    /// ([`super::has_vnni512`], [`super::has_avx2_x16`]), else unchanged. Outputs become the
    /// generic loop's bits (the row layout's AVX2 kernel has candle's AVX2 rounding).
    pub fn interleaved(self) -> Self {
        if self.x16.is_some() || !(super::has_vnni512() || super::has_avx2_x16()) {
            return self;
        }
        self.into_x16()
    }

    /// The address ranges of the weight data (for [`crate::mem::collapse_huge_pages`]).
    pub fn buffers(&self) -> Vec<(usize, usize)> {
        use crate::mem::range_of;
        let mut r = vec![range_of(&self.qs), range_of(&self.d)];
        if let Some(x) = &self.x16 {
            r.extend(x.buffers());
        }
        r
    }

    /// The interleaved layout whatever the CPU (its scalar path runs anywhere).
    pub fn into_x16(self) -> Self {
        if self.x16.is_some() {
            return self;
        }
        let qs: Vec<[i8; 32]> = self.qs.iter().map(|q| q.0).collect();
        let x = X16::pack(&qs, &self.d, self.n, self.k / QK);
        Self { qs: Vec::new(), d: Vec::new(), x16: Some(x), n: self.n, k: self.k }
    }

    /// Row `j` dequantized (`d * q`, candle's arithmetic), appended to `out`.
    pub fn dequantize_row(&self, j: usize, out: &mut Vec<f32>) {
        let nb = self.k / QK;
        if let Some(x) = &self.x16 {
            for b in 0..nb {
                let (q, d) = x.block(j, b);
                out.extend(q.iter().map(|&q| d * q as f32));
            }
            return;
        }
        for b in j * nb..(j + 1) * nb {
            let d = self.d[b];
            out.extend(self.qs[b].0.iter().map(|&q| d * q as f32));
        }
    }

    /// `x [m, k] · Wᵀ → [m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize, simd: bool) -> Vec<f32> {
        super::matmul_many(&[self], x, m, simd).pop().unwrap_or_default()
    }
}

// SAFETY: `dot_panel` writes every element of its window: the interleaved kernels every
// row of every group that overlaps it (`group_tiles`) or every (row, column) (the scalar loops),
// the default every (row, column).
unsafe impl QuantMatrix for Q8_0Matrix {
    type Act = BlockQ8_0;
    fn n(&self) -> usize {
        self.n
    }
    fn k(&self) -> usize {
        self.k
    }
    /// candle's `BlockQ8_0::from_float` for one block.
    fn quantize(xs: &[f32]) -> BlockQ8_0 {
        let amax = xs.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let d = amax / 127f32;
        let id = if d != 0f32 { 1. / d } else { 0. };
        let qs: [i8; 32] = std::array::from_fn(|j| f32::round(xs[j] * id) as i8);
        let bias = -128 * qs.iter().map(|&q| q as i32).sum::<i32>();
        BlockQ8_0 { d: half::f16::from_f32(d).to_f32(), qs, bias }
    }
    fn dot_tile(&self, j: usize, ys: &[&[BlockQ8_0]], out: &mut [f32], simd: bool) {
        let nb = self.k / QK;
        if let Some(x) = &self.x16 {
            // The scalar reference on interleaved weights (the kernel runs in `dot_panel`): the
            // row's blocks gathered once for all activation rows.
            let (qs, d): (Vec<Quants>, Vec<f32>) = (0..nb).map(|b| x.block(j, b)).map(|(q, d)| (Quants(q), d)).unzip();
            for (o, y) in out.iter_mut().zip(ys) {
                *o = dot_scalar(&qs, &d, y);
            }
            return;
        }
        let (qs, d) = (&self.qs[j * nb..(j + 1) * nb], &self.d[j * nb..(j + 1) * nb]);
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only passed true when AVX2 and FMA were detected.
            unsafe {
                match ys.len() {
                    4 => dot_tile::<4>(qs, d, ys, out),
                    3 => dot_tile::<3>(qs, d, ys, out),
                    2 => dot_tile::<2>(qs, d, ys, out),
                    _ => dot_tile::<1>(qs, d, ys, out),
                }
            }
            return;
        }
        let _ = simd;
        for (o, y) in out.iter_mut().zip(ys) {
            *o = dot_scalar(qs, d, y);
        }
    }
    fn dot_panel(&self, j0: usize, j1: usize, rows: &[&[BlockQ8_0]], part: &mut super::PanelOut, simd: bool) {
        if let Some(x) = &self.x16 {
            if simd && x.panel(j0, j1, rows, part) {
                return;
            }
        }
        super::dot_panel_rows(self, j0, j1, rows, part, simd)
    }
}

/// ggml's generic `vec_dot_q8_0_q8_0` (candle's `vec_dot_unopt`).
fn dot_scalar(qs: &[Quants], d: &[f32], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for ((q, &wd), yb) in qs.iter().zip(d).zip(y) {
        let sumi: i32 = q.0.iter().zip(&yb.qs).map(|(&a, &b)| a as i32 * b as i32).sum();
        sumf += sumi as f32 * (wd * yb.d);
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_tile<const R: usize>(qs: &[Quants], d: &[f32], ys: &[&[BlockQ8_0]], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..qs.len() {
        let x = _mm256_loadu_si256(qs.get_unchecked(b).0.as_ptr() as *const __m256i);
        let ax = _mm256_sign_epi8(x, x);
        let wd = *d.get_unchecked(b);
        for (a, y) in acc.iter_mut().zip(ys) {
            let yb = y.get_unchecked(b);
            let sy = _mm256_sign_epi8(_mm256_loadu_si256(yb.qs.as_ptr() as *const __m256i), x);
            let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, _mm256_maddubs_epi16(ax, sy)));
            *a = _mm256_fmadd_ps(_mm256_set1_ps(wd * yb.d), q, *a);
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = super::hsum8(a);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data as data;
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// The tile kernel equals candle's Q8_0 matmul bit for bit (AVX2) and the scalar reference
    /// within 1e-5; dequantized rows equal candle's dequantization.
    #[test]
    fn tile_kernel_matches_candle_and_scalar_reference() {
        let (n, k, m) = (37, 192, 6);
        let w = Tensor::from_vec(data(n * k, 3), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let mat = Q8_0Matrix::from_bytes(&q.data().unwrap(), n, k).unwrap();
        let x = data(m * k, 4);
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        let deq = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let candle = QMatMul::from_qtensor(q).unwrap().forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scalar = mat.matmul(&x, m, false);
        for (i, (g, r)) in scalar.iter().zip(&candle).enumerate() {
            assert!((g - r).abs() <= 1e-5 * r.abs().max(1.0), "scalar output {i}: {g} vs {r}");
        }
        if super::super::has_avx2_fma() {
            assert_eq!(mat.matmul(&x, m, true), candle);
        }
        let mut rows = Vec::new();
        for j in 0..n {
            mat.dequantize_row(j, &mut rows);
        }
        assert_eq!(rows, deq);
    }
}
