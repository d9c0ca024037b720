//! Structured outputs: `response_format` (`json_object`, `json_schema`) and vLLM's
//! `structured_outputs` (`json`, `regex`, `choice`, `grammar` in Lark) compiled with
//! [`llguidance`] into an engine [`Constraint`]: the model runner masks every token the grammar
//! does not allow at each step, so the output always matches (unless it runs out of
//! `max_tokens` first, which reports `finish_reason: "length"`).
//!
//! The grammar engine needs every token's bytes: they come from the tokenizer's own
//! `tokenizer.json` form ([`llguidance::token_bytes_from_tokenizer_json`]).

use crate::error::ApiError;
use hhh_engine::{Constraint, ConstraintState, TokenConstraint, TokenId};
use hhh_proto::{ResponseFormat, StructuredOutputs};
use hhh_text::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use std::sync::Arc;

/// The tokenizer as the grammar engine sees it.
struct Env {
    trie: TokTrie,
    tok: Arc<Tokenizer>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.tok.encode_as_text(&String::from_utf8_lossy(s)).unwrap_or_default()
    }
}

/// Every token's bytes, indexed by id (vocabulary-sized).
pub fn token_bytes(tok: &Tokenizer) -> Result<Vec<Vec<u8>>, String> {
    let json: Value = serde_json::from_str(&tok.to_hf_json().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let mut words = llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| e.to_string())?;
    let vocab = tok.vocab_size().max(words.len());
    words.resize(vocab, Vec::new());
    Ok(words)
}

/// A model's grammar compiler (built once at start-up).
pub struct Grammars {
    factory: Arc<ParserFactory>,
    eos: Vec<TokenId>,
}

impl Grammars {
    /// The compiler for `tok`'s vocabulary; `None` (structured outputs unavailable, said in the
    /// 400) when the tokenizer has no end-of-sequence token or its bytes cannot be recovered.
    pub fn new(tok: Arc<Tokenizer>) -> Result<Self, String> {
        let eos: Vec<TokenId> = tok.eos_token_ids().to_vec();
        let first_eos = *eos.first().ok_or("the tokenizer has no end-of-sequence token")?;
        let words = token_bytes(&tok)?;
        let vocab = words.len();
        let info = TokRxInfo::new(vocab as u32, first_eos);
        let env: TokEnv = Arc::new(Env { trie: TokTrie::from(&info, &words), tok });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        Ok(Self { factory: Arc::new(factory), eos })
    }

    /// Compile `grammar` (errors name `field`) into a constraint for the engine.
    fn compile(&self, grammar: TopLevelGrammar, field: &str, what: &str) -> Result<Constraint, ApiError> {
        let parser = self.factory.create_parser(grammar).map_err(|e| ApiError::invalid(field, format!("`{field}` could not be compiled: {e}")))?;
        let proto = Matcher::new(Ok(parser));
        if let Some(e) = proto.get_error() {
            return Err(ApiError::invalid(field, format!("`{field}` could not be compiled: {e}")));
        }
        Ok(Constraint(Arc::new(Compiled { proto: std::sync::Mutex::new(proto), what: what.to_string(), eos: self.eos.clone() })))
    }
}

/// A compiled grammar: every sequence starts from a clone of the prototype matcher.
struct Compiled {
    proto: std::sync::Mutex<Matcher>,
    what: String,
    eos: Vec<TokenId>,
}

impl TokenConstraint for Compiled {
    fn start(&self) -> Result<Box<dyn ConstraintState>, String> {
        let m = self.proto.lock().map_err(|_| "constraint lock poisoned".to_string())?.deep_clone();
        Ok(Box::new(State(m)))
    }
    fn describe(&self) -> String {
        self.what.clone()
    }
    fn end_tokens(&self) -> Vec<TokenId> {
        self.eos.clone()
    }
}

struct State(Matcher);

impl ConstraintState for State {
    fn allowed(&mut self, allowed: &mut [bool]) -> Result<(), String> {
        let mask = self.0.compute_mask_or_eos().map_err(|e| e.to_string())?;
        for (t, a) in allowed.iter_mut().enumerate() {
            *a = mask.is_allowed(t as TokenId);
        }
        Ok(())
    }
    fn consume(&mut self, token: TokenId) -> Result<(), String> {
        if self.0.is_stopped() {
            return Ok(()); // end-of-sequence after completion
        }
        self.0.consume_token(token).map_err(|e| e.to_string())
    }
}

/// A JSON-schema grammar with compact separators (`", "`, `": "`) and no free whitespace between
/// tokens: a sampled output cannot spend its `max_tokens` on blank lines (a schema's own
/// `x-guidance` options win).
fn json_grammar(mut schema: Value) -> TopLevelGrammar {
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}));
    }
    TopLevelGrammar::from_json_schema(schema)
}

/// The constraint a request asks for, if any: `response_format` (chat) or `structured_outputs`
/// (either route); asking for both is a 400.
pub fn constraint(grammars: Option<&Grammars>, response_format: Option<&ResponseFormat>, structured: Option<&StructuredOutputs>) -> Result<Option<Constraint>, ApiError> {
    let wanted = match (response_format, structured) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("structured_outputs", "Give either `response_format` or `structured_outputs`, not both.")),
        (Some(rf), None) => match rf.kind.as_str() {
            "text" => None,
            "json_object" => Some((json_grammar(serde_json::json!({"type": "object"})), "response_format", "json_object")),
            "json_schema" => {
                let schema = rf
                    .json_schema
                    .as_ref()
                    .and_then(|j| j.schema.clone())
                    .ok_or_else(|| ApiError::invalid("response_format.json_schema.schema", "`response_format.json_schema.schema` is required."))?;
                Some((json_grammar(schema), "response_format.json_schema", "json_schema"))
            }
            other => return Err(ApiError::invalid("response_format.type", format!("Unknown `response_format.type` `{other}` (text, json_object, json_schema)."))),
        },
        (None, Some(so)) => Some(structured_grammar(so)?),
        (None, None) => None,
    };
    let Some((grammar, field, what)) = wanted else { return Ok(None) };
    let g = grammars.ok_or_else(|| ApiError::invalid(field, "Structured outputs are not available for this model's tokenizer."))?;
    g.compile(grammar, field, what).map(Some)
}

/// The request's `structured_outputs` (or its older `guided_*` fields).
pub fn requested(s: &hhh_proto::SamplingFields) -> Result<Option<StructuredOutputs>, ApiError> {
    s.structured().map_err(|f| ApiError::invalid(f, "Give either `structured_outputs` or the older `guided_*` fields, not both."))
}

/// A JSON-schema constraint (compact separators, like `response_format`); errors name `field`.
pub fn json_constraint(grammars: Option<&Grammars>, schema: Value, field: &str, what: &str) -> Result<Constraint, ApiError> {
    let g = grammars.ok_or_else(|| ApiError::invalid(field, "Constrained decoding is not available for this model's tokenizer."))?;
    g.compile(json_grammar(schema), field, what)
}

/// vLLM's `structured_outputs`: exactly one of `json`, `regex`, `choice`, `grammar`.
fn structured_grammar(so: &StructuredOutputs) -> Result<(TopLevelGrammar, &'static str, &'static str), ApiError> {
    let given = [so.json.is_some(), so.regex.is_some(), so.choice.is_some(), so.grammar.is_some()].iter().filter(|&&b| b).count();
    if given != 1 {
        return Err(ApiError::invalid("structured_outputs", "`structured_outputs` needs exactly one of `json`, `regex`, `choice`, `grammar`."));
    }
    if let Some(j) = &so.json {
        // A string is a JSON schema document as text (vLLM accepts both).
        let schema = match j {
            Value::String(s) => serde_json::from_str(s).map_err(|e| ApiError::invalid("structured_outputs.json", format!("`structured_outputs.json` is not JSON: {e}")))?,
            v => v.clone(),
        };
        return Ok((json_grammar(schema), "structured_outputs.json", "json_schema"));
    }
    if let Some(r) = &so.regex {
        return Ok((TopLevelGrammar::from_regex(r), "structured_outputs.regex", "regex"));
    }
    if let Some(c) = &so.choice {
        if c.is_empty() {
            return Err(ApiError::invalid("structured_outputs.choice", "`structured_outputs.choice` must not be empty."));
        }
        let alts: Vec<String> = c.iter().map(|s| serde_json::to_string(s).unwrap_or_default()).collect();
        return Ok((TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | "))), "structured_outputs.choice", "choice"));
    }
    let g = so.grammar.clone().unwrap_or_default();
    Ok((TopLevelGrammar::from_lark(g), "structured_outputs.grammar", "grammar"))
}
