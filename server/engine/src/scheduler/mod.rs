//! Token-budget scheduler (vLLM v1 style).
//!
//! Every request has `num_computed_tokens` and `num_tokens`; each step hands out at most
//! `max_num_batched_tokens` tokens so that computed counts catch up. Running requests are served
//! first (decode tokens and the rest of chunked prefills); when blocks run out, the most recently
//! admitted running request is preempted (its blocks freed, to be recomputed later). Waiting
//! requests are admitted only in steps without preemption. There are no prefill/decode modes.
//!
//! Two priorities ([`Priority`]): interactive requests wait in their own queue and are admitted
//! before any batch request; running interactive requests come before running batch ones, so
//! they get the budget first and batch rows are preempted first. When an interactive request
//! waits for a sequence slot or for blocks that running batch requests hold, those are preempted
//! at the start of the step (before anything is scheduled) to make room.

mod update;

use crate::error::EngineError;
use crate::executor::{Batch, BatchSeq};
use crate::kv_cache::{CachedPrefix, KvCacheManager};
use crate::request::{Priority, Request, RequestId, RequestStatus, TokenId};
use std::collections::{HashMap, VecDeque};

/// Steps after the last interactive request during which batch-only steps stay short
/// ([`SchedulerConfig::batch_idle_step_tokens`]); a server with no interactive traffic gives
/// batch work whole steps.
pub const INTERACTIVE_GRACE_STEPS: usize = 64;

/// Scheduler limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Maximum number of running requests.
    pub max_num_seqs: usize,
    /// Token budget of one step (chunked prefill size).
    pub max_num_batched_tokens: usize,
    /// Context length: prompt plus generated tokens never exceed it.
    pub max_model_len: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Blocks in the KV pool.
    pub num_blocks: usize,
    pub enable_prefix_caching: bool,
    /// Tokens that end generation unless `ignore_eos`.
    pub eos_token_ids: Vec<TokenId>,
    /// While an interactive request runs or waits, batch requests get at most this many tokens
    /// of a step (decode rows and prefill chunks together); otherwise the whole budget. A step
    /// that carries an interactive prefill (a request waiting for admission with a free slot, or
    /// a running one still in its prompt) carries no batch tokens at all, so that the time to
    /// first token does not pay for batch rows.
    pub batch_step_tokens: usize,
    /// For [`INTERACTIVE_GRACE_STEPS`] steps after the last interactive request, batch requests
    /// alone get at most this many tokens of a step (an interactive request that arrives waits
    /// for the step in flight, so those steps are kept short); after that, the whole budget.
    pub batch_idle_step_tokens: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 64,
            max_num_batched_tokens: 256,
            max_model_len: 2048,
            block_size: 16,
            num_blocks: 1024,
            enable_prefix_caching: true,
            eos_token_ids: Vec::new(),
            batch_step_tokens: 4,
            batch_idle_step_tokens: 32,
        }
    }
}

/// One request's share of a step, as decided by [`Scheduler::schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: RequestId,
    /// Position of the first token computed this step.
    pub start_pos: usize,
    pub num_new_tokens: usize,
}

/// Decisions of one step.
#[derive(Debug, Clone, Default)]
pub struct SchedulerOutput {
    pub scheduled: Vec<ScheduledSeq>,
    /// Requests preempted (sent back to waiting) in this step.
    pub preempted: Vec<RequestId>,
}

/// Counters the engine exposes.
#[derive(Debug, Clone, Default)]
pub struct SchedulerCounters {
    pub num_preemptions: u64,
}

/// The scheduler: request queues plus the KV-cache manager.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    kv: KvCacheManager,
    requests: HashMap<RequestId, Request>,
    /// Interactive requests, FIFO; preempted requests go back to the front.
    waiting: VecDeque<RequestId>,
    /// Batch requests, FIFO; admitted only when `waiting` is empty.
    waiting_batch: VecDeque<RequestId>,
    /// Interactive requests in admission order, then batch requests in admission order; the
    /// last one is preempted first.
    running: Vec<RequestId>,
    pub counters: SchedulerCounters,
    /// Steps since one had an interactive request running or waiting.
    steps_since_interactive: usize,
    /// No waiting request is admitted (pause, or a weight update waiting for running requests
    /// to finish); running ones go on.
    admission_paused: bool,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Result<Self, EngineError> {
        if cfg.block_size == 0 || cfg.num_blocks == 0 || cfg.max_num_batched_tokens == 0 || cfg.max_num_seqs == 0 {
            return Err(EngineError::Config("block size, block count, token budget and max seqs must be > 0".into()));
        }
        let kv = KvCacheManager::new(cfg.num_blocks, cfg.block_size, cfg.enable_prefix_caching);
        Ok(Self {
            cfg,
            kv,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            waiting_batch: VecDeque::new(),
            running: Vec::new(),
            counters: Default::default(),
            steps_since_interactive: usize::MAX,
            admission_paused: false,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }
    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }
    pub fn num_waiting(&self) -> usize {
        self.waiting.len() + self.waiting_batch.len()
    }
    /// Waiting batch requests (included in [`Self::num_waiting`]).
    pub fn num_waiting_batch(&self) -> usize {
        self.waiting_batch.len()
    }
    pub fn num_running(&self) -> usize {
        self.running.len()
    }
    /// Something can run: a running request, or a waiting one while admission is open.
    pub fn has_work(&self) -> bool {
        !self.running.is_empty() || (!self.admission_paused && (!self.waiting.is_empty() || !self.waiting_batch.is_empty()))
    }
    /// Stop (or resume) admitting waiting requests; running ones go on.
    pub fn set_admission_paused(&mut self, paused: bool) {
        self.admission_paused = paused;
    }
    pub fn admission_paused(&self) -> bool {
        self.admission_paused
    }
    /// Ids of the running requests.
    pub fn running_ids(&self) -> Vec<RequestId> {
        self.running.clone()
    }
    /// Forget every cached block (after a weight update, cached KV was computed by the old
    /// weights).
    pub fn reset_prefix_cache(&mut self) {
        self.kv.reset_prefix_cache();
    }
    pub fn request(&self, id: RequestId) -> Option<&Request> {
        self.requests.get(&id)
    }

    /// Queue a request. Fails when it could never fit in the pool or the context.
    pub fn add_request(&mut self, req: Request) -> Result<(), EngineError> {
        let max_len = (req.prompt.len() + req.params.max_tokens).min(self.cfg.max_model_len);
        let needed = self.kv.blocks_for(max_len.max(req.prompt.len()));
        if needed > self.kv.num_blocks() {
            return Err(EngineError::TooLarge { needed, total: self.kv.num_blocks() });
        }
        let id = req.id;
        match req.params.priority {
            Priority::Interactive => self.waiting.push_back(id),
            Priority::Batch => self.waiting_batch.push_back(id),
        }
        self.requests.insert(id, req);
        Ok(())
    }

    /// Remove a request wherever it is and free its blocks.
    pub fn abort(&mut self, id: RequestId) -> Option<Request> {
        let req = self.requests.remove(&id)?;
        self.waiting.retain(|&w| w != id);
        self.waiting_batch.retain(|&w| w != id);
        self.running.retain(|&r| r != id);
        self.kv.free(id);
        Some(req)
    }

    fn priority(&self, id: RequestId) -> Priority {
        self.requests.get(&id).map_or(Priority::Interactive, |r| r.params.priority)
    }

    fn preempt(&mut self, id: RequestId) {
        self.kv.free(id);
        if let Some(req) = self.requests.get_mut(&id) {
            req.num_computed_tokens = 0;
            req.status = RequestStatus::Waiting;
            req.num_preemptions += 1;
        }
        self.counters.num_preemptions += 1;
        match self.priority(id) {
            Priority::Interactive => self.waiting.push_front(id),
            Priority::Batch => self.waiting_batch.push_front(id),
        }
    }

    /// Preempt running batch requests (newest first) while the first waiting interactive request
    /// lacks a sequence slot or the blocks for its first chunk.
    fn make_room_for_interactive(&mut self, out: &mut SchedulerOutput) {
        let Some(&first) = self.waiting.front() else { return };
        let Some(req) = self.requests.get(&first) else { return };
        let needed = self.kv.blocks_for(req.num_tokens().min(self.cfg.max_num_batched_tokens).max(1));
        while self.running.len() >= self.cfg.max_num_seqs || self.kv.num_free_blocks() < needed {
            let Some(&last) = self.running.last() else { break };
            if self.priority(last) != Priority::Batch {
                break;
            }
            self.running.pop();
            self.preempt(last);
            out.preempted.push(last);
        }
    }

    fn cache_blocks(&mut self, id: RequestId, upto: usize) {
        if upto / self.cfg.block_size > self.kv.num_hashed_blocks(id) {
            if let Some(req) = self.requests.get(&id) {
                let toks = req.all_tokens();
                self.kv.cache_full_blocks(id, &toks, upto);
            }
        }
    }

    /// Whether this step will carry an interactive prompt: a request waiting for admission while
    /// a slot is free, or a running interactive request whose prompt is not computed yet.
    fn interactive_prefill(&self) -> bool {
        (!self.admission_paused && !self.waiting.is_empty() && self.running.len() < self.cfg.max_num_seqs)
            || self.running.iter().any(|&r| self.priority(r) == Priority::Interactive && self.requests.get(&r).is_some_and(|q| q.num_computed_tokens < q.prompt.len()))
    }

    /// Decide the next step.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        if !self.admission_paused {
            self.make_room_for_interactive(&mut out);
        }
        let made_room = out.preempted.len();
        let mut budget = self.cfg.max_num_batched_tokens;
        let interactive = !self.waiting.is_empty() || self.running.iter().any(|&r| self.priority(r) == Priority::Interactive);
        self.steps_since_interactive = if interactive { 0 } else { self.steps_since_interactive.saturating_add(1) };
        let mut batch_left = if self.interactive_prefill() {
            0
        } else if interactive {
            self.cfg.batch_step_tokens
        } else if self.steps_since_interactive <= INTERACTIVE_GRACE_STEPS {
            self.cfg.batch_idle_step_tokens
        } else {
            usize::MAX
        };
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let is_batch = self.priority(id) == Priority::Batch;
            let (computed, n) = match self.requests.get(&id) {
                Some(r) => (r.num_computed_tokens, (r.num_tokens() - r.num_computed_tokens).min(budget).min(if is_batch { batch_left } else { usize::MAX })),
                None => (0, 0),
            };
            if n == 0 {
                i += 1;
                continue;
            }
            let mut ok = false;
            while !self.running.is_empty() {
                if self.kv.allocate(id, &CachedPrefix::default(), computed + n) {
                    ok = true;
                    break;
                }
                let Some(victim) = self.running.pop() else { break };
                self.preempt(victim);
                out.preempted.push(victim);
                if victim == id {
                    break;
                }
            }
            if !ok {
                break;
            }
            self.cache_blocks(id, computed + n);
            out.scheduled.push(ScheduledSeq { id, start_pos: computed, num_new_tokens: n });
            budget -= n;
            if is_batch {
                batch_left -= n;
            }
            i += 1;
        }
        if out.preempted.len() == made_room && !self.admission_paused {
            self.admit_waiting(&mut out, budget, batch_left);
        }
        out
    }

    fn admit_waiting(&mut self, out: &mut SchedulerOutput, mut budget: usize, mut batch_left: usize) {
        while budget > 0 && self.running.len() < self.cfg.max_num_seqs {
            let batch = self.waiting.is_empty();
            if batch && batch_left == 0 {
                break;
            }
            let queue = if batch { &mut self.waiting_batch } else { &mut self.waiting };
            let Some(&id) = queue.front() else { break };
            let Some(req) = self.requests.get(&id) else {
                queue.pop_front();
                continue;
            };
            let toks = req.all_tokens();
            // Cached positions get no prompt logprobs: with them, only the part before the first
            // wanted position (whose predecessor must be computed) may come from the cache.
            let prefix = match req.params.prompt_logprobs {
                None => self.kv.find_cached_prefix(&toks),
                Some(_) if req.params.prompt_logprobs_start > 1 => {
                    let upto = req.params.prompt_logprobs_start.min(toks.len());
                    self.kv.find_cached_prefix(&toks[..upto])
                }
                Some(_) => CachedPrefix::default(),
            };
            let computed = prefix.num_tokens(self.cfg.block_size);
            let n = (toks.len() - computed).min(budget).min(if batch { batch_left } else { usize::MAX });
            if !self.kv.allocate(id, &prefix, computed + n) {
                break;
            }
            self.kv.record_prefix_lookup(toks.len(), computed);
            self.kv.cache_full_blocks(id, &toks, computed + n);
            if let Some(req) = self.requests.get_mut(&id) {
                req.num_computed_tokens = computed;
                req.status = RequestStatus::Running;
                req.num_cached_prompt_tokens.get_or_insert(computed.min(req.prompt.len()));
            }
            if batch {
                batch_left -= n;
                self.waiting_batch.pop_front();
                self.running.push(id);
            } else {
                self.waiting.pop_front();
                // Before the first running batch request.
                let at = self.running.iter().position(|&r| self.priority(r) == Priority::Batch).unwrap_or(self.running.len());
                self.running.insert(at, id);
            }
            out.scheduled.push(ScheduledSeq { id, start_pos: computed, num_new_tokens: n });
            budget -= n;
        }
    }

    /// The batch the executor runs for `out`.
    pub fn build_batch(&self, out: &SchedulerOutput) -> Batch {
        let mut seqs = Vec::with_capacity(out.scheduled.len());
        for s in &out.scheduled {
            let Some(req) = self.requests.get(&s.id) else { continue };
            let end = s.start_pos + s.num_new_tokens;
            let p = &req.params;
            let penalties = p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 || p.repetition_penalty != 1.0;
            let plen = req.prompt.len();
            // Position `first` is the first whose logprob is wanted and computed this step.
            let first = (s.start_pos + 1).max(p.prompt_logprobs_start);
            let (prompt_targets, prompt_targets_offset) =
                if p.prompt_logprobs.is_some() && first < (end + 1).min(plen) { (req.tokens_range(first, (end + 1).min(plen)), first - 1 - s.start_pos) } else { (Vec::new(), 0) };
            seqs.push(BatchSeq {
                request_id: s.id,
                tokens: req.tokens_range(s.start_pos, end),
                start_pos: s.start_pos,
                block_table: self.kv.block_table(s.id).to_vec(),
                sample: end == req.num_tokens(),
                params: p.clone(),
                output_tokens: if penalties || p.constraint.is_some() { req.output.clone() } else { Vec::new() },
                num_output_tokens: req.output.len(),
                prompt_len: plen,
                prompt_tokens: if p.repetition_penalty != 1.0 { req.prompt.clone() } else { Vec::new() },
                prompt_targets,
                prompt_targets_offset,
            });
        }
        Batch { seqs }
    }

    /// Check KV invariants and that every held table belongs to a running request.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.kv.check_invariants()?;
        if self.kv.num_requests() > self.running.len() {
            return Err(format!("{} requests hold blocks but {} run", self.kv.num_requests(), self.running.len()));
        }
        for id in &self.running {
            let r = self.requests.get(id).ok_or("running request missing")?;
            if self.kv.block_table(*id).len() * self.cfg.block_size < r.num_computed_tokens {
                return Err(format!("request {id} computed past its blocks"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
