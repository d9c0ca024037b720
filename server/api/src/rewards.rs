//! Reward-model scoring, the service behind `/v1/rewards`, `/v1/preferences`, `/get_reward`,
//! `/pooling` and the chat `harmlessness` extension's `preference` scorer.
//!
//! Every input becomes one prefill-only engine request (`SamplingParams::pooling`): it batches
//! with other work, and inputs that share a conversation share its KV blocks through the prefix
//! cache. The LM head never runs for them; the reward head reads the final hidden state of the
//! last token.

use crate::error::ApiError;
use crate::jobs::{pooled, run_waves};
use crate::prompt::render_pair;
use crate::state::Scorer;
use hhh_engine::{PooledOutput, PoolingParams, SamplingParams};
use hhh_proto::{ChatMessage, PromptTokensDetails, ScoringUsage};
use std::time::Duration;

/// A validated scoring call: every input tokenized, non-empty and within the model's context.
pub struct ScoringPlan {
    scorer: Scorer,
    inputs: Vec<Vec<u32>>,
    return_hidden: bool,
}

impl ScoringPlan {
    /// Check `(field, tokens)` inputs against `sc`'s context; errors name the field.
    pub fn new(sc: &Scorer, inputs: Vec<(String, Vec<u32>)>, return_hidden: bool) -> Result<Self, ApiError> {
        let max_len = sc.engine.info().max_model_len;
        for (field, tokens) in &inputs {
            if tokens.is_empty() {
                return Err(ApiError::invalid(field, format!("`{field}` encodes to no tokens.")));
            }
            if tokens.len() > max_len {
                return Err(ApiError::invalid(field, format!("`{field}` is {} tokens long; the limit of model `{}` is {max_len} tokens.", tokens.len(), sc.name)));
            }
        }
        Ok(Self { scorer: sc.clone(), inputs: inputs.into_iter().map(|i| i.1).collect(), return_hidden })
    }
}

/// The pooled outputs of a scoring call, in input order, with usage.
pub struct Scored {
    pub outputs: Vec<PooledOutput>,
    pub usage: ScoringUsage,
}

impl Scored {
    /// The scalar reward of every input (the head's first output).
    pub fn rewards(&self) -> Result<Vec<f32>, ApiError> {
        self.outputs.iter().map(reward_of).collect()
    }
}

/// The scalar reward of one pooled output.
pub fn reward_of(o: &PooledOutput) -> Result<f32, ApiError> {
    o.scores.first().copied().ok_or_else(|| ApiError::internal("the model returned no score"))
}

/// Submit every input at once (in waves for large calls), wait for all of them (`timeout`
/// applies), and return their pooled outputs in order. Dropping the future aborts every input
/// still running.
pub async fn run(plan: ScoringPlan, timeout: Option<Duration>) -> Result<Scored, ApiError> {
    let params = SamplingParams { max_tokens: 0, temperature: 0.0, pooling: Some(PoolingParams { return_hidden: plan.return_hidden }), ..Default::default() };
    let mut usage = ScoringUsage { prompt_tokens: plan.inputs.iter().map(Vec::len).sum(), ..Default::default() };
    let jobs = plan.inputs.into_iter().map(|t| (t, params.clone())).collect();
    let results = run_waves(&plan.scorer.engine, jobs, timeout, pooled).await?;
    let cached = results.iter().map(|r| r.1).sum();
    usage.total_tokens = usage.prompt_tokens;
    usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: cached });
    Ok(Scored { outputs: results.into_iter().map(|r| r.0).collect(), usage })
}

/// Rewards of several responses to one conversation (the chat extension's `preference` scorer).
pub async fn rewards_for(sc: &Scorer, messages: &[ChatMessage], responses: &[String], timeout: Option<Duration>) -> Result<Vec<f32>, ApiError> {
    let mut inputs = Vec::with_capacity(responses.len());
    for (i, r) in responses.iter().enumerate() {
        inputs.push((format!("choices[{i}]"), render_pair(sc, "", messages, r).await?));
    }
    run(ScoringPlan::new(sc, inputs, false)?, timeout).await?.rewards()
}

/// `sigmoid(a - b)` in f64.
pub fn preference_probability(a: f32, b: f32) -> f64 {
    1.0 / (1.0 + (-(a as f64 - b as f64)).exp())
}

/// Indices by score, highest first; ties keep the lower index first (rewards, and the
/// harmlessness scores of `/v1/harmlessness/*` and the chat extension).
pub fn ranking(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_probabilities_are_consistent() {
        let r = [0.3f32, -1.2, 2.5, 0.3];
        let r64: Vec<f64> = r.iter().map(|&x| f64::from(x)).collect();
        for i in 0..r.len() {
            for j in 0..r.len() {
                let (p, q) = (preference_probability(r[i], r[j]), preference_probability(r[j], r[i]));
                assert!((p + q - 1.0).abs() < 1e-12);
                assert_eq!(p > 0.5, r[i] > r[j]);
            }
        }
        assert_eq!(ranking(&r64), vec![2, 0, 3, 1]);
    }
}
