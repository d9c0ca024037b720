//! `/v1/models`, `/health`, `/tokenize`, `/detokenize`, `/tokenizer_info`, and the 404 fallback.

use crate::error::ApiError;
use crate::prompt::{encode_text, render_chat, template_messages};
use crate::state::AppState;
use crate::validate::read_json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hhh_proto::*;
use std::sync::atomic::Ordering;

pub async fn models(State(st): State<AppState>) -> Json<ModelList> {
    let card = |id: &str, kind: &str, caps: Vec<&str>, max_model_len| ModelCard {
        id: id.to_string(),
        object: "model".into(),
        created: st.created,
        owned_by: "hhh-serve".into(),
        max_model_len,
        kind: Some(kind.to_string()),
        capabilities: caps.into_iter().map(String::from).collect(),
        generation_defaults: None,
        weight_version: None,
    };
    let primary_scores = st.scorers.iter().any(|s| s.name == st.model_name);
    let mut data = Vec::new();
    if st.generates {
        let caps = if primary_scores { vec!["generate", "score"] } else { vec!["generate"] };
        let mut c = card(&st.model_name, "policy", caps, st.engine.info().max_model_len);
        c.generation_defaults = (!st.generation_defaults.is_empty()).then(|| st.generation_defaults.as_ref().clone());
        c.weight_version = Some(st.engine.weight_version());
        data.push(c);
    }
    for s in st.scorers.iter().filter(|s| !(st.generates && s.name == st.model_name)) {
        let mut c = card(&s.name, s.kind, vec!["score"], s.engine.info().max_model_len);
        c.weight_version = Some(s.engine.weight_version());
        data.push(c);
    }
    for f in st.feedback_models.iter() {
        data.push(card(&f.name, "feedback", vec!["harmlessness"], f.engine.info().max_model_len));
    }
    Json(ModelList { object: "list".into(), data })
}

/// 200 once the model is loaded and warmed up, 503 before (and after the engine stops).
pub async fn health(State(st): State<AppState>) -> Response {
    let stopped = st.engine.stats().stopped.load(Ordering::Relaxed);
    if st.ready.load(Ordering::Relaxed) && !stopped {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        ApiError::unavailable("The model is not ready.").into_response()
    }
}

/// Liveness: the process answers HTTP.
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "alive"}))
}

/// Readiness: loaded, warmed up, engine running and not draining. Load balancers stop sending
/// traffic as soon as this turns 503.
pub async fn ready(State(st): State<AppState>) -> Response {
    let status = if st.draining.load(Ordering::SeqCst) {
        "draining"
    } else if st.engine.stats().stopped.load(Ordering::Relaxed) {
        "engine_stopped"
    } else if !st.ready.load(Ordering::Relaxed) {
        "loading"
    } else {
        return (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))).into_response();
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": status}))).into_response()
}

/// Prometheus text exposition: the primary engine's metrics, and every additional engine's
/// labelled `engine="<name>"`.
pub async fn metrics(State(st): State<AppState>) -> Response {
    // Gauges of engine state, read from the engines themselves (one source of truth: a weight
    // update also holds admission, and only the engine knows when it ends).
    st.metrics.generation_paused.set(st.engine.stats().paused.load(Ordering::SeqCst) as i64);
    for t in st.weight_targets.iter() {
        t.metrics.weight_version.set(t.engine.weight_version() as i64);
    }
    let mut parts: Vec<&hhh_metrics::Metrics> = vec![&st.metrics];
    parts.extend(st.extra_metrics.iter().map(|m| m.as_ref()));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], hhh_metrics::render_all(&parts)).into_response()
}

pub async fn tokenize(State(st): State<AppState>, body: Body) -> Result<Json<TokenizeResponse>, ApiError> {
    let req: TokenizeRequest = read_json(body, &st.limits, &["prompt", "messages", "add_special_tokens", "add_generation_prompt"]).await?;
    if let Some(m) = &req.model {
        if *m != st.model_name {
            return Err(ApiError::model_not_found(m));
        }
    }
    let tokens = match (req.prompt, req.messages) {
        (Some(p), None) => encode_text(&st.tokenizer, p, req.add_special_tokens.unwrap_or(true)).await?,
        (None, Some(m)) => render_chat(st.template.clone(), st.tokenizer.clone(), template_messages(&m)?, req.add_generation_prompt.unwrap_or(true)).await?,
        _ => return Err(ApiError::bad_request("Give exactly one of `prompt` and `messages`.")),
    };
    Ok(Json(TokenizeResponse { count: tokens.len(), tokens, max_model_len: st.engine.info().max_model_len }))
}

/// vLLM's `/tokenizer_info`: special tokens, the chat template served, limits.
pub async fn tokenizer_info(State(st): State<AppState>) -> Json<TokenizerInfo> {
    let tok = &st.tokenizer;
    Json(TokenizerInfo {
        tokenizer_class: "PreTrainedTokenizerFast".into(),
        bos_token: tok.bos_token().map(str::to_string),
        eos_token: tok.eos_token().map(str::to_string),
        pad_token: None,
        chat_template: st.template.as_ref().as_ref().map(|t| t.source().to_string()),
        add_bos_token: tok.bos_for_text().is_some(),
        model_max_length: st.engine.info().max_model_len,
        vocab_size: tok.vocab_size(),
    })
}

pub async fn detokenize(State(st): State<AppState>, body: Body) -> Result<Json<DetokenizeResponse>, ApiError> {
    let req: DetokenizeRequest = read_json(body, &st.limits, &["tokens"]).await?;
    let vocab = st.tokenizer.vocab_size();
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::invalid("tokens", format!("Token id {bad} is outside the vocabulary (size {vocab}).")));
    }
    let prompt = st.tokenizer.decode(&req.tokens, false).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(DetokenizeResponse { prompt }))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("No such route.")
}

/// The web playground: one self-contained page (HTML, CSS and JS inline, nothing fetched from
/// elsewhere) embedded in the binary; docs/playground.md.
pub async fn playground() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"), (axum::http::header::CACHE_CONTROL, "no-cache")], include_str!("../../assets/playground.html")).into_response()
}

/// `/` leads to the playground.
pub async fn root() -> axum::response::Redirect {
    axum::response::Redirect::to("/playground")
}
