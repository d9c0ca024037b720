//! Micro-benchmark of the quantized matmul kernels on the default model's shapes (random
//! weights): time per call at 1, 4 and 16 activation rows, the bytes and MACs per call, and a
//! plain memory-read baseline; and the Q4_1 layers through the f32 path on dequantized panels
//! (`matmul_f32_many`) beside the int8 path, up to 256 rows (a prompt chunk). `cargo run --release -p hhh-kernels --example quant_bench`.

use hhh_kernels::quant::{matmul_f32_many, matmul_many, Q4_1Matrix};
use std::time::Instant;

mod common;
use common::{q4_1, q8_0};

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed().as_secs_f64() < 1.0 {
        f();
        n += 1;
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn main() {
    // One layer of SmolLM2-135M: q,k,v,o, gate, up, down; 30 layers share the shapes.
    let (h, kv, ff) = (576, 192, 1536);
    let layers = 30;
    let qkv = [q4_1(h, h, 1), q4_1(kv, h, 1), q4_1(kv, h, 1)];
    let o = q4_1(h, h, 1);
    let gu = [q4_1(ff, h, 1), q4_1(ff, h, 1)];
    let down = q4_1(h, ff, 1);
    let head = q8_0(49152, h, 2);
    // The same weights interleaved for the VNNI kernel (one path for every row).
    let (qkv_x, o_x, gu_x, down_x) = (qkv.clone().map(|w| w.into_x16()), o.clone().into_x16(), gu.clone().map(|w| w.into_x16()), down.clone().into_x16());
    let head_x = head.clone().into_x16();
    println!("VNNI interleaved kernel available: {}", hhh_kernels::quant::has_vnni512());
    let q4_bytes = |m: &Q4_1Matrix| m.n * m.k / 32 * 24;
    let layer_bytes: usize = qkv.iter().chain([&o]).chain(gu.iter()).chain([&down]).map(q4_bytes).sum();
    let layer_macs: usize = qkv.iter().chain([&o]).chain(gu.iter()).chain([&down]).map(|m| m.n * m.k).sum();
    println!("threads: {}", rayon::current_num_threads());
    for m in [1usize, 4, 16, 64, 256] {
        let xh: Vec<f32> = (0..m * h).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let xf: Vec<f32> = (0..m * ff).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let t_layer = time(|| {
            std::hint::black_box(matmul_many(&[&qkv[0], &qkv[1], &qkv[2]], &xh, m, true));
            std::hint::black_box(matmul_many(&[&o], &xh, m, true));
            std::hint::black_box(matmul_many(&[&gu[0], &gu[1]], &xh, m, true));
            std::hint::black_box(matmul_many(&[&down], &xf, m, true));
        });
        let t_head = time(|| {
            std::hint::black_box(head.matmul(&xh, m, true));
        });
        let t_f32 = time(|| {
            std::hint::black_box(matmul_f32_many(&[&qkv[0], &qkv[1], &qkv[2]], &xh, m, true));
            std::hint::black_box(matmul_f32_many(&[&o], &xh, m, true));
            std::hint::black_box(matmul_f32_many(&[&gu[0], &gu[1]], &xh, m, true));
            std::hint::black_box(matmul_f32_many(&[&down], &xf, m, true));
        });
        let t_x16 = time(|| {
            std::hint::black_box(matmul_many(&[&qkv_x[0], &qkv_x[1], &qkv_x[2]], &xh, m, true));
            std::hint::black_box(matmul_many(&[&o_x], &xh, m, true));
            std::hint::black_box(matmul_many(&[&gu_x[0], &gu_x[1]], &xh, m, true));
            std::hint::black_box(matmul_many(&[&down_x], &xf, m, true));
        });
        let t_head_x = time(|| {
            std::hint::black_box(head_x.matmul(&xh, m, true));
        });
        println!("m={m:3}: Q8_0 head interleaved {:.2} ms, speed vs row layout {:.2}x", t_head_x * 1e3, t_head / t_head_x);
        println!(
            "m={m:3}: Q4_1 interleaved {:.2} ms/step ({:.1} GMAC/s); speed vs int8 {:.2}x, vs f32 path {:.2}x",
            t_x16 * layers as f64 * 1e3,
            (layer_macs * m) as f64 / t_x16 / 1e9,
            t_layer / t_x16,
            t_f32 / t_x16
        );
        println!("m={m:3}: Q4_1 f32 path {:.2} ms/step ({:.1} GMAC/s), int8/f32 time ratio {:.2}", t_f32 * layers as f64 * 1e3, (layer_macs * m) as f64 / t_f32 / 1e9, t_layer / t_f32);
        println!(
            "m={m:3}: Q4_1 layers {:.2} ms/step ({:.1} GB/s weights, {:.1} GMAC/s); Q8_0 head {:.2} ms ({:.1} GB/s, {:.1} GMAC/s)",
            t_layer * layers as f64 * 1e3,
            layer_bytes as f64 / t_layer / 1e9,
            (layer_macs * m) as f64 / t_layer / 1e9,
            t_head * 1e3,
            (49152 * h / 32 * 36) as f64 / t_head / 1e9,
            (49152 * h * m) as f64 / t_head / 1e9
        );
    }
    // Baseline: summing a 256 MiB array with all threads (streaming read bandwidth).
    use rayon::prelude::*;
    let big = vec![1u64; 32 << 20];
    let t = time(|| {
        std::hint::black_box(big.par_chunks(1 << 16).map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b))).sum::<u64>());
    });
    println!("memory read baseline: {:.1} GB/s", (big.len() * 8) as f64 / t / 1e9);
}
