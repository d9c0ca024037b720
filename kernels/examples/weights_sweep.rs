//! Time of the default model's matmuls with their weights coming from memory, as in a decode
//! step: 30 distinct layers' Q4_1 projections (Q/K/V fused, O, gate/up fused, down) and the
//! Q8_0 head, random weights of the real shapes (~91 MB, past any L3 of these VMs), swept in
//! order for 1, 4 and 16 activation rows: the median time per sweep and per projection kind,
//! and the weight bytes per second. `quant_bench` times one layer repeated (its weights cache
//! resident); `step_bench` the whole forward pass.
//! `cargo run --release -p hhh-kernels --example weights_sweep`

use hhh_kernels::quant::{matmul_many, Q4_1Matrix, Q8_0Matrix};
use std::time::Instant;

mod common;

/// A Q4_1 matrix in the layout the model uses.
fn q4_1(n: usize, k: usize, seed: u64) -> Q4_1Matrix {
    common::q4_1(n, k, seed).interleaved()
}

/// A Q8_0 matrix in the layout the model uses.
fn q8_0(n: usize, k: usize) -> Q8_0Matrix {
    common::q8_0(n, k, 2).interleaved()
}

/// One layer's projections: Q/K/V, O, gate/up, down.
struct Layer {
    qkv: [Q4_1Matrix; 3],
    o: Q4_1Matrix,
    gu: [Q4_1Matrix; 2],
    down: Q4_1Matrix,
}

fn main() {
    let (h, kv, ff) = (576, 192, 1536);
    let pool = rayon::ThreadPoolBuilder::new().build().expect("thread pool");
    let layers: Vec<Layer> = (0..30u64)
        .map(|l| Layer {
            qkv: [q4_1(h, h, l * 10 + 1), q4_1(kv, h, l * 10 + 2), q4_1(kv, h, l * 10 + 3)],
            o: q4_1(h, h, l * 10 + 4),
            gu: [q4_1(ff, h, l * 10 + 5), q4_1(ff, h, l * 10 + 6)],
            down: q4_1(h, ff, l * 10 + 7),
        })
        .collect();
    let head = q8_0(49152, h);
    // On huge pages, as the server loads them.
    let mut ranges = head.buffers();
    for l in &layers {
        for w in l.qkv.iter().chain([&l.o]).chain(&l.gu).chain([&l.down]) {
            ranges.extend(w.buffers());
        }
    }
    let bytes: usize = ranges.iter().map(|r| r.1).sum();
    let huge = hhh_kernels::mem::collapse_huge_pages(&ranges);
    println!("weights {:.1} MB ({:.1} MB on huge pages), {} threads", bytes as f64 / 1e6, huge as f64 / 1e6, rayon::current_num_threads());
    let kinds = ["Q/K/V", "O", "gate/up", "down", "head"];
    let kind_bytes = {
        let b = |ws: &[&Q4_1Matrix]| ws.iter().flat_map(|w| w.buffers()).map(|r| r.1).sum::<usize>() * layers.len();
        let l = &layers[0];
        [b(&[&l.qkv[0], &l.qkv[1], &l.qkv[2]]), b(&[&l.o]), b(&[&l.gu[0], &l.gu[1]]), b(&[&l.down]), head.buffers().iter().map(|r| r.1).sum()]
    };
    for rows in [1usize, 4, 16] {
        let xh: Vec<f32> = (0..h * rows).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let xf: Vec<f32> = (0..ff * rows).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        // Per sweep: the time of each kind (summed over layers) and of the whole sweep.
        let mut sweeps: Vec<[f64; 6]> = Vec::new();
        pool.install(|| {
            let t = Instant::now();
            while t.elapsed().as_secs_f64() < 3.0 {
                let mut r = [0f64; 6];
                let s0 = Instant::now();
                let mut timed = |i: usize, f: &mut dyn FnMut()| {
                    let s = Instant::now();
                    f();
                    r[i] += s.elapsed().as_secs_f64() * 1e3;
                };
                for l in &layers {
                    timed(0, &mut || drop(std::hint::black_box(matmul_many(&[&l.qkv[0], &l.qkv[1], &l.qkv[2]], &xh, rows, true))));
                    timed(1, &mut || drop(std::hint::black_box(matmul_many(&[&l.o], &xh, rows, true))));
                    timed(2, &mut || drop(std::hint::black_box(matmul_many(&[&l.gu[0], &l.gu[1]], &xh, rows, true))));
                    timed(3, &mut || drop(std::hint::black_box(matmul_many(&[&l.down], &xf, rows, true))));
                }
                timed(4, &mut || drop(std::hint::black_box(head.matmul(&xh, rows, true))));
                r[5] = s0.elapsed().as_secs_f64() * 1e3;
                sweeps.push(r);
            }
        });
        let median = |i: usize| {
            let mut v: Vec<f64> = sweeps.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let per_kind: Vec<String> = kinds.iter().enumerate().map(|(i, k)| format!("{k} {:.3} ms ({:.1} GB/s)", median(i), kind_bytes[i] as f64 / median(i) / 1e6)).collect();
        let macs = rows * (layers.len() * (h * (h + 2 * kv) + h * h + 2 * ff * h + h * ff) + 49152 * h);
        println!(
            "{rows:2} rows: sweep median {:.2} ms ({:.1} GB/s of weights, {:.1} GMAC/s; {} sweeps): {}",
            median(5),
            bytes as f64 / median(5) / 1e6,
            macs as f64 / median(5) / 1e6,
            sweeps.len(),
            per_kind.join(", ")
        );
    }
}
