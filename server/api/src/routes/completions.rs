//! `POST /v1/completions`: string, list of strings, token ids, or lists of token ids; `echo`
//! with prompt logprobs (the primitive later scoring work builds on). Every prompt is tokenized
//! and checked (length, `max_tokens`, sampling) before the first choice is submitted.

use crate::error::ApiError;
use crate::jobs::ChoiceEvent;
use crate::middleware::RequestCtx;
use crate::respond::{collect, new_id, now, sse, Choices, Framer};
use crate::state::AppState;
use crate::validate::{n_choices, read_json, resolve_max_tokens, sampling_params, stop_strings};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hhh_engine::{SamplingParams, TokenLogprob};
use hhh_proto::*;
use hhh_text::Tokenizer;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const COMPLETION_FIELDS: &[&str] = &["prompt", "echo", "logprobs"];

/// Accumulates legacy-format logprobs, keeping `text_offset` consistent with the text.
struct LogprobBuilder {
    lp: CompletionLogprobs,
    offset: usize,
}

impl LogprobBuilder {
    fn new(offset: usize) -> Self {
        Self { lp: CompletionLogprobs::default(), offset }
    }
    fn push(&mut self, tok: &Tokenizer, token: u32, logprob: Option<f32>, top: Option<&[(u32, f32)]>) {
        let text = tok.token_text(token);
        self.lp.text_offset.push(self.offset);
        self.offset += text.len();
        self.lp.tokens.push(text);
        self.lp.token_logprobs.push(logprob);
        self.lp.top_logprobs.push(top.map(|t| t.iter().map(|&(id, l)| (tok.token_text(id), l)).collect::<BTreeMap<_, _>>()));
    }
    fn push_lp(&mut self, tok: &Tokenizer, t: &TokenLogprob) {
        self.push(tok, t.token, Some(t.logprob), Some(&t.top));
    }
    fn take(&mut self) -> CompletionLogprobs {
        std::mem::take(&mut self.lp)
    }
}

/// One prompt: its ids and its text (for `echo`).
struct Prompt {
    ids: Vec<u32>,
    text: String,
}

async fn prompts(st: &AppState, input: PromptInput) -> Result<Vec<Prompt>, ApiError> {
    let vocab = st.tokenizer.vocab_size();
    let tok = st.tokenizer.clone();
    tokio::task::spawn_blocking(move || {
        let from_text = |t: String| -> Result<Prompt, ApiError> {
            let ids = tok.encode(&t, true).map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(Prompt { ids, text: t })
        };
        let from_ids = |ids: Vec<u32>| -> Result<Prompt, ApiError> {
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::invalid("prompt", format!("Token id {bad} is outside the vocabulary (size {vocab}).")));
            }
            let text = tok.decode(&ids, false).map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(Prompt { ids, text })
        };
        let out: Vec<Prompt> = match input {
            PromptInput::Text(t) => vec![from_text(t)?],
            PromptInput::Texts(v) => v.into_iter().map(from_text).collect::<Result<_, _>>()?,
            PromptInput::Tokens(ids) => vec![from_ids(ids)?],
            PromptInput::TokenLists(v) => v.into_iter().map(from_ids).collect::<Result<_, _>>()?,
        };
        if out.is_empty() || out.iter().any(|p| p.ids.is_empty()) {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty."));
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// A validated completions request: every prompt's engine job, decided before any submission.
struct Plan {
    model: String,
    /// Per prompt: its ids, its text (for `echo`) and its sampling parameters.
    prompts: Vec<(Prompt, SamplingParams)>,
    stops: Vec<String>,
    n: usize,
    echo: bool,
    logprobs: Option<usize>,
    stream: bool,
    include_usage: bool,
}

async fn plan(st: &AppState, req: CompletionRequest) -> Result<Plan, ApiError> {
    st.check_generation_model(&req.model)?;
    let n = n_choices(&req.sampling, &st.limits)?;
    let sampling = st.generation_defaults.apply(&req.sampling);
    let stops = stop_strings(&sampling, &st.limits)?;
    let logprobs = match req.logprobs {
        Some(k) if k < 0 || k as usize > st.limits.max_logprobs => return Err(ApiError::invalid("logprobs", format!("`logprobs` must be between 0 and {}, got {k}.", st.limits.max_logprobs))),
        k => k.map(|k| k as usize),
    };
    let echo = req.echo.unwrap_or(false);
    let constraint = crate::structured::constraint(st.grammars.as_deref(), sampling.response_format.as_ref(), crate::structured::requested(&sampling)?.as_ref())?;
    let info = st.engine.info();
    let mut planned = Vec::new();
    for p in prompts(st, req.prompt).await? {
        let default_len = st.generation_defaults.max_tokens.and_then(|m| usize::try_from(m).ok()).unwrap_or(16);
        let mt = resolve_max_tokens("max_tokens", "prompt", sampling.max_tokens, Some(default_len), p.ids.len(), info.max_model_len, info.num_blocks * info.block_size)?;
        let mut params = sampling_params(&sampling, mt, logprobs, st.tokenizer.vocab_size())?;
        params.constraint = constraint.clone();
        if echo && logprobs.is_some() {
            params.prompt_logprobs = logprobs;
        }
        planned.push((p, params));
    }
    let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
    Ok(Plan { model: req.model, prompts: planned, stops, n, echo, logprobs, stream: req.sampling.stream, include_usage })
}

pub async fn handler(State(st): State<AppState>, Extension(ctx): Extension<Arc<RequestCtx>>, body: Body) -> Result<Response, ApiError> {
    let req: CompletionRequest = read_json(body, &st.limits, COMPLETION_FIELDS).await?;
    let plan = plan(&st, req).await?;
    let jobs = plan.prompts.iter().map(|(p, params)| (p.ids.clone(), params.clone())).collect();
    let choices = Choices::submit(&st, &ctx, jobs, plan.n, &plan.stops)?;
    let total = plan.prompts.len() * plan.n;
    let prompts: Vec<Prompt> = plan.prompts.into_iter().map(|p| p.0).collect();
    let framer = CompletionFramer {
        tok: st.tokenizer.clone(),
        id: new_id("cmpl"),
        created: now(),
        model: plan.model,
        n: plan.n,
        echo: plan.echo,
        logprobs: plan.logprobs,
        text: (0..total).map(|i| if plan.echo { prompts[i / plan.n].text.clone() } else { String::new() }).collect(),
        lps: (0..total).map(|_| LogprobBuilder::new(0)).collect(),
        finish: vec![None; total],
        prompts,
        weight_version: None,
    };
    if plan.stream {
        return Ok(sse(choices, framer, plan.include_usage));
    }
    let (mut f, usage) = collect(choices, framer).await?;
    let choices = (0..total).map(|i| CompletionChoice { index: i, text: std::mem::take(&mut f.text[i]), logprobs: f.logprobs.map(|_| f.lps[i].take()), finish_reason: f.finish[i].take() }).collect();
    let system_fingerprint = f.weight_version.map(hhh_proto::fingerprint);
    Ok(Json(CompletionResponse { id: f.id, object: "text_completion".into(), created: f.created, model: f.model, choices, usage: Some(usage), system_fingerprint }).into_response())
}

/// Completion chunks and the aggregated completion body (choice `i` is prompt `i / n`'s).
struct CompletionFramer {
    tok: Arc<Tokenizer>,
    id: String,
    created: u64,
    model: String,
    n: usize,
    echo: bool,
    logprobs: Option<usize>,
    prompts: Vec<Prompt>,
    /// Non-streaming: text, logprobs and finish reason of every choice so far.
    text: Vec<String>,
    lps: Vec<LogprobBuilder>,
    finish: Vec<Option<String>>,
    /// The newest weight version of the choices finished so far (`system_fingerprint`).
    weight_version: Option<u64>,
}

impl CompletionFramer {
    fn chunk_of(&self, choice: Option<CompletionChoice>, usage: Option<Usage>) -> CompletionResponse {
        let system_fingerprint = self.weight_version.map(hhh_proto::fingerprint);
        CompletionResponse { id: self.id.clone(), object: "text_completion".into(), created: self.created, model: self.model.clone(), choices: choice.into_iter().collect(), usage, system_fingerprint }
    }

    /// Prompt logprobs of choice `index` from prompt position `start` into `b` (position 0 has
    /// no logprob: it is listed with `null`).
    fn prompt_logprobs(&self, b: &mut LogprobBuilder, index: usize, start: usize, logprobs: &[TokenLogprob]) {
        if start == 1 && b.lp.tokens.is_empty() {
            b.push(&self.tok, self.prompts[index / self.n].ids[0], None, None);
        }
        for t in logprobs {
            b.push_lp(&self.tok, t);
        }
    }
}

impl Framer for CompletionFramer {
    type Chunk = CompletionResponse;

    fn opening(&mut self) -> Vec<CompletionResponse> {
        if !self.echo || self.logprobs.is_some() {
            return Vec::new();
        }
        (0..self.prompts.len() * self.n).map(|i| self.chunk_of(Some(CompletionChoice { index: i, text: self.prompts[i / self.n].text.clone(), logprobs: None, finish_reason: None }), None)).collect()
    }

    fn chunk(&mut self, ev: &ChoiceEvent) -> Option<CompletionResponse> {
        let choice = match ev {
            ChoiceEvent::PromptLogprobs { index, start, logprobs } => {
                let mut b = LogprobBuilder::new(0);
                self.prompt_logprobs(&mut b, *index, *start, logprobs);
                CompletionChoice { index: *index, text: b.lp.tokens.concat(), logprobs: Some(b.take()), finish_reason: None }
            }
            ChoiceEvent::Delta { index, text, token } => {
                let lp = match (self.logprobs, token) {
                    (Some(_), Some(t)) => {
                        let mut b = LogprobBuilder::new(0);
                        b.push_lp(&self.tok, t);
                        Some(b.take())
                    }
                    _ => None,
                };
                if text.is_empty() && lp.is_none() {
                    return None;
                }
                CompletionChoice { index: *index, text: text.clone(), logprobs: lp, finish_reason: None }
            }
            ChoiceEvent::Done { index, finish_reason, usage, .. } => {
                self.weight_version = self.weight_version.max(Some(usage.weight_version));
                CompletionChoice { index: *index, text: String::new(), logprobs: None, finish_reason: Some(finish_reason.clone()) }
            }
        };
        Some(self.chunk_of(Some(choice), None))
    }

    fn usage_chunk(&mut self, usage: Usage) -> CompletionResponse {
        self.chunk_of(None, Some(usage))
    }

    fn absorb(&mut self, ev: ChoiceEvent) {
        match ev {
            ChoiceEvent::PromptLogprobs { index, start, logprobs } => {
                let mut b = std::mem::replace(&mut self.lps[index], LogprobBuilder::new(0));
                self.prompt_logprobs(&mut b, index, start, &logprobs);
                self.lps[index] = b;
            }
            ChoiceEvent::Delta { index, text, token } => {
                self.text[index].push_str(&text);
                if let (Some(_), Some(t)) = (self.logprobs, token) {
                    self.lps[index].push_lp(&self.tok, &t);
                }
            }
            ChoiceEvent::Done { index, finish_reason, usage, .. } => {
                self.weight_version = self.weight_version.max(Some(usage.weight_version));
                self.finish[index] = Some(finish_reason);
            }
        }
    }
}
