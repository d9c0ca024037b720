//! Out-of-distribution detection from activations (as in Bai et al., 2022, §5.4 of the HH-RLHF
//! paper): the Mahalanobis distance of a request's hidden state at one layer (its last token,
//! through the engine's inspection path) from a Gaussian fitted on in-distribution prompts
//! (`hhh-server fit-ood`, loaded with `--ood-stats`).
//!
//! Statistics file (JSON):
//!
//! ```json
//! {"format": "hhh-ood-stats", "version": 1, "model": "...", "layer": 20, "prompt_format": "chat",
//!  "dim": 576, "n_fit": 800, "shrinkage": 0.1, "mean": [...], "precision": [[...], ...],
//!  "calibration": [sorted held-out distances], "threshold": 31.2, "metadata": {...}}
//! ```
//!
//! `precision` is the inverse of the shrunk covariance; `threshold` the 99th percentile of the
//! held-out calibration distances.

use crate::error::ApiError;
use crate::state::FeedbackModel;
use hhh_engine::InspectRequest;
use hhh_proto::{OodItem, PromptFormat};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file's format tag.
pub const OOD_FORMAT: &str = "hhh-ood-stats";
/// Most inputs per `/v1/ood/score` call.
pub const MAX_INPUTS: usize = 256;
/// Longest input, in characters.
pub const MAX_INPUT_CHARS: usize = 16 * 1024;

/// Fitted in-distribution statistics. Invariants (checked on load): `mean.len() == dim`,
/// `precision` is `dim × dim`, `calibration` is sorted and non-empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodStats {
    pub format: String,
    pub version: u32,
    pub model: String,
    pub layer: usize,
    pub prompt_format: PromptFormat,
    pub dim: usize,
    pub n_fit: usize,
    /// Ledoit–Wolf weight of the scaled identity in the shrunk covariance.
    pub shrinkage: f64,
    pub mean: Vec<f64>,
    pub precision: Vec<Vec<f64>>,
    /// Held-out in-distribution distances, ascending.
    pub calibration: Vec<f64>,
    pub threshold: f64,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl OodStats {
    /// Read and check a statistics file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let s: OodStats = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if s.format != OOD_FORMAT || s.version != 1 {
            return Err(format!("{}: not a `{OOD_FORMAT}` version 1 file", path.display()));
        }
        let square = s.precision.len() == s.dim && s.precision.iter().all(|r| r.len() == s.dim);
        if s.mean.len() != s.dim || !square || s.calibration.is_empty() || s.calibration.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("{}: shapes do not match `dim` {} (or the calibration distances are empty or unsorted)", path.display(), s.dim));
        }
        Ok(s)
    }

    /// `sqrt((x - mean)ᵀ precision (x - mean))`, in f64.
    pub fn distance(&self, x: &[f32]) -> f64 {
        let d: Vec<f64> = x.iter().zip(&self.mean).map(|(&a, &m)| a as f64 - m).collect();
        let q: f64 = self.precision.iter().zip(&d).map(|(row, &di)| di * row.iter().zip(&d).map(|(p, dj)| p * dj).sum::<f64>()).sum();
        q.max(0.0).sqrt()
    }

    /// Fraction of the calibration distances below `d`.
    pub fn score(&self, d: f64) -> f64 {
        self.calibration.partition_point(|&c| c < d) as f64 / self.calibration.len() as f64
    }

    /// The scored item.
    pub fn item(&self, index: usize, x: &[f32]) -> OodItem {
        let distance = self.distance(x);
        OodItem { index, distance, score: self.score(distance), ood: distance > self.threshold }
    }
}

/// The hidden state after `layer` at the last token of each prompt (one inspection each).
pub async fn hidden_states(fm: &FeedbackModel, layer: usize, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ApiError> {
    let mut out = Vec::with_capacity(prompts.len());
    for ids in prompts {
        let r = fm.engine.inspect(InspectRequest { tokens: ids.clone(), hidden_layers: vec![layer], ..Default::default() }).await?;
        out.push(r.hidden.into_iter().next().unwrap_or_default());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> OodStats {
        OodStats {
            format: OOD_FORMAT.into(),
            version: 1,
            model: "m".into(),
            layer: 1,
            prompt_format: PromptFormat::Text,
            dim: 2,
            n_fit: 10,
            shrinkage: 0.0,
            mean: vec![1.0, -1.0],
            precision: vec![vec![2.0, 0.5], vec![0.5, 1.0]],
            calibration: vec![0.5, 1.0, 2.0, 4.0],
            threshold: 3.0,
            metadata: serde_json::Value::Null,
        }
    }

    #[test]
    fn distance_is_the_mahalanobis_formula() {
        let s = stats();
        // d = (1, 2): dᵀPd = 2 + 2 * 0.5 * 2 + 4 = 8.
        assert!((s.distance(&[2.0, 1.0]) - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.distance(&[1.0, -1.0]), 0.0);
        let it = s.item(3, &[2.0, 1.0]);
        assert_eq!((it.index, it.score, it.ood), (3, 0.75, false));
        assert!(s.item(0, &[5.0, 5.0]).ood);
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("hhh-ood-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.json");
        let mut s = stats();
        std::fs::write(&p, serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(OodStats::from_file(&p).unwrap(), s);
        s.precision.pop();
        std::fs::write(&p, serde_json::to_string(&s).unwrap()).unwrap();
        assert!(OodStats::from_file(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
