//! Loading a model behind its own engine thread: the CPU engine (GGUF or safetensors through our
//! kernels) or the GPU engine (`--device cuda` / `candle-cpu`), with its reward head, KV pool
//! (sized by `--kv-cache-gb` / `--num-kv-blocks`, or on CUDA by the memory planner) and engine
//! configuration.

use crate::ServeArgs;
use anyhow::Context;
use candle_core::DType;
use hhh_engine::{spawn_engine, EngineClient, EngineConfig, ExecutorError, SchedulerConfig};
use hhh_metrics::Metrics;
use hhh_model::attention::PagedKvCache;
use hhh_model::gpu::{GpuLlama, GpuRunner};
use hhh_model::{LlamaModel, ModelRunner, RewardHead, RunnerConfig};
use hhh_text::Tokenizer;
use std::sync::Arc;

/// A model loaded behind its own engine thread.
pub(crate) struct LoadedEngine {
    pub engine: EngineClient,
    pub tokenizer: Tokenizer,
    pub dtype: String,
    /// Outputs of the reward head, when the model has one.
    pub num_labels: Option<usize>,
    /// A sequence-classification checkpoint (scores only).
    pub seq_cls: bool,
    /// What new weights for it are loaded as (`/update_weights_from_disk`).
    pub backend: crate::weights::Backend,
}

/// Load a model (and its reward head: `head_file`, or the `score` weight of a
/// sequence-classification directory), size its KV pool and start its engine.
pub(crate) fn load_engine(a: &ServeArgs, path: &std::path::Path, head_file: Option<&std::path::Path>, kv_gb: f64, kv_blocks: Option<usize>, metrics: Arc<Metrics>) -> anyhow::Result<LoadedEngine> {
    let tokenizer = Tokenizer::load(path).with_context(|| format!("loading the tokenizer of {}", path.display()))?;
    if a.device.is_gpu_path() {
        return load_gpu_engine(a, path, tokenizer, head_file, kv_gb, kv_blocks, metrics);
    }
    let t0 = std::time::Instant::now();
    let mut model = LlamaModel::load(path).with_context(|| format!("loading {}", path.display()))?;
    model.dense_attention = a.dense_attention;
    model.prompt_f32 = !a.prompt_int8;
    let builtin = if path.is_dir() { RewardHead::from_hf_dir(path)? } else { None };
    let seq_cls = builtin.is_some();
    let head = pick_head(path, builtin, head_file)?;
    let c = model.cfg.clone();
    let max_model_len = max_model_len(a, &c, path)?;
    // Reference mode (--dense-attention) keeps f32 K/V: its results must equal candle's.
    let kv_dtype = model.kv_dtype(a.kv_cache_dtype);
    let per_block = PagedKvCache::bytes_per_token(c.num_layers, c.num_kv_heads, c.head_dim, kv_dtype) * a.block_size;
    let num_blocks = kv_blocks.unwrap_or(((kv_gb * (1u64 << 30) as f64) / per_block as f64) as usize);
    anyhow::ensure!(num_blocks > 0, "the KV cache of {} must hold at least one block", path.display());
    let num_labels = head.as_ref().map(|h| h.num_labels);
    tracing::info!(model = %path.display(), dtype = %model.dtype_name, layers = c.num_layers, load_s = t0.elapsed().as_secs_f32(),
        num_blocks, block_size = a.block_size, kv_dtype = kv_dtype.name(), kv_tokens = num_blocks * a.block_size, kv_mib = (num_blocks * per_block) >> 20, reward_head = ?num_labels, "model loaded");
    let cfg = engine_config(a, &c, &tokenizer, max_model_len, num_blocks, metrics);
    let threads = a.threads.unwrap_or(0);
    let dtype = model.dtype_name.clone();
    let backend = crate::weights::Backend::Cpu { dense_attention: model.dense_attention, prompt_f32: model.prompt_f32 };
    let engine = spawn_engine(cfg, move |kv| {
        let r = ModelRunner::new(model, RunnerConfig { kv, kv_dtype: Some(kv_dtype), threads });
        match head {
            Some(h) => r.with_head(h).map_err(ExecutorError::startup),
            None => Ok(r),
        }
    })?;
    Ok(LoadedEngine { engine, tokenizer, dtype, num_labels, seq_cls, backend })
}

/// The reward head of a model: a sequence-classification checkpoint's own, or a head file.
fn pick_head(path: &std::path::Path, builtin: Option<RewardHead>, head_file: Option<&std::path::Path>) -> anyhow::Result<Option<RewardHead>> {
    Ok(match (builtin, head_file) {
        (Some(_), Some(f)) => anyhow::bail!("{} is a sequence-classification model with its own score head; drop the head file {}", path.display(), f.display()),
        (Some(h), None) => Some(h),
        (None, Some(f)) => Some(RewardHead::from_file(f).with_context(|| format!("loading the reward head {}", f.display()))?),
        (None, None) => None,
    })
}

fn max_model_len(a: &ServeArgs, c: &hhh_model::LlamaConfig, path: &std::path::Path) -> anyhow::Result<usize> {
    anyhow::ensure!(a.max_model_len.is_none_or(|m| m <= c.max_position_embeddings), "--max-model-len exceeds the context {} of {}", c.max_position_embeddings, path.display());
    Ok(a.max_model_len.unwrap_or(c.max_position_embeddings.min(8192)).min(c.max_position_embeddings))
}

fn engine_config(a: &ServeArgs, c: &hhh_model::LlamaConfig, tokenizer: &Tokenizer, max_model_len: usize, num_blocks: usize, metrics: Arc<Metrics>) -> EngineConfig {
    let mut eos = c.eos_token_ids.clone();
    for &e in tokenizer.eos_token_ids() {
        if !eos.contains(&e) {
            eos.push(e);
        }
    }
    EngineConfig {
        max_waiting_requests: a.max_waiting_requests,
        max_waiting_tokens: a.max_waiting_tokens,
        observer: metrics,
        scheduler: SchedulerConfig {
            max_num_seqs: a.max_num_seqs,
            max_num_batched_tokens: a.max_num_batched_tokens,
            max_model_len,
            block_size: a.block_size,
            num_blocks,
            enable_prefix_caching: !a.no_prefix_caching,
            eos_token_ids: eos,
            batch_step_tokens: a.batch.batch_step_tokens,
            batch_idle_step_tokens: a.batch.batch_idle_step_tokens,
        },
    }
}

/// [`load_engine`] for `--device cuda[:N]` and `candle-cpu`: the model on a candle device behind
/// [`GpuRunner`]; on CUDA the pool is sized by the memory planner.
fn load_gpu_engine(
    a: &ServeArgs,
    path: &std::path::Path,
    tokenizer: Tokenizer,
    head_file: Option<&std::path::Path>,
    kv_gb: f64,
    kv_blocks: Option<usize>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<LoadedEngine> {
    anyhow::ensure!(a.kv_cache_dtype.is_none(), "--kv-cache-dtype is for the CPU engine: on --device {} keys and values are stored in the compute dtype (--dtype)", a.device);
    anyhow::ensure!(path.is_dir(), "--device {} serves Hugging Face safetensors directories; {} is not one (GGUF models are served with --device cpu)", a.device, path.display());
    let device = a.device.candle_device()?;
    let dtype = match a.dtype.0 {
        Some(d) => d,
        None if device.is_cuda() => checkpoint_dtype(path).filter(|d| *d == DType::F16).unwrap_or(DType::BF16),
        None => DType::F32,
    };
    let t0 = std::time::Instant::now();
    let model = GpuLlama::load(path, &device, dtype).with_context(|| format!("loading {} onto {}", path.display(), a.device))?;
    let builtin = RewardHead::from_hf_dir(path)?;
    let seq_cls = builtin.is_some();
    let head = pick_head(path, builtin, head_file)?;
    let c = model.cfg.clone();
    let max_model_len = max_model_len(a, &c, path)?;
    let per_block = model.block_bytes(a.block_size);
    let num_blocks = if device.is_cuda() {
        let lim = hhh_model::gpu::profile::StepLimits { max_num_batched_tokens: a.max_num_batched_tokens, max_num_seqs: a.max_num_seqs, max_model_len, block_size: a.block_size };
        hhh_model::gpu::profile::plan_kv_blocks(&model, lim, a.gpu_memory_utilization, kv_blocks)?
    } else {
        kv_blocks.unwrap_or(((kv_gb * (1u64 << 30) as f64) / per_block as f64) as usize)
    };
    anyhow::ensure!(num_blocks > 0, "the KV cache of {} must hold at least one block", path.display());
    let num_labels = head.as_ref().map(|h| h.num_labels);
    let dtype_name = format!("{dtype:?}").to_lowercase();
    tracing::info!(model = %path.display(), device = %a.device, dtype = %dtype_name, layers = c.num_layers, load_s = t0.elapsed().as_secs_f32(),
        num_blocks, block_size = a.block_size, kv_tokens = num_blocks * a.block_size, kv_mib = (num_blocks * per_block) >> 20, reward_head = ?num_labels, "model loaded");
    let cfg = engine_config(a, &c, &tokenizer, max_model_len, num_blocks, metrics);
    let backend = crate::weights::Backend::Gpu { device: device.clone(), dtype };
    let engine = spawn_engine(cfg, move |kv| {
        let r = GpuRunner::new(model, kv).map_err(ExecutorError::startup)?;
        match head {
            Some(h) => r.with_head(h).map_err(ExecutorError::startup),
            None => Ok(r),
        }
    })?;
    Ok(LoadedEngine { engine, tokenizer, dtype: dtype_name, num_labels, seq_cls, backend })
}

/// The checkpoint's `torch_dtype` from config.json, when it names one we compute in.
fn checkpoint_dtype(dir: &std::path::Path) -> Option<DType> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).ok()?).ok()?;
    hhh_model::gpu::parse_dtype(v.get("torch_dtype")?.as_str()?).ok().flatten()
}
