//! CUDA launchers of our kernels (feature `cuda`): `kernels/cuda/*.cu`, embedded as PTX by
//! `hhh-kernels`' build script, loaded once per device by candle and launched through cudarc on
//! candle's stream. Every launch is preceded by the checks that keep it in bounds (shapes in
//! [`super::ops::check_shapes`], block ids and rows in `AttnPlan::check`, contiguity here).

use super::step::StepMeta;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{CudaStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};
use hhh_kernels::plan::{AttnPlan, ATTN_THREADS, DECODE_MAX_HEAD_DIM, PREFILL_HEAD_DIMS};
use hhh_kernels::ptx;

/// The step's metadata on the device.
pub struct DevMeta {
    slots: CudaSlice<i64>,
    d_tables: CudaSlice<i32>,
    d_ctx: CudaSlice<i32>,
    d_rows: CudaSlice<i32>,
    p_tables: CudaSlice<i32>,
    p_tiles: CudaSlice<i32>,
}

impl DevMeta {
    pub fn upload(dev: &CudaDevice, slots: &[i64], plan: &AttnPlan) -> Result<Self> {
        // Empty arrays become one zero element: a kernel that is not launched never reads them.
        fn up<T: DeviceRepr + Default + Clone + 'static>(dev: &CudaDevice, v: &[T]) -> Result<CudaSlice<T>> {
            if v.is_empty() {
                dev.clone_htod(&[T::default()][..])
            } else {
                dev.clone_htod(v)
            }
        }
        Ok(Self {
            slots: up(dev, slots)?,
            d_tables: up(dev, &plan.decode.block_tables)?,
            d_ctx: up(dev, &plan.decode.context_lens)?,
            d_rows: up(dev, &plan.decode.rows)?,
            p_tables: up(dev, &plan.prefill.block_tables)?,
            p_tiles: up(dev, &plan.prefill.tiles)?,
        })
    }
}

fn dev_meta(meta: &StepMeta) -> Result<&DevMeta> {
    meta.dev.as_ref().ok_or_else(|| candle_core::Error::Msg("step metadata was not uploaded to the GPU".into()))
}

fn suffix(dt: DType) -> Result<&'static str> {
    Ok(match dt {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        d => candle_core::bail!("our CUDA kernels take f32, f16 or bf16, not {d:?}"),
    })
}

fn offsets(l: &Layout, what: &str) -> Result<(usize, usize)> {
    l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))
}

fn i32_of(x: usize, what: &str) -> Result<i32> {
    i32::try_from(x).map_err(|_| candle_core::Error::Msg(format!("{what} = {x} does not fit the kernel's int")))
}

/// `reshape_and_cache` into one layer's cache `[2, slots, width]`.
pub fn kv_write(meta: &StepMeta, c: &mut CudaStorage, cl: &Layout, k: &CudaStorage, kl: &Layout, v: &CudaStorage, vl: &Layout) -> Result<()> {
    let dm = dev_meta(meta)?;
    let dev = c.device().clone();
    let name = format!("reshape_and_cache_{}", suffix(c.dtype())?);
    let f = dev.get_or_load_custom_func(&name, "hhh_reshape_and_cache", ptx::RESHAPE_AND_CACHE)?;
    let (w, n) = (meta.geom.slot_width(), meta.num_rows);
    let (ca, cb) = offsets(cl, "cache")?;
    let ((ka, kb), (va, vb)) = (offsets(kl, "k")?, offsets(vl, "v")?);
    if kb - ka != n * w || vb - va != n * w {
        candle_core::bail!("kv write: k/v hold {} elements, {n} rows of {w} expected", kb - ka);
    }
    let half = (cb - ca) / 2;
    let num_slots = (half / w.max(1)) as i64;
    if meta.slots.iter().any(|&s| s >= num_slots) {
        candle_core::bail!("kv write: a slot is outside the cache of {num_slots} slots");
    }
    if n == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid_dim: (i32_of(n, "rows")? as u32, 1, 1), block_dim: (w.min(512) as u32, 1, 1), shared_mem_bytes: 0 };
    let w32 = i32_of(w, "width")?;
    macro_rules! go {
        ($t:ty) => {{
            let ks = k.as_cuda_slice::<$t>()?.slice(ka..kb);
            let vs = v.as_cuda_slice::<$t>()?.slice(va..vb);
            let cache = c.as_cuda_slice_mut::<$t>()?;
            let mut view = cache.slice_mut(ca..cb);
            let (mut kc, mut vc) = view.split_at_mut(half);
            let mut b = f.builder();
            b.arg(&ks).arg(&vs).arg(&mut kc).arg(&mut vc).arg(&dm.slots).arg(&w32);
            // SAFETY: k/v hold n rows of w elements; every slot is < num_slots (checked above,
            // negative slots are skipped by the kernel), so writes stay inside kc/vc.
            unsafe { b.launch(cfg) }.w()?;
        }};
    }
    match c.dtype() {
        DType::F32 => go!(f32),
        DType::F16 => go!(f16),
        DType::BF16 => go!(bf16),
        d => candle_core::bail!("kv write: unsupported dtype {d:?}"),
    }
    Ok(())
}

/// Paged attention of every row of the step into one output tensor: the decode kernel for
/// one-row sequences, the flash-style prefill kernel for the prefill tiles.
pub fn attention(meta: &StepMeta, num_heads: usize, q: &CudaStorage, ql: &Layout, c: &CudaStorage, cl: &Layout) -> Result<(CudaStorage, Shape)> {
    let dm = dev_meta(meta)?;
    let dev = q.device().clone();
    let g = meta.geom;
    let (hd, rows) = (g.head_dim, meta.num_rows);
    let sfx = suffix(q.dtype())?;
    let (qa, qb) = offsets(ql, "q")?;
    let (ca, cb) = offsets(cl, "cache")?;
    if qb - qa != rows * num_heads * hd {
        candle_core::bail!("paged attention: q holds {} elements, {rows} x {num_heads} x {hd} expected", qb - qa);
    }
    let half = (cb - ca) / 2;
    meta.plan.check(half / (g.block_size * g.slot_width()).max(1), rows).map_err(candle_core::Error::Msg)?;
    let scale = 1f32 / (hd as f32).sqrt();
    let (nh, nkv, hd32, bs, mb) =
        (i32_of(num_heads, "heads")?, i32_of(g.num_kv_heads, "kv heads")?, i32_of(hd, "head_dim")?, i32_of(g.block_size, "block size")?, i32_of(meta.plan.max_blocks, "blocks per sequence")?);
    let d = &meta.plan.decode;
    let p = &meta.plan.prefill;
    if d.num_seqs() > 0 && hd > DECODE_MAX_HEAD_DIM {
        candle_core::bail!("head_dim {hd} above the decode kernel's {DECODE_MAX_HEAD_DIM}");
    }
    if p.num_tiles() > 0 && !PREFILL_HEAD_DIMS.contains(&hd) {
        candle_core::bail!("head_dim {hd}: the prefill kernel is built for {PREFILL_HEAD_DIMS:?}");
    }
    macro_rules! go {
        ($t:ty) => {{
            let qs: CudaView<$t> = q.as_cuda_slice::<$t>()?.slice(qa..qb);
            let cache = c.as_cuda_slice::<$t>()?.slice(ca..cb);
            let (kc, vc) = cache.split_at(half);
            // Every row is written by exactly one kernel (AttnPlan covers each row once).
            // SAFETY: the kernels write every element of their rows before anything reads it.
            let mut out = unsafe { dev.alloc::<$t>(rows * num_heads * hd)? };
            if d.num_seqs() > 0 {
                let stats = d.num_seqs() * num_heads * d.num_parts;
                // SAFETY: the first pass writes every (seq, head, part) entry, including the
                // partitions past a sequence's context (max = -inf, sum = 0, zeros).
                let (mut ml, mut es, mut tmp) = unsafe { (dev.alloc::<f32>(stats)?, dev.alloc::<f32>(stats)?, dev.alloc::<f32>(stats * hd)?) };
                let (ns, np) = (i32_of(d.num_seqs(), "decode sequences")?, i32_of(d.num_parts, "partitions")?);
                let f1 = dev.get_or_load_custom_func(&format!("paged_attention_partial_{sfx}"), "hhh_paged_attention", ptx::PAGED_ATTENTION)?;
                let mut b = f1.builder();
                b.arg(&mut ml).arg(&mut es).arg(&mut tmp).arg(&qs).arg(&kc).arg(&vc).arg(&dm.d_tables).arg(&dm.d_ctx).arg(&dm.d_rows);
                b.arg(&nkv).arg(&hd32).arg(&bs).arg(&mb).arg(&scale);
                let cfg = LaunchConfig { grid_dim: (nh as u32, ns as u32, np as u32), block_dim: (ATTN_THREADS, 1, 1), shared_mem_bytes: 0 };
                // SAFETY: block ids < num_blocks and rows < num_rows (plan.check); head_dim <=
                // MAX_HEAD_DIM; the scratch buffers hold num_seqs * num_heads * num_parts entries.
                unsafe { b.launch(cfg) }.w()?;
                let f2 = dev.get_or_load_custom_func(&format!("paged_attention_combine_{sfx}"), "hhh_paged_attention", ptx::PAGED_ATTENTION)?;
                let mut b = f2.builder();
                b.arg(&mut out).arg(&ml).arg(&es).arg(&tmp).arg(&dm.d_rows).arg(&hd32).arg(&np);
                let cfg = LaunchConfig { grid_dim: (nh as u32, ns as u32, 1), block_dim: (ATTN_THREADS, 1, 1), shared_mem_bytes: 0 };
                // SAFETY: as above; out has num_rows rows.
                unsafe { b.launch(cfg) }.w()?;
            }
            if p.num_tiles() > 0 {
                let f = dev.get_or_load_custom_func(&format!("paged_prefill_{sfx}_hd{hd}"), "hhh_paged_prefill", ptx::PAGED_PREFILL)?;
                let mut b = f.builder();
                b.arg(&mut out).arg(&qs).arg(&kc).arg(&vc).arg(&dm.p_tables).arg(&dm.p_tiles).arg(&nkv).arg(&bs).arg(&mb).arg(&scale);
                let cfg = LaunchConfig { grid_dim: (i32_of(p.num_tiles(), "tiles")? as u32, nh as u32, 1), block_dim: (ATTN_THREADS, 1, 1), shared_mem_bytes: 0 };
                // SAFETY: plan.check bounded block ids and tile rows; head_dim is one the kernel
                // was instantiated for; static shared memory only.
                unsafe { b.launch(cfg) }.w()?;
            }
            CudaStorage::wrap_cuda_slice(out, dev.clone())
        }};
    }
    let out = match q.dtype() {
        DType::F32 => go!(f32),
        DType::F16 => go!(f16),
        DType::BF16 => go!(bf16),
        d => candle_core::bail!("paged attention: unsupported dtype {d:?}"),
    };
    Ok((out, Shape::from((rows, num_heads * hd))))
}

/// Free and total memory of the device, in bytes.
pub fn mem_info(dev: &CudaDevice) -> Result<(usize, usize)> {
    dev.cuda_stream().context().mem_get_info().w()
}
