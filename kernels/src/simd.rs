//! AVX2 + FMA + F16C inner loops of the CPU paged attention (x86-64; elsewhere
//! [`available`] is false and the scalar loops in [`crate::cpu`] run).

use crate::cpu::KvElem;

/// Whether the vector kernels can run on this CPU (checked once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *A.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// How many keys (values) ahead the attention loops prefetch.
#[cfg(target_arch = "x86_64")]
/// (16 rather than 8, and values fetched during the scores pass: `attn_bench`, 16 sequences,
/// median 4.9-5.6 vs 5.5-6.4 ms per step in 3 alternations on a 2-core Zen 4 VM.)
const PREFETCH: usize = 16;

/// 8 elements at `p` as f32.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8<T: KvElem>(p: *const T) -> __m256 {
    if T::IS_F16 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    } else {
        _mm256_loadu_ps(p as *const f32)
    }
}

/// The sum of the 8 lanes in a fixed order: halves, then pairs, then the last two.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 0b01)))
}

/// Attention scores of `kv` consecutive KV heads' query heads, `H` per KV head (GQA): KV head
/// `i`'s key starts at `off + i * hd` in a key row, its query heads are the `i`-th `H` of the
/// head vectors held back to back in `q`, and
/// `scores[(i * H + h) * n + j] = (q_{iH+h} · keys[offs[j] + off + i * hd ..][..hd]) * scale`
/// with `n = offs.len()`. Four keys at a time (one accumulator per head and key, one horizontal
/// reduction per four keys); each key chunk is loaded and widened once for all `H` heads, and
/// the `kv` heads of a position are read one after the other, so a key row's bytes stream by
/// in address order. A head's scores do not depend on `H`, `kv` or the other heads (same
/// accumulation and reduction per head; tested bitwise). `vals`: the values at the same
/// offsets, prefetched into L2 as the keys stream by (the weighted sums read them next); they do
/// not enter the scores.
///
/// # Safety
/// AVX2, FMA and F16C must be available ([`available`]); `hd` a multiple of 8,
/// `q.len() == kv * H * hd`, `offs[j] + off + kv * hd <= keys.len()` (and `vals`' length, when
/// given) for every j, `scores.len() == kv * H * offs.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // the kernel's operands, as the weighted sums take them
pub unsafe fn scores_group<T: KvElem, const H: usize>(q: &[f32], hd: usize, kv: usize, keys: &[T], offs: &[usize], off: usize, scale: f32, scores: &mut [f32], vals: Option<&[T]>) {
    let n = offs.len();
    // The values at the same offsets, fetched into L2 while the keys are scored: the weighted
    // sums read them right after.
    let vp: *const T = vals.map_or(std::ptr::null(), |v| v.as_ptr().add(off));
    let kp = keys.as_ptr().add(off);
    let sv = _mm_set1_ps(scale);
    let mut j = 0;
    // Bytes of the heads' part of a key row (the lines to prefetch ahead).
    let row_bytes = kv * hd * std::mem::size_of::<T>();
    let fetch = |o: usize| {
        let p = kp.add(o) as *const i8;
        let mut b = 0;
        while b < row_bytes {
            _mm_prefetch::<_MM_HINT_T0>(p.add(b));
            if !vp.is_null() {
                _mm_prefetch::<_MM_HINT_T1>((vp.add(o) as *const i8).add(b));
            }
            b += 64;
        }
    };
    while j + 4 <= n {
        // The keys a few groups ahead: blocks are scattered over the pool, so the hardware
        // prefetchers see short runs; the kernel is otherwise waiting on memory.
        offs.get(j + PREFETCH..(j + PREFETCH + 4).min(n)).unwrap_or(&[]).iter().for_each(|&o| fetch(o));
        for i in 0..kv {
            let k: [*const T; 4] = [kp.add(offs[j] + i * hd), kp.add(offs[j + 1] + i * hd), kp.add(offs[j + 2] + i * hd), kp.add(offs[j + 3] + i * hd)];
            let qp = q.as_ptr().add(i * H * hd);
            let mut a = [[_mm256_setzero_ps(); 4]; H];
            let mut d = 0;
            while d < hd {
                // One key chunk live at a time (with 3 heads, 12 accumulators and 4 chunks did
                // not fit AVX2's 16 registers); the query chunks are read from L1.
                for (t, kt) in k.iter().enumerate() {
                    let kv = load8(kt.add(d));
                    for (h, ah) in a.iter_mut().enumerate() {
                        ah[t] = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(h * hd + d)), kv, ah[t]);
                    }
                }
                d += 8;
            }
            for (h, ah) in a.iter().enumerate() {
                let t0 = _mm256_hadd_ps(ah[0], ah[1]);
                let t1 = _mm256_hadd_ps(ah[2], ah[3]);
                let t2 = _mm256_hadd_ps(t0, t1);
                let s = _mm_add_ps(_mm256_castps256_ps128(t2), _mm256_extractf128_ps(t2, 1));
                _mm_storeu_ps(scores.as_mut_ptr().add((i * H + h) * n + j), _mm_mul_ps(s, sv));
            }
        }
        j += 4;
    }
    if j < n {
        for r in 0..kv * H {
            scores_tail(&q[r * hd..(r + 1) * hd], keys, &offs[j..], off + (r / H) * hd, scale, &mut scores[r * n + j..(r + 1) * n]);
        }
    }
}

/// The one-key-at-a-time tail of [`scores_group`], for one head.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_tail<T: KvElem>(q: &[f32], keys: &[T], offs: &[usize], off: usize, scale: f32, scores: &mut [f32]) {
    let hd = q.len();
    let qp = q.as_ptr();
    let kp = keys.as_ptr().add(off);
    for (j, &o) in offs.iter().enumerate() {
        let k = kp.add(o);
        let mut a = _mm256_setzero_ps();
        let mut d = 0;
        while d < hd {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(d)), load8(k.add(d)), a);
            d += 8;
        }
        *scores.get_unchecked_mut(j) = hsum(a) * scale;
    }
}

/// `o += Σ_j (e[j] * inv) * values[offs[j] + off .. + o.len()]`, 32 output lanes held in
/// registers while the keys stream by.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `o.len()` a multiple of 8, `offs[j] + off + o.len() <=
/// values.len()` for every j and `e.len() == offs.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn weighted_sum<T: KvElem>(o: &mut [f32], values: &[T], offs: &[usize], off: usize, e: &[f32], inv: f32) {
    let hd = o.len();
    let vp = values.as_ptr().add(off);
    let op = o.as_mut_ptr();
    let mut c = 0;
    while c < hd {
        let n = ((hd - c) / 8).min(4);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (t, a) in acc.iter_mut().enumerate().take(n) {
            *a = _mm256_loadu_ps(op.add(c + 8 * t));
        }
        for (&ej, &oj) in e.iter().zip(offs) {
            let w = _mm256_set1_ps(ej * inv);
            let v = vp.add(oj + c);
            if n == 4 {
                acc[0] = _mm256_fmadd_ps(w, load8(v), acc[0]);
                acc[1] = _mm256_fmadd_ps(w, load8(v.add(8)), acc[1]);
                acc[2] = _mm256_fmadd_ps(w, load8(v.add(16)), acc[2]);
                acc[3] = _mm256_fmadd_ps(w, load8(v.add(24)), acc[3]);
            } else {
                for (t, a) in acc.iter_mut().enumerate().take(n) {
                    *a = _mm256_fmadd_ps(w, load8(v.add(8 * t)), *a);
                }
            }
        }
        for (t, a) in acc.iter().enumerate().take(n) {
            _mm256_storeu_ps(op.add(c + 8 * t), *a);
        }
        c += 8 * n;
    }
}

/// [`weighted_sum`] for the `H` query heads of one KV head at once, with AVX2: head `h`'s
/// output `o[h * hd ..][..hd] += Σ_j w[h * n + j] * values[offs[j] + off ..][..hd]`
/// (`n = offs.len()`), the weights already normalized (`e[j] * inv`, the product
/// [`weighted_sum`] forms on the fly). 16 columns per pass over the positions (with 3 heads:
/// 6 accumulators, 3 weights and 2 value vectors stay in AVX2's 16 registers); each value chunk
/// is loaded and widened once for all heads, and the weights are broadcast straight from
/// memory. Every output element gets the same FMAs in the same order as with [`weighted_sum`],
/// so the results are bit-identical (tested).
///
/// # Safety
/// AVX2, FMA and F16C must be available ([`available`]); `hd` a multiple of 16,
/// `o.len() == H * hd`, `w.len() == H * offs.len()`, `offs[j] + off + hd <= values.len()` for
/// every j.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn weighted_sum_group8<T: KvElem, const H: usize>(o: &mut [f32], hd: usize, values: &[T], offs: &[usize], off: usize, w: &[f32]) {
    let n = offs.len();
    let vp = values.as_ptr().add(off);
    let op = o.as_mut_ptr();
    let wp = w.as_ptr();
    let mut c = 0;
    while c + 16 <= hd {
        let mut acc = [[_mm256_setzero_ps(); 2]; H];
        for (h, ah) in acc.iter_mut().enumerate() {
            ah[0] = _mm256_loadu_ps(op.add(h * hd + c));
            ah[1] = _mm256_loadu_ps(op.add(h * hd + c + 8));
        }
        for (j, &oj) in offs.iter().enumerate() {
            let v = vp.add(oj + c);
            let (v0, v1) = (load8(v), load8(v.add(8)));
            for (h, ah) in acc.iter_mut().enumerate() {
                let wj = _mm256_broadcast_ss(&*wp.add(h * n + j));
                ah[0] = _mm256_fmadd_ps(wj, v0, ah[0]);
                ah[1] = _mm256_fmadd_ps(wj, v1, ah[1]);
            }
        }
        for (h, ah) in acc.iter().enumerate() {
            _mm256_storeu_ps(op.add(h * hd + c), ah[0]);
            _mm256_storeu_ps(op.add(h * hd + c + 8), ah[1]);
        }
        c += 16;
    }
}

/// Whether [`weighted_sum_group`] can run here (AVX-512F besides [`available`]; checked once).
pub fn available_512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *A.get_or_init(|| available() && is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`weighted_sum`] for the `H` query heads of one KV head at once: head `h`'s output
/// `o[h * hd ..][..hd] += Σ_j (e[h * n + j] * inv[h]) * values[offs[j] + off ..][..hd]`
/// (`n = offs.len()`), each value chunk loaded and widened once for all heads, 16 lanes per
/// vector. Every output element gets the same FMAs in the same order as with [`weighted_sum`]
/// (no reductions across lanes), so the results are bit-identical (tested).
///
/// # Safety
/// AVX-512F, FMA and F16C must be available ([`available_512`]); `hd` a multiple of 16,
/// `o.len() == H * hd`, `e.len() == H * offs.len()`, `inv.len() == H`,
/// `offs[j] + off + hd <= values.len()` for every j.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub unsafe fn weighted_sum_group<T: KvElem, const H: usize>(o: &mut [f32], hd: usize, values: &[T], offs: &[usize], off: usize, e: &[f32], inv: &[f32]) {
    let n = offs.len();
    let vp = values.as_ptr().add(off);
    let op = o.as_mut_ptr();
    let load16 = |p: *const T| -> __m512 {
        if T::IS_F16 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
        } else {
            _mm512_loadu_ps(p as *const f32)
        }
    };
    let mut c = 0;
    while c < hd {
        // Up to 64 columns (4 vectors) per head per pass over the positions.
        let nv = ((hd - c) / 16).min(4);
        let mut acc = [[_mm512_setzero_ps(); 4]; H];
        for (h, ah) in acc.iter_mut().enumerate() {
            for (t, a) in ah.iter_mut().enumerate().take(nv) {
                *a = _mm512_loadu_ps(op.add(h * hd + c + 16 * t));
            }
        }
        for (j, &oj) in offs.iter().enumerate() {
            let v = vp.add(oj + c);
            if let Some(&o) = offs.get(j + PREFETCH) {
                let p = vp.add(o + c) as *const i8;
                let mut b = 0;
                while b < nv * 16 * std::mem::size_of::<T>() {
                    _mm_prefetch::<_MM_HINT_T0>(p.add(b));
                    b += 64;
                }
            }
            let mut vv = [_mm512_setzero_ps(); 4];
            for (t, x) in vv.iter_mut().enumerate().take(nv) {
                *x = load16(v.add(16 * t));
            }
            for (h, ah) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*e.get_unchecked(h * n + j) * *inv.get_unchecked(h));
                for (a, x) in ah.iter_mut().zip(&vv).take(nv) {
                    *a = _mm512_fmadd_ps(w, *x, *a);
                }
            }
        }
        for (h, ah) in acc.iter().enumerate() {
            for (t, a) in ah.iter().enumerate().take(nv) {
                _mm512_storeu_ps(op.add(h * hd + c + 16 * t), *a);
            }
        }
        c += 16 * nv;
    }
}

/// Not x86-64: never called ([`available_512`] is false).
///
/// # Safety
/// Always safe; does nothing.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn weighted_sum_group<T: KvElem, const H: usize>(_o: &mut [f32], _hd: usize, _values: &[T], _offs: &[usize], _off: usize, _e: &[f32], _inv: &[f32]) {}

/// Not x86-64: never called ([`available`] is false).
///
/// # Safety
/// Always safe; does nothing.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn weighted_sum_group8<T: KvElem, const H: usize>(_o: &mut [f32], _hd: usize, _values: &[T], _offs: &[usize], _off: usize, _w: &[f32]) {}

/// Not x86-64: never called ([`available`] is false).
///
/// # Safety
/// Always safe; does nothing.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub unsafe fn scores_group<T: KvElem, const H: usize>(_q: &[f32], _hd: usize, _kv: usize, _keys: &[T], _offs: &[usize], _off: usize, _scale: f32, _scores: &mut [f32], _vals: Option<&[T]>) {}

/// Not x86-64: never called ([`available`] is false).
///
/// # Safety
/// Always safe; does nothing.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn weighted_sum<T: KvElem>(_o: &mut [f32], _values: &[T], _offs: &[usize], _off: usize, _e: &[f32], _inv: f32) {}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
