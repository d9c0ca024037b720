//! Online RL control routes, in SGLang's shapes: weight updates and pausing generation.

use serde::{Deserialize, Serialize};

/// `POST /update_weights_from_disk`: load new weights (and/or a new reward head) for a served
/// model: the chat model by default, or the `--preference-model` named in `model`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct UpdateWeightsRequest {
    /// A GGUF file or a Hugging Face directory with the same architecture and tokenizer (a
    /// sequence-classification or OpenRLHF reward checkpoint brings its own head). Required
    /// unless `reward_head_path` is given.
    #[serde(default)]
    pub model_path: Option<String>,
    /// A reward-head file (docs/preference-model.md) of the served head's shape, replacing the
    /// `--reward-head` / `--preference-head` in use.
    #[serde(default)]
    pub reward_head_path: Option<String>,
    /// The served model to update (its `id` in `/v1/models`); default: the chat model (or the
    /// scoring model a server was started with as `--model`).
    #[serde(default)]
    pub model: Option<String>,
    /// `auto` only (the format is read from the path).
    #[serde(default)]
    pub load_format: Option<String>,
    /// Must be true (the default): cached KV was computed by the old weights.
    #[serde(default)]
    pub flush_cache: Option<bool>,
    /// true (default): running requests finish on the old weights before the swap; false:
    /// they end at once with `finish_reason: "abort"`.
    #[serde(default)]
    pub drain: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct UpdateWeightsResponse {
    pub success: bool,
    pub message: String,
    /// Weight updates applied since the server started.
    pub weight_version: u64,
}

/// `GET /get_weight_version`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct WeightVersionResponse {
    pub weight_version: u64,
}

/// Query of `GET /get_weight_version`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct WeightVersionQuery {
    /// A served model's id (default: the chat model).
    #[serde(default)]
    pub model: Option<String>,
}

/// `POST /pause_generation`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PauseRequest {
    /// `abort` (default, as SGLang): running requests end with `abort`; `wait`: they finish.
    /// Waiting requests stay queued either way until `/continue_generation`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// The answer of `/pause_generation` and `/continue_generation`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SuccessResponse {
    pub success: bool,
}
