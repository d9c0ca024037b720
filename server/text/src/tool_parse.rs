//! Tool calls in a model's own output format, as vLLM's tool parsers read them:
//!
//! - `hermes` (Qwen2.5, Hermes 2/3): `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`,
//!   one block per call, after optional content;
//! - `llama3_json` (Llama 3.1/3.2/3.3): the whole output is `{"name": ..., "parameters": {...}}`
//!   (optionally after `<|python_tag|>`), several calls separated by `;`;
//! - `mistral`: `[TOOL_CALLS]` then a JSON array of `{"name": ..., "arguments": {...}}`.
//!
//! Output that does not parse is content (vLLM does the same): a malformed call is never
//! invented into a half-call.

use serde_json::Value;

/// A model family's tool-call output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallFormat {
    Hermes,
    Llama3Json,
    Mistral,
}

/// One parsed call; `arguments` is JSON text (the wire format's `function.arguments`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: String,
}

/// A finished output split into content and calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// Text outside the calls (the whole output when nothing parsed).
    pub content: String,
    pub calls: Vec<ParsedCall>,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_MARK: &str = "[TOOL_CALLS]";
const PYTHON_TAG: &str = "<|python_tag|>";

impl ToolCallFormat {
    /// The format a chat template teaches its model, from the markers it writes.
    pub fn detect(template: &str) -> Option<Self> {
        if template.contains(HERMES_OPEN) {
            Some(Self::Hermes)
        } else if template.contains(MISTRAL_MARK) {
            Some(Self::Mistral)
        } else if template.contains("\"parameters\": ") || template.contains(PYTHON_TAG) {
            Some(Self::Llama3Json)
        } else {
            None
        }
    }

    /// vLLM's `--tool-call-parser` names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "hermes" => Some(Self::Hermes),
            "llama3_json" => Some(Self::Llama3Json),
            "mistral" => Some(Self::Mistral),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hermes => "hermes",
            Self::Llama3Json => "llama3_json",
            Self::Mistral => "mistral",
        }
    }

    /// Streaming: of the output so far, how many bytes may be sent as content now, and whether a
    /// call has started (everything from there on is held until the end). A tail that may be the
    /// start of a marker is held back. The answer depends only on `text`, so it is stable as the
    /// output grows.
    pub fn streamable(self, text: &str) -> (usize, bool) {
        match self {
            Self::Hermes => marker_split(text, HERMES_OPEN),
            Self::Mistral => marker_split(text, MISTRAL_MARK),
            Self::Llama3Json => {
                let t = text.trim_start();
                if t.starts_with('{') || t.starts_with(PYTHON_TAG) {
                    (0, true)
                } else if t.is_empty() || PYTHON_TAG.starts_with(t) {
                    (0, false)
                } else {
                    (text.len(), false)
                }
            }
        }
    }

    /// Split a finished output into content and calls.
    pub fn parse(self, text: &str) -> Parsed {
        let calls = match self {
            Self::Hermes => parse_hermes(text),
            Self::Mistral => text.find(MISTRAL_MARK).and_then(|i| parse_mistral(&text[i + MISTRAL_MARK.len()..]).map(|c| (text[..i].to_string(), c))),
            Self::Llama3Json => parse_llama3(text).map(|c| (String::new(), c)),
        };
        match calls {
            Some((content, calls)) if !calls.is_empty() => Parsed { content, calls },
            _ => Parsed { content: text.to_string(), calls: Vec::new() },
        }
    }
}

/// (bytes before the marker or before a tail that may begin it, marker found).
fn marker_split(text: &str, marker: &str) -> (usize, bool) {
    if let Some(i) = text.find(marker) {
        return (i, true);
    }
    let hold = (1..marker.len().min(text.len() + 1)).rev().find(|&k| text.is_char_boundary(text.len() - k) && marker.starts_with(&text[text.len() - k..])).unwrap_or(0);
    (text.len() - hold, false)
}

/// A call object: `name` and `arguments` (or `parameters`), arguments an object or its text.
fn call_of(v: &Value) -> Option<ParsedCall> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").or_else(|| v.get("parameters")).cloned().unwrap_or(Value::Object(Default::default()));
    let arguments = match args {
        Value::String(s) => serde_json::from_str::<Value>(&s).ok().filter(Value::is_object)?.to_string(),
        Value::Object(_) => args.to_string(),
        _ => return None,
    };
    Some(ParsedCall { name, arguments })
}

fn parse_hermes(text: &str) -> Option<(String, Vec<ParsedCall>)> {
    let first = text.find(HERMES_OPEN)?;
    let mut calls = Vec::new();
    let mut rest = &text[first..];
    while let Some(i) = rest.find(HERMES_OPEN) {
        let body = &rest[i + HERMES_OPEN.len()..];
        let (inner, next) = match body.find(HERMES_CLOSE) {
            Some(j) => (&body[..j], &body[j + HERMES_CLOSE.len()..]),
            // An unclosed last call (the model stopped at EOS): parse what is there.
            None => (body, ""),
        };
        calls.push(call_of(&serde_json::from_str(inner.trim()).ok()?)?);
        rest = next;
    }
    Some((text[..first].to_string(), calls))
}

fn parse_mistral(text: &str) -> Option<Vec<ParsedCall>> {
    let v: Value = serde_json::Deserializer::from_str(text.trim()).into_iter::<Value>().next()?.ok()?;
    match v {
        Value::Array(a) => a.iter().map(call_of).collect(),
        v @ Value::Object(_) => Some(vec![call_of(&v)?]),
        _ => None,
    }
}

fn parse_llama3(text: &str) -> Option<Vec<ParsedCall>> {
    let t = text.trim_start();
    let t = t.strip_prefix(PYTHON_TAG).unwrap_or(t);
    let mut calls = Vec::new();
    let mut rest = t.trim_start();
    while !rest.is_empty() {
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let v = it.next()?.ok()?;
        calls.push(call_of(&v)?);
        rest = rest[it.byte_offset()..].trim_start();
        rest = rest.strip_prefix(';').unwrap_or(rest).trim_start();
    }
    Some(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &str) -> ParsedCall {
        ParsedCall { name: name.into(), arguments: args.into() }
    }

    #[test]
    fn hermes_calls_and_content() {
        let out = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        let p = ToolCallFormat::Hermes.parse(out);
        assert_eq!(p.content, "Let me look.\n");
        assert_eq!(p.calls, vec![call("get_weather", r#"{"city":"Paris"}"#), call("now", "{}")]);
        // Unclosed at EOS still parses; malformed JSON is content.
        assert_eq!(ToolCallFormat::Hermes.parse("<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}").calls, vec![call("f", r#"{"a":1}"#)]);
        let bad = "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": </tool_call>";
        assert_eq!(ToolCallFormat::Hermes.parse(bad), Parsed { content: bad.into(), calls: vec![] });
        assert_eq!(ToolCallFormat::Hermes.parse("just text").calls, vec![]);
    }

    #[test]
    fn llama3_and_mistral() {
        let p = ToolCallFormat::Llama3Json.parse("<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": \"y\"}}; {\"name\": \"g\", \"parameters\": {}}");
        assert_eq!(p.calls, vec![call("f", r#"{"x":"y"}"#), call("g", "{}")]);
        assert_eq!(ToolCallFormat::Llama3Json.parse("The answer is {x}").calls, vec![]);
        let p = ToolCallFormat::Mistral.parse("ok [TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"n\": 2}}]");
        assert_eq!((p.content.as_str(), p.calls), ("ok ", vec![call("f", r#"{"n":2}"#)]));
    }

    #[test]
    fn streaming_holds_back_marker_prefixes() {
        let h = ToolCallFormat::Hermes;
        assert_eq!(h.streamable("Hello <tool"), (6, false));
        assert_eq!(h.streamable("Hello <tool_call>{"), (6, true));
        assert_eq!(h.streamable("a < b"), (5, false));
        let l = ToolCallFormat::Llama3Json;
        assert_eq!(l.streamable("  "), (0, false));
        assert_eq!(l.streamable(" {\"na"), (0, true));
        assert_eq!(l.streamable("<|pyth"), (0, false));
        assert_eq!(l.streamable("Sure"), (4, false));
        assert_eq!(ToolCallFormat::detect("{{ '<tool_call>' }}"), Some(ToolCallFormat::Hermes));
        assert_eq!(ToolCallFormat::detect("plain"), None);
    }
}
