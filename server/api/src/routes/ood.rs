//! `POST /v1/ood/score`: the Mahalanobis distance of each input's hidden state from the
//! in-distribution statistics of `--ood-stats` ([`crate::ood`]).

use crate::error::ApiError;
use crate::honesty::{render, PromptParts};
use crate::ood::{hidden_states, MAX_INPUTS, MAX_INPUT_CHARS};
use crate::state::{AppState, FeedbackModel};
use crate::validate::read_json_only;
use axum::body::Body;
use axum::extract::State;
use axum::Json;
use hhh_proto::{OodScoreRequest, OodScoreResponse, PromptFormat};

/// The prompt of `text` as `fit-ood` saw it: a one-turn chat request (template with the
/// generation prompt) or the raw text. `field` names the input in errors.
pub fn prompt_ids(fm: &FeedbackModel, format: PromptFormat, text: &str, field: &str) -> Result<Vec<u32>, ApiError> {
    if text.chars().count() > MAX_INPUT_CHARS {
        return Err(ApiError::invalid(field, format!("`{field}` must be at most {MAX_INPUT_CHARS} characters.")));
    }
    let ids = render(&fm.tokenizer, &fm.template, format, PromptParts { text: text.to_string(), user: text, prefix: "" })?.ids;
    let max = fm.engine.info().max_model_len.min(hhh_engine::inspect::MAX_INSPECT_TOKENS);
    if ids.is_empty() || ids.len() > max {
        return Err(ApiError::invalid(field, format!("`{field}` is {} tokens; it must be 1 to {max}.", ids.len())));
    }
    Ok(ids)
}

/// `POST /v1/ood/score`.
pub async fn score(State(st): State<AppState>, body: Body) -> Result<Json<OodScoreResponse>, ApiError> {
    let req: OodScoreRequest = read_json_only(body, &st.limits, &["model", "input"]).await?;
    let stats = st.ood.clone().ok_or_else(|| ApiError::bad_request("This server has no OOD statistics: start it with --ood-stats FILE (from `hhh-server fit-ood`)."))?;
    let fm = st.feedback_model(req.model.as_deref())?;
    if fm.name != st.model_name {
        return Err(ApiError::invalid("model", format!("The OOD statistics belong to the chat model `{}`.", st.model_name)));
    }
    let inputs = req.input.into_vec();
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid("input", format!("`input` must hold 1 to {MAX_INPUTS} texts, got {}.", inputs.len())));
    }
    let prompts: Vec<Vec<u32>> = inputs.iter().enumerate().map(|(i, t)| prompt_ids(&fm, stats.prompt_format, t, &format!("input[{i}]"))).collect::<Result<_, _>>()?;
    let tokens = prompts.iter().map(Vec::len).sum();
    let hidden = hidden_states(&fm, stats.layer, &prompts).await?;
    let data = hidden.iter().enumerate().map(|(i, h)| stats.item(i, h)).collect();
    Ok(Json(OodScoreResponse { object: "ood.score".into(), created: crate::respond::now(), model: fm.name, layer: stats.layer, threshold: stats.threshold, data, tokens }))
}
