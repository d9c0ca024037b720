//! Llama-family hyper-parameters, from GGUF metadata or a Hugging Face `config.json`.

use crate::error::{ModelError, Result};
use candle_core::quantized::gguf_file;
use serde::Deserialize;

/// Everything the forward pass needs to know about the architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    /// GGUF Llama files store Q/K for interleaved-pair RoPE (`rope_i`); HF checkpoints and
    /// GGUF Qwen2 use rotate-half (NeoX) RoPE.
    pub rope_interleaved: bool,
    pub tie_word_embeddings: bool,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
}

#[derive(Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f32>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

fn ids(v: &Option<serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => vec![],
    }
}

impl LlamaConfig {
    /// Parse a Hugging Face `config.json` (Llama, Mistral, Qwen2 layouts).
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let c: HfConfig = serde_json::from_str(text)?;
        let kv = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
        if c.num_attention_heads == 0 || !c.num_attention_heads.is_multiple_of(kv) {
            return Err(ModelError::Invalid("num_attention_heads must be a multiple of num_key_value_heads".into()));
        }
        Ok(Self {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            num_kv_heads: kv,
            head_dim: c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads),
            rms_norm_eps: c.rms_norm_eps,
            rope_theta: c.rope_theta.unwrap_or(10_000.0),
            max_position_embeddings: c.max_position_embeddings.unwrap_or(4096),
            rope_interleaved: false,
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            eos_token_ids: ids(&c.eos_token_id),
            bos_token_id: ids(&c.bos_token_id).first().copied(),
        })
    }

    /// Read the `{arch}.*` keys of a GGUF file.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let md = &ct.metadata;
        let arch = md.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().ok_or_else(|| ModelError::Invalid("GGUF has no general.architecture".into()))?;
        if !matches!(arch.as_str(), "llama" | "mistral" | "qwen2") {
            return Err(ModelError::Invalid(format!("unsupported GGUF architecture `{arch}` (llama, mistral, qwen2)")));
        }
        let u = |k: &str| -> Result<usize> {
            md.get(&format!("{arch}.{k}"))
                .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
                .map(|v| v as usize)
                .ok_or_else(|| ModelError::Invalid(format!("GGUF metadata `{arch}.{k}` missing")))
        };
        let f = |k: &str| md.get(&format!("{arch}.{k}")).and_then(|v| v.to_f32().ok());
        let tok_u32 = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let hidden = u("embedding_length")?;
        let heads = u("attention.head_count")?;
        let kv = u("attention.head_count_kv").unwrap_or(heads);
        let head_dim = u("rope.dimension_count").unwrap_or(hidden / heads);
        let vocab = match u("vocab_size") {
            Ok(v) => v,
            Err(_) => match md.get("tokenizer.ggml.tokens") {
                Some(gguf_file::Value::Array(a)) => a.len(),
                _ => return Err(ModelError::Invalid("cannot determine vocab size".into())),
            },
        };
        Ok(Self {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: u("feed_forward_length")?,
            num_layers: u("block_count")?,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim,
            rms_norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64,
            rope_theta: f("rope.freq_base").unwrap_or(10_000.0),
            max_position_embeddings: u("context_length").unwrap_or(4096),
            rope_interleaved: arch != "qwen2",
            tie_word_embeddings: !ct.tensor_infos.contains_key("output.weight"),
            eos_token_ids: tok_u32("tokenizer.ggml.eos_token_id").into_iter().collect(),
            bos_token_id: tok_u32("tokenizer.ggml.bos_token_id"),
        })
    }
}
