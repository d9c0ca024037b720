//! hhh-api: the OpenAI-compatible HTTP layer (axum). It never touches tensors: requests become
//! token ids, go to the engine through [`hhh_engine::EngineClient`], and come back as events.
//!
//! Layers, each calling only the ones below it (route modules never call each other; a test
//! in `tests/layers.rs` checks the imports):
//!
//! ```text
//! routes/      one module per endpoint family: parse → typed plan (every 400/404 here, before
//!              any engine request) → run → respond
//!   │          chat, completions, scoring (rewards, preferences, get_reward, pooling),
//!   │          harmlessness (compare, score), revise, label, misc (models, health, tokenize)
//!   ▼
//! services     feedback (constitutional compare: plan + run, CoT), select (the chat
//!   │          `harmlessness` extension), rewards (reward-model scoring)
//!   ▼
//! respond/     the response assembler: fan-out over n, usage, JSON collector, SSE driver
//! tools        tool calling: plan (tools, tool_choice), generic-mode prompts, calls read from
//!   │          the output and streamed as `tool_calls` deltas
//! jobs/        engine jobs: client-facing choice streams, waves of requests and their
//!   │          collectors (pooled, option logprobs, generate-until-stop)
//! prompt       chat templates, reward-model pairs, the Constitutional AI transcripts
//! validate, error, state, middleware, auth, constitution, structured (response_format /
//!              structured_outputs compiled into engine constraints with llguidance)
//! ```
//!
//! ```text
//! POST /v1/chat/completions ─▶ validate (400 naming the field) ─▶ prompt::render_chat
//!   ─▶ respond::Choices::submit (n handles) ─▶ jobs::submit_choice (detokenize, stop strings)
//!   ─▶ respond::collect → JSON, or respond::sse → SSE; a dropped stream drops the handles,
//!      aborting the requests
//! ```

pub mod auth;
pub mod constitution;
pub mod error;
pub mod feedback;
pub mod jobs;
pub mod middleware;
pub mod prompt;
pub mod respond;
pub mod rewards;
pub mod routes;
pub mod select;
pub mod state;
pub mod structured;
pub mod tools;
pub mod validate;

use axum::routing::{get, post};
use axum::Router;
use routes::{chat, completions, harmlessness, label, misc, revise, scoring};

pub use auth::ApiKeys;
pub use error::ApiError;
pub use middleware::{InFlight, RequestCtx};
pub use state::{AppState, FeedbackModel, Limits, Scorer};

/// The full router. `/health*` and `/metrics` are open; every other route is behind the API
/// keys (when configured) and the drain. With `metrics = false`, `/metrics` is left out (it is
/// then served on `--metrics-port` by [`metrics_router`]).
pub fn router(state: AppState, metrics: bool) -> Router {
    let mut r = Router::new()
        .route("/v1/chat/completions", post(chat::handler))
        .route("/v1/completions", post(completions::handler))
        .route("/v1/models", get(misc::models))
        .route("/v1/rewards", post(scoring::rewards))
        .route("/v1/preferences", post(scoring::preferences))
        .route("/get_reward", post(scoring::get_reward))
        .route("/pooling", post(scoring::pooling))
        .route("/v1/harmlessness/compare", post(harmlessness::compare))
        .route("/v1/harmlessness/score", post(harmlessness::score))
        .route("/v1/harmlessness/revise", post(revise::revise))
        .route("/v1/harmlessness/label", post(label::label))
        .route("/health", get(misc::health))
        .route("/health/live", get(misc::live))
        .route("/health/ready", get(misc::ready))
        .route("/tokenize", post(misc::tokenize))
        .route("/detokenize", post(misc::detokenize))
        .route("/tokenizer_info", get(misc::tokenizer_info));
    if metrics {
        r = r.route("/metrics", get(misc::metrics));
    }
    r.fallback(misc::not_found).method_not_allowed_fallback(misc::method_not_allowed).layer(axum::middleware::from_fn_with_state(state.clone(), middleware::track)).with_state(state)
}

/// `/metrics` alone, for a separate metrics port.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(misc::metrics)).with_state(state)
}
