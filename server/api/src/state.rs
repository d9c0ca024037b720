//! The shared state of every handler: the served models (policy, scorers, feedback models),
//! request limits and the server's lifecycle flags.

use crate::error::ApiError;
use crate::middleware::InFlight;
use crate::{constitution, ApiKeys};
use hhh_engine::EngineClient;
use hhh_metrics::Metrics;
use hhh_text::{ChatTemplate, Tokenizer};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Request limits enforced before anything reaches the engine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Largest `n`.
    pub max_n: usize,
    /// Largest `top_logprobs` / `logprobs`.
    pub max_logprobs: usize,
    /// Most inputs per scoring call (`/v1/rewards`, `/v1/preferences`, `/get_reward`, `/pooling`).
    pub max_score_inputs: usize,
    /// Most stop strings (and stop token ids) per request.
    pub max_stop: usize,
    /// Longest stop string, in characters.
    pub max_stop_chars: usize,
    /// Reject unknown fields on the OpenAI routes (`--strict-fields`) instead of ignoring them.
    pub strict_fields: bool,
    /// `/get_reward` truncates each query to this many tokens, as OpenRLHF's `serve_rm.py`
    /// (`--max_len`, default 2048) does, instead of refusing it (`--reward-max-len`).
    pub reward_max_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 4 << 20, max_n: 16, max_logprobs: 20, max_score_inputs: 256, max_stop: 16, max_stop_chars: 1000, strict_fields: false, reward_max_len: 2048 }
    }
}

/// A model that answers scoring requests: it has a reward head.
#[derive(Clone)]
pub struct Scorer {
    /// The name clients use in `model`.
    pub name: String,
    /// `"policy"` (the chat model with a reward head) or `"preference"` (scoring only).
    pub kind: &'static str,
    pub engine: EngineClient,
    pub tokenizer: Arc<Tokenizer>,
    /// Renders (conversation, response) inputs; `None`: only raw-text inputs are accepted.
    pub template: Arc<Option<ChatTemplate>>,
    /// Outputs of the head per input (1 for a scalar reward).
    pub num_labels: usize,
}

/// A generative model that answers the constitutional feedback routes (`/v1/harmlessness/compare`,
/// `/score`, `/label` and the chat extension): the chat model itself, or a model loaded with
/// `--feedback-model`, with its own engine.
#[derive(Clone)]
pub struct FeedbackModel {
    pub name: String,
    pub engine: EngineClient,
    pub tokenizer: Arc<Tokenizer>,
    /// The model's chat template, if it has one.
    pub template: Arc<Option<ChatTemplate>>,
}

/// A loaded P(IK) head: `P(IK) = σ(w · h + b)`.
#[derive(Debug, Clone)]
pub struct PikHead {
    pub weight: Vec<f32>,
    pub bias: f32,
    /// The prompt format of the questions it was trained on.
    pub format: hhh_proto::PromptFormat,
}

impl PikHead {
    /// `w · h + b` (f64 accumulation).
    pub fn logit(&self, hidden: &[f32]) -> f64 {
        self.weight.iter().zip(hidden).map(|(w, h)| *w as f64 * *h as f64).sum::<f64>() + self.bias as f64
    }
}

/// What one weight update loads: new model weights and/or a reward-head file.
#[derive(Debug, Clone, Default)]
pub struct WeightSource {
    pub model_path: Option<std::path::PathBuf>,
    pub reward_head_path: Option<std::path::PathBuf>,
}

/// Loads a [`WeightSource`] into the engine's update payload (set by the binary, which knows the
/// model types): checks the tokenizer, the files and the head's shape. Errors name the request
/// field they are about (a 400).
pub type WeightLoader = Arc<dyn Fn(&WeightSource) -> Result<hhh_engine::WeightPayload, (&'static str, String)> + Send + Sync>;

/// A served model whose weights `/update_weights_from_disk` can replace.
#[derive(Clone)]
pub struct WeightTarget {
    /// Its id in `/v1/models`.
    pub name: String,
    pub engine: EngineClient,
    pub loader: WeightLoader,
    /// The registry its update metrics go to (the chat model's, or the preference model's own).
    pub metrics: Arc<Metrics>,
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: EngineClient,
    pub tokenizer: Arc<Tokenizer>,
    /// `None` when the model ships no chat template (chat requests then get a 400).
    pub template: Arc<Option<ChatTemplate>>,
    /// The name clients use in `model`.
    pub model_name: String,
    /// The primary model generates text; false for a sequence-classification reward model,
    /// which only scores.
    pub generates: bool,
    /// Models that score (the primary one first when it has a head).
    pub scorers: Arc<Vec<Scorer>>,
    /// Extra feedback models (`--feedback-model`); the chat model is always one too.
    pub feedback_models: Arc<Vec<FeedbackModel>>,
    /// Principles of the constitutional feedback routes (`--constitution`, default built in).
    pub constitution: Arc<constitution::Constitution>,
    pub limits: Limits,
    /// Model loaded and warmed up; `/health` is 503 until then.
    pub ready: Arc<AtomicBool>,
    /// Set on SIGTERM: API routes answer 503, readiness turns 503.
    pub draining: Arc<AtomicBool>,
    /// API requests in flight (streams count until their last byte).
    pub inflight: Arc<InFlight>,
    /// Of those, the ones that are not Files or Batch API calls (clients polling a batch do not
    /// count): the batch runner narrows while any is in flight.
    pub interactive: Arc<InFlight>,
    /// Empty: authentication off.
    pub api_keys: Arc<ApiKeys>,
    /// Per-request limit from arrival to the last token (`--request-timeout`).
    pub request_timeout: Option<Duration>,
    pub metrics: Arc<Metrics>,
    /// Metrics of the additional engines (preference and feedback models), series labelled
    /// `engine="<name>"`, rendered with the primary's on /metrics.
    pub extra_metrics: Arc<Vec<Arc<Metrics>>>,
    /// Sampling defaults of the chat model for fields a request leaves out (listed in
    /// `/v1/models`).
    pub generation_defaults: Arc<hhh_proto::GenerationDefaults>,
    /// The chat model's grammar compiler for structured outputs (`None`: unavailable for its
    /// tokenizer; such requests get a 400 that says so).
    pub grammars: Option<Arc<crate::structured::Grammars>>,
    /// The chat model's tool-call output format (`--tool-call-parser`; by default read from
    /// the chat template). `None`: the generic JSON tool mode (docs/tools.md).
    pub tool_format: Option<hhh_text::tool_parse::ToolCallFormat>,
    /// The models `/update_weights_from_disk` can update, the default (chat) model first; empty:
    /// weight updates are not supported (the GPU engine, for now).
    pub weight_targets: Arc<Vec<WeightTarget>>,
    /// The P(IK) head on the chat model's final hidden state (`--pik-head`).
    pub pik: Option<Arc<PikHead>>,
    /// In-distribution activation statistics of the chat model (`--ood-stats`) for
    /// `/v1/ood/score`.
    pub ood: Option<Arc<crate::ood::OodStats>>,
    /// Unix time the server started (for `/v1/models`).
    pub created: u64,
}

impl AppState {
    /// State for a loaded model; the chat template comes from the tokenizer's metadata.
    pub fn new(engine: EngineClient, tokenizer: Tokenizer, model_name: String, limits: Limits, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
        let template = ChatTemplate::of_tokenizer(&tokenizer).map_err(|e| ApiError::internal(e.to_string()))?;
        let tokenizer = Arc::new(tokenizer);
        let grammars = match crate::structured::Grammars::new(tokenizer.clone()) {
            Ok(g) => Some(Arc::new(g)),
            Err(e) => {
                tracing::warn!(error = %e, "structured outputs are unavailable for this tokenizer");
                None
            }
        };
        let tool_format = template.as_ref().and_then(ChatTemplate::tool_call_format);
        Ok(Self {
            engine,
            tokenizer,
            template: Arc::new(template),
            model_name,
            generates: true,
            scorers: Arc::new(Vec::new()),
            feedback_models: Arc::new(Vec::new()),
            constitution: Arc::new(constitution::Constitution::parse(constitution::DEFAULT_CONSTITUTION).map_err(ApiError::internal)?),
            limits,
            ready: Arc::new(AtomicBool::new(false)),
            draining: Arc::new(AtomicBool::new(false)),
            inflight: Arc::new(InFlight::default()),
            interactive: Arc::new(InFlight::default()),
            api_keys: Arc::new(ApiKeys::default()),
            request_timeout: None,
            metrics,
            extra_metrics: Arc::new(Vec::new()),
            generation_defaults: Arc::new(hhh_proto::GenerationDefaults::default()),
            grammars,
            tool_format,
            pik: None,
            ood: None,
            weight_targets: Arc::new(Vec::new()),
            created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        })
    }
}

impl AppState {
    /// Serve `source` as the chat model's template (`--chat-template`); the tool-call format is
    /// read from it again.
    pub fn set_chat_template(&mut self, source: &str) -> Result<(), ApiError> {
        let t = ChatTemplate::for_tokenizer(source, &self.tokenizer).map_err(|e| ApiError::internal(e.to_string()))?;
        self.tool_format = t.tool_call_format();
        self.template = Arc::new(Some(t));
        Ok(())
    }

    /// 404 for an unknown model, 400 for a model that cannot generate.
    pub fn check_generation_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.model_name && self.generates {
            return Ok(());
        }
        if self.scorers.iter().any(|s| s.name == model) {
            return Err(ApiError::invalid("model", format!("`{model}` is a preference model: it only scores (use /v1/rewards or /v1/preferences).")));
        }
        if self.feedback_models.iter().any(|f| f.name == model) {
            return Err(ApiError::invalid("model", format!("`{model}` is a feedback model: it only answers /v1/harmlessness/compare, /score and /label.")));
        }
        Err(ApiError::model_not_found(model))
    }

    /// The feedback model named `model`; without a name, the chat model (or, on a scoring-only
    /// server, the first `--feedback-model`). 400 for a model that cannot generate, 404 when unknown.
    pub fn feedback_model(&self, model: Option<&str>) -> Result<FeedbackModel, ApiError> {
        let chat = || FeedbackModel { name: self.model_name.clone(), engine: self.engine.clone(), tokenizer: self.tokenizer.clone(), template: self.template.clone() };
        match model {
            None if self.generates => Ok(chat()),
            None => self.feedback_models.first().cloned().ok_or_else(|| ApiError::invalid("model", "This server has no generative model to ask for feedback (start it with --feedback-model).")),
            Some(m) if m == self.model_name && self.generates => Ok(chat()),
            Some(m) => match self.feedback_models.iter().find(|f| f.name == m) {
                Some(f) => Ok(f.clone()),
                None if self.scorers.iter().any(|s| s.name == m) => {
                    Err(ApiError::invalid("model", format!("`{m}` cannot be the feedback model: it is a preference model (scores only); use the chat model or a --feedback-model.")))
                }
                None => Err(ApiError::model_not_found(m)),
            },
        }
    }

    /// The scoring model named `model`: 404 when unknown, 400 when it has no reward head.
    pub fn scorer(&self, model: &str) -> Result<&Scorer, ApiError> {
        if let Some(s) = self.scorers.iter().find(|s| s.name == model) {
            return Ok(s);
        }
        if model == self.model_name {
            return Err(ApiError::invalid("model", format!("`{model}` has no reward head, so it cannot score; serve it with --reward-head, or serve a preference model with --preference-model.")));
        }
        Err(ApiError::model_not_found(model))
    }

    /// The default scoring model (for routes without a `model` field).
    pub fn default_scorer(&self) -> Result<&Scorer, ApiError> {
        self.scorers.first().ok_or_else(|| ApiError::bad_request("No model with a reward head is served; start the server with --preference-model or --reward-head."))
    }
}
