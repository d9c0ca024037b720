//! The accept loop and the drain.
//!
//! We run our own hyper accept loop (instead of `axum::serve`) for two things axum does not
//! expose: a header read timeout (slowloris protection) and accepting connections *during* the
//! drain, so that late requests get a clear 503 instead of a refused connection.
//!
//! Shutdown sequence (first SIGTERM/SIGINT): readiness and every API route turn 503 at once;
//! in-flight requests run to completion for up to `shutdown_timeout`; then the engine aborts
//! whatever is left (streams end with an error event, non-streaming requests get a 503); then
//! open connections are closed gracefully and `run` returns.

use axum::Router;
use hhh_api::AppState;
use hhh_engine::EngineClient;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

/// Accept and serve connections until `stop` resolves, then close them gracefully.
pub async fn serve_until(listener: TcpListener, app: Router, header_read_timeout: Duration, stop: impl Future<Output = ()>) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(app.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open 5 s after the drain; closing them");
    }
}

/// Drain after the shutdown signal (see the module docs).
pub async fn drain(state: &AppState, engine: &EngineClient, shutdown_timeout: Duration) {
    state.draining.store(true, Ordering::SeqCst);
    state.metrics.draining.set(1);
    let n = state.inflight.get();
    tracing::info!(in_flight = n, timeout_s = shutdown_timeout.as_secs_f64(), "draining: no new requests; waiting for in-flight ones");
    if tokio::time::timeout(shutdown_timeout, state.inflight.wait_idle()).await.is_err() {
        tracing::warn!(in_flight = state.inflight.get(), "shutdown timeout reached: aborting the remaining requests");
    }
    engine.shutdown();
    if tokio::time::timeout(Duration::from_secs(5), state.inflight.wait_idle()).await.is_err() {
        tracing::warn!(in_flight = state.inflight.get(), "requests still in flight after the abort");
    }
    tracing::info!("drained");
}
