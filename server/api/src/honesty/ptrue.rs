//! P(True) self-evaluation (Kadavath et al. 2022, section 3): the model judges proposed answers
//! to a question, optionally after seeing several of its own samples ("brainstormed ideas").
//!
//! Prompt without brainstorming (text format; in chat format the lines up to ` (B) False` are
//! the user message and the last line starts the assistant's turn):
//!
//! ```text
//! Question: {question}
//! Proposed Answer: {answer}
//! Is the proposed answer:
//!  (A) True
//!  (B) False
//! The proposed answer is:
//! ```
//!
//! With `brainstorm: k`, the paper's variant: after the question, `Here are some brainstormed
//! ideas: ` and the k samples one per line, then `Possible Answer:` / `Is the possible answer:` /
//! `The possible answer is:`. P(True) is `P(" (A)")` normalised over " (A)" and " (B)".
//! Sampled answers are generated from [`super::answer_prompt`] (temperature 1 by default, one
//! line: they end at the first newline), with seeds `seed, seed + 1, …`.

use super::{answer_prompt, option_ids, render, score_options, softmax, PromptParts, Rendered};
use crate::error::ApiError;
use crate::jobs::{run_waves, until_stop};
use crate::respond::{new_id, now};
use crate::state::{AppState, FeedbackModel};
use hhh_engine::SamplingParams;
use hhh_proto::{PromptFormat, ScoringUsage, SelfEvaluation, SelfEvaluationResponse};

/// The two options, True first.
pub const OPTIONS: [&str; 2] = [" (A)", " (B)"];
/// Most answers judged per call, and most brainstormed samples.
pub const MAX_ANSWERS: usize = 16;
pub const MAX_BRAINSTORM: usize = 16;
/// Longest sampled answer, tokens.
pub const MAX_SAMPLE_TOKENS: usize = 256;

/// A validated request.
pub struct Plan {
    pub fm: FeedbackModel,
    pub format: PromptFormat,
    pub question: String,
    /// Given answers; `None` when `n` answers are sampled.
    pub answers: Option<Vec<String>>,
    pub n: usize,
    pub brainstorm: usize,
    pub temperature: f32,
    pub max_tokens: usize,
    pub seed: u64,
    pub return_prompts: bool,
}

/// The judging prompt's parts for one answer after `ideas` (empty: no brainstorming).
pub fn judge_parts<'a>(question: &str, ideas: &[String], answer: &str, user: &'a mut String) -> PromptParts<'a> {
    let (word, prefix) = if ideas.is_empty() { ("proposed", "The proposed answer is:") } else { ("possible", "The possible answer is:") };
    let cap = if ideas.is_empty() { "Proposed" } else { "Possible" };
    let ideas_block = if ideas.is_empty() { String::new() } else { format!("Here are some brainstormed ideas: {}\n", ideas.join("\n")) };
    *user = format!("Question: {question}\n{ideas_block}{cap} Answer: {answer}\nIs the {word} answer:\n (A) True\n (B) False");
    PromptParts { text: format!("{user}\n{prefix}"), user: user.as_str(), prefix }
}

/// Sample `count` one-line answers to the question (seeds `seed..seed + count`).
async fn sample(st: &AppState, plan: &Plan, count: usize, usage: &mut ScoringUsage) -> Result<Vec<String>, ApiError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let fm = &plan.fm;
    let p = answer_prompt(&fm.tokenizer, &fm.template, plan.format, &plan.question)?;
    let max_len = fm.engine.info().max_model_len;
    if p.ids.len() + plan.max_tokens > max_len {
        return Err(ApiError::invalid("question", format!("The question's prompt is {} tokens long; with `max_tokens` {} it exceeds the context of {max_len} tokens.", p.ids.len(), plan.max_tokens)));
    }
    let jobs: Vec<_> =
        (0..count).map(|i| (p.ids.clone(), SamplingParams { max_tokens: plan.max_tokens, temperature: plan.temperature, seed: plan.seed.wrapping_add(i as u64), ..Default::default() })).collect();
    usage.prompt_tokens += p.ids.len() * count;
    let tok = fm.tokenizer.clone();
    let out = run_waves(&fm.engine, jobs, st.request_timeout, |h| until_stop(h, tok.clone(), vec!["\n".to_string()], "answer sampling")).await?;
    usage.total_tokens += out.iter().map(|g| g.completion_tokens).sum::<usize>();
    Ok(out.into_iter().map(|g| g.text.trim().to_string()).collect())
}

/// Sample what is needed, judge every answer, assemble the response.
pub async fn run(st: &AppState, plan: Plan) -> Result<SelfEvaluationResponse, ApiError> {
    let mut sample_usage = ScoringUsage::default();
    let to_sample = match &plan.answers {
        Some(_) => plan.brainstorm,
        None => plan.n.max(plan.brainstorm),
    };
    let samples = sample(st, &plan, to_sample, &mut sample_usage).await?;
    let (judged, sampled): (Vec<String>, bool) = match &plan.answers {
        Some(a) => (a.clone(), false),
        None => (samples[..plan.n].to_vec(), true),
    };
    let ideas = samples[..plan.brainstorm].to_vec();
    let fm = &plan.fm;
    let prompts: Vec<Rendered> = judged
        .iter()
        .map(|a| {
            let mut user = String::new();
            render(&fm.tokenizer, &fm.template, plan.format, judge_parts(&plan.question, &ideas, a, &mut user))
        })
        .collect::<Result<_, _>>()?;
    let opts: Vec<Vec<u32>> = OPTIONS.iter().map(|o| option_ids(&fm.tokenizer, o, "options")).collect::<Result<_, _>>()?;
    let mut usage = ScoringUsage::default();
    let lps = score_options(st, fm, &prompts, &vec![opts; prompts.len()], if plan.answers.is_some() { "answers" } else { "question" }, &mut usage).await?;
    usage.prompt_tokens += sample_usage.prompt_tokens;
    usage.total_tokens = usage.prompt_tokens + sample_usage.total_tokens;
    let data = judged
        .iter()
        .zip(&lps)
        .enumerate()
        .map(|(index, (answer, lp))| SelfEvaluation { index, answer: answer.clone(), p_true: softmax(lp)[0], logprob_true: lp[0], logprob_false: lp[1], sampled })
        .collect();
    Ok(SelfEvaluationResponse {
        id: new_id("seval"),
        object: "self_evaluation".into(),
        created: now(),
        model: fm.name.clone(),
        format: plan.format,
        data,
        samples,
        brainstorm: ideas,
        prompts: plan.return_prompts.then(|| prompts.into_iter().map(|p| p.text).collect()),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging_prompts_follow_the_paper() {
        let mut u = String::new();
        let p = judge_parts("Who wrote Hamlet?", &[], "Shakespeare", &mut u);
        assert_eq!(p.text, "Question: Who wrote Hamlet?\nProposed Answer: Shakespeare\nIs the proposed answer:\n (A) True\n (B) False\nThe proposed answer is:");
        assert_eq!(p.prefix, "The proposed answer is:");
        let mut u = String::new();
        let ideas = vec!["Marlowe".to_string(), "Shakespeare".to_string()];
        let p = judge_parts("Who wrote Hamlet?", &ideas, "Marlowe", &mut u);
        assert_eq!(p.user, "Question: Who wrote Hamlet?\nHere are some brainstormed ideas: Marlowe\nShakespeare\nPossible Answer: Marlowe\nIs the possible answer:\n (A) True\n (B) False");
        assert!(p.text.ends_with("(B) False\nThe possible answer is:"));
    }
}
