//! Applying a step's results: append tokens, finish requests, free their blocks.

use super::{Scheduler, SchedulerOutput};
use crate::executor::StepOutput;
use crate::request::{EngineEvent, FinishReason, Request, RequestId, RequestStatus};

impl Scheduler {
    /// Apply the executor's output for `out`; returns the events to deliver, in order.
    /// Finished requests are removed and their blocks freed.
    pub fn update(&mut self, out: &SchedulerOutput, step: StepOutput) -> Vec<(RequestId, EngineEvent)> {
        let mut events = Vec::new();
        for (s, o) in out.scheduled.iter().zip(step.seqs) {
            let Some(req) = self.requests.get_mut(&s.id) else { continue };
            req.num_computed_tokens = s.start_pos + s.num_new_tokens;
            if !o.prompt_logprobs.is_empty() {
                // Logprobs for positions from `first` on (as in `build_batch`); skip any already
                // sent before a preemption.
                let first = (s.start_pos + 1).max(req.params.prompt_logprobs_start);
                let already = req.prompt_logprobs_sent.max(first);
                let skip = already - first;
                if skip < o.prompt_logprobs.len() {
                    let lps = o.prompt_logprobs[skip..].to_vec();
                    req.prompt_logprobs_sent = already + lps.len();
                    events.push((s.id, EngineEvent::PromptLogprobs { start: already, logprobs: lps }));
                }
            }
            if let Some(p) = o.pooled {
                events.push((s.id, EngineEvent::Pooled(p)));
                if let Some(ev) = self.finish(s.id, FinishReason::Stop, None) {
                    events.push((s.id, ev));
                }
                continue;
            }
            let Some(tok) = o.sampled else { continue };
            req.output.push(tok.token);
            let t = tok.token;
            events.push((s.id, EngineEvent::Token(tok)));
            if let Some(reason) = self.finish_reason(s.id, t) {
                if let Some(ev) = self.finish(s.id, reason, None) {
                    events.push((s.id, ev));
                }
            }
        }
        events
    }

    fn finish_reason(&self, id: RequestId, last: u32) -> Option<FinishReason> {
        let req = self.requests.get(&id)?;
        let p = &req.params;
        if p.stop_token_ids.contains(&last) || (!p.ignore_eos && self.cfg.eos_token_ids.contains(&last)) {
            return Some(FinishReason::Stop);
        }
        if req.output.len() >= p.max_tokens || req.num_tokens() >= self.cfg.max_model_len {
            return Some(FinishReason::Length);
        }
        None
    }

    /// Finish a request now (e.g. a stop string matched upstream); returns its final event.
    pub fn finish(&mut self, id: RequestId, reason: FinishReason, error: Option<String>) -> Option<EngineEvent> {
        let mut req: Request = self.abort(id)?;
        req.status = RequestStatus::Finished(reason);
        Some(EngineEvent::Finished { reason, prompt_tokens: req.prompt.len(), completion_tokens: req.output.len(), cached_tokens: req.num_cached_prompt_tokens.unwrap_or(0), error, weight_version: 0 })
    }

    /// The executor failed: every request of the step ends with an error, and the prefix cache
    /// is dropped because blocks registered for this step may hold garbage.
    pub fn fail_step(&mut self, out: &SchedulerOutput, err: &str) -> Vec<(RequestId, EngineEvent)> {
        let mut events = Vec::new();
        for s in &out.scheduled {
            if let Some(ev) = self.finish(s.id, FinishReason::Error, Some(err.to_string())) {
                events.push((s.id, ev));
            }
        }
        self.kv.reset_prefix_cache();
        events
    }
}
