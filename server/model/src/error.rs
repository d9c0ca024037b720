//! The model crate's error type.

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("io error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("invalid model: {0}")]
    Invalid(String),
    #[error("config.json: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
