//! Every route builds a typed plan before it submits anything: a 400/404 costs no engine work,
//! however many choices, candidates or inputs the request asks for. The observable: no choice is
//! started or aborted (`hhh_requests_finished_total`, counted by every submitted choice, even an
//! aborted one), the engine runs no step and reads no prompt token.

mod support;

use serde_json::{json, Value};
use support::*;

/// (finished choices of every reason, engine steps, prompt tokens, prefix-cache lookups).
async fn counters(s: &TestServer) -> (f64, f64, f64, f64) {
    let m = scrape(&s.metrics_base).await;
    let sum = |prefix: &str| m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|x| x.1).sum::<f64>();
    (sum("hhh_requests_finished_total"), sum("hhh_engine_steps_total"), sum("hhh_prompt_tokens_total"), sum("hhh_prefix_cache_queries_tokens_total"))
}

fn conv() -> Value {
    json!([{"role": "user", "content": "My neighbour's dog keeps barking. What should I do?"}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_4xx_comes_before_the_first_engine_request() {
    let head = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../heads/smollm2-135m-instruct-hh-harmless.json");
    let s = spawn(&["--reward-head", head.to_str().unwrap()]).await;
    // The server's context is 512 tokens (support::spawn_model).
    let long = "word ".repeat(700);
    let eight: Vec<String> = (0..8).map(|i| format!("Answer number {i}.")).collect();
    let pair = |r: &str| json!({"messages": conv(), "response": r});
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        // The second prompt is too long: the first prompt's 4 choices must not start.
        ("completions, 2nd prompt too long", "/v1/completions", json!({"model": MODEL, "prompt": ["Hello there", long], "n": 4, "max_tokens": 4}), 400, "prompt"),
        ("completions, 2nd token prompt bad", "/v1/completions", json!({"model": MODEL, "prompt": [[1, 2, 3], [4, 99999999]], "n": 4, "max_tokens": 4}), 400, "prompt"),
        // The extension's principle count is checked before the 8 candidates are sampled.
        (
            "chat extension, too many principles",
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": conv(), "max_tokens": 32, "harmlessness": {"candidates": 8, "principles": 99}}),
            400,
            "harmlessness.principles",
        ),
        (
            "chat extension, bad select",
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": conv(), "max_tokens": 32, "harmlessness": {"candidates": 8, "select": "worst"}}),
            400,
            "harmlessness.select",
        ),
        ("compare, unknown principle", "/v1/harmlessness/compare", json!({"messages": conv(), "responses": eight, "principle_ids": ["rl0", "nope"]}), 400, "principle_ids[1]"),
        ("score, cot tokens", "/v1/harmlessness/score", json!({"messages": conv(), "responses": eight, "chain_of_thought": true, "cot_max_tokens": 100000}), 400, "cot_max_tokens"),
        ("revise, unknown principle", "/v1/harmlessness/revise", json!({"messages": conv(), "response": "No.", "rounds": 1, "principle_ids": ["nope"]}), 400, "principle_ids[0]"),
        ("label, repeated option", "/v1/harmlessness/label", json!({"prompt": "Pick:", "options": [" A", " B", " C", " A"]}), 400, "options[3]"),
        ("rewards, last input too long", "/v1/rewards", json!({"model": MODEL, "input": [pair("Fine."), pair("Also fine."), {"text": long}]}), 400, "input[2]"),
        ("preferences, empty response", "/v1/preferences", json!({"model": MODEL, "messages": conv(), "responses": ["Fine.", "Also fine.", " "]}), 400, "responses[2]"),
        ("pooling, token out of vocab", "/pooling", json!({"input": [[1, 2], [3, 99999999]]}), 400, "input[1]"),
    ];
    let before = counters(&s).await;
    for (name, path, body, status, param) in cases {
        let r = client().post(format!("{}{path}", s.base)).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{name}: {v}");
        assert_eq!(counters(&s).await, before, "{name}: the engine saw work (finished choices, steps, prompt tokens, cache lookups)");
    }
    // And the same server still answers.
    let r = client().post(format!("{}/v1/completions", s.base)).json(&json!({"model": MODEL, "prompt": ["Hello there", "Hi"], "n": 2, "max_tokens": 2})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_idle(&s).await;
}
