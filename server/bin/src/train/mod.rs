//! `hhh-server train-reward-head`: fit the default preference model's reward head.
//!
//! 1. Read hh-rlhf preference pairs (`{"chosen": transcript, "rejected": transcript}`, transcripts
//!    as `\n\nHuman: …\n\nAssistant: …`), parse each into (conversation, final assistant response).
//! 2. Render each side exactly as `/v1/rewards` does (the model's chat template, the response as
//!    the final assistant turn) and run it through the engine as a pooling request that returns
//!    the final hidden state; chosen and rejected share their conversation's KV blocks.
//! 3. Split the pairs into train and held-out test sets by a seeded hash of the pair index, fit a
//!    Bradley–Terry linear head on train ([`fit`]), and report held-out pairwise accuracy next to
//!    two baselines: response length (the better of "longer wins" and "shorter wins", chosen on
//!    train) and random heads.
//! 4. Write the head file (see `hhh_model::reward_head`) with the data, the model, the split and
//!    the results in its `metadata`.

pub mod fit;
pub mod logistic;
pub mod ood;
pub mod pik;

use anyhow::Context;
use clap::Args;
use hhh_engine::{spawn_engine, EngineConfig, ExecutorError, PoolingParams, SamplingParams, SchedulerConfig};
use hhh_model::{LlamaModel, ModelRunner, RewardHead, RunnerConfig};
use hhh_text::{ChatMessage, ChatTemplate, Tokenizer};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// Flags of `hhh-server train-reward-head`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// The backbone: GGUF file or Hugging Face directory.
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// Preference pairs, JSONL with `chosen` and `rejected` hh-rlhf transcripts.
    #[arg(long, default_value = "../shared/data/hh-rlhf/harmless-base-test.jsonl")]
    pub data: PathBuf,
    /// Where to write the head file.
    #[arg(long)]
    pub out: PathBuf,
    /// Use at most this many pairs (0: all).
    #[arg(long, default_value_t = 0)]
    pub max_pairs: usize,
    /// Skip pairs whose rendered chosen or rejected side is longer than this (tokens).
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Fraction of pairs held out for the test split.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed of the split and of the random-head baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// L2 strengths tried (chosen on a validation tail of the training split).
    #[arg(long, value_delimiter = ',', default_value = "0.001,0.01,0.1,1")]
    pub l2: Vec<f64>,
    /// Gradient steps per fit.
    #[arg(long, default_value_t = 400)]
    pub iters: usize,
}

/// One usable pair, rendered.
struct Pair {
    chosen: Vec<u32>,
    rejected: Vec<u32>,
}

/// Split an hh-rlhf transcript into chat turns (see [`hhh_proto::hh_rlhf`]).
pub fn parse_transcript(t: &str) -> Option<Vec<ChatMessage>> {
    let turns = hhh_proto::hh_rlhf::parse_transcript(t)?;
    Some(turns.into_iter().map(|t| ChatMessage::new(t.role, t.content)).collect())
}

/// splitmix64: the seeded hash that assigns pairs to the test split.
pub(crate) fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn sha256_of(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

fn load_pairs(a: &TrainArgs, tok: &Tokenizer, tpl: &ChatTemplate) -> anyhow::Result<(Vec<Pair>, usize)> {
    let text = std::fs::read_to_string(&a.data).with_context(|| format!("reading {}", a.data.display()))?;
    let (mut pairs, mut skipped) = (Vec::new(), 0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if a.max_pairs > 0 && pairs.len() >= a.max_pairs {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(line)?;
        let side = |k: &str| -> anyhow::Result<Option<Vec<u32>>> {
            let Some(turns) = v.get(k).and_then(|t| t.as_str()).and_then(parse_transcript) else { return Ok(None) };
            if turns.last().is_none_or(|m| m.content.is_empty()) {
                return Ok(None);
            }
            let toks = hhh_text::encode_chat(tpl, tok, &turns, false)?;
            Ok((toks.len() <= a.max_tokens).then_some(toks))
        };
        match (side("chosen")?, side("rejected")?) {
            (Some(c), Some(r)) if c != r => pairs.push(Pair { chosen: c, rejected: r }),
            _ => skipped += 1,
        }
    }
    Ok((pairs, skipped))
}

/// Final hidden states of every side, through the engine (pooling requests, prefix cache on).
fn hidden_states(model: &Path, pairs: &[Pair]) -> anyhow::Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let (num_blocks, block_size) = (1024, 16);
    let cfg = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_seqs: 64,
            max_num_batched_tokens: 512,
            max_model_len: 2048,
            block_size,
            num_blocks,
            enable_prefix_caching: true,
            eos_token_ids: vec![],
            ..Default::default()
        },
        ..Default::default()
    };
    let path = model.to_path_buf();
    let engine = spawn_engine(cfg, move |kv| Ok(ModelRunner::new(LlamaModel::load(&path).map_err(ExecutorError::startup)?, RunnerConfig { kv, kv_dtype: None, threads: 0 })))?;
    let params = SamplingParams { max_tokens: 0, pooling: Some(PoolingParams { return_hidden: true }), ..Default::default() };
    let t0 = std::time::Instant::now();
    let mut out = Vec::with_capacity(pairs.len());
    for (ci, chunk) in pairs.chunks(16).enumerate() {
        let mut hs = Vec::new();
        for p in chunk {
            hs.push(engine.submit(p.chosen.clone(), params.clone())?);
            hs.push(engine.submit(p.rejected.clone(), params.clone())?);
        }
        let mut got = Vec::with_capacity(hs.len());
        for h in hs {
            let c = h.blocking_collect().result().map_err(|e| anyhow::anyhow!("engine: {e}"))?;
            got.push(c.pooled.and_then(|p| p.hidden).context("no hidden state returned")?);
        }
        let mut it = got.into_iter();
        while let (Some(c), Some(r)) = (it.next(), it.next()) {
            out.push((c, r));
        }
        if ci % 10 == 0 {
            let s = engine.stats();
            let hit = s.prefix_hit_tokens.load(std::sync::atomic::Ordering::Relaxed) as f64 / s.prefix_query_tokens.load(std::sync::atomic::Ordering::Relaxed).max(1) as f64;
            tracing::info!(done = out.len(), total = pairs.len(), elapsed_s = t0.elapsed().as_secs(), prefix_hit_rate = format!("{hit:.2}"), "hidden states");
        }
    }
    engine.shutdown();
    Ok(out)
}

/// Run the command; prints a markdown summary and writes the head file.
pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let tok = Tokenizer::load(&a.model).with_context(|| format!("loading the tokenizer of {}", a.model.display()))?;
    let tpl = ChatTemplate::of_tokenizer(&tok)?.context("the model has no chat template")?;
    let (pairs, skipped) = load_pairs(&a, &tok, &tpl)?;
    anyhow::ensure!(pairs.len() >= 20, "only {} usable pairs", pairs.len());
    tracing::info!(pairs = pairs.len(), skipped, "pairs loaded");
    let is_test: Vec<bool> = (0..pairs.len()).map(|i| (mix(a.seed, i as u64) % 1_000_000) as f64 / 1e6 < a.test_fraction).collect();
    let feats = hidden_states(&a.model, &pairs)?;
    let split = |test: bool| -> Vec<(Vec<f32>, Vec<f32>)> { feats.iter().zip(&is_test).filter(|(_, &t)| t == test).map(|(f, _)| f.clone()).collect() };
    let (train, test) = (split(false), split(true));
    let lens = |test: bool| -> Vec<(usize, usize)> { pairs.iter().zip(&is_test).filter(|(_, &t)| t == test).map(|(p, _)| (p.chosen.len(), p.rejected.len())).collect() };
    let (head, l2) = fit::fit(&train, &a.l2, 0.2, a.iters);
    let (acc_train, acc_test) = (fit::accuracy(&train, &head.weight), fit::accuracy(&test, &head.weight));
    // Length baseline: the direction (longer or shorter wins) picked on train, scored on test.
    let longer = |v: &[(usize, usize)]| v.iter().filter(|(c, r)| c > r).count() as f64 / v.len().max(1) as f64;
    let shorter = |v: &[(usize, usize)]| v.iter().filter(|(c, r)| c < r).count() as f64 / v.len().max(1) as f64;
    let (ltr, lte) = (lens(false), lens(true));
    let (len_rule, acc_len) = if longer(&ltr) >= shorter(&ltr) { ("longer wins", longer(&lte)) } else { ("shorter wins", shorter(&lte)) };
    // Random heads: uniform in [-1, 1] per unit-variance feature.
    let scale = fit::feature_scale(&train);
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed ^ 0xabcdef);
    let rand_accs: Vec<f64> = (0..20)
        .map(|_| {
            let w: Vec<f32> = scale.iter().map(|s| (rng.random_range(-1.0..1.0f64) / s) as f32).collect();
            fit::accuracy(&test, &w)
        })
        .collect();
    let rmean = rand_accs.iter().sum::<f64>() / rand_accs.len() as f64;
    let rsd = (rand_accs.iter().map(|x| (x - rmean).powi(2)).sum::<f64>() / rand_accs.len() as f64).sqrt();
    let meta = serde_json::json!({
        "description": "Linear reward head on the final hidden state (after the last norm) of the last token, fitted with the Bradley-Terry loss on hh-rlhf harmless-base preference pairs",
        "base_model": {"file": a.model.file_name().map(|f| f.to_string_lossy().to_string()), "sha256": sha256_of(&a.model).ok()},
        "data": {"file": a.data.file_name().map(|f| f.to_string_lossy().to_string()), "sha256": sha256_of(&a.data).ok(),
                 "source": "Anthropic hh-rlhf, harmless-base test split (MIT license)", "pairs_used": pairs.len(), "pairs_skipped": skipped},
        "split": {"seed": a.seed, "test_fraction": a.test_fraction, "train_pairs": train.len(), "test_pairs": test.len(), "max_tokens": a.max_tokens},
        "fit": {"loss": "bradley-terry", "l2": l2, "l2_grid": a.l2, "iters": a.iters, "bias": "mean training reward set to 0"},
        "results": {"train_accuracy": acc_train, "test_accuracy": acc_test, "length_baseline": {"rule": len_rule, "test_accuracy": acc_len},
                    "random_heads": {"count": rand_accs.len(), "mean_test_accuracy": rmean, "sd": rsd}},
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let out = RewardHead::new(head.weight.len(), head.weight, vec![head.bias], meta)?;
    out.save(&a.out)?;
    println!("| head | held-out pairwise accuracy ({} pairs) |\n|---|---|", test.len());
    println!("| fitted BT head (λ = {l2}) | {acc_test:.3} (train {acc_train:.3}) |");
    println!("| length baseline ({len_rule}) | {acc_len:.3} |");
    println!("| random heads (20) | {rmean:.3} ± {rsd:.3} |");
    println!("wrote {}", a.out.display());
    Ok(())
}
