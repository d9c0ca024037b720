//! Time of the CPU paged attention alone (f16 cache, the default model's shape: 9 query heads,
//! 3 KV heads of 64, 30 layers) for a decode step of 1, 4, 16 and 64 sequences at context 160,
//! with blocks of each sequence scattered over a pool of the server's default size, as a
//! long-running server leaves them:
//! `cargo run --release -p hhh-kernels --example attn_bench`. Compare with `hhh-model`'s
//! `step_bench` (the whole forward pass) for attention's share of a step.

use hhh_kernels::cpu::{paged_attention, write_kv};
use hhh_kernels::{KvDtype, PagedKvCache, SeqMeta};
use std::time::Instant;

fn main() {
    let (layers, nh, nkv, hd, bs, ctx) = (30usize, 9usize, 3usize, 64usize, 16usize, 160usize);
    let pool = rayon::ThreadPoolBuilder::new().build().expect("thread pool");
    for seqs in [1usize, 4, 16, 64] {
        let per = (ctx + 1).div_ceil(bs);
        // A pool of 16384 tokens (the server's default at up to 32 sequences), or enough.
        let blocks = (16384 / bs).max(seqs * per);
        let mut kv = PagedKvCache::new(layers, blocks, bs, nkv, hd, KvDtype::F16);
        // Block `b` of sequence `s`: a fixed permutation of the pool (stride coprime to it),
        // the first `seqs * per` of it.
        let stride = (0..).map(|i| 7919 + i).find(|p| gcd(*p, blocks) == 1).unwrap_or(1);
        let metas: Vec<SeqMeta> = (0..seqs).map(|s| SeqMeta { row_start: s, num_rows: 1, start_pos: ctx, block_table: (0..per).map(|b| ((s * per + b) * stride % blocks) as u32).collect() }).collect();
        let f = |i: usize| ((i * 7919 % 1999) as f32 / 999.0) - 1.0;
        // Fill every position 0..=ctx of every sequence and layer.
        let w = nkv * hd;
        for l in 0..layers {
            for s in &metas {
                let all = SeqMeta { row_start: 0, num_rows: ctx + 1, start_pos: 0, block_table: s.block_table.clone() };
                let k: Vec<f32> = (0..(ctx + 1) * w).map(|i| f(i + l)).collect();
                let v: Vec<f32> = (0..(ctx + 1) * w).map(|i| f(i + 3 * l + 1)).collect();
                write_kv(&mut kv, l, &[all], &k, &v);
            }
        }
        let q: Vec<f32> = (0..seqs * nh * hd).map(|i| f(i + 5) * 0.3).collect();
        let step = || {
            pool.install(|| {
                for l in 0..layers {
                    std::hint::black_box(paged_attention(&kv, l, &metas, &q, nh));
                }
            })
        };
        step();
        let t = Instant::now();
        let mut ms = Vec::new();
        while t.elapsed().as_secs_f64() < 2.0 {
            let s = Instant::now();
            step();
            ms.push(s.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        let bytes = (seqs * (ctx + 1) * w * 2 * 2 * layers) as f64;
        println!(
            "{seqs:2} seqs (context {ctx}, {layers} layers): median {:.2} ms, min {:.2} ms per step; K/V {:.1} MB, {:.1} GB/s at the median",
            ms[ms.len() / 2],
            ms[0],
            bytes / 1e6,
            bytes / ms[ms.len() / 2] / 1e6
        );
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
