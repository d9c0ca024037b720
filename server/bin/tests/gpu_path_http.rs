//! The server with `--device candle-cpu`: the GPU engine's code (GpuLlama, GpuRunner, our
//! KV-write and paged-attention ops, here on their CPU twins) behind the real HTTP API, on a
//! tiny random Llama directory, against the same directory served by the CPU engine.

mod support;

use candle_core::DType;
use serde_json::{json, Value};
use support::*;

async fn chat(base: &str, model: &str, body: Value) -> Value {
    let mut b = json!({"model": model, "messages": [{"role": "user", "content": "hello w9 w40 world"}], "temperature": 0, "max_tokens": 24, "ignore_eos": true});
    b.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
    let r = client().post(format!("{base}/v1/chat/completions")).json(&b).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candle_cpu_device_serves_like_the_cpu_engine() {
    let dir = std::env::temp_dir().join(format!("hhh-gpu-path-http-{}", std::process::id()));
    hhh_model::testing::make_tiny_model(&dir, DType::F32, None);
    write_word_tokenizer(&dir);
    let d = dir.to_str().unwrap();
    let flags = ["--served-model-name", "tiny", "--num-kv-blocks", "64", "--block-size", "8", "--max-num-batched-tokens", "16"];
    let gpu = spawn_model(d, &[&flags[..], &["--device", "candle-cpu"]].concat()).await;
    let cpu = spawn_model(d, &flags).await;
    // Greedy text and logprobs: the same tokens from both engines (f32 throughout).
    let lp = json!({"logprobs": true, "top_logprobs": 3});
    let (g, c) = (chat(&gpu.base, "tiny", lp.clone()).await, chat(&cpu.base, "tiny", lp).await);
    assert_eq!(g["choices"][0]["message"]["content"], c["choices"][0]["message"]["content"], "{g}\n{c}");
    let lps = |v: &Value| -> Vec<f64> { v["choices"][0]["logprobs"]["content"].as_array().unwrap().iter().map(|t| t["logprob"].as_f64().unwrap()).collect() };
    let (lg, lc) = (lps(&g), lps(&c));
    assert_eq!(lg.len(), 24);
    assert!(lg.iter().zip(&lc).all(|(a, b)| (a - b).abs() < 1e-4), "{lg:?} vs {lc:?}");
    assert_eq!(g["usage"]["completion_tokens"], 24);
    // Streaming equals non-streaming; n = 3 with a seed shares the prompt's blocks.
    let r = client()
        .post(format!("{}/v1/chat/completions", gpu.base))
        .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hello w9 w40 world"}], "temperature": 0, "max_tokens": 24, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    let (text, finish, _, done) = parse_sse(&r.text().await.unwrap());
    assert!(done);
    assert_eq!(finish.as_deref(), Some("length"));
    assert_eq!(Value::String(text), g["choices"][0]["message"]["content"]);
    let n3 = chat(&gpu.base, "tiny", json!({"n": 3, "temperature": 1.0, "seed": 11})).await;
    let n3c = chat(&cpu.base, "tiny", json!({"n": 3, "temperature": 1.0, "seed": 11})).await;
    for i in 0..3 {
        assert_eq!(n3["choices"][i]["message"]["content"], n3c["choices"][i]["message"]["content"], "choice {i}");
    }
    // /v1/models and the metrics say where the model runs.
    let m: Value = client().get(format!("{}/v1/models", gpu.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["data"][0]["id"], "tiny");
    let text = client().get(format!("{}/metrics", gpu.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("hhh_model_info") && l.contains("device=\"candle-cpu\"") && l.contains("dtype=\"f32\"")),
        "{}",
        text.lines().filter(|l| l.contains("model_info")).collect::<Vec<_>>().join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_device_flags_are_checked_at_start() {
    use clap::Parser;
    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        a: hhh_server::ServeArgs,
    }
    let gguf = model_path();
    let err = |args: &[&str]| {
        let mut v = vec!["x", "--port", "0"];
        v.extend_from_slice(args);
        let a = W::parse_from(v).a;
        async move { hhh_server::start(a).await.err().map(|e| format!("{e:#}")).unwrap_or_default() }
    };
    // A GGUF file on the GPU path, --kv-cache-dtype on the GPU path, CUDA in a CPU-only build.
    let e = err(&["--model", gguf.to_str().unwrap(), "--device", "candle-cpu"]).await;
    assert!(e.contains("safetensors directories") && e.contains("--device cpu"), "{e}");
    let e = err(&["--model", gguf.to_str().unwrap(), "--device", "candle-cpu", "--kv-cache-dtype", "f16"]).await;
    assert!(e.contains("--kv-cache-dtype"), "{e}");
    if !cfg!(feature = "cuda") {
        let dir = std::env::temp_dir().join(format!("hhh-gpu-flags-{}", std::process::id()));
        hhh_model::testing::make_tiny_model(&dir, DType::F32, None);
        write_word_tokenizer(&dir);
        let e = err(&["--model", dir.to_str().unwrap(), "--device", "cuda"]).await;
        assert!(e.contains("built without CUDA") && e.contains("--features cuda"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(W::try_parse_from(["x", "--device", "tpu"]).is_err());
    assert!(W::try_parse_from(["x", "--dtype", "int4"]).is_err());
}
