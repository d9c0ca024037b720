//! The paged engine on a tiny random-weight Hugging Face model (config.json + safetensors,
//! created here) against candle-transformers' `llama` (contiguous KV cache), in f32.

mod common;
use candle_core::DType;
use common::*;
use std::sync::atomic::Ordering;

const NEW_TOKENS: usize = 64;

fn check(dtype: DType, name: &str) {
    let dir = std::env::temp_dir().join(format!("hhh-tiny-{name}-{}", std::process::id()));
    make_tiny_model(&dir, dtype, None);
    let prompts = tiny_prompts();
    let want = hf_reference(&dir, &prompts, NEW_TOKENS);
    let mut failures = vec![];
    for (label, blocks, budget) in [("roomy", 128, 32), ("preempt", 14, 128)] {
        let c = engine(dir.clone(), blocks, 16, budget);
        let got = run_all(&c, &prompts, greedy(NEW_TOKENS));
        if label == "preempt" {
            assert!(c.stats().num_preemptions.load(Ordering::SeqCst) > 0, "no preemption with {blocks} blocks");
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // f32 everywhere and no activation quantization: only summation order differs.
            failures.extend(compare(&format!("{name}/{label}/{i}"), g, w, 1e-3).err());
        }
        assert_eq!(wait_no_blocks(&c), 0);
        c.shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn tiny_f32_model_matches_reference() {
    check(DType::F32, "f32");
}

#[test]
fn tiny_bf16_model_matches_reference() {
    check(DType::BF16, "bf16");
}
