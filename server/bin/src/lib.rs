//! Wiring shared by the `hhh-server` binary and the end-to-end tests: load the model and
//! tokenizer, start the engine thread, warm up, and serve the router.

pub mod serve;

use anyhow::Context;
use clap::{Args, ValueEnum};
use hhh_api::{metrics_router, router, ApiKeys, AppState, Limits};
use hhh_metrics::Metrics;
use hhh_engine::{spawn_engine, EngineClient, EngineConfig, EngineEvent, SamplingParams, SchedulerConfig};
use hhh_model::attention::PagedKvCache;
use hhh_model::{LlamaModel, ModelRunner, RunnerConfig};
use hhh_text::Tokenizer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Log output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `hhh-server serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// GGUF file or Hugging Face model directory (config.json, tokenizer.json, *.safetensors).
    #[arg(long, env = "HHH_MODEL", default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// Name clients pass as `model` (default: smollm2-135m-instruct for the default model,
    /// otherwise the file or directory name, lower-cased).
    #[arg(long, env = "HHH_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "HHH_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "HHH_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Tokens per KV-cache block.
    #[arg(long, env = "HHH_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// KV-cache size in GiB (ignored when --num-kv-blocks is set).
    #[arg(long, env = "HHH_KV_CACHE_GB", default_value_t = 1.0)]
    pub kv_cache_gb: f64,
    /// Exact number of KV-cache blocks.
    #[arg(long, env = "HHH_NUM_KV_BLOCKS")]
    pub num_kv_blocks: Option<usize>,
    /// Maximum number of requests running at once.
    #[arg(long, env = "HHH_MAX_NUM_SEQS", default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Token budget per engine step (chunked-prefill size).
    #[arg(long, env = "HHH_MAX_NUM_BATCHED_TOKENS", default_value_t = 512)]
    pub max_num_batched_tokens: usize,
    /// Context length (prompt + completion); default: the model's, capped at 8192.
    #[arg(long, env = "HHH_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Disable automatic prefix caching.
    #[arg(long, env = "HHH_NO_PREFIX_CACHING")]
    pub no_prefix_caching: bool,
    /// Compute threads (default: all cores).
    #[arg(long, env = "HHH_THREADS")]
    pub threads: Option<usize>,
    /// Largest request body in bytes (413 above).
    #[arg(long, env = "HHH_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Largest `n` per request.
    #[arg(long, env = "HHH_MAX_N", default_value_t = 16)]
    pub max_n: usize,
    /// Admission queue limit: requests submitted but not yet running (429 past it).
    #[arg(long, env = "HHH_MAX_WAITING_REQUESTS", default_value_t = 256)]
    pub max_waiting_requests: usize,
    /// Admission queue limit: prompt tokens of requests not yet running (429 past it).
    #[arg(long, env = "HHH_MAX_WAITING_TOKENS", default_value_t = 262144)]
    pub max_waiting_tokens: usize,
    /// Seconds from arrival after which a request is aborted (408, or an error event when
    /// streaming); 0 disables.
    #[arg(long, env = "HHH_REQUEST_TIMEOUT", default_value_t = 600.0)]
    pub request_timeout: f64,
    /// Seconds a client may take to send the request headers.
    #[arg(long, env = "HHH_HEADER_READ_TIMEOUT", default_value_t = 30.0)]
    pub header_read_timeout: f64,
    /// Seconds in-flight requests get to finish after SIGTERM before they are aborted.
    #[arg(long, env = "HHH_SHUTDOWN_TIMEOUT", default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// API key required on every route but /health* and /metrics (repeatable; the env
    /// variable takes a comma-separated list).
    #[arg(long = "api-key", env = "HHH_API_KEY", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// File with one API key per line (`#` comments allowed).
    #[arg(long, env = "HHH_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Serve /metrics on this port (same host) instead of the API port.
    #[arg(long, env = "HHH_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Log format.
    #[arg(long, env = "HHH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

fn secs(s: f64) -> Option<Duration> {
    (s > 0.0 && s.is_finite()).then(|| Duration::from_secs_f64(s))
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

/// A running server.
pub struct Server {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The metrics listener's address, with `--metrics-port`.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    pub engine: EngineClient,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    header_read_timeout: Duration,
    shutdown_timeout: Duration,
}

impl Server {
    /// Serve until `shutdown` resolves, then drain (see [`serve`]) and stop the engine.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let app = router(self.state.clone(), self.metrics_listener.is_none());
        if let Some(l) = self.metrics_listener {
            let m = metrics_router(self.state.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, m).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        let (state, engine, timeout) = (self.state.clone(), self.engine.clone(), self.shutdown_timeout);
        let stop = async move {
            shutdown.await;
            serve::drain(&state, &engine, timeout).await;
        };
        serve::serve_until(self.listener, app, self.header_read_timeout, stop).await;
        self.engine.shutdown();
        Ok(())
    }
}

/// Load everything, bind, warm up; the returned server is ready.
pub async fn start(a: ServeArgs) -> anyhow::Result<Server> {
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
    let metrics = Arc::new(Metrics::new());
    metrics.model_info.with_label_values(&[&served_name(&a), &model.dtype_name, "cpu", &a.block_size.to_string()]).set(1);
    let cfg = EngineConfig {
        max_waiting_requests: a.max_waiting_requests,
        max_waiting_tokens: a.max_waiting_tokens,
        metrics: metrics.clone(),
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
    let mut state = AppState::new(engine.clone(), tokenizer, served_name(&a), limits, metrics).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut keys = a.api_keys.clone();
    if let Some(f) = &a.api_key_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading the API key file {}", f.display()))?;
        keys.extend(ApiKeys::parse_file(&text));
    }
    state.api_keys = Arc::new(ApiKeys::new(keys));
    state.request_timeout = secs(a.request_timeout);
    if state.api_keys.enabled() {
        tracing::info!("API keys required on /v1/*, /tokenize, /detokenize");
    }
    let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port)).await.with_context(|| format!("binding {}:{}", a.host, a.port))?;
    let metrics_listener = match a.metrics_port {
        Some(p) => Some(tokio::net::TcpListener::bind((a.host.as_str(), p)).await.with_context(|| format!("binding the metrics port {}:{p}", a.host))?),
        None => None,
    };
    tracing::info!(addr = %listener.local_addr()?, model = %state.model_name, "listening");
    warm_up(&engine).await?;
    state.ready.store(true, Ordering::SeqCst);
    tracing::info!("ready");
    Ok(Server {
        addr: listener.local_addr()?,
        metrics_addr: metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
        state,
        engine,
        listener,
        metrics_listener,
        header_read_timeout: secs(a.header_read_timeout).unwrap_or(Duration::from_secs(30)),
        shutdown_timeout: secs(a.shutdown_timeout).unwrap_or(Duration::ZERO),
    })
}

/// One tiny forward before readiness turns 200.
pub async fn warm_up(engine: &hhh_engine::EngineClient) -> anyhow::Result<()> {
    let mut h = engine.submit(vec![0, 1], SamplingParams { temperature: 0.0, max_tokens: 1, ignore_eos: true, ..Default::default() })?;
    while let Some(ev) = h.recv().await {
        if let EngineEvent::Finished { error, .. } = ev {
            anyhow::ensure!(error.is_none(), "warm-up failed: {error:?}");
            return Ok(());
        }
    }
    anyhow::bail!("engine stopped during warm-up")
}
