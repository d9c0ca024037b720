//! The grammar engine sees the default tokenizer's tokens as the bytes they decode to.

use hhh_text::Tokenizer;
use std::path::Path;

#[test]
fn token_bytes_match_decoding() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let tok = Tokenizer::load(&model).expect("make model first");
    let words = hhh_api::structured::token_bytes(&tok).expect("token bytes");
    assert_eq!(words.len(), tok.vocab_size());
    let mut checked = 0;
    let mut bad = Vec::new();
    for id in 0..tok.vocab_size() as u32 {
        let text = tok.decode(&[id], false).unwrap_or_default();
        if text.contains('\u{FFFD}') || text.is_empty() || words[id as usize].first() == Some(&0xFF) {
            continue; // a partial UTF-8 sequence alone, or a special token (llguidance marks those 0xFF)
        }
        checked += 1;
        if words[id as usize] != text.as_bytes() && bad.len() < 10 {
            bad.push(format!("{id}: {text:?} vs {:?}", String::from_utf8_lossy(&words[id as usize])));
        }
    }
    assert!(checked > 40_000, "{checked}");
    assert_eq!(words[2].first(), Some(&0xFF), "<|im_end|> is special");
    assert!(bad.is_empty(), "{bad:#?}");
}
