//! Graceful drain of the real binary under SIGTERM.

mod support;

use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn sigterm(p: &Proc) {
    let ok = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

/// Open `n` streams and return them once each has produced its first token.
async fn open_streams(base: &str, n: usize, max_tokens: usize) -> Vec<(reqwest::Response, Vec<u8>)> {
    let mut out = vec![];
    for i in 0..n {
        let body = chat_body(&format!("Describe river number {i}."), max_tokens, json!({"stream": true}));
        out.push(client().post(format!("{base}/v1/chat/completions")).json(&body).send().await.unwrap());
    }
    let mut res = vec![];
    for r in out {
        assert_eq!(r.status(), 200);
        let mut seen = Vec::new();
        let mut st = r;
        while String::from_utf8_lossy(&seen).matches("data: ").nth(1).is_none() {
            seen.extend_from_slice(&st.chunk().await.unwrap().expect("stream open"));
        }
        res.push((st, seen));
    }
    res
}

async fn finish(mut r: reqwest::Response, mut seen: Vec<u8>) -> String {
    while let Some(c) = r.chunk().await.unwrap() {
        seen.extend_from_slice(&c);
    }
    String::from_utf8(seen).unwrap()
}

fn wait_exit(p: &mut Proc, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        assert!(t0.elapsed() < limit, "process did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM with 8 streams in flight: they complete, readiness and new requests get 503 at once,
/// liveness stays 200, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let mut p = start_binary(&["--shutdown-timeout", "120"]).await;
    let streams = open_streams(&p.base, 8, 24).await;
    sigterm(&p);
    let c = client();
    let t0 = Instant::now();
    loop {
        let r = c.get(format!("{}/health/ready", p.base)).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "readiness still 200 two seconds after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = c.post(format!("{}/v1/chat/completions", p.base)).json(&chat_body("hi", 4, json!({}))).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "draining");
    assert_eq!(c.get(format!("{}/health/live", p.base)).send().await.unwrap().status(), 200);
    let texts = futures::future::join_all(streams.into_iter().map(|(r, seen)| finish(r, seen))).await;
    for t in texts {
        let (content, finish, error, done) = parse_sse(&t);
        assert!(error.is_none(), "{t}");
        assert_eq!(finish.as_deref(), Some("length"));
        assert!(done && !content.is_empty());
    }
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut p, Duration::from_secs(30))).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Past `--shutdown-timeout` the remaining streams end with an error event and the process
/// still exits 0; a second signal is not needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_timeout_aborts_the_rest_with_an_error_event() {
    let mut p = start_binary(&["--shutdown-timeout", "1"]).await;
    let streams = open_streams(&p.base, 4, 400).await;
    let t0 = Instant::now();
    sigterm(&p);
    let texts = futures::future::join_all(streams.into_iter().map(|(r, seen)| finish(r, seen))).await;
    for t in texts {
        let (_, finish, error, done) = parse_sse(&t);
        let e = error.unwrap_or_else(|| panic!("no error event: {t}"));
        assert!(e["error"]["message"].as_str().unwrap().contains("shutting down"), "{e}");
        assert_eq!(finish.as_deref(), Some("abort"));
        assert!(done);
    }
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut p, Duration::from_secs(30))).await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(20));
}

/// A second signal exits at once, in the middle of a drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_signal_exits_at_once() {
    let mut p = start_binary(&["--shutdown-timeout", "300"]).await;
    let streams = open_streams(&p.base, 2, 400).await;
    sigterm(&p);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&p);
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut p, Duration::from_secs(10))).await.unwrap();
    assert_eq!(status.code(), Some(130));
    drop(streams);
}
