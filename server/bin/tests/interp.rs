//! `/v1/interpretability/induction` on the default model over HTTP: shapes and ranges of the
//! per-head scores, the repeated-sequence loss drop an induction mechanism produces, the
//! in-context learning score on texts, and bad input named by field.

mod support;

use serde_json::{json, Value};
use support::*;

async fn post(base: &str, body: Value) -> (u16, Value) {
    let r = client().post(format!("{base}/v1/interpretability/induction")).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn induction_scores_on_the_default_model() {
    let s = spawn(&[]).await;
    let (st, v) = post(&s.base, json!({"seq_len": 20, "num_sequences": 2, "seed": 3, "top_k": 5})).await;
    assert_eq!(st, 200, "{v}");
    let (layers, heads) = (v["num_layers"].as_u64().unwrap() as usize, v["num_heads"].as_u64().unwrap() as usize);
    assert_eq!((layers, heads), (30, 9), "SmolLM2-135M: 30 layers of 9 heads");
    let pm = v["prefix_matching"].as_array().unwrap();
    assert_eq!(pm.len(), layers);
    for row in pm {
        assert_eq!(row.as_array().unwrap().len(), heads);
        assert!(row.as_array().unwrap().iter().all(|x| (0.0..=1.0).contains(&x.as_f64().unwrap())), "{row}");
    }
    let top = v["top_heads"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let scores: Vec<f64> = top.iter().map(|h| h["prefix_matching"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // Chance on the second copy is about 1 / (position + 1) < 0.05: a head far above it is an
    // induction head; a 135M model trained on web text has some (docs/interpretability.md).
    assert!(scores[0] > 0.3, "no head attends to the token after the earlier occurrence: {top:?}");
    // The repeated copy is predicted far better than the random first one.
    let (first, second) = (v["repeated_loss"]["first_copy"].as_f64().unwrap(), v["repeated_loss"]["second_copy"].as_f64().unwrap());
    assert!(second < 0.5 * first, "repeated-sequence loss {second} vs first copy {first}");
    assert_eq!(v["tokens"], 80);
    // The same seed gives the same scores.
    let (_, again) = post(&s.base, json!({"seq_len": 20, "num_sequences": 2, "seed": 3, "top_k": 5})).await;
    assert_eq!(again["prefix_matching"], v["prefix_matching"]);

    // In-context learning score over two texts, at positions 5 and 40.
    let text = "The history of the river town begins with a ferry. Farmers crossed it every market day with grain, wool and cattle, \
                and the ferryman kept a ledger of every crossing. When the bridge was built the ledger stopped, but the town kept \
                its market day, its grain hall and its wool merchants, and the ferryman's ledger is still shown in the town hall.";
    let (st, v) = post(&s.base, json!({"seq_len": 4, "num_sequences": 1, "icl_texts": [text, text.replace("river", "harbour")], "icl_positions": [5, 40]})).await;
    assert_eq!(st, 200, "{v}");
    let icl = &v["icl"];
    assert_eq!(icl["num_texts"], 2);
    let losses: Vec<f64> = icl["losses"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(losses.iter().all(|l| l.is_finite() && *l >= 0.0), "{icl}");
    assert!((icl["score"].as_f64().unwrap() - (losses[1] - losses[0])).abs() < 1e-9);

    for (body, param) in [
        (json!({"seq_len": 1}), "seq_len"),
        (json!({"seq_len": 5000}), "seq_len"),
        (json!({"num_sequences": 0}), "num_sequences"),
        (json!({"icl_texts": ["too short"], "icl_positions": [5, 40]}), "icl_texts[0]"),
        (json!({"icl_texts": [text], "icl_positions": [40, 5]}), "icl_positions"),
        (json!({"model": "nope"}), "model"),
        (json!({"seq_len": 10, "unknown": 1}), "unknown"),
    ] {
        let (st, v) = post(&s.base, body.clone()).await;
        assert_eq!((st, v["error"]["param"].as_str()), (if param == "model" { 404 } else { 400 }, Some(param)), "{body}: {v}");
    }
    // Serving goes on: a chat request after the inspections.
    let r = client().post(format!("{}/v1/chat/completions", s.base)).json(&chat_body("Hi", 4, json!({}))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_idle(&s).await;
}
