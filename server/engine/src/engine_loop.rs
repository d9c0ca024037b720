//! The engine thread: the only owner of the scheduler, the KV-cache manager and the executor.
//!
//! Each iteration drains commands (blocking only when idle), aborts requests whose receivers
//! are gone, schedules a step, runs it on the executor, applies the results and sends events.

use crate::client::{EngineClient, EngineInfo};
use crate::error::EngineError;
use crate::executor::{Executor, ExecutorError, KvGeometry, WeightPayload};
use crate::observe::{EngineObserver, NoObserver, StatsSnapshot, StepStats};
use crate::request::{EngineEvent, FinishReason, Request, RequestId, SamplingParams, TokenId};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::tracker::Tracker;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

mod control;

/// Engine configuration.
#[derive(Clone)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    /// Admission limit: requests submitted but not yet scheduled (429 past it).
    pub max_waiting_requests: usize,
    /// Admission limit: prompt tokens of requests submitted but not yet scheduled.
    pub max_waiting_tokens: usize,
    /// Receives the engine's stats snapshots, steps and request milestones (the server's
    /// Prometheus metrics).
    pub observer: Arc<dyn EngineObserver>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { scheduler: SchedulerConfig::default(), max_waiting_requests: usize::MAX >> 1, max_waiting_tokens: usize::MAX >> 1, observer: Arc::new(NoObserver) }
    }
}

pub(crate) enum Command {
    Add {
        id: RequestId,
        prompt: Vec<TokenId>,
        params: SamplingParams,
        events: UnboundedSender<EngineEvent>,
    },
    Abort(RequestId),
    /// Swap the executor's weights between two steps (see [`control`]).
    UpdateWeights {
        weights: WeightPayload,
        drain: bool,
        reply: tokio::sync::oneshot::Sender<Result<u64, String>>,
    },
    /// Run one sequence through the executor's reference path between two steps.
    Inspect {
        req: crate::inspect::InspectRequest,
        reply: tokio::sync::oneshot::Sender<Result<crate::inspect::InspectOutput, String>>,
    },
    /// Stop admitting waiting requests; with `abort`, end the running ones.
    Pause {
        abort: bool,
    },
    /// Admit again.
    Resume,
    Shutdown,
}

/// Live figures written by the engine thread, read by anyone (metrics, health).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub num_running: AtomicU64,
    pub num_waiting: AtomicU64,
    pub num_free_blocks: AtomicU64,
    pub num_preemptions: AtomicU64,
    pub prefix_query_tokens: AtomicU64,
    pub prefix_hit_tokens: AtomicU64,
    pub num_steps: AtomicU64,
    /// Requests currently holding KV blocks (0 when idle: used by leak tests).
    pub num_requests_with_blocks: AtomicU64,
    /// Admission queue: requests submitted and not yet scheduled (reserved by the client,
    /// released by the engine thread exactly once per request).
    pub admission_requests: AtomicU64,
    /// Admission queue: their prompt tokens.
    pub admission_tokens: AtomicU64,
    /// The engine thread has exited.
    pub stopped: AtomicBool,
    /// Weight updates applied so far (0: the weights the engine started with).
    pub weight_version: AtomicU64,
    /// Admission is paused (`pause_generation`).
    pub paused: AtomicBool,
}

/// Start the engine thread. `make_executor` runs on that thread (the executor need not be
/// `Send`) and gets the KV pool's geometry from the scheduler's configuration.
pub fn spawn_engine<E, F>(cfg: EngineConfig, make_executor: F) -> Result<EngineClient, EngineError>
where
    E: Executor + 'static,
    F: FnOnce(KvGeometry) -> Result<E, ExecutorError> + Send + 'static,
{
    let geometry = KvGeometry { num_blocks: cfg.scheduler.num_blocks, block_size: cfg.scheduler.block_size };
    let scheduler = Scheduler::new(cfg.scheduler.clone())?;
    let (tx, rx) = channel();
    let stats = Arc::new(EngineStats::default());
    let info = Arc::new(EngineInfo {
        num_blocks: cfg.scheduler.num_blocks,
        block_size: cfg.scheduler.block_size,
        max_model_len: cfg.scheduler.max_model_len,
        max_num_seqs: cfg.scheduler.max_num_seqs,
        max_waiting_requests: cfg.max_waiting_requests,
        max_waiting_tokens: cfg.max_waiting_tokens,
    });
    let observer = cfg.observer.clone();
    observer.snapshot(&StatsSnapshot { num_blocks: cfg.scheduler.num_blocks, num_free_blocks: cfg.scheduler.num_blocks, ..Default::default() });
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread_stats = stats.clone();
    std::thread::Builder::new()
        .name("hhh-engine".into())
        .spawn(move || {
            let exec = match make_executor(geometry) {
                Ok(e) => {
                    let _ = ready_tx.send(Ok(()));
                    e
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            /// Marks the engine stopped however the thread ends (return or panic), so health
            /// checks report it.
            struct StoppedGuard(Arc<EngineStats>);
            impl Drop for StoppedGuard {
                fn drop(&mut self) {
                    self.0.stopped.store(true, Ordering::SeqCst);
                }
            }
            let _guard = StoppedGuard(thread_stats.clone());
            let tracker = Tracker::new(thread_stats.clone(), observer.clone());
            let mut lp = EngineLoop { scheduler, exec, rx, senders: HashMap::new(), stats: thread_stats, observer, tracker, steps: 0, paused: false, pending: None };
            lp.run();
        })
        .map_err(|e| EngineError::Config(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(EngineError::Executor(e)),
        Err(_) => return Err(EngineError::Stopped),
    }
    Ok(EngineClient { tx, next_id: Arc::new(AtomicU64::new(1)), stats, info })
}

struct EngineLoop<E: Executor> {
    scheduler: Scheduler,
    exec: E,
    rx: Receiver<Command>,
    /// Event channel of every live request.
    senders: HashMap<RequestId, UnboundedSender<EngineEvent>>,
    stats: Arc<EngineStats>,
    observer: Arc<dyn EngineObserver>,
    tracker: Tracker,
    /// Steps run so far.
    steps: u64,
    /// Paused by [`Command::Pause`] (admission stays paused until [`Command::Resume`]).
    paused: bool,
    /// A weight update waiting for the running requests to finish.
    pending: Option<control::PendingUpdate>,
}

impl<E: Executor> EngineLoop<E> {
    fn run(&mut self) {
        loop {
            self.apply_pending_update();
            if !self.scheduler.has_work() {
                self.publish();
                match self.rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.scheduler.has_work() => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            self.drop_closed();
            self.step();
        }
    }

    /// Returns false on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Add { id, prompt, params, events } => {
                self.tracker.added(id, prompt.len());
                match self.scheduler.add_request(Request::new(id, prompt, params)) {
                    Ok(()) => {
                        self.senders.insert(id, events);
                    }
                    Err(e) => {
                        self.tracker.ended(id, false);
                        let _ =
                            events.send(EngineEvent::Finished { reason: FinishReason::Error, prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0, error: Some(e.to_string()), weight_version: 0 });
                    }
                }
            }
            Command::Abort(id) => self.abort(id),
            Command::UpdateWeights { weights, drain, reply } => self.update_weights(weights, drain, reply),
            Command::Inspect { req, reply } => {
                let _ = reply.send(self.exec.inspect(&req).map_err(|e| e.to_string()));
            }
            Command::Pause { abort } => self.pause(abort),
            Command::Resume => self.resume(),
            Command::Shutdown => {
                let ids: Vec<_> = self.senders.keys().copied().collect();
                for id in ids {
                    if let Some(ev) = self.scheduler.finish(id, FinishReason::Abort, Some("server shutting down".into())) {
                        self.send(id, ev);
                    }
                }
                self.tracker.clear();
                self.publish();
                return false;
            }
        }
        true
    }

    fn abort(&mut self, id: RequestId) {
        self.tracker.ended(id, false);
        self.scheduler.abort(id);
        self.senders.remove(&id);
        self.exec.release(id);
    }

    fn drop_closed(&mut self) {
        let closed: Vec<_> = self.senders.iter().filter(|(_, s)| s.is_closed()).map(|(&id, _)| id).collect();
        for id in closed {
            self.abort(id);
        }
    }

    fn send(&mut self, id: RequestId, mut ev: EngineEvent) {
        if let EngineEvent::Finished { weight_version, .. } = &mut ev {
            *weight_version = self.stats.weight_version.load(std::sync::atomic::Ordering::SeqCst);
        }
        let done = matches!(ev, EngineEvent::Finished { .. });
        match &ev {
            EngineEvent::Token(_) => self.tracker.token(id, std::time::Instant::now()),
            EngineEvent::Finished { .. } => self.tracker.ended(id, true),
            EngineEvent::PromptLogprobs { .. } | EngineEvent::Pooled(_) => {}
        }
        let ok = self.senders.get(&id).is_some_and(|s| s.send(ev).is_ok());
        if done {
            self.senders.remove(&id);
            self.exec.release(id);
        } else if !ok {
            self.abort(id);
        }
    }

    fn step(&mut self) {
        let out = self.scheduler.schedule();
        if out.scheduled.is_empty() {
            self.publish();
            // Nothing fits right now (should not happen: admission checks sizes); wait for input.
            if let Ok(cmd) = self.rx.recv_timeout(std::time::Duration::from_millis(5)) {
                self.handle(cmd);
            }
            return;
        }
        let t0 = std::time::Instant::now();
        for s in &out.scheduled {
            self.tracker.scheduled(s.id, t0);
        }
        let batch = self.scheduler.build_batch(&out);
        let result = self.exec.execute(&batch);
        let num_tokens = out.scheduled.iter().map(|s| s.num_new_tokens).sum();
        self.observer.step(&StepStats { batch_size: out.scheduled.len(), num_tokens, seconds: t0.elapsed().as_secs_f64() });
        self.steps += 1;
        let events = match result {
            Ok(step) => self.scheduler.update(&out, step),
            Err(e) => {
                tracing::error!(error = %e, "engine step failed");
                self.scheduler.fail_step(&out, &e.to_string())
            }
        };
        for (id, ev) in events {
            self.send(id, ev);
        }
        self.stats.num_steps.store(self.steps, Ordering::Relaxed);
        self.publish();
    }

    /// Publish the current figures: the atomics read by health checks and admission, and the
    /// snapshot for the observer.
    fn publish(&mut self) {
        let kv = self.scheduler.kv();
        let snap = StatsSnapshot {
            num_running: self.scheduler.num_running(),
            num_waiting: self.scheduler.num_waiting(),
            num_blocks: kv.num_blocks(),
            num_free_blocks: kv.num_free_blocks(),
            num_requests_with_blocks: kv.num_requests(),
            preemptions: self.scheduler.counters.num_preemptions,
            prefix_query_tokens: kv.prefix_query_tokens,
            prefix_hit_tokens: kv.prefix_hit_tokens,
            steps: self.steps,
        };
        let s = &self.stats;
        s.num_running.store(snap.num_running as u64, Ordering::Relaxed);
        s.num_waiting.store(snap.num_waiting as u64, Ordering::Relaxed);
        s.num_free_blocks.store(snap.num_free_blocks as u64, Ordering::Relaxed);
        s.num_preemptions.store(snap.preemptions, Ordering::Relaxed);
        s.prefix_query_tokens.store(snap.prefix_query_tokens, Ordering::Relaxed);
        s.prefix_hit_tokens.store(snap.prefix_hit_tokens, Ordering::Relaxed);
        s.num_requests_with_blocks.store(snap.num_requests_with_blocks as u64, Ordering::Relaxed);
        self.observer.snapshot(&snap);
    }
}
