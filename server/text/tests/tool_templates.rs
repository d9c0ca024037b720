//! Tool-calling chat templates (Qwen2.5, Llama 3.1, Mistral Nemo: the models' own) rendered as
//! transformers renders them (`scripts/gen_tool_fixtures.py`; fixtures committed): `tools`,
//! assistant `tool_calls`, `tool` messages, Python's `json.dumps` layout for `tojson`.

use hhh_text::tool_parse::ToolCallFormat;
use hhh_text::{ChatMessage, ChatTemplate};
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn message(m: &Value) -> ChatMessage {
    ChatMessage {
        role: m["role"].as_str().unwrap().into(),
        content: m["content"].as_str().unwrap_or_default().into(),
        tool_calls: m.get("tool_calls").and_then(Value::as_array).cloned(),
        tool_call_id: m.get("tool_call_id").and_then(Value::as_str).map(str::to_string),
        name: m.get("name").and_then(Value::as_str).map(str::to_string),
    }
}

fn template(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("tool_templates").join(format!("{name}.jinja"))).unwrap()
}

#[test]
fn tool_templates_match_hf_rendering() {
    let f: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("tool_goldens.json")).unwrap()).unwrap();
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    let mut bad = Vec::new();
    for c in cases {
        let name = c["template"].as_str().unwrap();
        let t = ChatTemplate::new(&template(name), c["bos_token"].as_str(), c["eos_token"].as_str()).unwrap();
        assert!(t.supports_tools(), "{name}");
        let msgs: Vec<ChatMessage> = c["messages"].as_array().unwrap().iter().map(message).collect();
        let tools = c.get("tools").filter(|v| !v.is_null());
        let got = t.render_with_tools(&msgs, tools, c["add_generation_prompt"].as_bool().unwrap());
        match (&got, c.get("rendered"), c.get("error")) {
            (Ok(s), Some(w), _) if s == w.as_str().unwrap() => {}
            (Err(e), _, Some(w)) if e.to_string().contains(w.as_str().unwrap()) => {}
            _ => bad.push(format!("{name}: got {got:?}\nwant {}", c.get("rendered").or(c.get("error")).unwrap())),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
}

#[test]
fn each_template_names_its_tool_format() {
    assert_eq!(ToolCallFormat::detect(&template("qwen2.5")), Some(ToolCallFormat::Hermes));
    assert_eq!(ToolCallFormat::detect(&template("llama3.1")), Some(ToolCallFormat::Llama3Json));
    assert_eq!(ToolCallFormat::detect(&template("mistral-nemo")), Some(ToolCallFormat::Mistral));
}
