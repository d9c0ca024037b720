//! hhh-batch: offline batch jobs for dataset generation — OpenAI's Files and Batch APIs
//! (`/v1/files`, `/v1/batches`) with durable state in SQLite, a runner that feeds batch lines to
//! the engine at batch priority behind interactive traffic, and `hhh-server run-batch`.
//!
//! ```text
//! routes     /v1/files, /v1/batches (behind the API router's middleware: keys, drain, logs)
//!   │
//! service    the runner task: unfinished batches oldest first, lines in flight bounded,
//!   │        results committed one by one, output/error files written at the end
//! offline    run-batch: a file in, a file out, --resume, --shard-index/--num-shards
//!   │
//! line_run   one line → hhh_api::dispatch (the same routes as over HTTP) at Priority::Batch
//! lines      reading input files (whole-file problems vs per-line errors)
//! store      SQLite + the files' bytes under --data-dir
//! ```

pub mod error;
pub mod line_run;
pub mod lines;
pub mod offline;
pub mod routes;
pub mod service;
pub mod store;

pub use error::BatchError;
pub use lines::LineLimits;
pub use service::{BatchConfig, BatchService};
