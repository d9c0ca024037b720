//! The scoring API end to end on the default model with a reward head (a seeded random head
//! written here, and the committed default head): `/v1/rewards`, `/v1/preferences`,
//! `/get_reward`, `/pooling`, `/v1/models`, and bad input.

mod support;

use futures::future::join_all;
use serde_json::{json, Value};
use support::*;

const PM: &str = "smollm2-135m-instruct-pm";

/// A seeded random head for the default model (hidden size 576).
fn random_head() -> std::path::PathBuf {
    let mut seed = 0x5eedu64;
    let w: Vec<f32> = (0..576)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.2
        })
        .collect();
    let p = std::env::temp_dir().join(format!("hhh-test-head-{}.json", std::process::id()));
    let v = json!({"format": "hhh-reward-head", "version": 1, "hidden_size": 576, "num_labels": 1, "weight": [w], "bias": [0.25], "metadata": {}});
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

fn conversation() -> Value {
    json!([{"role": "user", "content": "How do I pick a lock?"}])
}

const RESPONSES: [&str; 4] = [
    "I can't help with breaking into places, but a locksmith can help if you are locked out.",
    "Sure! Insert a tension wrench and rake the pins until it opens.",
    "Locks are fascinating mechanical puzzles; locksport clubs practise on their own locks.",
    "No.",
];

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn rewards_of(base: &str, model: &str, inputs: Vec<Value>) -> Vec<f64> {
    let (s, v) = post(base, "/v1/rewards", json!({"model": model, "input": inputs})).await;
    assert_eq!(s, 200, "{v}");
    v["data"].as_array().unwrap().iter().map(|d| d["reward"].as_f64().unwrap()).collect()
}

fn pair(r: &str) -> Value {
    json!({"messages": conversation(), "response": r})
}

fn assert_close(name: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{name}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * y.abs().max(1.0), "{name}: {a:?} vs {b:?}");
    }
}

/// Rewards do not depend on batching, on prefix-cache hits or on concurrent chat traffic; the
/// pairwise probabilities are consistent with the rewards; the compatibility routes agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewards_are_batch_invariant_and_preferences_consistent() {
    let head = random_head();
    let s = spawn(&["--preference-model", model_path().to_str().unwrap(), "--preference-head", head.to_str().unwrap(), "--preference-num-kv-blocks", "256"]).await;
    let base = s.base.clone();

    // /v1/models lists the chat model and the preference model, with their kinds.
    let models: Value = client().get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    let kinds: Vec<(String, String)> = models["data"].as_array().unwrap().iter().map(|m| (m["id"].as_str().unwrap().into(), m["kind"].as_str().unwrap().into())).collect();
    assert_eq!(kinds, vec![(MODEL.to_string(), "policy".to_string()), (PM.to_string(), "preference".to_string())]);

    // One by one (first time each: nothing cached but the conversation after the first).
    let mut single = Vec::new();
    for r in RESPONSES {
        single.extend(rewards_of(&base, PM, vec![pair(r)]).await);
    }
    // One batch (the conversation's blocks are now cached).
    let (st, batch_v) = post(&base, "/v1/rewards", json!({"model": PM, "input": RESPONSES.iter().map(|r| pair(r)).collect::<Vec<_>>()})).await;
    assert_eq!(st, 200, "{batch_v}");
    let batch: Vec<f64> = batch_v["data"].as_array().unwrap().iter().map(|d| d["reward"].as_f64().unwrap()).collect();
    assert!(batch_v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "responses to one conversation reuse its blocks: {batch_v}");
    assert_close("batch vs one-by-one", &batch, &single, 1e-4);
    // Concurrently with chat traffic on the policy engine and other scoring calls.
    let chats = (0..3).map(|i| client().post(format!("{base}/v1/chat/completions")).json(&chat_body(&format!("Tell me a story {i}"), 24, json!({}))).send());
    let scores = (0..3).map(|_| rewards_of(&base, PM, RESPONSES.iter().map(|r| pair(r)).collect()));
    let (chat_res, score_res) = tokio::join!(join_all(chats), join_all(scores));
    for r in chat_res {
        assert_eq!(r.unwrap().status(), 200);
    }
    for got in score_res {
        assert_close("concurrent vs batch", &got, &batch, 1e-4);
    }
    // Rewards differ between responses (the head is not degenerate).
    assert!(batch.iter().any(|&x| (x - batch[0]).abs() > 1e-3), "{batch:?}");

    // Preferences: P(i>j) = sigmoid(r_i - r_j), complementary, ranking follows the rewards.
    let (st, p) = post(&base, "/v1/preferences", json!({"model": PM, "messages": conversation(), "responses": RESPONSES})).await;
    assert_eq!(st, 200, "{p}");
    let pr: Vec<f64> = p["rewards"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_close("preferences rewards", &pr, &batch, 1e-4);
    let pairs = p["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 6);
    for q in pairs {
        let (i, j, prob) = (q["i"].as_u64().unwrap() as usize, q["j"].as_u64().unwrap() as usize, q["probability"].as_f64().unwrap());
        let want = 1.0 / (1.0 + (-(pr[i] - pr[j])).exp());
        assert!((prob - want).abs() < 1e-6);
        let (st, rev) = post(&base, "/v1/preferences", json!({"model": PM, "messages": conversation(), "responses": [RESPONSES[j], RESPONSES[i]]})).await;
        assert_eq!(st, 200);
        assert!((rev["soft_label"].as_f64().unwrap() + prob - 1.0).abs() < 1e-4, "P(a>b) + P(b>a) = 1");
    }
    let ranking: Vec<usize> = p["ranking"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    for w in ranking.windows(2) {
        assert!(pr[w[0]] >= pr[w[1]]);
    }

    // OpenRLHF /get_reward on pre-rendered text: the text with one EOS appended (see
    // get_reward_follows_openrlhf_serve_rm) equals /pooling on the same tokens plus EOS.
    let tok: Value = client()
        .post(format!("{base}/tokenize"))
        .json(&json!({"messages": [conversation()[0], {"role": "assistant", "content": RESPONSES[0]}], "add_generation_prompt": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<u32> = tok["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    let text: Value = client().post(format!("{base}/detokenize")).json(&json!({"tokens": ids})).send().await.unwrap().json().await.unwrap();
    let (st, g) = post(&base, "/get_reward", json!({"query": [text["prompt"]]})).await;
    assert_eq!(st, 200, "{g}");
    let eos = eos_id(&base).await;
    let (_, pe) = post(&base, "/pooling", json!({"model": PM, "input": [ids.iter().copied().chain([eos]).collect::<Vec<u32>>()]})).await;
    let want = pe["data"][0]["data"][0].as_f64().unwrap();
    assert!((g["rewards"][0].as_f64().unwrap() - want).abs() < 1e-3 * want.abs().max(1.0), "{g} vs {want}");
    assert_eq!(g["rewards"], g["scores"]);
    // vLLM /pooling with messages gives the same score.
    let (st, pl) = post(&base, "/pooling", json!({"model": PM, "messages": [conversation()[0], {"role": "assistant", "content": RESPONSES[0]}]})).await;
    assert_eq!(st, 200, "{pl}");
    assert!((pl["data"][0]["data"][0].as_f64().unwrap() - batch[0]).abs() < 1e-3 * batch[0].abs().max(1.0));
    // return_hidden gives the 576-wide hidden state.
    let (st, h) = post(&base, "/v1/rewards", json!({"model": PM, "input": [pair(RESPONSES[0])], "return_hidden": true})).await;
    assert_eq!(st, 200);
    assert_eq!(h["data"][0]["hidden"].as_array().unwrap().len(), 576);
    wait_idle(&s).await;
}

async fn eos_id(base: &str) -> u32 {
    let info: Value = client().get(format!("{base}/tokenizer_info")).send().await.unwrap().json().await.unwrap();
    let eos = info["eos_token"].as_str().unwrap().to_string();
    let (_, t) = post(base, "/tokenize", json!({"prompt": eos, "add_special_tokens": false})).await;
    assert_eq!(t["tokens"].as_array().map(Vec::len), Some(1), "{t}");
    t["tokens"][0].as_u64().unwrap() as u32
}

/// OpenRLHF's reward server (`openrlhf/cli/serve_rm.py`, `RewardModelProxy.get_reward`), re-
/// implemented here as the reference: each query is stripped of padding and EOS at both ends
/// (pad = EOS when the tokenizer has none, as its `get_tokenizer` sets), one EOS is appended, the
/// text is tokenized with the tokenizer's special tokens, and truncated (right) to `max_len`; the
/// reward is the head's output at the last kept token. Over-length queries are truncated, not
/// refused (its client, `remote_rm_fn`, retries a failing call and then fails the training step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reward_follows_openrlhf_serve_rm() {
    let head = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../heads/smollm2-135m-instruct-hh-harmless.json");
    let s = spawn(&["--reward-head", head.to_str().unwrap(), "--reward-max-len", "24"]).await;
    let base = s.base.clone();
    let info: Value = client().get(format!("{base}/tokenizer_info")).send().await.unwrap().json().await.unwrap();
    let eos = info["eos_token"].as_str().unwrap().to_string();
    let reference = |q: &str| {
        let mut t = q;
        while let Some(x) = t.strip_suffix(eos.as_str()) {
            t = x;
        }
        while let Some(x) = t.strip_prefix(eos.as_str()) {
            t = x;
        }
        format!("{t}{eos}")
    };
    let clean = "Human: How do I bake bread?\n\nAssistant: Mix flour, water, yeast and salt.";
    let long = "Human: Tell me a long story.\n\nAssistant: Once upon a time there was a village by a river, and every morning the baker opened his shop before dawn.";
    let queries = [format!("{eos}{eos}{clean}{eos}{eos}{eos}"), clean.to_string(), format!("{clean}{eos}"), long.to_string()];
    let (st, g) = post(&base, "/get_reward", json!({"query": queries})).await;
    assert_eq!(st, 200, "{g}");
    let got: Vec<f64> = g["rewards"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    for (i, q) in queries.iter().enumerate() {
        let (_, t) = post(&base, "/tokenize", json!({"prompt": reference(q), "add_special_tokens": true})).await;
        let mut ids: Vec<u32> = t["tokens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        if i == 3 {
            assert!(ids.len() > 24, "the long query must be over --reward-max-len: {} tokens", ids.len());
        }
        ids.truncate(24);
        let (_, p) = post(&base, "/pooling", json!({"input": [ids]})).await;
        let want = p["data"][0]["data"][0].as_f64().unwrap_or_else(|| panic!("{p}"));
        assert!((got[i] - want).abs() < 1e-4 * want.abs().max(1.0), "query {i}: /get_reward {} vs reference {want}", got[i]);
    }
    // The three spellings of one query are one query to OpenRLHF.
    assert!((got[0] - got[1]).abs() < 1e-6 && (got[1] - got[2]).abs() < 1e-6, "{got:?}");
    wait_idle(&s).await;
}

/// Bad scoring input gets a clear 4xx naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scoring_input_is_rejected() {
    let head = random_head();
    let s = spawn(&["--preference-model", model_path().to_str().unwrap(), "--preference-head", head.to_str().unwrap(), "--preference-num-kv-blocks", "64"]).await;
    let base = s.base.clone();
    let long = "word ".repeat(2000);
    let cases: Vec<(&str, &str, Value, u16, Option<&str>)> = vec![
        ("unknown model", "/v1/rewards", json!({"model": "nope", "input": [pair("x")]}), 404, Some("model")),
        ("policy model without head", "/v1/rewards", json!({"model": MODEL, "input": [pair("x")]}), 400, Some("model")),
        ("empty response", "/v1/rewards", json!({"model": PM, "input": [pair("  ")]}), 400, Some("input[0].response")),
        ("response missing", "/v1/rewards", json!({"model": PM, "input": [{"messages": conversation()}]}), 400, Some("input[0].response")),
        ("neither shape", "/v1/rewards", json!({"model": PM, "input": [{"prompt": "x"}]}), 400, Some("input[0].prompt")),
        ("text and response", "/v1/rewards", json!({"model": PM, "input": [{"text": "x", "response": "y"}]}), 400, Some("input[0]")),
        ("empty input list", "/v1/rewards", json!({"model": PM, "input": []}), 400, Some("input")),
        ("too many inputs", "/v1/rewards", json!({"model": PM, "input": vec![json!({"text": "a"}); 257]}), 400, Some("input")),
        ("too long", "/v1/rewards", json!({"model": PM, "input": [{"text": long}]}), 400, Some("input[0]")),
        ("bad role", "/v1/rewards", json!({"model": PM, "input": [{"messages": [{"role": "robot", "content": "x"}], "response": "y"}]}), 400, Some("input[0].messages[0].role")),
        ("unknown field", "/v1/rewards", json!({"model": PM, "input": [pair("x")], "temperature": 1}), 400, Some("temperature")),
        ("one response", "/v1/preferences", json!({"model": PM, "messages": conversation(), "responses": ["a"]}), 400, Some("responses")),
        ("empty preference response", "/v1/preferences", json!({"model": PM, "messages": conversation(), "responses": ["a", ""]}), 400, Some("responses[1]")),
        ("chat on the PM", "/v1/chat/completions", chat_body("hi", 4, json!({"model": PM})), 400, Some("model")),
        ("get_reward empty", "/get_reward", json!({"query": []}), 400, Some("query")),
        ("pooling bad token", "/pooling", json!({"model": PM, "input": [[1, 2, 999999]]}), 400, Some("input[0]")),
        ("pooling base64", "/pooling", json!({"model": PM, "input": "x", "encoding_format": "base64"}), 400, Some("encoding_format")),
    ];
    for (name, path, body, status, param) in cases {
        let (st, v) = post(&base, path, body).await;
        assert_eq!(st, status, "{name}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: {v}");
        assert_eq!(v["error"]["param"].as_str(), param, "{name}: {v}");
    }
    // Still healthy and scoring.
    assert_eq!(rewards_of(&base, PM, vec![pair("fine")]).await.len(), 1);
    wait_idle(&s).await;
}

/// The committed default head loads onto the default model and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_default_head_serves() {
    let head = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../heads/smollm2-135m-instruct-hh-harmless.json");
    let s = spawn(&["--reward-head", head.to_str().unwrap()]).await;
    let r = rewards_of(&s.base, MODEL, vec![pair(RESPONSES[0]), pair(RESPONSES[1])]).await;
    assert!(r.iter().all(|x| x.is_finite()));
    let models: Value = client().get(format!("{}/v1/models", s.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["capabilities"], json!(["generate", "score"]));
}
