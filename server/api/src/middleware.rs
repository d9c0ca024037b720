//! The one middleware every request passes: request id, API keys, drain, in-flight tracking,
//! response-status metrics and the access log line.
//!
//! The in-flight guard and the log line live inside the response body, so a streaming response
//! counts as in flight until its last byte is sent (or the client goes away).

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// Per-request context, put into the request extensions for handlers.
#[derive(Debug)]
pub struct RequestCtx {
    /// From `X-Request-Id` (if printable and at most 128 bytes) or generated.
    pub id: String,
    /// When the request arrived (before the body was read): TTFT and e2e start here.
    pub arrival: Instant,
    /// Filled in by handlers for the access log.
    pub log: Mutex<LogFields>,
}

/// What a handler reports for the access log line.
#[derive(Debug, Default, Clone)]
pub struct LogFields {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub ttft_s: Option<f64>,
    pub finish_reason: Option<String>,
}

impl RequestCtx {
    /// Update the log fields (poisoning cannot lose more than a log line).
    pub fn note(&self, f: impl FnOnce(&mut LogFields)) {
        if let Ok(mut g) = self.log.lock() {
            f(&mut g);
        }
    }
}

/// Requests in flight on the API routes, for the drain.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    changed: Notify,
}

impl InFlight {
    pub fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    /// Wait until nothing is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let n = self.changed.notified();
            if self.get() == 0 {
                return;
            }
            n.await;
        }
    }
}

struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    fn new(f: &Arc<InFlight>) -> Self {
        f.count.fetch_add(1, Ordering::SeqCst);
        Self(f.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Routes behind API keys and the drain: everything but the probes, `/metrics` and the
/// playground page (whose own calls carry the key). The online-RL admin routes and the scoring
/// routes outside `/v1/` (`/get_reward`, `/pooling`) included.
fn is_api(path: &str) -> bool {
    !(path == "/" || path == "/playground" || path == "/metrics" || path == "/health" || path.starts_with("/health/"))
}

fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

/// Reason label for a rejected request, from its status.
fn reject_reason(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        401 => Some("unauthorized"),
        408 => Some("timeout"),
        429 => Some("overloaded"),
        503 => Some("draining"),
        400..=499 => Some("validation"),
        _ => None,
    }
}

/// Written when the response body is finished or dropped.
struct Done {
    st: AppState,
    ctx: Arc<RequestCtx>,
    method: String,
    path: String,
    status: StatusCode,
    completed: bool,
    _inflight: Option<InFlightGuard>,
    _interactive: Option<InFlightGuard>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let f = self.ctx.log.lock().map(|g| g.clone()).unwrap_or_default();
        if !self.completed {
            self.st.metrics.rejected("disconnected");
        }
        if !is_api(&self.path) {
            // Probes and scrapes: kept out of the default log.
            tracing::debug!(target: "hhh::access", path = %self.path, status = self.status.as_u16(), "request");
            return;
        }
        tracing::info!(
            target: "hhh::access",
            request_id = %self.ctx.id,
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            completed = self.completed,
            prompt_tokens = f.prompt_tokens,
            completion_tokens = f.completion_tokens,
            finish_reason = f.finish_reason.as_deref().unwrap_or("-"),
            ttft_ms = f.ttft_s.map(|t| (t * 1e3).round() as i64).unwrap_or(-1),
            latency_ms = self.ctx.arrival.elapsed().as_millis() as u64,
            "request"
        );
    }
}

/// The middleware (see the module docs).
pub async fn track(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let ctx = Arc::new(RequestCtx { id: request_id(&req), arrival: Instant::now(), log: Mutex::new(LogFields::default()) });
    let path = req.uri().path().to_string();
    let api = is_api(&path);
    // Created before the handler runs: if the client goes away mid-handler, axum drops this
    // future and `done` still logs the request (status 499, as nginx does) and counts it.
    let mut done = Done {
        st: st.clone(),
        ctx: ctx.clone(),
        method: req.method().to_string(),
        path,
        status: StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        completed: false,
        _inflight: None,
        _interactive: None,
    };
    let mut resp = if api && !st.api_keys.allows(req.headers()) {
        ApiError::unauthorized().into_response()
    } else if api && st.draining.load(Ordering::SeqCst) {
        ApiError::draining().into_response()
    } else {
        if api {
            done._inflight = Some(InFlightGuard::new(&st.inflight));
            if !(done.path.starts_with("/v1/files") || done.path.starts_with("/v1/batches")) {
                done._interactive = Some(InFlightGuard::new(&st.interactive));
            }
        }
        req.extensions_mut().insert(ctx.clone());
        let (resp, ignored) = crate::validate::IGNORED
            .scope(Default::default(), async {
                let resp = next.run(req).await;
                (resp, crate::validate::IGNORED.with(|v| v.take()))
            })
            .await;
        let mut resp = resp;
        if let Ok(v) = HeaderValue::from_str(&ignored.join(", ")) {
            if !ignored.is_empty() {
                resp.headers_mut().insert("x-hhh-ignored-fields", v);
            }
        }
        resp
    };
    let status = resp.status();
    done.status = status;
    if let Ok(v) = HeaderValue::from_str(&ctx.id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    st.metrics.http_responses.with_label_values(&[status.as_str()]).inc();
    if let Some(r) = reject_reason(status) {
        st.metrics.rejected(r);
    }
    let (parts, body) = resp.into_parts();
    let body = async_stream::stream! {
        let mut inner = body.into_data_stream();
        while let Some(chunk) = inner.next().await {
            yield chunk;
        }
        done.completed = true;
        drop(done);
    };
    Response::from_parts(parts, Body::from_stream(body))
}
