//! Turning a point's records into the figures serving people compare, and printing them.

use crate::client::{RequestRecord, UsageSource};
use crate::runner::{PointConfig, PointRun};
use crate::stats::{self, Slo, Summary};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Latency summaries of one class of requests, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latencies {
    pub ttft_ms: Option<Summary>,
    pub tpot_ms: Option<Summary>,
    pub itl_ms: Option<Summary>,
    pub e2e_ms: Option<Summary>,
}

/// Goodput under the SLOs given on the command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Goodput {
    pub slo: Slo,
    /// Completed requests per second that met every objective.
    pub requests_per_s: f64,
    /// Fraction of completed requests that met every objective.
    pub attainment: f64,
}

/// Everything measured at one load point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// `c=4`, `rate=2`, `rate=inf,c=8`.
    pub label: String,
    pub config: PointConfig,
    pub duration_s: f64,
    pub completed: usize,
    pub failed: usize,
    pub failed_by_reason: BTreeMap<String, usize>,
    pub request_throughput: f64,
    pub output_token_throughput: f64,
    pub total_token_throughput: f64,
    /// Scoring units (responses scored, pairs compared) per second; scoring scenarios only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_throughput: Option<f64>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// Prompt tokens the server reported as served from its prefix cache (when it reports them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<usize>,
    pub items: usize,
    pub peak_concurrency: usize,
    /// Requests whose token counts came from `/tokenize` because the server sent no usage.
    pub counted_by_tokenize: usize,
    pub latency: Latencies,
    /// Per request class, when a scenario has more than one (`long-prompt`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_class: BTreeMap<String, Latencies>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput: Option<Goodput>,
    /// Every request, for CDFs and re-analysis (left out with `--no-per-request`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestRecord>,
}

fn ms(v: impl IntoIterator<Item = f64>) -> Vec<f64> {
    v.into_iter().map(|s| s * 1e3).collect()
}

fn latencies<'a>(recs: impl Iterator<Item = &'a RequestRecord> + Clone) -> Latencies {
    Latencies {
        ttft_ms: stats::summarize(&ms(recs.clone().filter_map(|r| r.ttft_s))),
        tpot_ms: stats::summarize(&ms(recs.clone().filter_map(|r| stats::tpot(r.ttft_s?, r.e2e_s, r.output_tokens)))),
        itl_ms: stats::summarize(&ms(recs.clone().flat_map(|r| stats::inter_token_latencies(&r.chunk_times_s)))),
        e2e_ms: stats::summarize(&ms(recs.map(|r| r.e2e_s))),
    }
}

/// A point's label from its configuration.
pub fn label(cfg: &PointConfig) -> String {
    match (cfg.request_rate, cfg.max_concurrency) {
        (Some(r), Some(c)) => format!("rate={r},c={c}"),
        (Some(r), None) => format!("rate={r}"),
        (None, Some(c)) => format!("c={c}"),
        (None, None) => "rate=inf".into(),
    }
}

impl Report {
    /// Compute the report of one point.
    pub fn new(scenario: &str, cfg: &PointConfig, run: PointRun, slo: &Slo, keep_requests: bool) -> Report {
        let ok: Vec<&RequestRecord> = run.records.iter().filter(|r| r.ok).collect();
        let mut failed_by_reason = BTreeMap::new();
        for r in run.records.iter().filter(|r| !r.ok) {
            *failed_by_reason.entry(r.error.clone().unwrap_or_default()).or_insert(0) += 1;
        }
        let d = run.duration_s.max(1e-9);
        let prompt: usize = ok.iter().map(|r| r.prompt_tokens).sum();
        let output: usize = ok.iter().map(|r| r.output_tokens).sum();
        let items: usize = ok.iter().map(|r| r.items).sum();
        let cached = ok.iter().any(|r| r.cached_tokens.is_some()).then(|| ok.iter().filter_map(|r| r.cached_tokens).sum());
        let goodput = slo.is_set().then(|| {
            let met = ok.iter().filter(|r| slo.met(r.ttft_s.map(|t| t * 1e3), r.ttft_s.and_then(|t| stats::tpot(t, r.e2e_s, r.output_tokens)).map(|t| t * 1e3), r.e2e_s * 1e3)).count();
            Goodput { slo: *slo, requests_per_s: met as f64 / d, attainment: if ok.is_empty() { 0.0 } else { met as f64 / ok.len() as f64 } }
        });
        let mut classes: BTreeMap<String, Vec<&RequestRecord>> = BTreeMap::new();
        for r in &ok {
            classes.entry(r.class.clone()).or_default().push(r);
        }
        let by_class = if classes.len() > 1 { classes.into_iter().map(|(k, v)| (k, latencies(v.into_iter()))).collect() } else { BTreeMap::new() };
        let intervals: Vec<(f64, f64)> = run.records.iter().map(|r| (r.start_s, r.start_s + r.e2e_s)).collect();
        Report {
            scenario: scenario.into(),
            label: label(cfg),
            config: cfg.clone(),
            duration_s: run.duration_s,
            completed: ok.len(),
            failed: run.records.len() - ok.len(),
            failed_by_reason,
            request_throughput: ok.len() as f64 / d,
            output_token_throughput: output as f64 / d,
            total_token_throughput: (prompt + output) as f64 / d,
            item_throughput: (items > 0).then(|| items as f64 / d),
            prompt_tokens: prompt,
            output_tokens: output,
            cached_prompt_tokens: cached,
            items,
            peak_concurrency: stats::peak_concurrency(&intervals),
            counted_by_tokenize: ok.iter().filter(|r| r.usage_source == UsageSource::Tokenize).count(),
            latency: latencies(ok.iter().copied()),
            by_class,
            goodput,
            requests: if keep_requests { run.records } else { vec![] },
        }
    }

    /// Whether the point missed the SLO attainment asked for.
    pub fn missed_slo(&self, min_attainment: f64) -> bool {
        self.goodput.as_ref().is_some_and(|g| g.attainment < min_attainment)
    }
}

fn f(s: &Option<Summary>, pick: fn(&Summary) -> f64) -> String {
    s.as_ref().map_or("–".into(), |s| format!("{:.1}", pick(s)))
}

/// A markdown table, one row per point.
pub fn markdown(reports: &[Report]) -> String {
    let mut out = String::from(
        "| point | done | failed | req/s | out tok/s | total tok/s | items/s | TTFT p50 / p90 / p99 ms | TPOT p50 / p90 / p99 ms | ITL p50 / p90 / p99 ms | E2E p50 / p99 ms | goodput req/s | peak conc. |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let l = &r.latency;
        let three = |s: &Option<Summary>| format!("{} / {} / {}", f(s, |s| s.median), f(s, |s| s.p90), f(s, |s| s.p99));
        out += &format!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            r.label,
            r.completed,
            r.failed,
            r.request_throughput,
            r.output_token_throughput,
            r.total_token_throughput,
            r.item_throughput.map_or("–".into(), |x| format!("{x:.2}")),
            three(&l.ttft_ms),
            three(&l.tpot_ms),
            three(&l.itl_ms),
            f(&l.e2e_ms, |s| s.median),
            f(&l.e2e_ms, |s| s.p99),
            r.goodput.as_ref().map_or("–".into(), |g| format!("{:.2} ({:.0} %)", g.requests_per_s, g.attainment * 100.0)),
            r.peak_concurrency,
        );
    }
    for r in reports.iter().filter(|r| !r.by_class.is_empty()) {
        out += &format!("\n{} by request class:\n\n| class | TTFT p50 / p99 ms | ITL p50 / p99 ms | E2E p50 ms |\n|---|---|---|---|\n", r.label);
        for (c, l) in &r.by_class {
            out +=
                &format!("| {c} | {} / {} | {} / {} | {} |\n", f(&l.ttft_ms, |s| s.median), f(&l.ttft_ms, |s| s.p99), f(&l.itl_ms, |s| s.median), f(&l.itl_ms, |s| s.p99), f(&l.e2e_ms, |s| s.median));
        }
    }
    out
}

/// The failures of every point, grouped by reason, with one example detail each; empty when
/// nothing failed.
pub fn error_summary(reports: &[Report], examples: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for r in reports.iter().filter(|r| r.failed > 0) {
        out += &format!("{}: {} of {} requests failed\n", r.label, r.failed, r.failed + r.completed);
        for (reason, n) in &r.failed_by_reason {
            out += &format!("  {n:>6} × {reason}");
            if let Some(e) = examples.get(reason) {
                out += &format!(" — e.g. {e}");
            }
            out += "\n";
        }
    }
    out
}
