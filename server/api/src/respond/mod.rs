//! The response assembler of every generating route: fan-out over prompts × `n` choices, one
//! usage rule ([`UsageAcc`]), one non-streaming collector and one SSE driver (error events,
//! `include_usage`, `[DONE]`). Each endpoint only supplies a [`Framer`]: how its chunks and its
//! aggregated body look.
//!
//! ```text
//! plan ─▶ Choices::submit (prompts × n, seeds seed+i) ─▶ select_all(choice streams)
//!   ├─ collect(choices, framer)  ─▶ framer.absorb(event)… ─▶ (framer, usage) ─▶ JSON body
//!   └─ sse(choices, framer, include_usage) ─▶ opening, framer.chunk(event)…, usage, [DONE]
//! ```

mod usage;

pub use usage::UsageAcc;

use crate::error::ApiError;
use crate::jobs::{submit_choice, ChoiceEvent};
use crate::middleware::RequestCtx;
use crate::state::AppState;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream, SelectAll, StreamExt};
use hhh_engine::SamplingParams;
use hhh_proto::Usage;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;

/// The last SSE payload of every stream.
pub const DONE: &str = "[DONE]";

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh response id with the given prefix.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

/// The SSE payload of a JSON value.
pub fn json_data<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The SSE payload of an error (OpenAI's `{"error": {...}}`).
pub fn error_data(e: &ApiError) -> String {
    json_data(&e.body())
}

/// A stream of SSE payloads as a response (keep-alives on, proxy buffering off).
pub fn sse_response(payloads: impl futures::Stream<Item = String> + Send + 'static) -> Response {
    let events = payloads.map(|d| Ok::<_, Infallible>(Event::default().data(d)));
    ([("x-accel-buffering", "no")], Sse::new(events).keep_alive(KeepAlive::default())).into_response()
}

/// How one endpoint frames the events of its choices.
pub trait Framer: Send + 'static {
    /// One streamed chunk (`chat.completion.chunk`, a `text_completion` chunk, …).
    type Chunk: Serialize + Send + 'static;
    /// Chunks sent before any event (chat: each choice's role; completions: echoed prompts).
    fn opening(&mut self) -> Vec<Self::Chunk> {
        Vec::new()
    }
    /// The chunk of one event, `None` when it carries nothing to send. A `Done` event's error
    /// has already been sent as an error event when this is called.
    fn chunk(&mut self, ev: &ChoiceEvent) -> Option<Self::Chunk>;
    /// The usage-only chunk at the end (`stream_options.include_usage`).
    fn usage_chunk(&mut self, usage: Usage) -> Self::Chunk;
    /// Non-streaming: take in one event (errors never reach it).
    fn absorb(&mut self, ev: ChoiceEvent);
}

/// The running choices of one request, merged into one event stream in arrival order.
pub struct Choices {
    events: SelectAll<BoxStream<'static, ChoiceEvent>>,
    usage: UsageAcc,
}

impl Choices {
    /// Submit `n` choices of every prompt (choice `p * n + i` is prompt `p`'s `i`-th, with seed
    /// `seed + i`). A failed submission (429) drops the ones already submitted, which aborts them.
    pub fn submit(st: &AppState, ctx: &Arc<RequestCtx>, prompts: Vec<(Vec<u32>, SamplingParams)>, n: usize, stops: &[String]) -> Result<Self, ApiError> {
        let lens = prompts.iter().map(|p| p.0.len()).collect();
        let mut streams = Vec::with_capacity(prompts.len() * n);
        for (pi, (ids, params)) in prompts.into_iter().enumerate() {
            for i in 0..n {
                let mut p = params.clone();
                p.seed = p.seed.wrapping_add(i as u64);
                streams.push(submit_choice(st, ctx, pi * n + i, ids.clone(), p, stops.to_vec())?.boxed());
            }
        }
        Ok(Self::from_streams(streams, lens, n))
    }

    /// Choices from ready-made event streams (tests, or choices produced elsewhere).
    pub fn from_streams(streams: Vec<BoxStream<'static, ChoiceEvent>>, prompt_lens: Vec<usize>, n: usize) -> Self {
        Self { events: stream::select_all(streams), usage: UsageAcc::new(prompt_lens, n) }
    }
}

/// Drive every choice to its end and return the framer (holding the aggregated body) and the
/// usage. The first failed choice fails the request; dropping the others aborts them.
pub async fn collect<F: Framer>(mut choices: Choices, mut framer: F) -> Result<(F, Usage), ApiError> {
    while let Some(ev) = choices.events.next().await {
        if let ChoiceEvent::Done { index, usage, error, .. } = &ev {
            if let Some(e) = error {
                return Err(e.clone());
            }
            choices.usage.add(*index, usage);
        }
        framer.absorb(ev);
    }
    Ok((framer, choices.usage.usage()))
}

/// The SSE payloads of a streamed response: the framer's opening, one chunk per event (a failed
/// choice sends an error event, then its finish chunk; the others go on), the usage chunk when
/// asked for, then `[DONE]`.
pub fn sse_payloads<F: Framer>(mut choices: Choices, mut framer: F, include_usage: bool) -> impl futures::Stream<Item = String> + Send + 'static {
    async_stream::stream! {
        for c in framer.opening() {
            yield json_data(&c);
        }
        while let Some(ev) = choices.events.next().await {
            if let ChoiceEvent::Done { index, usage, error, .. } = &ev {
                if let Some(e) = error {
                    yield error_data(e);
                }
                choices.usage.add(*index, usage);
            }
            if let Some(c) = framer.chunk(&ev) {
                yield json_data(&c);
            }
        }
        if include_usage {
            let u = framer.usage_chunk(choices.usage.usage());
            yield json_data(&u);
        }
        yield DONE.to_string();
    }
}

/// [`sse_payloads`] as a response.
pub fn sse<F: Framer>(choices: Choices, framer: F, include_usage: bool) -> Response {
    sse_response(sse_payloads(choices, framer, include_usage))
}

#[cfg(test)]
mod tests;
