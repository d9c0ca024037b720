//! Shared helpers for the model tests.
#![allow(dead_code)]

use hhh_engine::{spawn_engine, EngineClient, EngineConfig, EngineEvent, SamplingParams, SchedulerConfig};
use hhh_model::{LlamaModel, ModelRunner, RunnerConfig};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The default model (fetched by `make model`); tests fail loudly when it is missing.
pub fn default_model() -> PathBuf {
    let p = std::env::var("HHH_TEST_MODEL").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    assert!(p.exists(), "{} is missing: run `make model` first", p.display());
    p
}

pub fn engine(path: PathBuf, num_blocks: usize, block_size: usize, budget: usize) -> EngineClient {
    engine_with(path, num_blocks, block_size, budget, false)
}

/// `dense`: read the paged cache through the block tables but do the attention arithmetic with
/// candle's dense ops, exactly as the reference models do.
pub fn engine_with(path: PathBuf, num_blocks: usize, block_size: usize, budget: usize, dense: bool) -> EngineClient {
    let cfg = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_seqs: 16,
            max_num_batched_tokens: budget,
            max_model_len: 1024,
            block_size,
            num_blocks,
            enable_prefix_caching: true,
            eos_token_ids: vec![],
        },
        ..Default::default()
    };
    spawn_engine(cfg, move || {
        let mut m = LlamaModel::load(&path).map_err(|e| e.to_string())?;
        m.dense_attention = dense;
        Ok(ModelRunner::new(m, RunnerConfig { num_blocks, block_size }))
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
    lens.iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|i| (100 + (i * 37 + k * 1009) % 20000) as u32).collect())
        .collect()
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

/// Write a seeded random Llama (vocab 128, hidden 64, 3 layers, 4 heads / 2 KV heads) to `dir`.
/// With `seq_cls_labels`, a `LlamaForSequenceClassification`: no `lm_head`, a `score.weight`
/// `[labels, 64]` instead.
pub fn make_tiny_model(dir: &Path, dtype: DType, seq_cls_labels: Option<usize>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({
        "architectures": [if seq_cls_labels.is_some() { "LlamaForSequenceClassification" } else { "LlamaForCausalLM" }], "vocab_size": 128, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 512, "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let dev = Device::Cpu;
    let mut seed = 0x5eed_u64;
    let mut rand = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0 * scale
            })
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap().to_dtype(dtype).unwrap()
    };
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), rand(&[128, 64], 1.0));
    match seq_cls_labels {
        None => t.insert("lm_head.weight".into(), rand(&[128, 64], 0.5)),
        Some(n) => t.insert("score.weight".into(), rand(&[n, 64], 0.5)),
    };
    t.insert("model.norm.weight".into(), (rand(&[64], 0.1) + 1.0).unwrap());
    for l in 0..3 {
        let p = format!("model.layers.{l}");
        for (n, s) in [("self_attn.q_proj", [64, 64]), ("self_attn.k_proj", [32, 64]), ("self_attn.v_proj", [32, 64]), ("self_attn.o_proj", [64, 64]), ("mlp.gate_proj", [128, 64]), ("mlp.up_proj", [128, 64]), ("mlp.down_proj", [64, 128])] {
            t.insert(format!("{p}.{n}.weight"), rand(&s, 0.25));
        }
        t.insert(format!("{p}.input_layernorm.weight"), (rand(&[64], 0.1) + 1.0).unwrap());
        t.insert(format!("{p}.post_attention_layernorm.weight"), (rand(&[64], 0.1) + 1.0).unwrap());
    }
    // Two shards, to exercise sharded loading.
    let (a, b): (Vec<_>, Vec<_>) = t.into_iter().partition(|(k, _)| k.contains("layers.0") || k.contains("embed"));
    candle_core::safetensors::save(&a.into_iter().collect::<HashMap<_, _>>(), dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b.into_iter().collect::<HashMap<_, _>>(), dir.join("model-00002-of-00002.safetensors")).unwrap();
    dir.to_path_buf()
}

