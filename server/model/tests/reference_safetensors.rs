//! The paged engine on a tiny random-weight Hugging Face model (config.json + safetensors,
//! created here) against candle-transformers' `llama` (contiguous KV cache), in f32.

mod common;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use common::*;
use std::path::Path;
use std::sync::atomic::Ordering;

const NEW_TOKENS: usize = 64;

fn reference(dir: &Path, prompts: &[Vec<u32>]) -> Vec<RefRun> {
    let dev = Device::Cpu;
    let cfg: LlamaConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
    files.sort();
    let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &dev).unwrap() };
    let model = Llama::load(vb, &cfg).unwrap();
    prompts
        .iter()
        .map(|p| {
            let mut cache = Cache::new(true, DType::F32, &cfg, &dev).unwrap();
            greedy_reference(p, NEW_TOKENS, |input, pos| {
                let x = Tensor::new(input, &dev).unwrap().unsqueeze(0).unwrap();
                model.forward(&x, pos, &mut cache).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap()
            })
        })
        .collect()
}

fn tiny_prompts() -> Vec<Vec<u32>> {
    [1usize, 5, 16, 17, 40, 90].iter().enumerate().map(|(k, &n)| (0..n).map(|i| ((i * 13 + k * 29) % 125 + 3) as u32).collect()).collect()
}

fn check(dtype: DType, name: &str) {
    let dir = std::env::temp_dir().join(format!("hhh-tiny-{name}-{}", std::process::id()));
    make_tiny_model(&dir, dtype, None);
    let prompts = tiny_prompts();
    let want = reference(&dir, &prompts);
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
