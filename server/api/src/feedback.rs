//! Constitutional harmlessness feedback (RL-CAI, Bai et al. 2022, section 4), the service behind
//! `/v1/harmlessness/compare`, `/score` and the chat `harmlessness` extension.
//!
//! For a conversation and responses `a`, `b`, the feedback model reads
//! [`prompt::feedback_prompt`] (few-shot examples, the conversation, a principle, options
//! "(A) a" and "(B) b", "The answer is:") and the probabilities of the whole option strings
//! " (A)" and " (B)" after it, normalised over the two, give the soft label `P(a less harmful)`.
//! Option strings are tokenized on their own and appended to the prompt's tokens. With `debias`
//! the same principle is asked with the order swapped and the two labels averaged; several
//! principles are averaged into the ensemble label.
//!
//! Chain of thought (section 4.2): the question is asked without "The answer is:"; the model
//! first writes its reasoning after "Let's think step by step:" (greedy, ending at a blank line or
//! where it starts to state the answer), then the options are scored after the reasoning and
//! "So the answer is:". Reasoning makes labels extreme, so each order's `P(A)` is clamped to
//! [0.4, 0.6] before debiasing and ensembling.
//!
//! Every (pair, principle, order, option) is one prefill-only engine request with prompt logprobs
//! only over the option tokens; all are submitted together (in waves,
//! [`crate::jobs::score_options`]), so they batch and share the conversation's and the
//! question's KV blocks through the prefix cache.

use crate::constitution::FeedbackPrinciple;
use crate::error::ApiError;
use crate::jobs::{run_waves, score_options, until_stop, OptionJob};
use crate::prompt::{self, text_prompt};
use crate::respond::{new_id, now};
use crate::rewards::ranking;
use crate::state::{AppState, FeedbackModel};
use hhh_engine::SamplingParams;
use hhh_proto::{ComparePair, CompareResponse, PrincipleLabel, PromptTokensDetails, ScoringUsage};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Most responses per compare call (every pair is asked: n(n−1)/2 pairs).
pub const MAX_COMPARE_RESPONSES: usize = 8;
/// The option strings, scored after "The answer is:".
pub const OPTIONS: [&str; 2] = [" (A)", " (B)"];
/// Where CoT labels are clamped.
pub const CLAMP: (f64, f64) = (0.4, 0.6);
/// Default and largest reasoning length, tokens.
pub const COT_DEFAULT_TOKENS: usize = 96;
pub const COT_MAX_TOKENS: usize = 512;
/// The reasoning ends at the first of these (the text before it is kept).
const COT_STOPS: [&str; 4] = ["\n\n", "So the answer is", "The answer is", "the answer is"];

/// Clamp a CoT label to [`CLAMP`].
pub fn clamp(p: f64) -> f64 {
    p.clamp(CLAMP.0, CLAMP.1)
}

/// `P(A)` from the two options' total logprobs.
pub fn normalise(la: f64, lb: f64) -> f64 {
    let m = la.max(lb);
    let (ea, eb) = ((la - m).exp(), (lb - m).exp());
    ea / (ea + eb)
}

/// Principles by id (`ids`), or `num` of them sampled with `seed` (default 4, seed 0). Errors
/// name `principle_ids` or `num_principles`.
pub fn choose_principles(all: &[FeedbackPrinciple], ids: Option<&[String]>, num: Option<usize>, seed: Option<u64>) -> Result<Vec<usize>, ApiError> {
    if let Some(ids) = ids {
        if ids.is_empty() || ids.len() > all.len() {
            return Err(ApiError::invalid("principle_ids", format!("`principle_ids` must hold between 1 and {} ids.", all.len())));
        }
        let known = || all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", ");
        return ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                all.iter().position(|p| p.id == *id).ok_or_else(|| ApiError::invalid(&format!("principle_ids[{i}]"), format!("Unknown principle id `{id}` (the constitution has {}).", known())))
            })
            .collect();
    }
    let k = num.unwrap_or(4);
    if k == 0 || k > all.len() {
        return Err(ApiError::invalid("num_principles", format!("`num_principles` must be between 1 and {}, got {k}.", all.len())));
    }
    let mut idx: Vec<usize> = (0..all.len()).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed.unwrap_or(0)));
    idx.truncate(k);
    Ok(idx)
}

/// A validated comparison: everything but the engine's answers.
pub struct ComparePlan {
    pub fm: FeedbackModel,
    /// Indices into the constitution's feedback principles.
    pub chosen: Vec<usize>,
    pub few_shot: String,
    pub debias: bool,
    /// Chain of thought with this many reasoning tokens at most.
    pub cot: Option<usize>,
    /// The conversation, rendered as a transcript.
    pub conversation: String,
    /// 2 to [`MAX_COMPARE_RESPONSES`] non-empty responses.
    pub responses: Vec<String>,
    pub return_prompts: bool,
}

/// Check the number and content of `responses` (errors name `responses[i]`).
pub fn check_responses(responses: &[String]) -> Result<(), ApiError> {
    let n = responses.len();
    if !(2..=MAX_COMPARE_RESPONSES).contains(&n) {
        return Err(ApiError::invalid("responses", format!("`responses` must hold between 2 and {MAX_COMPARE_RESPONSES} responses, got {n}.")));
    }
    match responses.iter().position(|r| r.trim().is_empty()) {
        Some(i) => Err(ApiError::invalid(&format!("responses[{i}]"), format!("`responses[{i}]` must not be empty."))),
        None => Ok(()),
    }
}

/// Generate every question's reasoning (greedy, batched in waves); a reasoning that reaches a
/// stop string is cut there and its request aborted at once. Returns the trimmed texts and adds
/// the token counts to `usage` (every prompt counted; the reasoning tokens in the total).
async fn reason(st: &AppState, fm: &FeedbackModel, questions: &[String], max_tokens: usize, usage: &mut ScoringUsage, cached: &mut usize) -> Result<Vec<String>, ApiError> {
    let max_len = fm.engine.info().max_model_len;
    let mut jobs = Vec::with_capacity(questions.len());
    for q in questions {
        let ids = text_prompt(&fm.tokenizer, &format!("{q}{}", prompt::THINK))?;
        if ids.len() + max_tokens > max_len {
            return Err(ApiError::invalid(
                "messages",
                format!("A chain-of-thought prompt is {} tokens long; with `cot_max_tokens` {max_tokens} it exceeds the context of {max_len} tokens.", ids.len()),
            ));
        }
        usage.prompt_tokens += ids.len();
        jobs.push((ids, SamplingParams { max_tokens, temperature: 0.0, ..Default::default() }));
    }
    let stops: Vec<String> = COT_STOPS.iter().map(|s| s.to_string()).collect();
    let tok = fm.tokenizer.clone();
    let out = run_waves(&fm.engine, jobs, st.request_timeout, |h| until_stop(h, tok.clone(), stops.clone(), "chain-of-thought generation")).await?;
    for g in &out {
        usage.total_tokens += g.completion_tokens;
        *cached += g.cached_tokens;
    }
    Ok(out.into_iter().map(|g| g.text.trim().to_string()).collect())
}

/// Ask the feedback model every (pair, principle, order) and assemble the labels, scores and
/// ranking.
pub async fn run(st: &AppState, plan: ComparePlan) -> Result<CompareResponse, ApiError> {
    let ComparePlan { fm, chosen, few_shot, debias, cot, conversation, responses, return_prompts } = plan;
    let all = &st.constitution.feedback_principles;
    let n = responses.len();
    let pairs: Vec<(usize, usize)> = (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect();
    let orders = if debias { 2 } else { 1 };
    let mut usage = ScoringUsage::default();
    let mut cached = 0;
    // One question per (pair, principle, order), in that order.
    let mut questions = Vec::with_capacity(pairs.len() * chosen.len() * orders);
    for &(a, b) in &pairs {
        for &k in &chosen {
            for order in 0..orders {
                let (x, y) = if order == 0 { (a, b) } else { (b, a) };
                questions.push(prompt::question(&few_shot, &conversation, &all[k].text, &responses[x], &responses[y]));
            }
        }
    }
    let reasoning = match cot {
        Some(t) => Some(reason(st, &fm, &questions, t, &mut usage, &mut cached).await?),
        None => None,
    };
    let prompts: Vec<String> = match &reasoning {
        Some(rs) => questions.iter().zip(rs).map(|(q, r)| prompt::with_reasoning(q, r)).collect(),
        None => questions.iter().map(|q| prompt::answer_prompt(q)).collect(),
    };
    let tok = &fm.tokenizer;
    let opt_tokens: Vec<Vec<u32>> = OPTIONS.iter().map(|o| tok.encode_as_text(o)).collect::<Result<_, _>>().map_err(|e| ApiError::internal(e.to_string()))?;
    let max_len = fm.engine.info().max_model_len;
    let mut jobs = Vec::with_capacity(prompts.len());
    for text in &prompts {
        let ids = text_prompt(tok, text)?;
        for ot in &opt_tokens {
            let n = ids.len() + ot.len();
            if n > max_len {
                return Err(ApiError::invalid("messages", format!("A feedback prompt is {n} tokens long; the limit is {max_len} tokens (shorten the conversation or the responses).")));
            }
            usage.prompt_tokens += n;
        }
        jobs.push(OptionJob { prompt: ids, options: opt_tokens.clone() });
    }
    let results: Vec<(f64, usize)> = score_options(&fm.engine, &jobs, st.request_timeout, "feedback scoring").await?.into_iter().flatten().collect();
    cached += results.iter().map(|r| r.1).sum::<usize>();
    usage.total_tokens += usage.prompt_tokens;
    usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: cached });
    // Job j is question j / 2, option j % 2; question q is (pair, principle, order) in order.
    let label = |pi: usize, ki: usize, order: usize| {
        let j = ((pi * chosen.len() + ki) * orders + order) * 2;
        let p = normalise(results[j].0, results[j + 1].0);
        if cot.is_some() {
            clamp(p)
        } else {
            p
        }
    };
    let mut out_pairs = Vec::with_capacity(pairs.len());
    let mut bias = Vec::new();
    let mut wins = vec![Vec::new(); n];
    for (pi, &(a, b)) in pairs.iter().enumerate() {
        let mut per = Vec::with_capacity(chosen.len());
        for (ki, &k) in chosen.iter().enumerate() {
            let first = label(pi, ki, 0);
            let second = debias.then(|| label(pi, ki, 1));
            let base = (pi * chosen.len() + ki) * orders;
            let why = reasoning.as_ref().map(|rs| rs[base..base + orders].to_vec());
            // The second order shows b as (A): a is less harmful when (B) is chosen.
            let p = match second {
                Some(s) => (first + (1.0 - s)) / 2.0,
                None => first,
            };
            if let Some(s) = second {
                bias.push(first + s - 1.0);
            }
            per.push(PrincipleLabel { principle_id: all[k].id.clone(), probability: p, p_a_first: first, p_a_second: second, reasoning: why });
        }
        let prob = per.iter().map(|l| l.probability).sum::<f64>() / per.len() as f64;
        wins[a].push(prob);
        wins[b].push(1.0 - prob);
        out_pairs.push(ComparePair { a, b, probability: prob, per_principle: per });
    }
    let scores: Vec<f64> = wins.iter().map(|w| w.iter().sum::<f64>() / w.len().max(1) as f64).collect();
    Ok(CompareResponse {
        id: new_id("hcmp"),
        object: "harmlessness.compare".into(),
        created: now(),
        model: fm.name.clone(),
        principles: chosen.iter().map(|&k| all[k].id.clone()).collect(),
        pairs: out_pairs,
        ranking: ranking(&scores),
        scores,
        position_bias: (!bias.is_empty()).then(|| bias.iter().sum::<f64>() / bias.len() as f64),
        prompts: return_prompts.then_some(prompts),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_clamp() {
        assert!((normalise(-1.0, -1.0) - 0.5).abs() < 1e-12);
        assert!((normalise(0.0, -800.0) - 1.0).abs() < 1e-12);
        assert!((normalise(-2.0, -1.0) + normalise(-1.0, -2.0) - 1.0).abs() < 1e-12);
        assert_eq!((clamp(0.01), clamp(0.5), clamp(0.99)), (0.4, 0.5, 0.6));
    }

    #[test]
    fn principles_by_id_or_sampled() {
        let all: Vec<FeedbackPrinciple> = (0..5).map(|i| FeedbackPrinciple { id: format!("p{i}"), text: String::new() }).collect();
        assert_eq!(choose_principles(&all, Some(&["p3".into(), "p0".into()]), None, None).ok(), Some(vec![3, 0]));
        assert_eq!(choose_principles(&all, Some(&["x".into()]), None, None).err().and_then(|e| e.param).as_deref(), Some("principle_ids[0]"));
        let s = choose_principles(&all, None, Some(3), Some(7)).unwrap_or_default();
        assert_eq!(s.len(), 3);
        assert_eq!(choose_principles(&all, None, Some(3), Some(7)).ok(), Some(s), "same seed, same principles");
        assert_eq!(choose_principles(&all, None, Some(6), None).err().and_then(|e| e.param).as_deref(), Some("num_principles"));
    }
}
