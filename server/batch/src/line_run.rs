//! Running one input line through the API routes in-process, at batch priority.

use crate::lines::Line;
use crate::store::LineResult;
use hhh_api::AppState;
use hhh_engine::Priority;
use hhh_proto::batch::{BatchLineError, BatchLineResponse, BatchOutputLine};
use std::time::Duration;

/// A line's outcome.
pub enum Outcome {
    /// Commit this result.
    Done(LineResult),
    /// The server is stopping (503): commit nothing; the line runs again after a restart.
    Stopped,
}

/// A new output-line id.
pub fn request_id() -> String {
    format!("batch_req_{:024x}", rand::random::<u128>() >> 32)
}

fn result(line: u64, custom_id: Option<String>, out: &BatchOutputLine, ok: bool) -> LineResult {
    // Serializing these plain structs cannot fail; fall back to an empty object to stay total.
    LineResult { line, custom_id, ok, json: serde_json::to_string(out).unwrap_or_else(|_| "{}".into()) }
}

/// Run `line`. A full admission queue (429) is waited out, never written as a failure.
pub async fn run(state: &AppState, line: Line) -> Outcome {
    let (line, custom_id, url, body) = match line {
        Line::Bad { line, custom_id, code, message } => {
            let out = BatchOutputLine { id: request_id(), custom_id: custom_id.clone(), response: None, error: Some(BatchLineError { code: code.into(), message }) };
            return Outcome::Done(result(line, custom_id, &out, false));
        }
        Line::Request { line, custom_id, url, body } => (line, custom_id, url, body),
    };
    let id = request_id();
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut wait = Duration::from_millis(50);
    loop {
        match hhh_api::dispatch(state, &url, bytes.clone(), id.clone(), Priority::Batch).await {
            Ok(d) if d.status == 429 => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Ok(d) if d.status == 503 => return Outcome::Stopped,
            Ok(d) => {
                let body = serde_json::from_slice(&d.body).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&d.body).into_owned()));
                let ok = (200..300).contains(&d.status);
                let out = BatchOutputLine { id: id.clone(), custom_id: Some(custom_id.clone()), response: Some(BatchLineResponse { status_code: d.status, request_id: id, body }), error: None };
                return Outcome::Done(result(line, Some(custom_id), &out, ok));
            }
            Err(e) => {
                let out = BatchOutputLine { id, custom_id: Some(custom_id.clone()), response: None, error: Some(BatchLineError { code: "internal_error".into(), message: e.message }) };
                return Outcome::Done(result(line, Some(custom_id), &out, false));
            }
        }
    }
}

/// Prompt and completion tokens in a result's `usage`, for the metrics.
pub fn usage_of(json: &str) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let u = &v["response"]["body"]["usage"];
    (u["prompt_tokens"].as_u64().unwrap_or(0), u["completion_tokens"].as_u64().unwrap_or(0))
}
