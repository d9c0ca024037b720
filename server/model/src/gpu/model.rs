//! The Llama-family model on a candle device (CUDA, or candle's CPU backend for tests), in
//! bf16, f16 or f32, over a flattened batch: every tensor op stays on the device. Per layer:
//! RMSNorm → fused QKV GEMM (+ bias) → RoPE (NeoX or interleaved, per-row positions) → KV write
//! (our `reshape_and_cache`) → paged attention (our decode and prefill kernels) → O GEMM +
//! residual → RMSNorm → fused gate|up GEMM → SiLU·mul → down GEMM + residual. After the last
//! layer's attention only the rows that need logits or pooling go on; the LM head runs on those.
//! Nothing comes back to the host inside [`GpuLlama::forward_hidden`]; the runner copies the
//! final logits and pooled rows only.

use super::ops::{check_shapes, KvWrite, PagedAttention};
use super::step::StepMeta;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use hhh_kernels::cpu::CacheGeom;
use hhh_kernels::SeqMeta;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod inspect;

/// One decoder layer's weights on the device (`[out, in]`, as in the checkpoint; fused along
/// `out` at load).
struct Layer {
    attn_norm: Tensor,
    /// `[q | k | v]` rows.
    qkv: Tensor,
    qkv_bias: Option<Tensor>,
    o: Tensor,
    ffn_norm: Tensor,
    /// `[gate | up]` rows.
    gate_up: Tensor,
    down: Tensor,
}

/// A model loaded onto a device.
pub struct GpuLlama {
    pub cfg: LlamaConfig,
    pub device: Device,
    /// Compute and KV-cache dtype.
    pub dtype: DType,
    embed: Tensor,
    /// `[vocab, hidden]`; the embedding when tied.
    lm_head: Tensor,
    norm: Tensor,
    layers: Vec<Layer>,
    /// `[max_pos, head_dim / 2]` in `dtype`.
    cos: Tensor,
    sin: Tensor,
}

fn safetensor_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |e| ModelError::Io { path: dir.display().to_string(), source: e };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).map_err(io)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::Invalid(format!("no *.safetensors in {}", dir.display())));
    }
    Ok(files)
}

impl GpuLlama {
    /// Load a Hugging Face directory (config.json, *.safetensors) onto `device` in `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::BF16 | DType::F16 | DType::F32) {
            return Err(ModelError::Invalid(format!("dtype {dtype:?}: the GPU path computes in bf16, f16 or f32")));
        }
        if !dir.is_dir() {
            return Err(ModelError::Invalid(format!("{}: the GPU path serves Hugging Face safetensors directories (GGUF models are served on the CPU)", dir.display())));
        }
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::Io { path: cfg_path.display().to_string(), source: e })?;
        let cfg = LlamaConfig::from_hf_json(&text)?;
        // SAFETY: the files are memory-mapped read-only for the duration of the load; a file
        // changed underneath by another process is outside what we defend against.
        let st = unsafe { MmapedSafetensors::multi(&safetensor_files(dir)?)? };
        let get = |n: &str| -> Result<Tensor> {
            let t = st.load(n, device).map_err(|e| ModelError::Invalid(format!("tensor `{n}`: {e}")))?;
            Ok(t.to_dtype(dtype)?)
        };
        let opt = |n: &str| -> Result<Option<Tensor>> {
            if st.get(n).is_ok() {
                get(n).map(Some)
            } else {
                Ok(None)
            }
        };
        let embed = get("model.embed_tokens.weight")?;
        let lm_head = opt("lm_head.weight")?.unwrap_or_else(|| embed.clone());
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let w = |n: &str| get(&format!("{p}.{n}.weight"));
            let qkv = Tensor::cat(&[w("self_attn.q_proj")?, w("self_attn.k_proj")?, w("self_attn.v_proj")?], 0)?;
            let biases = [opt(&format!("{p}.self_attn.q_proj.bias"))?, opt(&format!("{p}.self_attn.k_proj.bias"))?, opt(&format!("{p}.self_attn.v_proj.bias"))?];
            let qkv_bias = match biases {
                [Some(a), Some(b), Some(c)] => Some(Tensor::cat(&[a, b, c], 0)?),
                [None, None, None] => None,
                _ => return Err(ModelError::Invalid(format!("{p}: q/k/v biases must all be present or all absent"))),
            };
            let gate_up = Tensor::cat(&[w("mlp.gate_proj")?, w("mlp.up_proj")?], 0)?;
            layers.push(Layer { attn_norm: w("input_layernorm")?, qkv, qkv_bias, o: w("self_attn.o_proj")?, ffn_norm: w("post_attention_layernorm")?, gate_up, down: w("mlp.down_proj")? });
        }
        let norm = get("model.norm.weight")?;
        let (cos, sin) = rope_tables(&cfg, device, dtype)?;
        Ok(Self { cfg, device: device.clone(), dtype, embed, lm_head, norm, layers, cos, sin })
    }

    /// A model of shape `cfg` with random normal weights (std 0.02; norms 1) made on the device
    /// itself: for benchmarks of large shapes (an 8B-shaped model) without writing weights to
    /// disk. Not seeded on CUDA (curand), so outputs are not reproducible across runs.
    pub fn random(cfg: LlamaConfig, device: &Device, dtype: DType) -> Result<Self> {
        let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (qw, kw) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
        let w = |rows: usize, cols: usize| -> Result<Tensor> { Ok(Tensor::randn(0f32, 0.02, (rows, cols), device)?.to_dtype(dtype)?) };
        let ones = |n: usize| -> Result<Tensor> { Ok(Tensor::ones(n, dtype, device)?) };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for _ in 0..cfg.num_layers {
            layers.push(Layer { attn_norm: ones(h)?, qkv: w(qw + 2 * kw, h)?, qkv_bias: None, o: w(h, qw)?, ffn_norm: ones(h)?, gate_up: w(2 * i, h)?, down: w(h, i)? });
        }
        let embed = w(v, h)?;
        let lm_head = if cfg.tie_word_embeddings { embed.clone() } else { w(v, h)? };
        let (cos, sin) = rope_tables(&cfg, device, dtype)?;
        Ok(Self { norm: ones(h)?, cfg, device: device.clone(), dtype, embed, lm_head, layers, cos, sin })
    }

    /// Bytes of the weights on the device.
    pub fn weight_bytes(&self) -> usize {
        let t = |x: &Tensor| x.elem_count() * x.dtype().size_in_bytes();
        let head = if self.cfg.tie_word_embeddings { 0 } else { t(&self.lm_head) };
        t(&self.embed)
            + head
            + t(&self.norm)
            + self.layers.iter().map(|l| t(&l.attn_norm) + t(&l.qkv) + l.qkv_bias.as_ref().map_or(0, t) + t(&l.o) + t(&l.ffn_norm) + t(&l.gate_up) + t(&l.down)).sum::<usize>()
    }

    /// Geometry of this model's paged cache with `block_size`.
    pub fn geom(&self, block_size: usize) -> CacheGeom {
        CacheGeom { block_size, num_kv_heads: self.cfg.num_kv_heads, head_dim: self.cfg.head_dim }
    }

    /// A zeroed KV pool: one `[2, num_blocks * block_size, kv_heads * head_dim]` tensor per layer.
    pub fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<Vec<Tensor>> {
        let w = self.cfg.num_kv_heads * self.cfg.head_dim;
        (0..self.cfg.num_layers).map(|_| Ok(Tensor::zeros((2, num_blocks * block_size, w), self.dtype, &self.device)?)).collect()
    }

    /// Bytes of one KV block (all layers, keys and values).
    pub fn block_bytes(&self, block_size: usize) -> usize {
        2 * self.cfg.num_layers * self.cfg.num_kv_heads * self.cfg.head_dim * self.dtype.size_in_bytes() * block_size
    }

    /// Run the step's rows through every layer, writing K/V into `cache`, and return the final
    /// hidden states (after the last norm) of `want_rows`, `[want_rows.len(), hidden]`, on the
    /// device, in `dtype`; `None` when no row is wanted (a step of prefill chunks only: the last
    /// layer stops after its KV write, and no empty tensor is allocated on the device).
    pub fn forward_hidden(&self, ids: &[u32], positions: &[usize], seqs: Vec<SeqMeta>, cache: &[Tensor], block_size: usize, want_rows: &[u32]) -> Result<Option<Tensor>> {
        let c = &self.cfg;
        let n = ids.len();
        if cache.len() != c.num_layers {
            return Err(ModelError::Invalid(format!("{} cache layers for {} model layers", cache.len(), c.num_layers)));
        }
        if let Some(&p) = positions.iter().find(|&&p| p >= c.max_position_embeddings) {
            return Err(ModelError::Invalid(format!("position {p} beyond the model's context ({})", c.max_position_embeddings)));
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(ModelError::Invalid(format!("token id {id} is outside the vocabulary ({})", c.vocab_size)));
        }
        if let Some(&r) = want_rows.iter().find(|&&r| r as usize >= n) {
            return Err(ModelError::Invalid(format!("row {r} is not in the step ({n} rows)")));
        }
        let geom = self.geom(block_size);
        let num_blocks = cache[0].dim(1)? / block_size.max(1);
        let meta = Arc::new(StepMeta::new(geom, seqs, n, num_blocks, &self.device)?);
        let dev = &self.device;
        let ids_t = Tensor::from_slice(ids, n, dev)?;
        let pos: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let pos_t = Tensor::from_slice(&pos, n, dev)?;
        let half = c.head_dim / 2;
        let cos = self.cos.index_select(&pos_t, 0)?.reshape((n, 1, half))?;
        let sin = self.sin.index_select(&pos_t, 0)?.reshape((n, 1, half))?;
        let (qw, kw) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let eps = c.rms_norm_eps as f32;
        let rope = |t: Tensor, heads: usize| -> Result<Tensor> {
            let t = t.contiguous()?.reshape((n, heads, 1, c.head_dim))?;
            let r = if c.rope_interleaved { candle_nn::rotary_emb::rope_i(&t, &cos, &sin)? } else { candle_nn::rotary_emb::rope(&t, &cos, &sin)? };
            Ok(r.reshape((n, heads * c.head_dim))?)
        };
        let mut x = self.embed.index_select(&ids_t, 0)?;
        let last = self.layers.len().saturating_sub(1);
        // Whether x already holds only the wanted rows.
        let mut selected = want_rows.len() == n && want_rows.iter().enumerate().all(|(i, &r)| r as usize == i);
        for (li, l) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &l.attn_norm, eps)?;
            let mut qkv = h.matmul(&l.qkv.t()?)?;
            if let Some(b) = &l.qkv_bias {
                qkv = qkv.broadcast_add(b)?;
            }
            let q = rope(qkv.narrow(1, 0, qw)?, c.num_heads)?;
            let k = rope(qkv.narrow(1, qw, kw)?, c.num_kv_heads)?;
            let v = qkv.narrow(1, qw + kw, kw)?.contiguous()?;
            check_shapes(&meta, c.num_heads, &q, &k, &v, &cache[li])?;
            cache[li].inplace_op3(&k, &v, &KvWrite { meta: meta.clone() })?;
            if li == last && want_rows.is_empty() {
                return Ok(None);
            }
            let mut att = q.apply_op2_no_bwd(&cache[li], &PagedAttention { meta: meta.clone(), num_heads: c.num_heads })?;
            if li == last && !selected {
                // Only the rows that need logits or pooling go on (everything left is per row).
                let sel = Tensor::from_slice(want_rows, want_rows.len(), dev)?;
                att = att.index_select(&sel, 0)?;
                x = x.index_select(&sel, 0)?;
                selected = true;
            }
            x = (x + att.matmul(&l.o.t()?)?)?;
            let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps)?;
            let gu = h.matmul(&l.gate_up.t()?)?;
            let i = c.intermediate_size;
            let m = (gu.narrow(1, 0, i)?.silu()? * gu.narrow(1, i, i)?)?;
            x = (x + m.matmul(&l.down.t()?)?)?;
        }
        if !selected {
            x = x.index_select(&Tensor::from_slice(want_rows, want_rows.len(), dev)?, 0)?;
        }
        Ok(Some(candle_nn::ops::rms_norm(&x, &self.norm, eps)?))
    }

    /// Logits `[rows, vocab]` (f32, on the device) of final hidden states.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        Ok(h.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)?)
    }
}

/// cos/sin tables `[max_pos, head_dim / 2]`, computed in f32 as candle's Llama does (the CPU
/// engine's `Rope` too), then cast to the compute dtype.
fn rope_tables(cfg: &LlamaConfig, device: &Device, dtype: DType) -> Result<(Tensor, Tensor)> {
    let hd = cfg.head_dim;
    let inv: Vec<f32> = (0..hd).step_by(2).map(|i| 1f32 / cfg.rope_theta.powf(i as f32 / hd as f32)).collect();
    let mut cos = Vec::with_capacity(cfg.max_position_embeddings * hd / 2);
    let mut sin = Vec::with_capacity(cos.capacity());
    for p in 0..cfg.max_position_embeddings {
        for &f in &inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    let shape = (cfg.max_position_embeddings, hd / 2);
    Ok((Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?, Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?))
}
