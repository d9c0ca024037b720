//! `hhh-server`: the CLI entry point. `hhh-server serve --model <path> --host <addr> --port <n>`;
//! every flag can also be set through an `HHH_*` environment variable.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hhh_api::{router, AppState, Limits};
use hhh_engine::{spawn_engine, EngineConfig, EngineEvent, SamplingParams, SchedulerConfig};
use hhh_model::attention::PagedKvCache;
use hhh_model::{LlamaModel, ModelRunner, RunnerConfig};
use hhh_text::Tokenizer;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

#[derive(Parser)]
#[command(name = "hhh-server", version, about = "OpenAI-compatible inference server for HHH assistants")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load a model and serve the OpenAI-compatible API.
    Serve(ServeArgs),
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// GGUF file or Hugging Face model directory (config.json, tokenizer.json, *.safetensors).
    #[arg(long, env = "HHH_MODEL", default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// Name clients pass as `model` (default: smollm2-135m-instruct for the default model,
    /// otherwise the file or directory name, lower-cased).
    #[arg(long, env = "HHH_SERVED_MODEL_NAME")]
    served_model_name: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "HHH_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "HHH_PORT", default_value_t = 8000)]
    port: u16,
    /// Tokens per KV-cache block.
    #[arg(long, env = "HHH_BLOCK_SIZE", default_value_t = 16)]
    block_size: usize,
    /// KV-cache size in GiB (ignored when --num-kv-blocks is set).
    #[arg(long, env = "HHH_KV_CACHE_GB", default_value_t = 1.0)]
    kv_cache_gb: f64,
    /// Exact number of KV-cache blocks.
    #[arg(long, env = "HHH_NUM_KV_BLOCKS")]
    num_kv_blocks: Option<usize>,
    /// Maximum number of requests running at once.
    #[arg(long, env = "HHH_MAX_NUM_SEQS", default_value_t = 64)]
    max_num_seqs: usize,
    /// Token budget per engine step (chunked-prefill size).
    #[arg(long, env = "HHH_MAX_NUM_BATCHED_TOKENS", default_value_t = 512)]
    max_num_batched_tokens: usize,
    /// Context length (prompt + completion); default: the model's, capped at 8192.
    #[arg(long, env = "HHH_MAX_MODEL_LEN")]
    max_model_len: Option<usize>,
    /// Disable automatic prefix caching.
    #[arg(long, env = "HHH_NO_PREFIX_CACHING")]
    no_prefix_caching: bool,
    /// Compute threads (default: all cores).
    #[arg(long, env = "HHH_THREADS")]
    threads: Option<usize>,
    /// Largest request body in bytes (413 above).
    #[arg(long, env = "HHH_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Largest `n` per request.
    #[arg(long, env = "HHH_MAX_N", default_value_t = 16)]
    max_n: usize,
}

fn served_name(a: &ServeArgs) -> String {
    if let Some(n) = &a.served_model_name {
        return n.clone();
    }
    let stem = a.model.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_else(|| "model".into());
    if stem.starts_with("smollm2-135m-instruct") {
        "smollm2-135m-instruct".into()
    } else {
        stem
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    let Cmd::Serve(args) = Cli::parse().cmd;
    serve(args).await
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    if let Some(t) = a.threads {
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", t.to_string());
    }
    let tokenizer = Tokenizer::load(&a.model).with_context(|| format!("loading the tokenizer of {}", a.model.display()))?;
    let t0 = std::time::Instant::now();
    let model = LlamaModel::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let c = model.cfg.clone();
    let max_model_len = a.max_model_len.unwrap_or(c.max_position_embeddings.min(8192));
    anyhow::ensure!(max_model_len <= c.max_position_embeddings, "--max-model-len {max_model_len} exceeds the model's context {}", c.max_position_embeddings);
    let per_block = PagedKvCache::bytes_per_token(c.num_layers, c.num_kv_heads, c.head_dim) * a.block_size;
    let num_blocks = a.num_kv_blocks.unwrap_or(((a.kv_cache_gb * (1u64 << 30) as f64) / per_block as f64) as usize);
    anyhow::ensure!(num_blocks > 0, "the KV cache must hold at least one block");
    tracing::info!(model = %a.model.display(), dtype = %model.dtype_name, layers = c.num_layers, load_s = t0.elapsed().as_secs_f32(),
        num_blocks, block_size = a.block_size, kv_tokens = num_blocks * a.block_size, kv_mib = (num_blocks * per_block) >> 20, "model loaded");
    let mut eos = c.eos_token_ids.clone();
    for &e in tokenizer.eos_token_ids() {
        if !eos.contains(&e) {
            eos.push(e);
        }
    }
    let cfg = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_seqs: a.max_num_seqs,
            max_num_batched_tokens: a.max_num_batched_tokens,
            max_model_len,
            block_size: a.block_size,
            num_blocks,
            enable_prefix_caching: !a.no_prefix_caching,
            eos_token_ids: eos,
        },
    };
    let bs = a.block_size;
    let engine = spawn_engine(cfg, move || Ok(ModelRunner::new(model, RunnerConfig { num_blocks, block_size: bs })))?;
    let limits = Limits { max_body_bytes: a.max_body_bytes, max_n: a.max_n, ..Limits::default() };
    let state = AppState::new(engine.clone(), tokenizer, served_name(&a), limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port)).await.with_context(|| format!("binding {}:{}", a.host, a.port))?;
    tracing::info!(addr = %listener.local_addr()?, model = %state.model_name, "listening");
    warm_up(&engine).await?;
    state.ready.store(true, Ordering::SeqCst);
    tracing::info!("ready");
    let app = router(state);
    axum::serve(listener, app).with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; }).await?;
    engine.shutdown();
    Ok(())
}

/// One tiny forward before readiness turns 200.
async fn warm_up(engine: &hhh_engine::EngineClient) -> anyhow::Result<()> {
    let mut h = engine.submit(vec![0, 1], SamplingParams { temperature: 0.0, max_tokens: 1, ignore_eos: true, ..Default::default() })?;
    while let Some(ev) = h.recv().await {
        if let EngineEvent::Finished { error, .. } = ev {
            anyhow::ensure!(error.is_none(), "warm-up failed: {error:?}");
            return Ok(());
        }
    }
    anyhow::bail!("engine stopped during warm-up")
}
