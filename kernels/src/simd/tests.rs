//! The attention kernels' bitwise equalities (grouped against per-head).

use super::*;
use half::f16;

/// The grouped kernel gives each head exactly (bitwise) what it gives that head alone, for
/// one KV head and for several read position by position.
fn check<T: KvElem, const H: usize>(conv: impl Fn(f32) -> T) {
    let (hd, kv) = (64, 3);
    let w = kv * hd;
    let f = |i: usize| ((i * 7919 % 1999) as f32 / 999.0) - 1.0;
    let keys: Vec<T> = (0..40 * w).map(|i| conv(f(i + 5))).collect();
    let q: Vec<f32> = (0..kv * H * hd).map(|i| f(i + 101)).collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for n in [1usize, 3, 4, 7, 37] {
        let offs: Vec<usize> = (0..n).map(|j| ((j * 13) % 39) * w).collect();
        let mut all = vec![0f32; kv * H * n];
        // SAFETY: guarded by `available`; all offsets + kv * hd are inside `keys`.
        unsafe { scores_group::<T, H>(&q, hd, kv, &keys, &offs, 0, 0.125, &mut all, Some(&keys)) };
        for i in 0..kv {
            let mut grouped = vec![0f32; H * n];
            unsafe { scores_group::<T, H>(&q[i * H * hd..(i + 1) * H * hd], hd, 1, &keys, &offs, i * hd, 0.125, &mut grouped, None) };
            assert_eq!(bits(&all[i * H * n..(i + 1) * H * n]), bits(&grouped), "H={H} KV head {i} n={n}");
            for h in 0..H {
                let r = i * H + h;
                let mut one = vec![0f32; n];
                unsafe { scores_group::<T, 1>(&q[r * hd..(r + 1) * hd], hd, 1, &keys, &offs, i * hd, 0.125, &mut one, None) };
                assert_eq!(bits(&grouped[h * n..(h + 1) * n]), bits(&one), "H={H} head {h} n={n}");
                // And each score is the rounded product of a plain dot product's order.
                let k0 = offs[0] + i * hd;
                let want: f32 = (0..hd).fold(0f32, |a, d| a + q[r * hd + d] * keys[k0 + d].to_f32());
                assert!((one[0] - want * 0.125).abs() < 1e-4, "H={H} head {h}: {} vs {}", one[0], want * 0.125);
            }
        }
    }
}

/// A grouped weighted sum gives each head exactly (bitwise) what `weighted_sum` gives it
/// with the product `e · inv` formed on the fly: the 16-lane kernel (`wide`) on `e` and
/// `inv`, the 8-lane one on weights normalized beforehand.
fn check_weighted<T: KvElem, const H: usize>(conv: impl Fn(f32) -> T, hd: usize, wide: bool) {
    let f = |i: usize| ((i * 7919 % 1999) as f32 / 999.0) - 1.0;
    let values: Vec<T> = (0..40 * hd).map(|i| conv(f(i + 7))).collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for n in [1usize, 5, 37] {
        let offs: Vec<usize> = (0..n).map(|j| ((j * 13) % 39) * hd).collect();
        let e: Vec<f32> = (0..H * n).map(|i| f(i + 3).abs()).collect();
        let inv: Vec<f32> = (0..H).map(|h| 0.1 + h as f32 * 0.07).collect();
        let start: Vec<f32> = (0..H * hd).map(|i| f(i + 11) * 0.01).collect();
        let mut grouped = start.clone();
        // SAFETY: the callers check `available_512` (wide) or `available`; all offsets + hd are
        // inside `values`.
        unsafe {
            if wide {
                weighted_sum_group::<T, H>(&mut grouped, hd, &values, &offs, 0, &e, &inv);
            } else {
                let w: Vec<f32> = e.iter().enumerate().map(|(i, x)| x * inv[i / n]).collect();
                weighted_sum_group8::<T, H>(&mut grouped, hd, &values, &offs, 0, &w);
            }
        }
        assert_ne!(bits(&grouped), bits(&start), "the sum changed nothing");
        for h in 0..H {
            let mut one = start[h * hd..(h + 1) * hd].to_vec();
            unsafe { weighted_sum(&mut one, &values, &offs, 0, &e[h * n..(h + 1) * n], inv[h]) };
            assert_eq!(bits(&grouped[h * hd..(h + 1) * hd]), bits(&one), "H={H} head {h} n={n} hd={hd} wide={wide}");
        }
    }
}

/// Both grouped weighted sums on the group sizes, widths and cache types the model meets.
fn check_weighted_shapes(wide: bool) {
    check_weighted::<f32, 1>(|x| x, 64, wide);
    check_weighted::<f32, 3>(|x| x, 80, wide);
    check_weighted::<f16, 3>(f16::from_f32, 64, wide);
    check_weighted::<f16, 4>(f16::from_f32, 128, wide);
    check_weighted::<f16, 2>(f16::from_f32, 16, wide);
}

#[test]
fn grouped_8_lane_weighted_sums_equal_per_head_sums() {
    if available() {
        check_weighted_shapes(false);
    }
}

#[test]
fn grouped_weighted_sums_equal_per_head_sums() {
    if !available_512() {
        eprintln!("16-lane weighted sum not compared: this CPU has no AVX-512F");
        return;
    }
    check_weighted_shapes(true);
}

#[test]
fn grouped_scores_equal_per_head_scores() {
    if !available() {
        return;
    }
    check::<f32, 1>(|x| x);
    check::<f32, 3>(|x| x);
    check::<f16, 2>(f16::from_f32);
    check::<f16, 3>(f16::from_f32);
    check::<f16, 4>(f16::from_f32);
}
