//! Incremental detokenization: emit text as tokens arrive without splitting a UTF-8 character
//! or a byte-level BPE sequence (the prefix/read-offset scheme of TGI and vLLM).

use crate::tokenizer::Tokenizer;

/// Turns a growing list of generated ids into text deltas.
pub struct IncrementalDetokenizer {
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// Ids before this were already emitted.
    read_offset: usize,
    skip_special: bool,
}

impl IncrementalDetokenizer {
    pub fn new(skip_special: bool) -> Self {
        Self { ids: Vec::new(), prefix_offset: 0, read_offset: 0, skip_special }
    }

    /// Add one token; returns the new text it completes (maybe empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], self.skip_special).unwrap_or_default();
        let full = tok.decode(&self.ids[self.prefix_offset..], self.skip_special).unwrap_or_default();
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.is_char_boundary(prefix.len()) {
            let delta = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            delta
        } else {
            String::new()
        }
    }

    /// Whatever is still held back (an incomplete character at the very end).
    pub fn flush(&mut self, tok: &Tokenizer) -> String {
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], self.skip_special).unwrap_or_default();
        let full = tok.decode(&self.ids[self.prefix_offset..], self.skip_special).unwrap_or_default();
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        if full.len() > prefix.len() && full.is_char_boundary(prefix.len()) {
            full[prefix.len()..].to_string()
        } else {
            String::new()
        }
    }
}
