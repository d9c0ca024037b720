//! Control of a running engine for online RL trainers: swapping the executor's weights between
//! two steps, and pausing admission (SGLang's `update_weights_from_disk`, `pause_generation`,
//! `continue_generation`).
//!
//! A weight update with `drain` stops admitting waiting requests, lets the running ones finish
//! on the old weights, then swaps; without `drain` the running requests end at once with
//! `finish_reason: abort` and the swap follows. Either way the prefix cache is dropped (its
//! blocks were computed by the old weights), the version goes up by one, and admission opens
//! again (unless paused). Waiting requests run on the new weights. If the executor refuses the
//! new weights, the old ones keep serving and the caller gets the error.

use super::{EngineLoop, WeightPayload};
use crate::executor::Executor;
use crate::request::FinishReason;
use std::sync::atomic::Ordering;

/// An update waiting for the running requests to finish.
pub(super) struct PendingUpdate {
    weights: WeightPayload,
    reply: tokio::sync::oneshot::Sender<Result<u64, String>>,
}

impl<E: Executor> EngineLoop<E> {
    /// End every running request with `finish_reason: abort` (not an error: the client gets
    /// what was generated so far). `why` is logged.
    fn abort_running(&mut self, why: &str) {
        let ids = self.scheduler.running_ids();
        if !ids.is_empty() {
            tracing::info!(requests = ids.len(), why, "aborting running requests");
        }
        for id in ids {
            if let Some(ev) = self.scheduler.finish(id, FinishReason::Abort, None) {
                self.send(id, ev);
            }
        }
    }

    pub(super) fn update_weights(&mut self, weights: WeightPayload, drain: bool, reply: tokio::sync::oneshot::Sender<Result<u64, String>>) {
        if let Some(old) = self.pending.take() {
            let _ = old.reply.send(Err("superseded by a later weight update".into()));
        }
        if !drain {
            self.abort_running("aborted by a weight update");
        }
        self.scheduler.set_admission_paused(true);
        self.pending = Some(PendingUpdate { weights, reply });
        self.apply_pending_update();
    }

    /// Apply the pending update once nothing runs.
    pub(super) fn apply_pending_update(&mut self) {
        if self.scheduler.num_running() > 0 {
            return;
        }
        let Some(p) = self.pending.take() else { return };
        let result = match self.exec.update_weights(p.weights) {
            Ok(()) => {
                self.scheduler.reset_prefix_cache();
                Ok(self.stats.weight_version.fetch_add(1, Ordering::SeqCst) + 1)
            }
            Err(e) => Err(e.to_string()),
        };
        self.scheduler.set_admission_paused(self.paused);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "weight update refused; the old weights keep serving");
        }
        let _ = p.reply.send(result);
        self.publish();
    }

    pub(super) fn pause(&mut self, abort: bool) {
        self.paused = true;
        self.stats.paused.store(true, Ordering::SeqCst);
        self.scheduler.set_admission_paused(true);
        if abort {
            self.abort_running("aborted by pause_generation");
        }
        self.publish();
    }

    pub(super) fn resume(&mut self) {
        self.paused = false;
        self.stats.paused.store(false, Ordering::SeqCst);
        if self.pending.is_none() {
            self.scheduler.set_admission_paused(false);
        }
    }
}
