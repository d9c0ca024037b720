//! Looking inside the model: a request that runs one token sequence through the executor's
//! reference path (dense, non-paged, f32) between two steps and returns what the serving path
//! never keeps — attention probabilities, residual-stream states, per-token logprobs. The
//! serving kernels are untouched: nothing is captured unless this request asks.

/// Longest sequence an inspection may run (attention is `O(T²)` per head and layer).
pub const MAX_INSPECT_TOKENS: usize = 2048;

/// What to capture for one sequence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InspectRequest {
    /// The sequence (its own; no KV cache, no prefix cache).
    pub tokens: Vec<u32>,
    /// Layers (0-based) whose attention probabilities to return.
    pub attention_layers: Vec<usize>,
    /// Layers (0-based) after which to return the residual stream at the last token; the value
    /// `num_layers` means the final hidden state (after the model's last norm).
    pub hidden_layers: Vec<usize>,
    /// Return `log p(tokens[t + 1] | tokens[..=t])` for every `t`.
    pub token_logprobs: bool,
    /// Return each head's direct effect on the logit of the next token relative to the mean
    /// logit, per layer, head and position (see [`InspectOutput::direct_logit`]).
    pub direct_logit: bool,
}

/// What [`InspectRequest`] captured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InspectOutput {
    pub num_layers: usize,
    pub num_heads: usize,
    /// Per requested layer, in request order: `[num_heads, T, T]` row-major, row `i` the
    /// attention of query position `i` over key positions (zero above the diagonal; rows sum
    /// to 1).
    pub attention: Vec<Vec<f32>>,
    /// Per requested layer, in request order: the `hidden_size` values at the last token.
    pub hidden: Vec<Vec<f32>>,
    /// `T - 1` values when asked for.
    pub token_logprobs: Vec<f32>,
    /// When asked for: `[num_layers, num_heads, T - 1]`; entry `(l, h, t)` is
    /// `(u[tokens[t + 1]] - mean_v u[v]) · (n_t ⊙ o_{l,h,t})` with `u` the unembedding rows, `n_t`
    /// the final norm's scale over the final residual's RMS at `t`, and `o_{l,h,t}` the head's
    /// output (its slice of the attention output through the output projection): how much the
    /// head, directly, raises the logit of the token that comes next.
    pub direct_logit: Vec<f32>,
}
