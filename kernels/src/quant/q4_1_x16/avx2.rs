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
//! Both 8-lane halves of a group go through a block together: each of a row's activation
//! broadcasts serves the two, and the group's bytes stream by once, in address order. A tile
//! takes up to 8 activation rows (the unpacking of a block's nibbles shared by all of them);
//! their accumulators do not all fit AVX2's 16 registers and some live on the stack, which
//! costs less than the shared work saves. Measured against the earlier form (halves one after the
//! other, 4 rows per tile), both in one process alternating sweep by sweep over 30 layers of
//! the default model's Q4_1 projections (weights from memory) on a 2-core Zen 3 VM: 11-15 %
//! less time at one row, 4-7 % at 4, 4-15 % at 16, 1-10 % at 256; in cache (one group) ~24
//! multiply-adds per cycle before, ~28 with both halves at 4 rows, ~30 at 8.

use super::{G, TILE_MAX, X16};
use crate::quant::q8_1::BlockQ8_1;

/// Most activation rows per tile (module docs).
pub(super) const TILE_ROWS: usize = 8;

/// Whether this kernel can run here: AVX2, FMA and F16C (the set [`crate::simd::available`]
/// already detects, once).
pub fn has_avx2_x16() -> bool {
    crate::simd::available()
}

/// Group `g` against `R ≤ 8` activation rows into `out[..R]` (16 lanes each); with `prefetch`,
/// the next group's bytes are requested as the blocks go by.
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
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..nb {
        let gb = base + b;
        let qp = x.qs.as_ptr().add(gb * 256);
        if prefetch {
            super::prefetch_next_group(x, gb, b);
        }
        // Both 8-lane halves of the group at once: a row's activation bytes are broadcast
        // once for the two.
        let mut isum = [[_mm256_setzero_si256(); 2]; R];
        for p in 0..4 {
            let q0 = _mm256_loadu_si256(qp.add(p * 64) as *const __m256i);
            let q1 = _mm256_loadu_si256(qp.add(p * 64 + 32) as *const __m256i);
            let (lo0, hi0) = (_mm256_and_si256(q0, mask), _mm256_and_si256(_mm256_srli_epi16::<4>(q0), mask));
            let (lo1, hi1) = (_mm256_and_si256(q1, mask), _mm256_and_si256(_mm256_srli_epi16::<4>(q1), mask));
            for r in 0..R {
                let yq = ys.get_unchecked(r).get_unchecked(b).parts().0.as_ptr();
                let ylo = _mm256_set1_epi32((yq.add(4 * p) as *const i32).read_unaligned());
                let yhi = _mm256_set1_epi32((yq.add(16 + 4 * p) as *const i32).read_unaligned());
                isum[r][0] = _mm256_add_epi16(isum[r][0], _mm256_add_epi16(_mm256_maddubs_epi16(lo0, ylo), _mm256_maddubs_epi16(hi0, yhi)));
                isum[r][1] = _mm256_add_epi16(isum[r][1], _mm256_add_epi16(_mm256_maddubs_epi16(lo1, ylo), _mm256_maddubs_epi16(hi1, yhi)));
            }
        }
        for h in 0..2 {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().add(gb * G + 8 * h) as *const __m128i));
            let m = _mm256_cvtph_ps(_mm_loadu_si128(x.m.as_ptr().add(gb * G + 8 * h) as *const __m128i));
            for r in 0..R {
                let (_, yd, ys_) = ys.get_unchecked(r).get_unchecked(b).parts();
                let sumi = _mm256_madd_epi16(isum[r][h], ones);
                let t = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d), _mm256_set1_ps(yd));
                let u = _mm256_mul_ps(m, _mm256_set1_ps(ys_));
                acc[r][h] = _mm256_add_ps(acc[r][h], _mm256_add_ps(t, u));
            }
        }
    }
    for r in 0..R {
        for h in 0..2 {
            _mm256_storeu_ps(out[r].as_mut_ptr().add(8 * h), acc[r][h]);
        }
    }
}
