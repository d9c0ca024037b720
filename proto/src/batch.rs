//! The OpenAI Files and Batch APIs' wire types (`/v1/files`, `/v1/batches`) and the JSONL line
//! formats of batch input and output files.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An uploaded or generated file (`object: "file"`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct FileObject {
    pub id: String,
    /// Always `"file"`.
    pub object: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: u64,
    pub filename: String,
    /// `batch` for batch input; `batch_output` for the output and error files a batch writes.
    pub purpose: String,
    /// Always `"processed"` (files are checked when uploaded).
    pub status: String,
}

/// `GET /v1/files`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct FileList {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<FileObject>,
    pub has_more: bool,
}

/// `DELETE /v1/files/{id}`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct FileDeleted {
    pub id: String,
    /// Always `"file"`.
    pub object: String,
    pub deleted: bool,
}

/// `POST /v1/batches`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct CreateBatchRequest {
    /// A file uploaded with `purpose: "batch"`.
    pub input_file_id: String,
    /// The route the lines target (`/v1/chat/completions`, `/v1/completions`, `/v1/rewards`,
    /// `/v1/preferences`, `/v1/harmlessness/...`). Lines may name any of these routes; this one is
    /// recorded on the batch as OpenAI does.
    pub endpoint: String,
    /// `"24h"` (OpenAI's only window); other values of the form `<hours>h` are accepted.
    pub completion_window: String,
    /// Up to 16 string pairs, returned with the batch.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// How many lines of a batch are done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct RequestCounts {
    pub total: u64,
    /// Lines answered with a 2xx status (written to the output file).
    pub completed: u64,
    /// Lines that failed (written to the error file).
    pub failed: u64,
}

/// One problem with a batch as a whole.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BatchError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// 1-based line of the input file, where the problem is one line's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// `errors` of a batch.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BatchErrors {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<BatchError>,
}

/// A batch (`object: "batch"`). Status goes `validating → in_progress → finalizing →
/// completed`, or ends `failed`, `expired`, or (`cancelling →`) `cancelled`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct Batch {
    pub id: String,
    /// Always `"batch"`.
    pub object: String,
    pub endpoint: String,
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: String,
    /// Answers with a 2xx status, in input order (set when the batch ends).
    pub output_file_id: Option<String>,
    /// Lines that failed, in input order (set when the batch ends and some line failed).
    pub error_file_id: Option<String>,
    pub created_at: u64,
    pub in_progress_at: Option<u64>,
    pub expires_at: Option<u64>,
    pub finalizing_at: Option<u64>,
    pub completed_at: Option<u64>,
    pub failed_at: Option<u64>,
    pub expired_at: Option<u64>,
    pub cancelling_at: Option<u64>,
    pub cancelled_at: Option<u64>,
    pub request_counts: RequestCounts,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `GET /v1/batches` (newest first; `after` and `limit` page through it).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BatchList {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<Batch>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// One line of a batch input file.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BatchInputLine {
    /// Unique within the file; output lines carry it.
    pub custom_id: String,
    /// Always `"POST"`.
    pub method: String,
    /// The route, e.g. `/v1/chat/completions`.
    pub url: String,
    /// The request body, as the route takes it.
    pub body: serde_json::Value,
}

/// The route's answer to one line.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BatchLineResponse {
    pub status_code: u16,
    pub request_id: String,
    pub body: serde_json::Value,
}

/// Why a line got no answer from a route (it could not be read, or named no route).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BatchLineError {
    pub code: String,
    pub message: String,
}

/// One line of a batch output or error file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct BatchOutputLine {
    pub id: String,
    /// The input line's `custom_id` (`null` when the line could not be read).
    pub custom_id: Option<String>,
    pub response: Option<BatchLineResponse>,
    pub error: Option<BatchLineError>,
}
