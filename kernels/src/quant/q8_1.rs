//! Q8_1 activation blocks (what Q4_1 weights multiply): candle's `quantize_row_q8_1`, in a
//! scalar form (the reference) and vector forms with its bits (AVX-512F 16 lanes, AVX2 8 lanes;
//! tested), and the extended rows of the f32 path.

use super::QK;

/// One Q8_1 block of activations: 32 int8 values with scale `d` and `s = sum(qs) * d`, both
/// rounded through f16 exactly as candle stores them, kept as f32.
///
/// Aligned to 32 bytes (64 per block): the kernels' 32-byte loads of `qs` then never straddle
/// a cache line (at the packed 40-byte stride most of them did).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct BlockQ8_1 {
    pub(super) qs: [i8; 32],
    pub(super) d: f32,
    pub(super) s: f32,
}

impl BlockQ8_1 {
    /// Quants, scale and `s`.
    pub(super) fn parts(&self) -> (&[i8; 32], f32, f32) {
        (&self.qs, self.d, self.s)
    }
}

/// candle's `quantize_row_q8_1` for one block: 16 lanes wide with AVX-512F, 8 with AVX2 (the
/// same bits as the scalar form, tested), else [`quantize_q8_1_scalar`].
pub(super) fn quantize_q8_1(xs: &[f32]) -> BlockQ8_1 {
    let mut b = BlockQ8_1 { qs: [0; 32], d: 0.0, s: 0.0 };
    #[cfg(target_arch = "x86_64")]
    if xs.len() >= 32 {
        // SAFETY: the extension each form needs was detected; `xs` holds at least 32 values.
        let done = unsafe {
            if crate::simd::available_512() {
                quantize_q8_1_avx512(xs, &mut b)
            } else if crate::simd::available() {
                quantize_q8_1_avx2(xs, &mut b)
            } else {
                false
            }
        };
        if done {
            return b;
        }
    }
    quantize_q8_1_scalar(xs)
}

/// The blocks of `x` (32 values each) as [`quantize_q8_1`] gives them, written in place into
/// `out` (as many as both hold). Every row of every matmul goes through this: the scalar form,
/// one call per block returning the block by value, was ~7 % of a 16-client server profile.
pub(super) fn quantize_q8_1_into(x: &[f32], out: &mut [BlockQ8_1]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::available_512() {
        // SAFETY: AVX-512F was detected.
        unsafe { quantize_all_avx512(x, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::available() {
        // SAFETY: AVX2, FMA and F16C were detected.
        unsafe { quantize_all_avx2(x, out) };
        return;
    }
    for (o, c) in out.iter_mut().zip(x.chunks_exact(QK)) {
        *o = quantize_q8_1_scalar(c);
    }
}

/// [`quantize_q8_1_into`]'s loop with the vector form inlined.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_all_avx512(x: &[f32], out: &mut [BlockQ8_1]) {
    for (o, c) in out.iter_mut().zip(x.chunks_exact(QK)) {
        if !quantize_q8_1_avx512(c, o) {
            *o = quantize_q8_1_scalar(c);
        }
    }
}

/// [`quantize_q8_1`] in two 16-lane vectors into `blk`; false (and `blk` untouched) for a
/// block with a NaN or an infinity, whose scalar `max`, `round` and `as i8` semantics the
/// vector instructions do not share (an infinity makes its product with `id = 0` a NaN).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_q8_1_avx512(xs: &[f32], blk: &mut BlockQ8_1) -> bool {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_loadu_ps(xs.as_ptr()), _mm512_loadu_ps(xs.as_ptr().add(16)));
    let inf = _mm512_set1_ps(f32::INFINITY);
    let (aa, ab) = (_mm512_abs_ps(a), _mm512_abs_ps(b));
    if _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(aa, inf) != 0 || _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(ab, inf) != 0 {
        return false;
    }
    // The maximum is exact in any order.
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(aa, ab));
    let d = amax / 127f32;
    let id = if d != 0f32 { 1. / d } else { 0. };
    let idv = _mm512_set1_ps(id);
    let half = _mm512_set1_ps(0.5);
    let sign = _mm512_set1_ps(-0.0);
    let one = _mm512_set1_ps(1.0);
    // `f32::round` (half away from zero): truncate, then step away from zero where the dropped
    // fraction is at least one half (`p - t` is exact for |p| <= 127).
    let round = |v: __m512| -> __m512i {
        let p = _mm512_mul_ps(v, idv);
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
        let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(p, t)), half);
        let step = _mm512_or_ps(one, _mm512_and_ps(p, sign));
        _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, step))
    };
    let (qa, qb) = (round(a), round(b));
    let d16 = half::f16::from_f32(d);
    _mm_storeu_si128(blk.qs.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(qa));
    _mm_storeu_si128(blk.qs.as_mut_ptr().add(16) as *mut __m128i, _mm512_cvtepi32_epi8(qb));
    let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    blk.d = d16.to_f32();
    blk.s = (half::f16::from_f32(sum as f32) * d16).to_f32();
    true
}

/// [`quantize_q8_1_into`]'s loop with the AVX2 form inlined.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_all_avx2(x: &[f32], out: &mut [BlockQ8_1]) {
    for (o, c) in out.iter_mut().zip(x.chunks_exact(QK)) {
        if !quantize_q8_1_avx2(c, o) {
            *o = quantize_q8_1_scalar(c);
        }
    }
}

/// [`quantize_q8_1_avx512`] in four 8-lane AVX2 vectors (the same bits; same fallback).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_1_avx2(xs: &[f32], blk: &mut BlockQ8_1) -> bool {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xs.as_ptr().add(8 * i)));
    let a: [__m256; 4] = std::array::from_fn(|i| _mm256_andnot_ps(sign, v[i]));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let bad = a.iter().fold(_mm256_setzero_ps(), |acc, &x| _mm256_or_ps(acc, _mm256_cmp_ps::<_CMP_NLT_UQ>(x, inf)));
    if _mm256_movemask_ps(bad) != 0 {
        return false;
    }
    // The maximum is exact in any order.
    let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    let d = amax / 127f32;
    let id = if d != 0f32 { 1. / d } else { 0. };
    let (idv, half, one) = (_mm256_set1_ps(id), _mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
    // `f32::round` (half away from zero), as in the AVX-512 form.
    let round = |x: __m256| -> __m256i {
        let p = _mm256_mul_ps(x, idv);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_andnot_ps(sign, _mm256_sub_ps(p, t)), half);
        let step = _mm256_and_ps(up, _mm256_or_ps(one, _mm256_and_ps(p, sign)));
        _mm256_cvttps_epi32(_mm256_add_ps(t, step))
    };
    let q: [__m256i; 4] = std::array::from_fn(|i| round(v[i]));
    // i32 → i8 in element order (the packs interleave 128-bit lanes; the permute undoes it).
    let lo = _mm256_packs_epi32(q[0], q[1]);
    let hi = _mm256_packs_epi32(q[2], q[3]);
    let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(lo, hi), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(blk.qs.as_mut_ptr() as *mut __m256i, bytes);
    let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let sum = _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)));
    let d16 = half::f16::from_f32(d);
    blk.d = d16.to_f32();
    blk.s = (half::f16::from_f32(sum as f32) * d16).to_f32();
    true
}

/// candle's `quantize_row_q8_1` for one block, as candle writes it.
pub(super) fn quantize_q8_1_scalar(xs: &[f32]) -> BlockQ8_1 {
    let mut amax = 0f32;
    for &x in xs {
        amax = amax.max(x.abs());
    }
    let d = amax / 127f32;
    let id = if d != 0f32 { 1. / d } else { 0. };
    let d16 = half::f16::from_f32(d);
    let mut b = BlockQ8_1 { d: d16.to_f32(), s: 0.0, qs: [0; 32] };
    let mut sum = 0i32;
    for j in 0..16 {
        b.qs[j] = f32::round(xs[j] * id) as i8;
        b.qs[j + 16] = f32::round(xs[j + 16] * id) as i8;
        sum += b.qs[j] as i32 + b.qs[j + 16] as i32;
    }
    // candle: `f16::from_f32(sum) * d` in f16 arithmetic.
    b.s = (half::f16::from_f32(sum as f32) * d16).to_f32();
    b
}

/// Activation rows `x [m, k]` as the f32 path multiplies them: each row's Q8_1 blocks as f32
/// (`q · d`, `k` values), then each block's `s` (`k / 32` values: the factor of the weights'
/// mins, f16-rounded as candle computes it), then zeros up to `kp` (see [`super::dense`]).
pub(super) fn q8_1_extended_rows(x: &[f32], m: usize, k: usize, kp: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * kp];
    for (row, o) in x.chunks_exact(k).take(m).zip(out.chunks_exact_mut(kp)) {
        let (vals, sums) = o.split_at_mut(k);
        for ((c, v), s) in row.chunks_exact(QK).zip(vals.chunks_exact_mut(QK)).zip(sums.iter_mut()) {
            let b = quantize_q8_1(c);
            for (v, &q) in v.iter_mut().zip(&b.qs) {
                *v = q as f32 * b.d;
            }
            *s = b.s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector quantization gives the scalar form's bits: random blocks at several scales,
    /// values that land on exact halves after scaling (both signs), zeros, negative zero, a
    /// single outlier, and huge and tiny magnitudes.
    #[test]
    fn vector_quantization_equals_scalar() {
        let mut blocks: Vec<Vec<f32>> = Vec::new();
        for (i, scale) in [1e-30f32, 1e-3, 1.0, 7.5, 1e3, 1e30].iter().enumerate() {
            for seed in 0..50u32 {
                blocks.push(super::super::test_data(32, seed * 7 + i as u32).iter().map(|v| v * scale).collect());
            }
        }
        // amax 127 → id 1: halves are exact.
        blocks.push((0..32).map(|j| if j == 0 { 127.0 } else { (j as f32 - 16.0) + 0.5 }).collect());
        blocks.push((0..32).map(|j| if j == 5 { -127.0 } else { -(j as f32) * 2.5 }).collect());
        blocks.push(vec![0.0; 32]);
        blocks.push((0..32).map(|j| if j % 2 == 0 { -0.0 } else { 0.0 }).collect());
        blocks.push((0..32).map(|j| if j == 31 { 1e6 } else { 1e-3 * j as f32 }).collect());
        let key = |b: &BlockQ8_1| (b.qs, b.d.to_bits(), b.s.to_bits());
        for (n, b) in blocks.iter().enumerate() {
            assert_eq!(key(&quantize_q8_1(b)), key(&quantize_q8_1_scalar(b)), "block {n}: {b:?}");
        }
        // All blocks at once (the matmuls' path), a NaN block and infinite blocks among them
        // (scalar fallback).
        let mut flat: Vec<f32> = blocks.concat();
        flat[40] = f32::NAN;
        flat[100] = f32::INFINITY;
        flat[170] = f32::NEG_INFINITY;
        let mut all = vec![quantize_q8_1_scalar(&[0.0; 32]); flat.len() / QK];
        quantize_q8_1_into(&flat, &mut all);
        assert_eq!(all.len(), blocks.len());
        for (n, (a, c)) in all.iter().zip(flat.chunks_exact(QK)).enumerate() {
            assert_eq!(key(a), key(&quantize_q8_1_scalar(c)), "block {n} of all");
        }
        // Both vector forms where the CPU has them, block by block.
        #[cfg(target_arch = "x86_64")]
        for (n, b) in blocks.iter().enumerate() {
            let mut v = quantize_q8_1_scalar(&[0.0; 32]);
            // SAFETY: each form runs only where its extension was detected.
            if crate::simd::available() && unsafe { quantize_q8_1_avx2(b, &mut v) } {
                assert_eq!(key(&v), key(&quantize_q8_1_scalar(b)), "AVX2, block {n}");
            }
            if crate::simd::available_512() && unsafe { quantize_q8_1_avx512(b, &mut v) } {
                assert_eq!(key(&v), key(&quantize_q8_1_scalar(b)), "AVX-512, block {n}");
            }
        }
        if !crate::simd::available_512() {
            eprintln!("AVX-512F missing: its form did not run");
        }
    }
}
