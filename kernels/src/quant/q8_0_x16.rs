//! Q8_0 weights interleaved 16 rows at a time (the LM head), multiplied with Q8_0 activations by
//! an AVX-512 VNNI kernel, with the arithmetic of ggml's generic `vec_dot_q8_0_q8_0` (candle's
//! `vec_dot_unopt`, this crate's scalar reference) bit for bit.
//!
//! Per block, the integer dot of the 32 values is exact, and the float step is the generic
//! loop's `sumf += sumi as f32 * (d_w * d_x)` (no fused multiply-add), so every output is the
//! scalar reference's whatever the tile or the batch (tested). Lane `j` of a vector is weight
//! row `16g + j`; one `vpdpbusd` does 4 multiply-adds for 16 rows, 8 of them a block. (An
//! earlier form reproduced candle's AVX2 arithmetic instead, a float conversion and FMA per
//! 4-value chunk, 8 per block: on a 2-core Zen 4 VM the LM head at 16 rows, ~15 % of a decode
//! step, spent most of its time in those.)
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so weights are stored as `q + 128` (u8) and
//! each block's integer sum starts from `-128 · Σ y` of the activations' 32 values
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

    /// The address ranges of the data.
    pub(super) fn buffers(&self) -> [(usize, usize); 2] {
        use crate::mem::range_of;
        [range_of(&self.qs), range_of(&self.d)]
    }

    /// Row `j`'s block `b`: quants and scale.
    pub(super) fn block(&self, j: usize, b: usize) -> ([i8; 32], f32) {
        let gb = (j / G) * self.nb + b;
        let lane = j % G;
        let q = std::array::from_fn(|i| (self.qs[gb * 512 + (i / 4) * 64 + lane * 4 + i % 4] ^ 0x80) as i8);
        (q, half::f16::from_bits(self.d[gb * G + lane]).to_f32())
    }

    /// Weight rows `j0..j1` against every row of `rows` into `part` (`[rows.len(), j1 - j0]`)
    /// with the VNNI kernel where the CPU has it ([`super::has_vnni512`]), else the AVX2 one
    /// ([`super::has_avx2_x16`]; the same bits). Returns false (nothing written) when neither
    /// runs here or the rows are too short for the matrix, for the caller's scalar path.
    pub(super) fn panel(&self, j0: usize, j1: usize, rows: &[&[BlockQ8_0]], part: &mut super::PanelOut) -> bool {
        self.panel_with(super::has_vnni512(), j0, j1, rows, part)
    }

    /// [`Self::panel`] with the VNNI kernel (`vnni`, where the CPU has it) or the AVX2 one.
    fn panel_with(&self, vnni: bool, j0: usize, j1: usize, rows: &[&[BlockQ8_0]], part: &mut super::PanelOut) -> bool {
        if rows.iter().any(|y| y.len() < self.nb) || cfg!(not(target_arch = "x86_64")) {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if vnni && super::has_vnni512() {
                super::q4_1_x16::group_tiles(j0, j1, rows.len(), 4, part, |g, r, t, out| {
                    // SAFETY: AVX-512F/BW and VNNI were detected; group `g` exists (`j1 <= n`)
                    // and every row holds at least `nb` blocks (checked above).
                    unsafe {
                        match t {
                            4 => tile::<4>(self, g, &rows[r..r + 4], out),
                            3 => tile::<3>(self, g, &rows[r..r + 3], out),
                            2 => tile::<2>(self, g, &rows[r..r + 2], out),
                            _ => tile::<1>(self, g, &rows[r..r + 1], out),
                        }
                    }
                });
                return true;
            }
            if super::has_avx2_x16() {
                super::q4_1_x16::group_tiles(j0, j1, rows.len(), super::q4_1_x16::TILE_MAX, part, |g, r, t, out| {
                    // SAFETY: AVX2 and F16C were detected; group and rows as above.
                    unsafe {
                        match t {
                            8 => tile_avx2::<8>(self, g, &rows[r..r + 8], out),
                            7 => tile_avx2::<7>(self, g, &rows[r..r + 7], out),
                            6 => tile_avx2::<6>(self, g, &rows[r..r + 6], out),
                            5 => tile_avx2::<5>(self, g, &rows[r..r + 5], out),
                            4 => tile_avx2::<4>(self, g, &rows[r..r + 4], out),
                            3 => tile_avx2::<3>(self, g, &rows[r..r + 3], out),
                            2 => tile_avx2::<2>(self, g, &rows[r..r + 2], out),
                            _ => tile_avx2::<1>(self, g, &rows[r..r + 1], out),
                        }
                    }
                });
                return true;
            }
        }
        false
    }
}

/// Group `g` against `R` activation rows (module docs for the arithmetic): per block, each of
/// the 8 weight vectors is loaded once for the `R` rows; two integer chains per row (even and
/// odd chunks) so that consecutive `vpdpbusd` do not wait on each other.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)] // rows and chunks index several register arrays at once
unsafe fn tile<const R: usize>(x: &X16, g: usize, ys: &[&[BlockQ8_0]], out: &mut [[f32; G]; super::q4_1_x16::TILE_MAX]) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); R];
    let base = g * x.nb;
    for b in 0..x.nb {
        let gb = base + b;
        let qp = x.qs.as_ptr().add(gb * 512);
        let mut isum = [[_mm512_setzero_si512(); 2]; R];
        for r in 0..R {
            isum[r][0] = _mm512_set1_epi32(ys.get_unchecked(r).get_unchecked(b).bias());
        }
        for c in 0..8 {
            let wv = _mm512_loadu_si512(qp.add(c * 64) as *const _);
            for r in 0..R {
                let yq = ys.get_unchecked(r).get_unchecked(b).qs().as_ptr();
                let yv = _mm512_set1_epi32((yq.add(4 * c) as *const i32).read_unaligned());
                isum[r][c & 1] = _mm512_dpbusd_epi32(isum[r][c & 1], wv, yv);
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(x.d.as_ptr().add(gb * G) as *const __m256i));
        for r in 0..R {
            let sumi = _mm512_add_epi32(isum[r][0], isum[r][1]);
            let scale = _mm512_mul_ps(d, _mm512_set1_ps(ys.get_unchecked(r).get_unchecked(b).d()));
            acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(_mm512_cvtepi32_ps(sumi), scale));
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
}

/// [`tile`] for CPUs with AVX2 but not VNNI-512, with the same bits: the group's two 8-lane
/// halves side by side (a row's 4 activation bytes broadcast once for both), up to 8 rows per
/// tile. `vpmaddubsw` needs its unsigned operand, so each weight vector is taken back to signed
/// (`^ 0x80`), its absolute values multiply the activations carrying the weights' signs
/// (`vpsignb`, as ggml's AVX2 loop does), and each pair sum (|·| ≤ 2 · 128 · 127 < 2^15: exact)
/// is widened by `vpmaddwd` into the row's i32 sum. The float step is the same as [`tile`]'s.
/// (Halves one after the other, 4 rows per tile, took 7 % longer at one row, 16 % at 4 and 5 %
/// at 16 on a Zen 3 VM: `matmul_many` on the default model's head, the two alternating.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::needless_range_loop)] // rows index several register arrays at once
unsafe fn tile_avx2<const R: usize>(x: &X16, g: usize, ys: &[&[BlockQ8_0]], out: &mut [[f32; G]; super::q4_1_x16::TILE_MAX]) {
    use std::arch::x86_64::*;
    let (ones, flip) = (_mm256_set1_epi16(1), _mm256_set1_epi8(-128));
    let base = g * x.nb;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..x.nb {
        let gb = base + b;
        let qp = x.qs.as_ptr().add(gb * 512);
        let mut isum = [[_mm256_setzero_si256(); 2]; R];
        for c in 0..8 {
            let w0 = _mm256_xor_si256(_mm256_loadu_si256(qp.add(c * 64) as *const __m256i), flip);
            let w1 = _mm256_xor_si256(_mm256_loadu_si256(qp.add(c * 64 + 32) as *const __m256i), flip);
            let (a0, a1) = (_mm256_abs_epi8(w0), _mm256_abs_epi8(w1));
            for r in 0..R {
                let yq = ys.get_unchecked(r).get_unchecked(b).qs().as_ptr();
                let y = _mm256_set1_epi32((yq.add(4 * c) as *const i32).read_unaligned());
                isum[r][0] = _mm256_add_epi32(isum[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(y, w0)), ones));
                isum[r][1] = _mm256_add_epi32(isum[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(y, w1)), ones));
            }
        }
        for h in 0..2 {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().add(gb * G + 8 * h) as *const __m128i));
            for r in 0..R {
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(ys.get_unchecked(r).get_unchecked(b).d()));
                acc[r][h] = _mm256_add_ps(acc[r][h], _mm256_mul_ps(_mm256_cvtepi32_ps(isum[r][h]), scale));
            }
        }
    }
    for r in 0..R {
        for h in 0..2 {
            _mm256_storeu_ps(out[r].as_mut_ptr().add(8 * h), acc[r][h]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data as data;
    use super::super::QK;
    use super::super::{has_vnni512, Q8_0Matrix, QuantMatrix};
    use super::BlockQ8_0;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// Interleaved weights: the VNNI and AVX2 kernels (those this CPU can run) and the
    /// interleaved scalar path equal the row layout's scalar reference (ggml's generic loop)
    /// bit for bit, for every tile size (1-8 rows; VNNI 1-4), remainders and a padded last group,
    /// and candle's Q8_0 matmul within float rounding; dequantized rows are unchanged.
    #[test]
    fn interleaved_equals_row_layout_bitwise() {
        let (n, k) = (37, 192);
        let w = Tensor::from_vec(data(n * k, 5), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let rows = Q8_0Matrix::from_bytes(&q.data().unwrap(), n, k).unwrap();
        let inter = rows.clone().into_x16();
        let qm = QMatMul::from_qtensor(q).unwrap();
        let Some(x16) = &inter.x16 else { panic!("not interleaved") };
        let mut kernels = vec![];
        if has_vnni512() {
            kernels.push(true);
        } else {
            eprintln!("VNNI kernel not compared: this CPU cannot run it");
        }
        if super::super::has_avx2_x16() {
            kernels.push(false);
        } else {
            eprintln!("AVX2 kernel not compared: this CPU cannot run it");
        }
        for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 17] {
            let x = data(m * k, 6 + m as u32);
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let want = rows.matmul(&x, m, false);
            assert_eq!(bits(inter.matmul(&x, m, false)), bits(want.clone()), "scalar, m = {m}");
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let candle = qm.forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let xq: Vec<BlockQ8_0> = x.chunks_exact(QK).map(Q8_0Matrix::quantize).collect();
            let act: Vec<&[BlockQ8_0]> = xq.chunks_exact(k / QK).collect();
            for &vnni in &kernels {
                let mut fast = vec![0f32; m * n];
                assert!(x16.panel_with(vnni, 0, n, &act, &mut super::super::PanelOut::new(&mut fast, m, n)));
                assert_eq!(bits(fast.clone()), bits(want.clone()), "kernel (vnni {vnni}), m = {m}");
                for (i, (a, b)) in fast.iter().zip(&candle).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "kernel vs candle, m = {m}, output {i}: {a} vs {b}");
                }
            }
            if !kernels.is_empty() {
                assert_eq!(bits(inter.matmul(&x, m, true)), bits(want), "matmul's kernel, m = {m}");
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

    /// Weights at the ends of int8 (-128, 127) against full-scale activations of both signs:
    /// every kernel's integer sums stay exact (the AVX2 kernel's i16 pair sums do not clip).
    #[test]
    fn extreme_blocks_are_exact_in_every_kernel() {
        let (n, k, m) = (16, 64, 2);
        let mut bytes = Vec::new();
        for j in 0..n * k / QK {
            bytes.extend(half::f16::from_f32(0.01).to_le_bytes());
            bytes.extend((0..32).map(|i| if (i + j) % 3 == 0 { 127u8 } else { 0x80 }));
        }
        let rows = Q8_0Matrix::from_bytes(&bytes, n, k).unwrap();
        let inter = rows.clone().into_x16();
        let Some(x16) = &inter.x16 else { panic!("not interleaved") };
        let x: Vec<f32> = (0..m * k)
            .map(|i| {
                if i < k {
                    -1.0
                } else if i % 2 == 0 {
                    2.0
                } else {
                    -2.0
                }
            })
            .collect();
        let xq: Vec<BlockQ8_0> = x.chunks_exact(QK).map(Q8_0Matrix::quantize).collect();
        assert!(xq[0].qs().iter().all(|&q| q == -127), "full-scale activations");
        let act: Vec<&[BlockQ8_0]> = xq.chunks_exact(k / QK).collect();
        let want: Vec<u32> = rows.matmul(&x, m, false).into_iter().map(f32::to_bits).collect();
        for vnni in [true, false] {
            if (vnni && !has_vnni512()) || (!vnni && !super::super::has_avx2_x16()) {
                continue;
            }
            let mut got = vec![0f32; m * n];
            assert!(x16.panel_with(vnni, 0, n, &act, &mut super::super::PanelOut::new(&mut got, m, n)));
            assert_eq!(got.into_iter().map(f32::to_bits).collect::<Vec<_>>(), want, "vnni {vnni}");
        }
    }
}
