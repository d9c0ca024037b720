//! `hhh-server gpu-check`: the checks and figures that need a GPU, as one command that writes
//! JSON (run by scripts/gpu-check.sh on a GPU machine). Stages:
//! - `kernels`: our KV-write and paged-attention ops on the device against their CPU twins
//!   (f32/f16/bf16, head dims 64 and 128, GQA 4, decode rows over two partitions and prefill
//!   chunks from a cached prefix, in one mixed step); every kernel entry point is loaded.
//! - `greedy`: a random Llama (head_dim 64) generated here, served by the GPU engine on the
//!   device and on candle's CPU backend: f32 teacher-forced logprobs within 1e-3 relative and the
//!   same greedy tokens; bf16 on the device against f32 on the CPU, greedy agreement >= 95 %.
//! - `bench`: an 8B-shaped random bf16 model (Llama-3-8B shape) made on the device: decode
//!   steps at batch 1, 16 and 64, a 4096-token prefill, and the HBM roofline from a copy
//!   bandwidth measured in the same run.
//!
//! `--dry-run` runs every stage on candle's CPU backend with small shapes (what CI can check);
//! without it and without a CUDA device the command fails, it never skips.

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use clap::Args;
use hhh_engine::{spawn_engine, EngineClient, EngineConfig, ExecutorError, SamplingParams, SchedulerConfig};
use hhh_kernels::cpu::CacheGeom;
use hhh_kernels::SeqMeta;
use hhh_model::gpu::ops::{KvWrite, PagedAttention};
use hhh_model::gpu::step::StepMeta;
use hhh_model::gpu::{GpuLlama, GpuRunner};
use hhh_model::LlamaConfig;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Flags of `hhh-server gpu-check`.
#[derive(Args, Debug, Clone)]
pub struct GpuCheckArgs {
    /// Where to write the results (JSON).
    #[arg(long, default_value = "gpu-check.json")]
    pub out: PathBuf,
    /// Run every stage on candle's CPU backend with small shapes (no GPU needed).
    #[arg(long)]
    pub dry_run: bool,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// Stages to run (comma-separated): kernels, greedy, bench.
    #[arg(long, value_delimiter = ',', default_value = "kernels,greedy,bench")]
    pub stages: Vec<String>,
    /// Write a small random Llama (head_dim 64) with a word-level tokenizer to this directory
    /// and exit (for the end-to-end server stage of scripts/gpu-check.sh).
    #[arg(long)]
    pub write_model: Option<PathBuf>,
}

/// Run the requested stages; the JSON is written even when a stage fails.
pub fn run(a: GpuCheckArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.write_model {
        write_small_model(dir, DType::F32)?;
        println!("wrote a random Llama with a word-level tokenizer to {}", dir.display());
        return Ok(());
    }
    let device = if a.dry_run { Device::Cpu } else { hhh_model::gpu::DeviceSpec::Cuda(a.device).candle_device().context("gpu-check needs a CUDA device (use --dry-run on a machine without one)")? };
    let mut report = json!({"dry_run": a.dry_run, "device": if a.dry_run { "cpu (dry run)".to_string() } else { format!("cuda:{}", a.device) }, "stages": {}});
    let mut ok = true;
    for stage in &a.stages {
        let t0 = Instant::now();
        let r = match stage.as_str() {
            "kernels" => kernels(&device),
            "greedy" => greedy(&device),
            "bench" => bench(&device, a.dry_run),
            s => Err(anyhow::anyhow!("unknown stage `{s}` (kernels, greedy, bench)")),
        };
        let mut v = r.unwrap_or_else(|e| json!({"pass": false, "error": format!("{e:#}")}));
        v["seconds"] = json!(t0.elapsed().as_secs_f64());
        ok &= v["pass"].as_bool().unwrap_or(false);
        eprintln!("gpu-check {stage}: {}", serde_json::to_string(&v)?);
        report["stages"][stage] = v;
    }
    report["pass"] = json!(ok);
    std::fs::write(&a.out, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", a.out.display()))?;
    anyhow::ensure!(ok, "gpu-check failed; see {}", a.out.display());
    Ok(())
}

fn rand_tensor(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    let d = (a.to_dtype(DType::F32)?.to_device(&Device::Cpu)? - b.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)?.abs()?;
    Ok(d.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// One mixed step of the custom ops on `device` and on the CPU (twins), compared.
fn kernel_case(device: &Device, dtype: DType, hd: usize) -> anyhow::Result<(f32, f32)> {
    let geom = CacheGeom { block_size: 16, num_kv_heads: 2, head_dim: hd };
    let heads = 8;
    let num_blocks = 160;
    // Scattered tables: block ids from a stride through the pool.
    let table = |start: usize, n: usize| -> Vec<u32> { (0..n).map(|i| ((start + i * 37) % num_blocks) as u32).collect() };
    // (start_pos, rows): decode over two partitions, short decode, chunk over a cached prefix
    // not on a block boundary, a chunk from position 0.
    let shapes = [(700usize, 1usize), (20, 1), (50, 37), (0, 5)];
    let (mut seqs, mut row, mut next) = (vec![], 0, 0);
    for (start, rows) in shapes {
        let nb = (start + rows).div_ceil(16);
        seqs.push(SeqMeta { row_start: row, num_rows: rows, start_pos: start, block_table: table(next, nb) });
        next += nb;
        row += rows;
    }
    let w = geom.slot_width();
    let cache_host = Tensor::from_vec(rand_tensor(2 * num_blocks * 16 * w, 1, 1.0), (2, num_blocks * 16, w), &Device::Cpu)?.to_dtype(dtype)?;
    let k = Tensor::from_vec(rand_tensor(row * w, 2, 1.0), (row, w), &Device::Cpu)?.to_dtype(dtype)?;
    let v = Tensor::from_vec(rand_tensor(row * w, 3, 1.0), (row, w), &Device::Cpu)?.to_dtype(dtype)?;
    let q = Tensor::from_vec(rand_tensor(row * heads * hd, 4, 2.0), (row, heads * hd), &Device::Cpu)?.to_dtype(dtype)?;
    let run = |dev: &Device| -> anyhow::Result<(Tensor, Tensor)> {
        let meta = Arc::new(StepMeta::new(geom, seqs.clone(), row, num_blocks, dev)?);
        let cache = cache_host.to_device(dev)?.copy()?;
        cache.inplace_op3(&k.to_device(dev)?, &v.to_device(dev)?, &KvWrite { meta: meta.clone() })?;
        let out = q.to_device(dev)?.apply_op2_no_bwd(&cache, &PagedAttention { meta, num_heads: heads })?;
        Ok((cache, out))
    };
    let (c_dev, o_dev) = run(device)?;
    let (c_cpu, o_cpu) = run(&Device::Cpu)?;
    Ok((max_abs_diff(&c_dev, &c_cpu)?, max_abs_diff(&o_dev, &o_cpu)?))
}

fn kernels(device: &Device) -> anyhow::Result<Value> {
    let mut cases = vec![];
    let mut pass = true;
    for (dtype, tol) in [(DType::F32, 1e-4f32), (DType::F16, 5e-3), (DType::BF16, 3e-2)] {
        for hd in [64, 128] {
            let (cache_diff, out_diff) = kernel_case(device, dtype, hd)?;
            let ok = cache_diff == 0.0 && out_diff <= tol;
            pass &= ok;
            cases.push(json!({"dtype": format!("{dtype:?}"), "head_dim": hd, "cache_max_diff": cache_diff, "out_max_diff": out_diff, "tolerance": tol, "pass": ok}));
        }
    }
    Ok(json!({"pass": pass, "cases": cases}))
}

/// A small random Llama with head_dim 64 and GQA 2 (vocab 512), plus a word-level tokenizer.
/// Its LM head is scaled up so that next-token distributions are peaked (a random model's are
/// otherwise nearly flat, and any rounding flips its greedy choices).
fn write_small_model(dir: &Path, dtype: DType) -> anyhow::Result<()> {
    let spec = hhh_model::testing::RandomLlama { vocab: 512, hidden: 256, intermediate: 512, layers: 4, heads: 4, kv_heads: 2, max_pos: 2048, scale: 0.05, head_scale: 4.0, seed: 42 };
    hhh_model::testing::make_random_llama(dir, dtype, &spec, None)?;
    hhh_model::testing::write_word_tokenizer_n(dir, spec.vocab)?;
    Ok(())
}

fn engine_on(dir: &Path, device: &Device, dtype: DType) -> anyhow::Result<EngineClient> {
    let cfg = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_seqs: 16,
            max_num_batched_tokens: 64,
            max_model_len: 1024,
            block_size: 16,
            num_blocks: 256,
            enable_prefix_caching: true,
            eos_token_ids: vec![],
            ..Default::default()
        },
        ..Default::default()
    };
    let (dir, device) = (dir.to_path_buf(), device.clone());
    Ok(spawn_engine(cfg, move |kv| {
        let m = GpuLlama::load(&dir, &device, dtype).map_err(ExecutorError::startup)?;
        GpuRunner::new(m, kv).map_err(ExecutorError::startup)
    })?)
}

/// What one request produced: greedy tokens, and per prompt position the logprob of the next
/// prompt token and the model's own best next token.
struct Generated {
    tokens: Vec<u32>,
    prompt_lps: Vec<f32>,
    prompt_best: Vec<u32>,
}

/// Greedy tokens (and prompt logprobs when asked) of each prompt, all submitted at once.
fn generate(e: &EngineClient, prompts: &[Vec<u32>], n: usize, prompt_logprobs: bool) -> anyhow::Result<Vec<Generated>> {
    let params = SamplingParams { temperature: 0.0, max_tokens: n, ignore_eos: true, logprobs: Some(0), prompt_logprobs: prompt_logprobs.then_some(1), ..Default::default() };
    let hs: Vec<_> = prompts.iter().map(|p| e.submit(p.clone(), params.clone())).collect::<Result<_, _>>()?;
    let mut out = vec![];
    for h in hs {
        let c = h.blocking_collect().result().map_err(|err| anyhow::anyhow!("request failed: {err}"))?;
        let lps = c.prompt_logprobs.iter().map(|l| l.logprob).collect();
        let best = c.prompt_logprobs.iter().map(|l| l.top.first().map_or(u32::MAX, |t| t.0)).collect();
        out.push(Generated { tokens: c.tokens.iter().map(|t| t.token).collect(), prompt_lps: lps, prompt_best: best });
    }
    Ok(out)
}

fn greedy(device: &Device) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("hhh-gpu-check-model-{}", std::process::id()));
    write_small_model(&dir, DType::F32)?;
    let prompts: Vec<Vec<u32>> = [3usize, 17, 64, 150].iter().enumerate().map(|(k, &n)| (0..n).map(|i| ((i * 31 + k * 101) % 500 + 8) as u32).collect()).collect();
    const N: usize = 64;
    let cpu = engine_on(&dir, &Device::Cpu, DType::F32)?;
    let want = generate(&cpu, &prompts, N, false)?;
    // f32 on the device: teacher-forced logprobs of prompt + the CPU's tokens, and greedy tokens.
    let dev32 = engine_on(&dir, device, DType::F32)?;
    let full: Vec<Vec<u32>> = prompts.iter().zip(&want).map(|(p, g)| p.iter().chain(&g.tokens).copied().collect()).collect();
    let tf_dev = generate(&dev32, &full, 1, true)?;
    let tf_cpu = generate(&cpu, &full, 1, true)?;
    let rel = tf_dev.iter().zip(&tf_cpu).flat_map(|(a, b)| a.prompt_lps.iter().zip(&b.prompt_lps).map(|(x, y)| (x - y).abs() / y.abs().max(1.0))).fold(0f32, f32::max);
    let got32 = generate(&dev32, &prompts, N, false)?;
    let same32 = got32.iter().zip(&want).all(|(a, b)| a.tokens == b.tokens);
    // bf16 on the device against f32 on the CPU: at each of the 64 generated positions, teacher-
    // forced on the f32 sequence, is bf16's greedy choice the f32 one? (Free-running sequences
    // stop being comparable after their first divergence; that figure is reported too.)
    let dev16 = engine_on(&dir, device, DType::BF16)?;
    let tf16 = generate(&dev16, &full, 1, true)?;
    let (mut agree, mut total) = (0usize, 0usize);
    for ((p, f), g) in prompts.iter().zip(&full).zip(&tf16) {
        for pos in p.len() - 1..f.len() - 1 {
            total += 1;
            agree += usize::from(g.prompt_best.get(pos) == Some(&f[pos + 1]));
        }
    }
    let frac = agree as f64 / total.max(1) as f64;
    let got16 = generate(&dev16, &prompts, N, false)?;
    let prefix: usize = got16.iter().zip(&want).map(|(a, b)| a.tokens.iter().zip(&b.tokens).take_while(|(x, y)| x == y).count()).sum();
    for e in [cpu, dev32, dev16] {
        e.shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let pass = rel <= 1e-3 && same32 && frac >= 0.95;
    Ok(json!({"pass": pass, "f32_teacher_forced_max_rel_diff": rel, "f32_greedy_identical": same32,
        "bf16_greedy_agreement": frac, "bf16_free_running_tokens_before_divergence": prefix as f64 / (prompts.len() * N) as f64,
        "tokens_per_prompt": N, "prompts": prompts.len()}))
}

/// Median milliseconds of `f` over `reps` runs after `warm` warm-up runs (device synchronised).
fn time_ms(device: &Device, warm: usize, reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..warm {
        f()?;
    }
    device.synchronize()?;
    let mut v = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        device.synchronize()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

fn bench(device: &Device, dry: bool) -> anyhow::Result<Value> {
    // Llama-3-8B's shape (bf16 weights ~16 GB), or a small one for the dry run.
    let (h, i, layers, heads, kv, vocab) = if dry { (256, 512, 2, 4, 2, 1024) } else { (4096, 14336, 32, 32, 8, 128256) };
    let cfg = LlamaConfig {
        vocab_size: vocab,
        hidden_size: h,
        intermediate_size: i,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: h / heads,
        rms_norm_eps: 1e-5,
        rope_theta: 500000.0,
        max_position_embeddings: 8192,
        rope_interleaved: false,
        tie_word_embeddings: false,
        eos_token_ids: vec![],
        bos_token_id: None,
    };
    let dtype = if dry { DType::F32 } else { DType::BF16 };
    let model = GpuLlama::random(cfg.clone(), device, dtype)?;
    let wbytes = model.weight_bytes();
    // Copy bandwidth: read + write of a 2 GiB buffer (16 MiB in the dry run).
    let n = if dry { 4 << 20 } else { 512 << 20 };
    let buf = Tensor::zeros(n, DType::F32, device)?;
    let copy_ms = time_ms(device, 2, 10, || {
        let _c = buf.copy()?;
        Ok(())
    })?;
    let bw = 2.0 * (n * 4) as f64 / (copy_ms / 1e3);
    drop(buf);
    let (ctx, bs) = (512usize, 16usize);
    let per_seq = (ctx + 32).div_ceil(bs);
    let cache = model.new_cache(64 * per_seq + 4096 / bs + 1, bs)?;
    let mut decode = vec![];
    for b in [1usize, 16, 64] {
        let seqs: Vec<SeqMeta> = (0..b).map(|s| SeqMeta { row_start: s, num_rows: 1, start_pos: ctx, block_table: ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect() }).collect();
        let ids = vec![1u32; b];
        let pos = vec![ctx; b];
        let want: Vec<u32> = (0..b as u32).collect();
        let ms = time_ms(device, 3, if dry { 3 } else { 20 }, || {
            let hdn = model.forward_hidden(&ids, &pos, seqs.clone(), &cache, bs, &want)?.context("no hidden rows")?;
            model.logits(&hdn)?;
            Ok(())
        })?;
        decode.push(json!({"batch": b, "context": ctx, "step_ms": ms, "tokens_per_s": b as f64 / (ms / 1e3)}));
    }
    let pt = if dry { 128 } else { 4096 };
    let base = (64 * per_seq) as u32;
    let seqs = vec![SeqMeta { row_start: 0, num_rows: pt, start_pos: 0, block_table: (base..base + pt.div_ceil(bs) as u32).collect() }];
    let (ids, pos) = (vec![1u32; pt], (0..pt).collect::<Vec<_>>());
    let pms = time_ms(device, 1, 3, || {
        let hdn = model.forward_hidden(&ids, &pos, seqs.clone(), &cache, bs, &[pt as u32 - 1])?.context("no hidden rows")?;
        model.logits(&hdn)?;
        Ok(())
    })?;
    let roofline_ms = wbytes as f64 / bw * 1e3;
    let b1 = decode[0]["step_ms"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "pass": true,
        "shape": if dry { "small (dry run)" } else { "Llama-3-8B (random bf16 weights)" },
        "weight_bytes": wbytes, "copy_bandwidth_gb_s": bw / 1e9,
        "decode": decode,
        "prefill": {"tokens": pt, "ms": pms, "tokens_per_s": pt as f64 / (pms / 1e3)},
        "batch1_roofline_ms": roofline_ms, "batch1_vs_roofline": b1 / roofline_ms,
        "notes": "random weights; KV contents are zeros (timing only); roofline = weight bytes / measured copy bandwidth (read + write)"
    }))
}
