//! Reward models: a tiny random `LlamaForSequenceClassification` (safetensors, made here) scored
//! through the paged engine (pooling requests, `score` head) against an independent non-paged
//! reference: candle-transformers' `llama` with its LM head replaced by the score matrix (padded
//! with zero rows), read at the last token.
//!
//! Also: the same rewards whether inputs are scored one by one, in one batch, concurrently with
//! generation, or with prefix-cache hits (responses sharing one conversation).

mod common;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use common::*;
use hhh_engine::{spawn_engine, EngineClient, EngineConfig, EngineEvent, ExecutorError, PoolingParams, SamplingParams, SchedulerConfig};
use hhh_model::{LlamaModel, ModelRunner, RewardHead, RunnerConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

const LABELS: usize = 2;

fn reference(dir: &Path, inputs: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let dev = Device::Cpu;
    let cfg: LlamaConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
    files.sort();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for f in &files {
        for (k, v) in candle_core::safetensors::load(f, &dev).unwrap() {
            tensors.insert(k, v.to_dtype(DType::F32).unwrap());
        }
    }
    let score = tensors.remove("score.weight").unwrap();
    let pad = Tensor::zeros((cfg.vocab_size - LABELS, cfg.hidden_size), DType::F32, &dev).unwrap();
    tensors.insert("lm_head.weight".into(), Tensor::cat(&[&score, &pad], 0).unwrap());
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &dev);
    let model = Llama::load(vb, &cfg).unwrap();
    inputs
        .iter()
        .map(|p| {
            let mut cache = Cache::new(false, DType::F32, &cfg, &dev).unwrap();
            let x = Tensor::new(p.as_slice(), &dev).unwrap().unsqueeze(0).unwrap();
            let logits = model.forward(&x, 0, &mut cache).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            logits[..LABELS].to_vec()
        })
        .collect()
}

fn reward_engine(dir: PathBuf, budget: usize) -> EngineClient {
    let cfg = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_seqs: 16,
            max_num_batched_tokens: budget,
            max_model_len: 512,
            block_size: 16,
            num_blocks: 256,
            enable_prefix_caching: true,
            eos_token_ids: vec![],
            ..Default::default()
        },
        ..Default::default()
    };
    spawn_engine(cfg, move |kv| {
        let m = LlamaModel::load(&dir).map_err(ExecutorError::startup)?;
        let head = RewardHead::from_hf_dir(&dir).map_err(ExecutorError::startup)?.ok_or_else(|| ExecutorError::startup("no score head"))?;
        ModelRunner::new(m, RunnerConfig { kv, kv_dtype: None, threads: 0 }).with_head(head).map_err(ExecutorError::startup)
    })
    .expect("engine starts")
}

/// Stats are published after a step's events are sent: poll (up to 5 s) for the hit counter.
fn hits_above(c: &EngineClient, n: u64) -> bool {
    for _ in 0..500 {
        if c.stats().prefix_hit_tokens.load(Ordering::SeqCst) > n {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

fn pool_params() -> SamplingParams {
    SamplingParams { max_tokens: 0, pooling: Some(PoolingParams::default()), ..Default::default() }
}

/// Submit all inputs at once; return each one's scores.
fn score_all(c: &EngineClient, inputs: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let mut hs: Vec<_> = inputs.iter().map(|p| c.submit(p.clone(), pool_params()).unwrap()).collect();
    hs.iter_mut()
        .map(|h| {
            let mut scores = None;
            while let Some(ev) = h.blocking_recv() {
                match ev {
                    EngineEvent::Pooled(p) => scores = Some(p.scores),
                    EngineEvent::Finished { error, completion_tokens, .. } => {
                        assert!(error.is_none(), "{error:?}");
                        assert_eq!(completion_tokens, 0);
                        break;
                    }
                    EngineEvent::Token(_) => panic!("a scoring request generated a token"),
                    EngineEvent::PromptLogprobs { .. } => {}
                }
            }
            scores.expect("no Pooled event")
        })
        .collect()
}

fn close(name: &str, got: &[Vec<f32>], want: &[Vec<f32>], rel: f32) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{name}[{i}]");
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() <= rel * b.abs().max(1.0), "{name}[{i}]: {a} vs {b} (rel {rel})");
        }
    }
}

/// Three conversations (lengths 9, 20, 40) with three responses each, plus odd lengths 1..70.
fn inputs() -> Vec<Vec<u32>> {
    let mut v = vec![];
    for (k, conv_len) in [9usize, 20, 40].into_iter().enumerate() {
        let conv: Vec<u32> = (0..conv_len).map(|i| ((i * 11 + k * 31) % 120 + 3) as u32).collect();
        for r in 0..3 {
            let mut p = conv.clone();
            p.extend((0..(r * 5 + 1)).map(|i| ((i * 7 + r * 13) % 120 + 3) as u32));
            v.push(p);
        }
    }
    v.extend([1usize, 16, 17, 70].iter().map(|&n| (0..n).map(|i| ((i * 5 + n) % 120 + 3) as u32).collect::<Vec<u32>>()));
    v
}

fn check(dtype: DType, name: &str) {
    let dir = std::env::temp_dir().join(format!("hhh-tiny-rm-{name}-{}", std::process::id()));
    make_tiny_model(&dir, dtype, Some(LABELS));
    let ins = inputs();
    let want = reference(&dir, &ins);

    // One batch (budget large enough for all), against the reference.
    let c = reward_engine(dir.clone(), 1024);
    let batched = score_all(&c, &ins);
    close(&format!("{name}/batched-vs-reference"), &batched, &want, 1e-4);
    assert!(hits_above(&c, 0), "responses to one conversation should hit the prefix cache");
    c.shutdown();

    // One by one, with a small budget (chunked prefill), on a fresh engine.
    let c = reward_engine(dir.clone(), 8);
    let single: Vec<Vec<f32>> = ins.iter().map(|p| score_all(&c, std::slice::from_ref(p)).remove(0)).collect();
    close(&format!("{name}/one-by-one-vs-batched"), &single, &batched, 1e-5);
    // Again, now that every conversation is in the prefix cache.
    let hits0 = c.stats().prefix_hit_tokens.load(Ordering::SeqCst);
    let again = score_all(&c, &ins);
    assert!(hits_above(&c, hits0));
    close(&format!("{name}/cached-vs-batched"), &again, &batched, 1e-5);

    // Concurrently with generation traffic on the same engine.
    let gen: Vec<_> = (0..4).map(|k| c.submit((0..30).map(|i| ((i + k * 17) % 120 + 3) as u32).collect(), greedy(20)).unwrap()).collect();
    let mixed = score_all(&c, &ins);
    close(&format!("{name}/with-generation-vs-batched"), &mixed, &batched, 1e-5);
    drop(gen);
    assert_eq!(wait_no_blocks(&c), 0);
    c.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tiny_seq_cls_f32_rewards_match_reference() {
    check(DType::F32, "f32");
}

#[test]
fn tiny_seq_cls_bf16_rewards_match_reference() {
    check(DType::BF16, "bf16");
}

/// Hidden states come back when asked for, and the head applied to them gives the scores.
#[test]
fn return_hidden_is_consistent_with_scores() {
    let dir = std::env::temp_dir().join(format!("hhh-tiny-rm-hidden-{}", std::process::id()));
    make_tiny_model(&dir, DType::F32, Some(LABELS));
    let head = RewardHead::from_hf_dir(&dir).unwrap().unwrap();
    let c = reward_engine(dir.clone(), 64);
    let mut h = c.submit(vec![5, 6, 7, 8, 9], SamplingParams { max_tokens: 0, pooling: Some(PoolingParams { return_hidden: true }), ..Default::default() }).unwrap();
    let mut got = None;
    while let Some(ev) = h.blocking_recv() {
        if let EngineEvent::Pooled(p) = ev {
            got = Some(p);
        }
    }
    let p = got.unwrap();
    let hidden = p.hidden.unwrap();
    assert_eq!(hidden.len(), 64);
    assert_eq!(head.apply(&hidden), p.scores);
    c.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
