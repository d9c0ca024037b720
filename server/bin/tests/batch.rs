//! Batch jobs: `/v1/files` + `/v1/batches` against the default model (answers equal the
//! interactive routes', bad lines in the error file, bad files and requests rejected with the
//! field named, keys own their files), a real `kill -9` mid-batch, and `run-batch` offline.

mod support;

use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::*;

fn jsonl(lines: &[Value]) -> String {
    lines.iter().map(|l| l.to_string() + "\n").collect()
}

fn line(id: &str, url: &str, body: Value) -> Value {
    json!({"custom_id": id, "method": "POST", "url": url, "body": body})
}

fn auth(rb: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(k) => rb.bearer_auth(k),
        None => rb,
    }
}

async fn upload(base: &str, key: Option<&str>, bytes: Vec<u8>, purpose: &str) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().text("purpose", purpose.to_string()).part("file", reqwest::multipart::Part::bytes(bytes).file_name("in.jsonl"));
    let r = auth(client().post(format!("{base}/v1/files")), key).multipart(form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn create(base: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let r = auth(client().post(format!("{base}/v1/batches")), key).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, key: Option<&str>, path: &str) -> (u16, Value) {
    let r = auth(client().get(format!("{base}{path}")), key).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn content(base: &str, file: &str) -> Vec<Value> {
    let text = client().get(format!("{base}/v1/files/{file}/content")).send().await.unwrap().text().await.unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Poll until the batch is in a final state.
async fn wait_done(base: &str, id: &str, limit: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let (st, b) = get(base, None, &format!("/v1/batches/{id}")).await;
        assert_eq!(st, 200, "{b}");
        if ["completed", "failed", "expired", "cancelled"].contains(&b["status"].as_str().unwrap()) {
            return b;
        }
        assert!(t0.elapsed() < limit, "batch not done in {limit:?}: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A response body without the fields that differ between two runs of one request.
fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for k in ["id", "created", "usage"] {
            o.remove(k);
        }
    }
    v
}

fn chat(content: &str, extra: Value) -> Value {
    chat_body(content, 8, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_answer_as_the_routes_do_and_bad_lines_go_to_the_error_file() {
    let dir = temp_dir("batch");
    let s = spawn(&["--data-dir", dir.to_str().unwrap(), "--batch-max-line-bytes", "2000"]).await;
    let base = s.base.clone();
    let good = [
        line("chat-greedy", "/v1/chat/completions", chat("Name a colour.", json!({}))),
        line("chat-seeded", "/v1/chat/completions", chat("Say something kind.", json!({"temperature": 0.8, "seed": 7, "n": 2}))),
        line("completion", "/v1/completions", json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0})),
        line(
            "compare",
            "/v1/harmlessness/compare",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "How do I get rid of a wasp nest?"}], "responses": ["Call a pest-control service.", "Set the house on fire."], "num_principles": 2, "seed": 3}),
        ),
    ];
    let mut text = jsonl(&good);
    text += &jsonl(&[line("bad-url", "/v1/embeddings", json!({"input": "x"})), line("bad-body", "/v1/chat/completions", chat("Hi", json!({"max_tokens": -1})))]);
    text += "this line is not json\n";
    text += &(line("too-long", "/v1/completions", json!({"model": MODEL, "prompt": "x".repeat(2100)})).to_string() + "\n");
    let (st, f) = upload(&base, None, text.clone().into_bytes(), "batch").await;
    assert_eq!(st, 200, "{f}");
    assert_eq!(f["bytes"], text.len());
    assert_eq!(f["purpose"], "batch");
    let (st, b) = create(&base, None, json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"run": "test"}})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["status"], "validating");
    assert_eq!(b["request_counts"]["total"], 8);
    let id = b["id"].as_str().unwrap().to_string();
    let b = wait_done(&base, &id, Duration::from_secs(300)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"], json!({"total": 8, "completed": 4, "failed": 4}));
    assert_eq!(b["metadata"]["run"], "test");
    for k in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(b[k].as_u64().is_some(), "{k}: {b}");
    }
    // Every answer equals what the route returns interactively for the same body.
    let out = content(&base, b["output_file_id"].as_str().unwrap()).await;
    assert_eq!(out.iter().map(|l| l["custom_id"].as_str().unwrap()).collect::<Vec<_>>(), ["chat-greedy", "chat-seeded", "completion", "compare"], "input order");
    for (o, g) in out.iter().zip(&good) {
        assert_eq!(o["response"]["status_code"], 200, "{o}");
        assert!(o["error"].is_null());
        assert_eq!(o["response"]["request_id"], o["id"]);
        let url = g["url"].as_str().unwrap();
        let live: Value = client().post(format!("{base}{url}")).json(&g["body"]).send().await.unwrap().json().await.unwrap();
        assert_eq!(comparable(o["response"]["body"].clone()), comparable(live), "{}", g["custom_id"]);
    }
    assert!(out[0]["response"]["body"]["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let errs = content(&base, b["error_file_id"].as_str().unwrap()).await;
    assert_eq!(errs.len(), 4);
    assert_eq!(errs[0]["custom_id"], "bad-url");
    assert_eq!(errs[0]["error"]["code"], "invalid_url");
    assert_eq!(errs[1]["custom_id"], "bad-body");
    assert_eq!(errs[1]["response"]["status_code"], 400);
    assert_eq!(errs[1]["response"]["body"]["error"]["param"], "max_tokens");
    assert!(errs[2]["custom_id"].is_null());
    assert_eq!(errs[2]["error"]["code"], "invalid_json");
    assert_eq!(errs[3]["custom_id"], "too-long");
    assert_eq!(errs[3]["error"]["code"], "line_too_large");
    assert!(errs[3]["error"]["message"].as_str().unwrap().contains("2000 bytes"));
    // Listing, and the metrics.
    let (_, list) = get(&base, None, "/v1/batches?limit=5").await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["has_more"], false);
    let (_, files) = get(&base, None, "/v1/files").await;
    assert_eq!(files["data"].as_array().unwrap().len(), 3, "input, output and error files");
    assert_eq!(metric(&s.metrics_base, "hhh_batch_requests_total{status=\"completed\"}").await, 4.0);
    assert_eq!(metric(&s.metrics_base, "hhh_batch_requests_total{status=\"failed\"}").await, 4.0);
    assert!(metric(&s.metrics_base, "hhh_batch_tokens_total{kind=\"completion\"}").await > 0.0);
    let t0 = Instant::now();
    while metric(&s.metrics_base, "hhh_batches{status=\"completed\"}").await != 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "hhh_batches gauge not updated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Deleting a file.
    let r = client().delete(format!("{base}/v1/files/{}", f["id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&base, None, &format!("/v1/files/{}", f["id"].as_str().unwrap())).await.0, 404);
    wait_idle(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_and_requests_are_rejected_naming_the_field() {
    let s = spawn(&["--max-file-bytes", "4000", "--batch-max-lines", "3"]).await;
    let base = s.base.clone();
    let ok = line("a", "/v1/completions", json!({"model": MODEL, "prompt": "Hi", "max_tokens": 1}));
    let err = |v: &Value| (v["error"]["param"].as_str().unwrap_or("").to_string(), v["error"]["message"].as_str().unwrap_or("").to_string());

    let (st, v) = upload(&base, None, b"hello\nworld\n".to_vec(), "batch").await;
    assert_eq!(st, 400);
    assert_eq!(err(&v).0, "file");
    assert!(err(&v).1.contains("not JSONL"), "{v}");
    let (st, v) = upload(&base, None, jsonl(&[ok.clone(), ok.clone()]).into_bytes(), "batch").await;
    assert_eq!(st, 400);
    assert!(err(&v).1.contains("`a`") && err(&v).1.contains("lines 1 and 2"), "{v}");
    let (st, v) = upload(&base, None, vec![b'x'; 5000], "batch").await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(err(&v).0, "file");
    assert!(err(&v).1.contains("4000 bytes"), "{v}");
    let many: Vec<Value> = (0..4).map(|i| line(&format!("l{i}"), "/v1/completions", json!({"prompt": "Hi"}))).collect();
    let (st, v) = upload(&base, None, jsonl(&many).into_bytes(), "batch").await;
    assert_eq!(st, 400);
    assert!(err(&v).1.contains("limit is 3"), "{v}");
    let (st, v) = upload(&base, None, vec![0xff, 0xfe], "batch").await;
    assert_eq!((st, err(&v).0.as_str()), (400, "file"), "{v}");
    let (st, v) = upload(&base, None, jsonl(std::slice::from_ref(&ok)).into_bytes(), "fine-tune").await;
    assert_eq!((st, err(&v).0.as_str()), (400, "purpose"), "{v}");

    let (st, v) = create(&base, None, json!({"input_file_id": "file-nope", "endpoint": "/v1/completions", "completion_window": "24h"})).await;
    assert_eq!((st, err(&v).0.as_str()), (404, "input_file_id"), "{v}");
    let (_, f) = upload(&base, None, jsonl(std::slice::from_ref(&ok)).into_bytes(), "batch").await;
    let (st, v) = create(&base, None, json!({"input_file_id": f["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"})).await;
    assert_eq!((st, err(&v).0.as_str()), (400, "endpoint"), "{v}");
    let (st, v) = create(&base, None, json!({"input_file_id": f["id"], "endpoint": "/v1/completions", "completion_window": "tomorrow"})).await;
    assert_eq!((st, err(&v).0.as_str()), (400, "completion_window"), "{v}");
    let (_, u) = upload(&base, None, b"{}\n".to_vec(), "user_data").await;
    let (st, v) = create(&base, None, json!({"input_file_id": u["id"], "endpoint": "/v1/completions", "completion_window": "24h"})).await;
    assert_eq!((st, err(&v).0.as_str()), (400, "input_file_id"), "{v}");
    assert!(err(&v).1.contains("purpose"), "{v}");
    assert_eq!(get(&base, None, "/v1/batches/batch_nope").await.0, 404);
    assert_eq!(get(&base, None, "/v1/batches?limit=0").await.0, 400);
    // A finished batch cannot be cancelled.
    let (_, b) = create(&base, None, json!({"input_file_id": f["id"], "endpoint": "/v1/completions", "completion_window": "24h"})).await;
    let id = b["id"].as_str().unwrap();
    assert_eq!(wait_done(&base, id, Duration::from_secs(120)).await["status"], "completed");
    let r = client().post(format!("{base}/v1/batches/{id}/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_sees_only_its_own_files_and_batches() {
    let s = spawn(&["--api-key", "alpha,beta"]).await;
    let base = s.base.clone();
    let ok = line("a", "/v1/completions", json!({"model": MODEL, "prompt": "Hi", "max_tokens": 1}));
    assert_eq!(upload(&base, None, jsonl(std::slice::from_ref(&ok)).into_bytes(), "batch").await.0, 401);
    let (st, f) = upload(&base, Some("alpha"), jsonl(&[ok]).into_bytes(), "batch").await;
    assert_eq!(st, 200, "{f}");
    let fid = f["id"].as_str().unwrap();
    assert_eq!(get(&base, Some("alpha"), &format!("/v1/files/{fid}")).await.0, 200);
    assert_eq!(get(&base, Some("beta"), &format!("/v1/files/{fid}")).await.0, 404);
    let r = client().get(format!("{base}/v1/files/{fid}/content")).bearer_auth("beta").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(create(&base, Some("beta"), json!({"input_file_id": fid, "endpoint": "/v1/completions", "completion_window": "24h"})).await.0, 404);
    let (st, b) = create(&base, Some("alpha"), json!({"input_file_id": fid, "endpoint": "/v1/completions", "completion_window": "24h"})).await;
    assert_eq!(st, 200);
    let bid = b["id"].as_str().unwrap();
    assert_eq!(get(&base, Some("beta"), &format!("/v1/batches/{bid}")).await.0, 404);
    assert_eq!(get(&base, Some("beta"), "/v1/batches").await.1["data"].as_array().unwrap().len(), 0);
    assert_eq!(get(&base, Some("beta"), "/v1/files").await.1["data"].as_array().unwrap().len(), 0);
    assert_eq!(get(&base, Some("alpha"), "/v1/batches").await.1["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_stops_and_keeps_its_finished_lines() {
    let s = spawn(&["--batch-max-in-flight", "2"]).await;
    let base = s.base.clone();
    let lines: Vec<Value> =
        (0..40).map(|i| line(&format!("c{i}"), "/v1/completions", json!({"model": MODEL, "prompt": format!("Story {i}:"), "max_tokens": 24, "ignore_eos": true, "temperature": 0}))).collect();
    let (_, f) = upload(&base, None, jsonl(&lines).into_bytes(), "batch").await;
    let (_, b) = create(&base, None, json!({"input_file_id": f["id"], "endpoint": "/v1/completions", "completion_window": "24h"})).await;
    let id = b["id"].as_str().unwrap();
    let t0 = Instant::now();
    while get(&base, None, &format!("/v1/batches/{id}")).await.1["request_counts"]["completed"].as_u64().unwrap() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(120));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r: Value = client().post(format!("{base}/v1/batches/{id}/cancel")).send().await.unwrap().json().await.unwrap();
    assert!(r["status"] == "cancelling" || r["status"] == "cancelled", "{r}");
    let b = wait_done(&base, id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "cancelled");
    let done = b["request_counts"]["completed"].as_u64().unwrap();
    assert!((2..40).contains(&done), "{b}");
    assert_eq!(content(&base, b["output_file_id"].as_str().unwrap()).await.len() as u64, done);
    wait_idle(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_loses_and_duplicates_no_line() {
    let dir = temp_dir("crash");
    let d = dir.to_str().unwrap().to_string();
    let lines: Vec<Value> =
        (0..200).map(|i| line(&format!("req-{i}"), "/v1/completions", json!({"model": MODEL, "prompt": format!("Item {i}:"), "max_tokens": 3, "ignore_eos": true, "temperature": 0}))).collect();
    let mut p = start_binary(&["--data-dir", &d]).await;
    let (st, f) = upload(&p.base, None, jsonl(&lines).into_bytes(), "batch").await;
    assert_eq!(st, 200, "{f}");
    let (_, b) = create(&p.base, None, json!({"input_file_id": f["id"], "endpoint": "/v1/completions", "completion_window": "24h"})).await;
    let id = b["id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    let at_kill = loop {
        let n = get(&p.base, None, &format!("/v1/batches/{id}")).await.1["request_counts"]["completed"].as_u64().unwrap();
        if n >= 20 {
            break n;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "batch made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    assert!(at_kill < 200, "the batch finished before the kill ({at_kill} lines): the test proves nothing");
    drop(p);
    let p = start_binary(&["--data-dir", &d]).await;
    let b = wait_done(&p.base, &id, Duration::from_secs(300)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"], json!({"total": 200, "completed": 200, "failed": 0}));
    let out = content(&p.base, b["output_file_id"].as_str().unwrap()).await;
    assert_eq!(out.len(), 200);
    let ids: HashSet<&str> = out.iter().map(|l| l["custom_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 200, "a custom_id was written twice");
    assert!((0..200).all(|i| ids.contains(format!("req-{i}").as_str())), "a line was lost");
    assert!(out.iter().all(|l| l["response"]["body"]["usage"]["completion_tokens"] == 3));
    eprintln!("killed after {at_kill} of 200 committed lines; resumed and completed");
}

fn run_batch(args: &[&str]) -> std::process::Output {
    let mut a = vec!["run-batch", "--model", model_path().to_str().unwrap(), "--max-model-len", "512", "--quiet"].into_iter().map(String::from).collect::<Vec<_>>();
    a.extend(args.iter().map(|s| s.to_string()));
    std::process::Command::new(env!("CARGO_BIN_EXE_hhh-server")).args(&a).output().unwrap()
}

fn read_lines(p: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn run_batch_offline_resumes_and_shards() {
    let dir = temp_dir("offline");
    let input = dir.join("in.jsonl");
    let mut lines: Vec<Value> = (0..10).map(|i| line(&format!("o{i}"), "/v1/completions", json!({"model": MODEL, "prompt": format!("Count {i}:"), "max_tokens": 2, "temperature": 0}))).collect();
    lines.push(line("bad", "/v1/nowhere", json!({})));
    let mut text = jsonl(&lines);
    text += "not json\n";
    std::fs::write(&input, &text).unwrap();
    let out = dir.join("out.jsonl");
    let o = run_batch(&["-i", input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((summary["completed"].as_u64(), summary["failed"].as_u64()), (Some(10), Some(2)), "{summary}");
    let full = read_lines(&out);
    assert_eq!(full.len(), 12);
    // A second run without --resume refuses to touch the output.
    let o = run_batch(&["-i", input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    // A crash: 5 whole lines and half of the sixth survive. --resume runs the rest exactly once.
    let raw = std::fs::read_to_string(&out).unwrap();
    let cut: usize = raw.split_inclusive('\n').take(5).map(str::len).sum::<usize>() + 20;
    std::fs::write(&out, &raw[..cut]).unwrap();
    let o = run_batch(&["-i", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--resume"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["skipped"], 5, "{summary}");
    let resumed = read_lines(&out);
    assert_eq!(resumed.len(), 12);
    let key = |v: &Value| v["custom_id"].as_str().unwrap_or("-").to_string();
    let mut a: Vec<String> = full.iter().map(key).collect();
    let mut b: Vec<String> = resumed.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same lines, none twice");
    // Greedy answers do not depend on the run.
    let text_of = |v: &Vec<Value>, id: &str| v.iter().find(|l| l["custom_id"] == id).map(|l| l["response"]["body"]["choices"][0]["text"].clone());
    for i in 0..10 {
        let id = format!("o{i}");
        assert_eq!(text_of(&full, &id), text_of(&resumed, &id), "{id}");
    }
    // Two shards cover the file once.
    let mut seen = Vec::new();
    for k in 0..2 {
        let so = dir.join(format!("shard-{k}.jsonl"));
        let o = run_batch(&["-i", input.to_str().unwrap(), "-o", so.to_str().unwrap(), "--num-shards", "2", "--shard-index", &k.to_string()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let l = read_lines(&so);
        assert_eq!(l.len(), 6);
        seen.extend(l.iter().map(key));
    }
    seen.sort();
    assert_eq!(seen, a);
}
