//! One choice's life after submission: engine events → detokenized text deltas, stop strings,
//! logprobs, and a final event. The stream owns the [`RequestHandle`]: dropping the stream
//! (client gone, or a stop string hit) aborts the request in the engine and frees its blocks.

use crate::error::ApiError;
use crate::middleware::RequestCtx;
use crate::state::AppState;
use futures::Stream;
use hhh_engine::{EngineEvent, FinishReason, RequestHandle, SamplingParams, TokenLogprob};
use hhh_metrics::Metrics;
use hhh_text::{IncrementalDetokenizer, StopMatcher, Tokenizer};
use std::sync::Arc;
use std::time::Instant;

/// What a choice produces.
#[derive(Debug, Clone)]
pub enum ChoiceEvent {
    /// Logprobs of prompt tokens (for `echo`), starting at prompt position `start`.
    PromptLogprobs { index: usize, start: usize, logprobs: Vec<TokenLogprob> },
    /// New text (may be empty while a possible stop string is held back) and the token behind it.
    Delta { index: usize, text: String, token: Option<TokenLogprob> },
    /// The choice is over.
    Done { index: usize, finish_reason: String, usage: ChoiceUsage, error: Option<ApiError> },
}

/// Token counts of one choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChoiceUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
    /// The weight version the choice was generated with (`system_fingerprint`).
    pub weight_version: u64,
}

/// Submit one choice to the engine (429 when the admission queue is full) and return its
/// event stream, instrumented with the client-side metrics.
pub fn submit_choice(
    st: &AppState,
    ctx: &Arc<RequestCtx>,
    index: usize,
    prompt: Vec<u32>,
    params: SamplingParams,
    stops: Vec<String>,
) -> Result<impl Stream<Item = ChoiceEvent> + Send + 'static, ApiError> {
    let prompt_len = prompt.len();
    let handle = super::submit(&st.engine, prompt, params)?;
    let obs = Observer {
        metrics: st.metrics.clone(),
        ctx: ctx.clone(),
        prompt_len,
        deadline: st.request_timeout.map(|t| (ctx.arrival + t, t.as_secs_f64())),
        last_token: None,
        done: false,
        latency: super::current_priority() == hhh_engine::Priority::Interactive,
    };
    Ok(choice_stream(index, handle, st.tokenizer.clone(), stops, obs, st.engine.clone()))
}

/// Client-side timings of one choice. Dropped before the end (client gone) it counts an abort.
struct Observer {
    metrics: Arc<Metrics>,
    ctx: Arc<RequestCtx>,
    prompt_len: usize,
    /// Instant and its length in seconds (`--request-timeout`).
    deadline: Option<(Instant, f64)>,
    last_token: Option<Instant>,
    done: bool,
    /// Record the latency histograms (TTFT, ITL, e2e): interactive requests only, so that batch
    /// lines do not move the latency a client sees (and the alerts on it).
    latency: bool,
}

impl Observer {
    fn token(&mut self) {
        let now = Instant::now();
        match self.last_token {
            None => {
                let ttft = now.duration_since(self.ctx.arrival).as_secs_f64();
                if self.latency {
                    self.metrics.time_to_first_token.observe(ttft);
                }
                self.ctx.note(|f| {
                    f.ttft_s.get_or_insert(ttft);
                });
            }
            Some(t) if self.latency => self.metrics.inter_token_latency.observe(now.duration_since(t).as_secs_f64()),
            Some(_) => {}
        }
        self.last_token = Some(now);
    }

    fn finish(&mut self, reason: &str, completion_tokens: usize) {
        self.done = true;
        let m = &self.metrics;
        m.finished(reason);
        if self.latency {
            m.e2e_latency.observe(self.ctx.arrival.elapsed().as_secs_f64());
        }
        m.prompt_length.observe(self.prompt_len as f64);
        m.generation_length.observe(completion_tokens as f64);
        let (p, r) = (self.prompt_len, reason.to_string());
        self.ctx.note(|f| {
            f.prompt_tokens += p;
            f.completion_tokens += completion_tokens;
            f.finish_reason = Some(r);
        });
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.finished("abort");
        }
    }
}

/// The error a finished-with-error engine request maps to.
fn engine_error(reason: FinishReason, msg: String) -> ApiError {
    match reason {
        // Aborted by the engine itself: the server is shutting down.
        FinishReason::Abort => ApiError::unavailable(format!("request aborted: {msg}")),
        _ => ApiError::internal(format!("generation failed: {msg}")),
    }
}

/// Drive one engine request to completion as a stream of [`ChoiceEvent`]s.
fn choice_stream(index: usize, mut handle: RequestHandle, tok: Arc<Tokenizer>, stops: Vec<String>, mut obs: Observer, engine: hhh_engine::EngineClient) -> impl Stream<Item = ChoiceEvent> + Send {
    async_stream::stream! {
        let mut detok = IncrementalDetokenizer::new(true);
        let mut stop = StopMatcher::new(stops);
        let mut completion_tokens = 0;
        loop {
            let next = match obs.deadline {
                Some((at, secs)) => match tokio::time::timeout_at(at.into(), handle.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        // Dropping the handle (below, with the stream) aborts the request.
                        obs.finish("abort", completion_tokens);
                        let usage = ChoiceUsage { completion_tokens, weight_version: engine.weight_version(), ..Default::default() };
                        yield ChoiceEvent::Done { index, finish_reason: "abort".into(), usage, error: Some(ApiError::timeout(secs)) };
                        break;
                    }
                },
                None => handle.recv().await,
            };
            let Some(ev) = next else {
                obs.finish("error", completion_tokens);
                yield ChoiceEvent::Done { index, finish_reason: "error".into(), usage: ChoiceUsage::default(), error: Some(ApiError::unavailable("the engine has stopped")) };
                break;
            };
            match ev {
                EngineEvent::PromptLogprobs { start, logprobs } => yield ChoiceEvent::PromptLogprobs { index, start, logprobs },
                // Generation requests never pool.
                EngineEvent::Pooled(_) => {}
                EngineEvent::Token(t) => {
                    completion_tokens += 1;
                    obs.token();
                    let delta = detok.push(&tok, t.token);
                    let (text, stopped) = stop.push(&delta);
                    yield ChoiceEvent::Delta { index, text, token: Some(t) };
                    if stopped {
                        // The engine does not know about stop strings: finishing here drops the
                        // handle, which aborts the request and frees its blocks.
                        // Handlers take prompt_tokens from their own prompt length.
                        obs.finish("stop", completion_tokens);
                        // The request is still in the engine here, so no update has swapped
                        // the weights under it: the current version is the one it ran on.
                        let usage = ChoiceUsage { completion_tokens, weight_version: engine.weight_version(), ..Default::default() };
                        yield ChoiceEvent::Done { index, finish_reason: "stop".into(), usage, error: None };
                        break;
                    }
                }
                EngineEvent::Finished { reason, prompt_tokens, completion_tokens, cached_tokens, error, weight_version } => {
                    let rest = detok.flush(&tok);
                    let (mut text, _) = stop.push(&rest);
                    if !stop.is_stopped() {
                        text.push_str(&stop.flush());
                    }
                    if !text.is_empty() {
                        yield ChoiceEvent::Delta { index, text, token: None };
                    }
                    obs.finish(reason.as_str(), completion_tokens);
                    let usage = ChoiceUsage { prompt_tokens, completion_tokens, cached_tokens, weight_version };
                    yield ChoiceEvent::Done { index, finish_reason: reason.as_str().into(), usage, error: error.map(|e| engine_error(reason, e)) };
                    break;
                }
            }
        }
    }
}

/// Generate one choice to the end (or its first stop string) and return its text and token
/// counts; for routes that build on whole generations (revision rounds).
pub async fn generate_text(st: &AppState, ctx: &Arc<RequestCtx>, prompt: Vec<u32>, params: SamplingParams, stops: Vec<String>) -> Result<(String, ChoiceUsage), ApiError> {
    let prompt_len = prompt.len();
    let mut stream = Box::pin(submit_choice(st, ctx, 0, prompt, params, stops)?);
    let mut text = String::new();
    while let Some(ev) = futures::StreamExt::next(&mut stream).await {
        match ev {
            ChoiceEvent::Delta { text: t, .. } => text.push_str(&t),
            ChoiceEvent::Done { error: Some(e), .. } => return Err(e),
            ChoiceEvent::Done { usage, .. } => return Ok((text, ChoiceUsage { prompt_tokens: prompt_len, ..usage })),
            ChoiceEvent::PromptLogprobs { .. } => {}
        }
    }
    Err(ApiError::unavailable("the engine stopped"))
}
