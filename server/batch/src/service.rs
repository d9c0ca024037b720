//! The batch service: its store, and the runner task that works through unfinished batches,
//! oldest first, a bounded number of lines in flight at batch priority.

use crate::error::BatchError;
use crate::line_run::{self, Outcome};
use crate::lines::{self, Line, LineLimits};
use crate::store::{Store, FINAL};
use futures::StreamExt;
use hhh_api::{ApiError, AppState};
use hhh_proto::batch::{Batch, BatchError as WireError, BatchErrors, FileObject, RequestCounts};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Settings of the batch service (`serve` flags).
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Where the database and the files live (created on start).
    pub data_dir: PathBuf,
    /// Largest uploaded file, in bytes.
    pub max_file_bytes: u64,
    pub lines: LineLimits,
    /// Batch lines in flight at once (each may be several engine requests); bounded so that the
    /// admission queue never fills with batch work.
    pub max_in_flight: usize,
}

/// Batch lines in flight at most while interactive requests are being served.
const INTERACTIVE_IN_FLIGHT: usize = 4;
/// How long after the last interactive request the runner widens to `max_in_flight` again.
const INTERACTIVE_QUIET: Duration = Duration::from_secs(2);

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The store, the runner's wake-up and the pending cancellations.
pub struct BatchService {
    pub store: Arc<Store>,
    pub cfg: BatchConfig,
    pub state: AppState,
    wake: Notify,
    /// Batches a client asked to cancel (their status is already `cancelling`).
    cancel: Mutex<HashSet<String>>,
}

impl BatchService {
    /// Open the store under `cfg.data_dir`.
    pub fn open(state: AppState, cfg: BatchConfig) -> Result<Arc<Self>, BatchError> {
        let store = Arc::new(Store::open(&cfg.data_dir)?);
        Ok(Arc::new(Self { store, cfg, state, wake: Notify::new(), cancel: Mutex::new(HashSet::new()) }))
    }

    /// Run `f` on the store off the async threads.
    pub async fn db<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> Result<T, BatchError> + Send + 'static) -> Result<T, ApiError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| ApiError::internal(e.to_string()))??)
    }

    /// Tell the runner there is work (a new batch, a cancellation).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Mark `id` for cancellation (its status is already `cancelling`).
    pub fn request_cancel(&self, id: &str) {
        if let Ok(mut c) = self.cancel.lock() {
            c.insert(id.to_string());
        }
        self.notify();
    }

    fn cancel_requested(&self, id: &str) -> bool {
        self.cancel.lock().map(|c| c.contains(id)).unwrap_or(false)
    }

    fn stopping(&self) -> bool {
        self.state.draining.load(Ordering::SeqCst)
    }

    /// Start the runner task; it ends when the server drains (unfinished batches resume after a
    /// restart).
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.run().await })
    }

    async fn run(self: Arc<Self>) {
        while !self.stopping() {
            self.publish_gauges().await;
            let ids = self.db(|s| s.unfinished()).await.unwrap_or_default();
            for id in ids {
                if self.stopping() {
                    break;
                }
                if let Err(e) = self.process(&id).await {
                    tracing::error!(batch = %id, error = %e, "batch step failed; retried later");
                }
            }
            self.publish_gauges().await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    async fn publish_gauges(&self) {
        if let Ok(counts) = self.db(|s| s.status_counts()).await {
            let m = &self.state.metrics;
            for st in hhh_metrics::BATCH_STATUSES {
                m.batches.with_label_values(&[st]).set(counts.iter().find(|(s, _)| s == st).map_or(0, |c| c.1));
            }
        }
    }

    async fn process(&self, id: &str) -> Result<(), ApiError> {
        let key = id.to_string();
        let Some((owner, mut b)) = self.db(move |s| s.batch(None, &key)).await? else { return Ok(()) };
        if FINAL.contains(&b.status.as_str()) {
            return Ok(());
        }
        if b.status == "cancelling" || self.cancel_requested(id) {
            return self.finalize(&owner, b, "cancelled").await;
        }
        if b.expires_at.is_some_and(|e| now() >= e) {
            return self.finalize(&owner, b, "expired").await;
        }
        if b.status == "finalizing" {
            return self.finalize(&owner, b, "completed").await;
        }
        let input = self.store.path_of(&b.input_file_id);
        let bytes = match tokio::fs::read(&input).await {
            Ok(b) => b,
            Err(e) => return self.fail(&owner, b, "input_file_missing", format!("The input file {} cannot be read: {e}.", input.display())).await,
        };
        let lines = match lines::parse(&bytes, self.cfg.lines) {
            Ok(l) => l,
            Err(e) => return self.fail(&owner, b, "invalid_file", e.to_string()).await,
        };
        if b.status == "validating" {
            b.status = "in_progress".into();
            b.in_progress_at = Some(now());
            let (o, bb) = (owner.clone(), b.clone());
            self.db(move |s| s.put_batch(&o, &bb)).await?;
            self.publish_gauges().await;
        }
        let key = id.to_string();
        let done = self.db(move |s| s.done_lines(&key)).await?;
        let pending: Vec<Line> = lines.into_iter().filter(|l| !done.contains(&l.number())).collect();
        let queue = &self.state.metrics.batch_queue_lines;
        queue.set(pending.len() as i64);
        // Lines in flight: max_in_flight, or INTERACTIVE_IN_FLIGHT while interactive requests
        // are in flight or were within the last INTERACTIVE_QUIET (each batch row makes every
        // step longer, and an interactive request waits for the step in flight).
        let mut pending = pending.into_iter();
        let mut results = futures::stream::FuturesUnordered::new();
        let mut last_interactive: Option<std::time::Instant> = None;
        let mut stopped = false;
        loop {
            if self.state.interactive.get() > 0 {
                last_interactive = Some(std::time::Instant::now());
            }
            let quiet = last_interactive.is_none_or(|t| t.elapsed() > INTERACTIVE_QUIET);
            let limit = if quiet { self.cfg.max_in_flight.max(1) } else { self.cfg.max_in_flight.clamp(1, INTERACTIVE_IN_FLIGHT) };
            while results.len() < limit {
                let Some(l) = pending.next() else { break };
                results.push(line_run::run(&self.state, l));
            }
            let next = if results.len() < limit || quiet {
                results.next().await
            } else {
                // Also look again at interactive traffic now and then, to widen when it is gone.
                match tokio::time::timeout(Duration::from_millis(250), results.next()).await {
                    Ok(n) => n,
                    Err(_) => continue,
                }
            };
            let Some(outcome) = next else { break };
            let Outcome::Done(r) = outcome else {
                stopped = true;
                break;
            };
            let (ok, (pt, ct)) = (r.ok, line_run::usage_of(&r.json));
            let key = id.to_string();
            if let Err(e) = self.db(move |s| s.put_result(&key, &r)).await {
                // Nothing was committed for this line: it runs again on the next pass.
                tracing::error!(batch = %id, error = %e.message, "committing a line failed; the batch pauses");
                stopped = true;
                break;
            }
            let m = &self.state.metrics;
            m.batch_requests.with_label_values(&[if ok { "completed" } else { "failed" }]).inc();
            m.batch_tokens.with_label_values(&["prompt"]).inc_by(pt);
            m.batch_tokens.with_label_values(&["completion"]).inc_by(ct);
            queue.dec();
            if self.stopping() || self.cancel_requested(id) || b.expires_at.is_some_and(|e| now() >= e) {
                stopped = true;
                break;
            }
        }
        // Dropping the stream aborts the lines still in flight (they were not committed).
        drop(results);
        queue.set(0);
        if stopped {
            if self.cancel_requested(id) {
                return self.finalize(&owner, b, "cancelled").await;
            }
            if b.expires_at.is_some_and(|e| now() >= e) {
                return self.finalize(&owner, b, "expired").await;
            }
            return Ok(());
        }
        self.finalize(&owner, b, "completed").await
    }

    async fn fail(&self, owner: &str, mut b: Batch, code: &str, message: String) -> Result<(), ApiError> {
        b.errors = Some(BatchErrors { object: "list".into(), data: vec![WireError { code: code.into(), message, param: Some("input_file_id".into()), line: None }] });
        self.finalize(owner, b, "failed").await
    }

    /// Write the output and error files from the committed results and end the batch as
    /// `status`. Idempotent: a crash part-way leaves the batch `finalizing` (or `cancelling`),
    /// and the next pass writes the same files again under the same ids.
    async fn finalize(&self, owner: &str, mut b: Batch, status: &str) -> Result<(), ApiError> {
        let t = now();
        if status == "completed" && b.status != "finalizing" {
            b.status = "finalizing".into();
            b.finalizing_at = Some(t);
            let (o, bb) = (owner.to_string(), b.clone());
            self.db(move |s| s.put_batch(&o, &bb)).await?;
        }
        let key = b.id.clone();
        let results = self.db(move |s| s.results(&key)).await?;
        let (ok, bad): (Vec<_>, Vec<_>) = results.iter().partition(|r| r.ok);
        let mut ids = (None, None);
        for (which, rows, suffix) in [(0, &ok, "output"), (1, &bad, "errors")] {
            if rows.is_empty() {
                continue;
            }
            let mut text = String::new();
            for r in rows.iter() {
                text.push_str(&r.json);
                text.push('\n');
            }
            let file = FileObject {
                id: format!("file-{}-{suffix}", b.id.trim_start_matches("batch_")),
                object: "file".into(),
                bytes: text.len() as u64,
                created_at: t,
                filename: format!("{}_{suffix}.jsonl", b.id),
                purpose: "batch_output".into(),
                status: "processed".into(),
            };
            let (o, f) = (owner.to_string(), file.clone());
            self.db(move |s| s.put_file(&o, &f, text.as_bytes())).await?;
            if which == 0 {
                ids.0 = Some(file.id);
            } else {
                ids.1 = Some(file.id);
            }
        }
        b.output_file_id = ids.0;
        b.error_file_id = ids.1;
        b.request_counts = RequestCounts { total: b.request_counts.total, completed: ok.len() as u64, failed: bad.len() as u64 };
        b.status = status.into();
        match status {
            "completed" => b.completed_at = Some(t),
            "cancelled" => b.cancelled_at = Some(t),
            "expired" => b.expired_at = Some(t),
            _ => b.failed_at = Some(t),
        }
        let (o, bb) = (owner.to_string(), b.clone());
        self.db(move |s| s.put_batch(&o, &bb)).await?;
        if let Ok(mut c) = self.cancel.lock() {
            c.remove(&b.id);
        }
        self.publish_gauges().await;
        tracing::info!(batch = %b.id, status, completed = b.request_counts.completed, failed = b.request_counts.failed, "batch ended");
        Ok(())
    }
}
