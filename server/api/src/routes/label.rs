//! The raw label-scoring primitive: `POST /v1/harmlessness/label`.
//!
//! For one prompt and 2–16 option strings, the total log-probability of each option's tokens
//! after the prompt, and the probabilities normalised over the options — what vLLM's
//! `/generative_scoring` and SGLang's `/v1/score` expose, and what the constitutional feedback
//! routes build on. The prompt is raw text (BOS by the tokenizer's rule); each option is
//! tokenized on its own and appended, so all options are scored after exactly the same prompt
//! tokens. Every option is one prefill-only engine request with prompt log-probabilities only
//! over its own tokens; all share the prompt's blocks through the prefix cache
//! ([`crate::jobs::score_options`]).

use crate::error::ApiError;
use crate::jobs::{score_options, OptionJob};
use crate::prompt::text_prompt;
use crate::respond::{new_id, now};
use crate::state::AppState;
use crate::validate::read_json_only;
use axum::body::Body;
use axum::extract::State;
use axum::Json;
use hhh_proto::*;

/// Most options per call.
pub const MAX_OPTIONS: usize = 16;

/// `POST /v1/harmlessness/label`.
pub async fn label(State(st): State<AppState>, body: Body) -> Result<Json<LabelResponse>, ApiError> {
    let req: LabelRequest = read_json_only(body, &st.limits, &["model", "prompt", "options"]).await?;
    let fm = st.feedback_model(req.model.as_deref())?;
    let model = fm.name.clone();
    if req.prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "`prompt` must not be empty."));
    }
    let k = req.options.len();
    if !(2..=MAX_OPTIONS).contains(&k) {
        return Err(ApiError::invalid("options", format!("`options` must hold between 2 and {MAX_OPTIONS} strings, got {k}.")));
    }
    let tok = &fm.tokenizer;
    let prompt = text_prompt(tok, &req.prompt)?;
    let max_len = fm.engine.info().max_model_len;
    let mut options = Vec::with_capacity(k);
    let mut lens = Vec::with_capacity(k);
    let mut usage = ScoringUsage::default();
    for (i, o) in req.options.iter().enumerate() {
        let ids = tok.encode_as_text(o).map_err(|e| ApiError::internal(e.to_string()))?;
        if ids.is_empty() {
            return Err(ApiError::invalid(&format!("options[{i}]"), format!("`options[{i}]` must not be empty.")));
        }
        if req.options[..i].contains(o) {
            return Err(ApiError::invalid(&format!("options[{i}]"), format!("`options[{i}]` repeats an earlier option.")));
        }
        let n = prompt.len() + ids.len();
        if n > max_len {
            return Err(ApiError::invalid("prompt", format!("The prompt with `options[{i}]` is {n} tokens long; the limit is {max_len} tokens.")));
        }
        usage.prompt_tokens += n;
        lens.push(ids.len());
        options.push(ids);
    }
    let jobs = [OptionJob { prompt, options }];
    let results: Vec<(f64, usize)> = score_options(&fm.engine, &jobs, st.request_timeout, "label scoring").await?.into_iter().flatten().collect();
    let lp: Vec<f64> = results.iter().map(|r| r.0).collect();
    let m = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = lp.iter().map(|l| (l - m).exp()).sum();
    let data: Vec<OptionScore> =
        req.options.iter().enumerate().map(|(index, o)| OptionScore { index, option: o.clone(), logprob: lp[index], probability: (lp[index] - m).exp() / z, num_tokens: lens[index] }).collect();
    let choice = (0..k).fold(0, |best, i| if lp[i] > lp[best] { i } else { best });
    usage.total_tokens = usage.prompt_tokens;
    usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: results.iter().map(|r| r.1).sum() });
    Ok(Json(LabelResponse { id: new_id("hlbl"), object: "harmlessness.label".into(), created: now(), model, data, choice, usage }))
}
