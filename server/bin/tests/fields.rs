//! Leniency like vLLM's on the OpenAI routes: unknown fields are ignored and listed in
//! `x-hhh-ignored-fields`; no-op values of fields we do not implement are accepted and change
//! nothing; values that would change the output stay a 400; `--strict-fields` restores 400s for
//! unknown fields and unimplemented fields whatever their value (the behaviour before leniency).

mod support;

use serde_json::{json, Value};
use support::*;

async fn post(s: &TestServer, path: &str, body: &Value) -> (u16, Option<String>, Value) {
    let r = client().post(format!("{}{path}", s.base)).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let ignored = r.headers().get("x-hhh-ignored-fields").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, ignored, r.json().await.unwrap_or(Value::Null))
}

fn with(extra: Value) -> Value {
    chat_body("Name a fruit.", 6, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_ignored_and_no_ops_change_nothing() {
    let s = spawn(&[]).await;
    let (st, ignored, plain) = post(&s, "/v1/chat/completions", &with(json!({}))).await;
    assert_eq!((st, ignored), (200, None));
    let text = |v: &Value| v["choices"][0]["message"]["content"].as_str().map(str::to_string);
    // Unknown fields: ignored, listed, same output (greedy).
    let (st, ignored, v) = post(&s, "/v1/chat/completions", &with(json!({"chat_template_kwargs": {"x": 1}, "frobnicate": true}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(ignored.as_deref(), Some("chat_template_kwargs, frobnicate"));
    assert_eq!(text(&v), text(&plain));
    // No-op values of unimplemented fields: accepted, not listed, same output.
    let noops = json!({"response_format": {"type": "text"}, "tools": [], "tool_choice": "none", "parallel_tool_calls": false, "logit_bias": {}, "functions": null});
    // (`logit_bias` is implemented; an empty one is a no-op like the others.)
    let (st, ignored, v) = post(&s, "/v1/chat/completions", &with(noops)).await;
    assert_eq!((st, ignored), (200, None), "{v}");
    assert_eq!(text(&v), text(&plain));
    let (st, ignored, _) = post(&s, "/v1/completions", &json!({"model": MODEL, "prompt": "Hi", "max_tokens": 2, "best_of": 1, "suffix": "", "zzz": 1})).await;
    assert_eq!((st, ignored.as_deref()), (200, Some("zzz")));
    // Values that would change the output stay a 400 naming the field.
    for (body, param) in [
        (with(json!({"prediction": {"type": "content", "content": "x"}})), "prediction"),
        (with(json!({"functions": [{"name": "f"}], "function_call": "auto"})), "functions"),
        (with(json!({"logit_bias": {"42": 500}})), "logit_bias"),
        (with(json!({"logit_bias": {"not-an-id": 1}})), "logit_bias"),
        (with(json!({"audio": {"voice": "x"}})), "audio"),
    ] {
        let (st, _, v) = post(&s, "/v1/chat/completions", &body).await;
        assert_eq!(st, 400, "{body}");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    // Our own routes stay strict: a typo there is a 400.
    let (st, _, v) = post(&s, "/v1/harmlessness/label", &json!({"prompt": "x", "options": [" a", " b"], "optionz": 1})).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("optionz")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_fields_rejects_unknown_fields() {
    let s = spawn(&["--strict-fields"]).await;
    let (st, _, v) = post(&s, "/v1/chat/completions", &with(json!({"frobnicate": 1}))).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("frobnicate")));
    // Today's behaviour in full: unimplemented fields are a 400 even with a no-op value.
    let (st, _, v) = post(&s, "/v1/chat/completions", &with(json!({"modalities": ["text"]}))).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("modalities")));
    // Implemented fields are fields like any other.
    let (st, _, v) = post(&s, "/v1/chat/completions", &with(json!({"tool_choice": "none"}))).await;
    assert_eq!(st, 200, "{v}");
}

/// `logit_bias` (OpenAI semantics: added to the logits before sampling): −100 bans a token,
/// +100 forces it; reported logprobs stay the model's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_bans_and_forces_tokens() {
    let s = spawn(&[]).await;
    let first = |v: &Value| v["choices"][0]["logprobs"]["content"][0].clone();
    let (_, _, plain) = post(&s, "/v1/chat/completions", &with(json!({"logprobs": true, "max_tokens": 1}))).await;
    let (_, _, tok) = post(&s, "/tokenize", &json!({"prompt": first(&plain)["token"], "add_special_tokens": false})).await;
    let greedy_id = tok["tokens"][0].as_u64().expect("the greedy token's id");
    let (st, _, banned) = post(&s, "/v1/chat/completions", &with(json!({"logprobs": true, "max_tokens": 1, "logit_bias": {greedy_id.to_string(): -100}}))).await;
    assert_eq!(st, 200, "{banned}");
    assert_ne!(first(&banned)["token"], first(&plain)["token"], "the banned token is not picked");
    let (st, _, forced) = post(&s, "/v1/completions", &json!({"model": MODEL, "prompt": "The", "max_tokens": 3, "temperature": 0, "logprobs": 0, "logit_bias": {"42": 100}})).await;
    assert_eq!(st, 200, "{forced}");
    let (_, _, d) = post(&s, "/detokenize", &json!({"tokens": [42, 42, 42]})).await;
    assert_eq!(forced["choices"][0]["text"], d["prompt"], "+100 forces token 42 three times: {forced}");
    // The reported logprob is the model's own (negative; a bias of +100 would make it ~0).
    assert!(forced["choices"][0]["logprobs"]["token_logprobs"][0].as_f64().unwrap() < -0.5, "{forced}");
}
