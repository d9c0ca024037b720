//! The interleaved Q4_1 kernel for CPUs with AVX2 but without AVX-512 VNNI (AMD Zen 2/3, older
//! Intel): the same layout and the same arithmetic as the VNNI kernel, 8 lanes at a time.
//!
//! AVX2 has no `vpdpbusd`; `vpmaddubsw` (u8 × s8, adjacent pairs summed to i16) is its
//! first half. A 32-byte half of a layout vector holds 4 bytes of each of 8 weight rows; with a
//! row's activation bytes broadcast, `vpmaddubsw` leaves each row's 4 products in 2 i16 lanes.
//! The 8 such results of a block (4 vectors × low/high nibbles) are summed in i16 — a lane
//! holds 16 products of a nibble (≤ 15) and an int8 activation (|q| ≤ 128), so |sum| ≤
//! 16 · 15 · 128 = 30 720 < 2^15 and neither `vpmaddubsw`'s saturation nor the sum can clip:
//! exact — and one `vpmaddwd` by ones folds the two i16 lanes into the row's i32 block dot. The float
//! step is candle's (`sumf += sumi as f32 * d * yd + m * s`, no FMA), so outputs are bit for bit
//! those of the VNNI kernel and of candle's scalar loop (tested).
//!
//! Registers: AVX2 has 16; a tile of up to 4 activation rows keeps one float and one integer
//! accumulator per row, the unpacked nibbles and the constants in them. The two 8-lane halves
//! of a group are done one after the other; the second finds the group's bytes in L1.

use super::{G, TILE_MAX, X16};
use crate::quant::q8_1::BlockQ8_1;

/// Most activation rows per tile (registers, module docs).
pub(super) const TILE_ROWS: usize = 4;

/// Whether this kernel can run here: AVX2, FMA and F16C (the set [`crate::simd::available`]
/// already detects, once).
pub fn has_avx2_x16() -> bool {
    crate::simd::available()
}

/// Group `g` against `R ≤ 4` activation rows into `out[..R]` (16 lanes each); with `prefetch`,
/// the next group's bytes are requested while the first half runs.
///
/// # Safety
/// AVX2, FMA and F16C must be available ([`has_avx2_x16`]); group `g` must exist in `x` and
/// every row of `ys` must hold at least `x.nb` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // rows index several register arrays at once
pub(super) unsafe fn tile<const R: usize>(x: &X16, g: usize, ys: &[&[BlockQ8_1]], out: &mut [[f32; G]; TILE_MAX], prefetch: bool) {
    use std::arch::x86_64::*;
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let nb = x.nb;
    let base = g * nb;
    for h in 0..2 {
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let gb = base + b;
            let qp = x.qs.as_ptr().add(gb * 256 + 32 * h);
            if prefetch && h == 0 {
                // The same block of the next group (a prefetch past the end is harmless).
                let ahead = x.qs.as_ptr().wrapping_add((gb + nb) * 256) as *const i8;
                for l in 0..4 {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * l));
                }
                if b % 2 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(x.d.as_ptr().wrapping_add((gb + nb) * G) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(x.m.as_ptr().wrapping_add((gb + nb) * G) as *const i8);
                }
            }
            let mut isum = [_mm256_setzero_si256(); R];
            for p in 0..4 {
                let q = _mm256_loadu_si256(qp.add(p * 64) as *const __m256i);
                let lo = _mm256_and_si256(q, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
                for r in 0..R {
                    let yq = ys.get_unchecked(r).get_unchecked(b).parts().0.as_ptr();
                    let ylo = _mm256_set1_epi32((yq.add(4 * p) as *const i32).read_unaligned());
                    let yhi = _mm256_set1_epi32((yq.add(16 + 4 * p) as *const i32).read_unaligned());
                    let two = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
                    isum[r] = _mm256_add_epi16(isum[r], two);
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().add(gb * G + 8 * h) as *const __m128i));
            let m = _mm256_cvtph_ps(_mm_loadu_si128(x.m.as_ptr().add(gb * G + 8 * h) as *const __m128i));
            for r in 0..R {
                let (_, yd, ys_) = ys.get_unchecked(r).get_unchecked(b).parts();
                let sumi = _mm256_madd_epi16(isum[r], ones);
                let t = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d), _mm256_set1_ps(yd));
                let u = _mm256_mul_ps(m, _mm256_set1_ps(ys_));
                acc[r] = _mm256_add_ps(acc[r], _mm256_add_ps(t, u));
            }
        }
        for r in 0..R {
            _mm256_storeu_ps(out[r].as_mut_ptr().add(8 * h), acc[r]);
        }
    }
}
