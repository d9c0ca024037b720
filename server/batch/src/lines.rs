//! Reading a batch input file: JSONL lines `{custom_id, method, url, body}`.
//!
//! Problems of the file as a whole (not UTF-8, no line that is JSON, a duplicate `custom_id`,
//! too many lines) reject the batch when it is created. A problem of one line (too long, not a
//! JSON object, a missing field, a method other than POST, a route a batch cannot call, a
//! streaming body) becomes that line's entry in the error file; the other lines run.

use hhh_proto::batch::BatchInputLine;
use std::collections::HashMap;

/// The routes a batch line may name.
pub const URLS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/rewards",
    "/v1/preferences",
    "/v1/harmlessness/compare",
    "/v1/harmlessness/score",
    "/v1/harmlessness/revise",
    "/v1/harmlessness/label",
    "/v1/self_evaluation",
    "/v1/pik",
    "/v1/evals/behavior",
];

/// Limits on an input file.
#[derive(Debug, Clone, Copy)]
pub struct LineLimits {
    /// Longest line, in bytes.
    pub max_line_bytes: usize,
    /// Most request lines per file.
    pub max_lines: usize,
}

impl Default for LineLimits {
    fn default() -> Self {
        Self { max_line_bytes: 1 << 20, max_lines: 50_000 }
    }
}

/// One non-empty line of an input file.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A request to run.
    Request { line: u64, custom_id: String, url: String, body: serde_json::Value },
    /// A line that cannot run; `code` and `message` go to the error file.
    Bad { line: u64, custom_id: Option<String>, code: &'static str, message: String },
}

impl Line {
    /// 1-based line number in the file.
    pub fn number(&self) -> u64 {
        match self {
            Line::Request { line, .. } | Line::Bad { line, .. } => *line,
        }
    }
    pub fn custom_id(&self) -> Option<&str> {
        match self {
            Line::Request { custom_id, .. } => Some(custom_id),
            Line::Bad { custom_id, .. } => custom_id.as_deref(),
        }
    }
}

/// Why a whole file cannot be a batch (a 400 when the batch is created).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    #[error("The input file is not UTF-8 text (first bad byte at offset {0}).")]
    NotUtf8(usize),
    #[error("The input file is not JSONL: no line is a JSON object (line 1: {0}).")]
    NotJsonl(String),
    #[error("The input file has no request lines.")]
    Empty,
    #[error("The input file has {count} request lines; the limit is {limit}.")]
    TooManyLines { count: usize, limit: usize },
    #[error("The custom_id `{id}` is used by lines {first} and {second}; each custom_id must be unique within a batch.")]
    DuplicateCustomId { id: String, first: u64, second: u64 },
}

/// Read every line of `bytes`.
pub fn parse(bytes: &[u8], limits: LineLimits) -> Result<Vec<Line>, FileProblem> {
    let text = std::str::from_utf8(bytes).map_err(|e| FileProblem::NotUtf8(e.valid_up_to()))?;
    let mut out = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut any_json = false;
    let mut first_error = None;
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let line = i as u64 + 1;
        let parsed = read_line(line, raw, limits);
        match &parsed {
            Line::Bad { code: "invalid_json", message, .. } => {
                first_error.get_or_insert_with(|| message.clone());
            }
            Line::Bad { code: "line_too_large", .. } => {}
            _ => any_json = true,
        }
        if let Some(id) = parsed.custom_id() {
            if let Some(&first) = seen.get(id) {
                return Err(FileProblem::DuplicateCustomId { id: id.to_string(), first, second: line });
            }
            seen.insert(id.to_string(), line);
        }
        out.push(parsed);
        if out.len() > limits.max_lines {
            return Err(FileProblem::TooManyLines { count: text.split('\n').filter(|l| !l.trim().is_empty()).count(), limit: limits.max_lines });
        }
    }
    if out.is_empty() {
        return Err(FileProblem::Empty);
    }
    if !any_json {
        return Err(FileProblem::NotJsonl(first_error.unwrap_or_else(|| "every line is over the size limit".into())));
    }
    Ok(out)
}

fn bad(line: u64, custom_id: Option<String>, code: &'static str, message: impl Into<String>) -> Line {
    Line::Bad { line, custom_id, code, message: message.into() }
}

fn read_line(line: u64, raw: &str, limits: LineLimits) -> Line {
    if raw.len() > limits.max_line_bytes {
        // Its custom_id still names it in the error file (the file as a whole is within
        // --max-file-bytes, so reading the line is bounded).
        let custom_id = serde_json::from_str::<serde_json::Value>(raw).ok().and_then(|v| v.get("custom_id").and_then(|c| c.as_str()).map(str::to_string));
        return bad(line, custom_id, "line_too_large", format!("Line {line} is {} bytes long; the limit is {} bytes.", raw.len(), limits.max_line_bytes));
    }
    let v: serde_json::Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(e) => return bad(line, None, "invalid_json", format!("Line {line} is not valid JSON: {e}.")),
    };
    let Some(obj) = v.as_object() else {
        return bad(line, None, "invalid_json", format!("Line {line} is not a JSON object."));
    };
    let custom_id = obj.get("custom_id").and_then(|c| c.as_str()).map(str::to_string);
    let parsed: BatchInputLine = match serde_json::from_value(v.clone()) {
        Ok(p) => p,
        Err(e) => return bad(line, custom_id, "invalid_line", format!("Line {line} is not a batch request line ({{custom_id, method, url, body}}): {e}.")),
    };
    if !parsed.method.eq_ignore_ascii_case("POST") {
        return bad(line, custom_id, "invalid_method", format!("Line {line}: method `{}` is not supported; batch lines use POST.", parsed.method));
    }
    if !URLS.contains(&parsed.url.as_str()) {
        return bad(line, custom_id, "invalid_url", format!("Line {line}: url `{}` is not a route a batch can call ({}).", parsed.url, URLS.join(", ")));
    }
    if !parsed.body.is_object() {
        return bad(line, custom_id, "invalid_line", format!("Line {line}: body must be a JSON object."));
    }
    if parsed.body.get("stream").and_then(|s| s.as_bool()) == Some(true) {
        return bad(line, custom_id, "invalid_request", format!("Line {line}: `stream: true` is not supported in a batch; the whole response is written to the output file."));
    }
    Line::Request { line, custom_id: parsed.custom_id, url: parsed.url, body: parsed.body }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#;

    #[test]
    fn good_and_bad_lines() {
        let long = format!(r#"{{"custom_id":"long","method":"POST","url":"/v1/completions","body":{{"prompt":"{}"}}}}"#, "x".repeat(200));
        let text = [
            OK,
            "",
            "not json",
            r#"{"custom_id":"b","method":"GET","url":"/v1/completions","body":{}}"#,
            r#"{"custom_id":"c","method":"POST","url":"/v1/embeddings","body":{}}"#,
            r#"{"custom_id":"d","method":"POST","url":"/v1/completions"}"#,
            r#"{"custom_id":"e","method":"POST","url":"/v1/completions","body":{"stream":true}}"#,
            &long,
            "[1,2]\r",
        ]
        .join("\n");
        let lines = parse(text.as_bytes(), LineLimits { max_line_bytes: 150, max_lines: 100 }).unwrap();
        let codes: Vec<(u64, &str)> = lines
            .iter()
            .map(|l| match l {
                Line::Request { line, .. } => (*line, "ok"),
                Line::Bad { line, code, .. } => (*line, *code),
            })
            .collect();
        assert_eq!(codes, [(1, "ok"), (3, "invalid_json"), (4, "invalid_method"), (5, "invalid_url"), (6, "invalid_line"), (7, "invalid_request"), (8, "line_too_large"), (9, "invalid_json")]);
        assert_eq!(lines[3].custom_id(), Some("c"));
        let Line::Bad { message, .. } = &lines[6] else { panic!() };
        assert!(message.contains("limit is 150 bytes"), "{message}");
    }

    #[test]
    fn whole_file_problems() {
        let dup = format!("{OK}\n{OK}\n");
        assert_eq!(parse(dup.as_bytes(), LineLimits::default()), Err(FileProblem::DuplicateCustomId { id: "a".into(), first: 1, second: 2 }));
        assert!(matches!(parse(b"hello\nworld\n", LineLimits::default()), Err(FileProblem::NotJsonl(_))));
        assert_eq!(parse(b"\n \n", LineLimits::default()), Err(FileProblem::Empty));
        assert_eq!(parse(b"\xff\xfe", LineLimits::default()), Err(FileProblem::NotUtf8(0)));
        let two = format!("{OK}\n{}\n", OK.replace("\"a\"", "\"b\""));
        assert_eq!(parse(two.as_bytes(), LineLimits { max_line_bytes: 1000, max_lines: 1 }), Err(FileProblem::TooManyLines { count: 2, limit: 1 }));
    }
}
