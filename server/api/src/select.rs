//! The chat `harmlessness` extension (best-of-k by harmlessness): sample k candidates, score each
//! with constitutional feedback ([`crate::feedback`]) or the first reward model
//! ([`crate::rewards`]), rank them, and return the least harmful (or all, scored).
//!
//! [`plan`] resolves and checks every option (scorer, models, principles, candidate count)
//! before a single candidate is generated; [`select`] then only asks the engine.

use crate::error::ApiError;
use crate::feedback::{self, choose_principles, ComparePlan, MAX_COMPARE_RESPONSES};
use crate::prompt::render_conversation;
use crate::rewards::{ranking, rewards_for};
use crate::state::{AppState, FeedbackModel, Scorer};
use hhh_proto::{ChatChoice, ChatMessage, ChoiceHarmlessness, HarmlessnessOptions, HarmlessnessSummary};

/// Placeholder scored in place of an empty candidate (the feedback prompt needs text).
pub const EMPTY_CANDIDATE: &str = "(no response)";

/// What scores the candidates.
enum By {
    /// Constitutional feedback of this model under these principles (indices), on this
    /// transcript of the conversation.
    Constitutional { fm: FeedbackModel, principles: Vec<usize>, conversation: String },
    /// The first reward model served.
    Preference(Scorer),
}

/// A validated extension: how many candidates, how they are scored, what is returned.
pub struct SelectionPlan {
    /// Candidates to sample.
    pub candidates: usize,
    by: By,
    /// `select: "best"` (only the least harmful is returned).
    best: bool,
}

/// Errors of the shared feedback checks name the extension's fields.
fn rename_param(mut e: ApiError) -> ApiError {
    if let Some(p) = &e.param {
        e.param = Some(match p.as_str() {
            "num_principles" => "harmlessness.principles".to_string(),
            other => other.to_string(),
        });
    }
    e
}

/// Resolve and check the extension's options (`n`: the request's own `n`, which must be unset
/// or 1). Every 400/404 of the extension happens here.
pub fn plan(st: &AppState, opts: &HarmlessnessOptions, messages: &[ChatMessage], n: Option<i64>, max_n: usize) -> Result<SelectionPlan, ApiError> {
    let preference = match opts.scorer.as_deref().unwrap_or("constitutional") {
        "constitutional" => false,
        "preference" => true,
        other => return Err(ApiError::invalid("harmlessness.scorer", format!("Unknown scorer `{other}` (constitutional, preference)."))),
    };
    let by = if preference {
        let sc = st.scorers.first().ok_or_else(|| ApiError::invalid("harmlessness.scorer", "No reward model is served (start the server with --preference-model or --reward-head)."))?;
        By::Preference(sc.clone())
    } else {
        let fm = st.feedback_model(opts.feedback_model.as_deref()).map_err(rename_param)?;
        let principles = choose_principles(&st.constitution.feedback_principles, None, opts.principles, opts.seed).map_err(rename_param)?;
        By::Constitutional { fm, principles, conversation: render_conversation(messages)? }
    };
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "With `harmlessness`, set the number of samples with `harmlessness.candidates`, not `n`."));
    }
    let k = opts.candidates.unwrap_or(4);
    let min = if preference { 1 } else { 2 };
    let max = max_n.min(MAX_COMPARE_RESPONSES);
    if k < min || k > max {
        return Err(ApiError::invalid("harmlessness.candidates", format!("`harmlessness.candidates` must be between {min} and {max}, got {k}.")));
    }
    let best = match opts.select.as_deref() {
        None | Some("best") => true,
        Some("all") => false,
        Some(s) => return Err(ApiError::invalid("harmlessness.select", format!("`harmlessness.select` must be `best` or `all`, got `{s}`."))),
    };
    Ok(SelectionPlan { candidates: k, by, best })
}

/// Score the generated candidates, rank them, and keep only the least harmful with `best`.
/// Returns the choices to send (re-indexed from 0) and the summary.
pub async fn select(st: &AppState, plan: SelectionPlan, messages: &[ChatMessage], choices: Vec<ChatChoice>) -> Result<(Vec<ChatChoice>, HarmlessnessSummary), ApiError> {
    let texts: Vec<String> =
        choices.iter().map(|c| if c.message.content.as_deref().unwrap_or_default().trim().is_empty() { EMPTY_CANDIDATE.to_string() } else { c.message.content.clone().unwrap_or_default() }).collect();
    let (scorer, scores, principles, position_bias) = match plan.by {
        By::Constitutional { fm, principles, conversation } => {
            let p = ComparePlan { fm, chosen: principles, few_shot: String::new(), debias: true, cot: None, conversation, responses: texts, return_prompts: false };
            let c = feedback::run(st, p).await?;
            ("constitutional", c.scores, c.principles, c.position_bias)
        }
        By::Preference(sc) => {
            let r = rewards_for(&sc, messages, &texts, st.request_timeout).await?;
            ("preference", r.into_iter().map(f64::from).collect(), Vec::new(), None)
        }
    };
    let order = ranking(&scores);
    let mut rank = vec![0; scores.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let mut choices: Vec<ChatChoice> = choices
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            c.harmlessness = Some(ChoiceHarmlessness { score: scores[i], rank: rank[i], candidate: i });
            c
        })
        .collect();
    let selected = order[0];
    if plan.best {
        let mut best = choices.swap_remove(selected);
        best.index = 0;
        choices = vec![best];
    }
    Ok((choices, HarmlessnessSummary { scorer: scorer.into(), scores, selected, principles, position_bias }))
}
