//! Online RL control, in SGLang's shapes: `POST /update_weights_from_disk` (swap the chat
//! model's weights between two engine steps), `GET /get_weight_version`, `POST
//! /pause_generation`, `POST /continue_generation`. See `hhh_engine::engine_loop::control` for
//! what happens to requests in flight.

use crate::error::ApiError;
use crate::state::{AppState, WeightSource, WeightTarget};
use crate::validate::read_json_only;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::Json;
use hhh_proto::{PauseRequest, SuccessResponse, UpdateWeightsRequest, UpdateWeightsResponse, WeightVersionQuery, WeightVersionResponse};

/// The weight target a request names (`None`: the default, first one).
fn target<'a>(st: &'a AppState, model: Option<&str>) -> Result<&'a WeightTarget, ApiError> {
    let first = st.weight_targets.first().ok_or_else(|| ApiError::bad_request("This server has no model whose weights can be updated."))?;
    match model {
        None => Ok(first),
        Some(m) => st.weight_targets.iter().find(|t| t.name == m).ok_or_else(|| {
            let names: Vec<&str> = st.weight_targets.iter().map(|t| t.name.as_str()).collect();
            ApiError::invalid("model", format!("`model` must name a model whose weights can be updated ({}), got `{m}`.", names.join(", ")))
        }),
    }
}

/// `POST /update_weights_from_disk`.
pub async fn update_weights_from_disk(State(st): State<AppState>, body: Body) -> Result<Json<UpdateWeightsResponse>, ApiError> {
    let req: UpdateWeightsRequest = read_json_only(body, &st.limits, &["model_path", "reward_head_path", "model", "load_format", "flush_cache", "drain"]).await?;
    if !matches!(req.load_format.as_deref(), None | Some("auto")) {
        return Err(ApiError::invalid("load_format", "`load_format` must be `auto` (the format is read from the path: a GGUF file or a Hugging Face directory)."));
    }
    if req.flush_cache == Some(false) {
        return Err(ApiError::invalid("flush_cache", "`flush_cache` must be true: cached KV blocks were computed by the old weights."));
    }
    let path = |field: &'static str, p: &Option<String>| match p.as_deref().map(str::trim) {
        Some("") => Err(ApiError::invalid(field, format!("`{field}` must not be empty."))),
        other => Ok(other.map(std::path::PathBuf::from)),
    };
    let source = WeightSource { model_path: path("model_path", &req.model_path)?, reward_head_path: path("reward_head_path", &req.reward_head_path)? };
    if source.model_path.is_none() && source.reward_head_path.is_none() {
        return Err(ApiError::invalid("model_path", "Give `model_path` (new weights) or `reward_head_path` (a new reward head), or both."));
    }
    let t = target(&st, req.model.as_deref())?.clone();
    let started = std::time::Instant::now();
    let loader = t.loader.clone();
    let what = [req.model_path.as_deref(), req.reward_head_path.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" and ");
    let loaded = tokio::task::spawn_blocking(move || loader(&source)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let result = match loaded {
        Ok(weights) => t.engine.update_weights(weights, req.drain.unwrap_or(true)).await.map_err(|e| match e {
            // The runner refused: name the field of what it refused (a head alone, or weights).
            hhh_engine::EngineError::WeightUpdate(m) if req.model_path.is_none() => ApiError::invalid("reward_head_path", m),
            e => ApiError::from(e),
        }),
        Err((field, e)) => Err(ApiError::invalid(field, e)),
    };
    let m = &t.metrics;
    m.weight_update_time.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(v) => {
            m.weight_updates.with_label_values(&["ok"]).inc();
            tracing::info!(model = %t.name, from = %what, weight_version = v, seconds = started.elapsed().as_secs_f64(), "weights updated");
            Ok(Json(UpdateWeightsResponse { success: true, message: format!("Weights of {} updated from {what}.", t.name), weight_version: v }))
        }
        Err(e) => {
            m.weight_updates.with_label_values(&["error"]).inc();
            Err(e)
        }
    }
}

/// `GET /get_weight_version` (`?model=` a served model's id; default: the chat model).
pub async fn get_weight_version(State(st): State<AppState>, Query(q): Query<WeightVersionQuery>) -> Result<Json<WeightVersionResponse>, ApiError> {
    let engine = match q.model.as_deref() {
        None => &st.engine,
        Some(_) => &target(&st, q.model.as_deref())?.engine,
    };
    Ok(Json(WeightVersionResponse { weight_version: engine.weight_version() }))
}

/// `POST /pause_generation`: stop admitting requests (they wait); `mode: "abort"` (default, as
/// SGLang) ends the running ones with `abort`, `"wait"` lets them finish.
pub async fn pause_generation(State(st): State<AppState>, body: Body) -> Result<Json<SuccessResponse>, ApiError> {
    let bytes = axum::body::to_bytes(body, st.limits.max_body_bytes).await.map_err(|_| ApiError::too_large(st.limits.max_body_bytes))?;
    let req: PauseRequest = if bytes.iter().all(u8::is_ascii_whitespace) { PauseRequest::default() } else { crate::validate::parse_json_fields(&bytes, &["mode"], false)? };
    let abort = match req.mode.as_deref() {
        None | Some("abort") => true,
        Some("wait") => false,
        Some(other) => return Err(ApiError::invalid("mode", format!("`mode` must be `abort` (end running requests) or `wait` (let them finish), got `{other}`."))),
    };
    st.engine.pause(abort)?;
    Ok(Json(SuccessResponse { success: true }))
}

/// `POST /continue_generation`.
pub async fn continue_generation(State(st): State<AppState>) -> Result<Json<SuccessResponse>, ApiError> {
    st.engine.resume()?;
    Ok(Json(SuccessResponse { success: true }))
}
