//! Tool calling (`tools`, `tool_choice`, `parallel_tool_calls`), planned before any engine work:
//!
//! - **native** (the chat template declares tools and its output format is known: Hermes,
//!   Llama 3 JSON, Mistral): the tools go to the template; with `auto` the model writes calls in
//!   its own format and [`hhh_text::tool_parse`] reads them out;
//! - **generic** (templates without tools, such as the default model's): the tools are described
//!   in a system message and `auto` output is constrained to `{"tool_calls": [...]}` or
//!   `{"response": "..."}` (llama.cpp's approach for such templates);
//! - in both, `required` and a named function are enforced with a JSON-schema grammar (vLLM's
//!   approach): a named call's output is its arguments object, `required` output is an array of
//!   `{"name", "parameters"}`, so the arguments always parse and match the schema.
//!
//! [`ToolStream`] turns a choice's text into content and `tool_calls` deltas as it streams.

use crate::error::ApiError;
use crate::structured::{json_constraint, Grammars};
use hhh_engine::Constraint;
use hhh_proto::{ChatCompletionRequest, FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta, ToolChoice};
use hhh_text::tool_parse::{ParsedCall, ToolCallFormat};
use hhh_text::ChatMessage;
use serde_json::{json, Value};

/// Most tools per request (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// What the request forces.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolMode {
    /// The model decides (`auto`).
    Auto,
    /// At least one call (`required`).
    Required,
    /// This function (`{"type": "function", "function": {"name"}}`).
    Named(String),
}

/// A validated tool request.
pub struct ToolPlan {
    /// The request's `tools` as the template receives them (`None` in generic mode).
    pub template_tools: Option<Value>,
    /// The system text describing the tools (generic mode only).
    pub generic_prompt: Option<String>,
    /// `None`: `tool_choice: "none"` (the tools are shown, no calls are read).
    pub mode: Option<ToolMode>,
    /// The native output format; `None`: generic mode.
    pub format: Option<ToolCallFormat>,
    /// The output constraint (`required`, named, generic `auto`).
    pub constraint: Option<Constraint>,
}

fn validate_tools(req: &ChatCompletionRequest) -> Result<Vec<(String, Value)>, ApiError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid("tools", format!("At most {MAX_TOOLS} tools are allowed, got {}.", tools.len())));
    }
    let mut out: Vec<(String, Value)> = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::invalid(&format!("tools[{i}].type"), format!("Unsupported tool type `{}` (function).", t.kind)));
        }
        let name = &t.function.name;
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(ApiError::invalid(&format!("tools[{i}].function.name"), format!("Tool names are 1 to 64 characters of a-z, A-Z, 0-9, `_` and `-`, got `{name}`.")));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(ApiError::invalid(&format!("tools[{i}].function.name"), format!("Duplicate tool name `{name}`.")));
        }
        let mut params = t.function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        if !params.is_object() {
            return Err(ApiError::invalid(&format!("tools[{i}].function.parameters"), "`parameters` must be a JSON Schema object."));
        }
        close_objects(&mut params);
        out.push((name.clone(), params));
    }
    Ok(out)
}

fn mode_of(req: &ChatCompletionRequest, names: &[(String, Value)]) -> Result<Option<ToolMode>, ApiError> {
    let mode = match &req.tool_choice {
        None => (!names.is_empty()).then_some(ToolMode::Auto),
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "none" => None,
            "auto" => Some(ToolMode::Auto),
            "required" => Some(ToolMode::Required),
            other => return Err(ApiError::invalid("tool_choice", format!("Unknown `tool_choice` `{other}` (none, auto, required, or a named function)."))),
        },
        Some(ToolChoice::Named(n)) => {
            if n.kind != "function" {
                return Err(ApiError::invalid("tool_choice.type", format!("Unsupported `tool_choice.type` `{}` (function).", n.kind)));
            }
            if !names.iter().any(|(t, _)| *t == n.function.name) {
                return Err(ApiError::invalid("tool_choice.function.name", format!("`tool_choice` names `{}`, which is not in `tools`.", n.function.name)));
            }
            Some(ToolMode::Named(n.function.name.clone()))
        }
    };
    if mode.is_some() && names.is_empty() {
        return Err(ApiError::invalid("tool_choice", "`tool_choice` needs a non-empty `tools` list."));
    }
    Ok(mode)
}

/// Objects with declared `properties` and no `additionalProperties` get `false`, recursively:
/// forced arguments hold only the declared parameters (OpenAI's strict mode, llama.cpp's
/// default). Without it, a schema such as pydantic's (which leaves `additionalProperties` out)
/// lets a small model invent keys until `max_tokens` cuts the JSON.
pub fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(o) => {
            if o.contains_key("properties") && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, v) in o.iter_mut() {
                // Property maps and definition maps hold schemas by name; everything else that is
                // an object or array may be (or hold) a subschema.
                if matches!(k.as_str(), "properties" | "$defs" | "definitions" | "patternProperties") {
                    if let Value::Object(m) = v {
                        m.values_mut().for_each(close_objects);
                    }
                } else if !matches!(k.as_str(), "enum" | "const" | "default" | "examples" | "required") {
                    close_objects(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The schema of `required` output: an array of `{"name", "parameters"}` calls.
fn calls_schema(tools: &[(String, Value)], parallel: bool) -> Value {
    let items: Vec<Value> =
        tools.iter().map(|(n, p)| json!({"type": "object", "properties": {"name": {"const": n}, "parameters": p}, "required": ["name", "parameters"], "additionalProperties": false})).collect();
    let mut s = json!({"type": "array", "minItems": 1, "items": {"anyOf": items}});
    if !parallel {
        s["maxItems"] = json!(1);
    }
    s
}

/// Plan the request's tool use; `None` when it has no tools (or an empty list).
/// `format`: the server's tool-call format (`None`: generic mode).
pub fn plan(grammars: Option<&Grammars>, format: Option<ToolCallFormat>, req: &ChatCompletionRequest) -> Result<Option<ToolPlan>, ApiError> {
    let tools = validate_tools(req)?;
    let mode = mode_of(req, &tools)?;
    if tools.is_empty() {
        return Ok(None);
    }
    let parallel = req.parallel_tool_calls.unwrap_or(true);
    let user_constraint = req.sampling.response_format.as_ref().is_some_and(|r| r.kind != "text") || !matches!(req.sampling.structured(), Ok(None));
    let forced = matches!(mode, Some(ToolMode::Required | ToolMode::Named(_))) || (format.is_none() && mode.is_some());
    if user_constraint && forced {
        return Err(ApiError::invalid(
            "tool_choice",
            "`response_format`/`structured_outputs` cannot be combined with a `tool_choice` that constrains the output (required, a named function, or auto with this model's generic tool format).",
        ));
    }
    let constraint = match &mode {
        Some(ToolMode::Named(n)) => {
            let params = tools.iter().find(|(t, _)| t == n).map(|(_, p)| p.clone()).unwrap_or_else(|| json!({"type": "object"}));
            Some(json_constraint(grammars, params, "tools", "tool_call")?)
        }
        Some(ToolMode::Required) => Some(json_constraint(grammars, calls_schema(&tools, parallel), "tools", "tool_calls")?),
        Some(ToolMode::Auto) if format.is_none() => {
            let schema = json!({"anyOf": [
                {"type": "object", "properties": {"tool_calls": calls_schema(&tools, parallel)}, "required": ["tool_calls"], "additionalProperties": false},
                {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"], "additionalProperties": false}
            ]});
            Some(json_constraint(grammars, schema, "tools", "tool_calls_or_response")?)
        }
        _ => None,
    };
    let wire: Value = serde_json::to_value(req.tools.as_deref().unwrap_or_default()).map_err(|e| ApiError::internal(e.to_string()))?;
    let (template_tools, generic_prompt) = match format {
        Some(_) => (Some(wire), None),
        None => (None, Some(generic_prompt(&wire, mode.as_ref()))),
    };
    Ok(Some(ToolPlan { template_tools, generic_prompt, mode, format, constraint }))
}

/// The generic mode's description of the tools and of the expected answer.
fn generic_prompt(tools: &Value, mode: Option<&ToolMode>) -> String {
    let list: Vec<String> = tools.as_array().into_iter().flatten().map(|t| t["function"].to_string()).collect();
    let how = match mode {
        None => "Answer the user directly; do not call a tool now.".to_string(),
        Some(ToolMode::Auto) => {
            "To call tools, answer with {\"tool_calls\": [{\"name\": <tool name>, \"parameters\": <arguments object>}]}; to answer directly, answer with {\"response\": <your answer>}.".to_string()
        }
        Some(ToolMode::Required) => "Answer with a JSON array of tool calls: [{\"name\": <tool name>, \"parameters\": <arguments object>}].".to_string(),
        Some(ToolMode::Named(n)) => format!("Call the tool `{n}`: answer with its arguments as a JSON object."),
    };
    format!("You can use these tools:\n{}\n\n{how}", list.join("\n"))
}

/// Prepare template messages for the tool mode. Generic mode (`native` false: the template has
/// no tools): assistant calls become their JSON text, `tool` results become user messages, and
/// the tools' description joins the system message.
pub fn adapt_messages(plan: Option<&ToolPlan>, native: bool, mut msgs: Vec<ChatMessage>) -> Vec<ChatMessage> {
    if !native {
        for m in &mut msgs {
            if let Some(calls) = m.tool_calls.take() {
                let calls: Vec<Value> = calls.iter().map(|c| json!({"name": c["function"]["name"], "parameters": c["function"]["arguments"]})).collect();
                let text = json!({ "tool_calls": calls }).to_string();
                m.content = if m.content.is_empty() { text } else { format!("{}\n{text}", m.content) };
            }
            if m.role == "tool" {
                let id = m.tool_call_id.take().unwrap_or_default();
                *m = ChatMessage::new("user", json!({"tool_response": {"tool_call_id": id, "content": m.content}}).to_string());
            }
        }
    }
    if let Some(prompt) = plan.and_then(|p| p.generic_prompt.as_deref()) {
        match msgs.first_mut() {
            Some(m) if m.role == "system" => m.content = format!("{}\n\n{prompt}", m.content),
            _ => msgs.insert(0, ChatMessage::new("system", prompt)),
        }
    }
    msgs
}

/// A fresh call id: `call_` and 24 alphanumerics (Mistral's templates need exactly 9).
pub fn call_id(format: Option<ToolCallFormat>) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    let mut rng = rand::rng();
    match format {
        Some(ToolCallFormat::Mistral) => Alphanumeric.sample_string(&mut rng, 9),
        _ => format!("call_{}", Alphanumeric.sample_string(&mut rng, 24)),
    }
}

/// A finished choice, read: its content and calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub content: String,
    pub calls: Vec<ParsedCall>,
}

fn json_calls(v: &Value) -> Option<Vec<ParsedCall>> {
    v.as_array()?.iter().map(|c| Some(ParsedCall { name: c.get("name")?.as_str()?.to_string(), arguments: c.get("parameters").or_else(|| c.get("arguments"))?.to_string() })).collect()
}

impl ToolPlan {
    /// Read a finished output.
    pub fn outcome(&self, text: &str) -> Outcome {
        let as_content = || Outcome { content: text.to_string(), calls: Vec::new() };
        match (&self.mode, self.format) {
            (None, _) => as_content(),
            (Some(ToolMode::Named(n)), _) => Outcome { content: String::new(), calls: vec![ParsedCall { name: n.clone(), arguments: text.trim().to_string() }] },
            (Some(ToolMode::Required), _) => match serde_json::from_str::<Value>(text).ok().as_ref().and_then(json_calls) {
                Some(calls) => Outcome { content: String::new(), calls },
                None => as_content(),
            },
            (Some(ToolMode::Auto), None) => {
                let v: Option<Value> = serde_json::from_str(text).ok();
                if let Some(calls) = v.as_ref().and_then(|v| json_calls(&v["tool_calls"])) {
                    return Outcome { content: String::new(), calls };
                }
                match v.as_ref().and_then(|v| v["response"].as_str()) {
                    Some(r) => Outcome { content: r.to_string(), calls: Vec::new() },
                    None => as_content(),
                }
            }
            (Some(ToolMode::Auto), Some(f)) => {
                let p = f.parse(text);
                Outcome { content: p.content, calls: p.calls }
            }
        }
    }

    /// The finish reason of a choice with `calls` (OpenAI: `tool_calls`, except for a named
    /// `tool_choice`, which finishes with `stop`).
    pub fn finish_reason(&self, engine_reason: &str, has_calls: bool) -> String {
        match (&self.mode, has_calls, engine_reason) {
            (Some(ToolMode::Auto | ToolMode::Required), true, "stop") => "tool_calls".into(),
            _ => engine_reason.into(),
        }
    }

    /// Wire tool calls with fresh ids.
    pub fn wire_calls(&self, calls: &[ParsedCall]) -> Vec<ToolCall> {
        calls.iter().map(|c| ToolCall { id: call_id(self.format), kind: "function".into(), function: FunctionCall { name: c.name.clone(), arguments: c.arguments.clone() } }).collect()
    }
}

/// One streamed choice's tool state.
#[derive(Default)]
pub struct ToolStream {
    text: String,
    /// Bytes of `text` already sent as content (or as a named call's arguments).
    sent: usize,
    /// A named call's first delta (id, type, name) has gone out.
    opened: bool,
}

/// What a streamed piece of text becomes.
#[derive(Debug, Default, PartialEq)]
pub struct StreamPiece {
    pub content: Option<String>,
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

impl ToolStream {
    /// Feed a text delta.
    pub fn push(&mut self, plan: &ToolPlan, delta: &str) -> StreamPiece {
        self.text.push_str(delta);
        match (&plan.mode, plan.format) {
            (None, _) => self.content_upto(self.text.len()),
            (Some(ToolMode::Named(n)), _) => {
                if delta.is_empty() {
                    return StreamPiece::default();
                }
                self.sent = self.text.len();
                let first = !std::mem::replace(&mut self.opened, true);
                let d = ToolCallDelta {
                    index: 0,
                    id: first.then(|| call_id(plan.format)),
                    kind: first.then(|| "function".to_string()),
                    function: FunctionCallDelta { name: first.then(|| n.clone()), arguments: Some(delta.to_string()) },
                };
                StreamPiece { content: None, tool_calls: Some(vec![d]) }
            }
            (Some(ToolMode::Auto), Some(f)) => {
                let (upto, _) = f.streamable(&self.text);
                self.content_upto(upto)
            }
            // Held to the end: the whole output is one JSON document.
            _ => StreamPiece::default(),
        }
    }

    fn content_upto(&mut self, upto: usize) -> StreamPiece {
        if upto <= self.sent {
            return StreamPiece::default();
        }
        let s = self.text[self.sent..upto].to_string();
        self.sent = upto;
        StreamPiece { content: Some(s), tool_calls: None }
    }

    /// The end of the choice: the rest of the content, the calls, and whether there were any.
    pub fn finish(&mut self, plan: &ToolPlan) -> (StreamPiece, bool) {
        if let Some(ToolMode::Named(_)) = plan.mode {
            return (StreamPiece::default(), self.opened);
        }
        let out = plan.outcome(&self.text);
        let sent = &self.text[..self.sent];
        let rest = match out.content.strip_prefix(sent) {
            Some(r) => r.to_string(),
            None => out.content.clone(),
        };
        let calls: Vec<ToolCallDelta> = plan
            .wire_calls(&out.calls)
            .into_iter()
            .enumerate()
            .map(|(i, c)| ToolCallDelta { index: i, id: Some(c.id), kind: Some(c.kind), function: FunctionCallDelta { name: Some(c.function.name), arguments: Some(c.function.arguments) } })
            .collect();
        let has = !calls.is_empty();
        (StreamPiece { content: (!rest.is_empty()).then_some(rest), tool_calls: has.then_some(calls) }, has)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hhh_proto::{FunctionDefinition, Tool};

    fn req(tools: usize, choice: Option<Value>) -> ChatCompletionRequest {
        let tools: Vec<Tool> = (0..tools)
            .map(|i| Tool {
                kind: "function".into(),
                function: FunctionDefinition { name: format!("f{i}"), description: None, parameters: Some(json!({"type": "object", "properties": {"x": {"type": "integer"}}})), strict: None },
            })
            .collect();
        let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools});
        if let Some(c) = choice {
            v["tool_choice"] = c;
        }
        serde_json::from_value(v).unwrap()
    }

    fn param(r: Result<Option<ToolPlan>, ApiError>) -> Option<String> {
        r.err().and_then(|e| e.param)
    }

    #[test]
    fn choices_are_validated() {
        let f = Some(ToolCallFormat::Hermes);
        assert!(plan(None, f, &req(0, None)).unwrap().is_none());
        assert_eq!(param(plan(None, f, &req(0, Some(json!("required"))))).as_deref(), Some("tool_choice"));
        assert_eq!(param(plan(None, f, &req(1, Some(json!("sometimes"))))).as_deref(), Some("tool_choice"));
        assert_eq!(param(plan(None, f, &req(1, Some(json!({"type": "function", "function": {"name": "nope"}}))))).as_deref(), Some("tool_choice.function.name"));
        let auto = plan(None, f, &req(2, None)).unwrap().unwrap();
        assert_eq!((auto.mode, auto.constraint.is_none(), auto.template_tools.is_some()), (Some(ToolMode::Auto), true, true));
        let none = plan(None, f, &req(2, Some(json!("none")))).unwrap().unwrap();
        assert_eq!(none.mode, None);
        // A forced choice needs the grammar engine.
        assert_eq!(param(plan(None, f, &req(1, Some(json!("required"))))).as_deref(), Some("tools"));
        let mut dup = req(2, None);
        dup.tools.as_mut().unwrap()[1].function.name = "f0".into();
        assert_eq!(param(plan(None, f, &dup)).as_deref(), Some("tools[1].function.name"));
    }

    fn plan_of(mode: Option<ToolMode>, format: Option<ToolCallFormat>) -> ToolPlan {
        ToolPlan { template_tools: None, generic_prompt: None, mode, format, constraint: None }
    }

    #[test]
    fn outcomes() {
        let named = plan_of(Some(ToolMode::Named("f".into())), None);
        assert_eq!(named.outcome(" {\"x\": 1}").calls, vec![ParsedCall { name: "f".into(), arguments: "{\"x\": 1}".into() }]);
        assert_eq!(named.finish_reason("stop", true), "stop");
        let req = plan_of(Some(ToolMode::Required), None);
        let o = req.outcome(r#"[{"name": "a", "parameters": {"x": 1}}, {"name": "b", "parameters": {}}]"#);
        assert_eq!(o.calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(req.finish_reason("stop", true), "tool_calls");
        assert_eq!(req.finish_reason("length", false), "length");
        let generic = plan_of(Some(ToolMode::Auto), None);
        assert_eq!(generic.outcome(r#"{"response": "hello"}"#), Outcome { content: "hello".into(), calls: vec![] });
        assert_eq!(generic.outcome(r#"{"tool_calls": [{"name": "a", "parameters": {}}]}"#).calls.len(), 1);
        assert_eq!(generic.outcome("{\"resp").content, "{\"resp");
    }

    #[test]
    fn streams_reassemble_into_the_outcome() {
        let hermes = plan_of(Some(ToolMode::Auto), Some(ToolCallFormat::Hermes));
        let text = "Checking.<tool_call>\n{\"name\": \"f0\", \"arguments\": {\"x\": 2}}\n</tool_call>";
        let mut s = ToolStream::default();
        let mut content = String::new();
        for ch in text.chars() {
            let p = s.push(&hermes, &ch.to_string());
            assert!(p.tool_calls.is_none());
            content.push_str(p.content.as_deref().unwrap_or_default());
        }
        assert_eq!(content, "Checking.");
        let (end, has) = s.finish(&hermes);
        assert!(has && end.content.is_none());
        let calls = end.tool_calls.unwrap();
        assert_eq!((calls[0].function.name.as_deref(), calls[0].function.arguments.as_deref()), (Some("f0"), Some("{\"x\":2}")));
        // A named call streams its arguments as they come.
        let named = plan_of(Some(ToolMode::Named("f0".into())), None);
        let mut s = ToolStream::default();
        let a = s.push(&named, "{\"x\"").tool_calls.unwrap();
        let b = s.push(&named, ": 3}").tool_calls.unwrap();
        assert_eq!((a[0].function.name.as_deref(), b[0].function.name.as_deref(), b[0].id.as_deref()), (Some("f0"), None, None));
        assert_eq!(s.finish(&named), (StreamPiece::default(), true));
    }

    #[test]
    fn objects_are_closed() {
        let mut s = json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}, "properties": {"type": "string"}},
            "$defs": {"D": {"properties": {"x": {}}}}, "items": [{"properties": {}}], "default": {"properties": 1}});
        close_objects(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        assert!(s["properties"]["properties"].get("additionalProperties").is_none(), "a property named `properties` is not a schema keyword");
        assert_eq!(s["$defs"]["D"]["additionalProperties"], false);
        assert_eq!(s["items"][0]["additionalProperties"], false);
        assert!(s["default"].get("additionalProperties").is_none());
        let mut open = json!({"properties": {}, "additionalProperties": true});
        close_objects(&mut open);
        assert_eq!(open["additionalProperties"], true);
    }

    #[test]
    fn generic_messages() {
        let p = ToolPlan { generic_prompt: Some("TOOLS".into()), ..plan_of(Some(ToolMode::Auto), None) };
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(vec![json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}})]);
        let mut result = ChatMessage::new("tool", "42");
        result.tool_call_id = Some("c1".into());
        let out = adapt_messages(Some(&p), false, vec![ChatMessage::new("user", "hi"), call, result]);
        assert_eq!(out[0], ChatMessage::new("system", "TOOLS"));
        assert_eq!(out[2].content, r#"{"tool_calls":[{"name":"f","parameters":{"x":1}}]}"#);
        assert_eq!(out[3], ChatMessage::new("user", r#"{"tool_response":{"tool_call_id":"c1","content":"42"}}"#));
    }
}
