//! Q4_1 weights × Q8_1 activations, the same arithmetic as candle's (ggml's) generic
//! `vec_dot_q4_1_q8_1`, with an AVX2 path. candle 0.11 has no x86 SIMD for Q4_1, which made every
//! Q4_1 matmul scalar. Per block the integer dot is exact in both paths, and blocks are combined in
//! the same order with the same float operations, so results are bit-identical to candle's
//! (checked by the tests below).

use rayon::prelude::*;

const QK: usize = 32;

/// One Q4_1 block as stored in GGUF: f16 scale, f16 min, 32 4-bit values (low nibbles are
/// elements 0..16, high nibbles 16..32).
#[derive(Clone, Copy)]
#[repr(C)]
struct BlockQ4_1 {
    d: half::f16,
    m: half::f16,
    qs: [u8; 16],
}

/// One Q8_1 block: f16 scale, f16 `sum(qs) * d`, 32 int8 values.
#[derive(Clone, Copy)]
#[repr(C)]
struct BlockQ8_1 {
    d: half::f16,
    s: half::f16,
    qs: [i8; 32],
}

/// A Q4_1 weight matrix `[n, k]` (row-major, rows of `k / 32` blocks).
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    blocks: Vec<[u8; 20]>,
    pub n: usize,
    pub k: usize,
}

impl Q4_1Matrix {
    /// From raw GGUF bytes of a `[n, k]` Q4_1 tensor.
    pub fn from_bytes(bytes: &[u8], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(QK) || bytes.len() != n * k / QK * 20 {
            return None;
        }
        let blocks = bytes.chunks_exact(20).map(|c| c.try_into().unwrap_or([0; 20])).collect();
        Some(Self { blocks, n, k })
    }

    fn row(&self, j: usize) -> &[[u8; 20]] {
        let nb = self.k / QK;
        &self.blocks[j * nb..(j + 1) * nb]
    }

    /// `x [m, k] · Wᵀ → [m, n]`, rows of `x` quantized to Q8_1 as candle does.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let nb = self.k / QK;
        let xq: Vec<BlockQ8_1> = x.chunks_exact(QK).map(quantize_q8_1).collect();
        let mut out = vec![0f32; m * self.n];
        let avx2 = has_avx2();
        // Parallel over output columns (weights are read once per step for all rows).
        const COLS: usize = 16;
        let mut cols: Vec<(usize, Vec<f32>)> = (0..self.n.div_ceil(COLS))
            .into_par_iter()
            .map(|c| {
                let j0 = c * COLS;
                let j1 = (j0 + COLS).min(self.n);
                let mut part = vec![0f32; m * (j1 - j0)];
                for j in j0..j1 {
                    let w = self.row(j);
                    for r in 0..m {
                        let y = &xq[r * nb..(r + 1) * nb];
                        part[r * (j1 - j0) + (j - j0)] = if avx2 { dot_avx2_dispatch(w, y) } else { dot_scalar(w, y) };
                    }
                }
                (j0, part)
            })
            .collect();
        for (j0, part) in cols.drain(..) {
            let w = part.len() / m.max(1);
            for r in 0..m {
                out[r * self.n + j0..r * self.n + j0 + w].copy_from_slice(&part[r * w..(r + 1) * w]);
            }
        }
        out
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *A.get_or_init(|| is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// candle's `quantize_row_q8_1` for one block.
fn quantize_q8_1(xs: &[f32]) -> BlockQ8_1 {
    let mut amax = 0f32;
    for &x in xs {
        amax = amax.max(x.abs());
    }
    let d = amax / 127f32;
    let id = if d != 0f32 { 1. / d } else { 0. };
    let mut b = BlockQ8_1 { d: half::f16::from_f32(d), s: half::f16::ZERO, qs: [0; 32] };
    let mut sum = 0i32;
    for j in 0..16 {
        b.qs[j] = f32::round(xs[j] * id) as i8;
        b.qs[j + 16] = f32::round(xs[j + 16] * id) as i8;
        sum += b.qs[j] as i32 + b.qs[j + 16] as i32;
    }
    b.s = half::f16::from_f32(sum as f32) * b.d;
    b
}

#[inline]
fn block(w: &[u8; 20]) -> BlockQ4_1 {
    BlockQ4_1 {
        d: half::f16::from_le_bytes([w[0], w[1]]),
        m: half::f16::from_le_bytes([w[2], w[3]]),
        qs: w[4..20].try_into().unwrap_or([0; 16]),
    }
}

/// The reference: ggml's generic `vec_dot_q4_1_q8_1`.
fn dot_scalar(w: &[[u8; 20]], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (wb, yb) in w.iter().zip(y) {
        let x = block(wb);
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = x.qs[j] as i32 & 0x0F;
            let v1 = x.qs[j] as i32 >> 4;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + 16] as i32;
        }
        sumf += sumi as f32 * x.d.to_f32() * yb.d.to_f32() + x.m.to_f32() * yb.s.to_f32();
    }
    sumf
}

#[inline]
fn dot_avx2_dispatch(w: &[[u8; 20]], y: &[BlockQ8_1]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only called when AVX2 was detected at run time.
    unsafe {
        dot_avx2(w, y)
    }
    #[cfg(not(target_arch = "x86_64"))]
    dot_scalar(w, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(w: &[[u8; 20]], y: &[BlockQ8_1]) -> f32 {
    use std::arch::x86_64::*;
    let mask = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut sumf = 0f32;
    for (wb, yb) in w.iter().zip(y) {
        let q = _mm_loadu_si128(wb.as_ptr().add(4) as *const __m128i);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        let xv = _mm256_set_m128i(hi, lo);
        let yv = _mm256_loadu_si256(yb.qs.as_ptr() as *const __m256i);
        let p16 = _mm256_maddubs_epi16(xv, yv);
        let p32 = _mm256_madd_epi16(p16, ones);
        let s128 = _mm_add_epi32(_mm256_castsi256_si128(p32), _mm256_extracti128_si256(p32, 1));
        let s64 = _mm_add_epi32(s128, _mm_shuffle_epi32(s128, 0b01_00_11_10));
        let s32 = _mm_add_epi32(s64, _mm_shuffle_epi32(s64, 0b10_11_00_01));
        let sumi = _mm_cvtsi128_si32(s32);
        let d = half::f16::from_le_bytes([wb[0], wb[1]]).to_f32();
        let m = half::f16::from_le_bytes([wb[2], wb[3]]).to_f32();
        sumf += sumi as f32 * d * yb.d.to_f32() + m * yb.s.to_f32();
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn bit_identical_to_candle_and_between_paths() {
        let (n, k, m) = (70, 256, 5);
        let w = Tensor::from_vec(data(n * k, 1), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let mat = Q4_1Matrix::from_bytes(&q.data().unwrap(), n, k).unwrap();
        let x = data(m * k, 2);
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        let want = QMatMul::from_qtensor(q).unwrap().forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = mat.matmul(&x, m);
        assert_eq!(got, want);
        let nb = k / QK;
        let xq: Vec<BlockQ8_1> = x.chunks_exact(QK).map(quantize_q8_1).collect();
        for j in 0..n {
            for r in 0..m {
                let s = dot_scalar(mat.row(j), &xq[r * nb..(r + 1) * nb]);
                assert_eq!(s.to_bits(), dot_avx2_dispatch(mat.row(j), &xq[r * nb..(r + 1) * nb]).to_bits());
            }
        }
    }
}
