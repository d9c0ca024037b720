//! The text crate's error type.

/// Errors from tokenization or templating.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("io error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("GGUF: {0}")]
    Gguf(String),
}
