//! Driving one load point: closed loop (`max_concurrency`), open loop (`request_rate`, Poisson
//! or gamma arrivals), or both; bounded by a request count and/or a duration.

use crate::client::{execute, RequestRecord, Target};
use crate::workload::RequestSpec;
use crate::LoadtestError;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How one point sends its requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointConfig {
    /// Requests in flight at most (`None`: unbounded).
    pub max_concurrency: Option<usize>,
    /// Mean arrivals per second (`None`: all at once, limited only by `max_concurrency`).
    pub request_rate: Option<f64>,
    /// Gamma shape of the inter-arrival times: 1 is Poisson, < 1 burstier, > 1 more regular.
    pub burstiness: f64,
    /// Stop issuing after this many requests (`None`: only the duration bounds the run).
    pub num_requests: Option<usize>,
    /// Stop issuing after this long, in seconds (in-flight requests still finish).
    pub duration_s: Option<f64>,
    pub seed: u64,
}

/// What a point produced.
#[derive(Debug, Clone)]
pub struct PointRun {
    pub records: Vec<RequestRecord>,
    /// From the first request sent to the last one finished.
    pub duration_s: f64,
}

/// A hard cap on the requests one point may issue, whatever the flags (every loop is bounded).
pub const MAX_REQUESTS_PER_POINT: usize = 1_000_000;

/// Send `warmup` requests one at a time (not recorded); fails if any of them fails, so a
/// misconfigured run stops before measuring.
pub async fn warm_up(http: &reqwest::Client, target: &Target, workload: &[RequestSpec], warmup: usize) -> Result<(), LoadtestError> {
    for i in 0..warmup {
        let r = execute(http, target, &workload[i % workload.len()], 0.0).await;
        if !r.ok {
            return Err(LoadtestError::Warmup(format!("{}: {}", r.error.unwrap_or_default(), r.detail.unwrap_or_default())));
        }
    }
    Ok(())
}

/// Run one point. `workload` is cycled; the progress bar is drawn on stderr when it is a
/// terminal and `progress` is set.
/// Request `i` of the point is `workload[(offset + i) % len]`, so successive points of a sweep can
/// send different prompts (a point must not be measured on prompts an earlier one cached).
pub async fn run_point(http: &reqwest::Client, target: &Target, workload: &[RequestSpec], offset: usize, cfg: &PointConfig, progress: bool) -> Result<PointRun, LoadtestError> {
    if workload.is_empty() {
        return Err(LoadtestError::Config("empty workload".into()));
    }
    if cfg.num_requests.is_none() && cfg.duration_s.is_none() {
        return Err(LoadtestError::Config("give a number of requests or a duration".into()));
    }
    let limit = cfg.num_requests.unwrap_or(MAX_REQUESTS_PER_POINT).min(MAX_REQUESTS_PER_POINT);
    let gaps = match cfg.request_rate {
        Some(r) if r.is_finite() && r > 0.0 => {
            let b = if cfg.burstiness > 0.0 { cfg.burstiness } else { 1.0 };
            Some(Gamma::new(b, 1.0 / (r * b)).map_err(|e| LoadtestError::Config(format!("--request-rate/--burstiness: {e}")))?)
        }
        Some(r) if !(r.is_infinite() && r > 0.0) => return Err(LoadtestError::Config(format!("--request-rate {r} must be > 0"))),
        _ => None,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let sem = cfg.max_concurrency.map(|c| Arc::new(Semaphore::new(c.max(1))));
    let bar = if progress {
        let b = match cfg.num_requests {
            Some(n) => ProgressBar::new(n as u64),
            None => ProgressBar::new_spinner(),
        };
        b.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} requests {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        b
    } else {
        ProgressBar::hidden()
    };
    let t0 = Instant::now();
    let deadline = cfg.duration_s.map(|d| t0 + Duration::from_secs_f64(d));
    let mut inflight = FuturesUnordered::new();
    let mut records = Vec::new();
    let mut next_send = t0;
    let mut failed = 0usize;
    for i in 0..limit {
        if let Some(g) = &gaps {
            next_send += Duration::from_secs_f64(g.sample(&mut rng));
        }
        // Wait for the send time (finishing requests meanwhile), then for a concurrency slot.
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) || next_send <= now {
                break;
            }
            let wake = deadline.map_or(next_send, |d| d.min(next_send));
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                Some(r) = inflight.next(), if !inflight.is_empty() => { collect(r, &mut records, &mut failed, &bar); }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let permit = match &sem {
            Some(s) => loop {
                tokio::select! {
                    p = s.clone().acquire_owned() => break Some(p.map_err(|e| LoadtestError::Config(e.to_string()))?),
                    Some(r) = inflight.next(), if !inflight.is_empty() => { collect(r, &mut records, &mut failed, &bar); }
                }
            },
            None => None,
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let (http, target, spec) = (http.clone(), target.clone(), workload[(offset + i) % workload.len()].clone());
        let start_s = t0.elapsed().as_secs_f64();
        inflight.push(tokio::spawn(async move {
            let r = execute(&http, &target, &spec, start_s).await;
            drop(permit);
            r
        }));
    }
    while let Some(r) = inflight.next().await {
        collect(r, &mut records, &mut failed, &bar);
    }
    bar.finish_and_clear();
    records.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let first = records.first().map_or(0.0, |r| r.start_s);
    let last = records.iter().map(|r| r.start_s + r.e2e_s).fold(0.0, f64::max);
    Ok(PointRun { records, duration_s: (last - first).max(0.0) })
}

fn collect(r: Result<RequestRecord, tokio::task::JoinError>, records: &mut Vec<RequestRecord>, failed: &mut usize, bar: &ProgressBar) {
    let rec = r.unwrap_or_else(|e| RequestRecord {
        ok: false,
        error: Some("client task".into()),
        detail: Some(e.to_string()),
        class: "all".into(),
        start_s: 0.0,
        e2e_s: 0.0,
        ttft_s: None,
        chunk_times_s: vec![],
        prompt_tokens: 0,
        output_tokens: 0,
        cached_tokens: None,
        usage_source: crate::client::UsageSource::None,
        items: 0,
    });
    *failed += usize::from(!rec.ok);
    records.push(rec);
    bar.inc(1);
    if *failed > 0 {
        bar.set_message(format!("({failed} failed)"));
    }
}
