//! Batch jobs: the `serve` flags of the Files and Batch APIs, and `hhh-server run-batch`.

use crate::{load, warm_up, Loaded, ServeArgs};
use anyhow::Context;
use clap::Args;
use hhh_api::AppState;
use hhh_batch::offline::{self, OfflineOptions};
use hhh_batch::{BatchConfig, BatchService, LineLimits};
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of the Files and Batch APIs (`/v1/files`, `/v1/batches`) and of `run-batch`.
#[derive(Args, Debug, Clone)]
pub struct BatchArgs {
    /// Where batch state lives: an SQLite database and the uploaded and generated files
    /// (created on start; a restart on the same directory resumes unfinished batches).
    #[arg(long, env = "HHH_DATA_DIR", default_value = "hhh-data")]
    pub data_dir: PathBuf,
    /// Largest file `/v1/files` accepts, in bytes (413 above it).
    #[arg(long, env = "HHH_MAX_FILE_BYTES", default_value_t = 200 << 20)]
    pub max_file_bytes: u64,
    /// Longest line of a batch input file, in bytes (longer lines go to the error file).
    #[arg(long, env = "HHH_BATCH_MAX_LINE_BYTES", default_value_t = 1 << 20)]
    pub batch_max_line_bytes: usize,
    /// Most request lines in one batch input file.
    #[arg(long, env = "HHH_BATCH_MAX_LINES", default_value_t = 50_000)]
    pub batch_max_lines: usize,
    /// Batch lines in flight at once (each at batch priority, behind interactive requests).
    #[arg(long, env = "HHH_BATCH_MAX_IN_FLIGHT", default_value_t = 16)]
    pub batch_max_in_flight: usize,
    /// While interactive requests run or wait, batch requests get at most this many tokens of an
    /// engine step (their decode rows and prefill chunks), so that they barely slow interactive
    /// steps; with no interactive request they get the whole budget.
    #[arg(long, env = "HHH_BATCH_STEP_TOKENS", default_value_t = 4)]
    pub batch_step_tokens: usize,
    /// With no interactive request, batch requests get at most this many tokens of a step
    /// (an interactive request that arrives waits for the step in flight).
    #[arg(long, env = "HHH_BATCH_IDLE_STEP_TOKENS", default_value_t = 32)]
    pub batch_idle_step_tokens: usize,
}

impl BatchArgs {
    fn limits(&self) -> LineLimits {
        LineLimits { max_line_bytes: self.batch_max_line_bytes, max_lines: self.batch_max_lines }
    }
}

/// Open the batch store for a server (its runner starts once the server is ready).
pub fn service(a: &ServeArgs, state: AppState) -> anyhow::Result<Arc<BatchService>> {
    let b = &a.batch;
    let cfg = BatchConfig { data_dir: b.data_dir.clone(), max_file_bytes: b.max_file_bytes, lines: b.limits(), max_in_flight: b.batch_max_in_flight };
    let svc = BatchService::open(state, cfg).with_context(|| format!("opening the batch store in {}", b.data_dir.display()))?;
    tracing::info!(data_dir = %b.data_dir.display(), "batch jobs on /v1/files, /v1/batches");
    Ok(svc)
}

/// Flags of `hhh-server run-batch`.
#[derive(Args, Debug, Clone)]
pub struct RunBatchArgs {
    /// Input: JSONL lines `{custom_id, method: "POST", url, body}`.
    #[arg(short = 'i', long = "input-file")]
    pub input: PathBuf,
    /// Output: one JSONL line per input line (`{id, custom_id, response, error}`), written as
    /// each finishes.
    #[arg(short = 'o', long = "output-file")]
    pub output: PathBuf,
    /// Keep the lines the output file already has and run the others (after a crash).
    #[arg(long)]
    pub resume: bool,
    /// With --num-shards: run only the lines whose position is this index modulo the count
    /// (e.g. a Kubernetes indexed Job's completion index).
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
    pub shard_index: usize,
    /// Split the input into this many shards.
    #[arg(long, default_value_t = 1)]
    pub num_shards: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Run a batch file offline; prints a JSON summary on stdout.
pub async fn run_batch(r: RunBatchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(r.num_shards >= 1 && r.shard_index < r.num_shards, "--shard-index {} must be below --num-shards {}", r.shard_index, r.num_shards);
    let Loaded { state, engine, extra_engines } = load(&r.serve).await?;
    warm_up(&engine).await?;
    let opts = OfflineOptions {
        input: r.input.clone(),
        output: r.output.clone(),
        resume: r.resume,
        shard: (r.num_shards > 1).then_some((r.shard_index, r.num_shards)),
        max_in_flight: r.serve.batch.batch_max_in_flight,
        lines: r.serve.batch.limits(),
        progress: !r.quiet,
    };
    let started = std::time::Instant::now();
    let result = offline::run(&state, &opts).await;
    engine.shutdown();
    for e in &extra_engines {
        e.shutdown();
    }
    let s = result.with_context(|| format!("run-batch {}", r.input.display()))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"input": r.input, "output": r.output, "lines": s.total, "skipped": s.skipped, "completed": s.completed, "failed": s.failed, "seconds": secs, "lines_per_hour": (s.completed + s.failed) as f64 * 3600.0 / secs.max(1e-9)})
    );
    Ok(())
}
