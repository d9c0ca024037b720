//! Wire types of the scoring API: rewards and pairwise preferences from a preference model,
//! and the compatibility shapes of OpenRLHF's `/get_reward` and vLLM's `/pooling`.

use crate::{ChatMessage, PromptTokensDetails};
use serde::{Deserialize, Serialize};

/// One input of `POST /v1/rewards`: a conversation and a response to it (rendered with the
/// model's chat template, the response as the final assistant turn), or raw `text`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `POST /v1/rewards`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct RewardsRequest {
    pub model: String,
    pub input: Vec<RewardInput>,
    /// Also return each input's final hidden state (after the model's last norm).
    #[serde(default)]
    pub return_hidden: bool,
}

/// Token counts of a scoring call (no completion tokens).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ScoringUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// One input's result.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct RewardData {
    pub index: usize,
    /// Always `"reward"`.
    pub object: String,
    /// The reward: the head's first output.
    pub reward: f32,
    /// All head outputs (`num_labels` values; one for a scalar reward model).
    pub scores: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct RewardsResponse {
    pub id: String,
    /// Always `"list"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub data: Vec<RewardData>,
    pub usage: ScoringUsage,
}

/// `POST /v1/preferences`: one conversation, two or more responses to it.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PreferencesRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub responses: Vec<String>,
}

/// `P(responses[i] preferred over responses[j]) = sigmoid(r_i - r_j)`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct PairPreference {
    pub i: usize,
    pub j: usize,
    pub probability: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PreferencesResponse {
    pub id: String,
    /// Always `"preferences"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    /// One reward per response, in request order.
    pub rewards: Vec<f32>,
    /// Every ordered pair `i < j`.
    pub pairs: Vec<PairPreference>,
    /// Response indices, most preferred first (ties: lower index first).
    pub ranking: Vec<usize>,
    /// With exactly two responses: `P(responses[0] preferred over responses[1])`, the soft label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_label: Option<f64>,
    pub usage: ScoringUsage,
}

/// OpenRLHF's remote reward model request (`POST /get_reward`): full texts, already formatted.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct GetRewardRequest {
    pub query: Vec<String>,
    /// Sent by some OpenRLHF versions; not used (the texts in `query` already contain them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<String>>,
    /// Sent by some OpenRLHF versions; not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Value>,
}

/// OpenRLHF's response: `rewards` and the same values as `scores`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct GetRewardResponse {
    pub rewards: Vec<f32>,
    pub scores: Vec<f32>,
}

/// vLLM's `POST /pooling` input: a string, a list of strings, or token id lists.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PoolingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

/// vLLM's `POST /pooling` (reward/classification models): `input` or `messages`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PoolingRequest {
    pub model: Option<String>,
    #[serde(default)]
    pub input: Option<PoolingInput>,
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    /// Only `"float"`.
    #[serde(default)]
    pub encoding_format: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PoolingData {
    pub index: usize,
    /// Always `"pooling"`.
    pub object: String,
    /// The head outputs at the last token (`num_labels` values).
    pub data: Vec<f32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PoolingResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub data: Vec<PoolingData>,
    pub usage: ScoringUsage,
}
