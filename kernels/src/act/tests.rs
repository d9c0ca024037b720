//! The elementwise kernels against f64 references, and the fused forms against the unfused.

use super::*;

/// `exp` of every element: the vector kernel where it runs, else libm.
fn exp_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe { vexp_slice(x) };
        return;
    }
    x.iter_mut().for_each(|v| *v = v.exp());
}

fn rel(a: f32, b: f64) -> f64 {
    if b == 0.0 {
        a.abs() as f64
    } else {
        ((a as f64 - b) / b).abs()
    }
}

#[test]
fn fused_residual_norm_equals_add_then_norm_bitwise() {
    let f = |i: usize| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * (1.0 + (i % 7) as f32);
    let w: Vec<f32> = (0..64).map(|i| f(i + 3) * 0.1).collect();
    for rows in [0usize, 1, 7, 8, 9, 33] {
        let a: Vec<f32> = (0..rows * 64).map(f).collect();
        let b: Vec<f32> = (0..rows * 64).map(|i| f(i + 11)).collect();
        let (s, o) = add_rms_norm(&a, &b, &w, 1e-5);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let want = add(&a, &b);
        assert_eq!(bits(&s), bits(&want), "sum, {rows} rows");
        assert_eq!(bits(&o), bits(&rms_norm(&want, &w, 1e-5)), "norm, {rows} rows");
    }
}

#[test]
fn exp_matches_f64_over_the_whole_range() {
    // Every 997th f32 bit pattern in [-87.3, 88.7] plus edge values; odd length for the tail.
    let mut xs: Vec<f32> = (0..u32::MAX / 997).map(|i| f32::from_bits(i * 997)).filter(|x| x.is_finite() && (-87.3..=88.7).contains(x)).collect();
    xs.extend([0.0, -0.0, 1.0, -1.0, 88.7, -87.3, 0.5 * std::f32::consts::LN_2, -0.5 * std::f32::consts::LN_2]);
    let want: Vec<f64> = xs.iter().map(|&x| (x as f64).exp()).collect();
    let mut got = xs.clone();
    exp_inplace(&mut got);
    let worst = got.iter().zip(&want).map(|(&g, &w)| rel(g, w)).fold(0f64, f64::max);
    assert!(worst < 2e-7, "worst relative error {worst}");
}

#[test]
fn exp_edges_and_tails() {
    let mut x = vec![f32::NEG_INFINITY, -1000.0, -87.4, f32::NAN, 0.0, 1.0, 2.0, 3.0, -3.0, 10.0, f32::NAN];
    exp_inplace(&mut x);
    assert_eq!(&x[..3], &[0.0, 0.0, 0.0]);
    assert!(x[3].is_nan() && x[10].is_nan());
    for (g, w) in x[4..10].iter().zip([0.0f64, 1.0, 2.0, 3.0, -3.0, 10.0]) {
        assert!(rel(*g, w.exp()) < 2e-7, "{g} vs {}", w.exp());
    }
    // A value's result does not depend on where it sits (vector body or padded tail).
    for len in 1..20 {
        let mut v: Vec<f32> = (0..len).map(|i| 0.37 * i as f32 - 3.0).collect();
        exp_inplace(&mut v);
        let mut one = vec![0.37 * (len - 1) as f32 - 3.0];
        exp_inplace(&mut one);
        assert_eq!(v[len - 1].to_bits(), one[0].to_bits());
    }
}

#[test]
fn softmax_numerators_match_f64() {
    for len in [0usize, 1, 5, 8, 9, 16, 300, 417] {
        let x: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1013) as f32 / 50.0 - 10.0).collect();
        let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut got = x.clone();
        let sum = softmax_numerators(&mut got);
        // exp of the f32 difference (the subtraction's own rounding is not the kernel's).
        let want: Vec<f64> = x.iter().map(|&v| ((v - max) as f64).exp()).collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() <= 2e-7 * w.max(1e-30), "{g} vs {w}");
        }
        let ws: f64 = want.iter().sum();
        assert!((sum as f64 - ws).abs() <= 1e-6 * ws.max(1.0), "sum {sum} vs {ws} (len {len})");
    }
}

#[test]
fn silu_mul_matches_f64_and_is_position_independent() {
    let g: Vec<f32> = (0..10_007).map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0).collect();
    let u: Vec<f32> = (0..10_007).map(|i| ((i * 104_729) % 2003) as f32 / 1000.0 - 1.0).collect();
    let got = silu_mul(&g, &u);
    for ((&o, &g), &u) in got.iter().zip(&g).zip(&u) {
        let (g, u) = (g as f64, u as f64);
        let want = g / (1.0 + (-g).exp()) * u;
        assert!((o as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3), "{o} vs {want}");
    }
    let tail = silu_mul(&g[10_000..], &u[10_000..]);
    assert_eq!(tail.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), got[10_000..].iter().map(|x| x.to_bits()).collect::<Vec<_>>());
}

/// `logsumexp` against an f64 reference, for rows with tails of every length, `-inf` entries
/// and large ranges; an empty row or one of `-inf` only gives `-inf`, one with `+inf` NaN.
#[test]
fn logsumexp_matches_f64_reference() {
    let f = |i: usize| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 12.0;
    for n in [1usize, 7, 8, 9, 63, 1000, 49152] {
        let mut x: Vec<f32> = (0..n).map(f).collect();
        if n > 8 {
            x[3] = f32::NEG_INFINITY;
            x[n - 1] = 30.0;
        }
        let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let want = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        let got = logsumexp(&x);
        assert!((got as f64 - want).abs() <= 2e-6 * want.abs().max(1.0), "n={n}: {got} vs {want}");
    }
    assert_eq!(logsumexp(&[f32::NEG_INFINITY; 9]), f32::NEG_INFINITY);
    assert_eq!(logsumexp(&[]), f32::NEG_INFINITY);
    assert!(logsumexp(&[1.0, f32::INFINITY, 2.0]).is_nan());
}

/// Rows normed four at a time give each row's bits alone, for every count of rows left over
/// (1 to 9), with zeros, huge values (squares that overflow to infinity) and NaN among them.
#[test]
fn norm_rows_equal_norm_row_bitwise() {
    let n = 96;
    let w: Vec<f32> = (0..n).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.125).collect();
    for rows in 1..=9usize {
        let mut x: Vec<f32> = (0..rows * n).map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * (1.0 + (i % 5) as f32)).collect();
        if rows > 2 {
            x[n..2 * n].fill(0.0);
            x[2 * n + 5] = 3e19;
        }
        if rows > 5 {
            x[5 * n + 1] = f32::NAN;
        }
        let mut got = vec![std::mem::MaybeUninit::<f32>::uninit(); rows * n];
        norm_rows(&x, &w, 1e-5, &mut got);
        for r in 0..rows {
            let mut want = vec![std::mem::MaybeUninit::<f32>::uninit(); n];
            norm_row(&x[r * n..(r + 1) * n], &w, 1e-5, &mut want);
            // SAFETY: both functions write every element of their output.
            let bits = |v: &[std::mem::MaybeUninit<f32>]| v.iter().map(|e| unsafe { e.assume_init() }.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got[r * n..(r + 1) * n]), bits(&want), "row {r} of {rows}");
        }
    }
}
