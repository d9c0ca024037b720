//! The inspection path (`LlamaModel::inspect`, through the engine's `inspect` command) against
//! a direct f64 forward written here from the safetensors weights of tiny random models:
//! attention probabilities of every layer, residual states, next-token logprobs and per-head
//! direct logit effects agree to 1e-4; attention rows sum to 1 and are causal.

use candle_core::{DType, Device};
use hhh_engine::{InspectOutput, InspectRequest};
use hhh_model::testing::{make_random_llama, RandomLlama};
use hhh_model::LlamaModel;
use std::collections::HashMap;
use std::path::Path;

struct Reference {
    w: HashMap<String, (Vec<f64>, Vec<usize>)>,
    spec: RandomLlama,
}

/// What the f64 forward returns: attention per layer `[heads, t, t]`, residual after each layer
/// at the last token, final hidden at the last token, next-token logprobs, direct logit effects
/// `[layers, heads, t - 1]`.
struct RefOut {
    attention: Vec<Vec<f64>>,
    residual_last: Vec<Vec<f64>>,
    final_last: Vec<f64>,
    logprobs: Vec<f64>,
    dla: Vec<f64>,
}

impl Reference {
    fn load(dir: &Path, spec: RandomLlama) -> Self {
        let mut w = HashMap::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                for (k, t) in candle_core::safetensors::load(&p, &Device::Cpu).unwrap() {
                    let dims = t.dims().to_vec();
                    let v: Vec<f64> = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                    w.insert(k, (v, dims));
                }
            }
        }
        Self { w, spec }
    }

    fn get(&self, k: &str) -> &[f64] {
        &self.w[k].0
    }

    /// `W x` for `W` `[out, in]`.
    fn mv(&self, k: &str, x: &[f64]) -> Vec<f64> {
        let (w, dims) = &self.w[k];
        (0..dims[0]).map(|o| w[o * dims[1]..(o + 1) * dims[1]].iter().zip(x).map(|(a, b)| a * b).sum()).collect()
    }

    fn rms(x: &[f64]) -> f64 {
        (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + 1e-5).sqrt()
    }

    fn norm(&self, k: &str, x: &[f64]) -> Vec<f64> {
        let r = Self::rms(x);
        x.iter().zip(self.get(k)).map(|(v, g)| v / r * g).collect()
    }

    /// Hugging Face RoPE (halves rotated), theta 10000.
    fn rope(x: &mut [f64], d: usize, pos: usize) {
        let half = d / 2;
        for head in x.chunks_mut(d) {
            for i in 0..half {
                let f = 1.0 / 10000f64.powf(2.0 * i as f64 / d as f64);
                let (c, s) = ((pos as f64 * f).cos(), (pos as f64 * f).sin());
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * s;
                head[i + half] = b * c + a * s;
            }
        }
    }

    fn forward(&self, ids: &[u32]) -> RefOut {
        let s = self.spec;
        let (hd, t) = (s.hidden / s.heads, ids.len());
        let group = s.heads / s.kv_heads;
        let emb = self.get("model.embed_tokens.weight");
        let mut x: Vec<Vec<f64>> = ids.iter().map(|&i| emb[i as usize * s.hidden..(i as usize + 1) * s.hidden].to_vec()).collect();
        let mut out = RefOut { attention: vec![], residual_last: vec![], final_last: vec![], logprobs: vec![], dla: vec![] };
        let mut head_outs: Vec<Vec<Vec<Vec<f64>>>> = Vec::new(); // [layer][head][pos] -> hidden
        for l in 0..s.layers {
            let p = format!("model.layers.{l}");
            let h: Vec<Vec<f64>> = x.iter().map(|r| self.norm(&format!("{p}.input_layernorm.weight"), r)).collect();
            let mut q: Vec<Vec<f64>> = h.iter().map(|r| self.mv(&format!("{p}.self_attn.q_proj.weight"), r)).collect();
            let mut k: Vec<Vec<f64>> = h.iter().map(|r| self.mv(&format!("{p}.self_attn.k_proj.weight"), r)).collect();
            let v: Vec<Vec<f64>> = h.iter().map(|r| self.mv(&format!("{p}.self_attn.v_proj.weight"), r)).collect();
            for i in 0..t {
                Self::rope(&mut q[i], hd, i);
                Self::rope(&mut k[i], hd, i);
            }
            let mut probs = vec![0.0; s.heads * t * t];
            let mut z = vec![vec![0.0; s.heads * hd]; t];
            for hh in 0..s.heads {
                let g = hh / group;
                for i in 0..t {
                    let sc: Vec<f64> = (0..=i).map(|j| (0..hd).map(|e| q[i][hh * hd + e] * k[j][g * hd + e]).sum::<f64>() / (hd as f64).sqrt()).collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let ex: Vec<f64> = sc.iter().map(|v| (v - m).exp()).collect();
                    let sum: f64 = ex.iter().sum();
                    for j in 0..=i {
                        let pj = ex[j] / sum;
                        probs[hh * t * t + i * t + j] = pj;
                        for e in 0..hd {
                            z[i][hh * hd + e] += pj * v[j][g * hd + e];
                        }
                    }
                }
            }
            out.attention.push(probs);
            // Each head's output through o_proj.
            let wo = format!("{p}.self_attn.o_proj.weight");
            let mut per_head = Vec::new();
            for hh in 0..s.heads {
                per_head.push(
                    (0..t)
                        .map(|i| {
                            let mut zi = vec![0.0; s.heads * hd];
                            zi[hh * hd..(hh + 1) * hd].copy_from_slice(&z[i][hh * hd..(hh + 1) * hd]);
                            self.mv(&wo, &zi)
                        })
                        .collect::<Vec<_>>(),
                );
            }
            head_outs.push(per_head);
            for i in 0..t {
                let o = self.mv(&wo, &z[i]);
                x[i].iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let h2 = self.norm(&format!("{p}.post_attention_layernorm.weight"), &x[i]);
                let gt = self.mv(&format!("{p}.mlp.gate_proj.weight"), &h2);
                let up = self.mv(&format!("{p}.mlp.up_proj.weight"), &h2);
                let m: Vec<f64> = gt.iter().zip(&up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
                let d = self.mv(&format!("{p}.mlp.down_proj.weight"), &m);
                x[i].iter_mut().zip(&d).for_each(|(a, b)| *a += b);
            }
            out.residual_last.push(x[t - 1].clone());
        }
        let fin: Vec<Vec<f64>> = x.iter().map(|r| self.norm("model.norm.weight", r)).collect();
        out.final_last = fin[t - 1].clone();
        let lm = self.get("lm_head.weight");
        let vocab = s.vocab;
        let mean: Vec<f64> = (0..s.hidden).map(|e| (0..vocab).map(|v| lm[v * s.hidden + e]).sum::<f64>() / vocab as f64).collect();
        let g = self.get("model.norm.weight");
        for i in 0..t - 1 {
            let logits = self.mv("lm_head.weight", &fin[i]);
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = logits.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
            out.logprobs.push(logits[ids[i + 1] as usize] - lse);
        }
        for per_head in &head_outs {
            for ho in per_head {
                for i in 0..t - 1 {
                    let next = ids[i + 1] as usize;
                    let r = Self::rms(&x[i]);
                    out.dla.push((0..s.hidden).map(|e| (lm[next * s.hidden + e] - mean[e]) * g[e] * ho[i][e]).sum::<f64>() / r);
                }
            }
        }
        out
    }
}

fn close(a: f32, b: f64, tol: f64) -> bool {
    (a as f64 - b).abs() <= tol * b.abs().max(1.0)
}

fn check(spec: RandomLlama, ids: &[u32]) {
    let dir = std::env::temp_dir().join(format!("hhh-inspect-{}-{}", std::process::id(), spec.seed));
    make_random_llama(&dir, DType::F32, &spec, None).unwrap();
    let model = LlamaModel::load(&dir).unwrap();
    let reference = Reference::load(&dir, spec);
    let want = reference.forward(ids);
    let layers: Vec<usize> = (0..spec.layers).collect();
    let req = InspectRequest { tokens: ids.to_vec(), attention_layers: layers.clone(), hidden_layers: (0..=spec.layers).collect(), token_logprobs: true, direct_logit: true };
    let got: InspectOutput = model.inspect(&req).unwrap();
    let t = ids.len();
    assert_eq!((got.num_layers, got.num_heads), (spec.layers, spec.heads));
    for l in 0..spec.layers {
        let (a, w) = (&got.attention[l], &want.attention[l]);
        assert_eq!(a.len(), spec.heads * t * t);
        for (i, (x, y)) in a.iter().zip(w).enumerate() {
            assert!(close(*x, *y, 1e-4), "layer {l} attention entry {i}: {x} vs {y}");
        }
        for row in a.chunks(t).enumerate() {
            let (r, vals) = row;
            let i = r % t;
            let sum: f64 = vals.iter().map(|&v| v as f64).sum();
            assert!((sum - 1.0).abs() < 1e-5, "row {r} sums to {sum}");
            assert!(vals[i + 1..].iter().all(|&v| v == 0.0), "row {r} attends to the future");
        }
        for (x, y) in got.hidden[l].iter().zip(&want.residual_last[l]) {
            assert!(close(*x, *y, 1e-4), "residual after layer {l}: {x} vs {y}");
        }
    }
    for (x, y) in got.hidden[spec.layers].iter().zip(&want.final_last) {
        assert!(close(*x, *y, 1e-4), "final hidden: {x} vs {y}");
    }
    assert_eq!(got.token_logprobs.len(), t - 1);
    for (x, y) in got.token_logprobs.iter().zip(&want.logprobs) {
        assert!(close(*x, *y, 1e-4), "logprob {x} vs {y}");
    }
    assert_eq!(got.direct_logit.len(), spec.layers * spec.heads * (t - 1));
    for (i, (x, y)) in got.direct_logit.iter().zip(&want.dla).enumerate() {
        assert!(close(*x, *y, 1e-4), "direct logit {i}: {x} vs {y}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspection_equals_a_direct_f64_forward() {
    let ids: Vec<u32> = (0..37).map(|i| (i * 37 + 11) % 128).collect();
    check(RandomLlama { seed: 5, ..RandomLlama::TINY }, &ids);
    // Multi-query attention (one KV head for four query heads), another seed.
    check(RandomLlama { kv_heads: 1, seed: 9, ..RandomLlama::TINY }, &ids[..20]);
}

#[test]
fn inspection_refuses_bad_requests() {
    let dir = std::env::temp_dir().join(format!("hhh-inspect-bad-{}", std::process::id()));
    make_random_llama(&dir, DType::F32, &RandomLlama::TINY, None).unwrap();
    let model = LlamaModel::load(&dir).unwrap();
    let ok = InspectRequest { tokens: vec![1, 2, 3], ..Default::default() };
    assert!(model.inspect(&ok).is_ok());
    assert!(model.inspect(&InspectRequest { tokens: vec![], ..Default::default() }).is_err());
    assert!(model.inspect(&InspectRequest { attention_layers: vec![3], ..ok.clone() }).is_err());
    assert!(model.inspect(&InspectRequest { hidden_layers: vec![4], ..ok.clone() }).is_err());
    assert!(model.inspect(&InspectRequest { tokens: vec![1, 500], token_logprobs: true, ..Default::default() }).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prefix-matching score of every head: on `seq` = `half` twice, the mean attention from each
/// second-copy position `i` to `i - n + 1`.
fn prefix_matching(out: &InspectOutput, n: usize) -> Vec<Vec<f64>> {
    let t = 2 * n;
    out.attention.iter().map(|a| (0..out.num_heads).map(|h| (n..t).map(|i| a[h * t * t + i * t + i - n + 1] as f64).sum::<f64>() / n as f64).collect()).collect()
}

/// A two-layer model whose weights are set by hand to hold an induction circuit (hidden 128,
/// 4 heads of 32, vocabulary 24, RoPE base 1e15 so that all but the first two frequency pairs
/// barely rotate over a few dozen positions):
/// - the residual stream holds the token's one-hot code (dims 0..24), a slot for the previous
///   token's code (24..48) and a constant 1 (dim 48);
/// - layer 0, head 0 is a previous-token head: constant queries and keys from dim 48 in the two
///   fast RoPE pairs, the key rotated by one position, so `q_i · k_j ∝ cos(j - i + 1) +
///   cos(θ₁ (j - i + 1))` peaks at `j = i - 1`; it copies the token code into the slot;
/// - layer 1, head 2 is the induction head: its query is the current token's code and its key
///   the previous-token slot, both in the slow RoPE pairs, so it attends where the previous
///   token equals the current one: the token after the earlier occurrence.
///
/// Every other weight is zero (those heads attend uniformly, the MLPs add nothing).
fn planted_induction_model(dir: &Path) {
    use candle_core::Tensor;
    let (vocab, hidden, heads, hd, layers) = (24usize, 128usize, 4usize, 32usize, 2usize);
    let theta = 1e15f32;
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({"architectures": ["LlamaForCausalLM"], "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": 8,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": heads, "rms_norm_eps": 1e-6,
        "rope_theta": theta, "max_position_embeddings": 64, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let zeros = |r: usize, c: usize| vec![0f32; r * c];
    let t = |v: Vec<f32>, r: usize, c: usize| Tensor::from_vec(v, (r, c), &Device::Cpu).unwrap();
    let mut w: HashMap<String, Tensor> = HashMap::new();
    let mut emb = zeros(vocab, hidden);
    for tok in 0..vocab {
        emb[tok * hidden + tok] = 1.0;
        emb[tok * hidden + 48] = 1.0;
    }
    w.insert("model.embed_tokens.weight".into(), t(emb, vocab, hidden));
    w.insert("model.norm.weight".into(), Tensor::ones(hidden, DType::F32, &Device::Cpu).unwrap());
    w.insert("lm_head.weight".into(), t((0..vocab * hidden).map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5).collect(), vocab, hidden));
    // RMS of the residual entering each layer: two ones (code, constant), then three.
    let (h0, h1) = ((hidden as f32 / 2.0).sqrt(), (hidden as f32 / 3.0).sqrt());
    let half = hd / 2;
    let freq = |p: usize| 1f32 / theta.powf((2 * p) as f32 / hd as f32);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let (mut q, mut k, mut v, mut o) = (zeros(hidden, hidden), zeros(hidden, hidden), zeros(hidden, hidden), zeros(hidden, hidden));
        if l == 0 {
            let s = 16.0f32;
            for pair in 0..2 {
                let f = freq(pair);
                q[pair * hidden + 48] = s / h0;
                k[pair * hidden + 48] = s * f.cos() / h0;
                k[(pair + half) * hidden + 48] = s * f.sin() / h0;
            }
            for c in 0..vocab {
                v[c * hidden + c] = 1.0 / h0;
                o[(24 + c) * hidden + c] = 1.0;
            }
        } else {
            // Head 2's slow-pair dimensions: 3..16 and 19..32 of the head.
            let slots: Vec<usize> = (3..half).chain(half + 3..hd).collect();
            let beta = 11.0f32;
            for (c, &slot) in slots.iter().enumerate().take(vocab) {
                q[(2 * hd + slot) * hidden + c] = beta / h1;
                k[(2 * hd + slot) * hidden + 24 + c] = beta / h1;
            }
        }
        for (name, m) in [("q_proj", q), ("k_proj", k), ("v_proj", v), ("o_proj", o)] {
            w.insert(format!("{p}.self_attn.{name}.weight"), t(m, hidden, hidden));
        }
        w.insert(format!("{p}.mlp.gate_proj.weight"), t(zeros(8, hidden), 8, hidden));
        w.insert(format!("{p}.mlp.up_proj.weight"), t(zeros(8, hidden), 8, hidden));
        w.insert(format!("{p}.mlp.down_proj.weight"), t(zeros(hidden, 8), hidden, 8));
        w.insert(format!("{p}.input_layernorm.weight"), Tensor::ones(hidden, DType::F32, &Device::Cpu).unwrap());
        w.insert(format!("{p}.post_attention_layernorm.weight"), Tensor::ones(hidden, DType::F32, &Device::Cpu).unwrap());
    }
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
}

#[test]
fn a_planted_induction_head_is_found_and_a_random_model_has_none() {
    let n = 12;
    // 12 distinct tokens of the 24, twice.
    let half: Vec<u32> = [5u32, 17, 2, 11, 23, 8, 14, 0, 20, 3, 9, 16].to_vec();
    let seq: Vec<u32> = half.iter().chain(&half).copied().collect();
    let dir = std::env::temp_dir().join(format!("hhh-planted-{}", std::process::id()));
    planted_induction_model(&dir);
    let model = LlamaModel::load(&dir).unwrap();
    let out = model.inspect(&InspectRequest { tokens: seq.clone(), attention_layers: vec![0, 1], ..Default::default() }).unwrap();
    let pm = prefix_matching(&out, n);
    assert!(pm[1][2] > 0.95, "the planted induction head: {pm:?}");
    for (l, row) in pm.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            if (l, h) != (1, 2) {
                assert!(v < 0.2, "head ({l}, {h}) should be near chance: {pm:?}");
            }
        }
    }
    // The previous-token head attends to i - 1.
    let t = 2 * n;
    let prev: f64 = (1..t).map(|i| out.attention[0][i * t + i - 1] as f64).sum::<f64>() / (t - 1) as f64;
    assert!(prev > 0.95, "previous-token head: {prev}");
    let _ = std::fs::remove_dir_all(&dir);

    // A random model of the usual tiny shape: no head does prefix matching.
    let rdir = std::env::temp_dir().join(format!("hhh-planted-random-{}", std::process::id()));
    make_random_llama(&rdir, DType::F32, &RandomLlama { seed: 3, ..RandomLlama::TINY }, None).unwrap();
    let random = LlamaModel::load(&rdir).unwrap();
    let out = random.inspect(&InspectRequest { tokens: seq.iter().map(|&x| x + 40).collect(), attention_layers: vec![0, 1, 2], ..Default::default() }).unwrap();
    let pm = prefix_matching(&out, n);
    assert!(pm.iter().flatten().all(|&v| v < 0.3), "a random model has no induction head: {pm:?}");
    let _ = std::fs::remove_dir_all(&rdir);
}

/// The GPU engine's model (`GpuLlama`, here on candle's CPU backend in f32, as
/// `--device candle-cpu` runs it) inspects like the CPU path: same attention, residuals,
/// logprobs and direct logit effects to 1e-4.
#[test]
fn gpu_model_inspection_equals_the_cpu_path() {
    let spec = RandomLlama { seed: 13, ..RandomLlama::TINY };
    let dir = std::env::temp_dir().join(format!("hhh-inspect-gpu-{}", std::process::id()));
    make_random_llama(&dir, DType::F32, &spec, None).unwrap();
    let cpu = LlamaModel::load(&dir).unwrap();
    let gpu = hhh_model::gpu::GpuLlama::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let ids: Vec<u32> = (0..29).map(|i| (i * 53 + 7) % 128).collect();
    let req = InspectRequest { tokens: ids, attention_layers: vec![0, 2], hidden_layers: vec![1, 3], token_logprobs: true, direct_logit: true };
    let (a, b) = (cpu.inspect(&req).unwrap(), gpu.inspect(&req).unwrap());
    assert_eq!((a.num_layers, a.num_heads), (b.num_layers, b.num_heads));
    let same = |x: &[f32], y: &[f32], what: &str| {
        assert_eq!(x.len(), y.len(), "{what}");
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            assert!((p - q).abs() <= 1e-4 * p.abs().max(1.0), "{what} {i}: {p} vs {q}");
        }
    };
    for l in 0..2 {
        same(&a.attention[l], &b.attention[l], "attention");
        same(&a.hidden[l], &b.hidden[l], "hidden");
    }
    same(&a.token_logprobs, &b.token_logprobs, "logprobs");
    same(&a.direct_logit, &b.direct_logit, "direct logit");
    assert!(gpu.inspect(&InspectRequest { tokens: vec![1, 500], ..Default::default() }).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
