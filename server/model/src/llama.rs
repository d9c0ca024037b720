//! The Llama-family model (Llama 2/3, SmolLM2, Mistral, Qwen2 naming), over a flattened batch.
//!
//! Weights come from a GGUF file (kept quantized: candle `QMatMul`) or a Hugging Face directory
//! of safetensors (f32/f16/bf16, computed in f32 on the CPU). Activations are `[rows, hidden]`:
//! every token of every sequence in the step, one row each.

use crate::attention::{cpu, rope::Rope, PagedKvCache, SeqMeta};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Tensor};
use hhh_kernels::quant::{self, Q4_1Matrix};
use std::path::{Path, PathBuf};

/// A weight `[out, in]`: Q4_1 through our SIMD kernel (bit-identical to candle's), anything
/// else through candle's `QMatMul`.
#[derive(Debug)]
enum Weight {
    Q4_1(Q4_1Matrix),
    Candle(QMatMul),
}

impl Weight {
    fn from_qtensor(t: candle_core::quantized::QTensor) -> Result<Self> {
        if t.dtype() == candle_core::quantized::GgmlDType::Q4_1 {
            if let Ok((n, k)) = t.shape().dims2() {
                if let Some(m) = Q4_1Matrix::from_bytes(&t.data()?, n, k) {
                    // Interleaved for the VNNI kernel where the CPU has it (same bits).
                    return Ok(Weight::Q4_1(m.interleaved()));
                }
            }
        }
        Ok(Weight::Candle(QMatMul::from_qtensor(t)?))
    }

    /// `exact`: candle's scalar Q4_1 arithmetic instead of the SIMD kernels (reference mode);
    /// otherwise rows flagged in `f32_rows` take the f32 path on dequantized weights
    /// ([`quant::matmul_split`]).
    fn forward(&self, x: &Tensor, exact: bool, f32_rows: &[bool]) -> Result<Tensor> {
        match self {
            Weight::Candle(w) => Ok(w.forward(x)?),
            Weight::Q4_1(w) => {
                let (m, k) = x.dims2()?;
                if k != w.k {
                    return Err(ModelError::Invalid(format!("matmul: input width {k} != weight width {}", w.k)));
                }
                let y = with_f32_rows(x, |xs| Self::q4_1_many(&[w], xs, m, exact, f32_rows).pop().unwrap_or_default())?;
                Ok(Tensor::from_vec(y, (m, w.n), x.device())?)
            }
        }
    }

    fn q4_1_many(ws: &[&Q4_1Matrix], xs: &[f32], m: usize, exact: bool, f32_rows: &[bool]) -> Vec<Vec<f32>> {
        if exact {
            quant::matmul_many(ws, xs, m, false)
        } else {
            quant::matmul_split(ws, xs, m, f32_rows, true)
        }
    }
}

/// A projection: quantized or dense weight `[out, in]`, optional bias.
#[derive(Debug)]
pub(crate) struct Linear {
    w: Weight,
    b: Option<Tensor>,
}

impl Linear {
    /// Several projections of the same input, as flat row-major vectors. Bias-free Q4_1
    /// projections of one input width run fused ([`quant::matmul_many`]).
    pub(crate) fn forward_many(ls: &[&Linear], x: &Tensor, exact: bool, f32_rows: &[bool]) -> Result<Vec<Vec<f32>>> {
        let (m, k) = x.dims2()?;
        let fused: Option<Vec<&Q4_1Matrix>> = ls
            .iter()
            .map(|l| match (&l.w, &l.b) {
                (Weight::Q4_1(w), None) if w.k == k => Some(w),
                _ => None,
            })
            .collect();
        match fused {
            Some(ws) => with_f32_rows(x, |xs| Weight::q4_1_many(&ws, xs, m, exact, f32_rows)),
            None => ls.iter().map(|l| Ok(l.forward(x, exact, f32_rows)?.flatten_all()?.to_vec1::<f32>()?)).collect(),
        }
    }

    /// Asks the kernel pool's helpers to prefetch what each will read first of these
    /// projections, cut as [`Self::forward_many`] cuts them when it fuses them
    /// ([`quant::prefetch_next`]; unfused, the hint is still these weights, cut differently):
    /// the caller's serial work until they run overlaps with their first bytes' memory traffic.
    pub(crate) fn prefetch(ls: &[&Linear]) {
        /// Bytes per helper: about what one core fetches during the serial work between two
        /// matmuls of a one-row step (~10 µs); 64 KiB to 8 MiB measured alike on Zen 3.
        const BUDGET: usize = 256 << 10;
        let ws: Vec<&Q4_1Matrix> = ls
            .iter()
            .filter_map(|l| match &l.w {
                Weight::Q4_1(w) => Some(w),
                Weight::Candle(_) => None,
            })
            .collect();
        if ws.len() == ls.len() {
            quant::prefetch_next(&ws, BUDGET);
        }
    }

    /// The projection without its bias, every row on the f32 path (inspection).
    pub(crate) fn forward_no_bias(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dims2()?.0;
        self.w.forward(x, false, &vec![true; rows])
    }

    pub(crate) fn forward(&self, x: &Tensor, exact: bool, f32_rows: &[bool]) -> Result<Tensor> {
        let y = self.w.forward(x, exact, f32_rows)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) attn_norm: Tensor,
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    pub(crate) ffn_norm: Tensor,
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

/// Most rows of a forward pass whose matmuls hint the kernel pool to prefetch the next one's
/// weights (`Linear::prefetch`). `step_bench` on 2-core Zen 3, hints on and off alternating
/// step by step, on/off median step time: 1 row 0.97–1.01 in 7 runs (median 0.985), 4 rows
/// 0.99 in 2, 16 rows 0.995–1.009 (no gain).
const HINT_ROWS: usize = 8;

/// A loaded model. Immutable: all per-request state lives in the [`PagedKvCache`].
#[derive(Debug)]
pub struct LlamaModel {
    pub cfg: LlamaConfig,
    /// `[vocab, hidden]` token embeddings (Q8_0 kept quantized).
    pub(crate) embed: crate::embedding::Embedding,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: crate::embedding::LmHead,
    pub(crate) rope: Rope,
    /// Human-readable weight type, e.g. `q4_1` or `f32`.
    pub dtype_name: String,
    /// Reference arithmetic: candle's dense attention ops over the gathered paged KV instead of
    /// the paged kernel, and candle's scalar Q4_1 dot products instead of the SIMD tile kernel
    /// (`serve --dense-attention`; for exact cross-checks against candle only — slow).
    pub dense_attention: bool,
    /// KV storage when none is asked for: f16 for GGUF models (llama.cpp's default), f32 for
    /// safetensors models, which compute in f32 and whose tests expect f32 precision.
    pub auto_kv_dtype: crate::attention::KvDtype,
    /// Whether the rows the caller flags (prompt tokens) take the Q4_1 f32 path; off with
    /// `serve --prompt-int8` (every row through the int8 path; for A/B measurements). Moot where
    /// the weights are interleaved for the VNNI kernel, which has one path for every row.
    pub prompt_f32: bool,
}

impl LlamaModel {
    /// Load a `.gguf` file or a Hugging Face model directory.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::load_hf(path)
        } else {
            Self::load_gguf(path)
        }
    }

    fn load_gguf(path: &Path) -> Result<Self> {
        let io = |e| ModelError::Io { path: path.display().to_string(), source: e };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let ct = gguf_file::Content::read(&mut file).map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        let cfg = LlamaConfig::from_gguf(&ct)?;
        let dev = Device::Cpu;
        let mut qt = |name: &str| ct.tensor(&mut file, name, &dev).map_err(|e| ModelError::Invalid(format!("tensor `{name}`: {e}")));
        let dtype_name = format!("{:?}", qt("blk.0.attn_q.weight")?.dtype()).to_lowercase();
        let embed_q = qt("token_embd.weight")?;
        let embed = crate::embedding::Embedding::from_qtensor(&embed_q)?;
        let norm = qt("output_norm.weight")?.dequantize(&dev)?;
        // Optional tensors are looked up before they are read: a missing one read through candle
        // is an error that captures a backtrace, and with RUST_BACKTRACE set, formatting ~200 of
        // them (the absent biases) symbolized the binary and kept ~38 MiB of debug info resident.
        let has = |name: &str| ct.tensor_infos.contains_key(name);
        let lm_head = if has("output.weight") { crate::embedding::LmHead::from_qtensor(qt("output.weight")?, None)? } else { crate::embedding::LmHead::from_qtensor(embed_q, Some(&embed))? };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("blk.{i}");
            let mut lin = |n: &str| -> Result<Linear> {
                let w = Weight::from_qtensor(qt(&format!("{p}.{n}.weight"))?)?;
                let bias = format!("{p}.{n}.bias");
                let b = if has(&bias) { Some(qt(&bias)?.dequantize(&dev)?) } else { None };
                Ok(Linear { w, b })
            };
            let (q, k, v, o) = (lin("attn_q")?, lin("attn_k")?, lin("attn_v")?, lin("attn_output")?);
            let (gate, up, down) = (lin("ffn_gate")?, lin("ffn_up")?, lin("ffn_down")?);
            layers.push(Layer { attn_norm: qt(&format!("{p}.attn_norm.weight"))?.dequantize(&dev)?, ffn_norm: qt(&format!("{p}.ffn_norm.weight"))?.dequantize(&dev)?, q, k, v, o, gate, up, down });
        }
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings, cfg.rope_interleaved);
        let model = Self { cfg, embed, layers, norm, lm_head, rope, dtype_name, dense_attention: false, prompt_f32: true, auto_kv_dtype: crate::attention::KvDtype::F16 };
        // Every decode step streams all the weights: onto huge pages (`hhh_kernels::mem`).
        let ranges = model.weight_ranges();
        let total: usize = ranges.iter().map(|r| r.1).sum();
        let huge = hhh_kernels::mem::collapse_huge_pages(&ranges);
        tracing::debug!(weight_mib = total >> 20, huge_page_mib = huge >> 20, "weights placed");
        Ok(model)
    }

    /// The address ranges of the quantized weights our kernels stream (Q4_1 projections, the
    /// Q8_0 embedding and LM head).
    fn weight_ranges(&self) -> Vec<(usize, usize)> {
        let mut r = Vec::new();
        for l in &self.layers {
            for lin in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                if let Weight::Q4_1(w) = &lin.w {
                    r.extend(w.buffers());
                }
            }
        }
        if let crate::embedding::Embedding::Q8_0(m) = &self.embed {
            r.extend(m.buffers());
        }
        if let crate::embedding::LmHead::Q8_0(m) = &self.lm_head {
            r.extend(m.buffers());
        }
        r
    }

    fn load_hf(dir: &Path) -> Result<Self> {
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |e| ModelError::Io { path: p, source: e }
        };
        let cfg_path = dir.join("config.json");
        let cfg = LlamaConfig::from_hf_json(&std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).map_err(io(dir))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect();
        files.sort();
        if files.is_empty() {
            return Err(ModelError::Invalid(format!("no *.safetensors in {}", dir.display())));
        }
        let mut tensors = std::collections::HashMap::new();
        let mut dtype_name = String::from("f32");
        for f in &files {
            for (name, t) in candle_core::safetensors::load(f, &Device::Cpu)? {
                dtype_name = format!("{:?}", t.dtype()).to_lowercase();
                tensors.insert(name, t.to_dtype(DType::F32)?);
            }
        }
        let mut get = |n: &str| tensors.remove(n).ok_or_else(|| ModelError::Invalid(format!("missing tensor `{n}`")));
        let embed = get("model.embed_tokens.weight")?;
        let norm = get("model.norm.weight")?;
        let lm_head = crate::embedding::LmHead::Candle(match get("lm_head.weight") {
            Ok(w) => QMatMul::Tensor(w),
            Err(_) => QMatMul::Tensor(embed.clone()),
        });
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let mut lin = |n: &str| -> Result<Linear> { Ok(Linear { w: Weight::Candle(QMatMul::Tensor(get(&format!("{p}.{n}.weight"))?)), b: get(&format!("{p}.{n}.bias")).ok() }) };
            let (q, k, v, o) = (lin("self_attn.q_proj")?, lin("self_attn.k_proj")?, lin("self_attn.v_proj")?, lin("self_attn.o_proj")?);
            let (gate, up, down) = (lin("mlp.gate_proj")?, lin("mlp.up_proj")?, lin("mlp.down_proj")?);
            layers.push(Layer { attn_norm: get(&format!("{p}.input_layernorm.weight"))?, ffn_norm: get(&format!("{p}.post_attention_layernorm.weight"))?, q, k, v, o, gate, up, down });
        }
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings, cfg.rope_interleaved);
        let embed = crate::embedding::Embedding::Dense(embed);
        Ok(Self { cfg, embed, layers, norm, lm_head, rope, dtype_name, dense_attention: false, prompt_f32: true, auto_kv_dtype: crate::attention::KvDtype::F32 })
    }

    /// KV storage for `requested` (`None`: the model's default): always f32 in reference mode,
    /// whose results must equal candle's exactly.
    pub fn kv_dtype(&self, requested: Option<crate::attention::KvDtype>) -> crate::attention::KvDtype {
        if self.dense_attention {
            crate::attention::KvDtype::F32
        } else {
            requested.unwrap_or(self.auto_kv_dtype)
        }
    }

    /// Run the flattened batch through every layer, writing K/V into `kv`, and return logits
    /// `[want_rows.len(), vocab]` for the requested rows. Rows flagged in `f32_rows` (prompt
    /// tokens, from the runner; may be empty) go through the Q4_1 weights' f32 path, the others
    /// through the int8 path: a row's result depends only on its own flag, never on the batch.
    pub fn forward(&self, ids: &[u32], positions: &[usize], seqs: &[SeqMeta], kv: &mut PagedKvCache, want_rows: &[u32], f32_rows: &[bool]) -> Result<Tensor> {
        let h = self.forward_hidden(ids, positions, seqs, kv, want_rows, f32_rows)?;
        self.logits(&h)
    }

    /// LM head over final hidden states `[rows, hidden]`.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(h)
    }

    /// [`Self::logits`] as a flat row-major vector and the vocabulary size (no copy out of a
    /// tensor).
    pub fn logits_vec(&self, h: &Tensor) -> Result<(Vec<f32>, usize)> {
        self.lm_head.forward_vec(h)
    }

    /// Like [`Self::forward`], but return the final hidden states (after the last norm)
    /// `[want_rows.len(), hidden]` instead of logits.
    pub fn forward_hidden(&self, ids: &[u32], positions: &[usize], seqs: &[SeqMeta], kv: &mut PagedKvCache, want_rows: &[u32], f32_rows: &[bool]) -> Result<Tensor> {
        let c = &self.cfg;
        let rows = ids.len();
        let exact = self.dense_attention;
        if positions.iter().any(|&p| p >= self.rope.max_pos()) {
            return Err(ModelError::Invalid(format!("position beyond the model's context ({})", self.rope.max_pos())));
        }
        let dev = Device::Cpu;
        let mut x = self.embed.lookup(ids)?;
        let eps = c.rms_norm_eps as f32;
        let (qw, kw) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        // Whether `x` already holds only `want_rows` (see the last layer).
        let mut selected = false;
        let mut f32_rows: Vec<bool> = if self.prompt_f32 { f32_rows.to_vec() } else { Vec::new() };
        // The next layer's attention-norm output, computed with the previous layer's last
        // residual connection (`residual_norm`).
        let mut h_next: Option<Tensor> = None;
        // A step of few rows is bound by memory bandwidth: after each matmul, the helpers are
        // hinted the next one's weights (`Linear::prefetch`). Not with more rows (compute-bound:
        // no gain measured at 16) nor with the reference arithmetic.
        let prefetch = |ls: &[&Linear]| {
            if !exact && rows <= HINT_ROWS {
                Linear::prefetch(ls);
            }
        };
        for (li, l) in self.layers.iter().enumerate() {
            let h = match h_next.take() {
                Some(h) => h,
                None => rms_norm(&x, &l.attn_norm, eps, exact)?,
            };
            let mut qkv = Linear::forward_many(&[&l.q, &l.k, &l.v], &h, exact, &f32_rows)?.into_iter();
            let (mut q, mut k, v) = match (qkv.next(), qkv.next(), qkv.next()) {
                (Some(q), Some(k), Some(v)) => (q, k, v),
                _ => return Err(ModelError::Invalid("q/k/v projection".into())),
            };
            prefetch(&[&l.o]);
            for (r, &pos) in positions.iter().enumerate() {
                self.rope.apply(&mut q[r * qw..(r + 1) * qw], c.head_dim, pos);
                self.rope.apply(&mut k[r * kw..(r + 1) * kw], c.head_dim, pos);
            }
            cpu::write_kv(kv, li, seqs, &k, &v);
            let att = if self.dense_attention { cpu::paged_attention_dense(kv, li, seqs, &q, c.num_heads)? } else { cpu::paged_attention(kv, li, seqs, &q, c.num_heads) };
            // After the last layer's attention only the requested rows matter (everything left is
            // per row): select them before the output projection and the MLP. Not with the
            // reference arithmetic, whose matmuls block differently by row count. (Out-of-range
            // rows fall through to the final `index_select`, which reports them.)
            let (att, n) = if li + 1 == self.layers.len() && !exact && want_rows.len() < rows && want_rows.iter().all(|&r| (r as usize) < rows) {
                if want_rows.is_empty() {
                    return Ok(Tensor::zeros((0, c.hidden_size), DType::F32, &dev)?);
                }
                x = x.index_select(&Tensor::from_slice(want_rows, want_rows.len(), &dev)?, 0)?;
                selected = true;
                f32_rows = want_rows.iter().map(|&r| f32_rows.get(r as usize).copied().unwrap_or(false)).collect();
                (want_rows.iter().flat_map(|&r| att[r as usize * qw..(r as usize + 1) * qw].iter().copied()).collect(), want_rows.len())
            } else {
                (att, rows)
            };
            let att = Tensor::from_vec(att, (n, qw), &dev)?;
            let h;
            let o = l.o.forward(&att, exact, &f32_rows)?;
            prefetch(&[&l.gate, &l.up]);
            (x, h) = residual_norm(o, &x, &l.ffn_norm, eps, exact)?;
            let mut gu = Linear::forward_many(&[&l.gate, &l.up], &h, exact, &f32_rows)?.into_iter();
            let (g, u) = match (gu.next(), gu.next()) {
                (Some(g), Some(u)) => (g, u),
                _ => return Err(ModelError::Invalid("gate/up projection".into())),
            };
            prefetch(&[&l.down]);
            // silu(g) * u: with the reference arithmetic, candle's formula (`x / (1 + exp(-x))`,
            // libm `exp`) on this thread; otherwise the vectorized kernel on the compute pool.
            let mv: Vec<f32> = if exact { g.iter().zip(&u).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect() } else { hhh_kernels::act::silu_mul(&g, &u) };
            let m = Tensor::from_vec(mv, (n, u.len() / n.max(1)), &dev)?;
            let down = l.down.forward(&m, exact, &f32_rows)?;
            match self.layers.get(li + 1) {
                Some(next) => {
                    prefetch(&[&next.q, &next.k, &next.v]);
                    let h;
                    (x, h) = residual_norm(down, &x, &next.attn_norm, eps, exact)?;
                    h_next = Some(h);
                }
                None => x = residual(down, &x, exact)?,
            }
        }
        if !selected {
            x = x.index_select(&Tensor::from_slice(want_rows, want_rows.len(), &dev)?, 0)?;
        }
        rms_norm(&x, &self.norm, eps, exact)
    }
}

/// `f` on a contiguous f32 CPU tensor's elements, without copying them; `f` back, not called,
/// for any other tensor.
fn try_f32_view<R, F: FnOnce(&[f32]) -> R>(t: &Tensor, f: F) -> std::result::Result<R, F> {
    let (storage, layout) = t.storage_and_layout();
    if let (candle_core::Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
        if let Ok(xs) = cpu.as_slice::<f32>() {
            return Ok(f(&xs[a..b]));
        }
    }
    Err(f)
}

/// `f` on a contiguous f32 CPU tensor's elements, without copying them.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    try_f32_view(t, f).map_err(|_| ModelError::Invalid("expected a contiguous f32 CPU tensor".into()))
}

/// `f` on the elements of an f32 CPU tensor in row-major order: a view when it is contiguous
/// (the forward pass's activations always are), else a copy.
pub(crate) fn with_f32_rows<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    match try_f32_view(t, f) {
        Ok(r) => Ok(r),
        Err(f) => Ok(f(&t.flatten_all()?.to_vec1::<f32>()?)),
    }
}

/// RMS norm of `x` `[rows, hidden]` times `w`: candle's arithmetic either way; with `exact`
/// candle's op, else `hhh_kernels::act::rms_norm` (the same bits, on the kernel pool, without
/// candle's rayon loop competing with the pool's helper).
fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, exact: bool) -> Result<Tensor> {
    if exact {
        return Ok(candle_nn::ops::rms_norm(x, w, eps)?);
    }
    let dims = x.dims().to_vec();
    let y = with_f32(x, |xs| with_f32(w, |ws| hhh_kernels::act::rms_norm(xs, ws, eps)))??;
    Ok(Tensor::from_vec(y, dims, x.device())?)
}

/// The residual connection `y + x` and the RMS norm of the sum times `w`: `(sum, norm)`, the
/// bits of [`residual`] then [`rms_norm`]; without `exact`, in one loop on the kernel pool
/// (`hhh_kernels::act::add_rms_norm`).
fn residual_norm(y: Tensor, x: &Tensor, w: &Tensor, eps: f32, exact: bool) -> Result<(Tensor, Tensor)> {
    if exact || y.dims() != x.dims() {
        let s = residual(y, x, exact)?;
        let h = rms_norm(&s, w, eps, exact)?;
        return Ok((s, h));
    }
    let dims = x.dims().to_vec();
    let (s, h) = with_f32(&y, |ys| with_f32(x, |xs| with_f32(w, |ws| hhh_kernels::act::add_rms_norm(ys, xs, ws, eps))))???;
    Ok((Tensor::from_vec(s, dims.clone(), x.device())?, Tensor::from_vec(h, dims, x.device())?))
}

/// The residual connection `y + x` (same shapes); without `exact`, on the kernel pool.
fn residual(y: Tensor, x: &Tensor, exact: bool) -> Result<Tensor> {
    if exact || y.dims() != x.dims() {
        return Ok((y + x)?);
    }
    let dims = x.dims().to_vec();
    let s = with_f32(&y, |ys| with_f32(x, |xs| hhh_kernels::act::add(ys, xs)))??;
    Ok(Tensor::from_vec(s, dims, x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool's RMS norm, residual add and the two fused give candle's bits, for 1 to 70 rows
    /// (candle's own switches to rayon above 32).
    #[test]
    fn rms_norm_and_residual_equal_candle_bitwise() -> Result<()> {
        let dev = Device::Cpu;
        let f = |i: usize| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * (1.0 + (i % 7) as f32);
        let w = Tensor::from_vec((0..576).map(|i| f(i + 3) * 0.1).collect::<Vec<f32>>(), 576, &dev)?;
        for rows in [1usize, 5, 32, 33, 70] {
            let x = Tensor::from_vec((0..rows * 576).map(f).collect::<Vec<f32>>(), (rows, 576), &dev)?;
            let y = Tensor::from_vec((0..rows * 576).map(|i| f(i + 11)).collect::<Vec<f32>>(), (rows, 576), &dev)?;
            let bits = |t: &Tensor| -> Result<Vec<u32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?.iter().map(|v| v.to_bits()).collect()) };
            assert_eq!(bits(&rms_norm(&x, &w, 1e-5, false)?)?, bits(&candle_nn::ops::rms_norm(&x, &w, 1e-5)?)?, "rms_norm, {rows} rows");
            assert_eq!(bits(&residual(y.clone(), &x, false)?)?, bits(&(y.clone() + &x)?)?, "residual, {rows} rows");
            let (s, h) = residual_norm(y.clone(), &x, &w, 1e-5, false)?;
            let want = (y + &x)?;
            assert_eq!(bits(&s)?, bits(&want)?, "fused residual, {rows} rows");
            assert_eq!(bits(&h)?, bits(&candle_nn::ops::rms_norm(&want, &w, 1e-5)?)?, "fused norm, {rows} rows");
        }
        Ok(())
    }
}
