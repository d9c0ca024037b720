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

/// Shape of a random-weight Llama written by [`make_random_llama`].
#[derive(Debug, Clone, Copy)]
pub struct RandomLlama {
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub max_pos: usize,
    /// Scale of the projection weights (the embedding is uniform in [-1, 1]).
    pub scale: f32,
    /// Scale of the LM head (larger: more peaked next-token distributions, fewer near-ties).
    pub head_scale: f32,
    pub seed: u64,
}

impl RandomLlama {
    /// The tiny model of [`make_tiny_model`]: vocab 128, hidden 64, 3 layers, 4 heads / 2 KV
    /// heads (head_dim 16).
    pub const TINY: RandomLlama = RandomLlama { vocab: 128, hidden: 64, intermediate: 128, layers: 3, heads: 4, kv_heads: 2, max_pos: 512, scale: 0.25, head_scale: 0.5, seed: 0x5eed };
}

/// [`make_tiny_model`], returning errors.
pub fn try_make_tiny_model(dir: &Path, dtype: DType, seq_cls_labels: Option<usize>) -> crate::error::Result<PathBuf> {
    make_random_llama(dir, dtype, &RandomLlama::TINY, seq_cls_labels)
}

/// Write a seeded random Llama of shape `spec` to `dir` (config.json and two safetensors
/// shards); with `seq_cls_labels`, a `LlamaForSequenceClassification`.
pub fn make_random_llama(dir: &Path, dtype: DType, spec: &RandomLlama, seq_cls_labels: Option<usize>) -> crate::error::Result<PathBuf> {
    let RandomLlama { vocab, hidden, intermediate, layers, heads, kv_heads, max_pos, scale, head_scale, seed } = *spec;
    let hd = hidden / heads;
    std::fs::create_dir_all(dir).map_err(|e| crate::ModelError::Io { path: dir.display().to_string(), source: e })?;
    let cfg = serde_json::json!({
        "architectures": [if seq_cls_labels.is_some() { "LlamaForSequenceClassification" } else { "LlamaForCausalLM" }], "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": max_pos, "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).map_err(|e| crate::ModelError::Io { path: dir.display().to_string(), source: e })?;
    let dev = Device::Cpu;
    let mut seed = seed;
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
    t.insert("model.embed_tokens.weight".into(), rand(&[vocab, hidden], 1.0)?);
    match seq_cls_labels {
        None => t.insert("lm_head.weight".into(), rand(&[vocab, hidden], head_scale)?),
        Some(n) => t.insert("score.weight".into(), rand(&[n, hidden], 0.5)?),
    };
    t.insert("model.norm.weight".into(), (rand(&[hidden], 0.1)? + 1.0)?);
    let (qw, kw) = (heads * hd, kv_heads * hd);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("self_attn.q_proj", [qw, hidden]),
            ("self_attn.k_proj", [kw, hidden]),
            ("self_attn.v_proj", [kw, hidden]),
            ("self_attn.o_proj", [hidden, qw]),
            ("mlp.gate_proj", [intermediate, hidden]),
            ("mlp.up_proj", [intermediate, hidden]),
            ("mlp.down_proj", [hidden, intermediate]),
        ] {
            t.insert(format!("{p}.{n}.weight"), rand(&s, scale)?);
        }
        t.insert(format!("{p}.input_layernorm.weight"), (rand(&[hidden], 0.1)? + 1.0)?);
        t.insert(format!("{p}.post_attention_layernorm.weight"), (rand(&[hidden], 0.1)? + 1.0)?);
    }
    // Two shards, to exercise sharded loading.
    let (a, b): (Vec<_>, Vec<_>) = t.into_iter().partition(|(k, _)| k.contains("layers.0") || k.contains("embed"));
    candle_core::safetensors::save(&a.into_iter().collect::<HashMap<_, _>>(), dir.join("model-00001-of-00002.safetensors"))?;
    candle_core::safetensors::save(&b.into_iter().collect::<HashMap<_, _>>(), dir.join("model-00002-of-00002.safetensors"))?;
    Ok(dir.to_path_buf())
}

/// Write a word-level `tokenizer.json` over ids `0..vocab` (`[UNK]`, `<s>`, `</s>`, `user`,
/// `assistant`, `:`, `hello`, `world`, then `w8`, `w9`, ...) and a `tokenizer_config.json` with
/// a plain chat template (`role : content ` per message), for serving random models.
pub fn write_word_tokenizer(dir: &Path) {
    write_word_tokenizer_n(dir, 128).unwrap_or_else(|e| panic!("writing the tokenizer to {}: {e}", dir.display()))
}

/// [`write_word_tokenizer`] for a vocabulary of `vocab` ids, returning errors.
pub fn write_word_tokenizer_n(dir: &Path, vocab: usize) -> std::io::Result<()> {
    use serde_json::json;
    let mut words = serde_json::Map::new();
    let fixed = ["[UNK]", "<s>", "</s>", "user", "assistant", ":", "hello", "world"];
    for (i, w) in fixed.iter().enumerate() {
        words.insert(w.to_string(), json!(i));
    }
    for i in fixed.len()..vocab {
        words.insert(format!("w{i}"), json!(i));
    }
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string())?;
    let cfg = json!({"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{% for m in messages %}{{ m.role }} : {{ m.content }} {% endfor %}"});
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string())
}

/// The tiny reward models whose golden rewards come from Hugging Face transformers
/// (`scripts/make_reward_goldens.py`, `server/bin/tests/fixtures/hf_reward/`): the weights are
/// written here, by the tests and by the script alike, so none are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardFixture {
    /// A `LlamaForSequenceClassification` (`score.weight`, one label).
    SeqCls,
    /// An OpenRLHF reward checkpoint: `value_head.weight` and `normalize_reward` with mean 0.37,
    /// std 1.9 in config.json.
    OpenRlhf,
}

impl RewardFixture {
    /// The fixture directory name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SeqCls => "seqcls",
            Self::OpenRlhf => "openrlhf",
        }
    }

    /// Write config.json and the weights of this fixture to `dir` (vocab 128, hidden 64,
    /// 2 layers, 4 heads / 2 KV heads, context 1024; f32).
    pub fn write(self, dir: &Path) -> crate::error::Result<()> {
        let seed = match self {
            Self::SeqCls => 0x5eed_0001,
            Self::OpenRlhf => 0x5eed_0002,
        };
        let spec = RandomLlama { layers: 2, max_pos: 1024, seed, ..RandomLlama::TINY };
        make_random_llama(dir, DType::F32, &spec, Some(1))?;
        if self == Self::OpenRlhf {
            let io = |e| crate::ModelError::Io { path: dir.display().to_string(), source: e };
            let shard = dir.join("model-00002-of-00002.safetensors");
            let mut t = candle_core::safetensors::load(&shard, &Device::Cpu)?;
            let head = t.remove("score.weight").ok_or_else(|| crate::ModelError::Invalid("score.weight missing".into()))?;
            t.insert("value_head.weight".into(), head);
            candle_core::safetensors::save(&t, &shard)?;
            let path = dir.join("config.json");
            let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).map_err(io)?)?;
            cfg["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
            cfg["normalize_reward"] = serde_json::json!(true);
            cfg["mean"] = serde_json::json!(0.37);
            cfg["std"] = serde_json::json!(1.9);
            std::fs::write(&path, cfg.to_string()).map_err(io)?;
        }
        Ok(())
    }
}
