//! Honesty and behaviour evaluations, the services behind `/v1/self_evaluation` (P(True)),
//! `/v1/pik` (P(IK)) and `/v1/evals/behavior` (model-written evaluations).
//!
//! Every probability here is option scoring: a prompt, then each option's tokens appended, one
//! prefill-only engine request per (prompt, option) with prompt logprobs over the option only,
//! normalised over the options — the same primitive as `/v1/harmlessness/label`. Options of one
//! prompt are submitted next to each other, and prompts that share a question share its KV
//! blocks through the prefix cache.
//!
//! Prompt formats ([`PromptFormat`]): `text` is the papers' raw transcript; `chat` puts the
//! question in a user message through the model's chat template, and any fixed start of the
//! answer ("The proposed answer is:") after the generation prompt. [`default_format`] picks
//! `chat` for a model with a template.

pub mod behavior;
pub mod pik;
pub mod ptrue;

pub use crate::state::PikHead;

use crate::error::ApiError;
use crate::jobs::{self, OptionJob};
use crate::prompt::text_prompt;
use crate::state::{AppState, FeedbackModel};
use hhh_proto::{PromptFormat, PromptTokensDetails, ScoringUsage};
use hhh_text::{ChatTemplate, Tokenizer};

/// `chat` when the model has a chat template, else `text`.
pub fn default_format(template: &Option<ChatTemplate>) -> PromptFormat {
    if template.is_some() {
        PromptFormat::Chat
    } else {
        PromptFormat::Text
    }
}

/// The requested format, or the model's default; `chat` without a template is a 400 naming
/// `format`.
pub fn resolve_format(requested: Option<PromptFormat>, template: &Option<ChatTemplate>) -> Result<PromptFormat, ApiError> {
    match requested {
        Some(PromptFormat::Chat) if template.is_none() => Err(ApiError::invalid("format", "`format` is `chat` but the model has no chat template; use `text`.")),
        Some(f) => Ok(f),
        None => Ok(default_format(template)),
    }
}

/// One prompt as text (returned with `return_prompts`) and as the token ids scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub ids: Vec<u32>,
}

/// A prompt in both formats: `text` is the whole raw prompt; in `chat` format `user` is the
/// user message and `prefix` the start of the assistant's turn after the generation prompt.
pub struct PromptParts<'a> {
    pub text: String,
    pub user: &'a str,
    pub prefix: &'a str,
}

/// Render `parts` in `format`. Text: BOS by the tokenizer's rule, then the text. Chat: the
/// template's rendering of one user message with the generation prompt, then `prefix`
/// tokenized on its own.
pub fn render(tok: &Tokenizer, template: &Option<ChatTemplate>, format: PromptFormat, parts: PromptParts<'_>) -> Result<Rendered, ApiError> {
    match (format, template) {
        (PromptFormat::Text, _) => Ok(Rendered { ids: text_prompt(tok, &parts.text)?, text: parts.text }),
        (PromptFormat::Chat, Some(t)) => {
            let msgs = [hhh_text::ChatMessage::new("user", parts.user)];
            let rendered = t.render(&msgs, true).map_err(|e| ApiError::invalid("format", e.to_string()))?;
            let mut ids = hhh_text::encode_chat(t, tok, &msgs, true).map_err(|e| ApiError::invalid("format", e.to_string()))?;
            ids.extend(tok.encode_as_text(parts.prefix).map_err(|e| ApiError::internal(e.to_string()))?);
            Ok(Rendered { text: rendered + parts.prefix, ids })
        }
        (PromptFormat::Chat, None) => Err(ApiError::invalid("format", "`format` is `chat` but the model has no chat template; use `text`.")),
    }
}

/// The prompt a question is answered from (sampling for P(True), the input of P(IK)): text
/// `Question: {q}\nAnswer:`; chat: the question as the user message.
pub fn answer_prompt(tok: &Tokenizer, template: &Option<ChatTemplate>, format: PromptFormat, question: &str) -> Result<Rendered, ApiError> {
    render(tok, template, format, PromptParts { text: format!("Question: {question}\nAnswer:"), user: question, prefix: "" })
}

/// Score every `options[p]` (token ids) after `prompts[p]` ([`jobs::score_options`]): total
/// logprobs in the same shape. `field` names the input in a too-long error. Adds the tokens to
/// `usage`.
pub async fn score_options(st: &AppState, fm: &FeedbackModel, prompts: &[Rendered], options: &[Vec<Vec<u32>>], field: &str, usage: &mut ScoringUsage) -> Result<Vec<Vec<f64>>, ApiError> {
    let max_len = fm.engine.info().max_model_len;
    let mut jobs = Vec::with_capacity(prompts.len());
    for (i, (p, opts)) in prompts.iter().zip(options).enumerate() {
        for o in opts {
            let n = p.ids.len() + o.len();
            if n > max_len {
                return Err(ApiError::invalid(field, format!("Prompt {i} with its option is {n} tokens long; the limit is {max_len} tokens.")));
            }
            usage.prompt_tokens += n;
        }
        jobs.push(OptionJob { prompt: p.ids.clone(), options: opts.clone() });
    }
    let results = jobs::score_options(&fm.engine, &jobs, st.request_timeout, "option scoring").await?;
    let cached: usize = results.iter().flatten().map(|r| r.1).sum();
    usage.total_tokens = usage.prompt_tokens;
    let d = usage.prompt_tokens_details.get_or_insert(PromptTokensDetails { cached_tokens: 0 });
    d.cached_tokens += cached;
    Ok(results.into_iter().map(|row| row.into_iter().map(|r| r.0).collect()).collect())
}

/// `exp(l_i)` normalised over `lps`.
pub fn softmax(lps: &[f64]) -> Vec<f64> {
    let m = lps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = lps.iter().map(|l| (l - m).exp()).sum();
    lps.iter().map(|l| (l - m).exp() / z).collect()
}

/// Token ids of an option string, tokenized on its own; empty is a 400 naming `field`.
pub fn option_ids(tok: &Tokenizer, option: &str, field: &str) -> Result<Vec<u32>, ApiError> {
    let ids = tok.encode_as_text(option).map_err(|e| ApiError::internal(e.to_string()))?;
    if ids.is_empty() {
        return Err(ApiError::invalid(field, format!("`{field}` must not be empty.")));
    }
    Ok(ids)
}

/// A non-empty string no longer than `max` characters, or a 400 naming `field`.
pub fn check_text(s: &str, field: &str, max: usize) -> Result<(), ApiError> {
    if s.trim().is_empty() {
        return Err(ApiError::invalid(field, format!("`{field}` must not be empty.")));
    }
    let n = s.chars().count();
    if n > max {
        return Err(ApiError::invalid(field, format!("`{field}` is {n} characters long; the limit is {max}.")));
    }
    Ok(())
}

/// Longest question, answer or option, characters.
pub const MAX_TEXT_CHARS: usize = 8192;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_normalises() {
        let p = softmax(&[-1.0, -2.0, -800.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[0] > p[1] && p[2] < 1e-100);
    }

    #[test]
    fn text_checks_name_the_field() {
        assert_eq!(check_text(" ", "question", 10).err().and_then(|e| e.param).as_deref(), Some("question"));
        assert_eq!(check_text("abcdefghijk", "answers[1]", 10).err().and_then(|e| e.param).as_deref(), Some("answers[1]"));
        assert!(check_text("abc", "question", 10).is_ok());
    }
}
