//! Sampling defaults of the served model (vLLM's `--generation-config`): read from a Hugging Face
//! `generation_config.json` or GGUF `general.sampling.*` metadata, overridden by
//! `--override-generation-config`, applied by the API to the fields a request leaves out.
//!
//! `auto` looks, in order, for: `<model dir>/generation_config.json` (HF directories);
//! `<file without .gguf>.generation_config.json`, then `generation_config.json` beside a GGUF
//! file; the GGUF's own `general.sampling.*` keys. `none` uses no file; `<dir>` reads
//! `<dir>/generation_config.json`.

use anyhow::Context;
use hhh_proto::GenerationDefaults;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where the defaults come from (`--generation-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationSource {
    /// Next to the model, or in its metadata.
    Auto,
    /// No defaults but the override.
    None,
    /// `generation_config.json` in this directory.
    Dir(PathBuf),
}

impl std::str::FromStr for GenerationSource {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Self::Auto,
            "none" | "" => Self::None,
            d => Self::Dir(PathBuf::from(d)),
        })
    }
}

impl std::fmt::Display for GenerationSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::None => f.write_str("none"),
            Self::Dir(d) => write!(f, "{}", d.display()),
        }
    }
}

/// The defaults of a Hugging Face `generation_config.json` (unknown keys ignored;
/// `max_new_tokens` becomes `max_tokens`).
pub fn from_hf_json(v: &Value) -> GenerationDefaults {
    let f = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
    GenerationDefaults {
        temperature: f("temperature"),
        top_p: f("top_p"),
        top_k: v.get("top_k").and_then(Value::as_i64),
        min_p: f("min_p"),
        repetition_penalty: f("repetition_penalty"),
        max_tokens: v.get("max_new_tokens").and_then(Value::as_i64),
    }
}

/// The defaults in a GGUF file's `general.sampling.*` metadata (llama.cpp's keys).
fn from_gguf(path: &Path) -> anyhow::Result<GenerationDefaults> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let ct = candle_core::quantized::gguf_file::Content::read(&mut file).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let f = |k: &str| ct.metadata.get(&format!("general.sampling.{k}")).and_then(|v| v.to_f32().ok().or_else(|| v.to_f64().ok().map(|x| x as f32)));
    let i = |k: &str| ct.metadata.get(&format!("general.sampling.{k}")).and_then(|v| v.to_i32().ok().map(i64::from).or_else(|| v.to_u32().ok().map(i64::from)));
    Ok(GenerationDefaults { temperature: f("temp"), top_p: f("top_p"), top_k: i("top_k"), min_p: f("min_p"), repetition_penalty: f("penalty_repeat"), max_tokens: None })
}

fn read_json(path: &Path) -> anyhow::Result<GenerationDefaults> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(from_hf_json(&v))
}

/// The defaults for `model` from `source`, with `override_json` (`--override-generation-config`,
/// generation_config.json keys) on top.
pub fn load(model: &Path, source: &GenerationSource, override_json: Option<&str>) -> anyhow::Result<GenerationDefaults> {
    let base = match source {
        GenerationSource::None => GenerationDefaults::default(),
        GenerationSource::Dir(d) => read_json(&d.join("generation_config.json"))?,
        GenerationSource::Auto if model.is_dir() => {
            let p = model.join("generation_config.json");
            if p.exists() {
                read_json(&p)?
            } else {
                GenerationDefaults::default()
            }
        }
        GenerationSource::Auto => {
            let beside = model.with_extension("generation_config.json");
            let shared = model.parent().map(|d| d.join("generation_config.json"));
            match (beside.exists(), shared.filter(|p| p.exists())) {
                (true, _) => read_json(&beside)?,
                (false, Some(p)) => read_json(&p)?,
                (false, None) => from_gguf(model)?,
            }
        }
    };
    let over = match override_json {
        Some(j) => from_hf_json(&serde_json::from_str(j).context("--override-generation-config is not JSON")?),
        None => GenerationDefaults::default(),
    };
    Ok(base.merged(&over))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hf_keys_sources_and_override() {
        let d = from_hf_json(&json!({"temperature": 0.2, "top_p": 0.9, "max_new_tokens": 64, "do_sample": true, "bos_token_id": 1}));
        assert_eq!(d, GenerationDefaults { temperature: Some(0.2), top_p: Some(0.9), max_tokens: Some(64), ..Default::default() });
        let dir = std::env::temp_dir().join(format!("hhh-gencfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("generation_config.json"), r#"{"temperature": 0.7, "top_k": 50}"#).unwrap();
        let from_dir = load(Path::new("/nonexistent.gguf"), &GenerationSource::Dir(dir.clone()), Some(r#"{"top_k": 5}"#)).unwrap();
        assert_eq!((from_dir.temperature, from_dir.top_k), (Some(0.7), Some(5)), "the override wins per key");
        // auto beside an HF directory; none ignores it.
        assert_eq!(load(&dir, &GenerationSource::Auto, None).unwrap().temperature, Some(0.7));
        assert!(load(&dir, &GenerationSource::None, None).unwrap().is_empty());
        // auto beside a GGUF: `<stem>.generation_config.json` first.
        std::fs::write(dir.join("m.generation_config.json"), r#"{"min_p": 0.1}"#).unwrap();
        assert_eq!(load(&dir.join("m.gguf"), &GenerationSource::Auto, None).unwrap(), GenerationDefaults { min_p: Some(0.1), ..Default::default() });
        assert!(load(&dir, &GenerationSource::None, Some("not json")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
