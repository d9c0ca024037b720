//! Build a Hugging Face `tokenizers::Tokenizer` from GGUF metadata (`tokenizer.ggml.model = gpt2`:
//! byte-level BPE). The pre-tokenizer follows `tokenizer.ggml.pre`, matching the
//! `tokenizer.json` the model was converted from:
//! - `smollm`: `Digits(individual_digits)` then GPT-2 `ByteLevel` (SmolLM/SmolLM2's tokenizer.json;
//!   llama.cpp's `LLAMA_VOCAB_PRE_TYPE_SMOLLM` splits `\p{N}` first for the same reason);
//! - `llama-bpe`/`llama3`/`smaug-bpe`: the Llama-3 split regex, then `ByteLevel` without regex;
//! - `qwen2`: the Qwen2 split regex, then `ByteLevel` without regex;
//! - anything else: GPT-2 `ByteLevel`.

use crate::error::TextError;
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn strings(ct: &Content, key: &str) -> Result<Vec<String>, TextError> {
    match ct.metadata.get(key) {
        Some(Value::Array(a)) => a.iter().map(|v| v.to_string().cloned().map_err(|e| TextError::Gguf(format!("{key}: {e}")))).collect(),
        _ => Err(TextError::Gguf(format!("missing `{key}`"))),
    }
}

fn split_then_bytes(re: &str) -> Result<PreTokenizerWrapper, TextError> {
    let split = Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false).map_err(|e| TextError::Tokenizer(e.to_string()))?;
    Ok(Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into())
}

/// The tokenizer and, when the file states it, whether a BOS token is prepended.
pub(crate) fn from_gguf(ct: &Content) -> Result<(tokenizers::Tokenizer, bool), TextError> {
    let model = ct.metadata.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    if model != "gpt2" {
        return Err(TextError::Gguf(format!("tokenizer model `{model}` is not supported (only byte-level BPE `gpt2`); use a directory with tokenizer.json")));
    }
    let tokens = strings(ct, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings(ct, "tokenizer.ggml.merges")?.into_iter().filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()))).collect();
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| TextError::Tokenizer(e.to_string()))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let pre = ct.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    let pre_tok: PreTokenizerWrapper = match pre.as_str() {
        "smollm" => Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(),
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" => split_then_bytes(LLAMA3_SPLIT)?,
        "qwen2" => split_then_bytes(QWEN2_SPLIT)?,
        _ => ByteLevel::new(false, true, true).into(),
    };
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    // Control tokens (type 3) are special; user-defined ones (type 4) are added but not special.
    if let Some(Value::Array(types)) = ct.metadata.get("tokenizer.ggml.token_type") {
        let mut special = vec![];
        let mut user = vec![];
        for (i, t) in types.iter().enumerate() {
            match t.to_i32().ok().or_else(|| t.to_u32().ok().map(|x| x as i32)) {
                Some(3) => special.push(AddedToken::from(tokens[i].clone(), true)),
                Some(4) => user.push(AddedToken::from(tokens[i].clone(), false)),
                _ => {}
            }
        }
        tok.add_special_tokens(&special);
        tok.add_tokens(&user);
    }
    let add_bos = ct.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
    Ok((tok, add_bos))
}
