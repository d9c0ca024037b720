//! One choice's life after submission: engine events → detokenized text deltas, stop strings,
//! logprobs, and a final event. The stream owns the [`RequestHandle`]: dropping the stream
//! (client gone, or a stop string hit) aborts the request in the engine and frees its blocks.

use futures::Stream;
use hhh_engine::{EngineEvent, RequestHandle, TokenLogprob};
use hhh_text::{IncrementalDetokenizer, StopMatcher, Tokenizer};
use std::sync::Arc;

/// What a choice produces.
#[derive(Debug, Clone)]
pub enum ChoiceEvent {
    /// Logprobs of prompt tokens (for `echo`), starting at prompt position `start`.
    PromptLogprobs { index: usize, start: usize, logprobs: Vec<TokenLogprob> },
    /// New text (may be empty while a possible stop string is held back) and the token behind it.
    Delta { index: usize, text: String, token: Option<TokenLogprob> },
    /// The choice is over.
    Done { index: usize, finish_reason: String, usage: ChoiceUsage, error: Option<String> },
}

/// Token counts of one choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChoiceUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

/// Drive one engine request to completion as a stream of [`ChoiceEvent`]s.
pub fn choice_stream(index: usize, mut handle: RequestHandle, tok: Arc<Tokenizer>, stops: Vec<String>) -> impl Stream<Item = ChoiceEvent> + Send {
    async_stream::stream! {
        let mut detok = IncrementalDetokenizer::new(true);
        let mut stop = StopMatcher::new(stops);
        let mut completion_tokens = 0;
        loop {
            let Some(ev) = handle.recv().await else {
                yield ChoiceEvent::Done { index, finish_reason: "error".into(), usage: ChoiceUsage::default(), error: Some("engine stopped".into()) };
                break;
            };
            match ev {
                EngineEvent::PromptLogprobs { start, logprobs } => yield ChoiceEvent::PromptLogprobs { index, start, logprobs },
                EngineEvent::Token(t) => {
                    completion_tokens += 1;
                    let delta = detok.push(&tok, t.token);
                    let (text, stopped) = stop.push(&delta);
                    yield ChoiceEvent::Delta { index, text, token: Some(t) };
                    if stopped {
                        // The engine does not know about stop strings: finishing here drops the
                        // handle, which aborts the request and frees its blocks.
                        // Handlers take prompt_tokens from their own prompt length.
                        yield ChoiceEvent::Done { index, finish_reason: "stop".into(), usage: ChoiceUsage { prompt_tokens: 0, completion_tokens, cached_tokens: 0 }, error: None };
                        break;
                    }
                }
                EngineEvent::Finished { reason, prompt_tokens, completion_tokens, cached_tokens, error } => {
                    let rest = detok.flush(&tok);
                    let (mut text, _) = stop.push(&rest);
                    if !stop.is_stopped() {
                        text.push_str(&stop.flush());
                    }
                    if !text.is_empty() {
                        yield ChoiceEvent::Delta { index, text, token: None };
                    }
                    let usage = ChoiceUsage { prompt_tokens, completion_tokens, cached_tokens };
                    yield ChoiceEvent::Done { index, finish_reason: reason.as_str().into(), usage, error };
                    break;
                }
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh response id with the given prefix.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}
