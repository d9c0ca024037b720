//! The batch crate's errors, and their one mapping to HTTP errors.

use hhh_api::ApiError;

/// Everything that can go wrong storing or running batches.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    File(#[from] crate::lines::FileProblem),
    #[error("{0}")]
    Usage(String),
}

impl BatchError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { what: what.into(), source }
    }

    /// Whether the disk (or SQLite's database) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28),
            Self::Db(rusqlite::Error::SqliteFailure(e, _)) => e.code == rusqlite::ErrorCode::DiskFull,
            _ => false,
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        if e.is_disk_full() {
            ApiError::insufficient_storage(format!("The server's data directory is full ({e}); nothing was stored."))
        } else {
            ApiError::internal(e.to_string())
        }
    }
}
