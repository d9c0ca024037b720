//! Structured outputs (`response_format`, `structured_outputs`): sampled at temperature 1 with
//! many seeds, every output matches its schema, regex or choice; streaming equals non-streaming;
//! a constrained request gives the same tokens whatever else is in the batch; grammars that do
//! not compile are a 400 naming the field.

mod support;

use serde_json::{json, Value};
use support::*;

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "mood": {"enum": ["happy", "sad", "calm"]}
        },
        "required": ["name", "age", "mood"],
        "additionalProperties": false
    })
}

/// Checks `v` against person_schema by hand (independent of the grammar engine).
fn valid_person(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("not an object")?;
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort();
    if keys != ["age", "mood", "name"] {
        return Err(format!("keys {keys:?}"));
    }
    let name = o["name"].as_str().ok_or("name not a string")?;
    if name.chars().count() > 20 {
        return Err("name too long".into());
    }
    let age = o["age"].as_i64().ok_or("age not an integer")?;
    if !(0..=150).contains(&age) {
        return Err("age out of range".into());
    }
    if !["happy", "sad", "calm"].contains(&o["mood"].as_str().ok_or("mood not a string")?) {
        return Err("mood not in the enum".into());
    }
    Ok(())
}

async fn chat(s: &TestServer, extra: Value) -> (u16, Value) {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Describe a person as JSON."}], "max_tokens": 80, "temperature": 1.0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = client().post(format!("{}/v1/chat/completions", s.base)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_regex_and_choice_always_match() {
    let s = spawn(&[]).await;
    let rf = json!({"type": "json_schema", "json_schema": {"name": "person", "schema": person_schema(), "strict": true}});
    for seed in 0..12 {
        let (st, v) = chat(&s, json!({"seed": seed, "response_format": rf})).await;
        assert_eq!(st, 200, "{v}");
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "stop", "seed {seed}: {v}");
        let text = c["message"]["content"].as_str().unwrap();
        let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {text:?}"));
        valid_person(&parsed).unwrap_or_else(|e| panic!("seed {seed}: {e}: {text}"));
    }
    // n = 3: every choice under the constraint.
    let (_, v) = chat(&s, json!({"seed": 77, "n": 3, "response_format": rf})).await;
    for c in v["choices"].as_array().unwrap() {
        valid_person(&serde_json::from_str(c["message"]["content"].as_str().unwrap()).unwrap()).unwrap();
    }
    // json_object: any JSON object.
    for seed in 0..4 {
        let (_, v) = chat(&s, json!({"seed": seed, "max_tokens": 200, "temperature": 0.7, "response_format": {"type": "json_object"}})).await;
        let c = &v["choices"][0];
        if c["finish_reason"] == "stop" {
            let parsed: Value = serde_json::from_str(c["message"]["content"].as_str().unwrap()).unwrap();
            assert!(parsed.is_object(), "{v}");
        } else {
            assert_eq!(c["finish_reason"], "length", "{v}");
        }
    }
    // Regex and choice (vLLM's `structured_outputs`), on both routes.
    for seed in 0..6 {
        let (_, v) = chat(&s, json!({"seed": seed, "structured_outputs": {"regex": "[0-9]{3}-[0-9]{4}"}})).await;
        let t = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        let b = t.as_bytes();
        assert!(b.len() == 8 && b[3] == b'-' && b.iter().enumerate().all(|(i, c)| i == 3 || c.is_ascii_digit()), "{t:?}");
        let r = client()
            .post(format!("{}/v1/completions", s.base))
            .json(&json!({"model": MODEL, "prompt": "Is the sea wet? Answer:", "max_tokens": 10, "temperature": 1.0, "seed": seed, "structured_outputs": {"choice": ["yes", "no", "maybe so"]}}))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let t = v["choices"][0]["text"].as_str().unwrap();
        assert!(["yes", "no", "maybe so"].contains(&t), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_and_batching_do_not_change_constrained_output() {
    let s = spawn(&[]).await;
    let rf = json!({"type": "json_schema", "json_schema": {"name": "person", "schema": person_schema()}});
    let (_, alone) = chat(&s, json!({"seed": 3, "response_format": rf})).await;
    let alone = alone["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    // The same request while four unconstrained requests share the batch.
    let noise: Vec<_> = (0..4)
        .map(|i| {
            let base = s.base.clone();
            tokio::spawn(async move {
                let body = chat_body("Write a long story about the sea.", 60, json!({"temperature": 1.0, "seed": i}));
                client().post(format!("{base}/v1/chat/completions")).json(&body).send().await.unwrap().status()
            })
        })
        .collect();
    let (_, busy) = chat(&s, json!({"seed": 3, "response_format": rf})).await;
    for n in noise {
        assert_eq!(n.await.unwrap(), 200);
    }
    assert_eq!(busy["choices"][0]["message"]["content"].as_str().unwrap(), alone);
    // Streamed deltas reassemble into the same text.
    let mut body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Describe a person as JSON."}], "max_tokens": 80, "temperature": 1.0, "seed": 3, "stream": true, "response_format": rf});
    body["stream"] = json!(true);
    let text = client().post(format!("{}/v1/chat/completions", s.base)).json(&body).send().await.unwrap().text().await.unwrap();
    let (content, finish, error, done) = parse_sse(&text);
    assert!(done && error.is_none(), "{text}");
    assert_eq!((content.as_str(), finish.as_deref()), (alone.as_str(), Some("stop")));
    wait_idle(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_constraints_are_400s_naming_the_field() {
    let s = spawn(&[]).await;
    for (extra, param) in [
        (json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}), "response_format.json_schema"),
        (json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}), "response_format.json_schema.schema"),
        (json!({"response_format": {"type": "xml"}}), "response_format.type"),
        (json!({"structured_outputs": {"regex": "([a-z"}}), "structured_outputs.regex"),
        (json!({"structured_outputs": {"choice": []}}), "structured_outputs.choice"),
        (json!({"structured_outputs": {"regex": "a", "choice": ["a"]}}), "structured_outputs"),
        (json!({"structured_outputs": {"grammar": "start: undefined_rule"}}), "structured_outputs.grammar"),
        (json!({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}), "structured_outputs"),
    ] {
        let (st, v) = chat(&s, extra.clone()).await;
        assert_eq!(st, 400, "{extra} -> {v}");
        assert_eq!(v["error"]["param"], param, "{extra} -> {v}");
    }
    // `response_format: text` is no constraint at all.
    let (st, _) = chat(&s, json!({"response_format": {"type": "text"}, "max_tokens": 4})).await;
    assert_eq!(st, 200);
}

/// vLLM's older `guided_*` names work like `structured_outputs`; mixing both shapes is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guided_aliases() {
    let s = spawn(&[]).await;
    let (st, v) = chat(&s, json!({"seed": 1, "guided_choice": ["alpha", "beta"]})).await;
    assert_eq!(st, 200, "{v}");
    assert!(["alpha", "beta"].contains(&v["choices"][0]["message"]["content"].as_str().unwrap()), "{v}");
    let (st, v) = chat(&s, json!({"seed": 2, "guided_json": person_schema()})).await;
    assert_eq!(st, 200, "{v}");
    valid_person(&serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap()).unwrap();
    let (st, v) = chat(&s, json!({"guided_regex": "[0-9]+", "structured_outputs": {"regex": "[a-z]+"}})).await;
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("structured_outputs")), "{v}");
}

/// A schema from the random generator below, with its own validator (independent of the grammar
/// engine).
enum Shape {
    Int(i64, i64),
    Str(usize),
    Bool,
    Enum(Vec<String>),
    Arr(Box<Shape>, usize, usize),
    Obj(Vec<(String, Shape, bool)>),
}

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn random_shape(r: &mut Rng, depth: usize) -> Shape {
    match r.next(if depth == 0 { 4 } else { 6 }) {
        0 => {
            let lo = r.next(200) as i64 - 100;
            Shape::Int(lo, lo + r.next(1000) as i64)
        }
        1 => Shape::Str(1 + r.next(12) as usize),
        2 => Shape::Bool,
        3 => Shape::Enum((0..1 + r.next(4)).map(|i| format!("v{i}_{}", r.next(100))).collect()),
        4 => {
            let min = r.next(2) as usize;
            Shape::Arr(Box::new(random_shape(r, depth - 1)), min, min + 1 + r.next(2) as usize)
        }
        _ => Shape::Obj((0..1 + r.next(4)).map(|i| (format!("k{i}"), random_shape(r, depth - 1), r.next(3) > 0)).collect()),
    }
}

fn shape_schema(s: &Shape) -> Value {
    match s {
        Shape::Int(lo, hi) => json!({"type": "integer", "minimum": lo, "maximum": hi}),
        Shape::Str(n) => json!({"type": "string", "maxLength": n}),
        Shape::Bool => json!({"type": "boolean"}),
        Shape::Enum(v) => json!({"enum": v}),
        Shape::Arr(item, min, max) => json!({"type": "array", "items": shape_schema(item), "minItems": min, "maxItems": max}),
        Shape::Obj(props) => {
            let p: serde_json::Map<String, Value> = props.iter().map(|(k, s, _)| (k.clone(), shape_schema(s))).collect();
            let req: Vec<&String> = props.iter().filter(|x| x.2).map(|x| &x.0).collect();
            json!({"type": "object", "properties": p, "required": req, "additionalProperties": false})
        }
    }
}

fn shape_valid(s: &Shape, v: &Value) -> Result<(), String> {
    let bad = || Err(format!("{v} does not match {}", shape_schema(s)));
    match s {
        Shape::Int(lo, hi) => match v.as_i64() {
            Some(x) if (*lo..=*hi).contains(&x) => Ok(()),
            _ => bad(),
        },
        Shape::Str(n) => match v.as_str() {
            Some(t) if t.chars().count() <= *n => Ok(()),
            _ => bad(),
        },
        Shape::Bool => {
            if v.is_boolean() {
                Ok(())
            } else {
                bad()
            }
        }
        Shape::Enum(e) => {
            if v.as_str().is_some_and(|t| e.iter().any(|x| x == t)) {
                Ok(())
            } else {
                bad()
            }
        }
        Shape::Arr(item, min, max) => match v.as_array() {
            Some(a) if (*min..=*max).contains(&a.len()) => a.iter().try_for_each(|x| shape_valid(item, x)),
            _ => bad(),
        },
        Shape::Obj(props) => {
            let Some(o) = v.as_object() else { return bad() };
            if o.keys().any(|k| !props.iter().any(|p| &p.0 == k)) {
                return bad();
            }
            for (k, sh, required) in props {
                match o.get(k) {
                    Some(x) => shape_valid(sh, x)?,
                    None if *required => return bad(),
                    None => {}
                }
            }
            Ok(())
        }
    }
}

/// Property test: 24 random schemas (objects, arrays, bounded integers and strings, enums,
/// booleans; nested), each sampled at temperature 1, always give output that validates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schemas_always_validate() {
    let s = spawn(&[]).await;
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..24 {
        let shape = Shape::Obj((0..1 + r.next(3)).map(|k| (format!("f{k}"), random_shape(&mut r, 2), true)).collect());
        let schema = shape_schema(&shape);
        let (st, v) = chat(&s, json!({"seed": i, "max_tokens": 400, "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}})).await;
        assert_eq!(st, 200, "{schema}: {v}");
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "stop", "schema {i} {schema}: {v}");
        let text = c["message"]["content"].as_str().unwrap();
        let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("schema {i}: {e}: {text}"));
        shape_valid(&shape, &parsed).unwrap_or_else(|e| panic!("schema {i} {schema}: {e}"));
    }
}
