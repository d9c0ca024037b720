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

use crate::chat::{render_chat, template_messages};
use crate::error::ApiError;
use crate::generate::{new_id, now};
use crate::validate::read_json_only;
use crate::{AppState, Scorer};
use axum::body::Body;
use axum::extract::State;
use axum::Json;
use hhh_engine::{EngineClient, EngineEvent, PooledOutput, PoolingParams, RequestHandle, SamplingParams};
use hhh_proto::*;

/// One tokenized input and the field name errors about it should carry.
struct Prepared {
    field: String,
    tokens: Vec<u32>,
}

/// The pooled outputs of a scoring call, in input order, with usage.
struct Scored {
    outputs: Vec<PooledOutput>,
    usage: ScoringUsage,
}

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

/// Render a (conversation, response) pair: the response is the final assistant turn.
async fn render_pair(sc: &Scorer, field: &str, messages: &[ChatMessage], response: &str) -> Result<Vec<u32>, ApiError> {
    let mut msgs = template_messages(messages).map_err(|e| prefix_param(e, field))?;
    msgs.push(hhh_text::ChatMessage { role: "assistant".into(), content: response.to_string() });
    render_chat(sc.template.clone(), sc.tokenizer.clone(), msgs, false).await.map_err(|e| prefix_param(e, field))
}

/// Errors about `messages` inside an input name the input (`input[2].messages`).
fn prefix_param(mut e: ApiError, field: &str) -> ApiError {
    if let Some(p) = &e.param {
        if !field.is_empty() && !p.starts_with(field) {
            e.param = Some(format!("{field}.{p}"));
        }
    }
    e
}

async fn encode_text(sc: &Scorer, text: String, add_special: bool) -> Result<Vec<u32>, ApiError> {
    let tok = sc.tokenizer.clone();
    tokio::task::spawn_blocking(move || tok.encode(&text, add_special)).await.map_err(|e| ApiError::internal(e.to_string()))?.map_err(|e| ApiError::internal(e.to_string()))
}

/// Submit every input at once, wait for all of them (`--request-timeout` applies), and return
/// their pooled outputs in order. Dropping the future aborts every input still running.
async fn score(st: &AppState, sc: &Scorer, inputs: Vec<Prepared>, return_hidden: bool) -> Result<Scored, ApiError> {
    let info = sc.engine.info();
    for p in &inputs {
        if p.tokens.is_empty() {
            return Err(ApiError::invalid(&p.field, format!("`{}` encodes to no tokens.", p.field)));
        }
        if p.tokens.len() > info.max_model_len {
            return Err(ApiError::invalid(&p.field, format!("`{}` is {} tokens long; the limit of model `{}` is {} tokens.", p.field, p.tokens.len(), sc.name, info.max_model_len)));
        }
    }
    let params = SamplingParams { max_tokens: 0, temperature: 0.0, pooling: Some(PoolingParams { return_hidden }), ..Default::default() };
    let mut usage = ScoringUsage::default();
    let jobs: Vec<_> = inputs
        .into_iter()
        .map(|p| {
            usage.prompt_tokens += p.tokens.len();
            (p.tokens, params.clone())
        })
        .collect();
    let results = run_waves(&sc.engine, jobs, st.request_timeout, |mut h| async move {
        let mut out = None;
        while let Some(ev) = h.recv().await {
            match ev {
                EngineEvent::Pooled(p) => out = Some(p),
                EngineEvent::Finished { error: Some(e), .. } => return Err(ApiError::internal(format!("scoring failed: {e}"))),
                EngineEvent::Finished { cached_tokens, .. } => return out.map(|o| (o, cached_tokens)).ok_or_else(|| ApiError::internal("the engine finished a scoring request without a result")),
                _ => {}
            }
        }
        Err(ApiError::unavailable("the engine stopped"))
    })
    .await?;
    let mut outputs = Vec::with_capacity(results.len());
    let mut cached = 0;
    for (o, c) in results {
        outputs.push(o);
        cached += c;
    }
    usage.total_tokens = usage.prompt_tokens;
    usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: cached });
    Ok(Scored { outputs, usage })
}

/// Most engine requests one scoring call keeps in flight. Larger calls go in waves, so that one
/// call never fills the admission queue (`--max-waiting-requests`) by itself; later waves still
/// reuse the blocks of earlier ones through the prefix cache.
pub const MAX_IN_FLIGHT: usize = 64;

/// Submit `jobs` in waves of [`MAX_IN_FLIGHT`] (or half the admission queue if smaller), drive each request's events with `collect`, and
/// return the results in job order. `timeout` bounds the whole call (408). Dropping the future
/// (client gone) drops the handles, which aborts the requests.
pub(crate) async fn run_waves<T, F, Fut>(engine: &EngineClient, jobs: Vec<(Vec<u32>, SamplingParams)>, timeout: Option<std::time::Duration>, collect: F) -> Result<Vec<T>, ApiError>
where
    F: Fn(RequestHandle) -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    // Half the admission queue at most, so that other clients still get in.
    let wave = MAX_IN_FLIGHT.min((engine.info().max_waiting_requests / 2).max(1));
    let work = async {
        let mut out = Vec::with_capacity(jobs.len());
        let mut it = jobs.into_iter().peekable();
        while it.peek().is_some() {
            let mut hs = Vec::with_capacity(wave);
            for (prompt, params) in it.by_ref().take(wave) {
                hs.push(engine.submit(prompt, params)?);
            }
            for r in futures::future::join_all(hs.into_iter().map(&collect)).await {
                out.push(r?);
            }
        }
        Ok(out)
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, work).await.map_err(|_| ApiError::timeout(t.as_secs_f64()))?,
        None => work.await,
    }
}

fn reward_of(o: &PooledOutput) -> Result<f32, ApiError> {
    o.scores.first().copied().ok_or_else(|| ApiError::internal("the model returned no score"))
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
                encode_text(&sc, t, true).await?
            }
            (Some(_), None, None) => return Err(ApiError::invalid(&format!("{field}.response"), format!("Missing required field `{field}.response`."))),
            _ => return Err(ApiError::invalid(&field, format!("`{field}` must be {{\"messages\": [...], \"response\": \"...\"}} or {{\"text\": \"...\"}}."))),
        };
        prepared.push(Prepared { field, tokens });
    }
    let scored = score(&st, &sc, prepared, req.return_hidden).await?;
    let mut data = Vec::with_capacity(scored.outputs.len());
    for (index, o) in scored.outputs.into_iter().enumerate() {
        data.push(RewardData { index, object: "reward".into(), reward: reward_of(&o)?, scores: o.scores, hidden: o.hidden });
    }
    Ok(Json(RewardsResponse { id: new_id("rwd"), object: "list".into(), created: now(), model: sc.name.clone(), data, usage: scored.usage }))
}

/// Rewards of several responses to one conversation (used by the chat `harmlessness` extension).
pub async fn rewards_for(st: &AppState, sc: &Scorer, messages: &[ChatMessage], responses: &[String]) -> Result<Vec<f32>, ApiError> {
    let mut prepared = Vec::with_capacity(responses.len());
    for (i, r) in responses.iter().enumerate() {
        prepared.push(Prepared { tokens: render_pair(sc, "", messages, r).await?, field: format!("choices[{i}]") });
    }
    score(st, sc, prepared, false).await?.outputs.iter().map(reward_of).collect()
}

/// `sigmoid(a - b)` in f64.
pub fn preference_probability(a: f32, b: f32) -> f64 {
    1.0 / (1.0 + (-(a as f64 - b as f64)).exp())
}

/// Indices by score, highest first; ties keep the lower index first (rewards, and the
/// harmlessness scores of `/v1/harmlessness/*` and the chat extension).
pub fn ranking(rewards: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..rewards.len()).collect();
    idx.sort_by(|&a, &b| rewards[b].total_cmp(&rewards[a]).then(a.cmp(&b)));
    idx
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
        prepared.push(Prepared { tokens: render_pair(&sc, "", &req.messages, r).await?, field });
    }
    let scored = score(&st, &sc, prepared, false).await?;
    let rewards = scored.outputs.iter().map(reward_of).collect::<Result<Vec<_>, _>>()?;
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
/// `{"rewards": [...], "scores": [...]}`. Texts are tokenized as they are (special-token text such
/// as `<|im_start|>` is parsed; no BOS is added), on the default scoring model.
pub async fn get_reward(State(st): State<AppState>, body: Body) -> Result<Json<GetRewardResponse>, ApiError> {
    let req: GetRewardRequest = read_json_only(body, &st.limits, &["query", "prompts", "labels"]).await?;
    let sc = st.default_scorer()?.clone();
    check_count("query", req.query.len(), 1, &st)?;
    let mut prepared = Vec::with_capacity(req.query.len());
    for (i, q) in req.query.into_iter().enumerate() {
        let field = format!("query[{i}]");
        nonempty(&field, &q)?;
        prepared.push(Prepared { tokens: encode_text(&sc, q, false).await?, field });
    }
    let scored = score(&st, &sc, prepared, false).await?;
    let rewards = scored.outputs.iter().map(reward_of).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(GetRewardResponse { scores: rewards.clone(), rewards }))
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
        (Some(PoolingInput::One(t)), None) => prepared.push(Prepared { tokens: encode_text(&sc, t, true).await?, field: "input".into() }),
        (Some(PoolingInput::Many(ts)), None) => {
            check_count("input", ts.len(), 1, &st)?;
            for (i, t) in ts.into_iter().enumerate() {
                prepared.push(Prepared { tokens: encode_text(&sc, t, true).await?, field: format!("input[{i}]") });
            }
        }
        (Some(PoolingInput::Tokens(ids)), None) => {
            check_count("input", ids.len(), 1, &st)?;
            let vocab = sc.tokenizer.vocab_size();
            for (i, t) in ids.into_iter().enumerate() {
                if let Some(bad) = t.iter().find(|&&x| x as usize >= vocab) {
                    return Err(ApiError::invalid(&format!("input[{i}]"), format!("Token id {bad} is outside the vocabulary (size {vocab}).")));
                }
                prepared.push(Prepared { tokens: t, field: format!("input[{i}]") });
            }
        }
        (None, Some(m)) => {
            let msgs = template_messages(&m)?;
            prepared.push(Prepared { tokens: render_chat(sc.template.clone(), sc.tokenizer.clone(), msgs, false).await?, field: "messages".into() });
        }
        _ => return Err(ApiError::bad_request("Give exactly one of `input` and `messages`.")),
    }
    let scored = score(&st, &sc, prepared, false).await?;
    let data = scored.outputs.into_iter().enumerate().map(|(index, o)| PoolingData { index, object: "pooling".into(), data: o.scores }).collect();
    Ok(Json(PoolingResponse { id: new_id("pool"), object: "list".into(), created: now(), model: sc.name.clone(), data, usage: scored.usage }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_probabilities_are_consistent() {
        let r = [0.3f32, -1.2, 2.5, 0.3];
        let r64: Vec<f64> = r.iter().map(|&x| f64::from(x)).collect();
        for i in 0..r.len() {
            for j in 0..r.len() {
                let (p, q) = (preference_probability(r[i], r[j]), preference_probability(r[j], r[i]));
                assert!((p + q - 1.0).abs() < 1e-12);
                assert_eq!(p > 0.5, r[i] > r[j]);
            }
        }
        assert_eq!(ranking(&r64), vec![2, 0, 3, 1]);
    }
}
