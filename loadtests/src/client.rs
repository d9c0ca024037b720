//! Sending one request and timing it: TTFT and chunk arrival times for streams, token counts
//! from the server's `usage` (or, when a server leaves usage out, from its `/tokenize`).

use crate::sse::SseParser;
use crate::workload::{Endpoint, RequestSpec};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Where to send requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// e.g. `http://127.0.0.1:8000` (no trailing `/v1`).
    pub base_url: String,
    pub api_key: Option<String>,
    /// Per-request limit, connect to last byte.
    pub timeout: Duration,
}

impl Target {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url.trim_end_matches('/'), path)
    }

    fn post(&self, http: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        let r = http.post(self.url(path)).timeout(self.timeout);
        match &self.api_key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }
}

/// Where a record's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The response's `usage`.
    Server,
    /// The server's `/tokenize` on the prompt and the generated text.
    Tokenize,
    /// Not counted (failed requests).
    None,
}

/// What one request did. Times are seconds: `start_s` since the run started, the others since
/// this request was sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub ok: bool,
    /// Failure class (`http 429`, `timeout`, `connect`, `stream error`, `incomplete stream`,
    /// `bad response`, `no token counts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failure detail (status text or the server's error message, truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub class: String,
    pub start_s: f64,
    pub e2e_s: f64,
    /// First content-bearing chunk (streams only).
    pub ttft_s: Option<f64>,
    /// Arrival time of every content-bearing chunk (streams only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_times_s: Vec<f64>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<usize>,
    pub usage_source: UsageSource,
    /// Scoring units done (0 for generation).
    pub items: usize,
}

impl RequestRecord {
    fn failed(spec: &RequestSpec, start_s: f64, t: Instant, error: &str, detail: impl Into<String>) -> RequestRecord {
        let mut detail: String = detail.into();
        if detail.len() > 300 {
            let cut = (0..=300).rev().find(|&i| detail.is_char_boundary(i)).unwrap_or(0);
            detail.truncate(cut);
        }
        RequestRecord {
            ok: false,
            error: Some(error.into()),
            detail: Some(detail),
            class: spec.class.into(),
            start_s,
            e2e_s: t.elapsed().as_secs_f64(),
            ttft_s: None,
            chunk_times_s: vec![],
            prompt_tokens: 0,
            output_tokens: 0,
            cached_tokens: None,
            usage_source: UsageSource::None,
            items: 0,
        }
    }
}

/// The error and its sources, `: `-joined (reqwest's own message hides the cause).
fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out += &format!(": {s}");
        src = s.source();
    }
    out
}

fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

/// Send `spec` and time it. Never panics; failures come back as records with `ok: false`.
pub async fn execute(http: &reqwest::Client, target: &Target, spec: &RequestSpec, start_s: f64) -> RequestRecord {
    let t = Instant::now();
    let resp = match target.post(http, spec.endpoint.path()).json(&spec.body).send().await {
        Ok(r) => r,
        Err(e) => return RequestRecord::failed(spec, start_s, t, classify(&e), chain(&e)),
    };
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["error"]["message"].as_str().map(String::from)).unwrap_or(body);
        return RequestRecord::failed(spec, start_s, t, &format!("http {}", status.as_u16()), msg);
    }
    if spec.endpoint.streams() {
        stream(http, target, spec, start_s, t, resp).await
    } else {
        scoring(spec, start_s, t, resp).await
    }
}

async fn scoring(spec: &RequestSpec, start_s: f64, t: Instant, resp: reqwest::Response) -> RequestRecord {
    let v: Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return RequestRecord::failed(spec, start_s, t, "bad response", e.to_string()),
    };
    let e2e = t.elapsed().as_secs_f64();
    let items = match spec.endpoint {
        Endpoint::Rewards => v["data"].as_array().map_or(0, Vec::len),
        _ => v["pairs"].as_array().map_or(0, Vec::len),
    };
    let Some(prompt) = v["usage"]["prompt_tokens"].as_u64() else {
        return RequestRecord::failed(spec, start_s, t, "no token counts", "response has no usage.prompt_tokens");
    };
    if items != spec.items {
        return RequestRecord::failed(spec, start_s, t, "bad response", format!("{items} results for {} items", spec.items));
    }
    RequestRecord {
        ok: true,
        error: None,
        detail: None,
        class: spec.class.into(),
        start_s,
        e2e_s: e2e,
        ttft_s: None,
        chunk_times_s: vec![],
        prompt_tokens: prompt as usize,
        output_tokens: 0,
        cached_tokens: v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().map(|c| c as usize),
        usage_source: UsageSource::Server,
        items,
    }
}

async fn stream(http: &reqwest::Client, target: &Target, spec: &RequestSpec, start_s: f64, t: Instant, resp: reqwest::Response) -> RequestRecord {
    let mut body = resp.bytes_stream();
    let mut sse = SseParser::default();
    let (mut chunks, mut text, mut usage, mut done, mut finished) = (Vec::new(), String::new(), None::<Value>, false, false);
    while let Some(bytes) = body.next().await {
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => return RequestRecord::failed(spec, start_s, t, classify(&e), chain(&e)),
        };
        let now = t.elapsed().as_secs_f64();
        for data in sse.push(&bytes) {
            if data.trim() == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&data) else {
                return RequestRecord::failed(spec, start_s, t, "bad response", format!("not JSON: {data}"));
            };
            if let Some(err) = v.get("error") {
                return RequestRecord::failed(spec, start_s, t, "stream error", err["message"].as_str().unwrap_or("error event").to_string());
            }
            let mut content = false;
            for c in v["choices"].as_array().into_iter().flatten() {
                let piece = c["delta"]["content"].as_str().or(c["text"].as_str()).unwrap_or("");
                content |= !piece.is_empty();
                text.push_str(piece);
                finished |= c["finish_reason"].is_string();
            }
            if content {
                chunks.push(now);
            }
            if v["usage"].is_object() {
                usage = Some(v["usage"].clone());
            }
        }
    }
    let e2e = t.elapsed().as_secs_f64();
    if !(done || finished) || sse.has_partial() {
        return RequestRecord::failed(spec, start_s, t, "incomplete stream", "the stream ended without [DONE] or a finish_reason");
    }
    let counts = match &usage {
        Some(u) => match (u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64()) {
            (Some(p), Some(c)) => Some((p as usize, c as usize, UsageSource::Server)),
            _ => None,
        },
        None => None,
    };
    let counts = match counts {
        Some(c) => c,
        None => match tokenize_counts(http, target, spec, &text).await {
            Ok((p, c)) => (p, c, UsageSource::Tokenize),
            Err(e) => return RequestRecord::failed(spec, start_s, t, "no token counts", e),
        },
    };
    RequestRecord {
        ok: true,
        error: None,
        detail: None,
        class: spec.class.into(),
        start_s,
        e2e_s: e2e,
        ttft_s: chunks.first().copied(),
        chunk_times_s: chunks,
        prompt_tokens: counts.0,
        output_tokens: counts.1,
        cached_tokens: usage.as_ref().and_then(|u| u["prompt_tokens_details"]["cached_tokens"].as_u64()).map(|c| c as usize),
        usage_source: counts.2,
        items: 0,
    }
}

/// Count tokens with the server's `/tokenize` (vLLM's `{"prompt"}` or llama.cpp's `{"content"}`
/// shape); the prompt of a chat request needs a server that tokenizes `messages`.
async fn tokenize_counts(http: &reqwest::Client, target: &Target, spec: &RequestSpec, text: &str) -> Result<(usize, usize), String> {
    let output = count(http, target, &[json!({"prompt": text, "add_special_tokens": false}), json!({"content": text, "add_special": false})]).await?;
    let prompt = match (spec.known_prompt_tokens, spec.endpoint) {
        (Some(n), _) => n,
        (None, Endpoint::Chat) => count(http, target, &[json!({"messages": spec.body["messages"], "add_generation_prompt": true})]).await?,
        (None, _) => return Err("no usage and no way to count the prompt".into()),
    };
    Ok((prompt, output))
}

async fn count(http: &reqwest::Client, target: &Target, bodies: &[Value]) -> Result<usize, String> {
    let mut last = String::from("no /tokenize shape tried");
    for b in bodies {
        match target.post(http, "/tokenize").json(b).send().await {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.map_err(|e| e.to_string())?;
                if let Some(n) = v["count"].as_u64().or_else(|| v["tokens"].as_array().map(|a| a.len() as u64)) {
                    return Ok(n as usize);
                }
                last = "/tokenize answered without tokens".into();
            }
            Ok(r) => last = format!("/tokenize: http {}", r.status().as_u16()),
            Err(e) => last = format!("/tokenize: {e}"),
        }
    }
    Err(format!("the response had no usage and {last}"))
}
