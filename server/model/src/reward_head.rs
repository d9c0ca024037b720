//! Reward heads: a linear map from the final hidden state (after the model's last norm) of the
//! last token to `num_labels` scores.
//!
//! Two sources:
//! - a Hugging Face `*ForSequenceClassification` checkpoint: `score.weight` `[num_labels, hidden]`
//!   (and `score.bias` if present) in its safetensors files;
//! - an OpenRLHF reward checkpoint (`get_llm_for_sequence_regression`): the base model's
//!   weights and `value_head.weight` `[1, hidden]` (or `score.weight` with a newer
//!   `value_head_prefix`), no bias; when its `config.json` has `"normalize_reward": true`, the
//!   reward is `(r - mean) / std` with `mean` and `std` from the same file, folded into the head
//!   here (OpenRLHF's `serve_rm.py` takes `normalize_reward` from its command line instead);
//! - a head file on top of any causal LM (the default preference model), JSON:
//!
//! ```json
//! {"format": "hhh-reward-head", "version": 1, "hidden_size": 576, "num_labels": 1,
//!  "weight": [[0.01, ...]], "bias": [0.0], "metadata": {"base_model": "...", ...}}
//! ```
//!
//! `weight` has `num_labels` rows of `hidden_size` values; `metadata` is free-form (how the head
//! was made). The reward of an input is `weight · h + bias` with `h` the final hidden state.

use crate::error::{ModelError, Result};
use candle_core::{DType, Device};
use serde::Deserialize;
use std::path::Path;

/// The on-disk head format tag.
pub const HEAD_FORMAT: &str = "hhh-reward-head";

/// A linear reward head. Invariant: `weight.len() == num_labels * hidden_size`,
/// `bias.len() == num_labels`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RewardHead {
    pub format: String,
    pub version: u32,
    pub hidden_size: usize,
    pub num_labels: usize,
    /// `num_labels` rows of `hidden_size`.
    #[serde(deserialize_with = "rows")]
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// How the head was made (free-form).
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// `weight` is flat in memory and stored as rows in the file.
fn rows<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<f32>, D::Error> {
    let rows: Vec<Vec<f32>> = Vec::deserialize(d)?;
    Ok(rows.concat())
}

impl RewardHead {
    /// This head, if its width is the model's `hidden_size`.
    pub fn for_model(self, hidden_size: usize) -> Result<Self> {
        if self.hidden_size != hidden_size {
            return Err(crate::ModelError::Invalid(format!("reward head width {} != model hidden size {hidden_size}", self.hidden_size)));
        }
        Ok(self)
    }

    /// A head from its parts; checks the shapes.
    pub fn new(hidden_size: usize, weight: Vec<f32>, bias: Vec<f32>, metadata: serde_json::Value) -> Result<Self> {
        let num_labels = bias.len();
        if num_labels == 0 || hidden_size == 0 || weight.len() != num_labels * hidden_size {
            return Err(ModelError::Invalid(format!("reward head: weight has {} values, expected {num_labels} x {hidden_size}", weight.len())));
        }
        if weight.iter().chain(&bias).any(|v| !v.is_finite()) {
            return Err(ModelError::Invalid("reward head: weight or bias is not finite".into()));
        }
        Ok(Self { format: HEAD_FORMAT.into(), version: 1, hidden_size, num_labels, weight, bias, metadata })
    }

    /// Read a head file (format above).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.display().to_string(), source: e })?;
        let h: RewardHead = serde_json::from_str(&text).map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        if h.format != HEAD_FORMAT || h.version != 1 {
            return Err(ModelError::Invalid(format!("{}: not a `{HEAD_FORMAT}` version 1 file", path.display())));
        }
        Self::new(h.hidden_size, h.weight, h.bias, h.metadata)
    }

    /// Write the head as JSON, one weight row per label.
    pub fn save(&self, path: &Path) -> Result<()> {
        let rows: Vec<&[f32]> = self.weight.chunks(self.hidden_size).collect();
        let v = serde_json::json!({
            "format": self.format, "version": self.version, "hidden_size": self.hidden_size,
            "num_labels": self.num_labels, "weight": rows, "bias": self.bias, "metadata": self.metadata,
        });
        let text = serde_json::to_string_pretty(&v)?;
        std::fs::write(path, text + "\n").map_err(|e| ModelError::Io { path: path.display().to_string(), source: e })
    }

    /// The `score` head of a Hugging Face sequence-classification directory, if it has one.
    pub fn from_hf_dir(dir: &Path) -> Result<Option<Self>> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::Io { path: dir.display().to_string(), source: e })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Ok(None);
        }
        // SAFETY: memory-mapping read-only model files, as candle does for every safetensors load;
        // the files are not modified while the server runs.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files)? };
        let Some((prefix, w)) = ["score", "value_head"].into_iter().find_map(|p| st.load(&format!("{p}.weight"), &Device::Cpu).ok().map(|w| (p, w))) else {
            return Ok(None);
        };
        let w = w.to_dtype(DType::F32)?;
        let (labels, hidden) = w.dims2()?;
        let bias = match st.load(&format!("{prefix}.bias"), &Device::Cpu) {
            Ok(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            Err(_) => vec![0.0; labels],
        };
        let mut meta = serde_json::json!({"source": format!("{prefix}.weight of {}", dir.display())});
        let mut head = Self::new(hidden, w.flatten_all()?.to_vec1::<f32>()?, bias, serde_json::Value::Null)?;
        if let Some((mean, std)) = normalization(dir)? {
            head = head.normalized(mean, std)?;
            meta["normalize_reward"] = serde_json::json!({"mean": mean, "std": std});
        }
        head.metadata = meta;
        Ok(Some(head))
    }

    /// The head whose outputs are `(r - mean) / std` of this one's (accumulated in f64).
    pub fn normalized(self, mean: f64, std: f64) -> Result<Self> {
        if !(std.is_finite() && std > 0.0 && mean.is_finite()) {
            return Err(ModelError::Invalid(format!("reward normalization: std must be positive and finite, mean finite (got mean {mean}, std {std})")));
        }
        let weight = self.weight.iter().map(|&w| (w as f64 / std) as f32).collect();
        let bias = self.bias.iter().map(|&b| ((b as f64 - mean) / std) as f32).collect();
        Self::new(self.hidden_size, weight, bias, self.metadata)
    }

    /// `weight · h + bias` (accumulated in f64).
    pub fn apply(&self, h: &[f32]) -> Vec<f32> {
        self.weight.chunks(self.hidden_size).zip(&self.bias).map(|(row, &b)| (row.iter().zip(h).map(|(&w, &x)| w as f64 * x as f64).sum::<f64>() + b as f64) as f32).collect()
    }
}

/// OpenRLHF's reward normalization from a checkpoint's `config.json`: `(mean, std)` when
/// `normalize_reward` is true (`mean` defaults to 0 and `std` to 1, as OpenRLHF's buffers do).
fn normalization(dir: &Path) -> Result<Option<(f64, f64)>> {
    let path = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let c: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
    if c.get("normalize_reward").and_then(|v| v.as_bool()) != Some(true) {
        return Ok(None);
    }
    let num = |k: &str, d: f64| c.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
    Ok(Some((num("mean", 0.0), num("std", 1.0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_file_round_trips_and_rejects_bad_shapes() {
        let h = RewardHead::new(3, vec![1.0, 2.0, 3.0, -1.0, 0.0, 0.5], vec![0.5, -0.5], serde_json::json!({"k": 1})).unwrap();
        assert_eq!(h.apply(&[1.0, 1.0, 1.0]), vec![6.5, -1.0]);
        let dir = std::env::temp_dir().join(format!("hhh-head-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("h.json");
        h.save(&p).unwrap();
        assert_eq!(RewardHead::from_file(&p).unwrap(), h);
        assert!(RewardHead::new(3, vec![1.0; 5], vec![0.0; 2], serde_json::Value::Null).is_err());
        assert!(RewardHead::new(3, vec![f32::NAN; 3], vec![0.0], serde_json::Value::Null).is_err());
        std::fs::write(&p, r#"{"format":"other","version":1,"hidden_size":1,"num_labels":1,"weight":[[1]],"bias":[0]}"#).unwrap();
        assert!(RewardHead::from_file(&p).is_err());
    }

    #[test]
    fn normalization_folds_into_the_head() {
        let h = RewardHead::new(2, vec![1.0, -2.0], vec![0.5], serde_json::Value::Null).unwrap();
        let x = [0.3f32, 0.7];
        let r = h.apply(&x)[0] as f64;
        let n = h.clone().normalized(0.25, 2.0).unwrap();
        assert!((n.apply(&x)[0] as f64 - (r - 0.25) / 2.0).abs() < 1e-6);
        assert!(h.clone().normalized(0.0, 0.0).is_err());
        assert!(h.normalized(f64::NAN, 1.0).is_err());
    }
}
