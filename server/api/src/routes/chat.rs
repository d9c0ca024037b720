//! `POST /v1/chat/completions`: plan (messages, sampling, logprobs, the `harmlessness`
//! extension) → chat template → n choices through the response assembler; with `harmlessness`,
//! the candidates are scored and selected ([`crate::select`]) before anything is sent.

use crate::error::ApiError;
use crate::jobs::ChoiceEvent;
use crate::middleware::RequestCtx;
use crate::prompt::{render_chat_with_tools, template_messages};
use crate::respond::{collect, json_data, new_id, now, sse, sse_response, Choices, Framer, DONE};
use crate::select::{self, SelectionPlan};
use crate::state::AppState;
use crate::tools::{self, ToolPlan, ToolStream};
use crate::validate::{n_choices, read_json, resolve_max_tokens, sampling_params, stop_strings};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hhh_engine::{SamplingParams, TokenLogprob};
use hhh_proto::*;
use hhh_text::Tokenizer;
use std::sync::Arc;

pub const CHAT_FIELDS: &[&str] = &["messages", "max_completion_tokens", "logprobs", "top_logprobs", "add_generation_prompt", "harmlessness", "tools", "tool_choice", "parallel_tool_calls", "ood"];

/// One token's logprobs in the chat format.
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

/// A validated chat request: everything the engine needs, decided before the first submission.
struct Plan {
    model: String,
    prompt: Vec<u32>,
    params: SamplingParams,
    stops: Vec<String>,
    n: usize,
    /// `Some(k)`: logprobs with k alternatives.
    top: Option<usize>,
    stream: bool,
    include_usage: bool,
    /// The `harmlessness` extension.
    selection: Option<SelectionPlan>,
    messages: Vec<ChatMessage>,
    /// `tools` and `tool_choice`.
    tools: Option<Arc<ToolPlan>>,
}

async fn plan(st: &AppState, req: ChatCompletionRequest) -> Result<Plan, ApiError> {
    st.check_generation_model(&req.model)?;
    let tool_plan = tools::plan(st.grammars.as_deref(), st.tool_format, &req)?;
    if tool_plan.is_some() && req.harmlessness.is_some() {
        return Err(ApiError::invalid("harmlessness", "The `harmlessness` extension cannot be combined with `tools`."));
    }
    let msgs = tools::adapt_messages(tool_plan.as_ref(), st.tool_format.is_some(), template_messages(&req.messages)?);
    let selection = match &req.harmlessness {
        Some(h) => Some(select::plan(st, h, &req.messages, req.sampling.n, st.limits.max_n)?),
        None => None,
    };
    let n = match &selection {
        Some(s) => s.candidates,
        None => n_choices(&req.sampling, &st.limits)?,
    };
    let sampling = st.generation_defaults.apply(&req.sampling);
    let stops = stop_strings(&sampling, &st.limits)?;
    let top = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(k)) if k < 0 || k as usize > st.limits.max_logprobs => {
            return Err(ApiError::invalid("top_logprobs", format!("`top_logprobs` must be between 0 and {}, got {k}.", st.limits.max_logprobs)))
        }
        (false, Some(_)) => return Err(ApiError::invalid("top_logprobs", "`top_logprobs` requires `logprobs` to be true.")),
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, None) => None,
    };
    let template_tools = tool_plan.as_ref().and_then(|t| t.template_tools.clone());
    let prompt = render_chat_with_tools(st.template.clone(), st.tokenizer.clone(), msgs, template_tools, req.add_generation_prompt.unwrap_or(true)).await?;
    let info = st.engine.info();
    let field = if req.max_completion_tokens.is_some() { "max_completion_tokens" } else { "max_tokens" };
    let default_len = st.generation_defaults.max_tokens.and_then(|m| usize::try_from(m).ok());
    let mt = resolve_max_tokens(field, "messages", req.max_completion_tokens.or(sampling.max_tokens), default_len, prompt.len(), info.max_model_len, info.num_blocks * info.block_size)?;
    let mut params = sampling_params(&sampling, mt, top, st.tokenizer.vocab_size())?;
    params.constraint = crate::structured::constraint(st.grammars.as_deref(), sampling.response_format.as_ref(), crate::structured::requested(&sampling)?.as_ref())?;
    if let Some(c) = tool_plan.as_ref().and_then(|t| t.constraint.clone()) {
        params.constraint = Some(c);
    }
    let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
    Ok(Plan { model: req.model, prompt, params, stops, n, top, stream: req.sampling.stream, include_usage, selection, messages: req.messages, tools: tool_plan.map(Arc::new) })
}

pub async fn handler(State(st): State<AppState>, Extension(ctx): Extension<Arc<RequestCtx>>, body: Body) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = read_json(body, &st.limits, CHAT_FIELDS).await?;
    let want_ood = req.ood.unwrap_or(false);
    let plan = plan(&st, req).await?;
    let ood = if want_ood { Some(ood_score(&st, &plan.prompt).await?) } else { None };
    let choices = Choices::submit(&st, &ctx, vec![(plan.prompt.clone(), plan.params.clone())], plan.n, &plan.stops)?;
    let streams = match plan.tools {
        Some(_) => (0..plan.n).map(|_| ToolStream::default()).collect(),
        None => Vec::new(),
    };
    let framer = ChatFramer {
        tok: st.tokenizer.clone(),
        id: new_id("chatcmpl"),
        created: now(),
        model: plan.model.clone(),
        n: plan.n,
        top: plan.top,
        choices: Vec::new(),
        tools: plan.tools.clone(),
        streams,
        weight_version: None,
        ood: ood.clone(),
    };
    if plan.stream && plan.selection.is_none() {
        return Ok(sse(choices, framer, plan.include_usage));
    }
    let (framer, usage) = collect(choices, framer.with_choices()).await?;
    let (choices, harmlessness) = match plan.selection {
        Some(sel) => {
            let (c, summary) = select::select(&st, sel, &plan.messages, framer.choices).await?;
            (c, Some(summary))
        }
        None => (framer.choices, None),
    };
    let system_fingerprint = framer.weight_version.map(hhh_proto::fingerprint);
    let resp = ChatCompletionResponse { id: framer.id, object: "chat.completion".into(), created: framer.created, model: plan.model, choices, usage, harmlessness, system_fingerprint, ood };
    if plan.stream {
        return Ok(sse_response(futures::stream::iter(selected_payloads(resp, plan.include_usage))));
    }
    Ok(Json(resp).into_response())
}

/// Chat chunks and the aggregated chat body.
struct ChatFramer {
    tok: Arc<Tokenizer>,
    id: String,
    created: u64,
    model: String,
    n: usize,
    top: Option<usize>,
    /// Non-streaming: the choices so far.
    choices: Vec<ChatChoice>,
    /// Tool calls are read out of the text when set.
    tools: Option<Arc<ToolPlan>>,
    /// Streaming with tools: each choice's state (empty without tools).
    streams: Vec<ToolStream>,
    /// The newest weight version of the choices finished so far (`system_fingerprint`).
    weight_version: Option<u64>,
    /// The prompt's OOD score (`ood: true`), sent once, on the first chunk.
    ood: Option<hhh_proto::OodItem>,
}

/// The OOD score of a chat prompt (`ood: true`): its hidden state at the statistics' layer.
async fn ood_score(st: &AppState, prompt: &[u32]) -> Result<hhh_proto::OodItem, ApiError> {
    let stats = st.ood.clone().ok_or_else(|| ApiError::invalid("ood", "`ood` needs OOD statistics: start the server with --ood-stats FILE (from `hhh-server fit-ood`)."))?;
    if stats.prompt_format != hhh_proto::PromptFormat::Chat {
        return Err(ApiError::invalid("ood", "`ood` needs statistics fitted on chat-format prompts (`fit-ood --format chat`)."));
    }
    let fm = st.feedback_model(None)?;
    let h = crate::ood::hidden_states(&fm, stats.layer, &[prompt.to_vec()]).await?;
    Ok(stats.item(0, h.first().map(Vec::as_slice).unwrap_or_default()))
}

impl ChatFramer {
    fn with_choices(mut self) -> Self {
        let top = self.top;
        self.choices = (0..self.n)
            .map(|i| ChatChoice {
                index: i,
                message: AssistantMessage { role: "assistant".into(), content: Some(String::new()), tool_calls: None },
                logprobs: top.map(|_| ChatLogprobs::default()),
                finish_reason: None,
                harmlessness: None,
            })
            .collect();
        self
    }

    fn chunk_of(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
        let system_fingerprint = self.weight_version.map(hhh_proto::fingerprint);
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            harmlessness: None,
            system_fingerprint,
            ood: None,
        }
    }
}

impl Framer for ChatFramer {
    type Chunk = ChatCompletionChunk;

    fn opening(&mut self) -> Vec<ChatCompletionChunk> {
        let mut out: Vec<ChatCompletionChunk> = (0..self.n)
            .map(|i| {
                let d = ChatDelta { role: Some("assistant".into()), content: Some(String::new()), tool_calls: None };
                self.chunk_of(vec![ChatChunkChoice { index: i, delta: d, logprobs: None, finish_reason: None, harmlessness: None }], None)
            })
            .collect();
        if let Some(first) = out.first_mut() {
            first.ood = self.ood.take();
        }
        out
    }

    fn chunk(&mut self, ev: &ChoiceEvent) -> Option<ChatCompletionChunk> {
        match ev {
            ChoiceEvent::Delta { index, text, token } => {
                let lp = match (self.top, token) {
                    (Some(_), Some(t)) => Some(ChatLogprobs { content: vec![chat_logprob(&self.tok, t)] }),
                    _ => None,
                };
                let d = match &self.tools {
                    Some(plan) => {
                        let piece = self.streams[*index].push(plan, text);
                        ChatDelta { role: None, content: piece.content, tool_calls: piece.tool_calls }
                    }
                    None => ChatDelta { role: None, content: Some(text.clone()), tool_calls: None },
                };
                if d.content.as_deref().is_none_or(str::is_empty) && d.tool_calls.is_none() && lp.is_none() {
                    return None;
                }
                Some(self.chunk_of(vec![ChatChunkChoice { index: *index, delta: d, logprobs: lp, finish_reason: None, harmlessness: None }], None))
            }
            ChoiceEvent::Done { index, finish_reason, usage, .. } => {
                self.weight_version = self.weight_version.max(Some(usage.weight_version));
                let (delta, reason) = match &self.tools {
                    Some(plan) => {
                        let (piece, has_calls) = self.streams[*index].finish(plan);
                        (ChatDelta { role: None, content: piece.content, tool_calls: piece.tool_calls }, plan.finish_reason(finish_reason, has_calls))
                    }
                    None => (ChatDelta::default(), finish_reason.clone()),
                };
                Some(self.chunk_of(vec![ChatChunkChoice { index: *index, delta, logprobs: None, finish_reason: Some(reason), harmlessness: None }], None))
            }
            ChoiceEvent::PromptLogprobs { .. } => None,
        }
    }

    fn usage_chunk(&mut self, usage: Usage) -> ChatCompletionChunk {
        self.chunk_of(vec![], Some(usage))
    }

    fn absorb(&mut self, ev: ChoiceEvent) {
        match ev {
            ChoiceEvent::Delta { index, text, token } => {
                let tok = self.tok.clone();
                let c = &mut self.choices[index];
                c.message.content.get_or_insert_with(String::new).push_str(&text);
                if let (Some(lp), Some(t)) = (c.logprobs.as_mut(), token) {
                    lp.content.push(chat_logprob(&tok, &t));
                }
            }
            ChoiceEvent::Done { index, finish_reason, usage, .. } => {
                self.weight_version = self.weight_version.max(Some(usage.weight_version));
                let c = &mut self.choices[index];
                let reason = match &self.tools {
                    Some(plan) => {
                        let out = plan.outcome(c.message.content.as_deref().unwrap_or_default());
                        let has_calls = !out.calls.is_empty();
                        if has_calls {
                            c.message.tool_calls = Some(plan.wire_calls(&out.calls));
                            c.message.content = (!out.content.is_empty()).then_some(out.content);
                        } else {
                            c.message.content = Some(out.content);
                        }
                        plan.finish_reason(&finish_reason, has_calls)
                    }
                    None => finish_reason,
                };
                c.finish_reason = Some(reason);
            }
            ChoiceEvent::PromptLogprobs { .. } => {}
        }
    }
}

/// The SSE payloads of a finished (selected) response: with `harmlessness` the stream can only
/// start after selection, so the selected choices are sent whole, then the finish reasons, the
/// usage and the summary.
fn selected_payloads(resp: ChatCompletionResponse, include_usage: bool) -> Vec<String> {
    let mut ood = resp.ood.clone();
    let mut chunk = |choices: Vec<ChatChunkChoice>, usage: Option<Usage>, h: Option<HarmlessnessSummary>| {
        json_data(&ChatCompletionChunk {
            id: resp.id.clone(),
            object: "chat.completion.chunk".into(),
            created: resp.created,
            model: resp.model.clone(),
            choices,
            usage,
            harmlessness: h,
            system_fingerprint: resp.system_fingerprint.clone(),
            // The OOD score rides on the first chunk.
            ood: ood.take(),
        })
    };
    let mut out = Vec::new();
    for c in &resp.choices {
        let d = ChatDelta { role: Some("assistant".into()), content: c.message.content.clone(), tool_calls: None };
        out.push(chunk(vec![ChatChunkChoice { index: c.index, delta: d, logprobs: c.logprobs.clone(), finish_reason: None, harmlessness: c.harmlessness.clone() }], None, None));
    }
    for c in &resp.choices {
        out.push(chunk(vec![ChatChunkChoice { index: c.index, delta: ChatDelta::default(), logprobs: None, finish_reason: c.finish_reason.clone(), harmlessness: None }], None, None));
    }
    out.push(chunk(vec![], include_usage.then(|| resp.usage.clone()), resp.harmlessness.clone()));
    out.push(DONE.to_string());
    out
}
