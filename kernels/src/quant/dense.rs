//! Q4_1 weights × f32 activations, for many rows at once (prompt chunks on CPUs without AVX-512
//! VNNI; interleaved weights, module `q4_1_x16`, take one path for every row): each panel of
//! [`PANEL`] weight rows is dequantized once per call to f32 (`d·q + m`, one FMA) into a
//! per-thread scratch buffer, then multiplied with every activation row by an AVX2 register
//! tile of 4 activation rows × 3 weight rows. For tens of rows or more it is faster than the
//! int8 path ([`super::matmul_many`]), which pays a float conversion and scaling per 32-element
//! block pair where this one only does FMAs (`examples/quant_bench.rs`: 1.7x at 256 rows).
//!
//! The int8 arithmetic (ggml's, candle's) is kept up to float rounding, so both paths and the
//! candle reference agree closely: activations are rounded through Q8_1 blocks (`q · d`), and a
//! weight `d·q + m` contributes `d·q` per element plus `m` times the block's f16-rounded
//! `s = d·Σq` once per block, as in the int8 dot. Both terms run in one GEMM over an extended
//! input of `kp = k + k/32` (padded to 16) values: a row is `[q·d ..., s per block ..., 0 ...]`
//! and a weight row `[d·q ..., m per block ..., 0 ...]`. (With plain f32 activations and
//! `d·q + m` weights the default model's prompt logprobs moved 0.30 from the reference's, over
//! the test's 0.25; the int8 path's drift is 0.16.)
//!
//! Arithmetic of one output — the same whatever the tile, the panel or the number of rows, so
//! outputs never depend on the batch: with `L` lanes (16 where the CPU has AVX-512F, else 8:
//! [`vector_lanes`], fixed per machine) lane `l` accumulates `x[k]·w[k]` for the `k` with
//! `k % L == l`, in increasing `k`, with FMA from zero; 16 lanes are first folded to 8 (`l + 8`
//! onto `l`), then summed in the fixed order of `hsum8` ((0+4)+(2+6)) + ((1+5)+(3+7)).
//! [`dot_ref`] is that arithmetic in scalar Rust; the AVX2 and AVX-512 kernels are
//! bit-identical to it (tested).

use super::{Q4_1Matrix, QK};
use std::cell::RefCell;

/// Weight rows dequantized per task (a multiple of the tile's 3).
const PANEL: usize = 48;
/// Register tile: activation rows × weight rows.
const MR: usize = 4;
const NR: usize = 3;

thread_local! {
    /// Dequantized panel `[PANEL, kp]` of the task running on this thread (reused: a prompt
    /// chunk runs ~100 tasks per layer, and a fresh buffer of this size would be an `mmap`).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `x [m, k] · Wᵀ → [m, n]` for each matrix of `ws` with the input width of the first (the
/// others get zeros), in f32 on dequantized weights and Q8_1-rounded activations (module
/// docs). `simd = false` forces [`dot_ref`].
pub fn matmul_f32_many(ws: &[&Q4_1Matrix], x: &[f32], m: usize, simd: bool) -> Vec<Vec<f32>> {
    let Some(first) = ws.first() else { return vec![] };
    if ws.iter().any(|w| w.is_interleaved()) {
        // Interleaved weights have one path for every row (candle's arithmetic, `super::q4_1_x16`).
        return super::matmul_many(ws, x, m, simd);
    }
    let k = first.k;
    let kp = extended_len(k);
    let simd = simd && super::has_avx2_fma();
    let shapes: Vec<(usize, usize)> = ws.iter().map(|w| (w.n, w.k)).collect();
    let x = &super::q8_1::q8_1_extended_rows(x, m, k, kp);
    // SAFETY: `panel` writes every (row, column) of its window (tiles over `0..m` and
    // `0..pw`).
    unsafe {
        super::run_panels(&shapes, m, super::Tasks::Fixed(PANEL), |i, j0, j1, part| {
            SCRATCH.with(|s| {
                let mut buf = s.borrow_mut();
                buf.resize(PANEL * kp, 0.0);
                dequantize_rows(ws[i], j0, j1, &mut buf, kp, simd);
                panel(&buf[..(j1 - j0) * kp], j1 - j0, x, m, kp, part, simd);
            })
        })
    }
}

/// Length of an extended row for input width `k`: `k` values, `k / 32` block terms, zeros to
/// a multiple of 16 (the widest kernel's vector width; `k` is a multiple of 32).
fn extended_len(k: usize) -> usize {
    k + (k / QK).next_multiple_of(16)
}

/// Lanes of the f32 path's accumulators on this machine: 16 with AVX-512F (unless
/// [`super::isa::IsaLimits::no_avx512`], for A/B measurements), else 8. Checked once.
pub fn vector_lanes() -> usize {
    static L: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2_fma() && is_x86_feature_detected!("avx512f") && !super::isa::limits().no_avx512 {
            return 16;
        }
        8
    })
}

/// Rows `r` with `f32_rows[r]` through [`matmul_f32_many`], the others (and rows past the end of
/// `f32_rows`) through the int8 path ([`super::matmul_many`]); every row gets exactly what its
/// path gives it alone. The model sends prompt tokens one way and generated tokens the other.
pub fn matmul_split(ws: &[&Q4_1Matrix], x: &[f32], m: usize, f32_rows: &[bool], simd: bool) -> Vec<Vec<f32>> {
    let Some(first) = ws.first() else { return vec![] };
    if ws.iter().any(|w| w.is_interleaved()) {
        return super::matmul_many(ws, x, m, simd);
    }
    let is_f32 = |r: usize| f32_rows.get(r).copied().unwrap_or(false);
    let nf = (0..m).filter(|&r| is_f32(r)).count();
    if nf == 0 {
        return super::matmul_many(ws, x, m, simd);
    }
    if nf == m {
        return matmul_f32_many(ws, x, m, simd);
    }
    let k = first.k;
    let (mut xf, mut xi) = (Vec::with_capacity(nf * k), Vec::with_capacity((m - nf) * k));
    for (r, row) in x.chunks_exact(k).take(m).enumerate() {
        if is_f32(r) { &mut xf } else { &mut xi }.extend_from_slice(row);
    }
    let (yf, yi) = (matmul_f32_many(ws, &xf, nf, simd), super::matmul_many(ws, &xi, m - nf, simd));
    ws.iter()
        .zip(yf.iter().zip(&yi))
        .map(|(w, (yf, yi))| {
            let n = w.n;
            let mut out = Vec::with_capacity(m * n);
            let (mut a, mut b) = (0, 0);
            for r in 0..m {
                let (src, i) = if is_f32(r) { (yf, &mut a) } else { (yi, &mut b) };
                out.extend_from_slice(&src[*i * n..(*i + 1) * n]);
                *i += 1;
            }
            out
        })
        .collect()
}

/// Rows `j0..j1` of `w` as extended rows into `out` (`[j1 - j0, kp]`): `d · q` per element,
/// then each block's `m`, then zeros.
fn dequantize_rows(w: &Q4_1Matrix, j0: usize, j1: usize, out: &mut [f32], kp: usize, simd: bool) {
    let nb = w.k / QK;
    for (j, row) in (j0..j1).zip(out.chunks_exact_mut(kp)) {
        let (vals, mins) = row.split_at_mut(w.k);
        let blocks = j * nb..(j + 1) * nb;
        for (bi, o) in blocks.clone().zip(vals.chunks_exact_mut(QK)) {
            let (q, d) = (&w.qs[bi], w.d[bi]);
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: `simd` is only true when AVX2 and FMA were detected; `o` holds 32 floats.
                unsafe { dequantize_block_avx2(q, d, o) };
                continue;
            }
            let _ = simd;
            for i in 0..16 {
                o[i] = d * (q[i] & 0x0F) as f32;
                o[i + 16] = d * (q[i] >> 4) as f32;
            }
        }
        mins[..nb].copy_from_slice(&w.m[blocks]);
        mins[nb..].fill(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dequantize_block_avx2(q: &[u8; 16], d: f32, o: &mut [f32]) {
    use std::arch::x86_64::*;
    let mask = _mm_set1_epi8(0x0F);
    let v = _mm_loadu_si128(q.as_ptr() as *const __m128i);
    let lo = _mm_and_si128(v, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
    let dv = _mm256_set1_ps(d);
    for (i, part) in [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)].into_iter().enumerate() {
        let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part));
        _mm256_storeu_ps(o.as_mut_ptr().add(8 * i), _mm256_mul_ps(dv, f));
    }
}

/// Every activation row against the dequantized panel `w` (`[pw, k]`) into `part` (`[m, pw]`, a window onto the output).
fn panel(w: &[f32], pw: usize, x: &[f32], m: usize, k: usize, part: &mut super::PanelOut, simd: bool) {
    let lanes = vector_lanes();
    for r0 in (0..m).step_by(MR) {
        let rt = (m - r0).min(MR);
        for c0 in (0..pw).step_by(NR) {
            let ct = (pw - c0).min(NR);
            let mut out = [[0f32; NR]; MR];
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: AVX2 + FMA detected (`simd`), AVX-512F where `vector_lanes` is 16;
                // rows r0..r0+rt of `x` and weight rows c0..c0+ct of `w` exist and `k` (an
                // extended length) is a multiple of 16.
                unsafe {
                    if lanes == 16 {
                        tile_dispatch_512(&x[r0 * k..], k, &w[c0 * k..], rt, ct, &mut out)
                    } else {
                        tile_dispatch(&x[r0 * k..], k, &w[c0 * k..], rt, ct, &mut out)
                    }
                };
            }
            if !simd || cfg!(not(target_arch = "x86_64")) {
                for (r, row) in out.iter_mut().enumerate().take(rt) {
                    for (c, o) in row.iter_mut().enumerate().take(ct) {
                        *o = dot_ref(&x[(r0 + r) * k..(r0 + r + 1) * k], &w[(c0 + c) * k..(c0 + c + 1) * k], lanes);
                    }
                }
            }
            for (r, row) in out.iter().enumerate().take(rt) {
                part.write(r0 + r, c0, &row[..ct]);
            }
        }
    }
}

/// The arithmetic of one output in scalar Rust (see the module docs): the reference the AVX2
/// tiles must equal bit for bit, with `lanes` 8 or 16. `x.len() == w.len()`, a multiple of it.
pub fn dot_ref(x: &[f32], w: &[f32], lanes: usize) -> f32 {
    let lanes = if lanes == 16 { 16 } else { 8 };
    let mut l = [0f32; 16];
    for (i, (a, b)) in x.iter().zip(w).enumerate() {
        l[i % lanes] = a.mul_add(*b, l[i % lanes]);
    }
    if lanes == 16 {
        for i in 0..8 {
            l[i] += l[i + 8];
        }
    }
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// `tile_dispatch(x, k, w, rt, ct, out)`: the tile kernel of the const shape `rt × ct`.
macro_rules! tile_dispatch {
    ($name:ident, $tile:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(x: &[f32], k: usize, w: &[f32], rt: usize, ct: usize, out: &mut [[f32; NR]; MR]) {
            match (rt, ct) {
                (4, 3) => $tile::<4, 3>(x, k, w, out),
                (4, 2) => $tile::<4, 2>(x, k, w, out),
                (4, _) => $tile::<4, 1>(x, k, w, out),
                (3, 3) => $tile::<3, 3>(x, k, w, out),
                (3, 2) => $tile::<3, 2>(x, k, w, out),
                (3, _) => $tile::<3, 1>(x, k, w, out),
                (2, 3) => $tile::<2, 3>(x, k, w, out),
                (2, 2) => $tile::<2, 2>(x, k, w, out),
                (2, _) => $tile::<2, 1>(x, k, w, out),
                (_, 3) => $tile::<1, 3>(x, k, w, out),
                (_, 2) => $tile::<1, 2>(x, k, w, out),
                _ => $tile::<1, 1>(x, k, w, out),
            }
        }
    };
}

/// The register tile: `R` activation rows (stride `k`, from `x`) × `C` weight rows (stride `k`,
/// from `w`), for a vector type (`$zero`, `$load`, `$fma`, `$width` lanes, `$hsum` to f32).
macro_rules! tile_kernel {
    ($name:ident, $features:literal, $width:literal, $zero:ident, $load:ident, $fma:ident, $hsum:path) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<const R: usize, const C: usize>(x: &[f32], k: usize, w: &[f32], out: &mut [[f32; NR]; MR]) {
            use std::arch::x86_64::*;
            debug_assert!(x.len() >= (R - 1) * k + k && w.len() >= (C - 1) * k + k);
            let (xp, wp) = (x.as_ptr(), w.as_ptr());
            let mut acc = [[$zero(); C]; R];
            let mut kk = 0;
            while kk < k {
                let mut wv = [$zero(); C];
                for (c, v) in wv.iter_mut().enumerate() {
                    *v = $load(wp.add(c * k + kk));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let a = $load(xp.add(r * k + kk));
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = $fma(a, wv[c], *v);
                    }
                }
                kk += $width;
            }
            for (r, row) in acc.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    out[r][c] = $hsum(*v);
                }
            }
        }
    };
}

tile_kernel!(tile, "avx2,fma", 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps, super::hsum8);
tile_kernel!(tile_512, "avx512f,avx2,fma", 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps, hsum16);
tile_dispatch!(tile_dispatch, tile, "avx2,fma");
tile_dispatch!(tile_dispatch_512, tile_512, "avx512f,avx2,fma");

/// Lanes `l + 8` added onto `l`, then [`super::hsum8`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn hsum16(v: std::arch::x86_64::__m512) -> f32 {
    use std::arch::x86_64::*;
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    super::hsum8(_mm256_add_ps(lo, hi))
}

#[cfg(test)]
mod tests {
    use super::super::test_data as data;
    use super::super::test_q4_1_matrix as matrix;
    use super::*;

    /// The AVX2 path equals the scalar reference bit for bit, for every tile shape (rows not a
    /// multiple of 4, panels not a multiple of 3, several panels and matrices), and each output
    /// equals `dot_ref` on the dequantized row whatever the number of rows in the call.
    #[test]
    fn simd_equals_reference_bitwise_and_rows_are_independent() {
        let k = 96;
        let (a, b) = (matrix(PANEL + 7, k, 3), matrix(10, k, 4));
        for m in [1, 2, 3, 5, 9] {
            let x = data(m * k, 7 + m as u32);
            let fast = matmul_f32_many(&[&a, &b], &x, m, true);
            let slow = matmul_f32_many(&[&a, &b], &x, m, false);
            assert_eq!(fast.len(), 2);
            for (f, s) in fast.iter().zip(&slow) {
                assert!(f.iter().zip(s).all(|(p, q)| p.to_bits() == q.to_bits()), "m = {m}");
            }
            // Row 0 alone gives the same bits as inside the batch.
            let solo = matmul_f32_many(&[&a], &x[..k], 1, true);
            assert!(solo[0].iter().zip(&fast[0][..a.n]).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }

    /// Each vector kernel this CPU can run equals `dot_ref` with its lane count, bit for bit,
    /// for every tile shape (the matmul test above only covers the lane count in use).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn each_vector_kernel_equals_its_reference() {
        let k = 160;
        let (x, w) = (data(MR * k, 21), data(NR * k, 22));
        let kernels: [(usize, bool); 2] = [(8, crate::quant::has_avx2_fma()), (16, crate::quant::has_avx2_fma() && is_x86_feature_detected!("avx512f"))];
        for (lanes, available) in kernels {
            if !available {
                eprintln!("{lanes}-lane kernel not compared: this CPU cannot run it");
                continue;
            }
            for (rt, ct) in (1..=MR).flat_map(|r| (1..=NR).map(move |c| (r, c))) {
                let mut out = [[0f32; NR]; MR];
                // SAFETY: the features were detected above; `x` and `w` hold MR and NR rows of k.
                unsafe {
                    if lanes == 16 {
                        tile_dispatch_512(&x, k, &w, rt, ct, &mut out)
                    } else {
                        tile_dispatch(&x, k, &w, rt, ct, &mut out)
                    }
                }
                for r in 0..rt {
                    for c in 0..ct {
                        let want = dot_ref(&x[r * k..(r + 1) * k], &w[c * k..(c + 1) * k], lanes);
                        assert_eq!(out[r][c].to_bits(), want.to_bits(), "{lanes} lanes, tile {rt}x{ct}");
                    }
                }
            }
        }
    }

    /// A mixed call gives each row what its own path gives it.
    #[test]
    fn split_rows_take_their_own_path() {
        let (k, m) = (64, 5);
        let (a, b) = (matrix(9, k, 8), matrix(4, k, 9));
        let x = data(m * k, 10);
        let kinds = [true, false, false, true, true];
        let got = matmul_split(&[&a, &b], &x, m, &kinds, true);
        let (f, i) = (matmul_f32_many(&[&a, &b], &x, m, true), super::super::matmul_many(&[&a, &b], &x, m, true));
        for (mi, w) in [&a, &b].iter().enumerate() {
            for (r, &kind) in kinds.iter().enumerate() {
                let want = if kind { &f[mi] } else { &i[mi] };
                assert_eq!(got[mi][r * w.n..(r + 1) * w.n], want[r * w.n..(r + 1) * w.n]);
            }
        }
    }

    /// Both paths compute the same real number — `Σ_b d_w·d_x·Σ q_w·q_x + m_w·s_x` — up to float
    /// rounding: here both against it in f64 (from the extended rows), and against the
    /// unquantized product (the activation rounding: ~1 % of the output's scale).
    #[test]
    fn close_to_f64_and_to_the_int8_path() {
        let (n, k, m) = (20, 256, 3);
        let w = matrix(n, k, 5);
        let x = data(m * k, 6);
        let got = matmul_f32_many(&[&w], &x, m, true).remove(0);
        let kp = extended_len(k);
        let xe = crate::quant::q8_1::q8_1_extended_rows(&x, m, k, kp);
        let mut we = vec![0f32; n * kp];
        dequantize_rows(&w, 0, n, &mut we, kp, false);
        let int8 = w.matmul(&x, m);
        for r in 0..m {
            for j in 0..n {
                let exact: f64 = (0..kp).map(|i| xe[r * kp + i] as f64 * we[j * kp + i] as f64).sum();
                // Unquantized activations, weights `d·q + m` (blocks of 32 share `m`).
                let full: f64 = (0..k).map(|i| x[r * k + i] as f64 * (we[j * kp + i] as f64 + we[j * kp + k + i / QK] as f64)).sum();
                let (g, i8) = (got[r * n + j] as f64, int8[r * n + j] as f64);
                assert!((g - exact).abs() < 1e-5 * (1.0 + exact.abs()), "f32 path {g} vs {exact}");
                assert!((i8 - exact).abs() < 1e-5 * (1.0 + exact.abs()), "int8 path {i8} vs {exact}");
                assert!((g - full).abs() < 0.05 * (1.0 + full.abs()), "{g} vs unquantized {full}");
            }
        }
    }
}
