//! A real Prometheus server (Debian's `prometheus`, installed by `.ci/run`) scrapes the server on
//! loopback; we check through Prometheus's HTTP API that the target is up and that the metrics
//! exist and move. `promtool check metrics` lints the exposition.

mod support;

use serde_json::{json, Value};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Series every deployment dashboard relies on (see docs/metrics.md).
const REQUIRED: &[&str] = &[
    "hhh_num_requests_running",
    "hhh_num_requests_waiting",
    "hhh_kv_cache_usage_ratio",
    "hhh_kv_cache_num_blocks",
    "hhh_kv_cache_free_blocks",
    "hhh_model_info",
    "hhh_prefix_cache_queries_tokens_total",
    "hhh_prefix_cache_hits_tokens_total",
    "hhh_prompt_tokens_total",
    "hhh_generation_tokens_total",
    "hhh_requests_finished_total",
    "hhh_requests_rejected_total",
    "hhh_preemptions_total",
    "hhh_time_to_first_token_seconds_bucket",
    "hhh_inter_token_latency_seconds_bucket",
    "hhh_e2e_request_latency_seconds_bucket",
    "hhh_request_queue_time_seconds_bucket",
    "hhh_request_prefill_time_seconds_bucket",
    "hhh_request_decode_time_seconds_bucket",
    "hhh_request_prompt_tokens_bucket",
    "hhh_request_generation_tokens_bucket",
    "hhh_iteration_tokens_bucket",
    "hhh_iteration_batch_size_bucket",
    "hhh_process_resident_memory_bytes",
];

struct Prom(Child, std::path::PathBuf);

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn bin(name: &str) -> String {
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(found, "`{name}` is not installed: `apt-get install prometheus` (.ci/run does this)");
    name.to_string()
}

async fn query(prom: &str, q: &str) -> Vec<Value> {
    let v: Value = client().get(format!("{prom}/api/v1/query")).query(&[("query", q)]).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

async fn scalar(prom: &str, q: &str) -> Option<f64> {
    query(prom, q).await.first().and_then(|r| r["value"][1].as_str()?.parse().ok())
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_and_metrics_move() {
    let s = spawn(&["--metrics-port", "0"]).await;
    let target = s.metrics_base.trim_start_matches("http://").to_string();
    // promtool lints the exposition (names, units, _total suffixes, help text).
    let text = client().get(format!("{}/metrics", s.metrics_base)).send().await.unwrap().text().await.unwrap();
    let mut lint = Command::new(bin("promtool")).args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    lint.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let dir = std::env::temp_dir().join(format!("hhh-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: hhh\n    static_configs:\n      - targets: ['{target}']\n");
    std::fs::write(dir.join("prometheus.yml"), cfg).unwrap();
    let port = free_port();
    let child = Command::new(bin("prometheus"))
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _prom = Prom(child, dir);
    let prom = format!("http://127.0.0.1:{port}");
    eventually("prometheus ready", async || client().get(format!("{prom}/-/ready")).send().await.is_ok_and(|r| r.status() == 200)).await;
    eventually("target up", async || scalar(&prom, "up{job=\"hhh\"}").await == Some(1.0)).await;
    let names: Value = client().get(format!("{prom}/api/v1/label/__name__/values")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = names["data"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    let missing: Vec<_> = REQUIRED.iter().filter(|n| !names.contains(n)).collect();
    assert!(missing.is_empty(), "not scraped: {missing:?}");
    let info = query(&prom, "hhh_model_info").await;
    assert_eq!(info[0]["metric"]["model"], MODEL);
    assert_eq!(info[0]["metric"]["device"], "cpu");

    let gen0 = scalar(&prom, "hhh_generation_tokens_total").await.unwrap();
    let ttft0 = scalar(&prom, "hhh_time_to_first_token_seconds_count").await.unwrap();
    let stop0 = scalar(&prom, "sum(hhh_requests_finished_total{finished_reason=\"length\"})").await.unwrap();
    let r: Value = client().post(format!("{}/v1/chat/completions", s.base)).json(&chat_body("Hello!", 12, json!({}))).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["usage"]["completion_tokens"], 12);
    eventually("generation tokens +12", async || scalar(&prom, "hhh_generation_tokens_total").await.unwrap_or(0.0) >= gen0 + 12.0).await;
    eventually("ttft observed", async || scalar(&prom, "hhh_time_to_first_token_seconds_count").await.unwrap_or(0.0) >= ttft0 + 1.0).await;
    eventually("finished{length} +1", async || scalar(&prom, "sum(hhh_requests_finished_total{finished_reason=\"length\"})").await.unwrap_or(0.0) >= stop0 + 1.0).await;
    // Quantiles computed by Prometheus itself from our buckets are sane.
    let p50 = scalar(&prom, "histogram_quantile(0.5, sum by (le) (hhh_inter_token_latency_seconds_bucket))").await.unwrap();
    assert!(p50 > 0.0 && p50 < 5.0, "ITL p50 {p50}");
    let usage = scalar(&prom, "hhh_kv_cache_usage_ratio").await.unwrap();
    assert!((0.0..=1.0).contains(&usage));
}
