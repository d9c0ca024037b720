//! `hhh-server run-batch`: a batch input file in, an output file out, without a listening port.
//!
//! Lines run through the same routes and line runner as `/v1/batches`; every result (answers and
//! errors, vLLM's `run-batch` layout) is appended to the output file as soon as it is known, so
//! after a crash `--resume` keeps the finished lines (a torn last line is cut off) and runs only
//! the others. Lines that cannot be read are written first, in input order, so that a resumed
//! run can tell which of them (they have no `custom_id`) are already there.

use crate::error::BatchError;
use crate::line_run::{self, Outcome};
use crate::lines::{self, Line, LineLimits};
use futures::StreamExt;
use hhh_api::AppState;
use std::collections::HashSet;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// Options of one offline run.
#[derive(Debug, Clone)]
pub struct OfflineOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Keep what `output` already holds and run only the missing lines.
    pub resume: bool,
    /// `(index, count)`: run only the lines whose position among the file's non-empty lines is
    /// `index` modulo `count` (one shard of an indexed Kubernetes Job).
    pub shard: Option<(usize, usize)>,
    pub max_in_flight: usize,
    pub lines: LineLimits,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines of this shard.
    pub total: usize,
    /// Already in the output file (with `resume`).
    pub skipped: usize,
    /// Answered with a 2xx status.
    pub completed: usize,
    /// Failed (an error line, or a non-2xx answer).
    pub failed: usize,
}

/// The `custom_id`s already in an output file, and how many lines without one; a torn last line
/// (no newline: the process died while writing it) is cut off.
async fn already_done(path: &std::path::Path) -> Result<(HashSet<String>, usize), BatchError> {
    let io = |what: &str, e| BatchError::io(format!("{what} {}", path.display()), e);
    let text = match tokio::fs::read(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((HashSet::new(), 0)),
        Err(e) => return Err(io("reading", e)),
    };
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < text.len() {
        let f = tokio::fs::OpenOptions::new().write(true).open(path).await.map_err(|e| io("opening", e))?;
        f.set_len(keep as u64).await.map_err(|e| io("truncating", e))?;
    }
    let (mut ids, mut anonymous) = (HashSet::new(), 0);
    for l in text[..keep].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(l)?;
        match v["custom_id"].as_str() {
            Some(id) => {
                ids.insert(id.to_string());
            }
            None => anonymous += 1,
        }
    }
    Ok((ids, anonymous))
}

/// Run the file.
pub async fn run(state: &AppState, o: &OfflineOptions) -> Result<Summary, BatchError> {
    let bytes = tokio::fs::read(&o.input).await.map_err(|e| BatchError::io(format!("reading {}", o.input.display()), e))?;
    let all = lines::parse(&bytes, o.lines)?;
    let (count, index) = o.shard.map_or((1, 0), |(i, n)| (n.max(1), i));
    let mine: Vec<Line> = all.into_iter().enumerate().filter(|(i, _)| i % count == index).map(|(_, l)| l).collect();
    if o.output.exists() && !o.resume {
        return Err(BatchError::Usage(format!("{} exists: pass --resume to finish it, or remove it", o.output.display())));
    }
    let (done, mut anonymous_done) = if o.resume { already_done(&o.output).await? } else { (HashSet::new(), 0) };
    let mut summary = Summary { total: mine.len(), ..Default::default() };
    let (mut unreadable, mut requests) = (Vec::new(), Vec::new());
    for l in mine {
        let skip = match l.custom_id() {
            Some(id) => done.contains(id),
            None if anonymous_done > 0 => {
                anonymous_done -= 1;
                true
            }
            None => false,
        };
        if skip {
            summary.skipped += 1;
        } else if matches!(l, Line::Bad { .. }) {
            unreadable.push(l);
        } else {
            requests.push(l);
        }
    }
    if let Some(parent) = o.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await.map_err(|e| BatchError::io(format!("creating {}", parent.display()), e))?;
    }
    let mut out = tokio::fs::OpenOptions::new().create(true).append(true).open(&o.output).await.map_err(|e| BatchError::io(format!("opening {}", o.output.display()), e))?;
    let bar = indicatif::ProgressBar::new((unreadable.len() + requests.len()) as u64);
    if o.progress {
        bar.set_style(indicatif::ProgressStyle::with_template("{elapsed_precise} {wide_bar} {pos}/{len} lines {per_sec} eta {eta}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut write = async |r: &crate::store::LineResult, summary: &mut Summary| -> Result<(), BatchError> {
        let mut line = r.json.clone().into_bytes();
        line.push(b'\n');
        out.write_all(&line).await.map_err(|e| BatchError::io(format!("writing {}", o.output.display()), e))?;
        if r.ok {
            summary.completed += 1;
        } else {
            summary.failed += 1;
        }
        bar.inc(1);
        Ok(())
    };
    // Unreadable lines first, in input order: they finish at once.
    for l in unreadable {
        if let Outcome::Done(r) = line_run::run(state, l).await {
            write(&r, &mut summary).await?;
        }
    }
    let mut results = futures::stream::iter(requests).map(|l| line_run::run(state, l)).buffer_unordered(o.max_in_flight.max(1));
    while let Some(outcome) = results.next().await {
        match outcome {
            Outcome::Done(r) => write(&r, &mut summary).await?,
            Outcome::Stopped => return Err(BatchError::Usage("the engine stopped before the batch finished; run again with --resume".into())),
        }
    }
    out.flush().await.map_err(|e| BatchError::io(format!("writing {}", o.output.display()), e))?;
    bar.finish();
    Ok(summary)
}
