//! Scoring routes of preference (reward) models: `POST /v1/rewards`, `POST /v1/preferences`, and
//! the compatibility routes `POST /get_reward` (OpenRLHF) and `POST /pooling` (vLLM).
//!
//! Every input becomes one prefill-only engine request (`SamplingParams::pooling`): it batches
//! with other work, and inputs that share a conversation share its KV blocks through the prefix
//! cache. The LM head never runs for them; the reward head reads the final hidden state of the
//! last token.
//!
//! ```text
//! (messages, response) ─▶ chat template (response = final assistant turn, no generation prompt)
//! text                 ─▶ tokenizer (special tokens parsed)
//!   ─▶ EngineClient::submit(pooling) × N, all at once ─▶ EngineEvent::Pooled ─▶ rewards
//! ```

use crate::error::ApiError;
use crate::prompt::{encode_text, render_chat, render_pair, template_messages};
use crate::respond::{new_id, now};
use crate::rewards::{preference_probability, ranking, run, ScoringPlan};
use crate::state::AppState;
use crate::validate::read_json_only;
use axum::body::Body;
use axum::extract::State;
use axum::Json;
use hhh_proto::*;

fn check_count(field: &str, n: usize, min: usize, st: &AppState) -> Result<(), ApiError> {
    let max = st.limits.max_score_inputs;
    if n < min || n > max {
        return Err(ApiError::invalid(field, format!("`{field}` must hold between {min} and {max} items, got {n}.")));
    }
    Ok(())
}

fn nonempty(field: &str, s: &str) -> Result<(), ApiError> {
    if s.trim().is_empty() {
        return Err(ApiError::invalid(field, format!("`{field}` must not be empty.")));
    }
    Ok(())
}

/// `POST /v1/rewards`.
pub async fn rewards(State(st): State<AppState>, body: Body) -> Result<Json<RewardsResponse>, ApiError> {
    let req: RewardsRequest = read_json_only(body, &st.limits, &["model", "input", "return_hidden"]).await?;
    let sc = st.scorer(&req.model)?.clone();
    check_count("input", req.input.len(), 1, &st)?;
    let mut prepared = Vec::with_capacity(req.input.len());
    for (i, inp) in req.input.into_iter().enumerate() {
        let field = format!("input[{i}]");
        let tokens = match (inp.messages, inp.response, inp.text) {
            (Some(m), Some(r), None) => {
                nonempty(&format!("{field}.response"), &r)?;
                render_pair(&sc, &field, &m, &r).await?
            }
            (None, None, Some(t)) => {
                nonempty(&format!("{field}.text"), &t)?;
                encode_text(&sc.tokenizer, t, true).await?
            }
            (Some(_), None, None) => return Err(ApiError::invalid(&format!("{field}.response"), format!("Missing required field `{field}.response`."))),
            _ => return Err(ApiError::invalid(&field, format!("`{field}` must be {{\"messages\": [...], \"response\": \"...\"}} or {{\"text\": \"...\"}}."))),
        };
        prepared.push((field, tokens));
    }
    let scored = run(ScoringPlan::new(&sc, prepared, req.return_hidden)?, st.request_timeout).await?;
    let mut data = Vec::with_capacity(scored.outputs.len());
    for (index, o) in scored.outputs.into_iter().enumerate() {
        data.push(RewardData { index, object: "reward".into(), reward: crate::rewards::reward_of(&o)?, scores: o.scores, hidden: o.hidden });
    }
    Ok(Json(RewardsResponse { id: new_id("rwd"), object: "list".into(), created: now(), model: sc.name.clone(), data, usage: scored.usage }))
}

/// `POST /v1/preferences`.
pub async fn preferences(State(st): State<AppState>, body: Body) -> Result<Json<PreferencesResponse>, ApiError> {
    let req: PreferencesRequest = read_json_only(body, &st.limits, &["model", "messages", "responses"]).await?;
    let sc = st.scorer(&req.model)?.clone();
    check_count("responses", req.responses.len(), 2, &st)?;
    let mut prepared = Vec::with_capacity(req.responses.len());
    for (i, r) in req.responses.iter().enumerate() {
        let field = format!("responses[{i}]");
        nonempty(&field, r)?;
        prepared.push((field, render_pair(&sc, "", &req.messages, r).await?));
    }
    let scored = run(ScoringPlan::new(&sc, prepared, false)?, st.request_timeout).await?;
    let rewards = scored.rewards()?;
    let mut pairs = Vec::new();
    for i in 0..rewards.len() {
        for j in i + 1..rewards.len() {
            pairs.push(PairPreference { i, j, probability: preference_probability(rewards[i], rewards[j]) });
        }
    }
    let soft_label = (rewards.len() == 2).then(|| preference_probability(rewards[0], rewards[1]));
    Ok(Json(PreferencesResponse {
        id: new_id("pref"),
        object: "preferences".into(),
        created: now(),
        model: sc.name.clone(),
        ranking: ranking(&rewards.iter().map(|&r| f64::from(r)).collect::<Vec<_>>()),
        rewards,
        pairs,
        soft_label,
        usage: scored.usage,
    }))
}

/// `POST /get_reward` (OpenRLHF `--remote_rm_url`): `{"query": [full texts]}` →
/// `{"rewards": [...], "scores": [...]}` on the default scoring model, as OpenRLHF's
/// `openrlhf/cli/serve_rm.py` computes them: EOS (and padding) stripped from both ends and one
/// EOS appended ([`openrlhf_query`]); tokenized as HF does by default (special-token text parsed,
/// the tokenizer's BOS rule applied); truncated to the first `--reward-max-len` tokens (its
/// `--max_len`, right truncation) instead of refused, so the reward is read at the last kept
/// token.
pub async fn get_reward(State(st): State<AppState>, body: Body) -> Result<Json<GetRewardResponse>, ApiError> {
    let req: GetRewardRequest = read_json_only(body, &st.limits, &["query", "prompts", "labels"]).await?;
    let sc = st.default_scorer()?.clone();
    check_count("query", req.query.len(), 1, &st)?;
    let mut prepared = Vec::with_capacity(req.query.len());
    let eos = sc.tokenizer.eos_token().unwrap_or_default().to_string();
    let max_len = st.limits.reward_max_len.min(sc.engine.info().max_model_len);
    for (i, q) in req.query.into_iter().enumerate() {
        let field = format!("query[{i}]");
        nonempty(&field, &q)?;
        let mut ids = encode_text(&sc.tokenizer, openrlhf_query(&q, &eos), true).await?;
        ids.truncate(max_len);
        prepared.push((field, ids));
    }
    let scored = run(ScoringPlan::new(&sc, prepared, false)?, st.request_timeout).await?;
    let rewards = scored.rewards()?;
    Ok(Json(GetRewardResponse { scores: rewards.clone(), rewards }))
}

/// A query as OpenRLHF's `serve_rm.py` prepares it: padding and EOS runs stripped from both ends,
/// one EOS appended. Its tokenizer's pad token is the EOS when the model has none (OpenRLHF's
/// `get_tokenizer`), as for every model we serve, so stripping EOS covers both.
pub fn openrlhf_query(text: &str, eos: &str) -> String {
    let mut t = text;
    if !eos.is_empty() {
        while let Some(x) = t.strip_suffix(eos) {
            t = x;
        }
        while let Some(x) = t.strip_prefix(eos) {
            t = x;
        }
    }
    format!("{t}{eos}")
}

/// `POST /pooling` (vLLM shape, for reward and classification models): `input` (a string, a
/// list of strings, or lists of token ids) or `messages` (one conversation, rendered without a
/// generation prompt) → `data[i].data` = the head outputs at the last token.
pub async fn pooling(State(st): State<AppState>, body: Body) -> Result<Json<PoolingResponse>, ApiError> {
    let req: PoolingRequest = read_json_only(body, &st.limits, &["model", "input", "messages", "encoding_format"]).await?;
    let sc = match &req.model {
        Some(m) => st.scorer(m)?.clone(),
        None => st.default_scorer()?.clone(),
    };
    if req.encoding_format.as_deref().is_some_and(|f| f != "float") {
        return Err(ApiError::invalid("encoding_format", "Only `\"float\"` is supported."));
    }
    let mut prepared = Vec::new();
    match (req.input, req.messages) {
        (Some(PoolingInput::One(t)), None) => prepared.push(("input".into(), encode_text(&sc.tokenizer, t, true).await?)),
        (Some(PoolingInput::Many(ts)), None) => {
            check_count("input", ts.len(), 1, &st)?;
            for (i, t) in ts.into_iter().enumerate() {
                prepared.push((format!("input[{i}]"), encode_text(&sc.tokenizer, t, true).await?));
            }
        }
        (Some(PoolingInput::Tokens(ids)), None) => {
            check_count("input", ids.len(), 1, &st)?;
            let vocab = sc.tokenizer.vocab_size();
            for (i, t) in ids.into_iter().enumerate() {
                if let Some(bad) = t.iter().find(|&&x| x as usize >= vocab) {
                    return Err(ApiError::invalid(&format!("input[{i}]"), format!("Token id {bad} is outside the vocabulary (size {vocab}).")));
                }
                prepared.push((format!("input[{i}]"), t));
            }
        }
        (None, Some(m)) => {
            let msgs = template_messages(&m)?;
            prepared.push(("messages".into(), render_chat(sc.template.clone(), sc.tokenizer.clone(), msgs, false).await?));
        }
        _ => return Err(ApiError::bad_request("Give exactly one of `input` and `messages`.")),
    }
    let scored = run(ScoringPlan::new(&sc, prepared, false)?, st.request_timeout).await?;
    let data = scored.outputs.into_iter().enumerate().map(|(index, o)| PoolingData { index, object: "pooling".into(), data: o.scores }).collect();
    Ok(Json(PoolingResponse { id: new_id("pool"), object: "list".into(), created: now(), model: sc.name.clone(), data, usage: scored.usage }))
}
