//! A Hugging Face `LlamaForSequenceClassification` directory (tiny random weights, a word-level
//! tokenizer.json and a chat template, all written here) served with `--preference-model` next to
//! the default chat model: listed as a preference model, scored over HTTP, and equal to a
//! non-paged reference (candle-transformers' Llama with the score matrix as its head).

mod support;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use support::*;

const PM: &str = "tiny-rm";

fn reference(dir: &Path, ids: &[u32]) -> f32 {
    let dev = Device::Cpu;
    let cfg: LlamaConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            t.extend(candle_core::safetensors::load(&p, &dev).unwrap());
        }
    }
    let score = t.remove("score.weight").unwrap();
    let pad = Tensor::zeros((cfg.vocab_size - 1, cfg.hidden_size), DType::F32, &dev).unwrap();
    t.insert("lm_head.weight".into(), Tensor::cat(&[&score, &pad], 0).unwrap());
    let model = Llama::load(candle_nn::VarBuilder::from_tensors(t, DType::F32, &dev), &cfg).unwrap();
    let mut cache = Cache::new(false, DType::F32, &cfg, &dev).unwrap();
    let x = Tensor::new(ids, &dev).unwrap().unsqueeze(0).unwrap();
    model.forward(&x, 0, &mut cache).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_cls_directory_served_as_preference_model() {
    let dir = std::env::temp_dir().join(format!("hhh-tiny-rm-http-{}", std::process::id()));
    hhh_model::testing::make_tiny_model(&dir, DType::F32, Some(1));
    write_word_tokenizer(&dir);
    let s = spawn(&["--preference-model", dir.to_str().unwrap(), "--preference-model-name", PM, "--preference-num-kv-blocks", "64"]).await;
    let models: Value = client().get(format!("{}/v1/models", s.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][1]["id"], PM);
    assert_eq!(models["data"][1]["kind"], "preference");
    // Conversation + response through the chat template: "user : hello w9 assistant : world w12".
    let body = json!({"model": PM, "input": [{"messages": [{"role": "user", "content": "hello w9"}], "response": "world w12"}, {"text": "w20 w21 hello"}]});
    let v: Value = client().post(format!("{}/v1/rewards", s.base)).json(&body).send().await.unwrap().json().await.unwrap();
    let got: Vec<f32> = v["data"].as_array().unwrap_or_else(|| panic!("{v}")).iter().map(|d| d["reward"].as_f64().unwrap() as f32).collect();
    // Token ids by hand: user=3, ':'=5, hello=6, w9=9, assistant=4, world=7, w12=12; no BOS is added
    // (the tokenizer.json has no post-processor).
    let want = [reference(&dir, &[3, 5, 6, 9, 4, 5, 7, 12]), reference(&dir, &[20, 21, 6])];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{got:?} vs {want:?}");
    }
    // The same through /pooling with token ids.
    let p: Value = client().post(format!("{}/pooling", s.base)).json(&json!({"model": PM, "input": [[20, 21, 6]]})).send().await.unwrap().json().await.unwrap();
    assert!((p["data"][0]["data"][0].as_f64().unwrap() as f32 - want[1]).abs() <= 1e-4 * want[1].abs().max(1.0), "{p}");
    let _ = std::fs::remove_dir_all(&dir);
}
