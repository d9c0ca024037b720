//! Test support shared by this crate's tests and the server's: tiny random-weight models.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Write a seeded random Llama (vocab 128, hidden 64, 3 layers, 4 heads / 2 KV heads) to `dir`.
/// With `seq_cls_labels`, a `LlamaForSequenceClassification`: no `lm_head`, a `score.weight`
/// `[labels, 64]` instead.
pub fn make_tiny_model(dir: &Path, dtype: DType, seq_cls_labels: Option<usize>) -> PathBuf {
    try_make_tiny_model(dir, dtype, seq_cls_labels).unwrap_or_else(|e| panic!("writing the tiny model to {}: {e}", dir.display()))
}

/// [`make_tiny_model`], returning errors.
pub fn try_make_tiny_model(dir: &Path, dtype: DType, seq_cls_labels: Option<usize>) -> crate::error::Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| crate::ModelError::Io { path: dir.display().to_string(), source: e })?;
    let cfg = serde_json::json!({
        "architectures": [if seq_cls_labels.is_some() { "LlamaForSequenceClassification" } else { "LlamaForCausalLM" }], "vocab_size": 128, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 512, "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).map_err(|e| crate::ModelError::Io { path: dir.display().to_string(), source: e })?;
    let dev = Device::Cpu;
    let mut seed = 0x5eed_u64;
    let mut rand = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0 * scale
            })
            .collect();
        Tensor::from_vec(v, shape, &dev)?.to_dtype(dtype)
    };
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), rand(&[128, 64], 1.0)?);
    match seq_cls_labels {
        None => t.insert("lm_head.weight".into(), rand(&[128, 64], 0.5)?),
        Some(n) => t.insert("score.weight".into(), rand(&[n, 64], 0.5)?),
    };
    t.insert("model.norm.weight".into(), (rand(&[64], 0.1)? + 1.0)?);
    for l in 0..3 {
        let p = format!("model.layers.{l}");
        for (n, s) in [("self_attn.q_proj", [64, 64]), ("self_attn.k_proj", [32, 64]), ("self_attn.v_proj", [32, 64]), ("self_attn.o_proj", [64, 64]), ("mlp.gate_proj", [128, 64]), ("mlp.up_proj", [128, 64]), ("mlp.down_proj", [64, 128])] {
            t.insert(format!("{p}.{n}.weight"), rand(&s, 0.25)?);
        }
        t.insert(format!("{p}.input_layernorm.weight"), (rand(&[64], 0.1)? + 1.0)?);
        t.insert(format!("{p}.post_attention_layernorm.weight"), (rand(&[64], 0.1)? + 1.0)?);
    }
    // Two shards, to exercise sharded loading.
    let (a, b): (Vec<_>, Vec<_>) = t.into_iter().partition(|(k, _)| k.contains("layers.0") || k.contains("embed"));
    candle_core::safetensors::save(&a.into_iter().collect::<HashMap<_, _>>(), dir.join("model-00001-of-00002.safetensors"))?;
    candle_core::safetensors::save(&b.into_iter().collect::<HashMap<_, _>>(), dir.join("model-00002-of-00002.safetensors"))?;
    Ok(dir.to_path_buf())
}

