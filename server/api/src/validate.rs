//! Request parsing and validation. Every rejection names the field and the limit.

use crate::error::ApiError;
use crate::state::Limits;
use axum::body::Body;
use hhh_engine::SamplingParams;
use hhh_proto::SamplingFields;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Sampling fields accepted by both generation endpoints.
pub const SAMPLING_FIELDS: &[&str] = &[
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
    "n",
    "max_tokens",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "stream",
    "stream_options",
    "logit_bias",
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
];
/// Most `logit_bias` entries per request.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// Accepted and ignored because ignoring them cannot change the output.
pub const IGNORED_FIELDS: &[&str] = &["user", "metadata", "store", "service_tier"];
/// OpenAI fields this server does not implement (on a route that does not list them as
/// allowed: `tools` is allowed on chat only): rejected with a 400 naming the field.
pub const UNSUPPORTED_FIELDS: &[&str] =
    &["tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "audio", "modalities", "prediction", "reasoning_effort", "web_search_options", "best_of", "suffix"];

tokio::task_local! {
    /// Unknown fields of the current request that were ignored (the middleware lists them in the
    /// `x-hhh-ignored-fields` response header). Outside a request's scope nothing is recorded.
    pub static IGNORED: std::cell::RefCell<Vec<String>>;
}

/// Most distinct ignored field names logged (each once), so hostile bodies cannot grow the set.
const MAX_LOGGED_NAMES: usize = 1000;

/// Log an ignored field name once per process.
fn log_ignored_once(name: &str) {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> = std::sync::OnceLock::new();
    let Ok(mut seen) = SEEN.get_or_init(Default::default).lock() else { return };
    if seen.len() < MAX_LOGGED_NAMES && seen.insert(name.to_string()) {
        tracing::warn!(field = %name, "ignoring an unknown request field (logged once per name; --strict-fields rejects them)");
    }
}

/// Whether `v` is a no-op value of an OpenAI field this server does not implement (accepted and
/// dropped: it cannot change the output).
pub fn is_noop(key: &str, v: &Value) -> bool {
    v.is_null()
        || match key {
            "tools" | "functions" => v.as_array().is_some_and(|a| a.is_empty()),
            "tool_choice" | "function_call" => v.as_str() == Some("none"),
            // Only meaningful with tools.
            "parallel_tool_calls" => v.is_boolean(),
            "best_of" => v.as_i64() == Some(1),
            "suffix" => v.as_str() == Some(""),
            "modalities" => v.as_array().is_some_and(|a| a.len() == 1 && a[0].as_str() == Some("text")),
            _ => false,
        }
}

/// Read the body (413 over the limit), parse JSON, check field names, deserialize.
/// The OpenAI-compatible routes: unknown fields are ignored (logged once per name, listed in
/// `x-hhh-ignored-fields`) unless `--strict-fields`; no-op values of unimplemented fields are
/// accepted; other values of unimplemented fields are a 400.
pub async fn read_json<T: DeserializeOwned>(body: Body, limits: &Limits, allowed: &[&str]) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, limits.max_body_bytes).await.map_err(|_| ApiError::too_large(limits.max_body_bytes))?;
    parse_json_with(&bytes, allowed, true, !limits.strict_fields)
}

/// [`read_json`] for non-generation routes: only `allowed` fields (no sampling fields).
pub async fn read_json_only<T: DeserializeOwned>(body: Body, limits: &Limits, allowed: &[&str]) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, limits.max_body_bytes).await.map_err(|_| ApiError::too_large(limits.max_body_bytes))?;
    parse_json_fields(&bytes, allowed, false)
}

/// The synchronous part of [`read_json`] (also the fuzzing entry point).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], allowed: &[&str]) -> Result<T, ApiError> {
    parse_json_fields(bytes, allowed, true)
}

/// Parse, check field names (`allowed`, plus the sampling fields when `sampling`), deserialize;
/// unknown fields are a 400.
pub fn parse_json_fields<T: DeserializeOwned>(bytes: &[u8], allowed: &[&str], sampling: bool) -> Result<T, ApiError> {
    parse_json_with(bytes, allowed, sampling, false)
}

/// [`parse_json_fields`]; with `lenient`, unknown fields are dropped and recorded in [`IGNORED`].
pub fn parse_json_with<T: DeserializeOwned>(bytes: &[u8], allowed: &[&str], sampling: bool, lenient: bool) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ApiError::bad_request(format!("Request body is not valid UTF-8: {e}")))?;
    let mut v: Value = serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("Invalid JSON in request body: {e}")))?;
    let obj = v.as_object_mut().ok_or_else(|| ApiError::bad_request("Request body must be a JSON object."))?;
    for f in IGNORED_FIELDS {
        obj.remove(*f);
    }
    let mut ignored = Vec::new();
    let mut drop = Vec::new();
    for (key, value) in obj.iter() {
        if UNSUPPORTED_FIELDS.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
            if lenient && is_noop(key, value) {
                drop.push(key.clone());
                continue;
            }
            return Err(ApiError::invalid(key, format!("`{key}` is not supported by this server.")));
        }
        if !(allowed.contains(&key.as_str()) || (sampling && SAMPLING_FIELDS.contains(&key.as_str()))) {
            if !lenient {
                return Err(ApiError::invalid(key, format!("Unknown field `{key}`.")));
            }
            ignored.push(key.clone());
        }
    }
    for key in drop.iter().chain(&ignored) {
        obj.remove(key);
    }
    if !ignored.is_empty() {
        for k in &ignored {
            log_ignored_once(k);
        }
        let _ = IGNORED.try_with(|v| v.borrow_mut().extend(ignored));
    }
    check_types(obj)?;
    serde_path_to_error::deserialize(v).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            path.clear();
        }
        // serde reports a missing field at its parent's path: name the field itself.
        if let Some(field) = inner.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            let full = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
            return ApiError::invalid(&full, format!("Missing required field `{full}`."));
        }
        if path.is_empty() {
            ApiError::bad_request(format!("Invalid request: {inner}"))
        } else {
            ApiError::invalid(&path, format!("Invalid value for `{path}`: {inner}"))
        }
    })
}

/// JSON kinds of scalar fields, checked before deserialization so that type errors name the
/// field (serde loses the path inside flattened structs).
fn check_types(obj: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    const NUMBER: &[&str] = &["temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"];
    const INTEGER: &[&str] = &["top_k", "seed", "n", "max_tokens", "max_completion_tokens", "top_logprobs"];
    const BOOL: &[&str] = &["stream", "ignore_eos", "echo", "add_generation_prompt", "add_special_tokens"];
    for (k, v) in obj {
        let k = k.as_str();
        let want = if NUMBER.contains(&k) && !v.is_number() && !v.is_null() {
            Some("a number")
        } else if INTEGER.contains(&k) && !(v.is_i64() || v.is_u64()) && !v.is_null() {
            Some("an integer")
        } else if BOOL.contains(&k) && !v.is_boolean() && !v.is_null() {
            Some("a boolean")
        } else if k == "model" && !v.is_string() {
            Some("a string")
        } else if k == "messages" && !v.is_array() {
            Some("an array of messages")
        } else if k == "logit_bias" && !(v.is_null() || v.as_object().is_some_and(|o| o.values().all(Value::is_number))) {
            Some("an object of token ids to numbers")
        } else if k == "stop" && !(v.is_string() || v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))) {
            Some("a string or an array of strings")
        } else {
            None
        };
        if let Some(w) = want {
            return Err(ApiError::invalid(k, format!("`{k}` must be {w}, got {v}.")));
        }
    }
    Ok(())
}

fn range(name: &str, v: Option<f32>, lo: f32, hi: f32, default: f32, lo_open: bool) -> Result<f32, ApiError> {
    let x = v.unwrap_or(default);
    let ok = x.is_finite() && (if lo_open { x > lo } else { x >= lo }) && x <= hi;
    if !ok {
        let lb = if lo_open { "(" } else { "[" };
        return Err(ApiError::invalid(name, format!("`{name}` must be in {lb}{lo}, {hi}], got {x}.")));
    }
    Ok(x)
}

/// Validated `n` (1 ..= limit).
pub fn n_choices(s: &SamplingFields, limits: &Limits) -> Result<usize, ApiError> {
    let n = s.n.unwrap_or(1);
    if n < 1 || n as usize > limits.max_n {
        return Err(ApiError::invalid("n", format!("`n` must be between 1 and {}, got {n}.", limits.max_n)));
    }
    Ok(n as usize)
}

/// Validated stop strings.
pub fn stop_strings(s: &SamplingFields, limits: &Limits) -> Result<Vec<String>, ApiError> {
    let stops = s.stop.clone().map(|x| x.into_vec()).unwrap_or_default();
    if stops.len() > limits.max_stop {
        return Err(ApiError::invalid("stop", format!("At most {} stop strings are allowed, got {}.", limits.max_stop, stops.len())));
    }
    if stops.iter().any(|x| x.is_empty()) {
        return Err(ApiError::invalid("stop", "Stop strings must not be empty."));
    }
    if let Some(long) = stops.iter().find(|x| x.chars().count() > limits.max_stop_chars) {
        return Err(ApiError::invalid("stop", format!("Stop strings may have at most {} characters, got one with {}.", limits.max_stop_chars, long.chars().count())));
    }
    let ids = s.stop_token_ids.as_ref().map_or(0, Vec::len);
    if ids > limits.max_stop {
        return Err(ApiError::invalid("stop_token_ids", format!("At most {} stop token ids are allowed, got {ids}.", limits.max_stop)));
    }
    Ok(stops)
}

/// Engine sampling parameters from the shared fields. `max_tokens` is already resolved.
pub fn sampling_params(s: &SamplingFields, max_tokens: usize, logprobs: Option<usize>, vocab: usize) -> Result<SamplingParams, ApiError> {
    let temperature = range("temperature", s.temperature, 0.0, 2.0, 1.0, false)?;
    let top_p = range("top_p", s.top_p, 0.0, 1.0, 1.0, true)?;
    let min_p = range("min_p", s.min_p, 0.0, 1.0, 0.0, false)?;
    let presence_penalty = range("presence_penalty", s.presence_penalty, -2.0, 2.0, 0.0, false)?;
    let frequency_penalty = range("frequency_penalty", s.frequency_penalty, -2.0, 2.0, 0.0, false)?;
    let repetition_penalty = range("repetition_penalty", s.repetition_penalty, 0.0, 2.0, 1.0, true)?;
    let top_k = match s.top_k.unwrap_or(0) {
        -1 | 0 => 0,
        k if k > 0 => k as usize,
        k => return Err(ApiError::invalid("top_k", format!("`top_k` must be -1 (disabled) or >= 1, got {k}."))),
    };
    let mut logit_bias = Vec::new();
    if let Some(m) = &s.logit_bias {
        if m.len() > MAX_LOGIT_BIAS {
            return Err(ApiError::invalid("logit_bias", format!("`logit_bias` may hold at most {MAX_LOGIT_BIAS} entries, got {}.", m.len())));
        }
        for (k, &b) in m {
            let id = k
                .parse::<u32>()
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| ApiError::invalid("logit_bias", format!("`logit_bias` key `{k}` is not a token id of this vocabulary (0 to {}).", vocab - 1)))?;
            if !(-100.0..=100.0).contains(&b) {
                return Err(ApiError::invalid("logit_bias", format!("`logit_bias` values must be between -100 and 100, got {b} for token {k}.")));
            }
            logit_bias.push((id, b as f32));
        }
    }
    let stop_token_ids = s.stop_token_ids.clone().unwrap_or_default();
    if let Some(bad) = stop_token_ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::invalid("stop_token_ids", format!("Token id {bad} is outside the vocabulary (size {vocab}).")));
    }
    Ok(SamplingParams {
        temperature,
        top_p,
        top_k,
        min_p,
        presence_penalty,
        frequency_penalty,
        repetition_penalty,
        seed: s.seed.map(|x| x as u64).unwrap_or_else(rand::random),
        logprobs,
        prompt_logprobs: None,
        prompt_logprobs_start: 0,
        max_tokens,
        stop_token_ids,
        ignore_eos: s.ignore_eos.unwrap_or(false),
        pooling: None,
        logit_bias,
        constraint: None,
        // Set at submission from the task (batch lines run at batch priority).
        priority: Default::default(),
    })
}

/// Resolve `max_tokens` against the context and the KV pool.
/// `requested`: the client's value (None: fill the context, or `default` when given).
pub fn resolve_max_tokens(field: &str, prompt_field: &str, requested: Option<i64>, default: Option<usize>, prompt_len: usize, max_model_len: usize, pool_tokens: usize) -> Result<usize, ApiError> {
    let limit = max_model_len.min(pool_tokens);
    if prompt_len >= limit {
        return Err(ApiError::invalid(prompt_field, format!("The prompt has {prompt_len} tokens; this model's maximum context length is {limit} tokens (prompt plus completion).")));
    }
    let room = limit - prompt_len;
    match requested {
        Some(m) if m < 1 => Err(ApiError::invalid(field, format!("`{field}` must be at least 1, got {m}."))),
        Some(m) if m as usize > room => Err(ApiError::invalid(
            field,
            format!(
                "This model's maximum context length is {limit} tokens. However, you requested {} tokens ({prompt_len} in the prompt, {m} in the completion). Reduce `{field}` to at most {room}.",
                prompt_len as i64 + m
            ),
        )),
        Some(m) => Ok(m as usize),
        None => Ok(default.unwrap_or(room).min(room)),
    }
}
