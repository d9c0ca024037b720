//! Critique and revision (SL-CAI, Bai et al. 2022, section 3): `POST /v1/harmlessness/revise`.
//!
//! Each round samples (or takes by id) a critique/revision principle and continues the paper's
//! transcript format with the chat model, as raw text:
//!
//! ```text
//! Human: …
//!
//! Assistant: [current response]
//!
//! CritiqueRequest: [critique request]
//!
//! Critique: [generated, stops at a blank line]
//!
//! RevisionRequest: [revision request]
//!
//! Revision: [generated] → the next round's response
//! ```

use crate::error::ApiError;
use crate::jobs::generate_text;
use crate::middleware::RequestCtx;
use crate::prompt::{critique_prompt, render_conversation, revision_prompt, text_prompt};
use crate::respond::{error_data, json_data, new_id, now, sse_response, DONE};
use crate::state::AppState;
use crate::validate::read_json_only;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hhh_engine::SamplingParams;
use hhh_proto::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::Arc;

/// Most rounds per call.
pub const MAX_ROUNDS: usize = 4;
/// Largest `max_tokens` of one critique or revision.
pub const MAX_STEP_TOKENS: usize = 512;
const FIELDS: &[&str] = &["model", "messages", "response", "rounds", "principle_ids", "seed", "temperature", "max_tokens", "stream"];
/// Where a generated critique or revision ends.
const STOPS: [&str; 4] = ["\n\nHuman:", "\n\nCritiqueRequest:", "\n\nRevisionRequest:", "\n\n"];

/// Generate a continuation of `prompt` (raw text) up to the first stop; returns the trimmed
/// text and the prompt and completion token counts.
async fn continue_text(st: &AppState, ctx: &Arc<RequestCtx>, prompt: &str, params: SamplingParams) -> Result<(String, usize, usize), ApiError> {
    let ids = text_prompt(&st.tokenizer, prompt)?;
    let max_len = st.engine.info().max_model_len;
    if ids.len() + params.max_tokens > max_len {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "The revision transcript reached {} tokens, plus `max_tokens` {} exceeds the context of {max_len} tokens (fewer rounds, shorter text or a smaller max_tokens).",
                ids.len(),
                params.max_tokens
            ),
        ));
    }
    let (text, usage) = generate_text(st, ctx, ids, params, STOPS.iter().map(|s| s.to_string()).collect()).await?;
    Ok((text.trim().to_string(), usage.prompt_tokens, usage.completion_tokens))
}

/// A validated revise call.
struct Plan {
    model: String,
    conversation: String,
    response: String,
    /// Indices into the constitution's critique/revision principles, one per round.
    chosen: Vec<usize>,
    max_tokens: usize,
    temperature: f32,
    seed: u64,
}

/// `POST /v1/harmlessness/revise`: JSON when all rounds are done, or (`stream: true`) one
/// server-sent event per round as it finishes, then the whole response and `[DONE]`. Validation
/// errors are HTTP statuses either way; a failure during a stream is an `{"error"}` event.
pub async fn revise(State(st): State<AppState>, Extension(ctx): Extension<Arc<RequestCtx>>, body: Body) -> Result<Response, ApiError> {
    let req: ReviseRequest = read_json_only(body, &st.limits, FIELDS).await?;
    let stream = req.stream;
    let plan = plan(&st, req)?;
    if !stream {
        let mut state = (plan.response.clone(), Vec::new(), Usage::default());
        for r in 0..plan.chosen.len() {
            round(&st, &ctx, &plan, r, &mut state).await?;
        }
        return Ok(Json(finish(&plan, state)).into_response());
    }
    let s = async_stream::stream! {
        let mut state = (plan.response.clone(), Vec::new(), Usage::default());
        for r in 0..plan.chosen.len() {
            match round(&st, &ctx, &plan, r, &mut state).await {
                Ok(done) => yield json_data(&RevisionRoundEvent { object: "harmlessness.revision.round".into(), index: r, round: done }),
                Err(e) => {
                    yield error_data(&e);
                    return;
                }
            }
        }
        yield json_data(&finish(&plan, state));
        yield DONE.to_string();
    };
    Ok(sse_response(s))
}

/// The current response, the rounds so far and the token counts.
type Progress = (String, Vec<RevisionRound>, Usage);

/// Run round `r`: critique the current response, revise it; returns the round.
async fn round(st: &AppState, ctx: &Arc<RequestCtx>, plan: &Plan, r: usize, (current, out, usage): &mut Progress) -> Result<RevisionRound, ApiError> {
    let p = &st.constitution.critique_revision[plan.chosen[r]];
    let params = |step: u64| SamplingParams { temperature: plan.temperature, max_tokens: plan.max_tokens, seed: plan.seed.wrapping_add(2 * r as u64 + step), ..Default::default() };
    let base = critique_prompt(&plan.conversation, current, &p.critique_request);
    let (critique, pt, ct) = continue_text(st, ctx, &base, params(0)).await?;
    let with_rev = revision_prompt(&base, &critique, &p.revision_request);
    let (revision, pt2, ct2) = continue_text(st, ctx, &with_rev, params(1)).await?;
    usage.prompt_tokens += pt + pt2;
    usage.completion_tokens += ct + ct2;
    if !revision.is_empty() {
        *current = revision.clone();
    }
    let done = RevisionRound { principle_id: p.id.clone(), critique_request: p.critique_request.clone(), critique, revision_request: p.revision_request.clone(), revision };
    out.push(done.clone());
    Ok(done)
}

fn finish(plan: &Plan, (current, rounds, mut usage): Progress) -> ReviseResponse {
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    ReviseResponse { id: new_id("hrev"), object: "harmlessness.revision".into(), created: now(), model: plan.model.clone(), rounds, final_response: current, usage }
}

/// Validate the request and pick the principles.
fn plan(st: &AppState, req: ReviseRequest) -> Result<Plan, ApiError> {
    let model = req.model.clone().unwrap_or_else(|| st.model_name.clone());
    st.check_generation_model(&model)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must contain at least one message."));
    }
    if req.response.trim().is_empty() {
        return Err(ApiError::invalid("response", "`response` must not be empty."));
    }
    let all = &st.constitution.critique_revision;
    if all.is_empty() {
        return Err(ApiError::bad_request("The served constitution has no critique/revision principles."));
    }
    let rounds = req.rounds.unwrap_or(1);
    let limit = MAX_ROUNDS.min(all.len());
    if rounds == 0 || rounds > limit {
        return Err(ApiError::invalid("rounds", format!("`rounds` must be between 1 and {limit}, got {rounds}.")));
    }
    let chosen: Vec<usize> = match &req.principle_ids {
        Some(ids) => {
            if ids.len() != rounds {
                return Err(ApiError::invalid("principle_ids", format!("`principle_ids` must hold one id per round ({rounds}), got {}.", ids.len())));
            }
            ids.iter()
                .enumerate()
                .map(|(i, id)| all.iter().position(|p| p.id == *id).ok_or_else(|| ApiError::invalid(&format!("principle_ids[{i}]"), format!("Unknown critique/revision principle id `{id}`."))))
                .collect::<Result<_, _>>()?
        }
        None => {
            let mut idx: Vec<usize> = (0..all.len()).collect();
            idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(req.seed.unwrap_or(0)));
            idx.truncate(rounds);
            idx
        }
    };
    let max_tokens = req.max_tokens.unwrap_or(128);
    if max_tokens == 0 || max_tokens > MAX_STEP_TOKENS {
        return Err(ApiError::invalid("max_tokens", format!("`max_tokens` must be between 1 and {MAX_STEP_TOKENS}, got {max_tokens}.")));
    }
    let temperature = req.temperature.unwrap_or(0.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid("temperature", format!("`temperature` must be in [0, 2], got {temperature}.")));
    }
    Ok(Plan { model, conversation: render_conversation(&req.messages)?, response: req.response, chosen, max_tokens, temperature, seed: req.seed.unwrap_or(0) })
}
