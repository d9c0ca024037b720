//! Online RL control, in SGLang's shapes: `POST /update_weights_from_disk` (swap the chat
//! model's weights between two engine steps), `GET /get_weight_version`, `POST
//! /pause_generation`, `POST /continue_generation`. See `hhh_engine::engine_loop::control` for
//! what happens to requests in flight.

use crate::error::ApiError;
use crate::state::AppState;
use crate::validate::read_json_only;
use axum::body::Body;
use axum::extract::State;
use axum::Json;
use hhh_proto::{PauseRequest, SuccessResponse, UpdateWeightsRequest, UpdateWeightsResponse, WeightVersionResponse};

/// `POST /update_weights_from_disk`.
pub async fn update_weights_from_disk(State(st): State<AppState>, body: Body) -> Result<Json<UpdateWeightsResponse>, ApiError> {
    let req: UpdateWeightsRequest = read_json_only(body, &st.limits, &["model_path", "load_format", "flush_cache", "drain"]).await?;
    if !matches!(req.load_format.as_deref(), None | Some("auto")) {
        return Err(ApiError::invalid("load_format", "`load_format` must be `auto` (the format is read from the path: a GGUF file or a Hugging Face directory)."));
    }
    if req.flush_cache == Some(false) {
        return Err(ApiError::invalid("flush_cache", "`flush_cache` must be true: cached KV blocks were computed by the old weights."));
    }
    if req.model_path.trim().is_empty() {
        return Err(ApiError::invalid("model_path", "`model_path` must not be empty."));
    }
    let loader = st.weight_loader.clone().ok_or_else(|| ApiError::bad_request("This server cannot update its weights (no generative model on the CPU engine)."))?;
    let started = std::time::Instant::now();
    let m = &st.metrics;
    let path = std::path::PathBuf::from(&req.model_path);
    let loaded = tokio::task::spawn_blocking(move || loader(&path)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let result = match loaded {
        Ok(weights) => st.engine.update_weights(weights, req.drain.unwrap_or(true)).await.map_err(ApiError::from),
        Err(e) => Err(ApiError::invalid("model_path", e)),
    };
    m.weight_update_time.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(v) => {
            m.weight_updates.with_label_values(&["ok"]).inc();
            m.weight_version.set(v as i64);
            tracing::info!(path = %req.model_path, weight_version = v, seconds = started.elapsed().as_secs_f64(), "weights updated");
            Ok(Json(UpdateWeightsResponse { success: true, message: format!("Weights updated from {}.", req.model_path), weight_version: v }))
        }
        Err(e) => {
            m.weight_updates.with_label_values(&["error"]).inc();
            Err(e)
        }
    }
}

/// `GET /get_weight_version`.
pub async fn get_weight_version(State(st): State<AppState>) -> Json<WeightVersionResponse> {
    Json(WeightVersionResponse { weight_version: st.engine.weight_version() })
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
    st.metrics.generation_paused.set(1);
    Ok(Json(SuccessResponse { success: true }))
}

/// `POST /continue_generation`.
pub async fn continue_generation(State(st): State<AppState>) -> Result<Json<SuccessResponse>, ApiError> {
    st.engine.resume()?;
    st.metrics.generation_paused.set(0);
    Ok(Json(SuccessResponse { success: true }))
}
