//! The tokenizer facade: `tokenizer.json` (+ `tokenizer_config.json`) or GGUF metadata.

use crate::error::TextError;
use std::path::Path;

/// A loaded tokenizer plus the special tokens and chat template that came with the model.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same tokenizer with special-token matching off: `<|im_end|>` in user text is
    /// encoded as ordinary text (see [`Tokenizer::encode_as_text`]).
    plain: tokenizers::Tokenizer,
    /// Strings of the special (control) tokens.
    specials: Vec<String>,
    /// Prepend `bos_id` when encoding with special tokens (GGUF `add_bos_token`); HF
    /// tokenizers do this through their post-processor instead.
    add_bos: bool,
    bos_id: Option<u32>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    eos_ids: Vec<u32>,
    chat_template: Option<String>,
    /// `inner.get_vocab_size(true)`, computed once: the `tokenizers` call builds a copy of the
    /// whole vocabulary map each time (49 152 entries, ~3 % of a 16-client server profile when
    /// every request asked for it).
    vocab_size: usize,
}

fn special_str(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

fn plain(t: &tokenizers::Tokenizer) -> tokenizers::Tokenizer {
    let mut p = t.clone();
    p.set_encode_special_tokens(true);
    p
}

fn specials(t: &tokenizers::Tokenizer) -> Vec<String> {
    let mut v: Vec<String> = t.get_added_tokens_decoder().into_values().filter(|a| a.special).map(|a| a.content).collect();
    v.sort();
    v
}

impl Tokenizer {
    /// Token ids of `text` with special-token strings treated as ordinary text (no BOS/EOS).
    pub fn encode_as_text(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let enc = self.plain.encode(text, false).map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The BOS id `encode(text, true)` would prepend, if the tokenizer adds one.
    pub fn bos_for_text(&self) -> Option<u32> {
        if self.add_bos {
            self.bos_id
        } else {
            None
        }
    }

    /// Whether `text` contains the string of a special token (e.g. `<|im_end|>`).
    pub fn contains_special_text(&self, text: &str) -> bool {
        self.specials.iter().any(|s| text.contains(s.as_str()))
    }

    /// Load from a `.gguf` file or a Hugging Face model directory.
    pub fn load(path: &Path) -> Result<Self, TextError> {
        if path.is_dir() {
            Self::from_hf_dir(path)
        } else {
            Self::from_gguf(path)
        }
    }

    pub fn from_gguf(path: &Path) -> Result<Self, TextError> {
        let io = |e| TextError::Io { path: path.display().to_string(), source: e };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let ct = candle_core::quantized::gguf_file::Content::read(&mut f).map_err(|e| TextError::Gguf(e.to_string()))?;
        let (inner, add_bos) = crate::gguf_tokenizer::from_gguf(&ct)?;
        let id = |k: &str| ct.metadata.get(k).and_then(|v| v.to_u32().ok());
        let bos_id = id("tokenizer.ggml.bos_token_id");
        let eos_id = id("tokenizer.ggml.eos_token_id");
        let name = |i: Option<u32>| i.and_then(|i| inner.id_to_token(i));
        let chat_template = ct.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        Ok(Self {
            plain: plain(&inner),
            specials: specials(&inner),
            bos_token: name(bos_id),
            eos_token: name(eos_id),
            add_bos,
            bos_id,
            eos_ids: eos_id.into_iter().collect(),
            chat_template,
            vocab_size: inner.get_vocab_size(true),
            inner,
        })
    }

    pub fn from_hf_dir(dir: &Path) -> Result<Self, TextError> {
        let tj = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&tj).map_err(|e| TextError::Tokenizer(format!("{}: {e}", tj.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(s) => serde_json::from_str(&s).map_err(|e| TextError::Tokenizer(format!("{}: {e}", cfg_path.display())))?,
            Err(_) => serde_json::Value::Null,
        };
        let bos_token = special_str(cfg.get("bos_token"));
        let eos_token = special_str(cfg.get("eos_token"));
        let chat_template = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        let eos_ids = eos_token.as_deref().and_then(|t| inner.token_to_id(t)).into_iter().collect();
        Ok(Self { plain: plain(&inner), specials: specials(&inner), bos_id: None, add_bos: false, bos_token, eos_token, eos_ids, chat_template, vocab_size: inner.get_vocab_size(true), inner })
    }

    /// Token ids of `text`; `add_special` adds BOS/EOS as the model's tokenizer prescribes.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TextError> {
        let enc = self.inner.encode(text, add_special).map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special && self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`; `skip_special` drops special tokens such as `<|im_end|>`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TextError> {
        self.inner.decode(ids, skip_special).map_err(|e| TextError::Tokenizer(e.to_string()))
    }

    /// The text of a single token (special tokens included), as OpenAI's `logprobs.token`.
    pub fn token_text(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_default()
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }
    /// Ids that end generation by default.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    /// The tokenizer as Hugging Face `tokenizer.json` text (for libraries that read that format,
    /// such as the structured-output grammar engine).
    pub fn to_hf_json(&self) -> Result<String, TextError> {
        self.inner.to_string(false).map_err(|e| TextError::Tokenizer(e.to_string()))
    }

    /// Id of a token given by its exact text (e.g. a special token).
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }
}
