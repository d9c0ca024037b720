//! Inspection on the GPU engine's model ([`hhh_engine::inspect`]): projections, norms and MLPs
//! on the device in the model's dtype, attention on the host through the CPU path's f64
//! [`crate::inspect::dense_attention`] (so probabilities can be kept and both engines compute
//! them with one function). Serving never runs this code.

use super::GpuLlama;
use crate::error::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use hhh_engine::inspect::MAX_INSPECT_TOKENS;
use hhh_engine::{InspectOutput, InspectRequest};

impl GpuLlama {
    /// Run `req.tokens` through the model densely and capture what `req` asks for.
    pub fn inspect(&self, req: &InspectRequest) -> Result<InspectOutput> {
        let c = &self.cfg;
        let t = req.tokens.len();
        let max = MAX_INSPECT_TOKENS.min(c.max_position_embeddings);
        if t == 0 || t > max {
            return Err(ModelError::Invalid(format!("inspection needs 1 to {max} tokens, got {t}")));
        }
        let nl = self.layers.len();
        if let Some(l) = req.attention_layers.iter().find(|&&l| l >= nl) {
            return Err(ModelError::Invalid(format!("attention layer {l} is out of range (the model has {nl})")));
        }
        if let Some(l) = req.hidden_layers.iter().find(|&&l| l > nl) {
            return Err(ModelError::Invalid(format!("hidden layer {l} is out of range (0 to {nl})")));
        }
        if let Some(&id) = req.tokens.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(ModelError::Invalid(format!("token id {id} is outside the vocabulary ({})", c.vocab_size)));
        }
        let dev = &self.device;
        let eps = c.rms_norm_eps as f32;
        let (qw, kw, hd, heads) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.head_dim, c.num_heads);
        let pos: Vec<u32> = (0..t as u32).collect();
        let pos_t = Tensor::from_slice(&pos, t, dev)?;
        let half = hd / 2;
        let cos = self.cos.index_select(&pos_t, 0)?.reshape((t, 1, half))?;
        let sin = self.sin.index_select(&pos_t, 0)?.reshape((t, 1, half))?;
        let rope = |x: Tensor, n: usize| -> Result<Tensor> {
            let x = x.contiguous()?.reshape((t, n, 1, hd))?;
            let r = if c.rope_interleaved { candle_nn::rotary_emb::rope_i(&x, &cos, &sin)? } else { candle_nn::rotary_emb::rope(&x, &cos, &sin)? };
            Ok(r.reshape((t, n * hd))?)
        };
        let host = |x: &Tensor| -> Result<Vec<f32>> { Ok(x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?) };
        // Direct logit attribution: (u[next] - ū) ⊙ g per position.
        let dirs = if req.direct_logit && t > 1 {
            let next = Tensor::from_slice(&req.tokens[1..], t - 1, dev)?;
            let rows = host(&self.lm_head.index_select(&next, 0)?)?;
            let mean = host(&self.lm_head.to_dtype(DType::F32)?.mean(0)?)?;
            let g = host(&self.norm)?;
            Some(rows.chunks(c.hidden_size).flat_map(|r| r.iter().zip(&mean).zip(&g).map(|((&u, &m), &g)| (u - m) * g).collect::<Vec<_>>()).collect::<Vec<f32>>())
        } else {
            None
        };
        let mut out = InspectOutput { num_layers: nl, num_heads: heads, ..Default::default() };
        let mut attention: Vec<Vec<f32>> = vec![Vec::new(); req.attention_layers.len()];
        let mut hidden: Vec<Vec<f32>> = vec![Vec::new(); req.hidden_layers.len()];
        let mut dla = Vec::new();
        let mut x = self.embed.index_select(&Tensor::from_slice(&req.tokens, t, dev)?, 0)?;
        for (li, l) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &l.attn_norm, eps)?;
            let mut qkv = h.matmul(&l.qkv.t()?)?;
            if let Some(b) = &l.qkv_bias {
                qkv = qkv.broadcast_add(b)?;
            }
            let q = host(&rope(qkv.narrow(1, 0, qw)?, heads)?)?;
            let k = host(&rope(qkv.narrow(1, qw, kw)?, c.num_kv_heads)?)?;
            let v = host(&qkv.narrow(1, qw + kw, kw)?)?;
            let keep = req.attention_layers.contains(&li);
            let (att, probs) = crate::inspect::dense_attention(&q, &k, &v, t, heads, c.num_kv_heads, hd, keep);
            if let Some(p) = probs {
                for (slot, _) in req.attention_layers.iter().enumerate().filter(|(_, &a)| a == li) {
                    attention[slot] = p.clone();
                }
            }
            if let Some(dirs) = &dirs {
                // Row (h, i): the attention output at i with every head but h zeroed.
                let rows = t - 1;
                let mut masked = vec![0f32; heads * rows * qw];
                for hh in 0..heads {
                    for i in 0..rows {
                        masked[(hh * rows + i) * qw + hh * hd..][..hd].copy_from_slice(&att[i * qw + hh * hd..][..hd]);
                    }
                }
                let m = Tensor::from_vec(masked, (heads * rows, qw), dev)?.to_dtype(self.dtype)?;
                let y = host(&m.matmul(&l.o.t()?)?)?;
                let hs = c.hidden_size;
                dla.extend((0..heads * rows).map(|r| y[r * hs..(r + 1) * hs].iter().zip(&dirs[(r % rows) * hs..][..hs]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32));
            }
            let att = Tensor::from_vec(att, (t, qw), dev)?.to_dtype(self.dtype)?;
            x = (x + att.matmul(&l.o.t()?)?)?;
            let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps)?;
            let gu = h.matmul(&l.gate_up.t()?)?;
            let i = c.intermediate_size;
            let m = (gu.narrow(1, 0, i)?.silu()? * gu.narrow(1, i, i)?)?;
            x = (x + m.matmul(&l.down.t()?)?)?;
            for (slot, _) in req.hidden_layers.iter().enumerate().filter(|(_, &a)| a == li) {
                hidden[slot] = host(&x.get(t - 1)?)?;
            }
        }
        let xf = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        for (slot, _) in req.hidden_layers.iter().enumerate().filter(|(_, &a)| a == nl) {
            hidden[slot] = host(&xf.get(t - 1)?)?;
        }
        if dirs.is_some() {
            let xs = host(&x)?;
            let rms: Vec<f64> = xs.chunks(c.hidden_size).map(|r| ((r.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / c.hidden_size as f64) + eps as f64).sqrt()).collect();
            for (i, d) in dla.iter_mut().enumerate() {
                *d = (*d as f64 / rms[i % (t - 1)]) as f32;
            }
            out.direct_logit = dla;
        }
        if req.token_logprobs && t > 1 {
            let mut lps = Vec::with_capacity(t - 1);
            let mut start = 0;
            while start < t - 1 {
                let n = 64.min(t - 1 - start);
                let logits = self.logits(&xf.narrow(0, start, n)?)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
                for (i, row) in logits.iter().enumerate() {
                    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                    let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
                    lps.push((row[req.tokens[start + i + 1] as usize] as f64 - lse) as f32);
                }
                start += n;
            }
            out.token_logprobs = lps;
        }
        out.attention = attention;
        out.hidden = hidden;
        Ok(out)
    }
}
