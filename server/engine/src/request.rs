//! Requests as the engine sees them: token ids in, token ids out.

use std::time::Instant;

/// A vocabulary id.
pub type TokenId = u32;
/// Engine-wide unique request id.
pub type RequestId = u64;

/// Everything the sampler needs to pick the next token. Validation happens in the API layer.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0.0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1].
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// Minimum probability relative to the most likely token; 0 disables.
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1.0 disables; applies to prompt and generated tokens (HF semantics).
    pub repetition_penalty: f32,
    /// Per-request seed: the same seed and request give the same tokens whatever the batch.
    pub seed: u64,
    /// Number of top alternatives to report for each generated token (`None`: no logprobs).
    pub logprobs: Option<usize>,
    /// Report logprobs of the prompt tokens with this many alternatives (`None`: none).
    pub prompt_logprobs: Option<usize>,
    /// With `prompt_logprobs`: only positions `>= prompt_logprobs_start` get logprobs, and the
    /// prefix cache may serve the tokens before it (label scoring: a shared prompt followed by a
    /// short option whose probability is wanted). 0 or 1: every position from 1.
    pub prompt_logprobs_start: usize,
    /// Maximum number of tokens to generate.
    pub max_tokens: usize,
    /// Token ids that end generation (the model's EOS is added unless `ignore_eos`).
    pub stop_token_ids: Vec<TokenId>,
    /// Keep generating past EOS until `max_tokens`.
    pub ignore_eos: bool,
    /// Prefill only: once the whole prompt is computed, return the pooled output of its last
    /// token ([`EngineEvent::Pooled`]) instead of sampling, and finish. `max_tokens` should be 0.
    pub pooling: Option<PoolingParams>,
    /// Added to the logits of these tokens before sampling (OpenAI's `logit_bias`, −100 to 100;
    /// reported logprobs stay the model's own).
    pub logit_bias: Vec<(TokenId, f32)>,
    /// Structured output: only tokens the constraint allows are sampled.
    pub constraint: Option<crate::constraint::Constraint>,
    /// Scheduling class: batch requests fill capacity that interactive ones leave idle.
    pub priority: Priority,
}

/// Scheduling class of a request (see [`crate::scheduler`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A client is waiting: served first.
    #[default]
    Interactive,
    /// Offline batch work: admitted only after every waiting interactive request, given the
    /// budget interactive rows leave, and preempted first (also to make room for an interactive
    /// request that is waiting).
    Batch,
}

/// What a prefill-only (scoring) request returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolingParams {
    /// Also return the final hidden state (after the model's last norm) of the last token.
    pub return_hidden: bool,
}

/// The pooled output of a scoring request's last token.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PooledOutput {
    /// The reward head's outputs (`num_labels` values); empty when the model has no head.
    pub scores: Vec<f32>,
    /// The final hidden state, when asked for.
    pub hidden: Option<Vec<f32>>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
            logprobs: None,
            prompt_logprobs: None,
            prompt_logprobs_start: 0,
            logit_bias: Vec::new(),
            constraint: None,
            max_tokens: 16,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            pooling: None,
            priority: Priority::Interactive,
        }
    }
}

/// Why a request finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was generated.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// The client went away or the request was cancelled.
    Abort,
    /// The engine failed while running the request.
    Error,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::Error => "error",
        }
    }
}

/// Lifecycle: Waiting → Running ⇄ Preempted(waiting again) → Finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Waiting,
    Running,
    Finished(FinishReason),
}

/// One request inside the scheduler.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: RequestId,
    pub prompt: Vec<TokenId>,
    pub output: Vec<TokenId>,
    pub params: SamplingParams,
    /// Tokens of `prompt ++ output` whose KV is in the cache. Invariant: `<= num_tokens()`.
    pub num_computed_tokens: usize,
    /// Prompt tokens served from the prefix cache at first admission (for usage reporting).
    pub num_cached_prompt_tokens: Option<usize>,
    pub status: RequestStatus,
    pub arrival: Instant,
    /// How many times this request was preempted.
    pub num_preemptions: u32,
    /// Prompt positions `< prompt_logprobs_sent` already had their logprobs delivered.
    pub prompt_logprobs_sent: usize,
}

impl Request {
    pub fn new(id: RequestId, prompt: Vec<TokenId>, params: SamplingParams) -> Self {
        Self {
            id,
            prompt,
            output: Vec::new(),
            params,
            num_computed_tokens: 0,
            num_cached_prompt_tokens: None,
            status: RequestStatus::Waiting,
            arrival: Instant::now(),
            num_preemptions: 0,
            prompt_logprobs_sent: 0,
        }
    }

    /// Prompt plus generated tokens.
    pub fn num_tokens(&self) -> usize {
        self.prompt.len() + self.output.len()
    }

    /// Token at absolute position `i` of `prompt ++ output`.
    pub fn token_at(&self, i: usize) -> TokenId {
        if i < self.prompt.len() {
            self.prompt[i]
        } else {
            self.output[i - self.prompt.len()]
        }
    }

    /// Tokens in `[start, end)` of `prompt ++ output`.
    pub fn tokens_range(&self, start: usize, end: usize) -> Vec<TokenId> {
        (start..end).map(|i| self.token_at(i)).collect()
    }

    /// All tokens, prompt first.
    pub fn all_tokens(&self) -> Vec<TokenId> {
        let mut v = self.prompt.clone();
        v.extend_from_slice(&self.output);
        v
    }
}

/// What the engine tells a request's owner.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// Logprobs of prompt tokens `start..start+len` (position 0 has none and is never sent).
    PromptLogprobs { start: usize, logprobs: Vec<crate::executor::TokenLogprob> },
    /// One generated token.
    Token(crate::executor::SampledToken),
    /// The result of a pooling (scoring) request; `Finished` follows.
    Pooled(PooledOutput),
    /// The request is done; no more events follow.
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
        cached_tokens: usize,
        /// Set when `reason` is `Error`.
        error: Option<String>,
        /// The weight version the request ran on (see `EngineClient::weight_version`; the engine
        /// stamps it when it sends the event: weights change only between requests' lifetimes
        /// in the engine, never under a running request).
        weight_version: u64,
    },
}
