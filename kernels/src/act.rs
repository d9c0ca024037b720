//! Elementwise kernels: softmax numerators (`exp`) and `silu(g) * u` (the SwiGLU MLP).
//!
//! With AVX2 + FMA (checked at run time) both use an 8-wide `exp`: range reduction by `ln 2` (split
//! in two constants) and a degree-6 polynomial on `[-ln2/2, ln2/2]` (the Cephes `expf`
//! coefficients), then the power of two added into the exponent bits. Relative error within
//! 2e-7 of the true value (tested against f64 below); inputs below -87.3 give 0, NaN stays NaN.
//! Without AVX2 they use `f32::exp` (the platform's libm).
//!
//! Every element goes through the same vector instructions whatever its position (tails are
//! padded to a full vector), so a row's results never depend on how rows are batched.

/// The softmax numerators in place, `x[i] = exp(x[i] - max(x))`, and their sum. With AVX2 the
/// maximum, the exponentials and the sum run 8 wide (the sum in 8 lanes, reduced in a fixed
/// order: the result depends only on the values, never on the caller's batch); otherwise scalar,
/// summed in index order. An empty slice gives 0.
pub fn softmax_numerators(x: &mut [f32]) -> f32 {
    if crate::simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe { vsoftmax_numerators(x) }
    } else {
        let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        x.iter_mut().for_each(|v| *v = (*v - max).exp());
        x.iter().sum()
    }
}

/// `log Σ exp(x[i])` of a row (a vocabulary's logits), without writing it: the maximum, then
/// `exp(x[i] - max)` as [`softmax_numerators`] computes it, summed in f64. With AVX2 the
/// exponentials run 8 wide and are summed in 8 f64 lanes reduced in a fixed order (a row's result
/// depends only on its values, never on the batch); otherwise `f32::exp` summed in index order.
/// An empty row or one of `-inf` only gives `-inf`; one with `+inf` or NaN gives NaN.
pub fn logsumexp(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        if let Some(v) = unsafe { vlogsumexp(x) } {
            return v;
        }
    }
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // Empty, or every term exp(-inf) = 0.
        return max;
    }
    if !max.is_finite() {
        let sum: f64 = x.iter().map(|&l| ((l - max) as f64).exp()).sum();
        return max + sum.ln() as f32;
    }
    let sum: f64 = x.iter().map(|&l| (l - max).exp() as f64).sum();
    max + sum.ln() as f32
}

/// `silu(g) * u` elementwise (`silu(x) = x / (1 + exp(-x))`), in parallel chunks on the current
/// kernel pool ([`crate::pool`]). `g` and `u` must have the same length.
pub fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    /// Elements per parallel task (a multiple of 8, so that chunking never changes which
    /// elements share a vector).
    const CHUNK: usize = 4096;
    let n = g.len().min(u.len());
    let (g, u) = (&g[..n], &u[..n]);
    let simd = crate::simd::available();
    let chunk = |c: usize, o: &mut [std::mem::MaybeUninit<f32>]| {
        let (g, u) = (&g[c * CHUNK..(c * CHUNK + CHUNK).min(n)], &u[c * CHUNK..(c * CHUNK + CHUNK).min(n)]);
        if simd {
            // SAFETY: AVX2 and FMA were detected at run time; `o`, `g` and `u` have the same
            // length.
            unsafe { vsilu_mul(o, g, u) }
        } else {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                o.write(g / (1.0 + (-g).exp()) * u);
            }
        }
    };
    // SAFETY: chunk `c` has as many elements as `g` and `u` have from `c * CHUNK` on (both
    // cut to `n`), and both paths write every one.
    unsafe { crate::pool::collect_chunks(n, CHUNK, chunk) }
}

/// RMS norm of every row of `x` (`[rows, w.len()]`) times `w`, with candle's arithmetic for f32
/// (`candle_nn::ops::rms_norm`: the squares summed in index order in f32, `m = sqrt(sum / n +
/// eps)`, then `x / m * w` per element), so the bits are candle's; rows in parallel on the
/// kernel pool. candle's own runs on rayon from 33 rows, beside the pool's spinning helper.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    /// Rows per parallel task.
    const ROWS: usize = 8;
    let n = w.len();
    let len = x.len().checked_div(n).unwrap_or(0) * n;
    // SAFETY: chunks are whole rows of `n` (`len` is a multiple of `n`), and `norm_rows` writes
    // every element of its row.
    unsafe { crate::pool::collect_chunks(len, n * ROWS, |c, o| norm_rows(&x[c * ROWS * n..c * ROWS * n + o.len()], w, eps, o)) }
}

/// One row of [`rms_norm`]: candle's arithmetic (the reference for [`norm_rows`]).
/// Writes every element of `dst` (`src`, `w` and `dst` have the same length).
#[cfg(test)]
fn norm_row(src: &[f32], w: &[f32], eps: f32, dst: &mut [std::mem::MaybeUninit<f32>]) {
    let sum2: f32 = src.iter().map(|&v| v * v).sum();
    scale_row(src, w, (sum2 / src.len() as f32 + eps).sqrt(), dst);
}

/// `dst = src / m * w` elementwise (writes every element of `dst`).
#[inline]
fn scale_row(src: &[f32], w: &[f32], m: f32, dst: &mut [std::mem::MaybeUninit<f32>]) {
    for ((d, &s), &a) in dst.iter_mut().zip(src).zip(w) {
        d.write(s / m * a);
    }
}

/// [`norm_row`] of every row of `src` (rows of `w.len()`, as many as `dst` holds), with the
/// same bits: each row's squares are still summed one after another in index order, but four
/// rows' sums advance together, so four addition chains overlap instead of one row's 576
/// dependent additions (~4 cycles each) running alone. Writes every element of `dst`.
fn norm_rows(src: &[f32], w: &[f32], eps: f32, dst: &mut [std::mem::MaybeUninit<f32>]) {
    /// Rows whose sums advance together.
    const R: usize = 4;
    let n = w.len();
    if n == 0 {
        return;
    }
    let rows = dst.len() / n;
    let mut r0 = 0;
    while r0 < rows {
        let k = (rows - r0).min(R);
        let mut sums = [0f32; R];
        let block = &src[r0 * n..(r0 + k) * n];
        if k == R {
            for e in 0..n {
                for (t, s) in sums.iter_mut().enumerate() {
                    let v = block[t * n + e];
                    *s += v * v;
                }
            }
        } else {
            for (t, s) in sums.iter_mut().enumerate().take(k) {
                *s = block[t * n..(t + 1) * n].iter().map(|&v| v * v).sum();
            }
        }
        for (t, &sum2) in sums.iter().enumerate().take(k) {
            let m = (sum2 / n as f32 + eps).sqrt();
            let r = r0 + t;
            scale_row(&src[r * n..(r + 1) * n], w, m, &mut dst[r * n..(r + 1) * n]);
        }
        r0 += k;
    }
}

/// The residual connection and the next norm in one parallel loop over rows: `s = a + b` and
/// [`rms_norm`]`(s, w, eps)`, with the bits of [`add`] then [`rms_norm`] (tested). `a` and `b`
/// have the same length, a multiple of `w.len()`. Returns `(s, norm)`. One loop instead of two
/// (at 16 rows the add ran on one thread: a single chunk), twice per layer.
pub fn add_rms_norm(a: &[f32], b: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    /// Rows per parallel task.
    const ROWS: usize = 8;
    let n = w.len();
    let len = a.len().min(b.len()).checked_div(n).unwrap_or(0) * n;
    // Neither output is zero-filled first (see `pool::collect_chunks`): the chunks of both
    // cover `0..len` once, and each task writes every element of both of its chunks.
    let (mut sum, mut out) = (Vec::<f32>::with_capacity(len), Vec::<f32>::with_capacity(len));
    let size = (n * ROWS).max(1);
    crate::pool::poison(&mut sum.spare_capacity_mut()[..len]);
    crate::pool::poison(&mut out.spare_capacity_mut()[..len]);
    let mut chunks: Vec<_> = sum.spare_capacity_mut()[..len].chunks_mut(size).zip(out.spare_capacity_mut()[..len].chunks_mut(size)).collect();
    crate::pool::for_each_mut(&mut chunks, |c, (s, o)| {
        let base = c * size;
        for (i, d) in s.iter_mut().enumerate() {
            d.write(a[base + i] + b[base + i]);
        }
        // SAFETY: every element of `s` was written just above.
        let s: &[f32] = unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) };
        norm_rows(s, w, eps, o);
    });
    drop(chunks);
    // SAFETY: every element of both was written by the loop (above); `len <= capacity`.
    unsafe {
        sum.set_len(len);
        out.set_len(len);
    }
    (sum, out)
}

/// `a + b` elementwise (the residual connections), in parallel chunks on the kernel pool.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    /// Elements per parallel task.
    const CHUNK: usize = 16384;
    let n = a.len().min(b.len());
    // SAFETY: `a` and `b` hold at least `n` elements, so the zip covers every element of the
    // chunk.
    unsafe {
        crate::pool::collect_chunks(n, CHUNK, |c, o| {
            for ((d, &x), &y) in o.iter_mut().zip(&a[c * CHUNK..]).zip(&b[c * CHUNK..]) {
                d.write(x + y);
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// 8-wide `exp` (see the module docs).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn vexp(x: __m256) -> __m256 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1];
    let nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    let under = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3), _CMP_LT_OQ);
    let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3)), _mm256_set1_ps(88.7));
    let n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(P[0]);
    for &c in &P[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    // y * 2^n with n in [-126, 128]: two powers of two built in the exponent field, 2^(n/2) and
    // 2^(n - n/2), so that n = 128 (inputs near 88.7) does not overflow the field.
    let ni = _mm256_cvtps_epi32(n);
    let half = _mm256_srai_epi32(ni, 1);
    let p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
    let p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
    let out = _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
    let out = _mm256_andnot_ps(under, out);
    _mm256_blendv_ps(out, x, nan)
}

/// [`vexp`] over a slice; the tail goes through a padded vector (tests of `vexp` over its range).
///
/// # Safety
/// AVX2 and FMA must be available.
#[cfg(all(test, target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
unsafe fn vexp_slice(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        _mm256_storeu_ps(c.as_mut_ptr(), vexp(_mm256_loadu_ps(c.as_ptr())));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut buf = [0f32; 8];
        buf[..rest.len()].copy_from_slice(rest);
        _mm256_storeu_ps(buf.as_mut_ptr(), vexp(_mm256_loadu_ps(buf.as_ptr())));
        rest.copy_from_slice(&buf[..rest.len()]);
    }
}

/// The maximum of `x` (8 wide, reduced in a fixed order) and its last `len % 8` elements
/// padded with `-inf` to a vector (exp gives 0 there), for the kernels that follow with a
/// pass of exponentials.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vmax_padded(x: &[f32]) -> (f32, [f32; 8]) {
    let n8 = x.len() / 8 * 8;
    let p = x.as_ptr();
    let mut tail = [f32::NEG_INFINITY; 8];
    tail[..x.len() - n8].copy_from_slice(&x[n8..]);
    let mut m = _mm256_loadu_ps(tail.as_ptr());
    let mut i = 0;
    while i < n8 {
        m = _mm256_max_ps(m, _mm256_loadu_ps(p.add(i)));
        i += 8;
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    (_mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 0b01))), tail)
}

/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn vsoftmax_numerators(x: &mut [f32]) -> f32 {
    let n8 = x.len() / 8 * 8;
    let rest = x.len() - n8;
    let (m, mut tail) = vmax_padded(x);
    let p = x.as_mut_ptr();
    let max = _mm256_set1_ps(m);
    let mut sum = _mm256_setzero_ps();
    let mut i = 0;
    while i < n8 {
        let e = vexp(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), max));
        _mm256_storeu_ps(p.add(i), e);
        sum = _mm256_add_ps(sum, e);
        i += 8;
    }
    if rest > 0 {
        let e = vexp(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), max));
        _mm256_storeu_ps(tail.as_mut_ptr(), e);
        x[n8..].copy_from_slice(&tail[..rest]);
        sum = _mm256_add_ps(sum, e);
    }
    crate::simd::hsum(sum)
}

/// [`logsumexp`] with AVX2: `None` when the maximum is not finite (the caller's f64 path).
///
/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn vlogsumexp(x: &[f32]) -> Option<f32> {
    let n8 = x.len() / 8 * 8;
    let p = x.as_ptr();
    let (max, tail) = vmax_padded(x);
    if !max.is_finite() {
        return None;
    }
    let mv = _mm256_set1_ps(max);
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut add = |v: __m256| {
        let e = vexp(_mm256_sub_ps(v, mv));
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    };
    let mut i = 0;
    while i < n8 {
        add(_mm256_loadu_ps(p.add(i)));
        i += 8;
    }
    add(_mm256_loadu_ps(tail.as_ptr()));
    let mut l = [0f64; 8];
    _mm256_storeu_pd(l.as_mut_ptr(), lo);
    _mm256_storeu_pd(l.as_mut_ptr().add(4), hi);
    let sum = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    Some(max + sum.ln() as f32)
}

/// 8-wide `g / (1 + exp(-g)) * u`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn vsilu8(g: __m256, u: __m256) -> __m256 {
    let e = vexp(_mm256_sub_ps(_mm256_setzero_ps(), g));
    _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0), e)), u)
}

/// Writes every element of `o`.
///
/// # Safety
/// AVX2 and FMA must be available; the three slices have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn vsilu_mul(o: &mut [std::mem::MaybeUninit<f32>], g: &[f32], u: &[f32]) {
    let n = o.len() / 8 * 8;
    let op = o.as_mut_ptr() as *mut f32;
    let mut i = 0;
    while i < n {
        let v = vsilu8(_mm256_loadu_ps(g.as_ptr().add(i)), _mm256_loadu_ps(u.as_ptr().add(i)));
        _mm256_storeu_ps(op.add(i), v);
        i += 8;
    }
    if n < o.len() {
        let k = o.len() - n;
        let (mut gb, mut ub) = ([0f32; 8], [0f32; 8]);
        gb[..k].copy_from_slice(&g[n..]);
        ub[..k].copy_from_slice(&u[n..]);
        let mut ob = [0f32; 8];
        _mm256_storeu_ps(ob.as_mut_ptr(), vsilu8(_mm256_loadu_ps(gb.as_ptr()), _mm256_loadu_ps(ub.as_ptr())));
        std::ptr::copy_nonoverlapping(ob.as_ptr(), op.add(n), k);
    }
}

/// Not x86-64: never called ([`crate::simd::available`] is false).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn vsoftmax_numerators(_x: &mut [f32]) -> f32 {
    0.0
}

/// Not x86-64: never called ([`crate::simd::available`] is false).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn vsilu_mul(_o: &mut [std::mem::MaybeUninit<f32>], _g: &[f32], _u: &[f32]) {}

#[cfg(test)]
mod tests;
