//! Honesty and behaviour evaluations: P(True) self-evaluation and P(IK) (Kadavath et al. 2022,
//! "Language Models (Mostly) Know What They Know") and the model-written-evaluations runner
//! (Perez et al. 2022, "Discovering Language Model Behaviors with Model-Written Evaluations").

use crate::ScoringUsage;
use serde::{Deserialize, Serialize};

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// How a question reaches the model: `text` (the paper's raw transcript format) or `chat` (the
/// question as a user message through the model's chat template). The default is `chat` for a
/// model with a chat template and `text` for one without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    Text,
    Chat,
}

/// `POST /v1/self_evaluation`: P(True) of proposed answers to one question.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SelfEvaluationRequest {
    /// The model that proposes and judges (default: the served chat model).
    #[serde(default)]
    pub model: Option<String>,
    pub question: String,
    /// Answers to judge. Without them, `n` answers are sampled and judged.
    #[serde(default)]
    pub answers: Option<Vec<String>>,
    /// Sample this many answers (temperature `temperature`, at most `max_tokens` each).
    #[serde(default)]
    pub n: Option<usize>,
    /// Show this many of the model's own samples ("brainstormed ideas") before the answer being
    /// judged; the same samples for every answer (the first `brainstorm` samples).
    #[serde(default)]
    pub brainstorm: Option<usize>,
    #[serde(default)]
    pub format: Option<PromptFormat>,
    /// Sampling temperature of the proposed and brainstormed answers (default 1, as in the paper).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Longest sampled answer, tokens (default 32).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Return the exact scored prompts (text, before the option " (A)" / " (B)").
    #[serde(default)]
    pub return_prompts: bool,
}

/// One judged answer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct SelfEvaluation {
    pub index: usize,
    pub answer: String,
    /// `P(" (A)")` normalised over " (A)" (True) and " (B)" (False).
    pub p_true: f64,
    pub logprob_true: f64,
    pub logprob_false: f64,
    /// The answer was sampled by the model (not given in `answers`).
    pub sampled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SelfEvaluationResponse {
    pub id: String,
    /// Always `"self_evaluation"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub format: PromptFormat,
    pub data: Vec<SelfEvaluation>,
    /// Every answer the model sampled (the judged ones when `n`, then the brainstormed ones).
    pub samples: Vec<String>,
    /// The brainstormed ideas shown before each judged answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brainstorm: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<String>>,
    /// Prompt tokens scored plus the sampled tokens.
    pub usage: ScoringUsage,
}

/// `POST /v1/pik`: P(IK), the probability that the model answers a question correctly, from a
/// head on the question's final hidden state (`--pik-head`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PikRequest {
    #[serde(default)]
    pub model: Option<String>,
    /// One question or several.
    pub input: StringOrList,
    #[serde(default)]
    pub return_prompts: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct PikData {
    pub index: usize,
    /// `σ(w · h + b)`.
    pub p_ik: f64,
    /// `w · h + b`.
    pub logit: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PikResponse {
    pub id: String,
    /// Always `"pik"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    /// The prompt format the head was trained with.
    pub format: PromptFormat,
    pub data: Vec<PikData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<String>>,
    pub usage: ScoringUsage,
}

/// One item of an Anthropic `evals` file (persona yes/no or advanced-ai-risk multiple choice).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BehaviorItem {
    pub question: String,
    /// E.g. `" Yes"` or `" (A)"`.
    pub answer_matching_behavior: String,
    /// One answer or several.
    pub answer_not_matching_behavior: StringOrList,
}

/// `POST /v1/evals/behavior`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BehaviorEvalRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub items: Vec<BehaviorItem>,
    /// Also ask with the lettered choices in reverse order and average (items without lettered
    /// choices are asked once). Default false.
    #[serde(default)]
    pub debias: bool,
    #[serde(default)]
    pub format: Option<PromptFormat>,
    #[serde(default)]
    pub return_prompts: bool,
}

/// One item's result.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct BehaviorResult {
    pub index: usize,
    /// Probability of the matching answer, normalised over the item's answers (the mean over
    /// both orders when debiased).
    pub p_matching: f64,
    /// The same in the file's order of the choices.
    pub p_matching_original: f64,
    /// The same with the choices reversed (only when debiased and the item lists choices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_matching_reversed: Option<f64>,
    /// `p_matching > 0.5`: the model's most likely answer matches the behaviour.
    pub matches: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<String>>,
}

/// Over all items of the call.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct BehaviorSummary {
    pub items: usize,
    /// Fraction of items whose most likely answer matches the behaviour.
    pub matching_rate: f64,
    /// Binomial standard error of `matching_rate`.
    pub matching_rate_stderr: f64,
    /// Mean of `p_matching`.
    pub mean_p_matching: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BehaviorEvalResponse {
    pub id: String,
    /// Always `"evals.behavior"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub format: PromptFormat,
    pub data: Vec<BehaviorResult>,
    pub summary: BehaviorSummary,
    pub usage: ScoringUsage,
}
