//! `POST /v1/interpretability/induction`: validated into a plan (every 400 before the first
//! engine request), run by [`crate::interp::induction`].

use crate::error::ApiError;
use crate::interp::induction::{self, Plan, MAX_ICL_TEXTS, MAX_SEQUENCES, MAX_SEQ_LEN};
use crate::state::AppState;
use crate::validate::read_json_only;
use axum::body::Body;
use axum::extract::State;
use axum::Json;
use hhh_proto::{InductionRequest, InductionResponse};

const FIELDS: &[&str] = &["model", "seq_len", "num_sequences", "seed", "icl_texts", "icl_positions", "top_k"];
/// Longest ICL text accepted, in characters (before tokenizing).
const MAX_ICL_CHARS: usize = 64 * 1024;

/// Validate a request into a plan.
pub async fn plan(st: &AppState, req: InductionRequest) -> Result<Plan, ApiError> {
    let fm = st.feedback_model(req.model.as_deref())?;
    let seq_len = req.seq_len.unwrap_or(50);
    if !(2..=MAX_SEQ_LEN).contains(&seq_len) {
        return Err(ApiError::invalid("seq_len", format!("`seq_len` must be between 2 and {MAX_SEQ_LEN}, got {seq_len}.")));
    }
    let max_len = fm.engine.info().max_model_len.min(hhh_engine::inspect::MAX_INSPECT_TOKENS);
    if 2 * seq_len > max_len {
        return Err(ApiError::invalid("seq_len", format!("`seq_len` must be at most {} (twice it must fit the model's {max_len} tokens), got {seq_len}.", max_len / 2)));
    }
    let num_sequences = req.num_sequences.unwrap_or(8);
    if !(1..=MAX_SEQUENCES).contains(&num_sequences) {
        return Err(ApiError::invalid("num_sequences", format!("`num_sequences` must be between 1 and {MAX_SEQUENCES}, got {num_sequences}.")));
    }
    let top_k = req.top_k.unwrap_or(10);
    if top_k > 10_000 {
        return Err(ApiError::invalid("top_k", format!("`top_k` must be at most 10000, got {top_k}.")));
    }
    let positions = req.icl_positions.unwrap_or_else(|| vec![50, 500]);
    let icl_positions = match positions.as_slice() {
        &[a, b] if a >= 1 && a < b && b < max_len => [a, b],
        _ => return Err(ApiError::invalid("icl_positions", format!("`icl_positions` must be two token positions 1 <= a < b < {max_len}, got {positions:?}."))),
    };
    let texts = req.icl_texts.unwrap_or_default();
    if texts.len() > MAX_ICL_TEXTS {
        return Err(ApiError::invalid("icl_texts", format!("`icl_texts` must hold at most {MAX_ICL_TEXTS} texts, got {}.", texts.len())));
    }
    let mut icl = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        let field = format!("icl_texts[{i}]");
        if t.chars().count() > MAX_ICL_CHARS {
            return Err(ApiError::invalid(&field, format!("`{field}` must be at most {MAX_ICL_CHARS} characters.")));
        }
        let ids = fm.tokenizer.encode(t, true).map_err(|e| ApiError::invalid(&field, e.to_string()))?;
        if ids.len() <= icl_positions[1] {
            return Err(ApiError::invalid(&field, format!("`{field}` has {} tokens; the in-context learning score needs more than {} (the later position).", ids.len(), icl_positions[1])));
        }
        icl.push(ids);
    }
    Ok(Plan { fm, seq_len, num_sequences, seed: req.seed.unwrap_or(0), icl, icl_positions, top_k })
}

/// `POST /v1/interpretability/induction`.
pub async fn induction(State(st): State<AppState>, body: Body) -> Result<Json<InductionResponse>, ApiError> {
    let req: InductionRequest = read_json_only(body, &st.limits, FIELDS).await?;
    let plan = plan(&st, req).await?;
    Ok(Json(induction::run(plan).await?))
}
