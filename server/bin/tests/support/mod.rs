//! Helpers shared by the reliability tests: in-process servers with chosen flags, metric reads,
//! and the real binary for signal tests. Everything listens on 127.0.0.1 only.
#![allow(dead_code)]

pub mod reference;

use clap::Parser;
use hhh_server::{start, ServeArgs};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    a: ServeArgs,
}

pub const MODEL: &str = "smollm2-135m-instruct";

pub fn model_path() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run `make model` first", p.display());
    p
}

/// An in-process server running on the current (multi-threaded) tokio runtime.
pub struct TestServer {
    pub base: String,
    pub metrics_base: String,
    pub engine: hhh_engine::EngineClient,
}

/// Start a server with the default model and `extra` flags.
pub async fn spawn(extra: &[&str]) -> TestServer {
    spawn_model(model_path().to_str().unwrap(), extra).await
}

/// Start a server with `model` and `extra` flags.
pub async fn spawn_model(model: &str, extra: &[&str]) -> TestServer {
    let mut args = vec!["x", "--model", model, "--port", "0"];
    if !extra.contains(&"--max-model-len") {
        args.extend_from_slice(&["--max-model-len", "512"]);
    }
    args.extend_from_slice(extra);
    // Each server its own batch store unless the test names one.
    let data_dir = temp_dir("data");
    if !extra.contains(&"--data-dir") {
        args.extend_from_slice(&["--data-dir", data_dir.to_str().unwrap()]);
    }
    let s = start(Wrap::parse_from(args).a).await.expect("server starts");
    let base = format!("http://{}", s.addr);
    let metrics_base = s.metrics_addr.map(|a| format!("http://{a}")).unwrap_or_else(|| base.clone());
    let t = TestServer { base, metrics_base, engine: s.engine.clone() };
    tokio::spawn(s.run(std::future::pending()));
    t
}

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("hhh-test-{tag}-{}-{n}-{:x}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

pub fn chat_body(content: &str, max_tokens: usize, extra: Value) -> Value {
    let mut b = json!({"model": MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": max_tokens, "ignore_eos": true});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// Every sample of the exposition as (series, value), e.g. (`hhh_requests_finished_total{finished_reason="stop"}`, 3).
pub async fn scrape(metrics_base: &str) -> Vec<(String, f64)> {
    let text = client().get(format!("{metrics_base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The value of one series (exact match on name and labels); panics when absent.
pub async fn metric(metrics_base: &str, series: &str) -> f64 {
    scrape(metrics_base).await.into_iter().find(|(k, _)| k == series).unwrap_or_else(|| panic!("no series {series}")).1
}

/// Wait until the engine is idle with every KV block free and nothing queued, then check the
/// gauges agree.
pub async fn wait_idle(s: &TestServer) {
    use std::sync::atomic::Ordering::SeqCst;
    let st = s.engine.stats();
    for _ in 0..3000 {
        let idle = st.num_requests_with_blocks.load(SeqCst) == 0
            && st.num_running.load(SeqCst) == 0
            && st.num_waiting.load(SeqCst) == 0
            && st.admission_requests.load(SeqCst) == 0
            && st.admission_tokens.load(SeqCst) == 0;
        if idle {
            let m = scrape(&s.metrics_base).await;
            let get = |n: &str| m.iter().find(|(k, _)| k == n).map(|x| x.1);
            assert_eq!(get("hhh_num_requests_running"), Some(0.0));
            assert_eq!(get("hhh_num_requests_waiting"), Some(0.0));
            assert_eq!(get("hhh_kv_cache_free_blocks"), get("hhh_kv_cache_num_blocks"), "blocks leaked");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("engine not idle after 60 s");
}

/// A port that was free a moment ago (for child processes that must be told their port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The content, finish reason, and whether an error event was seen, of an SSE chat body.
pub fn parse_sse(text: &str) -> (String, Option<String>, Option<Value>, bool) {
    let (mut content, mut finish, mut error, mut done) = (String::new(), None, None, false);
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if v.get("error").is_some() {
            error = Some(v);
            continue;
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
    (content, finish, error, done)
}

/// The real binary, killed and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `hhh-server serve` with the default model and `extra` flags; ready when it returns.
pub async fn start_binary(extra: &[&str]) -> Proc {
    let port = free_port();
    let mut args = vec!["serve".to_string(), "--model".into(), model_path().display().to_string(), "--port".into(), port.to_string(), "--max-model-len".into(), "512".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_hhh-server")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn hhh-server");
    let p = Proc { child, base: format!("http://127.0.0.1:{port}") };
    let t0 = Instant::now();
    loop {
        if let Ok(r) = client().get(format!("{}/health/ready", p.base)).send().await {
            if r.status() == 200 {
                return p;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "server not ready in 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[allow(unused_imports)]
pub use hhh_model::testing::write_word_tokenizer;
