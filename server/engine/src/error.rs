//! The engine crate's error type.

/// Errors raised by the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine thread has stopped; no more requests can be served.
    #[error("the engine has stopped")]
    Stopped,
    /// A request can never be scheduled (it needs more KV blocks than the pool has).
    #[error("request needs {needed} KV-cache blocks but the pool only has {total}")]
    TooLarge { needed: usize, total: usize },
    /// The model executor could not start.
    #[error("model execution failed: {0}")]
    Executor(#[from] crate::executor::ExecutorError),
    /// The admission queue is full (`--max-waiting-requests` / `--max-waiting-tokens`).
    #[error("the server is overloaded: {what} would exceed the limit of {limit}")]
    Overloaded { what: &'static str, limit: usize },
    /// The executor refused new weights (the old ones keep serving).
    #[error("weight update failed: {0}")]
    WeightUpdate(String),
    /// The executor could not capture activations for an inspection request.
    #[error("inspection failed: {0}")]
    Inspect(String),
    /// Invalid configuration.
    #[error("invalid engine configuration: {0}")]
    Config(String),
}
