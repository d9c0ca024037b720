//! Wiring shared by the `hhh-server` binary and the end-to-end tests: load the model and
//! tokenizer, start the engine thread, warm up, and serve the router.

pub mod batch;
pub mod generation;
pub mod gpu_check;
pub mod honesty;
pub mod interp;
mod load;
pub mod serve;
pub mod train;
mod weights;

use anyhow::Context;
use clap::{Args, ValueEnum};
use hhh_api::{metrics_router, router, ApiKeys, AppState, Limits, Scorer};
use hhh_engine::{EngineClient, SamplingParams};
use hhh_metrics::Metrics;
use hhh_model::attention::KvDtype;
use hhh_model::gpu::{DeviceSpec, DtypeArg};
use load::load_engine;
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
    /// Storage type of cached keys and values, `f16` or `f32` (attention computes in f32 either
    /// way; f16 halves the pool). Default: f16 for GGUF models, f32 for safetensors models.
    /// Every engine of the server uses it.
    #[arg(long, env = "HHH_KV_CACHE_DTYPE")]
    pub kv_cache_dtype: Option<KvDtype>,
    /// Maximum number of requests running at once.
    #[arg(long, env = "HHH_MAX_NUM_SEQS", default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Token budget per engine step (chunked-prefill size). 256 by default: on CPU a step costs
    /// roughly its token count, so smaller steps let prompts finish (first token) and running
    /// requests advance at a finer grain, with the same throughput (see docs/benchmarks.md).
    #[arg(long, env = "HHH_MAX_NUM_BATCHED_TOKENS", default_value_t = 256)]
    pub max_num_batched_tokens: usize,
    /// Context length (prompt + completion); default: the model's, capped at 8192.
    #[arg(long, env = "HHH_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Disable automatic prefix caching.
    #[arg(long, env = "HHH_NO_PREFIX_CACHING")]
    pub no_prefix_caching: bool,
    /// Sampling defaults for fields a request leaves out: `auto` (the model's
    /// generation_config.json, beside a GGUF as `<name>.generation_config.json`, or its GGUF
    /// `general.sampling.*` keys), `none`, or a directory holding a generation_config.json.
    #[arg(long, env = "HHH_GENERATION_CONFIG", default_value = "auto")]
    pub generation_config: generation::GenerationSource,
    /// JSON of generation_config.json keys laid over those defaults, e.g. '{"temperature": 0.7}'.
    #[arg(long, env = "HHH_OVERRIDE_GENERATION_CONFIG")]
    pub override_generation_config: Option<String>,
    /// Reject unknown request fields on the OpenAI routes with a 400 (default: ignore them, log
    /// each name once and list them in the `x-hhh-ignored-fields` response header, as vLLM does).
    #[arg(long, env = "HHH_STRICT_FIELDS")]
    pub strict_fields: bool,
    /// A Jinja chat template file served instead of the model's own (as vLLM's
    /// `--chat-template`).
    #[arg(long, env = "HHH_CHAT_TEMPLATE")]
    pub chat_template: Option<PathBuf>,
    /// How tool calls are written and read: `auto` (from the chat template's markers: hermes,
    /// llama3_json or mistral; templates without tools use the generic JSON mode), one of
    /// `hermes`, `llama3_json`, `mistral`, or `generic` (see docs/tools.md).
    #[arg(long, env = "HHH_TOOL_CALL_PARSER", default_value = "auto")]
    pub tool_call_parser: String,
    /// Compute threads (default: all cores).
    #[arg(long, env = "HHH_THREADS")]
    pub threads: Option<usize>,
    /// Reference arithmetic on the CPU: candle's dense attention and scalar Q4_1 dot products
    /// instead of the paged and SIMD kernels, f32 KV (exact cross-checks against candle; slow).
    #[arg(long, env = "HHH_DENSE_ATTENTION", hide_short_help = true)]
    pub dense_attention: bool,
    /// Prompt tokens through the int8 path too, instead of the f32 Q4_1 path (A/B measurements).
    #[arg(long, env = "HHH_PROMPT_INT8", hide_short_help = true)]
    pub prompt_int8: bool,
    /// Leave AVX-512F unused in the f32 kernels, 8-lane AVX2 instead (A/B measurements).
    #[arg(long, env = "HHH_NO_AVX512", hide_short_help = true)]
    pub no_avx512: bool,
    /// Leave the AVX-512 VNNI Q4_1 kernel unused, the AVX2 kernels instead (A/B measurements).
    #[arg(long, env = "HHH_NO_VNNI512", hide_short_help = true)]
    pub no_vnni512: bool,
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
    /// Reward-head file (JSON, see docs/preference-model.md) for `--model`: the chat model then
    /// also answers /v1/rewards and /v1/preferences.
    #[arg(long, env = "HHH_REWARD_HEAD")]
    pub reward_head: Option<PathBuf>,
    /// `/get_reward` truncates each query to this many tokens (OpenRLHF `serve_rm.py --max_len`).
    #[arg(long, env = "HHH_REWARD_MAX_LEN", default_value_t = 2048)]
    pub reward_max_len: usize,
    /// P(IK) head file for `--model` (from `hhh-server train-pik-head`, see docs/honesty.md):
    /// serves /v1/pik.
    #[arg(long, env = "HHH_PIK_HEAD")]
    pub pik_head: Option<PathBuf>,
    /// In-distribution activation statistics for `--model` (from `hhh-server fit-ood`, see
    /// docs/interpretability.md): serves /v1/ood/score.
    #[arg(long, env = "HHH_OOD_STATS")]
    pub ood_stats: Option<PathBuf>,
    /// A second model, for scoring only, with its own engine and KV pool: a Hugging Face
    /// `*ForSequenceClassification` directory, or any model with `--preference-head`.
    #[arg(long, env = "HHH_PREFERENCE_MODEL")]
    pub preference_model: Option<PathBuf>,
    /// Reward-head file for `--preference-model` (not needed for sequence-classification models).
    #[arg(long, env = "HHH_PREFERENCE_HEAD")]
    pub preference_head: Option<PathBuf>,
    /// Name of the preference model in `model` (default: its file or directory name + `-pm`).
    #[arg(long, env = "HHH_PREFERENCE_MODEL_NAME")]
    pub preference_model_name: Option<String>,
    /// KV-cache size of the preference model in GiB (ignored with --preference-num-kv-blocks).
    #[arg(long, env = "HHH_PREFERENCE_KV_CACHE_GB", default_value_t = 0.25)]
    pub preference_kv_cache_gb: f64,
    /// Exact number of KV-cache blocks of the preference model.
    #[arg(long, env = "HHH_PREFERENCE_NUM_KV_BLOCKS")]
    pub preference_num_kv_blocks: Option<usize>,
    /// A second generative model for the constitutional feedback routes (`model` in
    /// /v1/harmlessness/compare, /score, /label and the chat extension's `feedback_model`), with
    /// its own engine and KV pool: a GGUF file or a Hugging Face causal-LM directory.
    #[arg(long, env = "HHH_FEEDBACK_MODEL")]
    pub feedback_model: Option<PathBuf>,
    /// Name of the feedback model in `model` (default: its file or directory name + `-feedback`).
    #[arg(long, env = "HHH_FEEDBACK_MODEL_NAME")]
    pub feedback_model_name: Option<String>,
    /// KV-cache size of the feedback model in GiB (ignored with --feedback-num-kv-blocks).
    #[arg(long, env = "HHH_FEEDBACK_KV_CACHE_GB", default_value_t = 0.5)]
    pub feedback_kv_cache_gb: f64,
    /// Exact number of KV-cache blocks of the feedback model.
    #[arg(long, env = "HHH_FEEDBACK_NUM_KV_BLOCKS")]
    pub feedback_num_kv_blocks: Option<usize>,
    /// Where the models run: `cpu` (our CPU kernels; GGUF or safetensors), `cuda` / `cuda:N`
    /// (NVIDIA GPU; Hugging Face safetensors directories; needs a `--features cuda` build), or
    /// `candle-cpu` (the GPU engine's code on candle's CPU backend: slow, for checking).
    #[arg(long, env = "HHH_DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,
    /// Compute and KV-cache dtype on the GPU path: `auto` (bf16 on CUDA, f16 for an f16
    /// checkpoint; f32 on candle-cpu), `bf16`, `f16` or `f32`.
    #[arg(long, env = "HHH_DTYPE", default_value = "auto")]
    pub dtype: DtypeArg,
    /// Share of the GPU's memory the server may use (weights, activations, KV pool); the KV
    /// pool gets what is left after the weights and a profiled worst-case step. `--num-kv-blocks`
    /// overrides it.
    #[arg(long, env = "HHH_GPU_MEMORY_UTILIZATION", default_value_t = 0.90)]
    pub gpu_memory_utilization: f64,
    /// Constitution file for /v1/harmlessness/* (default: the built-in one, the principles of
    /// Bai et al. 2022; format in docs/harmlessness.md).
    #[arg(long, env = "HHH_CONSTITUTION")]
    pub constitution: Option<PathBuf>,
    #[command(flatten)]
    pub batch: batch::BatchArgs,
}

fn secs(s: f64) -> Option<Duration> {
    (s > 0.0 && s.is_finite()).then(|| Duration::from_secs_f64(s))
}

fn served_name(a: &ServeArgs) -> String {
    match &a.served_model_name {
        Some(n) => n.clone(),
        None => default_name(&a.model),
    }
}

pub(crate) fn default_name(path: &std::path::Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_else(|| "model".into());
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
    /// Engines of extra (preference) models, stopped with the main one.
    pub extra_engines: Vec<EngineClient>,
    /// `/v1/files` and `/v1/batches`.
    extra_routes: axum::Router<AppState>,
    /// The batch runner; it stops when the drain begins.
    batch_runner: tokio::task::JoinHandle<()>,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    header_read_timeout: Duration,
    shutdown_timeout: Duration,
}

impl Server {
    /// Serve until `shutdown` resolves, then drain (see [`serve`]) and stop the engine.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let app = router(self.state.clone(), self.metrics_listener.is_none(), Some(self.extra_routes));
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
        // Drained: the runner has stopped taking lines (unfinished batches resume on restart).
        self.batch_runner.abort();
        self.engine.shutdown();
        for e in &self.extra_engines {
            e.shutdown();
        }
        Ok(())
    }
}

/// The models and the API state, loaded (before binding or warming up).
pub struct Loaded {
    pub state: AppState,
    pub engine: EngineClient,
    /// Engines of extra (preference, feedback) models.
    pub extra_engines: Vec<EngineClient>,
}

/// Load everything, bind, warm up; the returned server is ready.
pub async fn start(a: ServeArgs) -> anyhow::Result<Server> {
    let Loaded { state, engine, extra_engines } = load(&a).await?;
    let batches = batch::service(&a, state.clone())?;
    let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port)).await.with_context(|| format!("binding {}:{}", a.host, a.port))?;
    let metrics_listener = match a.metrics_port {
        Some(p) => Some(tokio::net::TcpListener::bind((a.host.as_str(), p)).await.with_context(|| format!("binding the metrics port {}:{p}", a.host))?),
        None => None,
    };
    tracing::info!(addr = %listener.local_addr()?, model = %state.model_name, "listening");
    warm_up(&engine).await?;
    state.ready.store(true, Ordering::SeqCst);
    let runner = batches.spawn();
    tracing::info!("ready");
    Ok(Server {
        addr: listener.local_addr()?,
        metrics_addr: metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
        state,
        engine,
        extra_engines,
        extra_routes: hhh_batch::routes::routes(batches),
        batch_runner: runner,
        listener,
        metrics_listener,
        header_read_timeout: secs(a.header_read_timeout).unwrap_or(Duration::from_secs(30)),
        shutdown_timeout: secs(a.shutdown_timeout).unwrap_or(Duration::ZERO),
    })
}

/// Load the models and build the API state from the flags.
pub async fn load(a: &ServeArgs) -> anyhow::Result<Loaded> {
    let isa = hhh_kernels::quant::isa::IsaLimits { no_avx512: a.no_avx512, no_vnni512: a.no_vnni512 };
    hhh_kernels::quant::isa::limit(isa).map_err(|now| anyhow::anyhow!("--no-avx512/--no-vnni512 cannot change in a running process (in force: {now:?})"))?;
    let metrics = Arc::new(Metrics::new());
    let main = load_engine(a, &a.model, a.reward_head.as_deref(), a.kv_cache_gb, a.num_kv_blocks, metrics.clone())?;
    let name = served_name(a);
    metrics.model_info.with_label_values(&[&name, &main.dtype, &a.device.to_string(), &a.block_size.to_string()]).set(1);
    let engine = main.engine.clone();
    let limits = Limits { max_body_bytes: a.max_body_bytes, max_n: a.max_n, strict_fields: a.strict_fields, reward_max_len: a.reward_max_len.max(1), ..Limits::default() };
    let mut state = AppState::new(engine.clone(), main.tokenizer, name.clone(), limits, metrics).map_err(|e| anyhow::anyhow!("{e}"))?;
    state.generates = !main.seq_cls;
    if let Some(f) = &a.chat_template {
        let src = std::fs::read_to_string(f).with_context(|| format!("reading the chat template {}", f.display()))?;
        state.set_chat_template(&src).map_err(|e| anyhow::anyhow!("--chat-template {}: {e}", f.display()))?;
    }
    match a.tool_call_parser.as_str() {
        "auto" => {}
        "generic" => state.tool_format = None,
        name => {
            let f = hhh_text::tool_parse::ToolCallFormat::from_name(name).ok_or_else(|| anyhow::anyhow!("--tool-call-parser {name}: expected auto, hermes, llama3_json, mistral or generic"))?;
            state.tool_format = Some(f);
        }
    }
    tracing::info!(format = state.tool_format.map_or("generic", |f| f.name()), "tool calling");
    let loader = weights::loader(main.backend.clone(), state.tokenizer.clone(), main.seq_cls, main.num_labels);
    let mut weight_targets = vec![hhh_api::WeightTarget { name: name.clone(), engine: engine.clone(), loader, metrics: state.metrics.clone() }];
    if let Some(f) = &a.pik_head {
        anyhow::ensure!(state.generates, "--pik-head needs a generative --model");
        let head = honesty::load_pik_head(f)?;
        tracing::info!(file = %f.display(), format = ?head.format, "P(IK) head enabled on /v1/pik");
        state.pik = Some(Arc::new(head));
    }
    if let Some(f) = &a.ood_stats {
        anyhow::ensure!(state.generates, "--ood-stats needs a generative --model");
        let stats = hhh_api::ood::OodStats::from_file(f).map_err(|e| anyhow::anyhow!("--ood-stats: {e}"))?;
        anyhow::ensure!(stats.dim == main_hidden(&engine).await?, "--ood-stats {}: its width {} is not the model's hidden size", f.display(), stats.dim);
        tracing::info!(file = %f.display(), layer = stats.layer, threshold = stats.threshold, "OOD statistics enabled on /v1/ood/score");
        state.ood = Some(Arc::new(stats));
    }
    if state.generates {
        let d = generation::load(&a.model, &a.generation_config, a.override_generation_config.as_deref())?;
        tracing::info!(defaults = ?d, source = %a.generation_config, "generation defaults");
        state.generation_defaults = Arc::new(d);
    }
    let mut scorers = Vec::new();
    if let Some(n) = main.num_labels {
        let kind = if main.seq_cls { "preference" } else { "policy" };
        scorers.push(Scorer { name: name.clone(), kind, engine: engine.clone(), tokenizer: state.tokenizer.clone(), template: state.template.clone(), num_labels: n });
    }
    let mut extra_engines = Vec::new();
    let mut extra_metrics = Vec::new();
    if let Some(pm) = &a.preference_model {
        let pm_name = a.preference_model_name.clone().unwrap_or_else(|| format!("{}-pm", default_name(pm)));
        anyhow::ensure!(pm_name != name, "the preference model's name `{pm_name}` is the same as the chat model's; set --preference-model-name");
        // Its own registry, series labelled engine="<name>" (see docs/metrics.md).
        let m = Arc::new(Metrics::for_engine(&pm_name));
        let loaded = load_engine(a, pm, a.preference_head.as_deref(), a.preference_kv_cache_gb, a.preference_num_kv_blocks, m.clone())?;
        m.model_info.with_label_values(&[&pm_name, &loaded.dtype, &a.device.to_string(), &a.block_size.to_string()]).set(1);
        extra_metrics.push(m.clone());
        let Some(n) = loaded.num_labels else { anyhow::bail!("--preference-model {} has no reward head: give --preference-head, or a *ForSequenceClassification directory", pm.display()) };
        let template = hhh_text::ChatTemplate::of_tokenizer(&loaded.tokenizer)?;
        warm_up(&loaded.engine).await?;
        extra_engines.push(loaded.engine.clone());
        let tokenizer = Arc::new(loaded.tokenizer);
        let loader = weights::loader(loaded.backend.clone(), tokenizer.clone(), loaded.seq_cls, Some(n));
        weight_targets.push(hhh_api::WeightTarget { name: pm_name.clone(), engine: loaded.engine.clone(), loader, metrics: m.clone() });
        scorers.push(Scorer { name: pm_name, kind: "preference", engine: loaded.engine, tokenizer, template: Arc::new(template), num_labels: n });
    }
    let mut feedback = Vec::new();
    if let Some(fm) = &a.feedback_model {
        let fm_name = a.feedback_model_name.clone().unwrap_or_else(|| format!("{}-feedback", default_name(fm)));
        anyhow::ensure!(fm_name != name && !scorers.iter().any(|s| s.name == fm_name), "the feedback model's name `{fm_name}` is taken; set --feedback-model-name");
        // Its own registry, like the preference model's (see docs/metrics.md).
        let m = Arc::new(Metrics::for_engine(&fm_name));
        let loaded = load_engine(a, fm, None, a.feedback_kv_cache_gb, a.feedback_num_kv_blocks, m.clone())?;
        m.model_info.with_label_values(&[&fm_name, &loaded.dtype, &a.device.to_string(), &a.block_size.to_string()]).set(1);
        extra_metrics.push(m);
        anyhow::ensure!(!loaded.seq_cls, "--feedback-model {} is a sequence-classification model: feedback needs a generative model", fm.display());
        warm_up(&loaded.engine).await?;
        extra_engines.push(loaded.engine.clone());
        tracing::info!(model = %fm_name, "feedback model enabled on /v1/harmlessness/*");
        let template = Arc::new(hhh_text::ChatTemplate::of_tokenizer(&loaded.tokenizer)?);
        feedback.push(hhh_api::FeedbackModel { name: fm_name, engine: loaded.engine, tokenizer: Arc::new(loaded.tokenizer), template });
    }
    state.feedback_models = Arc::new(feedback);
    state.weight_targets = Arc::new(weight_targets);
    state.extra_metrics = Arc::new(extra_metrics);
    if !scorers.is_empty() {
        tracing::info!(models = ?scorers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), "scoring enabled on /v1/rewards, /v1/preferences, /get_reward, /pooling");
    }
    state.scorers = Arc::new(scorers);
    if let Some(f) = &a.constitution {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading the constitution {}", f.display()))?;
        state.constitution = Arc::new(hhh_api::constitution::Constitution::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?);
    }
    let mut keys = a.api_keys.clone();
    if let Some(f) = &a.api_key_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading the API key file {}", f.display()))?;
        keys.extend(ApiKeys::parse_file(&text));
    }
    state.api_keys = Arc::new(ApiKeys::new(keys));
    state.request_timeout = secs(a.request_timeout);
    if state.api_keys.enabled() {
        tracing::info!("API keys required on every route but /health*, /metrics and the playground page");
    }
    Ok(Loaded { state, engine, extra_engines })
}

/// The hidden size of the model behind `engine` (one one-token inspection).
async fn main_hidden(engine: &hhh_engine::EngineClient) -> anyhow::Result<usize> {
    let r = engine.inspect(hhh_engine::InspectRequest { tokens: vec![0], hidden_layers: vec![0], ..Default::default() }).await?;
    Ok(r.hidden.first().map_or(0, Vec::len))
}

/// One tiny forward before readiness turns 200.
pub async fn warm_up(engine: &hhh_engine::EngineClient) -> anyhow::Result<()> {
    let h = engine.submit(vec![0, 1], SamplingParams { temperature: 0.0, max_tokens: 1, ignore_eos: true, ..Default::default() })?;
    h.collect().await.result().map_err(|e| anyhow::anyhow!("warm-up failed: {e}"))?;
    Ok(())
}
