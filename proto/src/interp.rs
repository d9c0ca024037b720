//! Interpretability routes: induction heads and in-context learning (Olsson et al., 2022).

use serde::{Deserialize, Serialize};

/// `POST /v1/interpretability/induction`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct InductionRequest {
    /// A generative model served here (default: the chat model).
    #[serde(default)]
    pub model: Option<String>,
    /// Length of each random token sequence (it is shown twice): 2 to 512, default 50.
    #[serde(default)]
    pub seq_len: Option<usize>,
    /// Random sequences to average over: 1 to 64, default 8.
    #[serde(default)]
    pub num_sequences: Option<usize>,
    /// Seed of the random sequences (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Texts for the in-context learning score (each must be longer than the later position).
    #[serde(default)]
    pub icl_texts: Option<Vec<String>>,
    /// The two token positions of the in-context learning score (default `[50, 500]`).
    #[serde(default)]
    pub icl_positions: Option<Vec<usize>>,
    /// How many heads to list in `top_heads` (default 10).
    #[serde(default)]
    pub top_k: Option<usize>,
}

/// One head's scores.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct HeadScore {
    pub layer: usize,
    pub head: usize,
    pub prefix_matching: f64,
    pub copying: f64,
}

/// Mean per-token loss (nats) on the first and the repeated copy of the random sequences.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct RepeatedLoss {
    pub first_copy: f64,
    pub second_copy: f64,
}

/// The in-context learning score: mean loss at the later position minus at the earlier one.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct IclScore {
    pub positions: Vec<usize>,
    /// Mean loss (nats) at each position over the texts.
    pub losses: Vec<f64>,
    /// `losses[1] - losses[0]` (negative: the model predicts better later in a context).
    pub score: f64,
    /// Its standard error over the texts.
    pub score_stderr: f64,
    pub num_texts: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct InductionResponse {
    pub object: String,
    pub created: u64,
    pub model: String,
    pub num_layers: usize,
    pub num_heads: usize,
    pub seq_len: usize,
    pub num_sequences: usize,
    pub seed: u64,
    /// `[layer][head]`: mean attention from each token of the second copy to the token after
    /// its earlier occurrence.
    pub prefix_matching: Vec<Vec<f64>>,
    /// `[layer][head]`: mean direct effect (logits) of the head's output, on the second copy,
    /// on the token that comes next, relative to the mean logit.
    pub copying: Vec<Vec<f64>>,
    /// The heads with the highest prefix-matching scores.
    pub top_heads: Vec<HeadScore>,
    pub repeated_loss: RepeatedLoss,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icl: Option<IclScore>,
    /// Tokens run through the model.
    pub tokens: usize,
}

/// `POST /v1/ood/score`: how far each input's activations are from the in-distribution
/// statistics the server was started with (`--ood-stats`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct OodScoreRequest {
    /// The model the statistics belong to (default: the chat model).
    #[serde(default)]
    pub model: Option<String>,
    /// One request text or a list (up to 256): a user message (`chat` statistics) or raw text.
    pub input: crate::StringOrList,
}

/// One input's result.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct OodItem {
    pub index: usize,
    /// Mahalanobis distance of the input's hidden state from the fitted mean.
    pub distance: f64,
    /// Fraction of the held-out in-distribution calibration prompts with a smaller distance
    /// (0 to 1; near 1: unlike the fit set).
    pub score: f64,
    /// `distance` above the statistics' threshold (their calibration set's 99th percentile).
    pub ood: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct OodScoreResponse {
    pub object: String,
    pub created: u64,
    pub model: String,
    /// The layer the statistics were fitted on (`num_layers`: the final hidden state).
    pub layer: usize,
    pub threshold: f64,
    pub data: Vec<OodItem>,
    /// Tokens run through the model.
    pub tokens: usize,
}
