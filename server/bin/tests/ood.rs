//! `hhh-server fit-ood` and `/v1/ood/score` on a tiny random model: fitting twice gives the same
//! file; served distances equal the Mahalanobis formula computed here from the file and the
//! hidden state (engine inspection) to 1e-6 relative; bad input is named by field.

mod support;

use candle_core::DType;
use clap::Parser;
use hhh_model::testing::{make_random_llama, write_word_tokenizer, RandomLlama};
use hhh_server::train::ood::{fit_ood, FitOodArgs};
use serde_json::{json, Value};
use support::*;

#[derive(Parser)]
struct FitWrap {
    #[command(flatten)]
    a: FitOodArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fitted_statistics_are_reproducible_and_distances_exact() {
    let root = temp_dir("ood");
    let model = root.join("tiny");
    make_random_llama(&model, DType::F32, &RandomLlama { seed: 7, ..RandomLlama::TINY }, None).unwrap();
    write_word_tokenizer(&model);
    // 40 in-distribution prompts: short greetings over a few words.
    let prompts: String = (0..40).map(|i| format!("{{\"text\": \"hello w{} world w{}\"}}\n", 8 + i % 13, 20 + i % 7)).collect();
    let pf = root.join("prompts.jsonl");
    std::fs::write(&pf, prompts).unwrap();
    let fit = |out: &str| {
        let args = [
            "x",
            "--model",
            model.to_str().unwrap(),
            "--prompts",
            pf.to_str().unwrap(),
            "--layer",
            "2",
            "--format",
            "text",
            "--out",
            out,
            "--num-kv-blocks",
            "32",
            "--data-dir",
            root.to_str().unwrap(),
        ];
        FitWrap::parse_from(args).a
    };
    let (a, b) = (root.join("a.json"), root.join("b.json"));
    fit_ood(fit(a.to_str().unwrap())).await.unwrap();
    fit_ood(fit(b.to_str().unwrap())).await.unwrap();
    let (ta, tb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ta, tb, "fitting twice gives the same file");
    let stats: Value = serde_json::from_slice(&ta).unwrap();
    assert_eq!((stats["dim"].as_u64(), stats["layer"].as_u64(), stats["n_fit"].as_u64()), (Some(64), Some(2), Some(32)));

    let s = spawn_model(model.to_str().unwrap(), &["--ood-stats", a.to_str().unwrap(), "--num-kv-blocks", "64"]).await;
    let inputs = ["hello w9 world w21", "w100 w101 w102 w103 w104 w105"];
    let r: Value = client().post(format!("{}/v1/ood/score", s.base)).json(&json!({"input": inputs})).send().await.unwrap().json().await.unwrap();
    let data = r["data"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(data.len(), 2);
    let mean: Vec<f64> = stats["mean"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let prec: Vec<Vec<f64>> = stats["precision"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()).collect();
    for (i, text) in inputs.iter().enumerate() {
        let tok: Value = client().post(format!("{}/tokenize", s.base)).json(&json!({"prompt": text})).send().await.unwrap().json().await.unwrap();
        let ids: Vec<u32> = tok["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        let h = s.engine.inspect(hhh_engine::InspectRequest { tokens: ids, hidden_layers: vec![2], ..Default::default() }).await.unwrap().hidden.remove(0);
        let d: Vec<f64> = h.iter().zip(&mean).map(|(&x, m)| x as f64 - m).collect();
        let mut q = 0.0;
        for (j, row) in prec.iter().enumerate() {
            for (k, p) in row.iter().enumerate() {
                q += d[j] * p * d[k];
            }
        }
        let want = q.sqrt();
        let got = data[i]["distance"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-6 * want, "input {i}: {got} vs {want}");
    }
    // The out-of-vocabulary-looking input is farther than the in-distribution one.
    assert!(data[1]["distance"].as_f64().unwrap() > data[0]["distance"].as_f64().unwrap(), "{r}");
    assert!(data.iter().all(|d| (0.0..=1.0).contains(&d["score"].as_f64().unwrap())));
    for (body, param) in [(json!({"input": []}), "input"), (json!({"input": [""]}), "input[0]"), (json!({"input": "x", "model": "other"}), "model"), (json!({}), "input")] {
        let r = client().post(format!("{}/v1/ood/score", s.base)).json(&body).send().await.unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert!(st == 400 || st == 404, "{body}: {st} {v}");
        assert_eq!(v["error"]["param"].as_str(), Some(param), "{body}: {v}");
    }
    // `ood: true` on chat needs chat-format statistics: these were fitted on raw text.
    let chat = |extra: Value| {
        let mut b = json!({"model": "tiny", "messages": [{"role": "user", "content": inputs[1]}], "max_tokens": 3, "ood": true});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let r: Value = client().post(format!("{}/v1/chat/completions", s.base)).json(&chat(json!({}))).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["error"]["param"], "ood", "{r}");
    let c = root.join("chat.json");
    let mut args = fit(c.to_str().unwrap());
    args.format = Some("chat".into());
    fit_ood(args).await.unwrap();
    let sc = spawn_model(model.to_str().unwrap(), &["--ood-stats", c.to_str().unwrap(), "--num-kv-blocks", "64"]).await;
    let scored: Value = client().post(format!("{}/v1/ood/score", sc.base)).json(&json!({"input": inputs[1]})).send().await.unwrap().json().await.unwrap();
    let r: Value = client().post(format!("{}/v1/chat/completions", sc.base)).json(&chat(json!({}))).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["ood"]["distance"], scored["data"][0]["distance"], "a one-turn chat prompt is scored as /v1/ood/score scores its message: {r} {scored}");
    let text = client().post(format!("{}/v1/chat/completions", sc.base)).json(&chat(json!({"stream": true}))).send().await.unwrap().text().await.unwrap();
    let chunks: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|l| *l != "[DONE]").map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(chunks[0]["ood"]["distance"], scored["data"][0]["distance"], "the first chunk carries the score");
    assert!(chunks[1..].iter().all(|c| c.get("ood").is_none()));
    wait_idle(&sc).await;
    // Without --ood-stats the route says how to enable it.
    let plain = spawn_model(model.to_str().unwrap(), &["--num-kv-blocks", "64"]).await;
    let r = client().post(format!("{}/v1/ood/score", plain.base)).json(&json!({"input": "hello"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("--ood-stats"));
    let _ = std::fs::remove_dir_all(&root);
}
