//! Tool calling end to end. The default model's template has no tools (generic mode: the tools
//! in a system message, JSON output under a grammar); the real Qwen2.5, Llama 3.1 and Mistral
//! Nemo templates (`--chat-template`, fixtures of `scripts/gen_tool_fixtures.py`) run the native
//! formats, whose output is forced with a regex where the 135M model would not write a call by
//! itself. Arguments are checked against the schema by hand, streams are reassembled and
//! compared with the non-streamed answer, and bad requests are 400s naming the field.

mod support;

use serde_json::{json, Value};
use support::*;

fn weather() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"], "additionalProperties": false}}})
}

fn search() -> Value {
    json!({"type": "function", "function": {"name": "search", "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string", "maxLength": 30}, "limit": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["query", "limit"], "additionalProperties": false}}})
}

/// Checks arguments against the two schemas by hand (independent of the grammar engine).
fn valid_args(name: &str, args: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(args).map_err(|e| format!("{args}: {e}"))?;
    let o = v.as_object().ok_or("not an object")?;
    match name {
        "get_weather" => {
            let city = o.get("city").and_then(Value::as_str).ok_or("city missing")?;
            if city.chars().count() > 20 {
                return Err("city too long".into());
            }
            if let Some(u) = o.get("unit") {
                if !["celsius", "fahrenheit"].contains(&u.as_str().ok_or("unit not a string")?) {
                    return Err(format!("unit {u}"));
                }
            }
            if o.keys().any(|k| k != "city" && k != "unit") {
                return Err(format!("extra keys in {args}"));
            }
        }
        "search" => {
            o.get("query").and_then(Value::as_str).ok_or("query missing")?;
            let l = o.get("limit").and_then(Value::as_i64).ok_or("limit missing")?;
            if !(1..=5).contains(&l) || o.len() != 2 {
                return Err(format!("bad search args {args}"));
            }
        }
        other => return Err(format!("unknown tool {other}")),
    }
    Ok(())
}

async fn post(s: &TestServer, body: &Value) -> (u16, Value) {
    let r = client().post(format!("{}/v1/chat/completions", s.base)).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn body(extra: Value) -> Value {
    let mut b = json!({"model": MODEL, "messages": [{"role": "user", "content": "What is the weather in Paris?"}], "max_tokens": 60, "temperature": 1.0, "tools": [weather(), search()]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// (name, arguments) of each call.
fn calls(msg: &Value) -> Vec<(String, String)> {
    msg["tool_calls"].as_array().map_or(vec![], |a| a.iter().map(|c| (c["function"]["name"].as_str().unwrap().to_string(), c["function"]["arguments"].as_str().unwrap().to_string())).collect())
}

/// Streamed chat reassembled: (content, calls, finish_reason).
async fn streamed(s: &TestServer, mut b: Value) -> (String, Vec<(String, String)>, String) {
    b["stream"] = json!(true);
    let text = client().post(format!("{}/v1/chat/completions", s.base)).json(&b).send().await.unwrap().text().await.unwrap();
    let (mut content, mut calls, mut finish): (String, Vec<(String, String)>, String) = (String::new(), vec![], String::new());
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
        let v: Value = serde_json::from_str(data).unwrap();
        for c in v["choices"].as_array().unwrap() {
            content.push_str(c["delta"]["content"].as_str().unwrap_or_default());
            for d in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = d["index"].as_u64().unwrap() as usize;
                if i == calls.len() {
                    assert!(d["id"].is_string() && d["type"] == "function", "first delta of a call carries id and type: {d}");
                    calls.push((d["function"]["name"].as_str().unwrap().to_string(), String::new()));
                }
                calls[i].1.push_str(d["function"]["arguments"].as_str().unwrap_or_default());
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
    }
    (content, calls, finish)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_mode_forced_and_auto_calls_always_parse() {
    let s = spawn(&[]).await;
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    let (mut auto_calls, mut auto_text) = (0, 0);
    for seed in 0..6 {
        // A named function: exactly that call, arguments valid, finish `stop` (as OpenAI).
        let (st, v) = post(&s, &body(json!({"seed": seed, "tool_choice": named}))).await;
        assert_eq!(st, 200, "{v}");
        let c = &v["choices"][0];
        let got = calls(&c["message"]);
        assert_eq!(got.len(), 1, "{v}");
        assert_eq!(got[0].0, "get_weather");
        valid_args(&got[0].0, &got[0].1).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(c["message"]["content"].is_null(), "{v}");
        assert_eq!(c["finish_reason"], "stop");
        assert!(c["message"]["tool_calls"][0]["id"].as_str().unwrap().starts_with("call_"));
        // `required` without parallel calls: one call of either tool.
        let (st, v) = post(&s, &body(json!({"seed": seed, "tool_choice": "required", "parallel_tool_calls": false, "max_tokens": 80}))).await;
        assert_eq!(st, 200, "{v}");
        let got = calls(&v["choices"][0]["message"]);
        assert_eq!(got.len(), 1, "{v}");
        valid_args(&got[0].0, &got[0].1).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        // `auto`: a valid call or a text answer, never a broken call.
        let (st, v) = post(&s, &body(json!({"seed": seed, "max_tokens": 80}))).await;
        assert_eq!(st, 200, "{v}");
        let c = &v["choices"][0];
        let got = calls(&c["message"]);
        if got.is_empty() {
            assert!(c["message"]["content"].is_string());
            auto_text += 1;
        } else {
            assert_eq!(c["finish_reason"], "tool_calls", "{v}");
            for (n, a) in &got {
                valid_args(n, a).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            }
            auto_calls += 1;
        }
    }
    eprintln!("auto: {auto_calls} calls, {auto_text} text answers of 6");
    assert_eq!(auto_calls + auto_text, 6, "every auto answer is a call or text");
    // Streams reassemble into the non-streamed answer (same seed).
    for extra in [json!({"seed": 7, "tool_choice": named}), json!({"seed": 8, "tool_choice": "required"}), json!({"seed": 9})] {
        let (_, v) = post(&s, &body(extra.clone())).await;
        let c = &v["choices"][0];
        let (content, got, finish) = streamed(&s, body(extra.clone())).await;
        assert_eq!(got, calls(&c["message"]), "{extra}");
        assert_eq!(content, c["message"]["content"].as_str().unwrap_or_default(), "{extra}");
        assert_eq!(finish, c["finish_reason"].as_str().unwrap(), "{extra}");
    }
    // A follow-up with the call and its result is answered.
    let (_, v) = post(&s, &body(json!({"seed": 1, "tool_choice": named}))).await;
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    let follow = json!({"messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp\": 21}"}
    ], "tool_choice": "none"});
    let (st, v) = post(&s, &body(follow)).await;
    assert_eq!(st, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string() && v["choices"][0]["message"].get("tool_calls").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tool_requests_name_the_field() {
    let s = spawn(&[]).await;
    let cases = [
        (json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}}), "tool_choice.function.name"),
        (json!({"tool_choice": "sometimes"}), "tool_choice"),
        (json!({"tools": [], "tool_choice": "required"}), "tool_choice"),
        (json!({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}), "tools[0].type"),
        (json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]}), "tools[0].function.name"),
        (json!({"tools": [weather(), weather()]}), "tools[1].function.name"),
        (json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "bogus"}}}}}], "tool_choice": "required"}), "tools"),
        (json!({"tool_choice": "required", "response_format": {"type": "json_object"}}), "tool_choice"),
        (json!({"harmlessness": {}}), "harmlessness"),
        (json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "42"}]}), "messages[1].tool_call_id"),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
    ];
    for (extra, param) in cases {
        let (st, v) = post(&s, &body(extra.clone())).await;
        assert_eq!(st, 400, "{extra}: {v}");
        assert_eq!(v["error"]["param"], param, "{extra}: {v}");
    }
    // Tools are a chat field: the completions route still refuses them.
    let r = client().post(format!("{}/v1/completions", s.base)).json(&json!({"model": MODEL, "prompt": "x", "tools": [weather()]})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    wait_idle(&s).await;
}

fn template(name: &str) -> String {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/tool_templates").join(format!("{name}.jinja"));
    p.to_str().unwrap().to_string()
}

/// Native formats: the model's own template renders the tools; the output is forced into the
/// format with a regex (`tool_choice: auto`), then read by the format's parser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_formats_are_read_and_streamed() {
    let cases = [
        ("qwen2.5", r#"Checking\.\n<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "(Paris|Oslo)"\}\}\n</tool_call>"#, "Checking.\n", "call_"),
        ("llama3.1", r#"\{"name": "get_weather", "parameters": \{"city": "(Paris|Oslo)"\}\}"#, "", "call_"),
        ("mistral-nemo", r#"\[TOOL_CALLS\]\[\{"name": "get_weather", "arguments": \{"city": "(Paris|Oslo)"\}\}\]"#, "", ""),
    ];
    for (name, regex, content, id_prefix) in cases {
        let s = spawn(&["--chat-template", &template(name)]).await;
        let b = json!({"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 60, "temperature": 1.0, "seed": 3,
            "tools": [weather()], "structured_outputs": {"regex": regex}});
        let (st, v) = post(&s, &b).await;
        assert_eq!(st, 200, "{name}: {v}");
        eprintln!("{name}: {}", v["choices"][0]["message"]);
        let c = &v["choices"][0];
        let got = calls(&c["message"]);
        assert_eq!(got.len(), 1, "{name}: {v}");
        valid_args(&got[0].0, &got[0].1).unwrap();
        assert_eq!(c["finish_reason"], "tool_calls", "{name}: {v}");
        assert_eq!(c["message"]["content"].as_str().unwrap_or_default(), content, "{name}: {v}");
        let id = c["message"]["tool_calls"][0]["id"].as_str().unwrap();
        assert!(id.starts_with(id_prefix) && (name != "mistral-nemo" || id.len() == 9), "{name}: id {id}");
        let (sc, sg, sf) = streamed(&s, b.clone()).await;
        assert_eq!((sc.as_str(), sg, sf.as_str()), (content, got, "tool_calls"), "{name}");
        // The model's template renders the call and its result in the next turn (Mistral's
        // insists on 9-character ids, Llama's on one call per turn).
        let call = c["message"]["tool_calls"][0].clone();
        let follow = json!({"model": MODEL, "max_tokens": 8, "tools": [weather()], "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "21 C"}
        ]});
        let (st, v) = post(&s, &follow).await;
        assert_eq!(st, 200, "{name}: {v}");
        // Forced by name in the native mode too.
        let named = json!({"model": MODEL, "messages": [{"role": "user", "content": "Weather?"}], "max_tokens": 60, "temperature": 1.0, "seed": 4,
            "tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
        let (st, v) = post(&s, &named).await;
        assert_eq!(st, 200, "{name}: {v}");
        let got = calls(&v["choices"][0]["message"]);
        valid_args(&got[0].0, &got[0].1).unwrap();
    }
}
