//! Random weights of valid ggml block formats for the kernels' examples (benchmarks): the same
//! bytes for a seed.

use hhh_kernels::quant::{Q4_1Matrix, Q8_0Matrix};

/// Random bytes (an LCG), the same for a seed.
pub fn rand_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// A Q4_1 `[n, k]` matrix in the row layout: f16 scale 0.005 and min −0.04, random quants.
pub fn q4_1(n: usize, k: usize, seed: u64) -> Q4_1Matrix {
    let mut b = rand_bytes(n * k / 32 * 20, seed);
    for c in b.chunks_exact_mut(20) {
        c[0..2].copy_from_slice(&half::f16::from_f32(0.005).to_le_bytes());
        c[2..4].copy_from_slice(&half::f16::from_f32(-0.04).to_le_bytes());
    }
    Q4_1Matrix::from_bytes(&b, n, k).expect("shape")
}

/// A Q8_0 `[n, k]` matrix in the row layout: f16 scale 0.005, random quants.
pub fn q8_0(n: usize, k: usize, seed: u64) -> Q8_0Matrix {
    let mut b = rand_bytes(n * k / 32 * 34, seed);
    for c in b.chunks_exact_mut(34) {
        c[0..2].copy_from_slice(&half::f16::from_f32(0.005).to_le_bytes());
    }
    Q8_0Matrix::from_bytes(&b, n, k).expect("shape")
}
