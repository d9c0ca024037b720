//! End-to-end tests against the real server on 127.0.0.1:0 with the default model.
//! One server is shared by all tests (loaded once, on its own runtime thread).

use clap::Parser;
use futures::StreamExt;
use hhh_server::{start, ServeArgs};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    a: ServeArgs,
}

struct Srv {
    base: String,
    engine: hhh_engine::EngineClient,
}

const MODEL: &str = "smollm2-135m-instruct";
const MAX_MODEL_LEN: usize = 1024;
const MAX_BODY: usize = 65536;

fn model_path() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run `make model` first", p.display());
    p
}

fn srv() -> &'static Srv {
    static S: OnceLock<Srv> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let args = Wrap::parse_from([
                    "x",
                    "--model",
                    model_path().to_str().unwrap(),
                    "--port",
                    "0",
                    "--num-kv-blocks",
                    "400",
                    "--max-model-len",
                    &MAX_MODEL_LEN.to_string(),
                    "--max-body-bytes",
                    &MAX_BODY.to_string(),
                ])
                .a;
                let s = start(args).await.unwrap();
                tx.send(Srv { base: format!("http://{}", s.addr), engine: s.engine.clone() }).unwrap();
                s.run(std::future::pending()).await.unwrap();
            });
        });
        rx.recv().unwrap()
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

async fn post(path: &str, body: Value) -> (u16, Value) {
    let r = client().post(format!("{}{path}", srv().base)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn chat(content: &str, extra: Value) -> Value {
    let mut b = json!({"model": MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 24});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// Parse an SSE body into its `data:` payloads.
async fn sse(path: &str, body: Value) -> Vec<String> {
    let r = client().post(format!("{}{path}", srv().base)).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    text.lines().filter_map(|l| l.strip_prefix("data: ").map(str::to_string)).collect()
}

fn stream_content(events: &[String]) -> (String, Option<String>, Option<Value>) {
    let (mut content, mut finish, mut usage) = (String::new(), None, None);
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(u) = v.get("usage") {
            usage = Some(u.clone());
        }
        for c in v["choices"].as_array().unwrap() {
            if let Some(t) = c["delta"]["content"].as_str().or(c["text"].as_str()) {
                content.push_str(t);
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
    }
    (content, finish, usage)
}

async fn wait_idle() {
    for _ in 0..500 {
        let s = srv().engine.stats();
        if s.num_requests_with_blocks.load(Ordering::SeqCst) == 0 && s.num_running.load(Ordering::SeqCst) == 0 && s.num_waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("engine still holds blocks");
}

#[tokio::test]
async fn health_models_tokenize() {
    let r = client().get(format!("{}/health", srv().base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let m: Value = client().get(format!("{}/v1/models", srv().base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["data"][0]["id"], MODEL);
    let (s, t) = post("/tokenize", json!({"prompt": "Hello, world!", "add_special_tokens": false})).await;
    assert_eq!(s, 200);
    assert_eq!(t["tokens"], json!([19556, 28, 905, 17]));
    let (s, d) = post("/detokenize", json!({"tokens": [19556, 28, 905, 17]})).await;
    assert_eq!(s, 200);
    assert_eq!(d["prompt"], "Hello, world!");
}

#[tokio::test]
async fn chat_non_streaming_and_streaming_agree() {
    let body = chat("Name three colors.", json!({}));
    let (s, v) = post("/v1/chat/completions", body.clone()).await;
    assert_eq!(s, 200, "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(!content.is_empty());
    let u = &v["usage"];
    assert_eq!(u["total_tokens"], u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap());
    let (_, t) = post("/tokenize", json!({"messages": body["messages"]})).await;
    assert_eq!(u["prompt_tokens"], t["count"]);
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let events = sse("/v1/chat/completions", sb).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let (sc, finish, usage) = stream_content(&events);
    assert_eq!(sc, content, "streamed text differs from the non-streamed text");
    assert_eq!(finish.as_deref(), v["choices"][0]["finish_reason"].as_str());
    assert_eq!(usage.unwrap()["completion_tokens"], u["completion_tokens"]);
}

#[tokio::test]
async fn chat_logprobs_are_consistent() {
    let (s, v) = post("/v1/chat/completions", chat("Hi", json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 5}))).await;
    assert_eq!(s, 200, "{v}");
    let lps = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(lps.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap());
    for lp in lps {
        let tops = lp["top_logprobs"].as_array().unwrap();
        assert_eq!(tops.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(tops[0]["logprob"], lp["logprob"]);
        assert!(lp["logprob"].as_f64().unwrap() <= 0.0);
    }
}

/// Echo + logprobs: prompt-token logprobs equal a direct reference computation with
/// candle-transformers' quantized_llama (token by token, contiguous KV cache).
#[tokio::test]
async fn completion_echo_logprobs_match_reference() {
    let prompt = "The capital of France is Paris, and the capital of Italy is";
    let (s, v) = post("/v1/completions", json!({"model": MODEL, "prompt": prompt, "max_tokens": 2, "temperature": 0, "echo": true, "logprobs": 1})).await;
    assert_eq!(s, 200, "{v}");
    let c = &v["choices"][0];
    assert!(c["text"].as_str().unwrap().starts_with(prompt));
    let lp = &c["logprobs"];
    let (_, t) = post("/tokenize", json!({"prompt": prompt})).await;
    let ids: Vec<u32> = t["tokens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let toks = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(toks.len(), ids.len() + 2, "prompt tokens plus generated ones");
    assert!(toks[0].is_null());
    let tokens: Vec<&str> = lp["tokens"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(tokens[..ids.len()].concat(), prompt);
    // Reference.
    use candle_core::{Device, Tensor};
    let mut f = std::fs::File::open(model_path()).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut m = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
    for pos in 0..ids.len() - 1 {
        let x = Tensor::new(&ids[pos..pos + 1], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let logits = m.forward(&x, pos).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let mx = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let lse = mx + logits.iter().map(|l| ((l - mx) as f64).exp()).sum::<f64>().ln() as f32;
        let want = logits[ids[pos + 1] as usize] - lse;
        let got = toks[pos + 1].as_f64().unwrap() as f32;
        // The serving kernel's float rounding differs from candle's dense attention, and int8
        // activation quantization amplifies that to a few hundredths of a nat (measured up to
        // 0.185 on 64-token runs, 0.30 at one position of this prompt since the Q4_1 tile kernel
        // sums blocks in a different order; candle disagrees with itself by up to 0.35-0.59 nats
        // between prefill and decode). With the reference's own arithmetic the engine is
        // bit-exact: see hhh-model's reference_gguf tests.
        assert!((got - want).abs() < 0.35, "position {}: {got} vs {want}", pos + 1);
    }
}

#[tokio::test]
async fn usage_counts_each_prompt_once_with_n_choices() {
    // Long enough for full KV blocks (16 tokens), so a repeat is served from the prefix cache.
    let prompt = "Here is a list of the planets of the solar system, in order from the sun, with one fact about each of them:";
    let (_, t) = post("/tokenize", json!({"prompt": prompt})).await;
    let len = t["count"].as_u64().unwrap();
    assert!(len >= 20, "{t}");
    let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": 4, "n": 3, "temperature": 1.0, "seed": 3, "ignore_eos": true});
    let (s, v) = post("/v1/completions", body.clone()).await;
    assert_eq!(s, 200, "{v}");
    let u = &v["usage"];
    assert_eq!((u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64(), u["total_tokens"].as_u64()), (Some(len), Some(12), Some(len + 12)), "{v}");
    let (_, v2) = post("/v1/completions", body.clone()).await;
    let cached = v2["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    assert!(cached >= 16 && cached < len, "a repeat takes the prompt's full blocks from the cache: {v2}");
    // Two prompts with n = 2: each prompt counted once.
    let two = json!({"model": MODEL, "prompt": [prompt, "Hello"], "max_tokens": 2, "n": 2, "temperature": 1.0, "ignore_eos": true});
    let (_, h) = post("/tokenize", json!({"prompt": "Hello"})).await;
    let (_, v3) = post("/v1/completions", two.clone()).await;
    assert_eq!(v3["usage"]["prompt_tokens"].as_u64(), Some(len + h["count"].as_u64().unwrap()), "{v3}");
    assert_eq!(v3["usage"]["completion_tokens"].as_u64(), Some(8));
    // Streaming with include_usage reports the same prompt count.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let events = sse("/v1/completions", sb).await;
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["usage"]["prompt_tokens"].as_u64(), Some(len), "{last}");
    assert_eq!(last["usage"]["completion_tokens"].as_u64(), Some(12));
    // Chat with n = 3 counts its (templated) prompt once too.
    let (_, c1) = post("/v1/chat/completions", chat(prompt, json!({"n": 1, "max_tokens": 2}))).await;
    let (_, c3) = post("/v1/chat/completions", chat(prompt, json!({"n": 3, "max_tokens": 2, "temperature": 1.0, "ignore_eos": true}))).await;
    assert_eq!(c3["usage"]["prompt_tokens"], c1["usage"]["prompt_tokens"], "{c3}");
    assert_eq!(c3["usage"]["completion_tokens"].as_u64(), Some(6));
}

#[tokio::test]
async fn n_choices_and_seed_reproducibility() {
    let body = chat("Write a word.", json!({"n": 3, "temperature": 1.0, "seed": 1234, "max_tokens": 12}));
    let (s, a) = post("/v1/chat/completions", body.clone()).await;
    assert_eq!(s, 200, "{a}");
    let texts = |v: &Value| -> Vec<String> { v["choices"].as_array().unwrap().iter().map(|c| c["message"]["content"].as_str().unwrap().to_string()).collect() };
    assert_eq!(a["choices"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2]);
    // Same seed, with other traffic in the batch: same outputs.
    let noise = tokio::spawn(post("/v1/chat/completions", chat("Tell me a long story.", json!({"max_tokens": 40, "temperature": 0.8}))));
    let (_, b) = post("/v1/chat/completions", body).await;
    noise.await.unwrap();
    assert_eq!(texts(&a), texts(&b));
}

#[tokio::test]
async fn stop_strings_cut_output() {
    let (_, full) = post("/v1/completions", json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 30, "temperature": 0, "ignore_eos": true})).await;
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    let cut = text.char_indices().map(|(i, _)| i).find(|&i| i >= text.len() / 2).unwrap();
    let stop: String = text[cut..].chars().take(4).collect();
    let first = text.find(&stop).unwrap();
    for stream in [false, true] {
        let body = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 30, "temperature": 0, "ignore_eos": true, "stop": [stop.clone()], "stream": stream});
        let (got, finish) = if stream {
            let (c, f, _) = stream_content(&sse("/v1/completions", body).await);
            (c, f)
        } else {
            let (_, v) = post("/v1/completions", body).await;
            (v["choices"][0]["text"].as_str().unwrap().to_string(), v["choices"][0]["finish_reason"].as_str().map(str::to_string))
        };
        assert_eq!(got, text[..first], "stream={stream}");
        assert_eq!(finish.as_deref(), Some("stop"));
    }
    wait_idle().await;
}

#[tokio::test]
async fn sixteen_concurrent_streams_complete_correctly() {
    let prompts: Vec<String> = (0..16).map(|i| format!("Count from {i} to {}.", i + 5)).collect();
    let mut want = vec![];
    for p in &prompts[..4] {
        let (_, v) = post("/v1/chat/completions", chat(p, json!({"max_tokens": 32, "ignore_eos": true}))).await;
        want.push(v["choices"][0]["message"]["content"].as_str().unwrap().to_string());
    }
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| {
            let body = chat(p, json!({"max_tokens": 32, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}));
            tokio::spawn(async move { stream_content(&sse("/v1/chat/completions", body).await) })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (content, finish, usage) = t.await.unwrap();
        assert_eq!(finish.as_deref(), Some("length"), "client {i}");
        assert_eq!(usage.unwrap()["completion_tokens"], 32, "client {i}");
        if i < 4 {
            assert_eq!(content, want[i], "client {i}: batched output differs from the sequential one");
        }
    }
    wait_idle().await;
}

#[tokio::test]
async fn disconnect_mid_stream_frees_blocks() {
    let body = chat("Write a very long essay about the sea.", json!({"max_tokens": 600, "ignore_eos": true, "stream": true}));
    let r = client().post(format!("{}/v1/chat/completions", srv().base)).json(&body).send().await.unwrap();
    let mut s = r.bytes_stream();
    let mut got = 0;
    while let Some(chunk) = s.next().await {
        got += chunk.unwrap().len();
        if got > 600 {
            break;
        }
    }
    drop(s);
    wait_idle().await;
}

#[tokio::test]
async fn bad_inputs_get_openai_errors() {
    let base = &srv().base;
    let long = "word ".repeat(1500);
    let cases: Vec<(Value, u16, Option<&str>, &str)> = vec![
        (json!({"model": MODEL, "messages": []}), 400, Some("messages"), "at least one"),
        (json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}), 404, Some("model"), "does not exist"),
        (chat("x", json!({"temperature": -0.5})), 400, Some("temperature"), "[0, 2]"),
        (chat("x", json!({"temperature": "hot"})), 400, Some("temperature"), "number"),
        (chat("x", json!({"top_p": 0})), 400, Some("top_p"), "(0, 1]"),
        (chat("x", json!({"top_p": 1.5})), 400, Some("top_p"), "(0, 1]"),
        (chat("x", json!({"n": 17})), 400, Some("n"), "between 1 and 16"),
        (chat("x", json!({"logprobs": true, "top_logprobs": 21})), 400, Some("top_logprobs"), "between 0 and 20"),
        (chat("x", json!({"max_tokens": 5000})), 400, Some("max_tokens"), "maximum context length is 1024"),
        (chat("x", json!({"max_tokens": 0})), 400, Some("max_tokens"), "at least 1"),
        (chat(&long, json!({})), 400, Some("messages"), "maximum context length is 1024"),
        (
            chat("x", json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}})),
            400,
            Some("tool_choice.function.name"),
            "not in `tools`",
        ),
        (json!({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}), 400, Some("messages[0].role"), "Unsupported role"),
        (json!({"model": MODEL, "prompt": [999999]}), 400, Some("prompt"), "outside the vocabulary"),
        (json!({"model": MODEL, "prompt": ""}), 400, Some("prompt"), "must not be empty"),
        (json!({"model": MODEL, "prompt": "x", "logprobs": 99}), 400, Some("logprobs"), "between 0 and 20"),
    ];
    for (body, status, param, msg) in cases {
        let path = if body.get("prompt").is_some() { "/v1/completions" } else { "/v1/chat/completions" };
        let (s, v) = post(path, body.clone()).await;
        assert_eq!(s, status, "{body} -> {v}");
        let e = &v["error"];
        assert_eq!(e["param"].as_str(), param, "{body} -> {v}");
        assert!(e["message"].as_str().unwrap().contains(msg), "{body} -> {v}");
        assert!(e["type"].is_string());
    }
    // Malformed JSON, invalid UTF-8, oversized body.
    for (raw, status, msg) in
        [(b"{\"model\": ".to_vec(), 400, "Invalid JSON"), (b"{\"model\": \"\xff\xfe\"}".to_vec(), 400, "UTF-8"), (vec![b' '; MAX_BODY + 10], 413, "exceeds the limit of 65536 bytes")]
    {
        let r = client().post(format!("{base}/v1/chat/completions")).header("content-type", "application/json").body(raw).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains(msg), "{v}");
    }
    let r = client().get(format!("{base}/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    wait_idle().await;
    // The server still serves.
    let (s, _) = post("/v1/chat/completions", chat("still there?", json!({"max_tokens": 2}))).await;
    assert_eq!(s, 200);
}
