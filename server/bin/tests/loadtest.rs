//! hhh-loadtest against the real server on 127.0.0.1: a 10-second sweep (two 5-second points)
//! whose report must agree with the server's own usage and /metrics counters, plus a rate-driven
//! point and failure accounting.

mod support;

use hhh_loadtest::client::{Target, UsageSource};
use hhh_loadtest::report::Report;
use hhh_loadtest::runner::PointConfig;
use hhh_loadtest::stats::Slo;
use hhh_loadtest::sweep::{run_sweep, SweepConfig};
use hhh_loadtest::workload::{self, ScenarioConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn scenario(name: &str, model: &str, n: usize) -> ScenarioConfig {
    ScenarioConfig {
        scenario: name.into(),
        model: model.into(),
        num_requests: n,
        input_len: 48,
        output_len: 16,
        prefix_len: 64,
        long_input_len: 256,
        long_fraction: 0.25,
        token_range: (1000, 40000),
        max_prompt_chars: 600,
        ignore_eos: true,
        temperature: 0.0,
        num_principles: None,
        seed: 7,
    }
}

fn pairs() -> Vec<workload::HhPair> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtests/data/hh-rlhf-harmless-base-test-200.jsonl");
    workload::read_hh_pairs(&p, 600).expect("hh pairs")
}

fn point(c: Option<usize>, rate: Option<f64>, n: Option<usize>, secs: Option<f64>) -> PointConfig {
    PointConfig { max_concurrency: c, request_rate: rate, burstiness: 1.0, num_requests: n, duration_s: secs, seed: 3 }
}

fn sweep(base: &str, workload: Vec<workload::RequestSpec>, points: Vec<PointConfig>, out: Option<PathBuf>) -> SweepConfig {
    SweepConfig {
        scenario: "chat".into(),
        target: Target { base_url: base.into(), api_key: None, timeout: Duration::from_secs(120) },
        workload,
        points,
        warmup: 0,
        slo: Slo::parse(&["ttft:60000".into(), "tpot:10000".into()]).unwrap(),
        out_dir: out,
        keep_requests: true,
        progress: false,
        keep_alive: false,
    }
}

async fn counters(base: &str) -> (f64, f64, f64) {
    let m = support::scrape(base).await;
    let get = |k: &str| m.iter().filter(|(s, _)| s == k).map(|(_, v)| *v).sum::<f64>();
    let finished = get("hhh_requests_finished_total{finished_reason=\"stop\"}") + get("hhh_requests_finished_total{finished_reason=\"length\"}");
    (get("hhh_prompt_tokens_total"), get("hhh_generation_tokens_total"), finished)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_second_sweep_agrees_with_the_server() {
    let s = support::spawn(&["--max-num-seqs", "8"]).await;
    assert!(s.base.starts_with("http://127.0.0.1:"), "loopback only: {}", s.base);
    let before = counters(&s.metrics_base).await;
    let out = std::env::temp_dir().join(format!("hhh-loadtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let work = workload::build(&scenario("chat", support::MODEL, 400), &pairs()).unwrap();
    let points = vec![point(Some(1), None, None, Some(5.0)), point(Some(4), None, None, Some(5.0))];
    let res = run_sweep(&sweep(&s.base, work, points, Some(out.clone()))).await.expect("sweep runs");
    assert_eq!(res.reports.len(), 2);
    for (r, c) in res.reports.iter().zip([1, 4]) {
        assert_eq!(r.failed, 0, "{:?} {:?}", r.failed_by_reason, res.error_examples);
        assert!(r.completed > 0 && r.request_throughput > 0.0 && r.output_token_throughput > 0.0, "{}", r.label);
        assert!(r.peak_concurrency <= c, "{} peak {}", r.label, r.peak_concurrency);
        assert_eq!(r.counted_by_tokenize, 0, "the server always sends usage");
        assert!(r.requests.iter().all(|q| q.usage_source == UsageSource::Server && q.output_tokens == 16), "ignore_eos: exactly max_tokens");
        assert_eq!(r.output_tokens, 16 * r.completed);
        // Every streamed chunk after the first gives one ITL sample; every request a TTFT.
        let itls: usize = r.requests.iter().map(|q| q.chunk_times_s.len().saturating_sub(1)).sum();
        assert_eq!(r.latency.itl_ms.unwrap().count, itls);
        assert_eq!(r.latency.ttft_ms.unwrap().count, r.completed);
        let g = r.goodput.as_ref().unwrap();
        assert!(g.attainment > 0.0 && g.attainment <= 1.0);
        let l = r.latency.ttft_ms.unwrap();
        assert!(l.min <= l.median && l.median <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max);
    }
    assert!(res.reports[1].peak_concurrency >= 2, "c=4 overlapped requests");
    // The client's totals are the server's: poll the counters (published after the responses).
    let prompt: usize = res.reports.iter().map(|r| r.prompt_tokens).sum();
    let output: usize = res.reports.iter().map(|r| r.output_tokens).sum();
    let done: usize = res.reports.iter().map(|r| r.completed).sum();
    let mut after = counters(&s.metrics_base).await;
    for _ in 0..100 {
        if (after.0 - before.0, after.1 - before.1, after.2 - before.2) == (prompt as f64, output as f64, done as f64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = counters(&s.metrics_base).await;
    }
    assert_eq!(after.0 - before.0, prompt as f64, "prompt tokens: server /metrics vs client report");
    assert_eq!(after.1 - before.1, output as f64, "generated tokens: server /metrics vs client report");
    assert_eq!(after.2 - before.2, done as f64, "finished requests: server /metrics vs client report");
    // What it wrote: one JSON per point (round-trips), the summary and the plots.
    for f in ["point-c_1.json", "point-c_4.json", "summary.md", "throughput.svg", "ttft.svg", "itl.svg", "cdf.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let back: Report = serde_json::from_str(&std::fs::read_to_string(out.join("point-c_4.json")).unwrap()).unwrap();
    assert_eq!((back.completed, back.output_tokens), (res.reports[1].completed, res.reports[1].output_tokens));
    assert!(std::fs::read_to_string(out.join("summary.md")).unwrap().contains("| c=4 |"));
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_points_scoring_and_failures_are_accounted() {
    let s = support::spawn(&["--reward-head", &format!("{}/../heads/smollm2-135m-instruct-hh-harmless.json", env!("CARGO_MANIFEST_DIR"))]).await;
    // Open loop: Poisson arrivals at 4 req/s for 2 s, synthetic token prompts of exactly 48 tokens.
    let work = workload::build(&scenario("random", support::MODEL, 64), &[]).unwrap();
    let res = run_sweep(&sweep(&s.base, work, vec![point(None, Some(4.0), None, Some(2.0))], None)).await.unwrap();
    let r = &res.reports[0];
    assert_eq!(r.failed, 0, "{:?}", res.error_examples);
    assert!(r.completed >= 1 && r.completed <= 40, "{} arrivals in 2 s at 4/s", r.completed);
    assert!(r.requests.iter().all(|q| q.prompt_tokens == 48), "the server counted the prompt the client built");
    // Scoring: two responses per rewards request, counted as items.
    let work = workload::build(&scenario("rewards", support::MODEL, 8), &pairs()).unwrap();
    let res = run_sweep(&sweep(&s.base, work, vec![point(Some(2), None, Some(4), None)], None)).await.unwrap();
    let r = &res.reports[0];
    assert_eq!((r.failed, r.completed, r.items, r.output_tokens), (0, 4, 8, 0), "{:?}", res.error_examples);
    assert!(r.item_throughput.unwrap() > 0.0 && r.prompt_tokens > 0);
    // A wrong model name: every request fails with the server's 404, counted by reason.
    let work = workload::build(&scenario("random", "no-such-model", 4), &[]).unwrap();
    let res = run_sweep(&sweep(&s.base, work.clone(), vec![point(Some(2), None, Some(4), None)], None)).await.unwrap();
    let r = &res.reports[0];
    assert_eq!((r.completed, r.failed), (0, 4));
    assert_eq!(r.failed_by_reason.get("http 404"), Some(&4), "{:?}", r.failed_by_reason);
    assert!(res.error_examples["http 404"].contains("no-such-model"), "{:?}", res.error_examples);
    // A failing warm-up stops the run before measuring.
    let mut cfg = sweep(&s.base, work, vec![point(Some(1), None, Some(1), None)], None);
    cfg.warmup = 1;
    assert!(matches!(run_sweep(&cfg).await, Err(hhh_loadtest::LoadtestError::Warmup(_))));
    // Nothing listening: connection failures, not a hang.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let work = workload::build(&scenario("random", support::MODEL, 2), &[]).unwrap();
    let res = run_sweep(&sweep(&format!("http://127.0.0.1:{port}"), work, vec![point(Some(1), None, Some(2), None)], None)).await.unwrap();
    assert_eq!(res.reports[0].failed_by_reason.get("connect"), Some(&2), "{:?}", res.reports[0].failed_by_reason);
}
