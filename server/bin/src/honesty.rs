//! Honesty and behaviour evaluations on the command line: loading `--pik-head`, and
//! `hhh-server eval-behavior FILE…`, which runs whole model-written-evaluation files through
//! `/v1/evals/behavior` in-process (the same route, validation and engine as over HTTP) with a
//! progress bar, and writes a JSON summary, an SVG bar chart of the matching-behaviour rates and
//! the per-item probabilities.

use crate::{load, warm_up, Loaded, ServeArgs};
use anyhow::Context;
use clap::Args;
use hhh_api::honesty::PikHead;
use hhh_engine::Priority;
use hhh_model::RewardHead;
use hhh_proto::{BehaviorEvalResponse, PromptFormat};
use std::path::{Path, PathBuf};

/// Read a P(IK) head file: a one-label reward-head file whose `metadata.prompt_format` is
/// `text` or `chat`.
pub fn load_pik_head(path: &Path) -> anyhow::Result<PikHead> {
    let h = RewardHead::from_file(path).with_context(|| format!("loading the P(IK) head {}", path.display()))?;
    anyhow::ensure!(h.num_labels == 1, "{}: a P(IK) head has one label, this file has {}", path.display(), h.num_labels);
    let format = match h.metadata.get("prompt_format").and_then(|f| f.as_str()) {
        Some("text") => PromptFormat::Text,
        Some("chat") => PromptFormat::Chat,
        other => anyhow::bail!("{}: metadata.prompt_format must be \"text\" or \"chat\", found {other:?}", path.display()),
    };
    Ok(PikHead { weight: h.weight, bias: h.bias.first().copied().unwrap_or(0.0), format })
}

/// Flags of `hhh-server eval-behavior`.
#[derive(Args, Debug, Clone)]
pub struct EvalBehaviorArgs {
    /// Files in Anthropic's `evals` JSONL format (`question`, `answer_matching_behavior`,
    /// `answer_not_matching_behavior`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Directory for `summary.json`, `behavior.svg` and `items.jsonl` (one line per item)
    /// (created).
    #[arg(long, default_value = "eval-behavior")]
    pub out_dir: PathBuf,
    /// Use the first N items of each file (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Items per /v1/evals/behavior call.
    #[arg(long, default_value_t = 64)]
    pub items_per_call: usize,
    /// Ask lettered-choice items in both orders.
    #[arg(long)]
    pub debias: bool,
    /// Prompt format (default: chat when the model has a template).
    #[arg(long, value_parser = ["text", "chat"])]
    pub format: Option<String>,
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// One file's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileSummary {
    pub behavior: String,
    pub file: String,
    pub items: usize,
    pub matching_rate: f64,
    pub matching_rate_stderr: f64,
    pub mean_p_matching: f64,
}

fn read_items(path: &Path, limit: usize) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
        out.push(serde_json::json!({"question": v["question"], "answer_matching_behavior": v["answer_matching_behavior"], "answer_not_matching_behavior": v["answer_not_matching_behavior"]}));
        if limit > 0 && out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Run the command; prints the summary JSON.
pub async fn eval_behavior(a: EvalBehaviorArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=hhh_api::honesty::behavior::MAX_ITEMS).contains(&a.items_per_call), "--items-per-call must be between 1 and {}", hhh_api::honesty::behavior::MAX_ITEMS);
    let files: Vec<(PathBuf, Vec<serde_json::Value>)> = a.files.iter().map(|f| Ok((f.clone(), read_items(f, a.limit)?))).collect::<anyhow::Result<_>>()?;
    let Loaded { state, engine, extra_engines } = load(&a.serve).await?;
    warm_up(&engine).await?;
    let total: usize = files.iter().map(|f| f.1.len()).sum();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{elapsed_precise} {wide_bar} {pos}/{len} items {per_sec} eta {eta} {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    if a.quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = std::time::Instant::now();
    let mut summaries = Vec::new();
    let mut per_item = String::new();
    let mut format = None;
    let result: anyhow::Result<()> = async {
        for (path, items) in &files {
            let behavior = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            bar.set_message(behavior.clone());
            let mut ps = Vec::with_capacity(items.len());
            for (ci, chunk) in items.chunks(a.items_per_call).enumerate() {
                let mut body = serde_json::json!({"items": chunk, "debias": a.debias});
                if let Some(f) = &a.format {
                    body["format"] = serde_json::json!(f);
                }
                let d = hhh_api::dispatch(&state, "/v1/evals/behavior", serde_json::to_vec(&body)?, format!("eval-{behavior}-{ci}"), Priority::Batch).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::ensure!(d.status == 200, "{} items {}..: HTTP {}: {}", path.display(), ci * a.items_per_call, d.status, String::from_utf8_lossy(&d.body));
                let r: BehaviorEvalResponse = serde_json::from_slice(&d.body)?;
                format = Some(r.format);
                for d in &r.data {
                    let line = serde_json::json!({"behavior": behavior, "index": ci * a.items_per_call + d.index, "p_matching": d.p_matching, "p_matching_original": d.p_matching_original, "p_matching_reversed": d.p_matching_reversed, "matches": d.matches});
                    per_item.push_str(&line.to_string());
                    per_item.push('\n');
                }
                ps.extend(r.data);
                bar.inc(chunk.len() as u64);
            }
            let s = hhh_api::honesty::behavior::summarise(&ps);
            summaries.push(FileSummary {
                behavior,
                file: path.display().to_string(),
                items: s.items,
                matching_rate: s.matching_rate,
                matching_rate_stderr: s.matching_rate_stderr,
                mean_p_matching: s.mean_p_matching,
            });
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    engine.shutdown();
    for e in &extra_engines {
        e.shutdown();
    }
    result?;
    let secs = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&a.out_dir).with_context(|| format!("creating {}", a.out_dir.display()))?;
    let summary = serde_json::json!({
        "model": state.model_name, "format": format, "debias": a.debias, "items": total, "seconds": secs, "items_per_second": total as f64 / secs.max(1e-9),
        "behaviors": summaries,
    });
    std::fs::write(a.out_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    std::fs::write(a.out_dir.join("behavior.svg"), bar_chart(&summaries, &state.model_name))?;
    std::fs::write(a.out_dir.join("items.jsonl"), per_item)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A horizontal bar chart: one bar per behaviour (matching rate, ±1 standard error), a line at
/// 50 %.
pub fn bar_chart(rows: &[FileSummary], model: &str) -> String {
    let (label_w, plot_w, row_h, top) = (330.0, 400.0, 22.0, 40.0);
    let h = top + row_h * rows.len() as f64 + 40.0;
    let x = |r: f64| label_w + r.clamp(0.0, 1.0) * plot_w;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<title>Matching-behaviour rate, {m}</title>\n<text x=\"10\" y=\"20\" font-size=\"14\">Matching-behaviour rate ({m}; bars ±1 s.e.)</text>\n",
        w = label_w + plot_w + 60.0,
        m = xml_escape(model)
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} (n={})</text>\n", label_w - 6.0, y + 15.0, xml_escape(&r.behavior), r.items);
        s += &format!("<rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"#4c78a8\"/>\n", y + 4.0, x(r.matching_rate) - label_w, row_h - 8.0);
        let (lo, hi) = (x(r.matching_rate - r.matching_rate_stderr), x(r.matching_rate + r.matching_rate_stderr));
        s += &format!("<line x1=\"{lo:.1}\" x2=\"{hi:.1}\" y1=\"{c}\" y2=\"{c}\" stroke=\"black\"/>\n", c = y + row_h / 2.0);
        s += &format!("<text x=\"{:.1}\" y=\"{}\">{:.0}%</text>\n", x(r.matching_rate.max(0.0)) + 8.0, y + 15.0, r.matching_rate * 100.0);
    }
    let bottom = top + row_h * rows.len() as f64;
    s += &format!("<line x1=\"{m:.1}\" x2=\"{m:.1}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>\n", m = x(0.5));
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        s += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.0}%</text>\n", x(t), bottom + 16.0, t * 100.0);
    }
    s + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_one_bar_per_behavior_and_escapes_names() {
        let r = |b: &str, rate: f64| FileSummary { behavior: b.into(), file: String::new(), items: 10, matching_rate: rate, matching_rate_stderr: 0.1, mean_p_matching: rate };
        let svg = bar_chart(&[r("a<b", 0.3), r("c", 0.9)], "m");
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        assert!(svg.contains("width=\"120.0\""), "30 % of 400 px: {svg}");
    }
}
