//! hhh-api: the OpenAI-compatible HTTP layer (axum). It never touches tensors: requests become
//! token ids, go to the engine through [`hhh_engine::EngineClient`], and come back as events.
//!
//! ```text
//! POST /v1/chat/completions ─▶ validate (400 naming the field) ─▶ chat template ─▶ tokenize
//!   ─▶ EngineClient::submit (n handles) ─▶ generate::choice_stream (detokenize, stop strings)
//!   ─▶ JSON body or SSE chunks; a dropped SSE stream drops the handles, aborting the requests
//! ```

pub mod chat;
pub mod completions;
pub mod error;
pub mod generate;
pub mod misc;
pub mod validate;

use axum::routing::{get, post};
use axum::Router;
use hhh_engine::EngineClient;
use hhh_text::{ChatTemplate, Tokenizer};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use error::ApiError;

/// Request limits enforced before anything reaches the engine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Largest `n`.
    pub max_n: usize,
    /// Largest `top_logprobs` / `logprobs`.
    pub max_logprobs: usize,
    /// Most stop strings per request.
    pub max_stop: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 4 << 20, max_n: 16, max_logprobs: 20, max_stop: 16 }
    }
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
    pub limits: Limits,
    /// Model loaded and warmed up; `/health` is 503 until then.
    pub ready: Arc<AtomicBool>,
    /// Unix time the server started (for `/v1/models`).
    pub created: u64,
}

impl AppState {
    /// State for a loaded model; the chat template comes from the tokenizer's metadata.
    pub fn new(engine: EngineClient, tokenizer: Tokenizer, model_name: String, limits: Limits) -> Result<Self, ApiError> {
        let template = match tokenizer.chat_template() {
            Some(src) => Some(ChatTemplate::new(src, tokenizer.bos_token(), tokenizer.eos_token()).map_err(|e| ApiError::internal(e.to_string()))?),
            None => None,
        };
        Ok(Self {
            engine,
            tokenizer: Arc::new(tokenizer),
            template: Arc::new(template),
            model_name,
            limits,
            ready: Arc::new(AtomicBool::new(false)),
            created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        })
    }
}

/// The full router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::handler))
        .route("/v1/completions", post(completions::handler))
        .route("/v1/models", get(misc::models))
        .route("/health", get(misc::health))
        .route("/tokenize", post(misc::tokenize))
        .route("/detokenize", post(misc::detokenize))
        .fallback(misc::not_found)
        .with_state(state)
}
