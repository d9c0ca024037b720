//! hhh-text: everything between strings and token ids.
//!
//! - [`Tokenizer`]: from `tokenizer.json`, or built from GGUF metadata (byte-level BPE);
//! - [`ChatTemplate`]: the model's own Jinja chat template, rendered with minijinja the way
//!   Hugging Face `apply_chat_template` renders it;
//! - [`IncrementalDetokenizer`]: streamed text that never splits a UTF-8 character;
//! - [`StopMatcher`]: stop strings matched across token boundaries, never emitted;
//! - [`tool_parse`]: tool calls in a model's own output format (Hermes, Llama 3 JSON, Mistral).

pub mod chat_encode;
pub mod chat_template;
pub mod detok;
pub mod error;
mod gguf_tokenizer;
pub mod stop;
pub mod tokenizer;
pub mod tool_parse;

pub use chat_encode::{encode_chat, encode_chat_with_tools};
pub use chat_template::{ChatMessage, ChatTemplate};
pub use detok::IncrementalDetokenizer;
pub use error::TextError;
pub use stop::StopMatcher;
pub use tokenizer::Tokenizer;
