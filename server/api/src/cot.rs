//! Chain-of-thought constitutional feedback (Bai et al. 2022, section 4.2).
//!
//! The multiple-choice question is asked without "The answer is:"; the feedback model first
//! writes its reasoning after "Let's think step by step:" (greedy, at most `cot_max_tokens`
//! tokens, ending at a blank line or where it starts to state the answer), then the reasoning and
//! "So the answer is:" are appended and the option strings scored as in plain feedback:
//!
//! ```text
//! …Options:
//! (A) [response]
//! (B) [response]
//! Let's think step by step: [generated reasoning]
//! So the answer is:
//! ```
//!
//! Reasoning makes the label probabilities extreme (near 0 or 1), so, as in the paper, each
//! order's `P(A)` is clamped to [0.4, 0.6] before debiasing and ensembling.

use crate::error::ApiError;
use hhh_engine::{EngineClient, EngineEvent, SamplingParams};
use hhh_text::Tokenizer;
use std::sync::Arc;

/// Appended to the question before the reasoning is generated.
pub const THINK: &str = "\nLet's think step by step:";
/// Appended after the reasoning; the options are scored after it.
pub const ANSWER: &str = "\nSo the answer is:";
/// Where CoT labels are clamped.
pub const CLAMP: (f64, f64) = (0.4, 0.6);
/// Default and largest reasoning length, tokens.
pub const DEFAULT_TOKENS: usize = 96;
pub const MAX_TOKENS: usize = 512;
/// The reasoning ends at the first of these (the text before it is kept).
const STOPS: [&str; 4] = ["\n\n", "So the answer is", "The answer is", "the answer is"];

/// Clamp a CoT label to [`CLAMP`].
pub fn clamp(p: f64) -> f64 {
    p.clamp(CLAMP.0, CLAMP.1)
}

/// `text` cut at the first stop string, trimmed; `None` while no stop has appeared.
fn cut(text: &str) -> Option<String> {
    STOPS.iter().filter_map(|s| text.find(s)).min().map(|i| text[..i].trim().to_string())
}

/// One generated reasoning and its token counts.
#[derive(Debug, Clone)]
pub struct Reasoning {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

/// Generate the reasoning of every `question` (greedy, `max_tokens` at most), batched through
/// the engine in waves like scoring requests. A reasoning that reaches a stop string is cut there
/// and its request dropped (aborted) at once.
pub async fn reason(engine: &EngineClient, tok: &Arc<Tokenizer>, questions: &[String], max_tokens: usize, timeout: Option<std::time::Duration>) -> Result<Vec<Reasoning>, ApiError> {
    let max_len = engine.info().max_model_len;
    let mut jobs = Vec::with_capacity(questions.len());
    for q in questions {
        let mut ids: Vec<u32> = tok.bos_for_text().into_iter().collect();
        ids.extend(tok.encode_as_text(&format!("{q}{THINK}")).map_err(|e| ApiError::internal(e.to_string()))?);
        if ids.len() + max_tokens > max_len {
            return Err(ApiError::invalid(
                "messages",
                format!("A chain-of-thought prompt is {} tokens long; with `cot_max_tokens` {max_tokens} it exceeds the context of {max_len} tokens.", ids.len()),
            ));
        }
        jobs.push((ids, SamplingParams { max_tokens, temperature: 0.0, ..Default::default() }));
    }
    crate::scoring::run_waves(engine, jobs, timeout, |mut h| {
        let tok = tok.clone();
        async move {
            let mut ids = Vec::new();
            let mut text = String::new();
            while let Some(ev) = h.recv().await {
                match ev {
                    EngineEvent::Token(t) => {
                        ids.push(t.token);
                        text = tok.decode(&ids, true).map_err(|e| ApiError::internal(e.to_string()))?;
                        if let Some(done) = cut(&text) {
                            // Dropping the handle aborts the rest of the generation.
                            return Ok(Reasoning { text: done, prompt_tokens: 0, completion_tokens: ids.len(), cached_tokens: 0 });
                        }
                    }
                    EngineEvent::Finished { error: Some(e), .. } => return Err(ApiError::internal(format!("chain-of-thought generation failed: {e}"))),
                    EngineEvent::Finished { prompt_tokens, cached_tokens, .. } => {
                        return Ok(Reasoning { text: text.trim().to_string(), prompt_tokens, completion_tokens: ids.len(), cached_tokens });
                    }
                    _ => {}
                }
            }
            Err(ApiError::unavailable("the engine stopped"))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_cuts() {
        assert_eq!((clamp(0.01), clamp(0.5), clamp(0.99)), (0.4, 0.5, 0.6));
        assert_eq!(cut("(A) is gentler.\n\nHuman: x").as_deref(), Some("(A) is gentler."));
        assert_eq!(cut(" B insults them. So the answer is (B)").as_deref(), Some("B insults them."));
        assert_eq!(cut("still thinking"), None);
    }
}
