//! `POST /v1/completions`: string, list of strings, token ids, or lists of token ids; `echo`
//! with prompt logprobs (the primitive later scoring work builds on).

use crate::error::ApiError;
use crate::generate::{new_id, now, submit_choice, ChoiceEvent};
use crate::middleware::RequestCtx;
use crate::validate::{n_choices, read_json, resolve_max_tokens, sampling_params, stop_strings};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, StreamExt};
use hhh_engine::TokenLogprob;
use hhh_proto::*;
use hhh_text::Tokenizer;
use std::collections::BTreeMap;
use std::convert::Infallible;
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

pub async fn handler(State(st): State<AppState>, Extension(ctx): Extension<Arc<RequestCtx>>, body: Body) -> Result<Response, ApiError> {
    let req: CompletionRequest = read_json(body, &st.limits, COMPLETION_FIELDS).await?;
    st.check_generation_model(&req.model)?;
    let n = n_choices(&req.sampling, &st.limits)?;
    let stops = stop_strings(&req.sampling, &st.limits)?;
    let logprobs = match req.logprobs {
        Some(k) if k < 0 || k as usize > st.limits.max_logprobs => return Err(ApiError::invalid("logprobs", format!("`logprobs` must be between 0 and {}, got {k}.", st.limits.max_logprobs))),
        k => k.map(|k| k as usize),
    };
    let echo = req.echo.unwrap_or(false);
    let prompts = prompts(&st, req.prompt.clone()).await?;
    let info = st.engine.info();
    let mut streams = Vec::new();
    for (pi, p) in prompts.iter().enumerate() {
        let mt = resolve_max_tokens("max_tokens", "prompt", req.sampling.max_tokens, Some(16), p.ids.len(), info.max_model_len, info.num_blocks * info.block_size)?;
        let mut params = sampling_params(&req.sampling, mt, logprobs, st.tokenizer.vocab_size())?;
        if echo && logprobs.is_some() {
            params.prompt_logprobs = logprobs;
        }
        for i in 0..n {
            let mut pr = params.clone();
            pr.seed = pr.seed.wrapping_add(i as u64);
            streams.push(Box::pin(submit_choice(&st, &ctx, pi * n + i, p.ids.clone(), pr, stops.clone())?));
        }
    }
    let usage = crate::usage::UsageAcc::new(prompts.iter().map(|p| p.ids.len()).collect(), n);
    let id = new_id("cmpl");
    let texts: Vec<(Vec<u32>, String)> = prompts.into_iter().map(|p| (p.ids, p.text)).collect();
    let ctx = Ctx { st, id, model: req.model, n, echo, logprobs, prompts: texts };
    if req.sampling.stream {
        let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
        return Ok(([("x-accel-buffering", "no")], sse(ctx, stream::select_all(streams), usage, include_usage)).into_response());
    }
    let total = streams.len();
    let mut text: Vec<String> = (0..total).map(|i| if echo { ctx.prompts[i / n].1.clone() } else { String::new() }).collect();
    let mut lps: Vec<LogprobBuilder> = (0..total).map(|_| LogprobBuilder::new(0)).collect();
    let mut finish: Vec<Option<String>> = vec![None; total];
    let mut usage = usage;
    let mut all = stream::select_all(streams);
    while let Some(ev) = all.next().await {
        match ev {
            ChoiceEvent::PromptLogprobs { index, start, logprobs } => {
                let b = &mut lps[index];
                if start == 1 && b.lp.tokens.is_empty() {
                    b.push(&ctx.st.tokenizer, ctx.prompts[index / n].0[0], None, None);
                }
                for t in &logprobs {
                    b.push_lp(&ctx.st.tokenizer, t);
                }
            }
            ChoiceEvent::Delta { index, text: t, token } => {
                text[index].push_str(&t);
                if let (Some(_), Some(tk)) = (logprobs, token) {
                    lps[index].push_lp(&ctx.st.tokenizer, &tk);
                }
            }
            ChoiceEvent::Done { index, finish_reason, usage: u, error } => {
                if let Some(e) = error {
                    return Err(e);
                }
                finish[index] = Some(finish_reason);
                usage.add(index, &u);
            }
        }
    }
    let choices = (0..total).map(|i| CompletionChoice { index: i, text: std::mem::take(&mut text[i]), logprobs: logprobs.map(|_| lps[i].take()), finish_reason: finish[i].take() }).collect();
    Ok(Json(CompletionResponse { id: ctx.id, object: "text_completion".into(), created: now(), model: ctx.model, choices, usage: Some(usage.usage()) }).into_response())
}

struct Ctx {
    st: AppState,
    id: String,
    model: String,
    n: usize,
    echo: bool,
    logprobs: Option<usize>,
    prompts: Vec<(Vec<u32>, String)>,
}

fn sse(
    ctx: Ctx,
    mut events: impl futures::Stream<Item = ChoiceEvent> + Send + Unpin + 'static,
    mut usage: crate::usage::UsageAcc,
    include_usage: bool,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let created = now();
    let chunk = {
        let (id, model) = (ctx.id.clone(), ctx.model.clone());
        move |choices: Vec<CompletionChoice>, usage: Option<Usage>| {
            let c = CompletionResponse { id: id.clone(), object: "text_completion".into(), created, model: model.clone(), choices, usage };
            Event::default().data(serde_json::to_string(&c).unwrap_or_default())
        }
    };
    let s = async_stream::stream! {
        let total = ctx.prompts.len() * ctx.n;
        if ctx.echo && ctx.logprobs.is_none() {
            for i in 0..total {
                yield Ok(chunk(vec![CompletionChoice { index: i, text: ctx.prompts[i / ctx.n].1.clone(), logprobs: None, finish_reason: None }], None));
            }
        }
        while let Some(ev) = events.next().await {
            match ev {
                ChoiceEvent::PromptLogprobs { index, start, logprobs } => {
                    let mut b = LogprobBuilder::new(0);
                    let tok = &ctx.st.tokenizer;
                    if start == 1 {
                        b.push(tok, ctx.prompts[index / ctx.n].0[0], None, None);
                    }
                    for t in &logprobs {
                        b.push_lp(tok, t);
                    }
                    let text = b.lp.tokens.concat();
                    yield Ok(chunk(vec![CompletionChoice { index, text, logprobs: Some(b.take()), finish_reason: None }], None));
                }
                ChoiceEvent::Delta { index, text, token } => {
                    let lp = match (ctx.logprobs, token) {
                        (Some(_), Some(t)) => {
                            let mut b = LogprobBuilder::new(0);
                            b.push_lp(&ctx.st.tokenizer, &t);
                            Some(b.take())
                        }
                        _ => None,
                    };
                    if text.is_empty() && lp.is_none() {
                        continue;
                    }
                    yield Ok(chunk(vec![CompletionChoice { index, text, logprobs: lp, finish_reason: None }], None));
                }
                ChoiceEvent::Done { index, finish_reason, usage: u, error } => {
                    if let Some(e) = error {
                        yield Ok(Event::default().data(serde_json::to_string(&e.body()).unwrap_or_default()));
                    }
                    usage.add(index, &u);
                    yield Ok(chunk(vec![CompletionChoice { index, text: String::new(), logprobs: None, finish_reason: Some(finish_reason) }], None));
                }
            }
        }
        if include_usage {
            yield Ok(chunk(vec![], Some(usage.usage())));
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(s).keep_alive(KeepAlive::default())
}
