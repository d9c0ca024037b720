//! Scenarios: the requests a run sends. A workload is a list of [`RequestSpec`]s, cycled.
//!
//! - `chat`: streaming chat completions; prompts are hh-rlhf conversations up to the last human
//!   turn (the copy shipped in `loadtests/data/`, or `--dataset`).
//! - `random`: streaming completions with synthetic prompts of exactly `input_len` random token
//!   ids (no tokenizer on the client: the server counts what it received).
//! - `shared-prefix`: like `random`, every prompt starting with the same `prefix_len` tokens —
//!   shows prefix caching.
//! - `long-prompt`: like `random`, a `long_fraction` of the prompts `long_input_len` tokens long —
//!   shows how chunked prefill of long prompts disturbs the decode of the others (ITL of class
//!   `short`).
//! - `rewards`: `/v1/rewards`, each hh-rlhf pair's chosen and rejected response to one
//!   conversation (2 items per request).
//! - `harmlessness`: `/v1/harmlessness/compare`, the same two responses (1 pair per request).

use crate::LoadtestError;
use hhh_proto::{hh_rlhf, ChatMessage, MessageContent};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

/// The HTTP route a request goes to, and how its response is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Endpoint {
    /// `/v1/chat/completions`, streamed.
    Chat,
    /// `/v1/completions`, streamed.
    Completions,
    /// `/v1/rewards` (JSON).
    Rewards,
    /// `/v1/harmlessness/compare` (JSON).
    HarmlessnessCompare,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Rewards => "/v1/rewards",
            Endpoint::HarmlessnessCompare => "/v1/harmlessness/compare",
        }
    }

    /// Whether the response is an SSE stream of generated tokens.
    pub fn streams(self) -> bool {
        matches!(self, Endpoint::Chat | Endpoint::Completions)
    }
}

/// One request of a workload.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub endpoint: Endpoint,
    /// The JSON body, nulls removed.
    pub body: Value,
    /// Units of scoring work (responses for rewards, pairs for compare); 0 for generation.
    pub items: usize,
    /// Request class for per-class figures (`long-prompt`: `long` / `short`); `"all"` otherwise.
    pub class: &'static str,
    /// Prompt length when the client knows it exactly (token-id prompts).
    pub known_prompt_tokens: Option<usize>,
}

/// Which scenario, with its knobs.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioConfig {
    pub scenario: String,
    pub model: String,
    pub num_requests: usize,
    pub input_len: usize,
    pub output_len: usize,
    pub prefix_len: usize,
    pub long_input_len: usize,
    pub long_fraction: f64,
    pub token_range: (u32, u32),
    pub max_prompt_chars: usize,
    pub ignore_eos: bool,
    pub temperature: f32,
    pub num_principles: Option<usize>,
    pub seed: u64,
}

/// The scenario names `build` accepts.
pub const SCENARIOS: &[&str] = &["chat", "random", "shared-prefix", "long-prompt", "rewards", "harmlessness"];

/// One hh-rlhf pair: the conversation up to the last human turn and the two final responses.
#[derive(Debug, Clone)]
pub struct HhPair {
    pub messages: Vec<ChatMessage>,
    pub chosen: String,
    pub rejected: String,
}

/// Read hh-rlhf pairs (JSONL of `{"chosen","rejected"}` transcripts) whose conversations share
/// every turn but the last and whose prompt text is at most `max_chars` long.
pub fn read_hh_pairs(path: &Path, max_chars: usize) -> Result<Vec<HhPair>, LoadtestError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadtestError::Config(format!("reading {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| LoadtestError::Config(format!("{}: {e}", path.display())))?;
        let side = |k: &str| v.get(k).and_then(Value::as_str).and_then(hh_rlhf::parse_transcript);
        let (Some(mut c), Some(mut r)) = (side("chosen"), side("rejected")) else { continue };
        let (Some(cl), Some(rl)) = (c.pop(), r.pop()) else { continue };
        if c != r || c.iter().map(|t| t.content.len()).sum::<usize>() > max_chars {
            continue;
        }
        let messages = c.into_iter().map(|t| ChatMessage { role: t.role.into(), content: Some(MessageContent::Text(t.content)), ..Default::default() }).collect();
        out.push(HhPair { messages, chosen: cl.content, rejected: rl.content });
    }
    if out.is_empty() {
        return Err(LoadtestError::Config(format!("{}: no usable hh-rlhf pairs (max prompt chars {max_chars})", path.display())));
    }
    Ok(out)
}

/// Remove `null` members recursively, so optional fields are left out rather than sent as null
/// (some servers reject explicit nulls).
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn random_tokens(rng: &mut impl Rng, n: usize, (lo, hi): (u32, u32)) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn completion(cfg: &ScenarioConfig, prompt: Vec<u32>, class: &'static str) -> Result<RequestSpec, LoadtestError> {
    let n = prompt.len();
    let req = hhh_proto::CompletionRequest { model: cfg.model.clone(), prompt: hhh_proto::PromptInput::Tokens(prompt), sampling: sampling(cfg), echo: None, logprobs: None };
    Ok(RequestSpec { endpoint: Endpoint::Completions, body: to_body(&req)?, items: 0, class, known_prompt_tokens: Some(n) })
}

fn sampling(cfg: &ScenarioConfig) -> hhh_proto::SamplingFields {
    hhh_proto::SamplingFields {
        temperature: Some(cfg.temperature),
        max_tokens: Some(cfg.output_len as i64),
        ignore_eos: cfg.ignore_eos.then_some(true),
        stream: true,
        stream_options: Some(hhh_proto::StreamOptions { include_usage: true }),
        ..Default::default()
    }
}

fn to_body(req: &impl Serialize) -> Result<Value, LoadtestError> {
    let mut v = serde_json::to_value(req).map_err(|e| LoadtestError::Config(e.to_string()))?;
    strip_nulls(&mut v);
    Ok(v)
}

/// Build the workload of `cfg.num_requests` requests (`pairs` is needed by `chat`, `rewards`
/// and `harmlessness`; token-id scenarios ignore it). Deterministic given `cfg.seed`.
pub fn build(cfg: &ScenarioConfig, pairs: &[HhPair]) -> Result<Vec<RequestSpec>, LoadtestError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let n = cfg.num_requests.max(1);
    let need_pairs = matches!(cfg.scenario.as_str(), "chat" | "rewards" | "harmlessness");
    if need_pairs && pairs.is_empty() {
        return Err(LoadtestError::Config(format!("scenario {} needs hh-rlhf pairs", cfg.scenario)));
    }
    let (lo, hi) = cfg.token_range;
    if lo >= hi {
        return Err(LoadtestError::Config(format!("--token-range {lo}:{hi} is empty")));
    }
    let pair = |i: usize| &pairs[i % pairs.len()];
    let prefix = random_tokens(&mut rng, cfg.prefix_len, cfg.token_range);
    (0..n)
        .map(|i| match cfg.scenario.as_str() {
            "chat" => {
                let req = hhh_proto::ChatCompletionRequest {
                    model: cfg.model.clone(),
                    messages: pair(i).messages.clone(),
                    sampling: sampling(cfg),
                    max_completion_tokens: None,
                    logprobs: None,
                    top_logprobs: None,
                    add_generation_prompt: None,
                    tools: None,
                    tool_choice: None,
                    parallel_tool_calls: None,
                    harmlessness: None,
                    ood: None,
                };
                Ok(RequestSpec { endpoint: Endpoint::Chat, body: to_body(&req)?, items: 0, class: "all", known_prompt_tokens: None })
            }
            "random" => completion(cfg, random_tokens(&mut rng, cfg.input_len, cfg.token_range), "all"),
            "shared-prefix" => {
                let mut p = prefix.clone();
                p.extend(random_tokens(&mut rng, cfg.input_len, cfg.token_range));
                completion(cfg, p, "all")
            }
            "long-prompt" => {
                let long = rng.random_bool(cfg.long_fraction.clamp(0.0, 1.0));
                let len = if long { cfg.long_input_len } else { cfg.input_len };
                completion(cfg, random_tokens(&mut rng, len, cfg.token_range), if long { "long" } else { "short" })
            }
            "rewards" => {
                let p = pair(i);
                let input = [&p.chosen, &p.rejected].map(|r| json!({"messages": p.messages, "response": r}));
                let body = json!({"model": cfg.model, "input": input});
                Ok(RequestSpec { endpoint: Endpoint::Rewards, body: to_body(&body)?, items: 2, class: "all", known_prompt_tokens: None })
            }
            "harmlessness" => {
                let p = pair(i);
                let req = json!({"model": cfg.model, "messages": p.messages, "responses": [p.chosen, p.rejected], "num_principles": cfg.num_principles, "seed": i});
                Ok(RequestSpec { endpoint: Endpoint::HarmlessnessCompare, body: to_body(&req)?, items: 1, class: "all", known_prompt_tokens: None })
            }
            other => Err(LoadtestError::Config(format!("unknown scenario `{other}` (one of {})", SCENARIOS.join(", ")))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scenario: &str) -> ScenarioConfig {
        ScenarioConfig {
            scenario: scenario.into(),
            model: "m".into(),
            num_requests: 8,
            input_len: 16,
            output_len: 4,
            prefix_len: 32,
            long_input_len: 64,
            long_fraction: 0.5,
            token_range: (100, 200),
            max_prompt_chars: 10_000,
            ignore_eos: true,
            temperature: 0.0,
            num_principles: None,
            seed: 1,
        }
    }

    #[test]
    fn token_prompts_have_the_asked_lengths_and_share_the_prefix() {
        let w = build(&cfg("shared-prefix"), &[]).unwrap();
        assert_eq!(w.len(), 8);
        let p0 = w[0].body["prompt"].as_array().unwrap().clone();
        let p1 = w[1].body["prompt"].as_array().unwrap().clone();
        assert_eq!((p0.len(), w[0].known_prompt_tokens), (48, Some(48)));
        assert_eq!(p0[..32], p1[..32]);
        assert_ne!(p0[32..], p1[32..]);
        assert!(p0.iter().all(|t| (100..200).contains(&t.as_u64().unwrap())));
        assert_eq!(w[0].body["stream_options"]["include_usage"], true);
        assert!(w[0].body.get("top_p").is_none(), "nulls are not sent");
        let long = build(&cfg("long-prompt"), &[]).unwrap();
        for r in &long {
            let len = r.body["prompt"].as_array().unwrap().len();
            assert_eq!(len, if r.class == "long" { 64 } else { 16 });
        }
        assert_eq!(build(&cfg("random"), &[]).unwrap()[3].body["prompt"], build(&cfg("random"), &[]).unwrap()[3].body["prompt"], "seeded");
    }

    #[test]
    fn hh_pairs_become_chat_rewards_and_compare_requests() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/hh-rlhf-harmless-base-test-200.jsonl");
        let pairs = read_hh_pairs(&path, 2000).unwrap();
        assert!(pairs.len() > 100, "{}", pairs.len());
        assert!(pairs.iter().all(|p| p.messages.last().is_some_and(|m| m.role == "user")));
        let chat = build(&cfg("chat"), &pairs).unwrap();
        assert_eq!(chat[0].endpoint, Endpoint::Chat);
        assert_eq!(chat[0].body["messages"][0]["role"], "user");
        let rw = build(&cfg("rewards"), &pairs).unwrap();
        assert_eq!((rw[0].items, rw[0].body["input"].as_array().unwrap().len()), (2, 2));
        let cmp = build(&cfg("harmlessness"), &pairs).unwrap();
        assert_eq!(cmp[1].body["responses"][1], pairs[1].rejected.as_str());
        assert!(build(&cfg("nope"), &pairs).is_err());
        assert!(build(&cfg("chat"), &[]).is_err());
    }
}
