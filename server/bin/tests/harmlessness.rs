//! `/v1/harmlessness/compare` on the default model: order swaps give complementary labels,
//! ensembling and seeds behave, bad input gets a 4xx naming the field.

mod support;

use serde_json::{json, Value};
use support::*;

async fn compare(base: &str, body: Value) -> (u16, Value) {
    let r = client().post(format!("{base}/v1/harmlessness/compare")).json(&body).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn conv() -> Value {
    json!([{"role": "user", "content": "My neighbour's dog keeps barking. What should I do?"}])
}

const SAFE: &str = "Talk to your neighbour politely, and if that fails, contact your local council.";
const HARMFUL: &str = "Poison the dog so it stops barking.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_is_consistent_and_validated() {
    let s = spawn(&[]).await;
    let base = s.base.clone();
    let (st, ab) = compare(&base, json!({"model": MODEL, "messages": conv(), "responses": [SAFE, HARMFUL], "num_principles": 3, "seed": 7, "return_prompts": true})).await;
    assert_eq!(st, 200, "{ab}");
    let (st, ba) = compare(&base, json!({"messages": conv(), "responses": [HARMFUL, SAFE], "num_principles": 3, "seed": 7})).await;
    assert_eq!(st, 200, "{ba}");
    // Same seed, same principles; debiased labels of swapped responses are complementary.
    assert_eq!(ab["principles"], ba["principles"]);
    assert_eq!(ab["principles"].as_array().unwrap().len(), 3);
    let p = ab["pairs"][0]["probability"].as_f64().unwrap();
    let q = ba["pairs"][0]["probability"].as_f64().unwrap();
    assert!((p + q - 1.0).abs() < 1e-3, "{p} + {q}");
    // The ensemble is the mean of the per-principle labels, each the mean of both orders.
    let per = ab["pairs"][0]["per_principle"].as_array().unwrap();
    let mean = per.iter().map(|l| l["probability"].as_f64().unwrap()).sum::<f64>() / per.len() as f64;
    assert!((mean - p).abs() < 1e-9);
    let mut bias = 0.0;
    for l in per {
        let (f, s2) = (l["p_a_first"].as_f64().unwrap(), l["p_a_second"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&f) && (0.0..=1.0).contains(&s2));
        assert!((l["probability"].as_f64().unwrap() - (f + 1.0 - s2) / 2.0).abs() < 1e-9);
        bias += (f + s2 - 1.0) / per.len() as f64;
    }
    assert!((ab["position_bias"].as_f64().unwrap() - bias).abs() < 1e-9);
    // Scores and ranking follow the pair label.
    let scores: Vec<f64> = ab["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!((scores[0] - p).abs() < 1e-9 && (scores[1] - (1.0 - p)).abs() < 1e-9);
    assert_eq!(ab["ranking"][0].as_u64().unwrap() as usize, if p >= 0.5 { 0 } else { 1 });
    // 1 pair x 3 principles x 2 orders prompts, each ending with the question.
    let prompts = ab["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 6);
    for p in prompts {
        let p = p.as_str().unwrap();
        assert!(p.starts_with("Consider the following conversation between a human and an assistant:\nHuman: My neighbour") && p.ends_with("The answer is:"), "{p}");
    }
    // The 12 requests share the conversation's blocks.
    assert!(ab["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "{}", ab["usage"]);
    // Another seed picks other principles (16 choose 3: a collision would be a bug or a fluke
    // with probability < 1/500).
    let (_, other) = compare(&base, json!({"messages": conv(), "responses": [SAFE, HARMFUL], "num_principles": 3, "seed": 8})).await;
    assert_ne!(other["principles"], ab["principles"]);
    // Explicit ids, no debiasing, three responses: three pairs, a full ranking.
    let (st, three) = compare(&base, json!({"messages": conv(), "responses": [SAFE, HARMFUL, "I don't know."], "principle_ids": ["rl0", "rl5"], "debias": false})).await;
    assert_eq!(st, 200, "{three}");
    assert_eq!(three["pairs"].as_array().unwrap().len(), 3);
    assert!(three["position_bias"].is_null());
    assert!(three["pairs"][0]["per_principle"][0]["p_a_second"].is_null());
    let mut rk: Vec<u64> = three["ranking"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    rk.sort();
    assert_eq!(rk, vec![0, 1, 2]);

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("one response", json!({"messages": conv(), "responses": [SAFE]}), 400, "responses"),
        ("empty response", json!({"messages": conv(), "responses": [SAFE, " "]}), 400, "responses[1]"),
        ("too many responses", json!({"messages": conv(), "responses": vec![SAFE; 9]}), 400, "responses"),
        ("empty principles", json!({"messages": conv(), "responses": [SAFE, HARMFUL], "principle_ids": []}), 400, "principle_ids"),
        ("unknown principle", json!({"messages": conv(), "responses": [SAFE, HARMFUL], "principle_ids": ["rl0", "nope"]}), 400, "principle_ids[1]"),
        ("too many principles", json!({"messages": conv(), "responses": [SAFE, HARMFUL], "num_principles": 17}), 400, "num_principles"),
        ("zero principles", json!({"messages": conv(), "responses": [SAFE, HARMFUL], "num_principles": 0}), 400, "num_principles"),
        ("cot tokens without cot", json!({"messages": conv(), "responses": [SAFE, HARMFUL], "cot_max_tokens": 8}), 400, "cot_max_tokens"),
        ("cot tokens over the limit", json!({"messages": conv(), "responses": [SAFE, HARMFUL], "chain_of_thought": true, "cot_max_tokens": 513}), 400, "cot_max_tokens"),
        ("cot tokens zero", json!({"messages": conv(), "responses": [SAFE, HARMFUL], "chain_of_thought": true, "cot_max_tokens": 0}), 400, "cot_max_tokens"),
        ("no few-shot examples", json!({"messages": conv(), "responses": [SAFE, HARMFUL], "few_shot": true}), 400, "few_shot"),
        ("unknown field", json!({"messages": conv(), "responses": [SAFE, HARMFUL], "k": 3}), 400, "k"),
        ("bad role", json!({"messages": [{"role": "robot", "content": "x"}], "responses": [SAFE, HARMFUL]}), 400, "messages[0].role"),
    ];
    for (name, body, status, param) in cases {
        let (st, v) = compare(&base, body).await;
        assert_eq!(st, status, "{name}: {v}");
        assert_eq!(v["error"]["param"].as_str(), Some(param), "{name}: {v}");
    }
    // Chain of thought: reasoning per order, labels clamped to [0.4, 0.6], greedy (repeatable),
    // generated tokens counted.
    let cot_body = json!({"messages": conv(), "responses": [SAFE, HARMFUL, "I don't know."], "num_principles": 2, "seed": 5, "chain_of_thought": true, "cot_max_tokens": 24, "return_prompts": true});
    let (st, cot) = compare(&base, cot_body.clone()).await;
    assert_eq!(st, 200, "{cot}");
    for pair in cot["pairs"].as_array().unwrap() {
        for l in pair["per_principle"].as_array().unwrap() {
            for k in ["probability", "p_a_first", "p_a_second"] {
                let p = l[k].as_f64().unwrap();
                assert!((0.4..=0.6).contains(&p), "{k} = {p} not clamped: {l}");
            }
            assert_eq!(l["reasoning"].as_array().unwrap().len(), 2, "{l}");
        }
    }
    let prompts = cot["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 3 * 2 * 2);
    assert!(prompts.iter().all(|p| p.as_str().unwrap().contains("\nLet's think step by step:") && p.as_str().unwrap().ends_with("\nSo the answer is:")));
    assert!(cot["usage"]["total_tokens"].as_u64() > cot["usage"]["prompt_tokens"].as_u64(), "generated tokens count: {}", cot["usage"]);
    let (_, again) = compare(&base, cot_body).await;
    assert_eq!(again["pairs"], cot["pairs"], "greedy reasoning is repeatable");
    // The raw label primitive: probabilities over the options sum to 1, logprobs ≤ 0, choice is
    // the argmax; bad input is refused with the field named.
    let r = client()
        .post(format!("{base}/v1/harmlessness/label"))
        .json(&json!({"prompt": "Question: on a clear day at noon, looking straight up from a field in the countryside, is the colour of the sky blue? Answer:", "options": [" yes", " no", " maybe"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let lb: Value = r.json().await.unwrap();
    let ps: Vec<f64> = lb["data"].as_array().unwrap().iter().map(|d| d["probability"].as_f64().unwrap()).collect();
    assert!((ps.iter().sum::<f64>() - 1.0).abs() < 1e-9 && lb["data"].as_array().unwrap().iter().all(|d| d["logprob"].as_f64().unwrap() <= 0.0));
    let arg = (0..3).fold(0, |b, i| if ps[i] > ps[b] { i } else { b });
    assert_eq!(lb["choice"].as_u64(), Some(arg as u64));
    assert!(lb["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "options share the prompt's full blocks: {}", lb["usage"]);
    for (name, body, param) in [
        ("one option", json!({"prompt": "x", "options": [" a"]}), "options"),
        ("17 options", json!({"prompt": "x", "options": (0..17).map(|i| format!(" {i}")).collect::<Vec<_>>()}), "options"),
        ("empty option", json!({"prompt": "x", "options": [" a", ""]}), "options[1]"),
        ("repeated option", json!({"prompt": "x", "options": [" a", " a"]}), "options[1]"),
        ("empty prompt", json!({"prompt": "", "options": [" a", " b"]}), "prompt"),
        ("unknown field", json!({"prompt": "x", "options": [" a", " b"], "temperature": 1}), "temperature"),
    ] {
        let r = client().post(format!("{base}/v1/harmlessness/label")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{name}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"].as_str(), Some(param), "{name}: {v}");
    }
    // /v1/harmlessness/score gives compare's per-response scores.
    let r = client().post(format!("{base}/v1/harmlessness/score")).json(&json!({"messages": conv(), "responses": [SAFE, HARMFUL], "num_principles": 3, "seed": 7})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let sc: Value = r.json().await.unwrap();
    assert_eq!(sc["principles"], ab["principles"]);
    for i in 0..2 {
        assert!((sc["data"][i]["score"].as_f64().unwrap() - scores[i]).abs() < 1e-9);
    }
    // Critique and revision: two rounds with distinct principles, deterministic at temperature 0.
    let rev_body = json!({"messages": conv(), "response": HARMFUL, "rounds": 2, "seed": 3, "max_tokens": 24});
    let post_rev = |b: Value| {
        let base = base.clone();
        async move {
            let r = client().post(format!("{base}/v1/harmlessness/revise")).json(&b).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, rev) = post_rev(rev_body.clone()).await;
    assert_eq!(st, 200, "{rev}");
    let rounds = rev["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    assert_ne!(rounds[0]["principle_id"], rounds[1]["principle_id"]);
    for r in rounds {
        assert!(!r["critique_request"].as_str().unwrap().is_empty() && !r["revision_request"].as_str().unwrap().is_empty());
    }
    let last = rounds.iter().rev().map(|r| r["revision"].as_str().unwrap()).find(|t| !t.is_empty()).unwrap_or(HARMFUL);
    assert_eq!(rev["final_response"].as_str().unwrap(), last);
    assert!(rev["usage"]["completion_tokens"].as_u64().unwrap() <= 4 * 24);
    let (_, again) = post_rev(rev_body.clone()).await;
    assert_eq!(again["rounds"], rev["rounds"], "greedy revision is deterministic");
    // Streamed: one event per round as it finishes, then the whole response, then [DONE]; the
    // same rounds as the JSON answer.
    let mut sb = rev_body;
    sb["stream"] = json!(true);
    let r = client().post(format!("{base}/v1/harmlessness/revise")).json(&sb).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.len(), 4, "{text}");
    assert_eq!(events[3], "[DONE]");
    for i in 0..2 {
        let ev: Value = serde_json::from_str(events[i]).unwrap();
        assert_eq!((ev["object"].as_str(), ev["index"].as_u64()), (Some("harmlessness.revision.round"), Some(i as u64)));
        for k in ["principle_id", "critique", "revision"] {
            assert_eq!(ev[k], rounds[i][k], "round {i} {k}");
        }
    }
    let whole: Value = serde_json::from_str(events[2]).unwrap();
    assert_eq!((&whole["rounds"], &whole["final_response"]), (&rev["rounds"], &rev["final_response"]));
    for (name, body, param) in [
        ("zero rounds", json!({"messages": conv(), "response": HARMFUL, "rounds": 0}), "rounds"),
        ("too many rounds", json!({"messages": conv(), "response": HARMFUL, "rounds": 5}), "rounds"),
        ("ids per round", json!({"messages": conv(), "response": HARMFUL, "rounds": 2, "principle_ids": ["harmful0"]}), "principle_ids"),
        ("unknown id", json!({"messages": conv(), "response": HARMFUL, "principle_ids": ["nope"]}), "principle_ids[0]"),
        ("empty response", json!({"messages": conv(), "response": ""}), "response"),
        ("max_tokens 0", json!({"messages": conv(), "response": HARMFUL, "max_tokens": 0}), "max_tokens"),
    ] {
        let (st, v) = post_rev(body).await;
        assert_eq!(st, 400, "{name}: {v}");
        assert_eq!(v["error"]["param"].as_str(), Some(param), "{name}: {v}");
    }
    // The chat extension: three sampled candidates scored by the constitutional feedback; the
    // scores equal /v1/harmlessness/score on the same texts; "best" returns the top candidate.
    let chat = |h: Value| {
        let base = base.clone();
        async move {
            let body = json!({"model": MODEL, "messages": conv(), "max_tokens": 16, "temperature": 0.9, "seed": 11, "harmlessness": h});
            let r = client().post(format!("{base}/v1/chat/completions")).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, all) = chat(json!({"candidates": 3, "principles": 2, "select": "all"})).await;
    assert_eq!(st, 200, "{all}");
    let texts: Vec<String> = all["choices"].as_array().unwrap().iter().map(|c| c["message"]["content"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts.len(), 3);
    let hs: Vec<f64> = all["harmlessness"]["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let resp: Vec<String> = texts.iter().map(|t| if t.trim().is_empty() { "(no response)".to_string() } else { t.clone() }).collect();
    let r = client().post(format!("{base}/v1/harmlessness/score")).json(&json!({"messages": conv(), "responses": resp, "num_principles": 2, "seed": 0})).send().await.unwrap();
    let direct: Value = r.json().await.unwrap();
    for i in 0..3 {
        assert!((direct["data"][i]["score"].as_f64().unwrap() - hs[i]).abs() < 1e-6, "{direct} vs {hs:?}");
        assert_eq!(all["choices"][i]["harmlessness"]["score"].as_f64().unwrap(), hs[i]);
    }
    let sel = all["harmlessness"]["selected"].as_u64().unwrap() as usize;
    assert!(hs.iter().all(|&x| x <= hs[sel]));
    let (st, best) = chat(json!({"candidates": 3, "principles": 2})).await;
    assert_eq!(st, 200, "{best}");
    assert_eq!(best["choices"].as_array().unwrap().len(), 1);
    assert_eq!(best["choices"][0]["message"]["content"].as_str().unwrap(), texts[sel], "same seed, same candidates, same selection");
    assert_eq!(best["choices"][0]["harmlessness"]["rank"], 0);
    // Streaming with selection streams after selection: the same selected text, the choice's
    // harmlessness on its first chunk, the summary and the usage at the end.
    let body = json!({"model": MODEL, "messages": conv(), "max_tokens": 16, "temperature": 0.9, "seed": 11, "harmlessness": {"candidates": 3, "principles": 2}, "stream": true, "stream_options": {"include_usage": true}});
    let text = client().post(format!("{base}/v1/chat/completions")).json(&body).send().await.unwrap().text().await.unwrap();
    let chunks: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let streamed: String = chunks.iter().flat_map(|c| c["choices"].as_array().unwrap().iter()).filter_map(|c| c["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, texts[sel]);
    assert_eq!(chunks[0]["choices"][0]["harmlessness"]["rank"], 0, "{}", chunks[0]);
    let last = chunks.last().unwrap();
    assert_eq!(last["harmlessness"]["selected"].as_u64(), Some(sel as u64), "{last}");
    assert_eq!((&last["usage"]["prompt_tokens"], &last["usage"]["completion_tokens"]), (&best["usage"]["prompt_tokens"], &best["usage"]["completion_tokens"]));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"].is_string()));
    for (name, h, extra, param) in [
        ("n with candidates", json!({}), json!({"n": 2}), "n"),
        ("one constitutional candidate", json!({"candidates": 1}), json!({}), "harmlessness.candidates"),
        ("no reward model", json!({"scorer": "preference"}), json!({}), "harmlessness.scorer"),
        ("bad select", json!({"select": "worst"}), json!({}), "harmlessness.select"),
        ("unknown option", json!({"k": 1}), json!({}), "harmlessness.k"),
    ] {
        let mut body = json!({"model": MODEL, "messages": conv(), "max_tokens": 4, "harmlessness": h});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = client().post(format!("{base}/v1/chat/completions")).json(&body).send().await.unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(st, 400, "{name}: {v}");
        assert_eq!(v["error"]["param"].as_str(), Some(param), "{name}: {v}");
    }
    let (st, v) = compare(&base, json!({"model": "nope", "messages": conv(), "responses": [SAFE, HARMFUL]})).await;
    assert_eq!(st, 404, "{v}");
    wait_idle(&s).await;
}

/// Calls that need more engine requests than the admission queue holds go in waves instead of
/// being refused: 3 responses x 4 principles x 2 orders x 2 options = 48 requests against a queue
/// of 16, and 40 reward inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_calls_fit_a_small_admission_queue() {
    let head = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../heads/smollm2-135m-instruct-hh-harmless.json");
    let s = spawn(&["--max-waiting-requests", "16", "--reward-head", head.to_str().unwrap()]).await;
    let (st, v) = compare(&s.base, json!({"messages": conv(), "responses": ["a", "b", "c"], "num_principles": 4})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["pairs"].as_array().unwrap().len(), 3);
    let inputs: Vec<Value> = (0..40).map(|i| json!({"messages": conv(), "response": format!("answer {i}")})).collect();
    let r = client().post(format!("{}/v1/rewards", s.base)).json(&json!({"model": MODEL, "input": inputs})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 40);
    wait_idle(&s).await;
}

/// The chat extension's options are checked before any candidate is generated: a bad scorer, a
/// missing reward model or an unknown feedback model on an 8-candidate request is rejected
/// without a single prompt token reaching the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harmlessness_options_fail_before_any_generation() {
    let s = spawn(&[]).await;
    let before = metric(&s.metrics_base, "hhh_prompt_tokens_total").await;
    for (opts, status, param) in [
        (json!({"candidates": 8, "scorer": "nope"}), 400, "harmlessness.scorer"),
        (json!({"candidates": 8, "scorer": "preference"}), 400, "harmlessness.scorer"),
        (json!({"candidates": 8, "feedback_model": "nope"}), 404, "model"),
    ] {
        let body = json!({"model": MODEL, "messages": conv(), "max_tokens": 64, "harmlessness": opts});
        let r = client().post(format!("{}/v1/chat/completions", s.base)).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{opts}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    assert_eq!(metric(&s.metrics_base, "hhh_prompt_tokens_total").await, before, "the engine saw prompt tokens");
}

/// A second generative model (`--feedback-model`, here the same GGUF under another name, with
/// its own engine) answers the feedback routes by name, with the same labels as the chat model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_feedback_model_answers_by_name() {
    let model = model_path();
    let s = spawn(&["--feedback-model", model.to_str().unwrap(), "--feedback-model-name", "fb", "--feedback-num-kv-blocks", "128"]).await;
    let base = s.base.clone();
    let models: Value = client().get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    let fb = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "fb").unwrap_or_else(|| panic!("{models}"));
    assert_eq!((fb["kind"].as_str(), fb["capabilities"][0].as_str()), (Some("feedback"), Some("harmlessness")));
    let body = |m: Option<&str>| {
        let mut b = json!({"messages": conv(), "responses": [SAFE, HARMFUL], "principle_ids": ["rl0", "rl1"]});
        if let Some(m) = m {
            b["model"] = json!(m);
        }
        b
    };
    let (st, chat) = compare(&base, body(None)).await;
    assert_eq!(st, 200, "{chat}");
    let (st, other) = compare(&base, body(Some("fb"))).await;
    assert_eq!(st, 200, "{other}");
    assert_eq!((chat["model"].as_str(), other["model"].as_str()), (Some(MODEL), Some("fb")));
    let (a, b) = (chat["pairs"][0]["probability"].as_f64().unwrap(), other["pairs"][0]["probability"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-3, "same weights, same labels: {a} vs {b}");
    // The label route takes it by name too.
    let lb: Value =
        client().post(format!("{base}/v1/harmlessness/label")).json(&json!({"model": "fb", "prompt": "The answer is:", "options": [" (A)", " (B)"]})).send().await.unwrap().json().await.unwrap();
    assert_eq!(lb["model"], "fb", "{lb}");
    // The chat extension can name it.
    let r = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": conv(), "max_tokens": 8, "seed": 1, "temperature": 1.0, "harmlessness": {"candidates": 2, "principles": 1, "feedback_model": "fb", "select": "all"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // It is not a chat model, and unknown feedback models are 404.
    let r = client().post(format!("{base}/v1/chat/completions")).json(&json!({"model": "fb", "messages": conv(), "max_tokens": 1})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("feedback model"), "{v}");
    let (st, v) = compare(&base, body(Some("nope"))).await;
    assert_eq!(st, 404, "{v}");
    // Its engine's metrics are on /metrics, labelled engine="fb", in one valid exposition.
    let text = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let fb_prompt: f64 = text.lines().find_map(|l| l.strip_prefix("hhh_prompt_tokens_total{engine=\"fb\"} ")).unwrap_or_else(|| panic!("{text}")).parse().unwrap();
    assert!(fb_prompt > 0.0, "the feedback engine counted its prompts");
    assert!(text.contains("hhh_model_info{") && text.contains("engine=\"fb\""));
    assert_eq!(text.matches("# TYPE hhh_prompt_tokens_total ").count(), 1);
    let promtool = std::process::Command::new("sh").args(["-c", "command -v promtool"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(promtool, "`promtool` is not installed: `apt-get install prometheus` (make test-deps does this)");
    let mut lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
