//! Q8_0 weights interleaved 16 rows at a time (the LM head), multiplied with Q8_0 activations by
//! an AVX-512 VNNI kernel, with candle's AVX2 arithmetic bit for bit.
//!
//! candle's AVX2 `vec_dot_q8_0_q8_0` (and our row-layout tile, [`super::q8_0`]) keeps 8 float
//! lanes per output: lane `c` accumulates, block by block with FMA, the block scale times the
//! integer dot of elements `4c..4c+4`; the 8 lanes are summed at the end in `hsum8`'s order
//! ((0+4)+(2+6)) + ((1+5)+(3+7)). Here lane `j` of a vector is weight row `16g + j`, and the
//! 8 "lanes" of the AVX2 scheme become 8 accumulator vectors, so each output is computed with
//! exactly that arithmetic while one `vpdpbusd` does 4 multiply-adds for 16 rows.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so weights are stored as `q + 128` (u8) and
//! each chunk's integer sum starts from `-128 · Σ y` of the activations' 4 values
//! ([`BlockQ8_0::bias`]): the integer dot stays exact.
//!
//! Layout of group `g` (weight rows `16g..16g+16`, the last padded with zero rows), block `b`:
//! 8 vectors of 64 bytes, lane `j` of vector `c` holding row `16g + j`'s bytes `4c..4c+4` (+128),
//! then the 16 rows' f16 scales.

use super::q8_0::BlockQ8_0;

/// Weight rows per group.
const G: usize = 16;

/// A Q8_0 matrix in the interleaved layout (module docs).
#[derive(Debug, Clone)]
pub(super) struct X16 {
    /// `[groups, k / 32, 512]` bytes, quants + 128.
    qs: Vec<u8>,
    /// `[groups, k / 32, 16]` f16 bits of the scales.
    d: Vec<u16>,
    /// Blocks per row.
    nb: usize,
}

impl X16 {
    /// From row-layout blocks (`qs[j * nb + b]`, f32 scales that are f16 values).
    pub(super) fn pack(qs: &[[i8; 32]], d: &[f32], n: usize, nb: usize) -> Self {
        let groups = n.div_ceil(G);
        let mut x = X16 { qs: vec![128; groups * nb * 512], d: vec![0; groups * nb * G], nb };
        for j in 0..n {
            let (g, lane) = (j / G, j % G);
            for b in 0..nb {
                let (src, gb) = (j * nb + b, g * nb + b);
                for (i, &q) in qs[src].iter().enumerate() {
                    x.qs[gb * 512 + (i / 4) * 64 + lane * 4 + i % 4] = (q as u8) ^ 0x80;
                }
                x.d[gb * G + lane] = half::f16::from_f32(d[src]).to_bits();
            }
        }
        x
    }

    /// Row `j`'s block `b`: quants and scale.
    pub(super) fn block(&self, j: usize, b: usize) -> ([i8; 32], f32) {
        let gb = (j / G) * self.nb + b;
        let lane = j % G;
        let q = std::array::from_fn(|i| (self.qs[gb * 512 + (i / 4) * 64 + lane * 4 + i % 4] ^ 0x80) as i8);
        (q, half::f16::from_bits(self.d[gb * G + lane]).to_f32())
    }

    /// Weight rows `j0..j1` against every row of `rows` into `part` (`[rows.len(), j1 - j0]`)
    /// with the VNNI kernel (callers check [`super::has_vnni512`]). Returns false (nothing
    /// written) when the rows are too short for the matrix, for the caller's scalar path.
    pub(super) fn panel(&self, j0: usize, j1: usize, rows: &[&[BlockQ8_0]], part: &mut super::PanelOut) -> bool {
        if rows.iter().any(|y| y.len() < self.nb) || cfg!(not(target_arch = "x86_64")) {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            super::q4_1_x16::group_tiles(j0, j1, rows.len(), 2, part, |g, r, t, out| {
                // SAFETY: AVX-512F/BW and VNNI were detected by the caller; group `g` exists
                // (`j1 <= n`) and every row holds at least `nb` blocks (checked above).
                unsafe {
                    if t == 2 {
                        tile::<2>(self, g, &rows[r..r + 2], out)
                    } else {
                        tile::<1>(self, g, &rows[r..r + 1], out)
                    }
                }
            });
        }
        true
    }
}

/// Group `g` against `R` activation rows (module docs for the arithmetic).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)] // rows and chunks index several register arrays at once
unsafe fn tile<const R: usize>(x: &X16, g: usize, ys: &[&[BlockQ8_0]], out: &mut [[f32; G]; 4]) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 8]; R];
    let base = g * x.nb;
    for b in 0..x.nb {
        let gb = base + b;
        let qp = x.qs.as_ptr().add(gb * 512);
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(x.d.as_ptr().add(gb * G) as *const __m256i));
        let mut scale = [_mm512_setzero_ps(); R];
        for r in 0..R {
            scale[r] = _mm512_mul_ps(d, _mm512_set1_ps(ys.get_unchecked(r).get_unchecked(b).d()));
        }
        for c in 0..8 {
            let wv = _mm512_loadu_si512(qp.add(c * 64) as *const _);
            for r in 0..R {
                let yb = ys.get_unchecked(r).get_unchecked(b);
                let yv = _mm512_set1_epi32((yb.qs().as_ptr().add(4 * c) as *const i32).read_unaligned());
                let sumi = _mm512_dpbusd_epi32(_mm512_set1_epi32(*yb.bias().get_unchecked(c)), wv, yv);
                acc[r][c] = _mm512_fmadd_ps(scale[r], _mm512_cvtepi32_ps(sumi), acc[r][c]);
            }
        }
    }
    for r in 0..R {
        let a = &acc[r];
        let s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6])), _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7])));
        _mm512_storeu_ps(out[r].as_mut_ptr(), s);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data as data;
    use super::super::QK;
    use super::super::{has_vnni512, Q8_0Matrix};
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// Interleaved weights: the VNNI kernel equals the row-layout AVX2 tile (candle's AVX2
    /// arithmetic) bit for bit and the scalar path the row layout's scalar reference, for odd
    /// row counts and a padded last group; dequantized rows are unchanged.
    #[test]
    fn interleaved_equals_row_layout_bitwise() {
        let (n, k) = (37, 192);
        let w = Tensor::from_vec(data(n * k, 5), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let rows = Q8_0Matrix::from_bytes(&q.data().unwrap(), n, k).unwrap();
        let inter = rows.clone().into_x16();
        let qm = QMatMul::from_qtensor(q).unwrap();
        for m in [1, 2, 3, 6] {
            let x = data(m * k, 6 + m as u32);
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(bits(inter.matmul(&x, m, false)), bits(rows.matmul(&x, m, false)), "scalar, m = {m}");
            if has_vnni512() && super::super::has_avx2_fma() {
                let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
                let candle = qm.forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(bits(inter.matmul(&x, m, true)), bits(rows.matmul(&x, m, true)), "kernel, m = {m}");
                assert_eq!(bits(inter.matmul(&x, m, true)), bits(candle), "kernel vs candle, m = {m}");
            } else {
                eprintln!("VNNI kernel not compared: this CPU cannot run it");
            }
        }
        let (mut a, mut b) = (vec![], vec![]);
        for j in 0..n {
            rows.dequantize_row(j, &mut a);
            inter.dequantize_row(j, &mut b);
        }
        assert_eq!(a, b);
        assert_eq!(a.len(), n * k);
        assert_eq!(k % QK, 0);
    }
}
