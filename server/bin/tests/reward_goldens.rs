//! Rewards against golden values from Hugging Face transformers (issue 24, item 4): two tiny
//! random reward models committed under tests/fixtures/hf_reward/ with the rewards the reference
//! implementations computed (`scripts/make_reward_goldens.py`, which says how):
//! - `seqcls`: a `LlamaForSequenceClassification` saved by transformers;
//! - `openrlhf`: an OpenRLHF reward checkpoint (`value_head.weight`, `normalize_reward` with
//!   `mean`/`std` in config.json).
//!
//! Each is served as `--model` (a scoring-only server); `/v1/rewards` (text), `/pooling` (token
//! ids) and `/get_reward` (OpenRLHF's query preparation, with a query over `--reward-max-len`)
//! must equal the goldens to 1e-4, and the token ids our tokenizer gives must be the reference
//! tokenizer's. Also: weight updates of reward heads and preference models (issue 24, item 1).

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use support::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_reward")
}

/// A fixture model in a fresh directory: its weights and config written by
/// `hhh_model::testing::RewardFixture` (as `scripts/make_reward_goldens.py` had them written),
/// its tokenizer from the committed fixture.
fn fixture_model(name: &str) -> PathBuf {
    let f = match name {
        "seqcls" => hhh_model::testing::RewardFixture::SeqCls,
        _ => hhh_model::testing::RewardFixture::OpenRlhf,
    };
    let dir = temp_dir(&format!("reward-fixture-{name}"));
    f.write(&dir).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures().join(name).join(file), dir.join(file)).unwrap();
    }
    dir
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let r = client().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {v}");
    v
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{what}: got {got}, transformers {want}");
}

async fn check_model(name: &str, goldens: &Value) {
    let dir = fixture_model(name);
    let max_len = goldens["max_len"].as_u64().unwrap().to_string();
    let s = spawn_model(dir.to_str().unwrap(), &["--reward-max-len", &max_len, "--num-kv-blocks", "64"]).await;
    let base = s.base.clone();
    let g = &goldens["models"][name];
    let models: Value = client().get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    let model = models["data"][0]["id"].clone();
    assert_eq!(models["data"][0]["kind"], "preference", "{models}");
    let texts: Vec<&Value> = g["texts"].as_array().unwrap().iter().collect();
    // Our tokenizer gives the reference tokenizer's ids.
    for t in &texts {
        let tok = post(&base, "/tokenize", json!({"prompt": t["text"]})).await;
        assert_eq!(tok["tokens"], t["ids"], "{name}: tokens of {}", t["text"]);
    }
    let v = post(&base, "/v1/rewards", json!({"model": model, "input": texts.iter().map(|t| json!({"text": t["text"]})).collect::<Vec<_>>()})).await;
    for (d, t) in v["data"].as_array().unwrap().iter().zip(&texts) {
        close(d["reward"].as_f64().unwrap(), t["reward"].as_f64().unwrap(), &format!("{name} /v1/rewards {}", t["text"]));
    }
    let p = post(&base, "/pooling", json!({"input": texts.iter().map(|t| t["ids"].clone()).collect::<Vec<_>>()})).await;
    for (d, t) in p["data"].as_array().unwrap().iter().zip(&texts) {
        close(d["data"][0].as_f64().unwrap(), t["reward"].as_f64().unwrap(), &format!("{name} /pooling {}", t["ids"]));
    }
    let gr: Vec<&Value> = g["get_reward"].as_array().unwrap().iter().collect();
    let r = post(&base, "/get_reward", json!({"query": gr.iter().map(|q| q["query"].clone()).collect::<Vec<_>>()})).await;
    for (got, q) in r["rewards"].as_array().unwrap().iter().zip(&gr) {
        close(got.as_f64().unwrap(), q["reward"].as_f64().unwrap(), &format!("{name} /get_reward {}", q["query"]));
    }
    assert_eq!(r["rewards"].as_array().unwrap().len(), gr.len());
    wait_idle(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewards_equal_transformers_goldens() {
    let goldens: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("goldens.json")).unwrap()).unwrap();
    check_model("seqcls", &goldens).await;
    check_model("openrlhf", &goldens).await;
}

/// A reward head (`--reward-head`) and a `--preference-model` updated in place: the policy's
/// head swapped for a scaled one scores `2 r + 1`; the preference model (the transformers
/// `LlamaForSequenceClassification` fixture) updated to the OpenRLHF checkpoint of the same
/// shape scores the OpenRLHF goldens; mismatched heads, unknown models and a head file for a
/// sequence-classification model are 400s that name the field, and the old weights keep scoring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reward_heads_and_preference_models_update() {
    let root = temp_dir("head-updates");
    std::fs::create_dir_all(&root).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = manifest.join("../heads/smollm2-135m-instruct-hh-harmless.json");
    let goldens: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("goldens.json")).unwrap()).unwrap();
    let (seqcls, openrlhf) = (fixture_model("seqcls"), fixture_model("openrlhf"));
    let s = spawn(&["--reward-head", head.to_str().unwrap(), "--preference-model", seqcls.to_str().unwrap(), "--preference-model-name", "tiny-rm", "--preference-num-kv-blocks", "64"]).await;
    let base = s.base.clone();
    let models: Value = client().get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    let policy = models["data"][0]["id"].as_str().unwrap().to_string();
    let reward = |model: String, text: String| {
        let base = base.clone();
        async move {
            let v: Value = client().post(format!("{base}/v1/rewards")).json(&json!({"model": model, "input": [{"text": text}]})).send().await.unwrap().json().await.unwrap();
            v["data"][0]["reward"].as_f64().unwrap_or_else(|| panic!("{v}"))
        }
    };
    let post = |body: Value| {
        let base = base.clone();
        async move {
            let r = client().post(format!("{base}/update_weights_from_disk")).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let close = |got: f64, want: f64| (got - want).abs() <= 1e-4 * want.abs().max(1.0);

    // The policy's reward head.
    let text = "Human: How do I bake bread?\n\nAssistant: Mix flour, water, yeast and salt.".to_string();
    let r0 = reward(policy.clone(), text.clone()).await;
    let mut h: Value = serde_json::from_str(&std::fs::read_to_string(&head).unwrap()).unwrap();
    for row in h["weight"].as_array_mut().unwrap() {
        for w in row.as_array_mut().unwrap() {
            *w = json!(w.as_f64().unwrap() * 2.0);
        }
    }
    h["bias"][0] = json!(h["bias"][0].as_f64().unwrap() * 2.0 + 1.0);
    let scaled = root.join("scaled.json");
    std::fs::write(&scaled, h.to_string()).unwrap();
    let (st, v) = post(json!({"reward_head_path": scaled})).await;
    assert_eq!((st, v["weight_version"].as_u64()), (200, Some(1)), "{v}");
    let r1 = reward(policy.clone(), text.clone()).await;
    assert!((r1 - (2.0 * r0 + 1.0)).abs() < 1e-3 * r1.abs().max(1.0), "{r1} vs 2 * {r0} + 1");
    let narrow = root.join("narrow.json");
    std::fs::write(&narrow, json!({"format": "hhh-reward-head", "version": 1, "hidden_size": 3, "num_labels": 1, "weight": [[1, 2, 3]], "bias": [0]}).to_string()).unwrap();
    let (st, v) = post(json!({"reward_head_path": narrow})).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("reward_head_path")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("reward head mismatch"), "{v}");
    assert!(close(reward(policy.clone(), text.clone()).await, r1), "a refused head left the served one");

    // The preference model: transformers' seqcls fixture, then the OpenRLHF checkpoint.
    let g = |m: &str, i: usize| goldens["models"][m]["texts"][i].clone();
    let t0 = g("seqcls", 0)["text"].as_str().unwrap().to_string();
    assert!(close(reward("tiny-rm".into(), t0.clone()).await, g("seqcls", 0)["reward"].as_f64().unwrap()));
    let (st, v) = post(json!({"model": "tiny-rm", "model_path": openrlhf})).await;
    assert_eq!((st, v["weight_version"].as_u64()), (200, Some(1)), "{v}");
    for i in 0..3 {
        let t = g("openrlhf", i);
        let got = reward("tiny-rm".into(), t["text"].as_str().unwrap().to_string()).await;
        assert!(close(got, t["reward"].as_f64().unwrap()), "{got} vs {t}");
    }
    let (st, v) = post(json!({"model": "tiny-rm", "reward_head_path": scaled})).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("reward_head_path")), "{v}");
    let (st, v) = post(json!({"model": "nope", "model_path": openrlhf})).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("model")), "{v}");
    let (st, v) = post(json!({"drain": true})).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("model_path")), "{v}");
    let version = |q: &str| {
        let base = base.clone();
        let q = q.to_string();
        async move { client().get(format!("{base}/get_weight_version{q}")).send().await.unwrap().json::<Value>().await.unwrap()["weight_version"].clone() }
    };
    assert_eq!(version("?model=tiny-rm").await, 1);
    assert_eq!(version("").await, 1);
    let models: Value = client().get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][1]["weight_version"], 1, "{models}");
    assert!(close(reward("tiny-rm".into(), g("openrlhf", 0)["text"].as_str().unwrap().to_string()).await, g("openrlhf", 0)["reward"].as_f64().unwrap()));
    wait_idle(&s).await;
    let _ = std::fs::remove_dir_all(&root);
}
