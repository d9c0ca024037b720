//! The seam between the engine and the model: one mixed batch in, sampled tokens out.

use crate::request::{PooledOutput, RequestId, SamplingParams, TokenId};

/// One sequence's share of a step.
#[derive(Debug, Clone)]
pub struct BatchSeq {
    pub request_id: RequestId,
    /// Token ids to compute this step, at positions `start_pos..start_pos + tokens.len()`.
    pub tokens: Vec<TokenId>,
    /// Position of `tokens[0]`; KV of positions `< start_pos` is already in the cache.
    pub start_pos: usize,
    /// Physical KV block of every logical block of this sequence, covering at least
    /// `start_pos + tokens.len()` positions.
    pub block_table: Vec<u32>,
    /// Sample a token after the last position (the sequence is caught up after this step).
    /// For a pooling request (`params.pooling`), pool the last position instead.
    pub sample: bool,
    pub params: SamplingParams,
    /// Generated tokens so far, filled only when the sampler needs them (penalties, a
    /// structured-output constraint); see `num_output_tokens` for their count.
    pub output_tokens: Vec<TokenId>,
    /// How many tokens the request has generated so far: the index of the token sampled this
    /// step (the sampler's random stream is keyed by the seed and this index).
    pub num_output_tokens: usize,
    /// Length of the request's prompt: positions below it are prompt tokens (the model
    /// computes those rows on its prompt path, whatever the step's other rows).
    pub prompt_len: usize,
    /// Prompt tokens (for the repetition penalty).
    pub prompt_tokens: Vec<TokenId>,
    /// For prompt logprobs: the token that follows each computed position from
    /// `prompt_targets_offset` on, as far as it is part of the prompt
    /// (`prompt_targets_offset + len <= tokens.len()`); empty when not requested.
    pub prompt_targets: Vec<TokenId>,
    /// Index in `tokens` of the first position whose successor is in `prompt_targets`.
    pub prompt_targets_offset: usize,
}

/// A whole step: every scheduled sequence.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub seqs: Vec<BatchSeq>,
}

impl Batch {
    /// Total tokens computed in this step.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }
}

/// A token with its logprob and the top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: TokenId,
    pub logprob: f32,
    /// Most likely tokens at this position, best first.
    pub top: Vec<(TokenId, f32)>,
}

/// The token sampled for a sequence.
pub type SampledToken = TokenLogprob;

/// The model's answer for one sequence of the batch.
#[derive(Debug, Clone, Default)]
pub struct SeqOutput {
    /// Present iff the `BatchSeq` asked to sample (and is not a pooling request).
    pub sampled: Option<SampledToken>,
    /// Present iff the `BatchSeq` asked to sample and is a pooling request.
    pub pooled: Option<PooledOutput>,
    /// Logprob of each `prompt_targets` token.
    pub prompt_logprobs: Vec<TokenLogprob>,
}

/// The model's answer for a whole step, aligned with `Batch::seqs`.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    pub seqs: Vec<SeqOutput>,
}

/// Runs batches. Implemented by the model runner; tests use fakes.
pub trait Executor: Send {
    /// Run one step. On error every request in the batch fails.
    fn execute(&mut self, batch: &Batch) -> Result<StepOutput, ExecutorError>;
    /// Forget any per-request state (called when a request ends).
    fn release(&mut self, _request_id: RequestId) {}
    /// Replace the model's weights with `weights` (a type only the executor knows; the engine
    /// holds no tensors). Called between steps with no request running. On error the old
    /// weights must keep serving.
    fn update_weights(&mut self, _weights: WeightPayload) -> Result<(), ExecutorError> {
        Err(ExecutorError::step("this executor cannot update its weights"))
    }
    /// Run one sequence through the reference path and capture what `req` asks for (called
    /// between steps; leaves the KV cache and every request alone).
    fn inspect(&mut self, _req: &crate::inspect::InspectRequest) -> Result<crate::inspect::InspectOutput, ExecutorError> {
        Err(ExecutorError::step("this executor cannot capture activations"))
    }
}

/// New weights for [`Executor::update_weights`], type-erased.
pub type WeightPayload = Box<dyn std::any::Any + Send>;

/// The paged KV pool's shape, defined once (by [`crate::SchedulerConfig`]) and handed to the
/// executor when the engine builds it, so the scheduler's block ids and the runner's cache agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGeometry {
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
}

/// Why an executor could not start or could not run a step.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// Building the executor failed (loading the model, sizing the cache, ...).
    #[error("executor start-up failed: {0}")]
    Startup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The model failed on a step.
    #[error("{0}")]
    Step(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ExecutorError {
    /// A start-up failure from any error (or message).
    pub fn startup(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Startup(e.into())
    }
    /// A step failure from any error (or message).
    pub fn step(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Step(e.into())
    }
}
