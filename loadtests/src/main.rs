//! `hhh-loadtest`: drive an OpenAI-compatible server and report TTFT, TPOT, ITL, E2E,
//! throughput and goodput; see `loadtests/README.md`.

use clap::Parser;
use hhh_loadtest::client::Target;
use hhh_loadtest::runner::PointConfig;
use hhh_loadtest::stats::Slo;
use hhh_loadtest::sweep::{run_sweep, SweepConfig};
use hhh_loadtest::workload::{self, ScenarioConfig};
use hhh_loadtest::{report, LoadtestError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "hhh-loadtest", about = "Serving benchmark for OpenAI-compatible servers")]
struct Cli {
    /// Server address, without `/v1`.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    base_url: String,
    /// Model name to send (default: the first of `/v1/models`).
    #[arg(long)]
    model: Option<String>,
    /// Bearer token.
    #[arg(long, env = "HHH_LOADTEST_API_KEY")]
    api_key: Option<String>,
    /// chat | random | shared-prefix | long-prompt | rewards | harmlessness
    #[arg(long, default_value = "chat")]
    scenario: String,
    /// Concurrency limit(s); a comma-separated list sweeps.
    #[arg(long, value_delimiter = ',')]
    max_concurrency: Vec<usize>,
    /// Arrival rate(s) in requests/s (`inf`: all at once); a comma-separated list sweeps.
    #[arg(long, value_delimiter = ',')]
    request_rate: Vec<f64>,
    /// Gamma shape of inter-arrival times (1: Poisson).
    #[arg(long, default_value_t = 1.0)]
    burstiness: f64,
    /// Requests per point (default 64 unless --duration is given).
    #[arg(long)]
    num_requests: Option<usize>,
    /// Seconds per point: stop issuing after this long.
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Unmeasured requests sent one at a time before the first point.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Directory for point-*.json, summary.md and plots.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Prompt tokens (random, shared-prefix, long-prompt short requests).
    #[arg(long, default_value_t = 128)]
    input_len: usize,
    /// max_tokens of generation requests.
    #[arg(long, default_value_t = 128)]
    output_len: usize,
    /// Common prefix tokens (shared-prefix).
    #[arg(long, default_value_t = 512)]
    prefix_len: usize,
    /// Prompt tokens of the long requests (long-prompt).
    #[arg(long, default_value_t = 1536)]
    long_input_len: usize,
    /// Fraction of long requests (long-prompt).
    #[arg(long, default_value_t = 0.25)]
    long_fraction: f64,
    /// Token ids drawn for synthetic prompts, `LO:HI` (half-open; keep special tokens out).
    #[arg(long, default_value = "1000:40000")]
    token_range: String,
    /// hh-rlhf JSONL for chat, rewards and harmlessness (default: loadtests/data copy).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Skip conversations longer than this (characters).
    #[arg(long, default_value_t = 1500)]
    max_prompt_chars: usize,
    /// Generate exactly --output-len tokens (ignore end-of-sequence).
    #[arg(long)]
    ignore_eos: bool,
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Principles per compare request (harmlessness; default: the server's).
    #[arg(long)]
    num_principles: Option<usize>,
    /// Goodput SLOs, e.g. `--goodput ttft:500 tpot:50` (milliseconds).
    #[arg(long, num_args = 1..)]
    goodput: Vec<String>,
    /// Exit non-zero when a point's SLO attainment is below this fraction.
    #[arg(long, default_value_t = 0.9)]
    slo_attainment: f64,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Leave per-request records out of the JSON (no CDF plot).
    #[arg(long)]
    no_per_request: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Reuse HTTP connections (default: one connection per request, which every server handles).
    #[arg(long)]
    keep_alive: bool,
}

fn points(cli: &Cli) -> Result<Vec<PointConfig>, LoadtestError> {
    if cli.max_concurrency.len() > 1 && cli.request_rate.len() > 1 {
        return Err(LoadtestError::Config("sweep either --max-concurrency or --request-rate, not both".into()));
    }
    let num_requests = cli.num_requests.or(if cli.duration.is_some() { None } else { Some(64) });
    let conc: Vec<Option<usize>> = if cli.max_concurrency.is_empty() { vec![None] } else { cli.max_concurrency.iter().map(|&c| Some(c)).collect() };
    let rates: Vec<Option<f64>> = if cli.request_rate.is_empty() { vec![None] } else { cli.request_rate.iter().map(|&r| Some(r)).collect() };
    if conc.contains(&Some(0)) {
        return Err(LoadtestError::Config("--max-concurrency must be ≥ 1".into()));
    }
    let mut out = Vec::new();
    for &r in &rates {
        for &c in &conc {
            out.push(PointConfig { max_concurrency: c, request_rate: r, burstiness: cli.burstiness, num_requests, duration_s: cli.duration, seed: cli.seed });
        }
    }
    Ok(out)
}

async fn first_model(target: &Target) -> Result<String, LoadtestError> {
    let http = hhh_loadtest::sweep::http_client(1, false)?;
    let mut req = http.get(target.url("/v1/models")).timeout(Duration::from_secs(30));
    if let Some(k) = &target.api_key {
        req = req.bearer_auth(k);
    }
    let v: serde_json::Value = req
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| LoadtestError::Config(format!("GET /v1/models: {e}")))?
        .json()
        .await
        .map_err(|e| LoadtestError::Config(format!("GET /v1/models: {e}")))?;
    v["data"][0]["id"].as_str().map(String::from).ok_or_else(|| LoadtestError::Config("/v1/models lists no model; give --model".into()))
}

async fn run(cli: Cli) -> Result<bool, LoadtestError> {
    let target = Target { base_url: cli.base_url.clone(), api_key: cli.api_key.clone(), timeout: Duration::from_secs_f64(cli.timeout.max(1.0)) };
    let points = points(&cli)?;
    let slo = Slo::parse(&cli.goodput)?;
    let model = match &cli.model {
        Some(m) => m.clone(),
        None => first_model(&target).await?,
    };
    let (lo, hi) = cli
        .token_range
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| LoadtestError::Config(format!("--token-range `{}`: expected LO:HI", cli.token_range)))?;
    let needs_pairs = matches!(cli.scenario.as_str(), "chat" | "rewards" | "harmlessness");
    let pairs = if needs_pairs {
        let path = cli.dataset.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/hh-rlhf-harmless-base-test-200.jsonl"));
        workload::read_hh_pairs(&path, cli.max_prompt_chars)?
    } else {
        vec![]
    };
    let scenario = ScenarioConfig {
        scenario: cli.scenario.clone(),
        model,
        num_requests: cli.warmup + points.iter().map(|p| p.num_requests.unwrap_or(1024)).sum::<usize>(),
        input_len: cli.input_len,
        output_len: cli.output_len,
        prefix_len: cli.prefix_len,
        long_input_len: cli.long_input_len,
        long_fraction: cli.long_fraction,
        token_range: (lo, hi),
        max_prompt_chars: cli.max_prompt_chars,
        ignore_eos: cli.ignore_eos,
        temperature: cli.temperature,
        num_principles: cli.num_principles,
        seed: cli.seed,
    };
    let cfg = SweepConfig {
        scenario: cli.scenario.clone(),
        target,
        workload: workload::build(&scenario, &pairs)?,
        points,
        warmup: cli.warmup,
        slo,
        out_dir: cli.out.clone(),
        keep_requests: !cli.no_per_request,
        progress: !cli.quiet,
        keep_alive: cli.keep_alive,
    };
    let res = run_sweep(&cfg).await?;
    println!("{}", report::markdown(&res.reports));
    let errors = report::error_summary(&res.reports, &res.error_examples);
    let missed: Vec<&str> = res.reports.iter().filter(|r| r.missed_slo(cli.slo_attainment)).map(|r| r.label.as_str()).collect();
    if !errors.is_empty() {
        eprintln!("failures:\n{errors}");
    }
    if !missed.is_empty() {
        eprintln!("SLO attainment below {:.0} % at: {}", cli.slo_attainment * 100.0, missed.join(", "));
    }
    if let Some(d) = &cli.out {
        eprintln!("wrote {}", d.display());
    }
    Ok(errors.is_empty() && missed.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
