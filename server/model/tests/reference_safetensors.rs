//! The paged engine on a tiny random-weight Hugging Face model (config.json + safetensors,
//! created here) against candle-transformers' `llama` (contiguous KV cache), in f32.

mod common;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

const NEW_TOKENS: usize = 64;

/// Write a seeded random Llama (vocab 128, hidden 64, 3 layers, 4 heads / 2 KV heads) to `dir`.
fn make_tiny_model(dir: &Path, dtype: DType) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "vocab_size": 128, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 512, "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let dev = Device::Cpu;
    let mut seed = 0x5eed_u64;
    let mut rand = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0 * scale
            })
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap().to_dtype(dtype).unwrap()
    };
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), rand(&[128, 64], 1.0));
    t.insert("lm_head.weight".into(), rand(&[128, 64], 0.5));
    t.insert("model.norm.weight".into(), (rand(&[64], 0.1) + 1.0).unwrap());
    for l in 0..3 {
        let p = format!("model.layers.{l}");
        for (n, s) in [("self_attn.q_proj", [64, 64]), ("self_attn.k_proj", [32, 64]), ("self_attn.v_proj", [32, 64]), ("self_attn.o_proj", [64, 64]), ("mlp.gate_proj", [128, 64]), ("mlp.up_proj", [128, 64]), ("mlp.down_proj", [64, 128])] {
            t.insert(format!("{p}.{n}.weight"), rand(&s, 0.25));
        }
        t.insert(format!("{p}.input_layernorm.weight"), (rand(&[64], 0.1) + 1.0).unwrap());
        t.insert(format!("{p}.post_attention_layernorm.weight"), (rand(&[64], 0.1) + 1.0).unwrap());
    }
    // Two shards, to exercise sharded loading.
    let (a, b): (Vec<_>, Vec<_>) = t.into_iter().partition(|(k, _)| k.contains("layers.0") || k.contains("embed"));
    candle_core::safetensors::save(&a.into_iter().collect::<HashMap<_, _>>(), dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b.into_iter().collect::<HashMap<_, _>>(), dir.join("model-00002-of-00002.safetensors")).unwrap();
    dir.to_path_buf()
}

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
    make_tiny_model(&dir, dtype);
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
