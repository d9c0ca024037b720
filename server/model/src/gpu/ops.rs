//! The engine's custom ops on candle tensors: the KV-cache write and paged attention. Each runs
//! on both devices: `cpu_fwd` is the CPU twin from `hhh_kernels::cpu` (never an error; it is the
//! reference the CUDA kernels are tested against), `cuda_fwd` launches our kernels
//! (`kernels/cuda/*.cu`) through cudarc ([`super::cuda`], feature `cuda`).
//!
//! The cache of one layer is one tensor `[2, num_slots, num_kv_heads * head_dim]` (keys, then
//! values; `num_slots = num_blocks * block_size`), of the model's dtype (bf16, f16 or f32).

use super::step::StepMeta;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use hhh_kernels::cpu::{self, CacheGeom, KvElem};
use std::sync::Arc;

/// Write the step's new keys and values into one layer's cache through the slot mapping
/// (`reshape_and_cache`). Applied with `cache.inplace_op3(&k, &v, &op)`; `k`, `v`:
/// `[num_rows, width]`, contiguous, the cache's dtype.
pub struct KvWrite {
    pub meta: Arc<StepMeta>,
}

fn contiguous_slice<'a, T>(v: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

fn to_f32<T: KvElem>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn kv_write_cpu<T: KvElem>(cache: &mut [T], cl: &Layout, (k, kl): (&[T], &Layout), (v, vl): (&[T], &Layout), width: usize, slots: &[i64]) -> Result<()> {
    let (a, b) = cl.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("cache must be contiguous".into()))?;
    let cache = &mut cache[a..b];
    let half = cache.len() / 2;
    let (kc, vc) = cache.split_at_mut(half);
    let (k, v) = (contiguous_slice(k, kl, "k")?, contiguous_slice(v, vl, "v")?);
    if k.len() != slots.len() * width || v.len() != k.len() {
        candle_core::bail!("kv write: {} rows of width {width} expected", slots.len());
    }
    let num_slots = (half / width.max(1)) as i64;
    if let Some(s) = slots.iter().find(|&&s| s >= num_slots) {
        candle_core::bail!("kv write: slot {s} outside the cache of {num_slots} slots");
    }
    cpu::reshape_and_cache(kc, vc, width, slots, &to_f32(k), &to_f32(v));
    Ok(())
}

impl InplaceOp3 for KvWrite {
    fn name(&self) -> &'static str {
        "hhh-reshape-and-cache"
    }

    fn cpu_fwd(&self, c: &mut CpuStorage, cl: &Layout, k: &CpuStorage, kl: &Layout, v: &CpuStorage, vl: &Layout) -> Result<()> {
        let (w, slots) = (self.meta.geom.slot_width(), &self.meta.slots);
        match (c, k, v) {
            (CpuStorage::F32(c), CpuStorage::F32(k), CpuStorage::F32(v)) => kv_write_cpu(c, cl, (k, kl), (v, vl), w, slots),
            (CpuStorage::F16(c), CpuStorage::F16(k), CpuStorage::F16(v)) => kv_write_cpu(c, cl, (k, kl), (v, vl), w, slots),
            (CpuStorage::BF16(c), CpuStorage::BF16(k), CpuStorage::BF16(v)) => kv_write_cpu(c, cl, (k, kl), (v, vl), w, slots),
            (c, k, v) => candle_core::bail!("kv write: cache {:?}, k {:?}, v {:?}: one of f32, f16, bf16 for all three", c.dtype(), k.dtype(), v.dtype()),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, c: &mut candle_core::CudaStorage, cl: &Layout, k: &candle_core::CudaStorage, kl: &Layout, v: &candle_core::CudaStorage, vl: &Layout) -> Result<()> {
        super::cuda::kv_write(&self.meta, c, cl, k, kl, v, vl)
    }
}

/// Paged attention of every row of the step: `q.apply_op2_no_bwd(&cache, &op)` with `q`
/// `[num_rows, num_heads * head_dim]` (RoPE applied) and one layer's cache (holding the step's
/// keys and values already) → `[num_rows, num_heads * head_dim]`, q's dtype.
pub struct PagedAttention {
    pub meta: Arc<StepMeta>,
    pub num_heads: usize,
}

fn attention_cpu<T: KvElem>(q: &[T], ql: &Layout, cache: &[T], cl: &Layout, geom: CacheGeom, meta: &StepMeta, num_heads: usize) -> Result<Vec<T>> {
    let q = contiguous_slice(q, ql, "q")?;
    let cache = contiguous_slice(cache, cl, "cache")?;
    let (keys, values) = cache.split_at(cache.len() / 2);
    let num_blocks = keys.len() / (geom.block_size * geom.slot_width()).max(1);
    meta.plan.check(num_blocks, meta.num_rows).map_err(candle_core::Error::Msg)?;
    let out = cpu::paged_attention_slices(geom, keys, values, &meta.seqs, &to_f32(q), num_heads);
    Ok(out.into_iter().map(T::from_f32).collect())
}

impl candle_core::CustomOp2 for PagedAttention {
    fn name(&self) -> &'static str {
        "hhh-paged-attention"
    }

    fn cpu_fwd(&self, q: &CpuStorage, ql: &Layout, c: &CpuStorage, cl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, m, h) = (self.meta.geom, &*self.meta, self.num_heads);
        let shape = Shape::from((m.num_rows, h * g.head_dim));
        let out = match (q, c) {
            (CpuStorage::F32(q), CpuStorage::F32(c)) => CpuStorage::F32(attention_cpu(q, ql, c, cl, g, m, h)?),
            (CpuStorage::F16(q), CpuStorage::F16(c)) => CpuStorage::F16(attention_cpu::<f16>(q, ql, c, cl, g, m, h)?),
            (CpuStorage::BF16(q), CpuStorage::BF16(c)) => CpuStorage::BF16(attention_cpu::<bf16>(q, ql, c, cl, g, m, h)?),
            (q, c) => candle_core::bail!("paged attention: q {:?} and cache {:?} must be one of f32, f16, bf16", q.dtype(), c.dtype()),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, q: &candle_core::CudaStorage, ql: &Layout, c: &candle_core::CudaStorage, cl: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::attention(&self.meta, self.num_heads, q, ql, c, cl)
    }
}

/// Check the shapes the two ops rely on, so that a mistake is an error, never an
/// out-of-bounds kernel access: `q` `[rows, heads * head_dim]`, `k`/`v` `[rows, width]`,
/// `cache` `[2, slots, width]`, all of one dtype.
pub fn check_shapes(meta: &StepMeta, num_heads: usize, q: &Tensor, k: &Tensor, v: &Tensor, cache: &Tensor) -> Result<()> {
    let (rows, w, hd) = (meta.num_rows, meta.geom.slot_width(), meta.geom.head_dim);
    let (two, _slots, cw) = cache.dims3()?;
    if q.dims() != [rows, num_heads * hd] || k.dims() != [rows, w] || v.dims() != [rows, w] || two != 2 || cw != w {
        candle_core::bail!("paged attention shapes: q {:?}, k {:?}, v {:?}, cache {:?} (rows {rows}, width {w})", q.dims(), k.dims(), v.dims(), cache.dims());
    }
    let dt = q.dtype();
    if k.dtype() != dt || v.dtype() != dt || cache.dtype() != dt || !matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
        candle_core::bail!("paged attention dtypes: q {dt:?}, k {:?}, v {:?}, cache {:?}", k.dtype(), v.dtype(), cache.dtype());
    }
    Ok(())
}
