//! Generation defaults (`--generation-config`, `--override-generation-config`): listed in
//! /v1/models and applied exactly to the fields a request leaves out — a request without them
//! gives the same tokens as one that spells the defaults out, and explicit fields win.

mod support;

use serde_json::{json, Value};
use support::*;

async fn chat(s: &TestServer, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": 12, "seed": 5, "ignore_eos": true});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = client().post(format!("{}/v1/chat/completions", s.base)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn text(v: &Value) -> String {
    v["choices"][0]["message"]["content"].as_str().unwrap().to_string()
}

async fn card(s: &TestServer) -> Value {
    let v: Value = client().get(format!("{}/v1/models", s.base)).send().await.unwrap().json().await.unwrap();
    v["data"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_defaults_apply_to_missing_fields_only() {
    // `make model` puts the shipped defaults beside the GGUF; `auto` (the default) finds them.
    let shipped: Value = serde_json::from_str(&std::fs::read_to_string(model_path().with_extension("generation_config.json")).expect("make model wrote the defaults")).unwrap();
    let s = spawn(&[]).await;
    let d = card(&s).await["generation_defaults"].clone();
    assert_eq!(d["temperature"].as_f64().map(|t| (t * 100.0).round()), shipped["temperature"].as_f64().map(|t| (t * 100.0).round()), "{d}");
    assert_eq!(d["top_p"].as_f64().map(|t| (t * 100.0).round()), shipped["top_p"].as_f64().map(|t| (t * 100.0).round()), "{d}");
    let implicit = chat(&s, json!({})).await;
    let explicit = chat(&s, json!({"temperature": shipped["temperature"], "top_p": shipped["top_p"]})).await;
    assert_eq!(text(&implicit), text(&explicit), "defaults are the spelled-out fields");
    // Without defaults, the same seed at OpenAI's defaults (temperature 1, top_p 1) is what an
    // explicit temperature 1 gives on the default server.
    let none = spawn(&["--generation-config", "none"]).await;
    assert!(card(&none).await.get("generation_defaults").is_none());
    let t1_none = chat(&none, json!({})).await;
    let t1_explicit = chat(&s, json!({"temperature": 1.0, "top_p": 1.0})).await;
    assert_eq!(text(&t1_none), text(&t1_explicit), "explicit fields beat the defaults");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_lays_over_the_file_and_sets_the_default_length() {
    let s = spawn(&["--override-generation-config", r#"{"temperature": 0, "max_new_tokens": 3}"#]).await;
    let d = card(&s).await["generation_defaults"].clone();
    assert_eq!((d["temperature"].as_f64(), d["max_tokens"].as_i64()), (Some(0.0), Some(3)), "{d}");
    assert!(d["top_p"].as_f64().is_some(), "the file's other keys stay: {d}");
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Count to ten."}], "ignore_eos": true});
    let v: Value = client().post(format!("{}/v1/chat/completions", s.base)).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(3), "max_new_tokens is the default length: {v}");
    let greedy = chat(&s, json!({"temperature": 0})).await;
    let implicit = chat(&s, json!({"seed": 99})).await;
    assert_eq!(text(&greedy), text(&implicit), "temperature 0 by default: the seed does not matter");
}
