//! `hhh-server induction`: run `/v1/interpretability/induction` offline on a model and write
//! `induction.json` (the response) and `induction.svg` (a layers × heads heatmap of the
//! prefix-matching scores, the copying score in each cell) — docs/interpretability.md.

use crate::{load, warm_up, Loaded, ServeArgs};
use anyhow::Context;
use clap::Args;
use hhh_engine::Priority;
use hhh_proto::InductionResponse;
use std::path::PathBuf;

/// Flags of `hhh-server induction`.
#[derive(Args, Debug, Clone)]
pub struct InductionArgs {
    /// Directory for `induction.json` and `induction.svg` (created).
    #[arg(long, default_value = "induction")]
    pub out_dir: PathBuf,
    /// Length of each random sequence (shown twice).
    #[arg(long, default_value_t = 50)]
    pub seq_len: usize,
    /// Random sequences to average over.
    #[arg(long, default_value_t = 8)]
    pub num_sequences: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Texts for the in-context learning score: a JSONL file with a `text` field per line, or
    /// plain text with one text per line.
    #[arg(long)]
    pub icl_texts: Option<PathBuf>,
    /// Use at most this many ICL texts (the ones long enough, in file order).
    #[arg(long, default_value_t = 64)]
    pub icl_limit: usize,
    /// The two ICL positions.
    #[arg(long, num_args = 2, default_values_t = [50, 500])]
    pub icl_positions: Vec<usize>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Run the command; prints the top heads.
pub async fn induction(a: InductionArgs) -> anyhow::Result<()> {
    let Loaded { state, engine, extra_engines } = load(&a.serve).await?;
    warm_up(&engine).await?;
    let mut body = serde_json::json!({"seq_len": a.seq_len, "num_sequences": a.num_sequences, "seed": a.seed, "top_k": 20, "icl_positions": a.icl_positions});
    if let Some(f) = &a.icl_texts {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let later = a.icl_positions.get(1).copied().unwrap_or(500);
        let mut texts = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let t = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) if v["text"].is_string() => v["text"].as_str().unwrap_or_default().to_string(),
                _ => line.to_string(),
            };
            // Only texts long enough for the later position (the route refuses shorter ones).
            if state.tokenizer.encode(&t, true).map(|ids| ids.len() > later).unwrap_or(false) {
                texts.push(t);
            }
            if texts.len() >= a.icl_limit {
                break;
            }
        }
        anyhow::ensure!(!texts.is_empty(), "{}: no text has more than {later} tokens", f.display());
        body["icl_texts"] = serde_json::json!(texts);
    }
    let started = std::time::Instant::now();
    let d = hhh_api::dispatch(&state, "/v1/interpretability/induction", serde_json::to_vec(&body)?, "induction".into(), Priority::Batch).await.map_err(|e| anyhow::anyhow!("{e}"));
    engine.shutdown();
    for e in &extra_engines {
        e.shutdown();
    }
    let d = d?;
    anyhow::ensure!(d.status == 200, "HTTP {}: {}", d.status, String::from_utf8_lossy(&d.body));
    let r: InductionResponse = serde_json::from_slice(&d.body)?;
    std::fs::create_dir_all(&a.out_dir).with_context(|| format!("creating {}", a.out_dir.display()))?;
    std::fs::write(a.out_dir.join("induction.json"), serde_json::to_string_pretty(&r)?)?;
    std::fs::write(a.out_dir.join("induction.svg"), heatmap(&r))?;
    let summary =
        serde_json::json!({"model": r.model, "seconds": started.elapsed().as_secs_f64(), "top_heads": r.top_heads.iter().take(10).collect::<Vec<_>>(), "repeated_loss": r.repeated_loss, "icl": r.icl});
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Layers (rows) × heads (columns), cell shade = prefix-matching score (white 0 → dark blue 1),
/// the score and the copying score printed in each cell.
pub fn heatmap(r: &InductionResponse) -> String {
    let (cell_w, cell_h, left, top) = (64.0, 26.0, 60.0, 56.0);
    let w = left + cell_w * r.num_heads as f64 + 20.0;
    let h = top + cell_h * r.num_layers as f64 + 30.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"10\">\n<title>Prefix-matching scores, {m}</title>\n<text x=\"10\" y=\"18\" font-size=\"13\">Prefix matching (shade, top number) and copying (logits, bottom) per head, {m}</text>\n<text x=\"10\" y=\"34\">seq_len {n}, {k} sequences, seed {seed}</text>\n",
        m = xml_escape(&r.model),
        n = r.seq_len,
        k = r.num_sequences,
        seed = r.seed
    );
    for hd in 0..r.num_heads {
        s += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">head {hd}</text>\n", left + cell_w * (hd as f64 + 0.5), top - 6.0);
    }
    for (l, row) in r.prefix_matching.iter().enumerate() {
        let y = top + cell_h * l as f64;
        s += &format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">layer {l}</text>\n", left - 6.0, y + cell_h / 2.0 + 4.0);
        for (hd, &v) in row.iter().enumerate() {
            let x = left + cell_w * hd as f64;
            let v = v.clamp(0.0, 1.0);
            let (rr, gg, bb) = ((255.0 - 225.0 * v) as u8, (255.0 - 180.0 * v) as u8, (255.0 - 87.0 * v) as u8);
            let ink = if v > 0.5 { "white" } else { "black" };
            let copy = r.copying.get(l).and_then(|c| c.get(hd)).copied().unwrap_or(0.0);
            s += &format!("<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell_w}\" height=\"{cell_h}\" fill=\"rgb({rr},{gg},{bb})\" stroke=\"#ddd\"/>\n");
            s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{ink}\">{v:.2} / {copy:+.2}</text>\n", x + cell_w / 2.0, y + cell_h / 2.0 + 4.0);
        }
    }
    s + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_has_a_cell_per_head_and_shades_by_score() {
        let r = InductionResponse {
            object: String::new(),
            created: 0,
            model: "m<1>".into(),
            num_layers: 2,
            num_heads: 3,
            seq_len: 5,
            num_sequences: 1,
            seed: 0,
            prefix_matching: vec![vec![0.0, 1.0, 0.5], vec![0.1, 0.2, 0.3]],
            copying: vec![vec![0.0; 3]; 2],
            top_heads: vec![],
            repeated_loss: hhh_proto::RepeatedLoss { first_copy: 1.0, second_copy: 0.5 },
            icl: None,
            tokens: 10,
        };
        let svg = heatmap(&r);
        assert_eq!(svg.matches("<rect").count(), 6);
        assert!(svg.contains("rgb(255,255,255)") && svg.contains("rgb(30,75,168)"), "0 is white, 1 dark blue");
        assert!(svg.contains("m&lt;1&gt;"));
    }
}
