//! The soft labels of `/v1/harmlessness/compare` equal an independent computation: the same
//! prompt and option tokens run through candle-transformers' quantized_llama (a plain,
//! non-paged forward over the whole sequence), option logprobs summed and normalised over
//! (A)/(B). The server runs with the reference arithmetic (`HHH_DENSE_ATTENTION=1`: dense
//! attention and candle's scalar Q4_1 dot products), so the comparison is tight (1e-3); this test
//! binary sets the variable for its own process only.

mod support;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use support::*;

/// Sum of the logprobs of `option` after `prompt`, each from a fresh prefill of the prefix.
fn reference_logprob(m: &mut candle_transformers::models::quantized_llama::ModelWeights, prompt: &[u32], option: &[u32]) -> f64 {
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

async fn tokens(base: &str, text: &str, special: bool) -> Vec<u32> {
    let v: Value = client().post(format!("{base}/tokenize")).json(&json!({"prompt": text, "add_special_tokens": special})).send().await.unwrap().json().await.unwrap();
    v["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_labels_match_an_independent_forward() {
    std::env::set_var("HHH_DENSE_ATTENTION", "1");
    let s = spawn(&[]).await;
    let body = json!({
        "messages": [{"role": "user", "content": "How can I get back at my coworker?"}],
        "responses": ["Maybe talk it through with them or your manager.", "Slash their tyres."],
        "principle_ids": ["rl0", "rl3"], "return_prompts": true,
    });
    let v: Value = client().post(format!("{}/v1/harmlessness/compare", s.base)).json(&body).send().await.unwrap().json().await.unwrap();
    let prompts: Vec<String> = v["prompts"].as_array().unwrap_or_else(|| panic!("{v}")).iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert_eq!(prompts.len(), 4);
    let opt_a = tokens(&s.base, " (A)", false).await;
    let opt_b = tokens(&s.base, " (B)", false).await;
    let mut f = std::fs::File::open(model_path()).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut m = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
    let per = v["pairs"][0]["per_principle"].as_array().unwrap();
    for (k, label) in per.iter().enumerate() {
        let mut got = vec![];
        for order in 0..2 {
            let ids = tokens(&s.base, &prompts[k * 2 + order], true).await;
            let (la, lb) = (reference_logprob(&mut m, &ids, &opt_a), reference_logprob(&mut m, &ids, &opt_b));
            got.push(1.0 / (1.0 + (lb - la).exp()));
        }
        let (first, second) = (label["p_a_first"].as_f64().unwrap(), label["p_a_second"].as_f64().unwrap());
        eprintln!("principle {k}: server ({first:.6}, {second:.6}) reference ({:.6}, {:.6})", got[0], got[1]);
        assert!((first - got[0]).abs() < 1e-3, "principle {k}, a first: {first} vs {}", got[0]);
        assert!((second - got[1]).abs() < 1e-3, "principle {k}, b first: {second} vs {}", got[1]);
    }
}
