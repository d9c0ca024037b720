//! P(IK), "I know" (Kadavath et al. 2022, section 5): the probability that the model answers a
//! question correctly, from a logistic head on the final hidden state (after the last norm) of
//! the question's answer prompt ([`super::answer_prompt`], in the format the head was trained
//! with). The head file is a reward-head file (`hhh_model::reward_head`) with one label, fitted
//! by `hhh-server train-pik-head`; its `metadata.prompt_format` names the format.

use super::answer_prompt;
use crate::error::ApiError;
use crate::jobs::{pooled, run_waves};
use crate::respond::{new_id, now};
use crate::state::{AppState, FeedbackModel, PikHead};
use hhh_engine::{PoolingParams, SamplingParams};
use hhh_proto::{PikData, PikResponse, PromptTokensDetails, ScoringUsage};

/// Most questions per call.
pub const MAX_QUESTIONS: usize = 256;

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Score every question.
pub async fn run(st: &AppState, fm: &FeedbackModel, head: &PikHead, questions: &[String], return_prompts: bool) -> Result<PikResponse, ApiError> {
    let max_len = fm.engine.info().max_model_len;
    let mut usage = ScoringUsage::default();
    let mut jobs = Vec::with_capacity(questions.len());
    let mut texts = Vec::with_capacity(questions.len());
    for (i, q) in questions.iter().enumerate() {
        let p = answer_prompt(&fm.tokenizer, &fm.template, head.format, q)?;
        if p.ids.len() > max_len {
            return Err(ApiError::invalid(&format!("input[{i}]"), format!("`input[{i}]` is {} tokens long as a prompt; the limit is {max_len} tokens.", p.ids.len())));
        }
        usage.prompt_tokens += p.ids.len();
        texts.push(p.text);
        jobs.push((p.ids, SamplingParams { max_tokens: 0, pooling: Some(PoolingParams { return_hidden: true }), ..Default::default() }));
    }
    let out = run_waves(&fm.engine, jobs, st.request_timeout, pooled).await?;
    let mut data = Vec::with_capacity(out.len());
    let mut cached = 0;
    for (index, (p, c)) in out.into_iter().enumerate() {
        cached += c;
        let h = p.hidden.ok_or_else(|| ApiError::internal("the engine returned no hidden state"))?;
        if h.len() != head.weight.len() {
            return Err(ApiError::internal(format!("the P(IK) head has {} weights but the model's hidden size is {}", head.weight.len(), h.len())));
        }
        let logit = head.logit(&h);
        data.push(PikData { index, p_ik: sigmoid(logit), logit });
    }
    usage.total_tokens = usage.prompt_tokens;
    usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: cached });
    Ok(PikResponse { id: new_id("pik"), object: "pik".into(), created: now(), model: fm.name.clone(), format: head.format, data, prompts: return_prompts.then_some(texts), usage })
}
