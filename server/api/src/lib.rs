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
pub mod honesty;
pub mod interp;
pub mod jobs;
pub mod middleware;
pub mod ood;
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
use routes::{chat, completions, harmlessness, honesty as honesty_routes, interp as interp_routes, label, misc, ood as ood_routes, revise, scoring, weights};

pub use auth::ApiKeys;
pub use error::ApiError;
pub use middleware::{InFlight, RequestCtx};
pub use state::{AppState, FeedbackModel, Limits, Scorer, WeightLoader, WeightSource, WeightTarget};

/// The routes that take requests (no middleware, no `/metrics`), for [`router`] and
/// [`dispatch`].
fn api_routes() -> Router<AppState> {
    Router::new()
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
        .route("/v1/self_evaluation", post(honesty_routes::self_evaluation))
        .route("/v1/pik", post(honesty_routes::pik))
        .route("/v1/evals/behavior", post(honesty_routes::behavior))
        .route("/v1/interpretability/induction", post(interp_routes::induction))
        .route("/v1/ood/score", post(ood_routes::score))
        .route("/update_weights_from_disk", post(weights::update_weights_from_disk))
        .route("/get_weight_version", get(weights::get_weight_version))
        .route("/pause_generation", post(weights::pause_generation))
        .route("/continue_generation", post(weights::continue_generation))
        .route("/", get(misc::root))
        .route("/playground", get(misc::playground))
        .route("/health", get(misc::health))
        .route("/health/live", get(misc::live))
        .route("/health/ready", get(misc::ready))
        .route("/tokenize", post(misc::tokenize))
        .route("/detokenize", post(misc::detokenize))
        .route("/tokenizer_info", get(misc::tokenizer_info))
}

/// The full router. `/health*` and `/metrics` are open; every other route is behind the API
/// keys (when configured) and the drain. With `metrics = false`, `/metrics` is left out (it is
/// then served on `--metrics-port` by [`metrics_router`]). `extra` routes (the Files and Batch
/// APIs) are merged in behind the same middleware.
pub fn router(state: AppState, metrics: bool, extra: Option<Router<AppState>>) -> Router {
    let mut r = api_routes();
    if metrics {
        r = r.route("/metrics", get(misc::metrics));
    }
    if let Some(x) = extra {
        r = r.merge(x);
    }
    r.fallback(misc::not_found).method_not_allowed_fallback(misc::method_not_allowed).layer(axum::middleware::from_fn_with_state(state.clone(), middleware::track)).with_state(state)
}

/// `/metrics` alone, for a separate metrics port.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(misc::metrics)).with_state(state)
}

/// What a route answered to a request made in-process.
#[derive(Debug, Clone)]
pub struct Dispatched {
    pub status: u16,
    /// The whole response body (JSON for every route a batch line may name).
    pub body: axum::body::Bytes,
}

/// Run one `POST path` with a JSON `body` through the API routes in-process, as a batch line:
/// the same handlers, validation and limits as over HTTP, its engine requests at `priority`.
/// The API-key check and the drain are the caller's (the batch was admitted over HTTP, or runs
/// offline). `request_id` names it in the handlers' logs.
pub async fn dispatch(state: &AppState, path: &str, body: Vec<u8>, request_id: String, priority: hhh_engine::Priority) -> Result<Dispatched, ApiError> {
    use tower::ServiceExt;
    let req = axum::http::Request::post(path).header(axum::http::header::CONTENT_TYPE, "application/json").body(axum::body::Body::from(body)).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut req = req;
    req.extensions_mut().insert(std::sync::Arc::new(RequestCtx { id: request_id, arrival: std::time::Instant::now(), log: Default::default() }));
    let svc = api_routes().fallback(misc::not_found).with_state(state.clone());
    let work = async move {
        let resp = match svc.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(Dispatched { status, body })
    };
    jobs::with_priority(priority, validate::IGNORED.scope(Default::default(), work)).await
}
