//! The HTTP side's view of the engine: a cloneable client and per-request handles.

use crate::engine_loop::{Command, EngineStats};
use crate::error::EngineError;
use crate::request::{EngineEvent, RequestId, SamplingParams, TokenId};
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
    pub fn submit(&self, prompt: Vec<TokenId>, params: SamplingParams) -> Result<RequestHandle, EngineError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (etx, erx) = unbounded_channel();
        self.tx
            .send(Command::Add { id, prompt, params, events: etx })
            .map_err(|_| EngineError::Stopped)?;
        Ok(RequestHandle { id, rx: erx, tx: self.tx.clone(), finished: false })
    }

    /// Live counters (running, waiting, KV usage...).
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
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
