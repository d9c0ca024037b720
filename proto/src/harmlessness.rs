//! Wire types of the constitutional harmlessness API (`/v1/harmlessness/*`).

use crate::{ChatMessage, ScoringUsage};
use serde::{Deserialize, Serialize};

/// `POST /v1/harmlessness/compare`: which of the responses is less harmful, by the feedback
/// model's multiple-choice answer under written principles.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    /// The feedback model (default: the served chat model).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation the responses answer (its last turn is the human's).
    pub messages: Vec<ChatMessage>,
    /// Two or more candidate assistant responses.
    pub responses: Vec<String>,
    /// Principles to use, by id (default: `num_principles` sampled with `seed`).
    #[serde(default)]
    pub principle_ids: Option<Vec<String>>,
    /// How many principles to sample and ensemble (default 4).
    #[serde(default)]
    pub num_principles: Option<usize>,
    /// Seed of the principle sampling (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Ask both orders (A/B and B/A) and average them (default true).
    #[serde(default)]
    pub debias: Option<bool>,
    /// Prepend the constitution's few-shot examples (default false).
    #[serde(default)]
    pub few_shot: Option<bool>,
    /// Chain-of-thought feedback: the model reasons before the options are scored, and each
    /// order's label is clamped to [0.4, 0.6] (default false).
    #[serde(default)]
    pub chain_of_thought: Option<bool>,
    /// Longest reasoning, tokens (chain of thought only; default 96, at most 512).
    #[serde(default)]
    pub cot_max_tokens: Option<usize>,
    /// Return the prompt texts that were scored.
    #[serde(default)]
    pub return_prompts: Option<bool>,
}

/// One principle's label for one pair.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct PrincipleLabel {
    pub principle_id: String,
    /// `P(a less harmful)` under this principle (the mean of both orders when debiasing).
    pub probability: f64,
    /// `P(option (A))` normalised over (A)/(B) with `a` shown as (A).
    pub p_a_first: f64,
    /// `P(option (A))` with `b` shown as (A) (present when debiasing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_a_second: Option<f64>,
    /// The generated reasoning, one per order asked (chain of thought only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Vec<String>>,
}

/// The labels of one pair of responses.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ComparePair {
    pub a: usize,
    pub b: usize,
    /// Ensemble mean over principles of `P(responses[a] is less harmful than responses[b])`.
    pub probability: f64,
    pub per_principle: Vec<PrincipleLabel>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct CompareResponse {
    pub id: String,
    /// Always `"harmlessness.compare"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    /// The principle ids used, in order.
    pub principles: Vec<String>,
    /// Every pair `a < b`.
    pub pairs: Vec<ComparePair>,
    /// Per response: mean over the others of `P(this one is less harmful)`.
    pub scores: Vec<f64>,
    /// Response indices, least harmful first (ties by index).
    pub ranking: Vec<usize>,
    /// Mean of `p_a_first + p_a_second − 1` over pairs and principles: how much the model favours
    /// option (A) whatever it holds (present when debiasing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_bias: Option<f64>,
    /// The scored prompt texts (with `return_prompts`), up to "The answer is:".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<String>>,
    pub usage: ScoringUsage,
}

/// One response's harmlessness score.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct HarmlessnessScore {
    pub index: usize,
    /// Mean over the other responses of `P(this one is less harmful)`, in [0, 1].
    pub score: f64,
}

/// `POST /v1/harmlessness/score` (the request is a [`CompareRequest`]).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct HarmlessnessScoreResponse {
    pub id: String,
    /// Always `"harmlessness.score"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub principles: Vec<String>,
    pub data: Vec<HarmlessnessScore>,
    /// Least harmful first.
    pub ranking: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_bias: Option<f64>,
    pub usage: ScoringUsage,
}

/// `POST /v1/harmlessness/revise`: critique and revise a response (SL-CAI) for K rounds.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviseRequest {
    /// The model that critiques and revises (default: the served chat model).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation the response answers (its last turn is the human's).
    pub messages: Vec<ChatMessage>,
    pub response: String,
    /// Rounds of critique and revision (default 1).
    #[serde(default)]
    pub rounds: Option<usize>,
    /// Critique/revision principles by id, one per round (default: sampled with `seed`, no repeats).
    #[serde(default)]
    pub principle_ids: Option<Vec<String>>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Sampling temperature of critiques and revisions (default 0: greedy).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Token limit of each critique and each revision (default 128).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Send each round as a server-sent event when it is done, then the whole response.
    #[serde(default)]
    pub stream: bool,
}

/// A streamed round of `/v1/harmlessness/revise` (`stream: true`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct RevisionRoundEvent {
    /// Always `"harmlessness.revision.round"`.
    pub object: String,
    /// Round number, from 0.
    pub index: usize,
    #[serde(flatten)]
    pub round: RevisionRound,
}

/// One critique–revision round.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct RevisionRound {
    pub principle_id: String,
    pub critique_request: String,
    pub critique: String,
    pub revision_request: String,
    pub revision: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ReviseResponse {
    pub id: String,
    /// Always `"harmlessness.revision"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub rounds: Vec<RevisionRound>,
    /// The last round's revision (the input response when a revision came back empty).
    pub final_response: String,
    pub usage: crate::Usage,
}

/// The `harmlessness` extension of `/v1/chat/completions`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HarmlessnessOptions {
    /// Candidates to sample (default 4; replaces `n`).
    #[serde(default)]
    pub candidates: Option<usize>,
    /// `"constitutional"` (default: the chat model's feedback under principles) or `"preference"`
    /// (the first served reward model).
    #[serde(default)]
    pub scorer: Option<String>,
    /// Principles to ensemble (constitutional; default 4).
    #[serde(default)]
    pub principles: Option<usize>,
    /// Seed of the principle sampling (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// `"best"` (default): return only the least harmful candidate; `"all"`: every candidate,
    /// scored, in sampling order.
    #[serde(default)]
    pub select: Option<String>,
    /// Constitutional scorer: the feedback model to ask (default: the chat model; or a model
    /// served with `--feedback-model`).
    #[serde(default)]
    pub feedback_model: Option<String>,
}

/// One choice's harmlessness.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ChoiceHarmlessness {
    /// Constitutional: mean P(less harmful) against the other candidates; preference: the reward.
    pub score: f64,
    /// 0 = least harmful.
    pub rank: usize,
    /// Index of the candidate in sampling order.
    pub candidate: usize,
}

/// Every candidate's score and what was selected.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct HarmlessnessSummary {
    pub scorer: String,
    /// Scores of all candidates, in sampling order.
    pub scores: Vec<f64>,
    /// The candidate returned first (the least harmful).
    pub selected: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_bias: Option<f64>,
}

/// `POST /v1/harmlessness/label`: the raw label-scoring primitive — the probabilities of a set
/// of option strings after one prompt.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct LabelRequest {
    /// The feedback model (default: the served chat model).
    #[serde(default)]
    pub model: Option<String>,
    /// Raw text, scored as is (no chat template).
    pub prompt: String,
    /// Candidate continuations, e.g. `[" (A)", " (B)"]`; each is tokenized on its own.
    pub options: Vec<String>,
}

/// One option's result.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct OptionScore {
    pub index: usize,
    pub option: String,
    /// Total log-probability of the option's tokens after the prompt.
    pub logprob: f64,
    /// `exp(logprob)` normalised over the options.
    pub probability: f64,
    pub num_tokens: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct LabelResponse {
    pub id: String,
    /// Always `"harmlessness.label"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub data: Vec<OptionScore>,
    /// Index of the most probable option (ties: the first).
    pub choice: usize,
    pub usage: ScoringUsage,
}
