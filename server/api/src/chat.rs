//! `POST /v1/chat/completions`.

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
use hhh_text::{ChatTemplate, Tokenizer};
use std::convert::Infallible;
use std::sync::Arc;

pub const CHAT_FIELDS: &[&str] = &["messages", "max_completion_tokens", "logprobs", "top_logprobs", "add_generation_prompt", "harmlessness"];

/// Flatten OpenAI messages into template messages (text parts only).
pub fn template_messages(msgs: &[ChatMessage]) -> Result<Vec<hhh_text::ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must contain at least one message."));
    }
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant") {
                return Err(ApiError::invalid(&format!("messages[{i}].role"), format!("Unsupported role `{}` (system, developer, user, assistant).", m.role)));
            }
            let content = match &m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        if p.kind != "text" {
                            return Err(ApiError::invalid(&format!("messages[{i}].content"), format!("Content part type `{}` is not supported (text only).", p.kind)));
                        }
                        s.push_str(p.text.as_deref().unwrap_or_default());
                    }
                    s
                }
            };
            let role = if m.role == "developer" { "system".to_string() } else { m.role.clone() };
            Ok(hhh_text::ChatMessage { role, content })
        })
        .collect()
}

/// Render and tokenize a conversation off the async runtime.
pub async fn chat_prompt(st: &AppState, msgs: Vec<hhh_text::ChatMessage>, add_generation_prompt: bool) -> Result<Vec<u32>, ApiError> {
    render_chat(st.template.clone(), st.tokenizer.clone(), msgs, add_generation_prompt).await
}

/// [`chat_prompt`] for any model's template and tokenizer.
pub async fn render_chat(template: Arc<Option<ChatTemplate>>, tokenizer: Arc<Tokenizer>, msgs: Vec<hhh_text::ChatMessage>, add_generation_prompt: bool) -> Result<Vec<u32>, ApiError> {
    tokio::task::spawn_blocking(move || {
        let t = template.as_ref().as_ref().ok_or_else(|| ApiError::bad_request("This model has no chat template; use /v1/completions."))?;
        hhh_text::encode_chat(t, &tokenizer, &msgs, add_generation_prompt).map_err(|e| match e {
            hhh_text::TextError::Template(m) => ApiError::invalid("messages", m),
            e => ApiError::internal(e.to_string()),
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

pub fn chat_logprob(tok: &Tokenizer, t: &TokenLogprob) -> ChatTokenLogprob {
    let text = tok.token_text(t.token);
    ChatTokenLogprob {
        bytes: text.as_bytes().to_vec(),
        token: text,
        logprob: t.logprob,
        top_logprobs: t
            .top
            .iter()
            .map(|&(id, lp)| {
                let s = tok.token_text(id);
                TopLogprob { bytes: s.as_bytes().to_vec(), token: s, logprob: lp }
            })
            .collect(),
    }
}

pub async fn handler(State(st): State<AppState>, Extension(ctx): Extension<Arc<RequestCtx>>, body: Body) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = read_json(body, &st.limits, CHAT_FIELDS).await?;
    st.check_generation_model(&req.model)?;
    let msgs = template_messages(&req.messages)?;
    let n = match &req.harmlessness {
        Some(h) => crate::harmlessness::check_options(&st, h, req.sampling.n, st.limits.max_n)?,
        None => n_choices(&req.sampling, &st.limits)?,
    };
    let stops = stop_strings(&req.sampling, &st.limits)?;
    let top = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(k)) if k < 0 || k as usize > st.limits.max_logprobs => {
            return Err(ApiError::invalid("top_logprobs", format!("`top_logprobs` must be between 0 and {}, got {k}.", st.limits.max_logprobs)))
        }
        (false, Some(_)) => return Err(ApiError::invalid("top_logprobs", "`top_logprobs` requires `logprobs` to be true.")),
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, None) => None,
    };
    let prompt = chat_prompt(&st, msgs, req.add_generation_prompt.unwrap_or(true)).await?;
    let info = st.engine.info();
    let field = if req.max_completion_tokens.is_some() { "max_completion_tokens" } else { "max_tokens" };
    let mt = resolve_max_tokens(field, "messages", req.max_completion_tokens.or(req.sampling.max_tokens), None, prompt.len(), info.max_model_len, info.num_blocks * info.block_size)?;
    let params = sampling_params(&req.sampling, mt, top, st.tokenizer.vocab_size())?;
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let mut p = params.clone();
        p.seed = p.seed.wrapping_add(i as u64);
        streams.push(Box::pin(submit_choice(&st, &ctx, i, prompt.clone(), p, stops.clone())?));
    }
    let id = new_id("chatcmpl");
    let prompt_len = prompt.len();
    if req.sampling.stream && req.harmlessness.is_none() {
        let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
        return Ok(([("x-accel-buffering", "no")], sse(st, id, req.model, stream::select_all(streams), n, prompt_len, include_usage, top.is_some())).into_response());
    }
    let mut choices: Vec<ChatChoice> = (0..n)
        .map(|i| ChatChoice {
            index: i,
            message: AssistantMessage { role: "assistant".into(), content: String::new() },
            logprobs: top.map(|_| ChatLogprobs::default()),
            finish_reason: None,
            harmlessness: None,
        })
        .collect();
    let mut usage = crate::usage::UsageAcc::new(vec![prompt_len], n);
    let mut all = stream::select_all(streams);
    while let Some(ev) = all.next().await {
        match ev {
            ChoiceEvent::Delta { index, text, token } => {
                choices[index].message.content.push_str(&text);
                if let (Some(lp), Some(t)) = (choices[index].logprobs.as_mut(), token) {
                    lp.content.push(chat_logprob(&st.tokenizer, &t));
                }
            }
            ChoiceEvent::Done { index, finish_reason, usage: u, error } => {
                if let Some(e) = error {
                    return Err(e);
                }
                choices[index].finish_reason = Some(finish_reason);
                usage.add(index, &u);
            }
            ChoiceEvent::PromptLogprobs { .. } => {}
        }
    }
    let usage = usage.usage();
    let (choices, harmlessness) = match &req.harmlessness {
        Some(h) => {
            let (c, summary) = crate::harmlessness::select_choices(&st, &req.messages, h, choices).await?;
            (c, Some(summary))
        }
        None => (choices, None),
    };
    let resp = ChatCompletionResponse { id, object: "chat.completion".into(), created: now(), model: req.model, choices, usage, harmlessness };
    if req.sampling.stream {
        // With `harmlessness` the stream can only start after selection: the selected choices are
        // sent whole, then the finish reasons, the usage and the summary.
        let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
        return Ok(([("x-accel-buffering", "no")], selected_sse(resp, include_usage)).into_response());
    }
    Ok(Json(resp).into_response())
}

/// The SSE form of a finished (selected) chat response.
fn selected_sse(resp: ChatCompletionResponse, include_usage: bool) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let chunk = |choices: Vec<ChatChunkChoice>, usage: Option<Usage>, h: Option<HarmlessnessSummary>| {
        let c = ChatCompletionChunk { id: resp.id.clone(), object: "chat.completion.chunk".into(), created: resp.created, model: resp.model.clone(), choices, usage, harmlessness: h };
        Ok(Event::default().data(serde_json::to_string(&c).unwrap_or_default()))
    };
    let mut events = Vec::new();
    for c in &resp.choices {
        let d = ChatDelta { role: Some("assistant".into()), content: Some(c.message.content.clone()) };
        events.push(chunk(vec![ChatChunkChoice { index: c.index, delta: d, logprobs: c.logprobs.clone(), finish_reason: None, harmlessness: c.harmlessness.clone() }], None, None));
    }
    for c in &resp.choices {
        events.push(chunk(vec![ChatChunkChoice { index: c.index, delta: ChatDelta::default(), logprobs: None, finish_reason: c.finish_reason.clone(), harmlessness: None }], None, None));
    }
    events.push(chunk(vec![], include_usage.then(|| resp.usage.clone()), resp.harmlessness.clone()));
    events.push(Ok(Event::default().data("[DONE]")));
    Sse::new(stream::iter(events)).keep_alive(KeepAlive::default())
}

#[allow(clippy::too_many_arguments)]
fn sse(
    st: AppState,
    id: String,
    model: String,
    mut events: impl futures::Stream<Item = ChoiceEvent> + Send + Unpin + 'static,
    n: usize,
    prompt_len: usize,
    include_usage: bool,
    logprobs: bool,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let created = now();
    let chunk = move |choices: Vec<ChatChunkChoice>, usage: Option<Usage>| {
        let c = ChatCompletionChunk { id: id.clone(), object: "chat.completion.chunk".into(), created, model: model.clone(), choices, usage, harmlessness: None };
        Event::default().data(serde_json::to_string(&c).unwrap_or_default())
    };
    let s = async_stream::stream! {
        for i in 0..n {
            let d = ChatDelta { role: Some("assistant".into()), content: Some(String::new()) };
            yield Ok(chunk(vec![ChatChunkChoice { index: i, delta: d, logprobs: None, finish_reason: None, harmlessness: None }], None));
        }
        let mut usage = crate::usage::UsageAcc::new(vec![prompt_len], n);
        while let Some(ev) = events.next().await {
            match ev {
                ChoiceEvent::Delta { index, text, token } => {
                    let lp = if logprobs { token.map(|t| ChatLogprobs { content: vec![chat_logprob(&st.tokenizer, &t)] }) } else { None };
                    if text.is_empty() && lp.is_none() {
                        continue;
                    }
                    let d = ChatDelta { role: None, content: Some(text) };
                    yield Ok(chunk(vec![ChatChunkChoice { index, delta: d, logprobs: lp, finish_reason: None, harmlessness: None }], None));
                }
                ChoiceEvent::Done { index, finish_reason, usage: u, error } => {
                    if let Some(e) = error {
                        yield Ok(Event::default().data(serde_json::to_string(&e.body()).unwrap_or_default()));
                    }
                    usage.add(index, &u);
                    yield Ok(chunk(vec![ChatChunkChoice { index, delta: ChatDelta::default(), logprobs: None, finish_reason: Some(finish_reason), harmlessness: None }], None));
                }
                ChoiceEvent::PromptLogprobs { .. } => {}
            }
        }
        if include_usage {
            yield Ok(chunk(vec![], Some(usage.usage())));
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(s).keep_alive(KeepAlive::default())
}
