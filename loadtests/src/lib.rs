//! hhh-loadtest: a serving benchmark for OpenAI-compatible servers (ours, vLLM, llama.cpp's
//! server, …). It reports what vLLM's `bench serve`, SGLang's `bench_serving` and GuideLLM
//! report — request and token throughput, TTFT / TPOT / ITL / E2E percentiles, goodput under
//! SLOs, failures by reason — for chat, synthetic, prefix-sharing, long-prompt, reward-scoring
//! and constitutional-comparison scenarios, one point or a sweep, with JSON, markdown and SVG
//! output. Token counts come from the server's `usage` (or its `/tokenize`), never from guesses.

pub mod client;
pub mod plot;
pub mod report;
pub mod runner;
pub mod sse;
pub mod stats;
pub mod sweep;
pub mod workload;

/// Errors of the load tester (request failures are not errors: they are counted in reports).
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("warm-up request failed: {0}")]
    Warmup(String),
    #[error("writing output: {0}")]
    Output(String),
}
