//! The independent reference for scoring tests: candle-transformers' quantized_llama on the
//! default GGUF, a plain non-paged forward over the whole sequence (no KV cache reuse).

use super::{client, model_path};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use serde_json::{json, Value};

/// The default model, loaded by candle-transformers.
pub fn reference_model() -> ModelWeights {
    let mut f = std::fs::File::open(model_path()).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap()
}

/// Sum of the logprobs of `option` after `prompt`, each from a fresh prefill of the prefix.
pub fn reference_logprob(m: &mut ModelWeights, prompt: &[u32], option: &[u32]) -> f64 {
    let mut seq = prompt.to_vec();
    let mut total = 0.0;
    for &t in option {
        let x = Tensor::new(seq.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let logits = m.forward(&x, 0).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        total += hhh_model::sampler::log_softmax(&logits)[t as usize] as f64;
        seq.push(t);
    }
    total
}

/// Token ids of `text` from the server's `/tokenize` (`special`: the tokenizer's BOS rule).
pub async fn tokens(base: &str, text: &str, special: bool) -> Vec<u32> {
    let v: Value = client().post(format!("{base}/tokenize")).json(&json!({"prompt": text, "add_special_tokens": special})).send().await.unwrap().json().await.unwrap();
    v["tokens"].as_array().unwrap_or_else(|| panic!("{v}")).iter().map(|t| t.as_u64().unwrap() as u32).collect()
}
