//! The reference path for looking inside the model ([`hhh_engine::inspect`]): one sequence
//! through the same weights as serving, densely (no paged KV), with Q4_1 projections on their
//! f32 path (dequantized weights) and attention computed here in f64 so its probabilities can be
//! kept. Serving never runs this code.

use crate::error::{ModelError, Result};
use crate::llama::{Layer, Linear, LlamaModel};
use candle_core::{Device, Tensor};
use hhh_engine::{InspectOutput, InspectRequest};

pub use hhh_engine::inspect::MAX_INSPECT_TOKENS;

impl LlamaModel {
    /// Run `req.tokens` through the reference path and capture what `req` asks for.
    pub fn inspect(&self, req: &InspectRequest) -> Result<InspectOutput> {
        let c = &self.cfg;
        let t = req.tokens.len();
        if t == 0 || t > MAX_INSPECT_TOKENS.min(self.rope.max_pos()) {
            return Err(ModelError::Invalid(format!("inspection needs 1 to {} tokens, got {t}", MAX_INSPECT_TOKENS.min(self.rope.max_pos()))));
        }
        let nl = self.layers.len();
        if let Some(l) = req.attention_layers.iter().find(|&&l| l >= nl) {
            return Err(ModelError::Invalid(format!("attention layer {l} is out of range (the model has {nl})")));
        }
        if let Some(l) = req.hidden_layers.iter().find(|&&l| l > nl) {
            return Err(ModelError::Invalid(format!("hidden layer {l} is out of range (0 to {nl})")));
        }
        let dev = Device::Cpu;
        let eps = c.rms_norm_eps as f32;
        let all_f32 = vec![true; t];
        let (qw, kw) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        // Direct logit attribution needs, per position, (u[next] - mean u) ⊙ final-norm weight.
        let dla_dirs = if req.direct_logit && t > 1 { Some(self.logit_directions(&req.tokens[1..])?) } else { None };
        let mut out = InspectOutput { num_layers: nl, num_heads: c.num_heads, ..Default::default() };
        let mut attention: Vec<Option<Vec<f32>>> = vec![None; req.attention_layers.len()];
        let mut hidden: Vec<Option<Vec<f32>>> = vec![None; req.hidden_layers.len()];
        let mut dla = Vec::new();
        let mut x = self.embed.lookup(&req.tokens)?;
        for (li, l) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &l.attn_norm, eps)?;
            let mut qkv = Linear::forward_many(&[&l.q, &l.k, &l.v], &h, false, &all_f32)?.into_iter();
            let (mut q, mut k, v) = match (qkv.next(), qkv.next(), qkv.next()) {
                (Some(q), Some(k), Some(v)) => (q, k, v),
                _ => return Err(ModelError::Invalid("q/k/v projection".into())),
            };
            for r in 0..t {
                self.rope.apply(&mut q[r * qw..(r + 1) * qw], c.head_dim, r);
                self.rope.apply(&mut k[r * kw..(r + 1) * kw], c.head_dim, r);
            }
            let keep = req.attention_layers.contains(&li);
            let (att, probs) = dense_attention(&q, &k, &v, t, c.num_heads, c.num_kv_heads, c.head_dim, keep);
            if let Some(p) = probs {
                for (slot, _) in req.attention_layers.iter().enumerate().filter(|(_, &a)| a == li) {
                    attention[slot] = Some(p.clone());
                }
            }
            if let Some(dirs) = &dla_dirs {
                dla.extend(head_logit_effects(l, &att, t, c.num_heads, c.head_dim, dirs, c.hidden_size)?);
            }
            let att = Tensor::from_vec(att, (t, qw), &dev)?;
            x = (l.o.forward(&att, false, &all_f32)? + &x)?;
            let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps)?;
            let mut gu = Linear::forward_many(&[&l.gate, &l.up], &h, false, &all_f32)?.into_iter();
            let (g, u) = match (gu.next(), gu.next()) {
                (Some(g), Some(u)) => (g, u),
                _ => return Err(ModelError::Invalid("gate/up projection".into())),
            };
            let m: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect();
            let m = Tensor::from_vec(m, (t, u.len() / t), &dev)?;
            x = (l.down.forward(&m, false, &all_f32)? + &x)?;
            for (slot, _) in req.hidden_layers.iter().enumerate().filter(|(_, &a)| a == li) {
                hidden[slot] = Some(x.get(t - 1)?.to_vec1::<f32>()?);
            }
        }
        let xf = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        for (slot, _) in req.hidden_layers.iter().enumerate().filter(|(_, &a)| a == nl) {
            hidden[slot] = Some(xf.get(t - 1)?.to_vec1::<f32>()?);
        }
        if dla_dirs.is_some() {
            // Divide by the final residual's RMS at each position (the norm's data-dependent part).
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let rms: Vec<f64> = xs.chunks(c.hidden_size).map(|r| ((r.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / c.hidden_size as f64) + eps as f64).sqrt()).collect();
            for (i, d) in dla.iter_mut().enumerate() {
                *d = (*d as f64 / rms[i % (t - 1)]) as f32;
            }
            out.direct_logit = dla;
        }
        if req.token_logprobs && t > 1 {
            out.token_logprobs = self.next_token_logprobs(&xf, &req.tokens)?;
        }
        out.attention = attention.into_iter().map(|a| a.unwrap_or_default()).collect();
        out.hidden = hidden.into_iter().map(|h| h.unwrap_or_default()).collect();
        Ok(out)
    }

    /// `(u[next_t] - ū) ⊙ g` per position (`[next.len(), hidden]`, flat), `g` the final norm's
    /// weight.
    fn logit_directions(&self, next: &[u32]) -> Result<Vec<f32>> {
        let (rows, mean) = self.lm_head.rows_and_mean(next)?;
        let g = self.norm.to_vec1::<f32>()?;
        let h = g.len();
        Ok(rows.chunks(h).flat_map(|r| r.iter().zip(&mean).zip(&g).map(|((&u, &m), &g)| (u - m) * g).collect::<Vec<_>>()).collect())
    }

    /// `log p(tokens[i + 1] | ..=i)` from final hidden states, 64 rows of logits at a time.
    fn next_token_logprobs(&self, xf: &Tensor, tokens: &[u32]) -> Result<Vec<f32>> {
        let t = tokens.len();
        let mut out = Vec::with_capacity(t - 1);
        let mut start = 0;
        while start < t - 1 {
            let n = 64.min(t - 1 - start);
            let logits = self.logits(&xf.narrow(0, start, n)?)?.to_vec2::<f32>()?;
            for (i, row) in logits.iter().enumerate() {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
                let target = tokens[start + i + 1] as usize;
                let v = row.get(target).ok_or_else(|| ModelError::Invalid(format!("token id {target} is outside the vocabulary")))?;
                out.push((*v as f64 - lse) as f32);
            }
            start += n;
        }
        Ok(out)
    }
}

/// Causal attention over one sequence, accumulated in f64: the output `[t, heads * head_dim]`
/// and, with `keep`, the probabilities `[heads, t, t]`.
#[allow(clippy::too_many_arguments)]
pub fn dense_attention(q: &[f32], k: &[f32], v: &[f32], t: usize, heads: usize, kv_heads: usize, d: usize, keep: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let group = heads / kv_heads.max(1);
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f32; t * heads * d];
    let mut probs = if keep { vec![0f32; heads * t * t] } else { Vec::new() };
    let mut p = vec![0f64; t];
    for h in 0..heads {
        let g = h / group.max(1);
        for i in 0..t {
            let qi = &q[i * heads * d + h * d..][..d];
            let mut max = f64::NEG_INFINITY;
            for (j, pj) in p.iter_mut().enumerate().take(i + 1) {
                let kj = &k[j * kv_heads * d + g * d..][..d];
                *pj = qi.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale;
                max = max.max(*pj);
            }
            let mut sum = 0.0;
            for pj in p.iter_mut().take(i + 1) {
                *pj = (*pj - max).exp();
                sum += *pj;
            }
            let o = &mut out[i * heads * d + h * d..][..d];
            let mut acc = vec![0f64; d];
            for (j, pj) in p.iter_mut().enumerate().take(i + 1) {
                *pj /= sum;
                let vj = &v[j * kv_heads * d + g * d..][..d];
                acc.iter_mut().zip(vj).for_each(|(a, &b)| *a += *pj * b as f64);
                if keep {
                    probs[h * t * t + i * t + j] = *pj as f32;
                }
            }
            o.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
        }
    }
    (out, keep.then_some(probs))
}

/// Per head, the dot product of its output through the output projection (bias excluded) at
/// position `i` with `dirs[i]`, for `i < t - 1`: `[heads, t - 1]` flat.
fn head_logit_effects(l: &Layer, att: &[f32], t: usize, heads: usize, d: usize, dirs: &[f32], hidden: usize) -> Result<Vec<f32>> {
    let qw = heads * d;
    let rows = t - 1;
    // Row (h, i): the attention output at i with every head but h zeroed.
    let mut masked = vec![0f32; heads * rows * qw];
    for h in 0..heads {
        for i in 0..rows {
            let src = &att[i * qw + h * d..][..d];
            masked[(h * rows + i) * qw + h * d..][..d].copy_from_slice(src);
        }
    }
    let x = Tensor::from_vec(masked, (heads * rows, qw), &Device::Cpu)?;
    let y = l.o.forward_no_bias(&x)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((0..heads * rows).map(|r| y[r * hidden..(r + 1) * hidden].iter().zip(&dirs[(r % rows) * hidden..][..hidden]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32).collect())
}
