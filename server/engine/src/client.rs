//! The HTTP side's view of the engine: a cloneable client and per-request handles.

use crate::engine_loop::{Command, EngineStats};
use crate::error::EngineError;
use crate::executor::TokenLogprob;
use crate::request::{EngineEvent, FinishReason, PooledOutput, RequestId, SamplingParams, TokenId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Static facts about the running engine.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub num_blocks: usize,
    pub block_size: usize,
    pub max_model_len: usize,
    pub max_num_seqs: usize,
    /// Admission limit: requests submitted but not yet scheduled.
    pub max_waiting_requests: usize,
    /// Admission limit: prompt tokens of requests submitted but not yet scheduled.
    pub max_waiting_tokens: usize,
}

/// Cheap to clone; talks to the engine thread over a channel.
#[derive(Clone)]
pub struct EngineClient {
    pub(crate) tx: Sender<Command>,
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) stats: Arc<EngineStats>,
    pub(crate) info: Arc<EngineInfo>,
}

impl EngineClient {
    /// Queue a request; events arrive on the returned handle.
    ///
    /// Admission control happens here, on the caller's thread, so that an overloaded server
    /// answers at once: the request is refused with [`EngineError::Overloaded`] when the
    /// admission queue (submitted, not yet scheduled) already holds `max_waiting_requests`
    /// requests or would exceed `max_waiting_tokens` prompt tokens. A request larger than the
    /// token limit is still admitted into an empty queue, so that it can run at all.
    pub fn submit(&self, prompt: Vec<TokenId>, params: SamplingParams) -> Result<RequestHandle, EngineError> {
        if self.stats.stopped.load(Ordering::Relaxed) {
            return Err(EngineError::Stopped);
        }
        let tokens = prompt.len() as u64;
        self.reserve(tokens)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (etx, erx) = unbounded_channel();
        if self.tx.send(Command::Add { id, prompt, params, events: etx }).is_err() {
            self.stats.admission_requests.fetch_sub(1, Ordering::SeqCst);
            self.stats.admission_tokens.fetch_sub(tokens, Ordering::SeqCst);
            return Err(EngineError::Stopped);
        }
        Ok(RequestHandle { id, rx: erx, tx: self.tx.clone(), finished: false })
    }

    /// Reserve a place in the admission queue (compare-and-swap, so concurrent callers never
    /// overshoot the limits). The engine thread releases it when the request is first scheduled
    /// or ends.
    fn reserve(&self, tokens: u64) -> Result<(), EngineError> {
        let max_req = self.info.max_waiting_requests as u64;
        let max_tok = self.info.max_waiting_tokens as u64;
        self.stats
            .admission_requests
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max_req).then_some(n + 1))
            .map_err(|_| EngineError::Overloaded { what: "the number of waiting requests", limit: self.info.max_waiting_requests })?;
        let ok = self.stats.admission_tokens.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| (t == 0 || t + tokens <= max_tok).then_some(t + tokens));
        if ok.is_err() {
            self.stats.admission_requests.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Overloaded { what: "the number of waiting prompt tokens", limit: self.info.max_waiting_tokens });
        }
        Ok(())
    }

    /// Live counters (running, waiting, KV usage...).
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Swap the model's weights between two steps (see `engine_loop::control`): with `drain`,
    /// running requests finish on the old weights first; without, they end with `abort`.
    /// Returns the new weight version; on error the old weights keep serving.
    pub async fn update_weights(&self, weights: crate::executor::WeightPayload, drain: bool) -> Result<u64, EngineError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Command::UpdateWeights { weights, drain, reply }).map_err(|_| EngineError::Stopped)?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(EngineError::WeightUpdate(e)),
            Err(_) => Err(EngineError::Stopped),
        }
    }

    /// Run `req` through the executor's reference path between two steps (see
    /// [`crate::inspect`]); the executor's refusal is `EngineError::Inspect`.
    pub async fn inspect(&self, req: crate::inspect::InspectRequest) -> Result<crate::inspect::InspectOutput, EngineError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Command::Inspect { req, reply }).map_err(|_| EngineError::Stopped)?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(EngineError::Inspect(e)),
            Err(_) => Err(EngineError::Stopped),
        }
    }

    /// Stop admitting waiting requests (they stay queued); with `abort`, end the running ones
    /// with `abort`, else let them finish.
    pub fn pause(&self, abort: bool) -> Result<(), EngineError> {
        self.tx.send(Command::Pause { abort }).map_err(|_| EngineError::Stopped)
    }

    /// Admit waiting requests again after [`Self::pause`].
    pub fn resume(&self) -> Result<(), EngineError> {
        self.tx.send(Command::Resume).map_err(|_| EngineError::Stopped)
    }

    /// Weight updates applied so far (0: the weights the engine started with).
    pub fn weight_version(&self) -> u64 {
        self.stats.weight_version.load(Ordering::SeqCst)
    }

    /// Ask the engine thread to stop after the current step.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// One request's event stream. Dropping it before `Finished` aborts the request and frees its
/// KV blocks.
pub struct RequestHandle {
    id: RequestId,
    rx: UnboundedReceiver<EngineEvent>,
    tx: Sender<Command>,
    /// Set once `Finished` was received (no abort needed on drop).
    finished: bool,
}

impl RequestHandle {
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Next event; `None` once the engine is gone.
    pub async fn recv(&mut self) -> Option<EngineEvent> {
        let ev = self.rx.recv().await;
        self.note(&ev);
        ev
    }

    /// Blocking variant for non-async callers (tests, tools).
    pub fn blocking_recv(&mut self) -> Option<EngineEvent> {
        let ev = self.rx.blocking_recv();
        self.note(&ev);
        ev
    }

    /// Drive the request to its end and gather everything it produced.
    pub async fn collect(mut self) -> Collected {
        let mut c = Collected::default();
        while let Some(ev) = self.recv().await {
            if c.take(ev) {
                return c;
            }
        }
        c
    }

    /// Blocking [`Self::collect`] for non-async callers (tools, the reward-head trainer).
    pub fn blocking_collect(mut self) -> Collected {
        let mut c = Collected::default();
        while let Some(ev) = self.blocking_recv() {
            if c.take(ev) {
                return c;
            }
        }
        c
    }

    fn note(&mut self, ev: &Option<EngineEvent>) {
        if matches!(ev, Some(EngineEvent::Finished { .. }) | None) {
            self.finished = true;
        }
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.send(Command::Abort(self.id));
        }
    }
}

/// Everything one request produced, gathered by [`RequestHandle::collect`].
#[derive(Debug, Default)]
pub struct Collected {
    /// Generated tokens, in order.
    pub tokens: Vec<TokenLogprob>,
    /// Prompt logprobs (when asked for), in position order.
    pub prompt_logprobs: Vec<TokenLogprob>,
    /// The pooled output of a pooling request.
    pub pooled: Option<PooledOutput>,
    /// `None` when the engine stopped before the request finished.
    pub finish: Option<FinishReason>,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    /// The engine's message when the request failed.
    pub error: Option<String>,
    /// The weight version the request ran on.
    pub weight_version: u64,
}

impl Collected {
    /// Take one event; true at the end.
    fn take(&mut self, ev: EngineEvent) -> bool {
        match ev {
            EngineEvent::Token(t) => self.tokens.push(t),
            EngineEvent::PromptLogprobs { logprobs, .. } => self.prompt_logprobs.extend(logprobs),
            EngineEvent::Pooled(p) => self.pooled = Some(p),
            EngineEvent::Finished { reason, prompt_tokens, cached_tokens, error, weight_version, .. } => {
                (self.finish, self.prompt_tokens, self.cached_tokens, self.error, self.weight_version) = (Some(reason), prompt_tokens, cached_tokens, error, weight_version);
                return true;
            }
        }
        false
    }

    /// The request's outcome: `Err` with the engine's message when it failed, or a fixed one
    /// when the engine stopped first.
    pub fn result(self) -> Result<Self, String> {
        match (&self.finish, &self.error) {
            (None, _) => Err("the engine stopped".into()),
            (Some(_), Some(e)) => Err(e.clone()),
            (Some(_), None) => Ok(self),
        }
    }
}
