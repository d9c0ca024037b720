//! hhh-metrics: every Prometheus metric of the server, named and described in one place.
//!
//! Naming follows Prometheus conventions: one `hhh_` prefix, base units in the name (`_seconds`,
//! `_tokens`), `_total` on counters, explicit buckets. `docs/metrics.md` maps each metric to its
//! vLLM counterpart. The engine thread records step- and request-level timings; the HTTP layer
//! records what the client sees (time to first token from arrival, inter-token latency, end to end).

mod engine;

use prometheus::{Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// Latency buckets (seconds) shared by the request-level timings.
const LATENCY_S: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0];
/// Time-to-first-token buckets (seconds), as vLLM's.
const TTFT_S: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0];
/// Inter-token latency buckets (seconds), as vLLM's plus finer low buckets for small models.
const ITL_S: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0];
/// Token-count buckets (prompt and generation lengths).
const TOKENS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0];
/// Tokens per engine step.
const STEP_TOKENS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0];
/// Sequences per engine step.
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Finish reasons used as the `finished_reason` label.
pub const FINISH_REASONS: &[&str] = &["stop", "length", "abort", "error"];
/// Rejection reasons used as the `reason` label.
pub const REJECT_REASONS: &[&str] = &["validation", "overloaded", "unauthorized", "draining", "timeout", "disconnected"];

/// Batch statuses used as the `status` label of `hhh_batches`.
pub const BATCH_STATUSES: &[&str] = &["validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"];

/// All metrics. Cheap to share (`Arc<Metrics>`); every handle is internally atomic.
pub struct Metrics {
    registry: Registry,
    // --- engine state (gauges, written by the engine thread after every step) ---
    pub requests_running: IntGauge,
    pub requests_waiting: IntGauge,
    pub kv_cache_usage_ratio: Gauge,
    pub kv_cache_blocks_total: IntGauge,
    pub kv_cache_blocks_free: IntGauge,
    pub model_info: IntGaugeVec,
    // --- engine counters ---
    pub prefix_cache_queries_tokens: IntCounter,
    pub prefix_cache_hits_tokens: IntCounter,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
    pub preemptions: IntCounter,
    pub engine_steps: IntCounter,
    // --- engine histograms ---
    pub queue_time: Histogram,
    pub prefill_time: Histogram,
    pub decode_time: Histogram,
    pub step_tokens: Histogram,
    pub step_batch_size: Histogram,
    pub step_time: Histogram,
    // --- HTTP layer ---
    pub requests_finished: IntCounterVec,
    pub requests_rejected: IntCounterVec,
    pub http_responses: IntCounterVec,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_latency: Histogram,
    pub prompt_length: Histogram,
    pub generation_length: Histogram,
    pub draining: IntGauge,
    // --- batch jobs (/v1/batches) ---
    pub batch_requests: IntCounterVec,
    pub batch_tokens: IntCounterVec,
    pub batches: IntGaugeVec,
    pub batch_queue_lines: IntGauge,
    // --- online RL: weight updates and pauses ---
    pub weight_updates: IntCounterVec,
    pub weight_update_time: Histogram,
    pub weight_version: IntGauge,
    pub generation_paused: IntGauge,
}

fn hist(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid histogram");
    r.register(Box::new(h.clone())).expect("unique metric name");
    h
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid counter");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid counter");
    r.register(Box::new(c.clone())).expect("unique metric name");
    // Pre-create every label value so rates start from 0 rather than from absent series.
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid gauge");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

impl Metrics {
    /// A fresh registry with every metric registered (plus process metrics: RSS, CPU, fds). The
    /// server's primary engine uses this one; its series carry no `engine` label.
    pub fn new() -> Self {
        let r = Registry::new_custom(Some("hhh".into()), None).expect("valid prefix");
        #[cfg(target_os = "linux")]
        {
            let _ = r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        }
        Self::with_registry(r)
    }

    /// The metrics of an additional engine in the same process (a preference or feedback
    /// model): the same names, every series labelled `engine="<name>"`, no process metrics.
    /// Render them together with the primary's with [`render_all`].
    pub fn for_engine(name: &str) -> Self {
        let labels = std::collections::HashMap::from([("engine".to_string(), name.to_string())]);
        let r = Registry::new_custom(Some("hhh".into()), Some(labels)).expect("valid prefix and label");
        Self::with_registry(r)
    }

    fn with_registry(r: Registry) -> Self {
        let kv_usage = Gauge::new("kv_cache_usage_ratio", "Fraction of KV-cache blocks in use (0 to 1).").expect("valid gauge");
        r.register(Box::new(kv_usage.clone())).expect("unique metric name");
        let model_info = IntGaugeVec::new(Opts::new("model_info", "The served model (value is always 1)."), &["model", "dtype", "device", "block_size"]).expect("valid gauge");
        r.register(Box::new(model_info.clone())).expect("unique metric name");
        let batches = IntGaugeVec::new(Opts::new("batches", "Batches (/v1/batches) by status."), &["status"]).expect("valid gauge");
        r.register(Box::new(batches.clone())).expect("unique metric name");
        for st in BATCH_STATUSES {
            batches.with_label_values(&[st]);
        }
        Self {
            requests_running: gauge(&r, "num_requests_running", "Requests in the running batch."),
            requests_waiting: gauge(&r, "num_requests_waiting", "Requests waiting to be scheduled (queued or preempted)."),
            kv_cache_usage_ratio: kv_usage,
            kv_cache_blocks_total: gauge(&r, "kv_cache_num_blocks", "KV-cache blocks in the pool."),
            kv_cache_blocks_free: gauge(&r, "kv_cache_free_blocks", "KV-cache blocks not held by any request (cached prefix blocks count as free)."),
            model_info,
            prefix_cache_queries_tokens: counter(&r, "prefix_cache_queries_tokens_total", "Prompt tokens looked up in the prefix cache."),
            prefix_cache_hits_tokens: counter(&r, "prefix_cache_hits_tokens_total", "Prompt tokens found in the prefix cache."),
            prompt_tokens: counter(&r, "prompt_tokens_total", "Prompt tokens of requests whose prefill completed."),
            generation_tokens: counter(&r, "generation_tokens_total", "Tokens generated."),
            preemptions: counter(&r, "preemptions_total", "Requests preempted (KV blocks reclaimed, recomputed later)."),
            engine_steps: counter(&r, "engine_steps_total", "Engine steps (model forwards) run."),
            queue_time: hist(&r, "request_queue_time_seconds", "Time from engine arrival to first scheduling.", LATENCY_S),
            prefill_time: hist(&r, "request_prefill_time_seconds", "Time from first scheduling to the first generated token.", LATENCY_S),
            decode_time: hist(&r, "request_decode_time_seconds", "Time from the first generated token to the end of the request.", LATENCY_S),
            step_tokens: hist(&r, "iteration_tokens", "Tokens (prefill + decode) processed per engine step.", STEP_TOKENS),
            step_batch_size: hist(&r, "iteration_batch_size", "Sequences per engine step.", BATCH),
            step_time: hist(&r, "iteration_duration_seconds", "Wall time of one engine step (forward + sampling).", ITL_S),
            requests_finished: counter_vec(&r, "requests_finished_total", "Requests (choices) finished, by finish reason.", "finished_reason", FINISH_REASONS),
            requests_rejected: counter_vec(&r, "requests_rejected_total", "Requests rejected or lost, by reason.", "reason", REJECT_REASONS),
            http_responses: counter_vec(&r, "http_responses_total", "HTTP responses, by status code.", "status", &["200"]),
            time_to_first_token: hist(&r, "time_to_first_token_seconds", "Time from HTTP arrival (before tokenization) to the first generated token.", TTFT_S),
            inter_token_latency: hist(&r, "inter_token_latency_seconds", "Time between consecutive generated tokens of a request.", ITL_S),
            e2e_latency: hist(&r, "e2e_request_latency_seconds", "Time from HTTP arrival to the end of a request.", LATENCY_S),
            prompt_length: hist(&r, "request_prompt_tokens", "Prompt length of finished requests, in tokens.", TOKENS),
            generation_length: hist(&r, "request_generation_tokens", "Generated tokens of finished requests.", TOKENS),
            draining: gauge(&r, "draining", "1 while the server drains before shutdown."),
            batch_requests: counter_vec(
                &r,
                "batch_requests_total",
                "Batch lines finished, by status (completed: a 2xx answer in the output file; failed: in the error file).",
                "status",
                &["completed", "failed"],
            ),
            batch_tokens: counter_vec(&r, "batch_tokens_total", "Tokens of finished batch lines (from their usage), by kind.", "kind", &["prompt", "completion"]),
            batches,
            batch_queue_lines: gauge(&r, "batch_queue_lines", "Lines of the running batch not yet finished."),
            weight_updates: counter_vec(&r, "weight_updates_total", "Policy weight updates (/update_weights_from_disk), by status.", "status", &["ok", "error"]),
            weight_update_time: hist(&r, "weight_update_seconds", "Time of a weight update: loading, waiting for running requests (drain), swapping.", LATENCY_S),
            weight_version: gauge(&r, "weight_version", "Weight updates applied to the served model since start (0: the weights it started with)."),
            generation_paused: gauge(&r, "generation_paused", "1 while admission is paused (/pause_generation)."),
            registry: r,
        }
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        render_all(&[self])
    }

    /// Count one finished request (choice).
    pub fn finished(&self, reason: &str) {
        self.requests_finished.with_label_values(&[reason]).inc();
    }

    /// Count one rejection.
    pub fn rejected(&self, reason: &str) {
        self.requests_rejected.with_label_values(&[reason]).inc();
    }
}

/// One exposition of several registries (the primary engine's first): families with the same
/// name are merged, so every name has one `# HELP` / `# TYPE` and the series of every engine.
pub fn render_all(parts: &[&Metrics]) -> String {
    let mut families: Vec<prometheus::proto::MetricFamily> = Vec::new();
    for m in parts {
        for mut f in m.registry.gather() {
            match families.iter_mut().find(|g| g.name() == f.name()) {
                Some(g) => {
                    let more = f.take_metric();
                    g.mut_metric().extend(more);
                }
                None => families.push(f),
            }
        }
    }
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families.
    let _ = TextEncoder::new().encode(&families, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_are_prefixed_and_typed() {
        let m = Metrics::new();
        m.generation_tokens.inc_by(3);
        m.finished("stop");
        let text = m.render();
        assert!(text.contains("hhh_generation_tokens_total 3"), "{text}");
        assert!(text.contains("hhh_requests_finished_total{finished_reason=\"stop\"} 1"));
        assert!(text.contains("hhh_requests_finished_total{finished_reason=\"abort\"} 0"));
        assert!(text.contains("# TYPE hhh_time_to_first_token_seconds histogram"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("hhh_") || line.starts_with("process_"), "unprefixed series: {line}");
        }
    }

    #[test]
    fn engines_render_as_one_exposition_with_an_engine_label() {
        let (main, pm) = (Metrics::new(), Metrics::for_engine("pm"));
        main.prompt_tokens.inc_by(5);
        pm.prompt_tokens.inc_by(7);
        pm.finished("stop");
        pm.model_info.with_label_values(&["pm", "q4_1", "cpu", "16"]).set(1);
        let text = render_all(&[&main, &pm]);
        assert!(text.contains("hhh_prompt_tokens_total 5\n"), "{text}");
        assert!(text.contains("hhh_prompt_tokens_total{engine=\"pm\"} 7"), "{text}");
        assert!(text.contains("hhh_requests_finished_total{finished_reason=\"stop\",engine=\"pm\"} 1"), "{text}");
        assert!(text.contains("engine=\"pm\"") && text.contains("model=\"pm\""));
        for family in ["hhh_prompt_tokens_total", "hhh_time_to_first_token_seconds", "hhh_model_info"] {
            assert_eq!(text.matches(&format!("# TYPE {family} ")).count(), 1, "{family} typed once");
        }
    }
}
