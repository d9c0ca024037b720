//! The engine's reports ([`hhh_engine::observe`]) as Prometheus series: gauges are set from each
//! snapshot, cumulative counters advance by the snapshot's growth, histograms observe steps and
//! request milestones.

use crate::Metrics;
use hhh_engine::{EngineObserver, RequestMilestone, StatsSnapshot, StepStats};
use prometheus::IntCounter;

/// Advance `c` to the cumulative value `total` (never backwards).
fn advance(c: &IntCounter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

impl EngineObserver for Metrics {
    fn snapshot(&self, s: &StatsSnapshot) {
        self.requests_running.set(s.num_running as i64);
        self.requests_waiting.set(s.num_waiting as i64);
        self.kv_cache_blocks_total.set(s.num_blocks as i64);
        self.kv_cache_blocks_free.set(s.num_free_blocks as i64);
        let total = s.num_blocks.max(1);
        self.kv_cache_usage_ratio.set(total.saturating_sub(s.num_free_blocks) as f64 / total as f64);
        advance(&self.preemptions, s.preemptions);
        advance(&self.prefix_cache_queries_tokens, s.prefix_query_tokens);
        advance(&self.prefix_cache_hits_tokens, s.prefix_hit_tokens);
        advance(&self.engine_steps, s.steps);
    }

    fn step(&self, s: &StepStats) {
        self.step_batch_size.observe(s.batch_size as f64);
        self.step_tokens.observe(s.num_tokens as f64);
        self.step_time.observe(s.seconds);
    }

    fn milestone(&self, m: RequestMilestone) {
        match m {
            RequestMilestone::Scheduled { queue_seconds } => self.queue_time.observe(queue_seconds),
            RequestMilestone::Token { first } => {
                self.generation_tokens.inc();
                if let Some((prompt_len, prefill)) = first {
                    self.prompt_tokens.inc_by(prompt_len as u64);
                    if let Some(p) = prefill {
                        self.prefill_time.observe(p);
                    }
                }
            }
            RequestMilestone::Decoded { seconds } => self.decode_time.observe(seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_set_gauges_and_advance_counters() {
        let m = Metrics::new();
        let snap = |free, pre, q, h, steps| StatsSnapshot {
            num_running: 2,
            num_waiting: 1,
            num_blocks: 10,
            num_free_blocks: free,
            num_requests_with_blocks: 2,
            preemptions: pre,
            prefix_query_tokens: q,
            prefix_hit_tokens: h,
            steps,
        };
        m.snapshot(&snap(4, 1, 100, 40, 7));
        m.snapshot(&snap(6, 3, 150, 40, 9));
        assert_eq!((m.requests_running.get(), m.requests_waiting.get(), m.kv_cache_blocks_free.get()), (2, 1, 6));
        assert!((m.kv_cache_usage_ratio.get() - 0.4).abs() < 1e-12);
        assert_eq!((m.preemptions.get(), m.prefix_cache_queries_tokens.get(), m.prefix_cache_hits_tokens.get(), m.engine_steps.get()), (3, 150, 40, 9));
        m.milestone(RequestMilestone::Token { first: Some((12, Some(0.5))) });
        m.milestone(RequestMilestone::Token { first: None });
        assert_eq!((m.prompt_tokens.get(), m.generation_tokens.get(), m.prefill_time.get_sample_count()), (12, 2, 1));
        m.step(&StepStats { batch_size: 3, num_tokens: 40, seconds: 0.01 });
        assert_eq!(m.step_tokens.get_sample_sum(), 40.0);
    }
}
