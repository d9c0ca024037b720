//! What the engine reports about itself, as plain data: a [`StatsSnapshot`] after every step
//! (and when it goes idle), a [`StepStats`] per step, and a [`RequestMilestone`] as each
//! request passes through the queue, prefill and decode. The engine knows nothing about
//! Prometheus: an [`EngineObserver`] (the metrics crate implements one) turns these into series.

/// Gauges and cumulative counters of one engine, as of the end of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub num_running: usize,
    pub num_waiting: usize,
    pub num_blocks: usize,
    pub num_free_blocks: usize,
    /// Requests holding KV blocks (0 when idle).
    pub num_requests_with_blocks: usize,
    /// Since the engine started.
    pub preemptions: u64,
    /// Prompt tokens looked up in the prefix cache, since the engine started.
    pub prefix_query_tokens: u64,
    /// Of those, tokens found, since the engine started.
    pub prefix_hit_tokens: u64,
    /// Steps run, since the engine started.
    pub steps: u64,
}

/// One executed step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Sequences in the batch.
    pub batch_size: usize,
    /// Tokens computed (prefill chunks + decode tokens).
    pub num_tokens: usize,
    /// Wall time of the step (executor and bookkeeping).
    pub seconds: f64,
}

/// A request passing a point of its life on the engine thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequestMilestone {
    /// First scheduled, after this long in the queue.
    Scheduled { queue_seconds: f64 },
    /// Produced a token; for its first, `first` carries the prompt length and the time from
    /// first scheduling (when it was scheduled).
    Token { first: Option<(usize, Option<f64>)> },
    /// Finished normally, this long after its first token.
    Decoded { seconds: f64 },
}

/// Receives what the engine reports, on the engine thread: keep it cheap.
pub trait EngineObserver: Send + Sync {
    fn snapshot(&self, _s: &StatsSnapshot) {}
    fn step(&self, _s: &StepStats) {}
    fn milestone(&self, _m: RequestMilestone) {}
}

/// Discards every report (engines in tests and tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl EngineObserver for NoObserver {}
