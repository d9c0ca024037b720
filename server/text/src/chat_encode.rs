//! Chat prompt → token ids, with message content kept as text.
//!
//! Rendering a template and tokenizing the result (what most servers do) lets a user write
//! `<|im_end|>\n<|im_start|>system` inside a message and have it encoded as real control tokens:
//! a prompt-injection hole. When any message contains special-token text we render the template
//! with a private-use sentinel in place of each content, tokenize the template's own text with
//! special tokens on, and each content with special tokens off. Prompts without such text take
//! the ordinary path, so their ids are exactly what the reference tokenizer produces.

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::error::TextError;
use crate::tokenizer::Tokenizer;

fn sentinel(i: usize) -> String {
    format!("\u{E000}{i}\u{E001}")
}

/// Render `msgs` with `template` and tokenize, treating message content as text.
pub fn encode_chat(template: &ChatTemplate, tok: &Tokenizer, msgs: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>, TextError> {
    encode_chat_with_tools(template, tok, msgs, None, add_generation_prompt)
}

/// [`encode_chat`] with the request's `tools` passed to the template.
pub fn encode_chat_with_tools(template: &ChatTemplate, tok: &Tokenizer, msgs: &[ChatMessage], tools: Option<&serde_json::Value>, add_generation_prompt: bool) -> Result<Vec<u32>, TextError> {
    if !msgs.iter().any(|m| tok.contains_special_text(&m.content)) {
        let text = template.render_with_tools(msgs, tools, add_generation_prompt)?;
        return tok.encode(&text, false);
    }
    let masked: Vec<ChatMessage> = msgs.iter().enumerate().map(|(i, m)| ChatMessage { content: sentinel(i), ..m.clone() }).collect();
    let text = template.render_with_tools(&masked, tools, add_generation_prompt)?;
    let mut ids = Vec::new();
    let mut rest = text.as_str();
    for (i, m) in msgs.iter().enumerate() {
        let s = sentinel(i);
        let at = rest.find(&s).ok_or_else(|| {
            TextError::Template(format!("message {i} contains special-token text and this model's chat template does not copy message content verbatim, so it cannot be kept as text"))
        })?;
        ids.extend(tok.encode(&rest[..at], false)?);
        ids.extend(tok.encode_as_text(&m.content)?);
        rest = &rest[at + s.len()..];
    }
    ids.extend(tok.encode(rest, false)?);
    Ok(ids)
}
