//! Time of one forward pass of the default model (logits for the last row of each sequence)
//! at a decode step of 1, 4, 16, 32 and 64 sequences and a 256-token prefill chunk, outside the server:
//! `cargo run --release -p hhh-model --example step_bench [model.gguf]`. Compare with
//! `hhh-kernels`' `quant_bench` (the matmuls alone) to see the per-step overhead.
//!
//! A/B switches, read here and handed to the model and kernels as configuration (the server's
//! `--prompt-int8`, `--no-avx512`, `--no-vnni512`): `HHH_PROMPT_INT8=1`, `HHH_NO_AVX512=1`,
//! `HHH_NO_VNNI512=1`; `HHH_NO_THP=1` (weights and KV cache left on 4 KiB pages, read by
//! `hhh_kernels::mem` in the server too); `HHH_NO_PREFETCH_HINTS=1` (no prefetch hints to the
//! kernel pool's helpers). `STEP_BENCH_AB_HINTS=1` alternates hints on and off step by step in
//! this one process and reports both (the A/B that resists this VM's drift).

use hhh_model::attention::{KvDtype, PagedKvCache, SeqMeta};
use hhh_model::llama::LlamaModel;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let on = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let isa = hhh_kernels::quant::isa::IsaLimits { no_avx512: on("HHH_NO_AVX512"), no_vnni512: on("HHH_NO_VNNI512") };
    hhh_kernels::quant::isa::limit(isa).map_err(|now| format!("ISA limits already fixed: {now:?}"))?;
    hhh_kernels::pool::set_prefetch_hints(!on("HHH_NO_PREFETCH_HINTS"));
    let ab = on("STEP_BENCH_AB_HINTS");
    let mut model = LlamaModel::load(std::path::Path::new(&path))?;
    model.prompt_f32 = !on("HHH_PROMPT_INT8");
    let c = model.cfg.clone();
    let (bs, ctx) = (16usize, 160usize);
    let pool = rayon::ThreadPoolBuilder::new().build()?;
    // `STEP_BENCH_ONLY=1` (or 16, 256): only that case (for a profiler).
    let only: Option<usize> = std::env::var("STEP_BENCH_ONLY").ok().and_then(|v| v.parse().ok());
    for (seqs, rows_per_seq) in [(1usize, 1usize), (4, 1), (16, 1), (32, 1), (64, 1), (1, 256)] {
        if only.is_some_and(|o| o != seqs * rows_per_seq) {
            continue;
        }
        let blocks_per_seq = (ctx + rows_per_seq).div_ceil(bs);
        let mut kv = PagedKvCache::new(c.num_layers, seqs * blocks_per_seq, bs, c.num_kv_heads, c.head_dim, KvDtype::F16);
        let metas: Vec<SeqMeta> = (0..seqs)
            .map(|s| SeqMeta { row_start: s * rows_per_seq, num_rows: rows_per_seq, start_pos: ctx, block_table: (0..blocks_per_seq).map(|b| (s * blocks_per_seq + b) as u32).collect() })
            .collect();
        let n = seqs * rows_per_seq;
        let ids: Vec<u32> = (0..n).map(|i| (i * 37 % 1000) as u32 + 10).collect();
        let positions: Vec<usize> = (0..n).map(|i| ctx + i % rows_per_seq).collect();
        let want: Vec<u32> = (0..seqs).map(|s| ((s + 1) * rows_per_seq - 1) as u32).collect();
        // The prefill chunk is prompt tokens (the f32 path unless `HHH_PROMPT_INT8=1`); decode
        // rows are generated tokens.
        let prompt_rows = vec![rows_per_seq > 1; n];
        let mut step = || pool.install(|| model.forward(&ids, &positions, &metas, &mut kv, &want, &prompt_rows).map(|_| ()));
        step()?;
        let t = Instant::now();
        // Per-step times: the median and the minimum resist this VM's noise better than a mean.
        let mut ms = Vec::new();
        // With `ab`, per-step times with hints off (0) and on (1).
        let mut by_hint: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        while t.elapsed().as_secs_f64() < 3.0 {
            let on = !ab || ms.len() % 2 == 1;
            if ab {
                hhh_kernels::pool::set_prefetch_hints(on);
            }
            let s = Instant::now();
            step()?;
            let e = s.elapsed().as_secs_f64() * 1e3;
            ms.push(e);
            by_hint[on as usize].push(e);
        }
        if ab {
            hhh_kernels::pool::set_prefetch_hints(!on("HHH_NO_PREFETCH_HINTS"));
            let [off, with] = by_hint.map(|mut v| {
                v.sort_by(f64::total_cmp);
                (v[v.len() / 2], v[0])
            });
            println!("   hints off: median {:.3} ms, min {:.3}; on: median {:.3} ms, min {:.3} (on/off medians {:.3})", off.0, off.1, with.0, with.1, with.0 / off.0);
        }
        let mean = t.elapsed().as_secs_f64() * 1e3 / ms.len() as f64;
        ms.sort_by(f64::total_cmp);
        println!("{seqs:2} seqs x {rows_per_seq:3} rows (context {ctx}): {mean:.2} ms per step (median {:.2}, min {:.2}, {} steps)", ms[ms.len() / 2], ms[0], ms.len());
    }
    Ok(())
}
