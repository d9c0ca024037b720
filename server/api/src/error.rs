//! Every HTTP error goes through [`ApiError`]: one place maps errors to status codes and the
//! OpenAI error shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hhh_proto::{ErrorBody, ErrorResponse};

impl From<hhh_engine::EngineError> for ApiError {
    fn from(e: hhh_engine::EngineError) -> Self {
        use hhh_engine::EngineError as E;
        match e {
            E::Overloaded { .. } => ApiError::overloaded(e.to_string(), 1),
            E::TooLarge { .. } => ApiError::bad_request(e.to_string()),
            E::Stopped => ApiError::unavailable(e.to_string()),
            E::WeightUpdate(_) => ApiError::invalid("model_path", e.to_string()),
            E::Executor(_) | E::Config(_) | E::Inspect(_) => ApiError::internal(e.to_string()),
        }
    }
}

/// An error returned to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The offending request field, when there is one.
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds for the `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400 naming the field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), param: Some(param.to_string()), code: None, retry_after: None }
    }
    /// 400 without a specific field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), param: None, code: None, retry_after: None }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into(), param: None, code: None, retry_after: None }
    }
    pub fn method_not_allowed() -> Self {
        Self { status: StatusCode::METHOD_NOT_ALLOWED, message: "Method not allowed on this route.".into(), param: None, code: None, retry_after: None }
    }
    pub fn model_not_found(model: &str) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: format!("The model `{model}` does not exist."), param: Some("model".into()), code: Some("model_not_found".into()), retry_after: None }
    }
    pub fn too_large(limit: usize) -> Self {
        Self { status: StatusCode::PAYLOAD_TOO_LARGE, message: format!("Request body exceeds the limit of {limit} bytes."), param: None, code: None, retry_after: None }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, message: message.into(), param: None, code: None, retry_after: None }
    }
    /// 429: the admission queue is full; the client should retry after `retry_after` seconds.
    pub fn overloaded(message: impl Into<String>, retry_after: u64) -> Self {
        Self { status: StatusCode::TOO_MANY_REQUESTS, message: message.into(), param: None, code: Some("overloaded".into()), retry_after: Some(retry_after) }
    }
    /// 503 while draining before shutdown.
    pub fn draining() -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, message: "The server is shutting down and accepts no new requests.".into(), param: None, code: Some("draining".into()), retry_after: Some(1) }
    }
    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "Missing or invalid API key: send `Authorization: Bearer <key>`.".into(),
            param: None,
            code: Some("invalid_api_key".into()),
            retry_after: None,
        }
    }
    /// 408: the request ran past `--request-timeout`.
    pub fn timeout(secs: f64) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!("The request exceeded the server's request timeout of {secs} s."),
            param: None,
            code: Some("request_timeout".into()),
            retry_after: None,
        }
    }
    /// 413 naming the field and the limit.
    pub fn too_large_field(param: &str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::PAYLOAD_TOO_LARGE, message: message.into(), param: Some(param.to_string()), code: None, retry_after: None }
    }
    /// 507: the server's disk is full.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INSUFFICIENT_STORAGE, message: message.into(), param: None, code: Some("storage_full".into()), retry_after: None }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into(), param: None, code: None, retry_after: None }
    }

    /// The OpenAI `type` string for this status: the single source for body and logs.
    pub fn error_type(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::METHOD_NOT_ALLOWED => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::REQUEST_TIMEOUT => "timeout_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            _ => "internal_server_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorResponse {
        ErrorResponse { error: ErrorBody { message: self.message.clone(), kind: self.error_type().into(), param: self.param.clone(), code: self.code.clone() } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        r
    }
}
