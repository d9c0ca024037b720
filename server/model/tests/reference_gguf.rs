//! The paged, batched engine against a non-paged reference: candle-transformers'
//! `quantized_llama` (contiguous KV cache, one sequence at a time) on the default GGUF model.

mod common;
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use common::*;
use std::sync::atomic::Ordering;

const NEW_TOKENS: usize = 64;
/// Near-tie threshold in logits. The Q4_1 × Q8_1 dot products quantize activations to int8, so
/// summation-order noise (our paged kernel vs candle's matmul attention) flips an int8 rounding
/// now and then and moves logits by up to a few hundredths; see the logprob test below.
const TIE_TOL: f32 = 0.25;

fn reference(prompts: &[Vec<u32>]) -> Vec<RefRun> {
    let path = default_model();
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let mut m = ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
    prompts
        .iter()
        .map(|p| {
            m.clear_kv_cache();
            let (mut tokens, mut gaps, mut tops, mut lps) = (vec![], vec![], vec![], vec![]);
            let mut input = p.clone();
            let mut pos = 0;
            for _ in 0..NEW_TOKENS {
                let x = Tensor::new(input.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
                let logits = m.forward(&x, pos).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
                pos += input.len();
                let (t, g) = argmax_gap(&logits);
                tokens.push(t);
                gaps.push(g);
                tops.push(top5(&logits));
                lps.push(hhh_model::sampler::log_softmax(&logits)[t as usize]);
                input = vec![t];
            }
            RefRun { tokens, gaps, top5: tops, logprobs: lps }
        })
        .collect()
}

#[test]
fn paged_engine_matches_reference_in_three_configurations() {
    let prompts = prompts();
    let want = reference(&prompts);
    let mut failures = vec![];

    // 1. Everything concurrent, roomy pool, chunked prefill (budget 64 < longest prompt).
    let c = engine(default_model(), 256, 16, 64);
    let got = run_all(&c, &prompts, greedy(NEW_TOKENS));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        failures.extend(compare(&format!("roomy/{i}"), g, w, TIE_TOL).err());
    }
    assert_eq!(wait_no_blocks(&c), 0);
    c.shutdown();

    // 2. A pool too small for all of them at once: preemption by recompute.
    let c = engine(default_model(), 28, 16, 256);
    let got = run_all(&c, &prompts, greedy(NEW_TOKENS));
    assert!(c.stats().num_preemptions.load(Ordering::SeqCst) > 0, "the small pool did not force preemption");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        failures.extend(compare(&format!("preempt/{i}"), g, w, TIE_TOL).err());
    }
    c.shutdown();

    // 3. Prefix sharing: prompts that extend a common 48-token prefix, after it is cached.
    let base: Vec<u32> = (0..48).map(|i| 200 + i * 3).collect();
    let shared: Vec<Vec<u32>> = (0..4).map(|k| base.iter().copied().chain((0..5 + k).map(|i| 5000 + i * 11 + k)).collect()).collect();
    let want_shared = reference(&shared);
    let c = engine(default_model(), 256, 16, 512);
    run_all(&c, &shared[..1], greedy(1));
    let got = run_all(&c, &shared, greedy(NEW_TOKENS));
    assert!(c.stats().prefix_hit_tokens.load(Ordering::SeqCst) >= 4 * 48, "prefix blocks were not reused");
    for (i, (g, w)) in got.iter().zip(&want_shared).enumerate() {
        failures.extend(compare(&format!("prefix/{i}"), g, w, TIE_TOL).err());
    }
    c.shutdown();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Teacher-forced: the engine's prompt logprobs (echo) over the reference's own 64 generated
/// tokens equal the reference's logprobs of those tokens.
#[test]
fn prompt_logprobs_match_reference() {
    let prompts = prompts();
    let want = reference(&prompts[2..4]);
    let c = engine(default_model(), 256, 16, 40);
    for (p, w) in prompts[2..4].iter().zip(&want) {
        let mut seq = p.clone();
        seq.extend(&w.tokens);
        let mut params = greedy(1);
        params.prompt_logprobs = Some(1);
        let mut h = c.submit(seq.clone(), params).unwrap();
        let mut got = vec![];
        while let Some(ev) = h.blocking_recv() {
            match ev {
                hhh_engine::EngineEvent::PromptLogprobs { start, logprobs } => {
                    assert_eq!(start, got.len() + 1);
                    got.extend(logprobs);
                }
                hhh_engine::EngineEvent::Finished { .. } => break,
                _ => {}
            }
        }
        assert_eq!(got.len(), seq.len() - 1);
        let gen = &got[p.len() - 1..];
        let mut worst = 0f32;
        for (i, (g, &r)) in gen.iter().zip(&w.logprobs).enumerate() {
            assert_eq!(g.token, w.tokens[i]);
            worst = worst.max((g.logprob - r).abs());
        }
        eprintln!("max |logprob difference| over {} tokens: {worst}", gen.len());
        // The reference disagrees with itself by this much: its one-shot prefill and its
        // token-by-token decode of the same 72 tokens differ by up to 0.35-0.59 in logprob
        // (measured 2026-11-27), because activations are quantized to int8 per row.
        assert!(worst < 0.25, "logprobs drift from the reference by {worst}");
    }
}
