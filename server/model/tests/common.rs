//! Shared helpers for the model tests.
#![allow(dead_code)]

use hhh_engine::{spawn_engine, EngineClient, EngineConfig, EngineEvent, ExecutorError, SamplingParams, SchedulerConfig};
use hhh_model::{LlamaModel, ModelRunner, RunnerConfig};
use std::path::PathBuf;

/// The default model (fetched by `make model`); tests fail loudly when it is missing.
pub fn default_model() -> PathBuf {
    let p = std::env::var("HHH_TEST_MODEL").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(p.exists(), "{} is missing: run `make model` first", p.display());
    p
}

/// The engine settings every test engine here uses.
fn engine_config(num_blocks: usize, block_size: usize, budget: usize) -> EngineConfig {
    EngineConfig {
        scheduler: SchedulerConfig {
            max_num_seqs: 16,
            max_num_batched_tokens: budget,
            max_model_len: 1024,
            block_size,
            num_blocks,
            enable_prefix_caching: true,
            eos_token_ids: vec![],
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn engine(path: PathBuf, num_blocks: usize, block_size: usize, budget: usize) -> EngineClient {
    engine_with(path, num_blocks, block_size, budget, false)
}

/// `dense`: read the paged cache through the block tables but do the attention arithmetic with
/// candle's dense ops, exactly as the reference models do.
pub fn engine_with(path: PathBuf, num_blocks: usize, block_size: usize, budget: usize, dense: bool) -> EngineClient {
    let cfg = engine_config(num_blocks, block_size, budget);
    spawn_engine(cfg, move |kv| {
        let mut m = LlamaModel::load(&path).map_err(ExecutorError::startup)?;
        m.dense_attention = dense;
        Ok(ModelRunner::new(m, RunnerConfig { kv, kv_dtype: None, threads: 0 }))
    })
    .expect("engine starts")
}

pub fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_tokens, ignore_eos: true, ..Default::default() }
}

/// Submit all prompts at once and collect each one's generated tokens.
pub fn run_all(client: &EngineClient, prompts: &[Vec<u32>], params: SamplingParams) -> Vec<Vec<u32>> {
    let mut handles: Vec<_> = prompts.iter().map(|p| client.submit(p.clone(), params.clone()).unwrap()).collect();
    handles
        .iter_mut()
        .map(|h| {
            let mut out = vec![];
            while let Some(ev) = h.blocking_recv() {
                match ev {
                    EngineEvent::Token(t) => out.push(t.token),
                    EngineEvent::Finished { error, .. } => {
                        assert!(error.is_none(), "request failed: {error:?}");
                        break;
                    }
                    _ => {}
                }
            }
            out
        })
        .collect()
}

/// Greedy reference tokens plus, at each step, the gap between the best two logits.
pub struct RefRun {
    pub tokens: Vec<u32>,
    pub gaps: Vec<f32>,
    /// The reference's five best tokens at each step.
    pub top5: Vec<Vec<u32>>,
    /// The reference's logprob of its own token at each step.
    pub logprobs: Vec<f32>,
}

pub fn top5(logits: &[f32]) -> Vec<u32> {
    hhh_model::sampler::top_logprobs(logits, 5).into_iter().map(|(t, _)| t).collect()
}

pub fn argmax_gap(logits: &[f32]) -> (u32, f32) {
    let mut best = 0;
    for i in 0..logits.len() {
        if logits[i] > logits[best] {
            best = i;
        }
    }
    let second = logits.iter().enumerate().filter(|(i, _)| *i != best).map(|(_, &v)| v).fold(f32::NEG_INFINITY, f32::max);
    (best as u32, logits[best] - second)
}

/// Compare engine output with the reference: equal token for token, or (as vLLM's
/// `check_logprobs_close`) diverging only at a near-tie, where the reference's two best logits
/// were within `tol` and the engine's token is among the reference's top five. Nothing after
/// the first divergence is compared (the contexts differ from there on).
pub fn compare(name: &str, got: &[u32], want: &RefRun, tol: f32) -> Result<(), String> {
    if got.len() != want.tokens.len() {
        return Err(format!("{name}: got {} tokens, want {}", got.len(), want.tokens.len()));
    }
    if let Some(i) = got.iter().zip(&want.tokens).position(|(a, b)| a != b) {
        if want.gaps[i] >= tol || !want.top5[i].contains(&got[i]) {
            return Err(format!("{name}: token {i} differs ({} vs {}), reference gap {}", got[i], want.tokens[i], want.gaps[i]));
        }
        eprintln!("{name}: identical for {i} tokens, then diverged on a near-tie (gap {})", want.gaps[i]);
    } else {
        eprintln!("{name}: identical for all {} tokens", got.len());
    }
    Ok(())
}

/// Prompts of different lengths made of real vocabulary ids.
pub fn prompts() -> Vec<Vec<u32>> {
    let lens = [1usize, 7, 16, 33, 70, 129];
    lens.iter().enumerate().map(|(k, &n)| (0..n).map(|i| (100 + (i * 37 + k * 1009) % 20000) as u32).collect()).collect()
}

/// Wait (up to 10 s) until the engine reports no request holding KV blocks; returns the count.
pub fn wait_no_blocks(client: &EngineClient) -> u64 {
    use std::sync::atomic::Ordering;
    for _ in 0..1000 {
        let n = client.stats().num_requests_with_blocks.load(Ordering::SeqCst);
        if n == 0 {
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    client.stats().num_requests_with_blocks.load(Ordering::SeqCst)
}

/// Greedy decode of `new_tokens` tokens with a reference model: `forward(input, pos)` runs the
/// new `input` tokens at position `pos` against the model's own contiguous cache and returns the
/// last position's logits.
pub fn greedy_reference(prompt: &[u32], new_tokens: usize, mut forward: impl FnMut(&[u32], usize) -> Vec<f32>) -> RefRun {
    let (mut tokens, mut gaps, mut tops, mut lps) = (vec![], vec![], vec![], vec![]);
    let mut input = prompt.to_vec();
    let mut pos = 0;
    for _ in 0..new_tokens {
        let logits = forward(&input, pos);
        pos += input.len();
        let (t, g) = argmax_gap(&logits);
        tokens.push(t);
        gaps.push(g);
        tops.push(top5(&logits));
        lps.push(hhh_model::sampler::log_softmax(&logits)[t as usize]);
        input = vec![t];
    }
    RefRun { tokens, gaps, top5: tops, logprobs: lps }
}

#[allow(unused_imports)]
pub use hhh_model::testing::make_tiny_model;

/// Greedy runs of candle-transformers' `llama` (contiguous KV cache, f32 compute) on an HF
/// directory: the non-paged reference for safetensors models.
pub fn hf_reference(dir: &std::path::Path, prompts: &[Vec<u32>], new_tokens: usize) -> Vec<RefRun> {
    use candle_core::{DType, Device, Tensor};
    use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
    let dev = Device::Cpu;
    let cfg: LlamaConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
    files.sort();
    let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &dev).unwrap() };
    let model = Llama::load(vb, &cfg).unwrap();
    prompts
        .iter()
        .map(|p| {
            let mut cache = Cache::new(true, DType::F32, &cfg, &dev).unwrap();
            greedy_reference(p, new_tokens, |input, pos| {
                let x = Tensor::new(input, &dev).unwrap().unsqueeze(0).unwrap();
                model.forward(&x, pos, &mut cache).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap()
            })
        })
        .collect()
}

/// Prompts of the tiny models' vocabulary (128 ids).
pub fn tiny_prompts() -> Vec<Vec<u32>> {
    [1usize, 5, 16, 17, 40, 90].iter().enumerate().map(|(k, &n)| (0..n).map(|i| ((i * 13 + k * 29) % 125 + 3) as u32).collect()).collect()
}

/// An engine over the GPU path ([`hhh_model::gpu::GpuRunner`]) on candle's CPU backend.
pub fn gpu_path_engine(path: PathBuf, dtype: candle_core::DType, num_blocks: usize, block_size: usize, budget: usize) -> EngineClient {
    let cfg = engine_config(num_blocks, block_size, budget);
    spawn_engine(cfg, move |kv| {
        let m = hhh_model::gpu::GpuLlama::load(&path, &candle_core::Device::Cpu, dtype).map_err(ExecutorError::startup)?;
        hhh_model::gpu::GpuRunner::new(m, kv).map_err(ExecutorError::startup)
    })
    .expect("engine starts")
}
