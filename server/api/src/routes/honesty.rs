//! Honesty and behaviour evaluations: `POST /v1/self_evaluation` (P(True)), `POST /v1/pik`
//! (P(IK)) and `POST /v1/evals/behavior` (model-written evaluations). Each handler validates
//! into a plan (every 400 before the first engine request) and runs it through
//! [`crate::honesty`].

use crate::error::ApiError;
use crate::honesty::{behavior, check_text, pik, ptrue, resolve_format, MAX_TEXT_CHARS};
use crate::state::AppState;
use crate::validate::read_json_only;
use axum::body::Body;
use axum::extract::State;
use axum::Json;
use hhh_proto::*;

const SELF_EVAL_FIELDS: &[&str] = &["model", "question", "answers", "n", "brainstorm", "format", "temperature", "max_tokens", "seed", "return_prompts"];
const PIK_FIELDS: &[&str] = &["model", "input", "return_prompts"];
const BEHAVIOR_FIELDS: &[&str] = &["model", "items", "debias", "format", "return_prompts"];

/// Validate a self-evaluation request into a plan.
pub fn self_eval_plan(st: &AppState, req: SelfEvaluationRequest) -> Result<ptrue::Plan, ApiError> {
    let fm = st.feedback_model(req.model.as_deref())?;
    let format = resolve_format(req.format, &fm.template)?;
    check_text(&req.question, "question", MAX_TEXT_CHARS)?;
    let (answers, n) = match (req.answers, req.n) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("n", "Give `answers` to judge or `n` to sample answers, not both.")),
        (None, None) => return Err(ApiError::invalid("answers", "Give `answers` to judge, or `n` to sample that many answers and judge them.")),
        (Some(a), None) => {
            if a.is_empty() || a.len() > ptrue::MAX_ANSWERS {
                return Err(ApiError::invalid("answers", format!("`answers` must hold between 1 and {} answers, got {}.", ptrue::MAX_ANSWERS, a.len())));
            }
            for (i, x) in a.iter().enumerate() {
                check_text(x, &format!("answers[{i}]"), MAX_TEXT_CHARS)?;
            }
            (Some(a), 0)
        }
        (None, Some(n)) => {
            if n == 0 || n > ptrue::MAX_ANSWERS {
                return Err(ApiError::invalid("n", format!("`n` must be between 1 and {}, got {n}.", ptrue::MAX_ANSWERS)));
            }
            (None, n)
        }
    };
    let brainstorm = req.brainstorm.unwrap_or(0);
    if brainstorm > ptrue::MAX_BRAINSTORM {
        return Err(ApiError::invalid("brainstorm", format!("`brainstorm` must be at most {}, got {brainstorm}.", ptrue::MAX_BRAINSTORM)));
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid("temperature", format!("`temperature` must be between 0 and 2, got {temperature}.")));
    }
    let max_tokens = req.max_tokens.unwrap_or(32);
    if max_tokens == 0 || max_tokens > ptrue::MAX_SAMPLE_TOKENS {
        return Err(ApiError::invalid("max_tokens", format!("`max_tokens` must be between 1 and {}, got {max_tokens}.", ptrue::MAX_SAMPLE_TOKENS)));
    }
    Ok(ptrue::Plan { fm, format, question: req.question, answers, n, brainstorm, temperature, max_tokens, seed: req.seed.unwrap_or(0), return_prompts: req.return_prompts })
}

/// `POST /v1/self_evaluation`.
pub async fn self_evaluation(State(st): State<AppState>, body: Body) -> Result<Json<SelfEvaluationResponse>, ApiError> {
    let req: SelfEvaluationRequest = read_json_only(body, &st.limits, SELF_EVAL_FIELDS).await?;
    let plan = self_eval_plan(&st, req)?;
    Ok(Json(ptrue::run(&st, plan).await?))
}

/// `POST /v1/pik`.
pub async fn pik(State(st): State<AppState>, body: Body) -> Result<Json<PikResponse>, ApiError> {
    let req: PikRequest = read_json_only(body, &st.limits, PIK_FIELDS).await?;
    if let Some(m) = req.model.as_deref() {
        if m != st.model_name {
            return Err(if st.scorers.iter().any(|s| s.name == m) || st.feedback_models.iter().any(|f| f.name == m) {
                ApiError::invalid("model", format!("`{m}` has no P(IK) head; it is served for the chat model `{}`.", st.model_name))
            } else {
                ApiError::model_not_found(m)
            });
        }
    }
    let head = st.pik.clone().ok_or_else(|| ApiError::invalid("model", "No P(IK) head is served; start the server with --pik-head FILE (see `hhh-server train-pik-head`)."))?;
    let questions = req.input.into_vec();
    if questions.is_empty() || questions.len() > pik::MAX_QUESTIONS {
        return Err(ApiError::invalid("input", format!("`input` must hold between 1 and {} questions, got {}.", pik::MAX_QUESTIONS, questions.len())));
    }
    for (i, q) in questions.iter().enumerate() {
        check_text(q, &format!("input[{i}]"), MAX_TEXT_CHARS)?;
    }
    let fm = st.feedback_model(None)?;
    Ok(Json(pik::run(&st, &fm, &head, &questions, req.return_prompts).await?))
}

/// Validate a behaviour-eval request into a plan.
pub fn behavior_plan(st: &AppState, req: BehaviorEvalRequest) -> Result<behavior::Plan, ApiError> {
    let fm = st.feedback_model(req.model.as_deref())?;
    let format = resolve_format(req.format, &fm.template)?;
    let k = req.items.len();
    if k == 0 || k > behavior::MAX_ITEMS {
        return Err(ApiError::invalid("items", format!("`items` must hold between 1 and {} items, got {k}.", behavior::MAX_ITEMS)));
    }
    let mut items = Vec::with_capacity(k);
    for (i, it) in req.items.into_iter().enumerate() {
        check_text(&it.question, &format!("items[{i}].question"), MAX_TEXT_CHARS)?;
        check_text(&it.answer_matching_behavior, &format!("items[{i}].answer_matching_behavior"), MAX_TEXT_CHARS)?;
        let others = it.answer_not_matching_behavior.into_vec();
        let f = format!("items[{i}].answer_not_matching_behavior");
        if others.is_empty() || others.len() >= behavior::MAX_ANSWERS {
            return Err(ApiError::invalid(&f, format!("`{f}` must hold between 1 and {} answers, got {}.", behavior::MAX_ANSWERS - 1, others.len())));
        }
        let mut answers = vec![it.answer_matching_behavior];
        for (j, o) in others.into_iter().enumerate() {
            check_text(&o, &format!("{f}[{j}]"), MAX_TEXT_CHARS)?;
            if answers.iter().any(|a| a.trim() == o.trim()) {
                return Err(ApiError::invalid(&format!("{f}[{j}]"), format!("`{f}[{j}]` repeats another answer of the item.")));
            }
            answers.push(o);
        }
        items.push(behavior::Item { question: it.question, answers });
    }
    Ok(behavior::Plan { fm, format, items, debias: req.debias, return_prompts: req.return_prompts })
}

/// `POST /v1/evals/behavior`.
pub async fn behavior(State(st): State<AppState>, body: Body) -> Result<Json<BehaviorEvalResponse>, ApiError> {
    let req: BehaviorEvalRequest = read_json_only(body, &st.limits, BEHAVIOR_FIELDS).await?;
    let plan = behavior_plan(&st, req)?;
    Ok(Json(behavior::run(&st, plan).await?))
}
