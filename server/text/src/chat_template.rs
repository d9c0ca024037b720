//! Chat templates: the model's Jinja template rendered with minijinja, configured like
//! Hugging Face's `apply_chat_template` (`trim_blocks`, `lstrip_blocks`, `raise_exception`,
//! `tojson` as Python's `json.dumps`, Python string methods, `tools`).

use crate::error::TextError;
use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

/// One message as the template sees it. Absent optional fields are left out (not `none`), so
/// templates that test `'tool_calls' in message` or `message.tool_call_id is defined` see what
/// Hugging Face's renderer shows them.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// Assistant tool calls, `{"id", "type": "function", "function": {"name", "arguments"}}`,
    /// with `arguments` an object (as vLLM passes them), not the wire format's JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A `tool` message: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The participant's or the tool's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into(), ..Self::default() }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template reads a `tools` variable (a heuristic, as vLLM's and llama.cpp's).
    supports_tools: bool,
    /// The Jinja source (served by `/tokenizer_info`).
    source: String,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(msg: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> String {
    // Templates use this for "today's date" in system prompts; we keep output reproducible by
    // formatting the current UTC date only for the common `%d %b %Y` / `%Y-%m-%d` patterns.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    const MON: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    fmt.replace("%Y", &y.to_string()).replace("%m", &format!("{m:02}")).replace("%d", &format!("{d:02}")).replace("%b", MON[(m - 1) as usize])
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `tojson` as Hugging Face defines it: Python's `json.dumps(x, ensure_ascii=False,
/// indent=indent)` — `", "` and `": "` separators, no HTML escaping (minijinja's built-in
/// filter escapes `<`, `>`, `&` and `'` and writes compact JSON, which changes the prompt).
fn tojson(v: Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    for k in ["ensure_ascii", "separators", "sort_keys"] {
        let _: Option<Value> = kwargs.get(k)?;
    }
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&v).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    py_dumps(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

/// Python's `json.dumps` layout (strings and numbers as serde_json writes them).
pub fn py_dumps(v: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                py_dumps(x, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(m) if !m.is_empty() => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push_str(": ");
                py_dumps(x, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl ChatTemplate {
    /// Compile `source`; `bos_token`/`eos_token` are passed to the template as HF does.
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self, TextError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string()).map_err(|e| TextError::Template(e.to_string()))?;
        Ok(Self {
            supports_tools: source.contains("tools"),
            source: source.to_string(),
            env,
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
        })
    }

    /// Compile `source` with `tok`'s BOS and EOS tokens.
    pub fn for_tokenizer(source: &str, tok: &crate::Tokenizer) -> Result<Self, TextError> {
        Self::new(source, tok.bos_token(), tok.eos_token())
    }

    /// The template in `tok`'s own metadata, if it has one.
    pub fn of_tokenizer(tok: &crate::Tokenizer) -> Result<Option<Self>, TextError> {
        tok.chat_template().map(|src| Self::for_tokenizer(src, tok)).transpose()
    }

    /// Render a conversation. Errors raised by the template (`raise_exception`) come back as
    /// [`TextError::Template`] with the template's message.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, TextError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template declares tools (reads a `tools` variable).
    pub fn supports_tools(&self) -> bool {
        self.supports_tools
    }

    /// The tool-call format this template teaches its model (`None`: it declares no tools, or
    /// writes calls in a format we do not read).
    pub fn tool_call_format(&self) -> Option<crate::tool_parse::ToolCallFormat> {
        self.supports_tools.then(|| crate::tool_parse::ToolCallFormat::detect(&self.source)).flatten()
    }

    /// [`ChatTemplate::render`] with `tools` (the request's tool list, `[{"type": "function",
    /// "function": {...}}]`) passed to the template as Hugging Face passes it (`none` when absent).
    pub fn render_with_tools(&self, messages: &[ChatMessage], tools: Option<&serde_json::Value>, add_generation_prompt: bool) -> Result<String, TextError> {
        let tmpl = self.env.get_template("chat").map_err(|e| TextError::Template(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => messages,
            tools => tools.map(Value::from_serialize),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        tmpl.render(ctx).map_err(|e| {
            let mut msg = e.detail().map(str::to_string).unwrap_or_else(|| e.to_string());
            if e.kind() != ErrorKind::InvalidOperation {
                msg = e.to_string();
            }
            TextError::Template(msg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_exception_surfaces_message() {
        let t = ChatTemplate::new("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok", None, None).unwrap();
        let err = t.render(&[ChatMessage::new("assistant", "x")], false).unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0].content.strip() }}|{{ bos_token }}", Some("<s>"), None).unwrap();
        let s = t.render(&[ChatMessage::new("user", "  hi ")], false).unwrap();
        assert_eq!(s, "hi|<s>");
    }

    #[test]
    fn tojson_is_pythons_json_dumps() {
        let t = ChatTemplate::new("{{ tools[0] | tojson }}|{{ tools[0] | tojson(indent=2) }}|{{ [] | tojson(indent=2) }}", None, None).unwrap();
        let tools = serde_json::json!([{"name": "f<&>'", "p": {"a": [1, 2.5], "b": {}}}]);
        let s = t.render_with_tools(&[], Some(&tools), false).unwrap();
        assert_eq!(s, "{\"name\": \"f<&>'\", \"p\": {\"a\": [1, 2.5], \"b\": {}}}|{\n  \"name\": \"f<&>'\",\n  \"p\": {\n    \"a\": [\n      1,\n      2.5\n    ],\n    \"b\": {}\n  }\n}|[]");
        assert!(t.supports_tools());
    }

    #[test]
    fn absent_fields_are_undefined() {
        let t = ChatTemplate::new("{% for m in messages %}{{ 'tool_calls' in m }}{{ m.tool_call_id is defined }}{% endfor %}|{{ tools is none }}", None, None).unwrap();
        let mut m = ChatMessage::new("tool", "r");
        m.tool_call_id = Some("c1".into());
        assert_eq!(t.render(&[ChatMessage::new("user", "x"), m], false).unwrap(), "FalseFalseFalseTrue|True");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
