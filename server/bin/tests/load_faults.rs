//! Overload, disconnect storm, request timeout and API keys against a real in-process server.

mod support;

use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use support::*;

/// 64 concurrent clients against tiny limits: each request completes with the same text as an
/// uncontended one or gets a 429 with Retry-After; none hangs or gets a 5xx; afterwards nothing
/// is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_gives_429_and_keeps_serving() {
    let s = spawn(&["--max-num-seqs", "2", "--max-waiting-requests", "4", "--max-waiting-tokens", "100000", "--num-kv-blocks", "64"]).await;
    let body = chat_body("Name three colours.", 8, json!({}));
    let url = format!("{}/v1/chat/completions", s.base);
    let reference: Value = client().post(&url).json(&body).send().await.unwrap().json().await.unwrap();
    let want = reference["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let before = metric(&s.metrics_base, "hhh_requests_rejected_total{reason=\"overloaded\"}").await;
    let reqs = (0..64).map(|_| {
        let (url, body) = (url.clone(), body.clone());
        async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (status, retry, r.json::<Value>().await.unwrap())
        }
    });
    let results = tokio::time::timeout(std::time::Duration::from_secs(240), futures::future::join_all(reqs)).await.expect("no request hangs");
    let (mut ok, mut limited) = (0, 0);
    for (status, retry, v) in results {
        match status {
            200 => {
                ok += 1;
                assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap(), want);
                assert_eq!(v["usage"]["completion_tokens"], 8);
            }
            429 => {
                limited += 1;
                assert!(retry.is_some(), "429 without Retry-After");
                assert_eq!(v["error"]["type"], "rate_limit_error");
                assert!(v["error"]["message"].as_str().unwrap().contains("limit of 4"), "{v}");
            }
            other => panic!("unexpected status {other}: {v}"),
        }
    }
    // The admission queue counts requests not yet scheduled, so how many of the 64 get a place
    // depends on how many steps the engine runs while they arrive (a scheduled request frees
    // its place); what is certain is that the queue is empty when they start, so the first 4
    // (`--max-waiting-requests`) are admitted. (Asserting 6, running + waiting, failed once on
    // a loaded 2-core CI machine: 5.)
    assert!(ok >= 4, "at least max-waiting-requests complete, got {ok}");
    assert!(limited >= 1, "64 clients against 6 places must see 429s");
    assert_eq!(ok + limited, 64);
    wait_idle(&s).await;
    let after = metric(&s.metrics_base, "hhh_requests_rejected_total{reason=\"overloaded\"}").await;
    assert_eq!(after - before, limited as f64);
}

/// 32 streaming clients drop their connections at random points while another client is
/// served; every block is freed and the abort and disconnect counters match exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnect_storm_frees_everything() {
    let s = spawn(&["--max-num-seqs", "8", "--num-kv-blocks", "400"]).await;
    let url = format!("{}/v1/chat/completions", s.base);
    let aborts0 = metric(&s.metrics_base, "hhh_requests_finished_total{finished_reason=\"abort\"}").await;
    let disc0 = metric(&s.metrics_base, "hhh_requests_rejected_total{reason=\"disconnected\"}").await;
    let storm = (0..32).map(|i| {
        let url = url.clone();
        let chunks = rand::rng().random_range(0..6);
        async move {
            let body = chat_body(&format!("Tell me a long story about ship number {i}."), 300, json!({"stream": true}));
            let r = client().post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let mut st = r.bytes_stream();
            for _ in 0..chunks {
                let c = st.next().await.unwrap().unwrap();
                assert!(!String::from_utf8_lossy(&c).contains("finish_reason\":\"length"), "finished before the drop");
            }
            drop(st);
        }
    });
    let good = async {
        let r: Value = client().post(&url).json(&chat_body("Say hello.", 8, json!({}))).send().await.unwrap().json().await.unwrap();
        r
    };
    let (_, good) = tokio::join!(futures::future::join_all(storm), good);
    assert_eq!(good["usage"]["completion_tokens"], 8, "{good}");
    wait_idle(&s).await;
    let aborts = metric(&s.metrics_base, "hhh_requests_finished_total{finished_reason=\"abort\"}").await - aborts0;
    let disc = metric(&s.metrics_base, "hhh_requests_rejected_total{reason=\"disconnected\"}").await - disc0;
    assert_eq!((aborts, disc), (32.0, 32.0));
}

/// `--request-timeout`: a non-streaming request past it gets a 408; a stream ends with an error
/// event; the blocks are freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_timeout_aborts() {
    let s = spawn(&["--request-timeout", "1"]).await;
    let url = format!("{}/v1/chat/completions", s.base);
    let r = client().post(&url).json(&chat_body("Write an essay.", 400, json!({}))).send().await.unwrap();
    assert_eq!(r.status(), 408);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "timeout_error");
    let text = client().post(&url).json(&chat_body("Write an essay.", 400, json!({"stream": true}))).send().await.unwrap().text().await.unwrap();
    let (_, finish, error, done) = parse_sse(&text);
    assert_eq!(finish.as_deref(), Some("abort"));
    assert_eq!(error.unwrap()["error"]["code"], "request_timeout");
    assert!(done);
    wait_idle(&s).await;
}

/// API keys: 401 on API routes without a valid key, health and metrics stay open; the request
/// id is echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_route_but_probes_metrics_and_the_page() {
    let dir = std::env::temp_dir().join(format!("hhh-keys-{}", std::process::id()));
    std::fs::write(&dir, "# keys\nfile-key\n").unwrap();
    let s = spawn(&["--api-key", "flag-key", "--api-key-file", dir.to_str().unwrap(), "--metrics-port", "0"]).await;
    let c = client();
    for path in ["/v1/models", "/tokenize"] {
        let r = if path == "/tokenize" { c.post(format!("{}{path}", s.base)).json(&json!({"prompt": "hi"})) } else { c.get(format!("{}{path}", s.base)) };
        let r = r.header("x-request-id", "req-42").send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["x-request-id"], "req-42");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
    for key in ["flag-key", "file-key"] {
        let r = c.get(format!("{}/v1/models", s.base)).bearer_auth(key).send().await.unwrap();
        assert_eq!(r.status(), 200, "{key}");
        assert_eq!(r.headers()["x-request-id"].len(), 32, "generated id");
    }
    assert_eq!(c.get(format!("{}/v1/models", s.base)).bearer_auth("flag-ke").send().await.unwrap().status(), 401);
    for path in ["/health", "/health/live", "/health/ready", "/playground"] {
        assert_eq!(c.get(format!("{}{path}", s.base)).send().await.unwrap().status(), 200, "{path}");
    }
    // The online-RL admin routes and the scoring routes outside /v1/ need a key too.
    for path in ["/update_weights_from_disk", "/pause_generation", "/continue_generation", "/get_reward", "/pooling", "/detokenize"] {
        let r = c.post(format!("{}{path}", s.base)).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    for path in ["/get_weight_version", "/tokenizer_info"] {
        assert_eq!(c.get(format!("{}{path}", s.base)).send().await.unwrap().status(), 401, "{path}");
    }
    let r = c.post(format!("{}/continue_generation", s.base)).bearer_auth("flag-key").send().await.unwrap();
    assert_eq!(r.status(), 200, "with a key the admin routes answer");
    // /metrics lives on the metrics port only.
    assert_eq!(c.get(format!("{}/metrics", s.base)).send().await.unwrap().status(), 404);
    assert!(metric(&s.metrics_base, "hhh_requests_rejected_total{reason=\"unauthorized\"}").await >= 3.0);
    let _ = std::fs::remove_file(dir);
}
