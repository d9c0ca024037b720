//! Prompt rendering, in one place: OpenAI messages → chat-template messages → token ids, the
//! (conversation, response) inputs of reward models, and the Constitutional AI transcript formats
//! (Bai et al. 2022: feedback questions, chain of thought, critique and revision). Nothing here
//! touches the engine; tokenization that may be slow runs off the async runtime.

use crate::error::ApiError;
use crate::state::Scorer;
use hhh_proto::{ChatMessage, MessageContent};
use hhh_text::{ChatTemplate, Tokenizer};
use std::sync::Arc;

/// Appended to a feedback question before chain-of-thought reasoning is generated.
pub const THINK: &str = "\nLet's think step by step:";
/// Appended after the reasoning; the options are scored after it.
pub const ANSWER: &str = "\nSo the answer is:";
/// Appended to a feedback question without reasoning; the options are scored after it.
pub const THE_ANSWER_IS: &str = "\nThe answer is:";

/// Flatten OpenAI messages into template messages (text parts only). Assistant `tool_calls`
/// reach the template with their arguments as objects (vLLM does the same: templates write
/// them with `tojson`); a `tool` message needs its `tool_call_id`.
pub fn template_messages(msgs: &[ChatMessage]) -> Result<Vec<hhh_text::ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must contain at least one message."));
    }
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::invalid(&format!("messages[{i}].role"), format!("Unsupported role `{}` (system, developer, user, assistant, tool).", m.role)));
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
            if role == "tool" && m.tool_call_id.is_none() {
                return Err(ApiError::invalid(&format!("messages[{i}].tool_call_id"), "A `tool` message needs `tool_call_id`."));
            }
            let tool_calls = match &m.tool_calls {
                Some(_) if role != "assistant" => {
                    return Err(ApiError::invalid(&format!("messages[{i}].tool_calls"), "Only assistant messages carry `tool_calls`."));
                }
                Some(calls) => Some(
                    calls
                        .iter()
                        .enumerate()
                        .map(|(j, c)| {
                            let args: serde_json::Value = serde_json::from_str(&c.function.arguments).map_err(|e| {
                                let f = format!("messages[{i}].tool_calls[{j}].function.arguments");
                                ApiError::invalid(&f, format!("`{f}` is not JSON: {e}"))
                            })?;
                            Ok(serde_json::json!({"id": c.id, "type": c.kind, "function": {"name": c.function.name, "arguments": args}}))
                        })
                        .collect::<Result<Vec<_>, ApiError>>()?,
                ),
                None => None,
            };
            Ok(hhh_text::ChatMessage { role, content, tool_calls, tool_call_id: m.tool_call_id.clone(), name: m.name.clone() })
        })
        .collect()
}

/// Render a conversation with a model's chat template and tokenize it, off the async runtime.
pub async fn render_chat(template: Arc<Option<ChatTemplate>>, tokenizer: Arc<Tokenizer>, msgs: Vec<hhh_text::ChatMessage>, add_generation_prompt: bool) -> Result<Vec<u32>, ApiError> {
    render_chat_with_tools(template, tokenizer, msgs, None, add_generation_prompt).await
}

/// [`render_chat`] with the request's `tools` passed to the template.
pub async fn render_chat_with_tools(
    template: Arc<Option<ChatTemplate>>,
    tokenizer: Arc<Tokenizer>,
    msgs: Vec<hhh_text::ChatMessage>,
    tools: Option<serde_json::Value>,
    add_generation_prompt: bool,
) -> Result<Vec<u32>, ApiError> {
    tokio::task::spawn_blocking(move || {
        let t = template.as_ref().as_ref().ok_or_else(|| ApiError::bad_request("This model has no chat template; use /v1/completions."))?;
        hhh_text::encode_chat_with_tools(t, &tokenizer, &msgs, tools.as_ref(), add_generation_prompt).map_err(|e| match e {
            hhh_text::TextError::Template(m) => ApiError::invalid("messages", m),
            e => ApiError::internal(e.to_string()),
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// Tokenize text (special-token text parsed; `add_special`: BOS by the tokenizer's rule), off
/// the async runtime.
pub async fn encode_text(tokenizer: &Arc<Tokenizer>, text: String, add_special: bool) -> Result<Vec<u32>, ApiError> {
    let tok = tokenizer.clone();
    tokio::task::spawn_blocking(move || tok.encode(&text, add_special)).await.map_err(|e| ApiError::internal(e.to_string()))?.map_err(|e| ApiError::internal(e.to_string()))
}

/// A raw-text prompt (the CAI transcripts): BOS by the tokenizer's rule, then the text as text
/// (special-token text is not parsed).
pub fn text_prompt(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, ApiError> {
    let mut ids: Vec<u32> = tok.bos_for_text().into_iter().collect();
    ids.extend(tok.encode_as_text(text).map_err(|e| ApiError::internal(e.to_string()))?);
    Ok(ids)
}

/// Render a (conversation, response) pair for a reward model: the response is the final
/// assistant turn, no generation prompt. Errors about `messages` name the input (`field`).
pub async fn render_pair(sc: &Scorer, field: &str, messages: &[ChatMessage], response: &str) -> Result<Vec<u32>, ApiError> {
    let mut msgs = template_messages(messages).map_err(|e| prefix_param(e, field))?;
    msgs.push(hhh_text::ChatMessage::new("assistant", response));
    render_chat(sc.template.clone(), sc.tokenizer.clone(), msgs, false).await.map_err(|e| prefix_param(e, field))
}

/// Errors about `messages` inside an input name the input (`input[2].messages`).
fn prefix_param(mut e: ApiError, field: &str) -> ApiError {
    if let Some(p) = &e.param {
        if !field.is_empty() && !p.starts_with(field) {
            e.param = Some(format!("{field}.{p}"));
        }
    }
    e
}

/// "Human: …\n\nAssistant: …" as in the paper's transcripts.
pub fn render_conversation(msgs: &[ChatMessage]) -> Result<String, ApiError> {
    let mut parts = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let who = match m.role.as_str() {
            "user" => "Human",
            "assistant" => "Assistant",
            "system" | "developer" => "System",
            r => return Err(ApiError::invalid(&format!("messages[{i}].role"), format!("Unsupported role `{r}` (system, developer, user, assistant)."))),
        };
        let text = match &m.content {
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(p)) => p.iter().filter_map(|p| p.text.clone()).collect::<Vec<_>>().join(""),
            None => String::new(),
        };
        parts.push(format!("{who}: {text}"));
    }
    Ok(parts.join("\n\n"))
}

/// The multiple-choice feedback question, up to the options.
pub fn question(few_shot: &str, conversation: &str, principle: &str, a: &str, b: &str) -> String {
    format!("{few_shot}Consider the following conversation between a human and an assistant:\n{conversation}\n{principle}\nOptions:\n(A) {a}\n(B) {b}")
}

/// The multiple-choice feedback prompt, up to "The answer is:".
pub fn feedback_prompt(few_shot: &str, conversation: &str, principle: &str, a: &str, b: &str) -> String {
    answer_prompt(&question(few_shot, conversation, principle, a, b))
}

/// A question (see [`question`]) followed by "The answer is:", where the options' logprobs are read.
pub fn answer_prompt(question: &str) -> String {
    format!("{question}{THE_ANSWER_IS}")
}

/// A question with its chain-of-thought reasoning, up to "So the answer is:".
pub fn with_reasoning(question: &str, reasoning: &str) -> String {
    format!("{question}{THINK} {reasoning}{ANSWER}")
}

/// The critique step of a revision round, up to "Critique:".
pub fn critique_prompt(conversation: &str, response: &str, critique_request: &str) -> String {
    format!("{conversation}\n\nAssistant: {response}\n\nCritiqueRequest: {critique_request}\n\nCritique:")
}

/// The revision step: the critique prompt, the critique, up to "Revision:".
pub fn revision_prompt(critique_prompt: &str, critique: &str, revision_request: &str) -> String {
    format!("{critique_prompt} {critique}\n\nRevisionRequest: {revision_request}\n\nRevision:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_shapes() {
        let p = feedback_prompt("", "Human: hi", "Which is kinder?", "yes", "no");
        assert_eq!(p, "Consider the following conversation between a human and an assistant:\nHuman: hi\nWhich is kinder?\nOptions:\n(A) yes\n(B) no\nThe answer is:");
        assert_eq!(with_reasoning("Q", "because"), "Q\nLet's think step by step: because\nSo the answer is:");
        let c = critique_prompt("Human: hi", "go away", "Is it rude?");
        assert_eq!(c, "Human: hi\n\nAssistant: go away\n\nCritiqueRequest: Is it rude?\n\nCritique:");
        assert_eq!(revision_prompt(&c, "Yes.", "Be kind."), format!("{c} Yes.\n\nRevisionRequest: Be kind.\n\nRevision:"));
    }

    #[test]
    fn conversation_roles() {
        let m = |role: &str, t: &str| ChatMessage { role: role.into(), content: Some(MessageContent::Text(t.into())), ..Default::default() };
        assert_eq!(render_conversation(&[m("system", "s"), m("user", "u"), m("assistant", "a")]).ok().as_deref(), Some("System: s\n\nHuman: u\n\nAssistant: a"));
        assert_eq!(render_conversation(&[m("ipython", "x")]).err().and_then(|e| e.param).as_deref(), Some("messages[0].role"));
        assert_eq!(template_messages(&[]).err().and_then(|e| e.param).as_deref(), Some("messages"));
    }
}
