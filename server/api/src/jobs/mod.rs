//! Engine jobs: every way the API layer drives [`RequestHandle`]s, in one module. Routes and
//! services submit through these functions and never read engine events themselves.
//!
//! - [`submit_choice`]: one client-facing choice as a stream of text deltas (stop strings,
//!   logprobs, client-side metrics) — chat, completions, revision;
//! - [`run_waves`]: many requests at once, in waves that leave room in the admission queue, each
//!   driven by a collector: [`pooled`] (reward heads), [`option_logprob`] (label scoring),
//!   [`until_stop`] (text generated until a stop string, e.g. chain-of-thought reasoning);
//! - [`score_options`]: options after shared prompts (label scoring, feedback, honesty).
//!
//! Dropping any future or stream here drops its handles, which aborts the engine requests and
//! frees their blocks.

mod choice;

pub use choice::{generate_text, submit_choice, ChoiceEvent, ChoiceUsage};

use crate::error::ApiError;
use hhh_engine::{EngineClient, EngineEvent, PooledOutput, PoolingParams, Priority, RequestHandle, SamplingParams};
use hhh_text::{IncrementalDetokenizer, StopMatcher, Tokenizer};
use std::sync::Arc;
use std::time::Duration;

tokio::task_local! {
    /// The engine priority of the requests a task submits ([`with_priority`]); interactive
    /// when unset.
    static PRIORITY: Priority;
}

/// Run `f` with its engine requests at priority `p` (batch lines run at [`Priority::Batch`]).
pub async fn with_priority<F: std::future::Future>(p: Priority, f: F) -> F::Output {
    PRIORITY.scope(p, f).await
}

/// The priority requests submitted from this task get.
pub fn current_priority() -> Priority {
    PRIORITY.try_with(|p| *p).unwrap_or_default()
}

/// Submit one engine request at the task's priority.
pub fn submit(engine: &EngineClient, prompt: Vec<u32>, mut params: SamplingParams) -> Result<RequestHandle, ApiError> {
    params.priority = current_priority();
    Ok(engine.submit(prompt, params)?)
}

/// Most engine requests one call keeps in flight. Larger calls go in waves, so that one call
/// never fills the admission queue (`--max-waiting-requests`) by itself; later waves still reuse
/// the blocks of earlier ones through the prefix cache.
pub const MAX_IN_FLIGHT: usize = 64;

/// Submit `jobs` in waves of [`MAX_IN_FLIGHT`] (or half the admission queue if smaller), drive
/// each request's events with `collect`, and return the results in job order. `timeout` bounds
/// the whole call (408). Dropping the future (client gone) drops the handles, which aborts the
/// requests.
pub async fn run_waves<T, F, Fut>(engine: &EngineClient, jobs: Vec<(Vec<u32>, SamplingParams)>, timeout: Option<Duration>, collect: F) -> Result<Vec<T>, ApiError>
where
    F: Fn(RequestHandle) -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    // Half the admission queue at most, so that other clients still get in.
    let wave = MAX_IN_FLIGHT.min((engine.info().max_waiting_requests / 2).max(1));
    let work = async {
        let mut out = Vec::with_capacity(jobs.len());
        let mut it = jobs.into_iter().peekable();
        while it.peek().is_some() {
            let mut hs = Vec::with_capacity(wave);
            for (prompt, params) in it.by_ref().take(wave) {
                hs.push(submit(engine, prompt, params)?);
            }
            for r in futures::future::join_all(hs.into_iter().map(&collect)).await {
                out.push(r?);
            }
        }
        Ok(out)
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, work).await.map_err(|_| ApiError::timeout(t.as_secs_f64()))?,
        None => work.await,
    }
}

/// Collector of a pooling request: its pooled output and cached prompt tokens.
pub async fn pooled(h: RequestHandle) -> Result<(PooledOutput, usize), ApiError> {
    let c = h.collect().await;
    match (c.finish, c.error, c.pooled) {
        (None, ..) => Err(ApiError::unavailable("the engine stopped")),
        (_, Some(e), _) => Err(ApiError::internal(format!("scoring failed: {e}"))),
        (_, None, Some(p)) => Ok((p, c.cached_tokens)),
        (_, None, None) => Err(ApiError::internal("the engine finished a scoring request without a result")),
    }
}

/// Collector of an option-scoring request (prefill only, prompt logprobs over the option's
/// tokens): the option's total logprob and the request's cached prompt tokens. `what` names the
/// work in an engine error.
pub async fn option_logprob(mut h: RequestHandle, what: &'static str) -> Result<(f64, usize), ApiError> {
    let mut total = 0.0f64;
    while let Some(ev) = h.recv().await {
        match ev {
            EngineEvent::PromptLogprobs { logprobs, .. } => total += logprobs.iter().map(|l| l.logprob as f64).sum::<f64>(),
            EngineEvent::Finished { error: Some(e), .. } => return Err(ApiError::internal(format!("{what} failed: {e}"))),
            EngineEvent::Finished { cached_tokens, .. } => return Ok((total, cached_tokens)),
            _ => {}
        }
    }
    Err(ApiError::unavailable("the engine stopped"))
}

/// One prompt and the continuations ("options") to score after it.
#[derive(Debug, Clone)]
pub struct OptionJob {
    pub prompt: Vec<u32>,
    pub options: Vec<Vec<u32>>,
}

/// The total logprob of every option after its prompt, and each request's cached prompt tokens,
/// in the shape of `jobs`: one prefill-only engine request per (prompt, option) with prompt
/// logprobs over the option's tokens only, all submitted together ([`run_waves`]). The options
/// of one prompt compute it once: the scheduler registers a request's full blocks in the prefix
/// cache when it schedules them, so a sibling admitted in the same step already finds them.
pub async fn score_options(engine: &EngineClient, jobs: &[OptionJob], timeout: Option<Duration>, what: &'static str) -> Result<Vec<Vec<(f64, usize)>>, ApiError> {
    let mut requests = Vec::with_capacity(jobs.iter().map(|j| j.options.len()).sum());
    for j in jobs {
        for o in &j.options {
            let mut full = j.prompt.clone();
            full.extend_from_slice(o);
            requests.push((full, SamplingParams { max_tokens: 0, prompt_logprobs: Some(0), prompt_logprobs_start: j.prompt.len(), pooling: Some(PoolingParams::default()), ..Default::default() }));
        }
    }
    let mut it = run_waves(engine, requests, timeout, |h| option_logprob(h, what)).await?.into_iter();
    Ok(jobs.iter().map(|j| it.by_ref().take(j.options.len()).collect()).collect())
}

/// Text generated until a stop string or the end, and its token counts.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// The text before the first stop string (the stop string excluded), untrimmed.
    pub text: String,
    pub completion_tokens: usize,
    /// Prompt tokens taken from the prefix cache (0 when the request was cut at a stop string:
    /// the engine's final count never arrives).
    pub cached_tokens: usize,
}

/// Collector of a generation that ends at the first of `stops`: text is detokenized
/// incrementally and matched with [`StopMatcher`] (the same path as client-facing choices); at a
/// stop the handle is dropped, which aborts the rest of the generation.
pub async fn until_stop(mut h: RequestHandle, tok: Arc<Tokenizer>, stops: Vec<String>, what: &'static str) -> Result<Generated, ApiError> {
    let mut detok = IncrementalDetokenizer::new(true);
    let mut stop = StopMatcher::new(stops);
    let mut out = Generated::default();
    while let Some(ev) = h.recv().await {
        match ev {
            EngineEvent::Token(t) => {
                out.completion_tokens += 1;
                let (text, stopped) = stop.push(&detok.push(&tok, t.token));
                out.text.push_str(&text);
                if stopped {
                    return Ok(out);
                }
            }
            EngineEvent::Finished { error: Some(e), .. } => return Err(ApiError::internal(format!("{what} failed: {e}"))),
            EngineEvent::Finished { cached_tokens, .. } => {
                let (text, _) = stop.push(&detok.flush(&tok));
                out.text.push_str(&text);
                if !stop.is_stopped() {
                    out.text.push_str(&stop.flush());
                }
                out.cached_tokens = cached_tokens;
                return Ok(out);
            }
            _ => {}
        }
    }
    Err(ApiError::unavailable("the engine stopped"))
}
