//! `hhh-server`: the CLI entry point. `hhh-server serve --model <path> --host <addr> --port <n>`;
//! every flag can also be set through an `HHH_*` environment variable (see `--help`).
//!
//! Signals: the first SIGTERM or SIGINT starts the drain (see `hhh_server::serve`); the process
//! exits 0 once it is done. A second signal exits at once (status 130).

use clap::{Parser, Subcommand};
use hhh_server::train::TrainArgs;
use hhh_server::{start, LogFormat, ServeArgs};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(name = "hhh-server", version, about = "OpenAI-compatible inference server for HHH assistants")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load a model and serve the OpenAI-compatible API.
    Serve(Box<ServeArgs>),
    /// Fit a linear reward head on a model's final hidden states from preference pairs
    /// (Bradley–Terry; see docs/preference-model.md).
    TrainRewardHead(TrainArgs),
    /// Check the GPU path on a CUDA device (kernels against their CPU twins, GPU against CPU
    /// decoding, benchmarks) and write JSON; `--dry-run` runs it on the CPU (docs/gpu.md).
    GpuCheck(hhh_server::gpu_check::GpuCheckArgs),
    /// Run a batch input file (OpenAI batch JSONL) offline, without a listening port: the same
    /// routes as /v1/batches, results appended as they finish, --resume after a crash.
    RunBatch(Box<hhh_server::batch::RunBatchArgs>),
    /// Fit a P(IK) head for the model from arithmetic questions whose correctness it measures
    /// by sampling (see docs/honesty.md); serve it with --pik-head.
    TrainPikHead(Box<hhh_server::train::pik::PikTrainArgs>),
    /// Run model-written-evaluation files (Anthropic's `evals` JSONL) through
    /// /v1/evals/behavior offline; writes summary.json and behavior.svg (docs/honesty.md).
    EvalBehavior(Box<hhh_server::honesty::EvalBehaviorArgs>),
    /// Score every attention head for induction (prefix matching, copying) and the model's
    /// in-context learning; writes induction.json and a heatmap (docs/interpretability.md).
    Induction(Box<hhh_server::interp::InductionArgs>),
    /// Fit in-distribution activation statistics (mean, shrunk covariance of one layer's
    /// last-token hidden state) from prompt files; serve them with --ood-stats.
    FitOod(Box<hhh_server::train::ood::FitOodArgs>),
}

/// candle sizes its own CPU pools from the environment only: set it here, while this is the
/// only thread (the model runner takes --threads from its config).
fn set_threads(threads: Option<usize>) {
    if let Some(t) = threads {
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", t.to_string());
    }
}

fn main() -> anyhow::Result<()> {
    hhh_model::runner::limit_malloc_arenas();
    match Cli::parse().cmd {
        Cmd::Serve(args) => {
            set_threads(args.threads);
            serve_main(*args)
        }
        Cmd::TrainRewardHead(args) => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
            tracing_subscriber::fmt().with_env_filter(filter).init();
            hhh_server::train::run(args)
        }
        Cmd::RunBatch(args) => {
            set_threads(args.serve.threads);
            run_batch_main(*args)
        }
        Cmd::TrainPikHead(args) => {
            set_threads(args.serve.threads);
            offline_main(hhh_server::train::pik::run(*args))
        }
        Cmd::EvalBehavior(args) => {
            set_threads(args.serve.threads);
            offline_main(hhh_server::honesty::eval_behavior(*args))
        }
        Cmd::FitOod(args) => {
            set_threads(args.serve.threads);
            offline_main(hhh_server::train::ood::fit_ood(*args))
        }
        Cmd::Induction(args) => {
            set_threads(args.serve.threads);
            offline_main(hhh_server::interp::induction(*args))
        }
        Cmd::GpuCheck(args) => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
            tracing_subscriber::fmt().with_env_filter(filter).init();
            hhh_server::gpu_check::run(args)
        }
    }
}

#[tokio::main]
async fn run_batch_main(args: hhh_server::batch::RunBatchArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    hhh_server::batch::run_batch(args).await
}

/// An offline command on a runtime, logging warnings to stderr.
#[tokio::main]
async fn offline_main(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    f.await
}

#[tokio::main]
async fn serve_main(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt().json().flatten_event(true).with_current_span(false).with_env_filter(filter).init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutdown signal received: draining (send it again to exit at once)");
        let _ = tx.send(());
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    let server = start(args).await?;
    server
        .run(async {
            let _ = rx.await;
        })
        .await?;
    tracing::info!("shut down cleanly");
    Ok(())
}
