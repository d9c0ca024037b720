//! A sweep: warm up once, run each point in turn, write one JSON per point, a markdown summary
//! and the plots.

use crate::client::Target;
use crate::report::{self, Report};
use crate::runner::{self, PointConfig};
use crate::stats::Slo;
use crate::workload::RequestSpec;
use crate::LoadtestError;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything a sweep needs.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub scenario: String,
    pub target: Target,
    /// Cycled; the warm-up takes the first requests and each point continues where the last
    /// one stopped, so build it with warm-up + points × requests entries for distinct prompts.
    pub workload: Vec<RequestSpec>,
    pub points: Vec<PointConfig>,
    /// Requests sent one at a time before the first point, not measured.
    pub warmup: usize,
    pub slo: Slo,
    /// Where to write `point-*.json`, `summary.md` and the SVG plots (`None`: nowhere).
    pub out_dir: Option<PathBuf>,
    /// Keep every request's record in the reports (needed for CDF plots).
    pub keep_requests: bool,
    pub progress: bool,
    /// Reuse connections between requests (see [`http_client`]).
    pub keep_alive: bool,
}

/// The reports, in point order, and one example failure detail per failure reason.
#[derive(Debug, Clone)]
pub struct SweepResult {
    pub reports: Vec<Report>,
    pub error_examples: BTreeMap<String, String>,
}

/// One HTTP client for the whole run, no proxies. With `keep_alive` idle connections are reused;
/// without it every request opens its own connection (the default: servers that close kept-alive
/// connections after a response, as llama.cpp's does, otherwise fail requests sent on a
/// connection they are closing — "connection closed before message completed").
pub fn http_client(max_concurrency: usize, keep_alive: bool) -> Result<reqwest::Client, LoadtestError> {
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(if keep_alive { max_concurrency.max(16) } else { 0 }).build().map_err(|e| LoadtestError::Config(e.to_string()))
}

/// Run the sweep (see the module docs).
pub async fn run_sweep(cfg: &SweepConfig) -> Result<SweepResult, LoadtestError> {
    let widest = cfg.points.iter().filter_map(|p| p.max_concurrency).max().unwrap_or(256);
    let http = http_client(widest, cfg.keep_alive)?;
    runner::warm_up(&http, &cfg.target, &cfg.workload, cfg.warmup).await?;
    if let Some(d) = &cfg.out_dir {
        std::fs::create_dir_all(d).map_err(|e| LoadtestError::Output(format!("{}: {e}", d.display())))?;
    }
    let mut reports = Vec::new();
    let mut error_examples = BTreeMap::new();
    let mut offset = cfg.warmup;
    for p in &cfg.points {
        if cfg.progress {
            eprintln!("{}: {}", cfg.scenario, report::label(p));
        }
        let run = runner::run_point(&http, &cfg.target, &cfg.workload, offset, p, cfg.progress).await?;
        offset += run.records.len();
        for r in run.records.iter().filter(|r| !r.ok) {
            error_examples.entry(r.error.clone().unwrap_or_default()).or_insert_with(|| r.detail.clone().unwrap_or_default());
        }
        let rep = Report::new(&cfg.scenario, p, run, &cfg.slo, cfg.keep_requests);
        if let Some(d) = &cfg.out_dir {
            let name = format!("point-{}.json", rep.label.replace([',', '='], "_"));
            write(d.join(name), &serde_json::to_string_pretty(&rep).map_err(|e| LoadtestError::Output(e.to_string()))?)?;
        }
        reports.push(rep);
    }
    if let Some(d) = &cfg.out_dir {
        write(d.join("summary.md"), &format!("# {} sweep against {}\n\n{}", cfg.scenario, cfg.target.base_url, report::markdown(&reports)))?;
        crate::plot::write_plots(d, &reports)?;
    }
    Ok(SweepResult { reports, error_examples })
}

fn write(path: PathBuf, text: &str) -> Result<(), LoadtestError> {
    std::fs::write(&path, text).map_err(|e| LoadtestError::Output(format!("{}: {e}", path.display())))
}
