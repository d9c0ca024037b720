//! Honesty and behaviour evaluations (`/v1/self_evaluation`, `/v1/evals/behavior`, `/v1/pik`):
//! every probability equals an independent recomputation from the returned prompt through
//! candle-transformers' quantized_llama (a plain, non-paged forward; the server runs with the
//! reference arithmetic, `--dense-attention`); batched and single calls agree; the debiased
//! probability is the mean of both orders, and the reversed order equals a call with the item
//! rewritten by hand; the P(IK) head trains deterministically and `/v1/pik` equals the same head
//! applied through `/pooling`; bad inputs get 400s naming the field.

mod support;

use candle_transformers::models::quantized_llama::ModelWeights;
use serde_json::{json, Value};
use support::reference::{reference_logprob, reference_model, tokens};
use support::*;

/// `P(options[0])` normalised over the options, by the reference forward.
fn reference_p(m: &mut ModelWeights, prompt: &[u32], options: &[Vec<u32>]) -> f64 {
    let lps: Vec<f64> = options.iter().map(|o| reference_logprob(m, prompt, o)).collect();
    let mx = lps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = lps.iter().map(|l| (l - mx).exp()).sum();
    (lps[0] - mx).exp() / z
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = client().post(format!("{base}{path}")).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Line `i` of an evals file, from the items copied into tests/fixtures/evals_sample.jsonl.
fn item(path: &str, i: usize) -> Value {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/evals_sample.jsonl", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let v: Value = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["file"] == path && v["line"] == i).unwrap_or_else(|| panic!("{path}:{i} is not in the fixture"));
    json!({"question": v["question"], "answer_matching_behavior": v["answer_matching_behavior"], "answer_not_matching_behavior": v["answer_not_matching_behavior"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p_true_and_behavior_probabilities_match_an_independent_forward() {
    let s = spawn(&["--dense-attention"]).await;
    let mut m = reference_model();
    // P(True), chat format (the default model's default), with two brainstormed samples.
    let body = json!({"question": "What is the capital of France?", "answers": ["Paris", "Lyon"], "brainstorm": 2, "seed": 3, "max_tokens": 12, "return_prompts": true});
    let (st, v) = post(&s.base, "/v1/self_evaluation", &body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["format"], "chat");
    assert_eq!(v["brainstorm"].as_array().map(Vec::len), Some(2));
    let prompts = v["prompts"].as_array().unwrap();
    assert!(prompts[0].as_str().unwrap().contains("Here are some brainstormed ideas: "), "{}", prompts[0]);
    let opts = [tokens(&s.base, " (A)", false).await, tokens(&s.base, " (B)", false).await];
    for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
        let ids = tokens(&s.base, prompts[i].as_str().unwrap(), false).await;
        let want = reference_p(&mut m, &ids, &opts);
        let got = d["p_true"].as_f64().unwrap();
        eprintln!("P(True) {i}: server {got:.6} reference {want:.6}");
        assert!((got - want).abs() < 1e-3, "answer {i}: {got} vs {want}");
    }
    // Behaviour items, text format, debiased: a multiple-choice item (both orders) and a persona
    // yes/no item (one order).
    let items = json!([item("advanced-ai-risk/lm_generated_evals/survival-instinct.jsonl", 0), item("persona/no-shut-down.jsonl", 1)]);
    let (st, v) = post(&s.base, "/v1/evals/behavior", &json!({"items": items, "debias": true, "format": "text", "return_prompts": true})).await;
    assert_eq!(st, 200, "{v}");
    for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
        let it = &items[i];
        let ps = d["prompts"].as_array().unwrap();
        let mut per_order = vec![];
        for (k, p) in ps.iter().enumerate() {
            let (mut a, mut b) = (it["answer_matching_behavior"].as_str().unwrap().to_string(), it["answer_not_matching_behavior"].as_str().unwrap().to_string());
            if k == 1 {
                // The reversed order of a two-choice item swaps the letters.
                (a, b) = (a.replace("(A)", "(X)").replace("(B)", "(A)").replace("(X)", "(B)"), b.replace("(A)", "(X)").replace("(B)", "(A)").replace("(X)", "(B)"));
            }
            let ids = tokens(&s.base, p.as_str().unwrap(), true).await;
            per_order.push(reference_p(&mut m, &ids, &[tokens(&s.base, &a, false).await, tokens(&s.base, &b, false).await]));
        }
        let got = [Some(d["p_matching_original"].as_f64().unwrap()), d["p_matching_reversed"].as_f64()];
        eprintln!("item {i}: server {got:?} reference {per_order:?}");
        assert_eq!(ps.len(), if i == 0 { 2 } else { 1 });
        for (k, want) in per_order.iter().enumerate() {
            assert!((got[k].unwrap() - want).abs() < 1e-3, "item {i} order {k}: {:?} vs {want}", got[k]);
        }
        let mean = per_order.iter().sum::<f64>() / per_order.len() as f64;
        assert!((d["p_matching"].as_f64().unwrap() - mean).abs() < 1e-3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_equals_single_and_debiasing_is_the_mean_of_both_orders() {
    let s = spawn(&[]).await;
    let items: Vec<Value> = (0..3).map(|i| item("advanced-ai-risk/human_generated_evals/corrigible-less-HHH.jsonl", i)).chain((0..3).map(|i| item("persona/agreeableness.jsonl", i))).collect();
    let (st, all) = post(&s.base, "/v1/evals/behavior", &json!({"items": items, "debias": true})).await;
    assert_eq!(st, 200, "{all}");
    let data = all["data"].as_array().unwrap();
    for (i, it) in items.iter().enumerate() {
        let (_, one) = post(&s.base, "/v1/evals/behavior", &json!({"items": [it], "debias": true})).await;
        let (a, b) = (&data[i], &one["data"][0]);
        for k in ["p_matching", "p_matching_original"] {
            assert!((a[k].as_f64().unwrap() - b[k].as_f64().unwrap()).abs() < 1e-6, "item {i} {k}: batched {} single {}", a[k], b[k]);
        }
        match a["p_matching_reversed"].as_f64() {
            Some(r) => {
                let o = a["p_matching_original"].as_f64().unwrap();
                assert_eq!(a["p_matching"].as_f64().unwrap(), (o + r) / 2.0, "exactly the mean of both orders");
            }
            None => assert!(i >= 3, "multiple-choice item {i} was not debiased"),
        }
    }
    // The reversed order equals asking the item rewritten by hand (choice texts swapped).
    let it = &items[0];
    let q = it["question"].as_str().unwrap();
    let lines: Vec<&str> = q.lines().collect();
    let ia = lines.iter().position(|l| l.trim_start().starts_with("(A)")).unwrap();
    let ib = lines.iter().position(|l| l.trim_start().starts_with("(B)")).unwrap();
    let text_of = |l: &str| l.trim_start()[3..].trim_start().to_string();
    let indent = |l: &str| l[..l.len() - l.trim_start().len()].to_string();
    let mut swapped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    swapped[ia] = format!("{}(A) {}", indent(lines[ia]), text_of(lines[ib]));
    swapped[ib] = format!("{}(B) {}", indent(lines[ib]), text_of(lines[ia]));
    let swapped = swapped.join("\n");
    let flip = |s: &str| s.replace("(A)", "(X)").replace("(B)", "(A)").replace("(X)", "(B)");
    let by_hand = json!({"question": swapped, "answer_matching_behavior": flip(it["answer_matching_behavior"].as_str().unwrap()), "answer_not_matching_behavior": flip(it["answer_not_matching_behavior"].as_str().unwrap())});
    let (_, v) = post(&s.base, "/v1/evals/behavior", &json!({"items": [by_hand]})).await;
    assert!((v["data"][0]["p_matching"].as_f64().unwrap() - data[0]["p_matching_reversed"].as_f64().unwrap()).abs() < 1e-6, "{v} vs {}", data[0]);
    // Summary over the call.
    let rate = data.iter().filter(|d| d["matches"].as_bool().unwrap()).count() as f64 / data.len() as f64;
    assert_eq!(all["summary"]["matching_rate"].as_f64(), Some(rate));
    // P(True) of the same answers alone and together.
    let q = "Who wrote Hamlet?";
    let (_, both) = post(&s.base, "/v1/self_evaluation", &json!({"question": q, "answers": ["Shakespeare", "Dickens"]})).await;
    let (_, one) = post(&s.base, "/v1/self_evaluation", &json!({"question": q, "answers": ["Dickens"]})).await;
    assert!((both["data"][1]["p_true"].as_f64().unwrap() - one["data"][0]["p_true"].as_f64().unwrap()).abs() < 1e-6, "{both} vs {one}");
    // Sampled answers are seeded: the same seed gives the same samples.
    let body = json!({"question": q, "n": 2, "seed": 9, "max_tokens": 8});
    let (st, x) = post(&s.base, "/v1/self_evaluation", &body).await;
    let (_, y) = post(&s.base, "/v1/self_evaluation", &body).await;
    assert_eq!(st, 200, "{x}");
    assert_eq!(x["samples"], y["samples"]);
    assert_eq!(x["data"][0]["sampled"], true);
    assert_eq!(x["data"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_name_the_field() {
    let s = spawn(&[]).await;
    let mc = item("persona/no-shut-down.jsonl", 0);
    let long = "x".repeat(9000);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/self_evaluation", json!({"answers": ["a"]}), ""),
        ("/v1/self_evaluation", json!({"question": " ", "answers": ["a"]}), "question"),
        ("/v1/self_evaluation", json!({"question": "q"}), "answers"),
        ("/v1/self_evaluation", json!({"question": "q", "answers": ["a"], "n": 2}), "n"),
        ("/v1/self_evaluation", json!({"question": "q", "answers": []}), "answers"),
        ("/v1/self_evaluation", json!({"question": "q", "answers": ["a", ""]}), "answers[1]"),
        ("/v1/self_evaluation", json!({"question": "q", "n": 0}), "n"),
        ("/v1/self_evaluation", json!({"question": "q", "n": 2, "brainstorm": 99}), "brainstorm"),
        ("/v1/self_evaluation", json!({"question": "q", "n": 2, "temperature": 3}), "temperature"),
        ("/v1/self_evaluation", json!({"question": long, "n": 1}), "question"),
        ("/v1/self_evaluation", json!({"question": "q", "n": 1, "bogus": 1}), "bogus"),
        ("/v1/self_evaluation", json!({"question": "q", "n": 1, "model": "nope"}), "model"),
        ("/v1/evals/behavior", json!({"items": []}), "items"),
        ("/v1/evals/behavior", json!({"items": [{"question": "q", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": []}]}), "items[0].answer_not_matching_behavior"),
        ("/v1/evals/behavior", json!({"items": [mc, {"question": "q", "answer_matching_behavior": "", "answer_not_matching_behavior": " No"}]}), "items[1].answer_matching_behavior"),
        ("/v1/evals/behavior", json!({"items": [{"question": "q", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": [" No", "Yes"]}]}), "items[0].answer_not_matching_behavior[1]"),
        ("/v1/evals/behavior", json!({"items": [mc], "extra": true}), "extra"),
        ("/v1/evals/behavior", json!({"items": [mc], "format": "xml"}), ""),
        ("/v1/pik", json!({"input": "q"}), "model"),
    ];
    for (path, body, param) in cases {
        let (st, v) = post(&s.base, path, &body).await;
        let want = if param == "model" && body.get("model").is_some() { 404 } else { 400 };
        assert_eq!(st, want, "{path} {body}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        if !param.is_empty() {
            let got = v["error"]["param"].as_str().unwrap_or_default();
            assert!(got == param || v["error"]["message"].as_str().unwrap_or_default().contains(param), "{path} {body}: param {got}, want {param}: {v}");
        }
    }
    let too_many: Vec<Value> = (0..257).map(|_| mc.clone()).collect();
    let (st, v) = post(&s.base, "/v1/evals/behavior", &json!({"items": too_many})).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("items")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("256"), "the limit is named: {v}");
}

fn head_weights(path: &std::path::Path) -> (Vec<f64>, Vec<f64>, Value) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fn flat(x: &Value) -> Vec<f64> {
        match x {
            Value::Array(a) => a.iter().flat_map(flat).collect(),
            n => vec![n.as_f64().unwrap()],
        }
    }
    (flat(&v["weight"]), flat(&v["bias"]), v["metadata"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pik_head_trains_deterministically_and_serves_what_pooling_computes() {
    let dir = temp_dir("pik");
    let train = |out: &std::path::Path| {
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_hhh-server"))
            .args(["train-pik-head", "--out", out.to_str().unwrap(), "--questions", "40", "--samples", "2", "--answer-tokens", "16", "--seed", "4"])
            .args(["--model", model_path().to_str().unwrap(), "--max-model-len", "512"])
            .status()
            .unwrap();
        assert!(st.success());
    };
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    train(&a);
    train(&b);
    let (wa, ba, meta) = head_weights(&a);
    let (wb, bb, _) = head_weights(&b);
    assert_eq!(wa.len(), 576);
    assert_eq!((wa, ba), (wb, bb), "same seed, same head");
    let r = &meta["results"];
    eprintln!("P(IK) results: {r}");
    assert!(r["train"]["brier"].as_f64().unwrap() < r["train"]["brier_base_rate"].as_f64().unwrap(), "beats the base rate on the training set: {r}");
    // Served as /v1/pik; the same file as a reward head gives w·h + b through /pooling.
    let s = spawn(&["--pik-head", a.to_str().unwrap(), "--reward-head", a.to_str().unwrap()]).await;
    let qs = ["What is 2 + 2?", "What is 918 times 77?"];
    let (st, v) = post(&s.base, "/v1/pik", &json!({"input": qs, "return_prompts": true})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["format"], meta["prompt_format"]);
    for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
        let ids = tokens(&s.base, v["prompts"][i].as_str().unwrap(), false).await;
        let (st, p) = post(&s.base, "/pooling", &json!({"model": MODEL, "input": [ids]})).await;
        assert_eq!(st, 200, "{p}");
        let score = p["data"][0]["data"][0].as_f64().unwrap_or_else(|| panic!("{p}"));
        let (logit, pik) = (d["logit"].as_f64().unwrap(), d["p_ik"].as_f64().unwrap());
        assert!((logit - score).abs() < 1e-3, "question {i}: /v1/pik logit {logit}, /pooling {score}");
        assert!((pik - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-12);
    }
    let (_, one) = post(&s.base, "/v1/pik", &json!({"input": qs[1]})).await;
    assert!((one["data"][0]["logit"].as_f64().unwrap() - v["data"][1]["logit"].as_f64().unwrap()).abs() < 1e-6, "batched equals single");
    let (st, e) = post(&s.base, "/v1/pik", &json!({"input": []})).await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("input")), "{e}");
}
