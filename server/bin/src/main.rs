//! `hhh-server`: the CLI entry point. `hhh-server serve --model <path> --host <addr> --port <n>`;
//! every flag can also be set through an `HHH_*` environment variable (see `--help`).

use clap::{Parser, Subcommand};
use hhh_server::{start, ServeArgs};

#[derive(Parser)]
#[command(name = "hhh-server", version, about = "OpenAI-compatible inference server for HHH assistants")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load a model and serve the OpenAI-compatible API.
    Serve(ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let Cmd::Serve(args) = Cli::parse().cmd;
    let server = start(args).await?;
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
