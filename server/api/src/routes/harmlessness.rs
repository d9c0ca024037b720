//! Constitutional harmlessness feedback routes: `POST /v1/harmlessness/compare` and
//! `POST /v1/harmlessness/score` (the computation is [`crate::feedback`]).

use crate::error::ApiError;
use crate::feedback::{self, check_responses, choose_principles, ComparePlan, COT_DEFAULT_TOKENS, COT_MAX_TOKENS};
use crate::prompt::render_conversation;
use crate::respond::new_id;
use crate::state::AppState;
use crate::validate::read_json_only;
use axum::body::Body;
use axum::extract::State;
use axum::Json;
use hhh_proto::*;

const FIELDS: &[&str] = &["model", "messages", "responses", "principle_ids", "num_principles", "seed", "debias", "few_shot", "chain_of_thought", "cot_max_tokens", "return_prompts"];

/// Validate a compare (or score) request into a plan; no engine work happens before it.
fn plan(st: &AppState, req: CompareRequest) -> Result<ComparePlan, ApiError> {
    let fm = st.feedback_model(req.model.as_deref())?;
    let cot = req.chain_of_thought.unwrap_or(false);
    if req.cot_max_tokens.is_some() && !cot {
        return Err(ApiError::invalid("cot_max_tokens", "`cot_max_tokens` needs `chain_of_thought: true`."));
    }
    let cot_tokens = req.cot_max_tokens.unwrap_or(COT_DEFAULT_TOKENS);
    if cot && !(1..=COT_MAX_TOKENS).contains(&cot_tokens) {
        return Err(ApiError::invalid("cot_max_tokens", format!("`cot_max_tokens` must be between 1 and {COT_MAX_TOKENS}, got {cot_tokens}.")));
    }
    check_responses(&req.responses)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must contain at least one message."));
    }
    let c = &st.constitution;
    let chosen = choose_principles(&c.feedback_principles, req.principle_ids.as_deref(), req.num_principles, req.seed)?;
    let few_shot = match (req.few_shot.unwrap_or(false), &c.few_shot) {
        (false, _) => String::new(),
        (true, Some(f)) => f.clone(),
        (true, None) => return Err(ApiError::invalid("few_shot", "The served constitution has no few-shot examples (add a `few_shot` text to it).")),
    };
    Ok(ComparePlan {
        fm,
        chosen,
        few_shot,
        debias: req.debias.unwrap_or(true),
        cot: cot.then_some(cot_tokens),
        conversation: render_conversation(&req.messages)?,
        responses: req.responses,
        return_prompts: req.return_prompts.unwrap_or(false),
    })
}

/// `POST /v1/harmlessness/compare`.
pub async fn compare(State(st): State<AppState>, body: Body) -> Result<Json<CompareResponse>, ApiError> {
    let req: CompareRequest = read_json_only(body, &st.limits, FIELDS).await?;
    let plan = plan(&st, req)?;
    feedback::run(&st, plan).await.map(Json)
}

/// `POST /v1/harmlessness/score`: a harmlessness score in [0, 1] per response, the mean over the
/// other responses of `P(this one is less harmful)` from [`compare`] (a Borda-style score; it
/// needs at least two responses and is relative to them).
pub async fn score(State(st): State<AppState>, body: Body) -> Result<Json<HarmlessnessScoreResponse>, ApiError> {
    let req: CompareRequest = read_json_only(body, &st.limits, FIELDS).await?;
    let plan = plan(&st, req)?;
    let c = feedback::run(&st, plan).await?;
    Ok(Json(HarmlessnessScoreResponse {
        id: new_id("hscr"),
        object: "harmlessness.score".into(),
        created: c.created,
        model: c.model,
        principles: c.principles,
        data: c.scores.iter().enumerate().map(|(index, &score)| HarmlessnessScore { index, score }).collect(),
        ranking: c.ranking,
        position_bias: c.position_bias,
        usage: c.usage,
    }))
}
