//! The CUDA kernels of `hhh-kernels` (`kernels/cuda/*.cu`), compiled unmodified for the host with
//! a SIMT shim (`include/simt.h`: one OS thread per CUDA thread, one block at a time, barriers for
//! `__syncthreads` and warp shuffles, WMMA tiles emulated), behind safe wrappers that take the
//! same arguments as the CUDA launchers — including the step plan of [`hhh_kernels::plan`] — and
//! check every bound first. The tests (`tests/kernels.rs`) compare them with the CPU twins.
//!
//! What this cannot catch: blocks running concurrently, code that relies on a warp running in
//! lockstep, `__expf`'s lower accuracy (here `expf`), and anything about speed (docs/gpu.md).

use half::{bf16, f16};
use hhh_kernels::cpu::{CacheGeom, KvElem};
use hhh_kernels::plan::{AttnPlan, PREFILL_HEAD_DIMS};

type U16 = u16;

extern "C" {
    fn simt_reshape_and_cache_f32(k: *const f32, v: *const f32, kc: *mut f32, vc: *mut f32, slots: *const i64, width: i32, n: i32, threads: i32);
    fn simt_reshape_and_cache_f16(k: *const U16, v: *const U16, kc: *mut U16, vc: *mut U16, slots: *const i64, width: i32, n: i32, threads: i32);
    fn simt_reshape_and_cache_bf16(k: *const U16, v: *const U16, kc: *mut U16, vc: *mut U16, slots: *const i64, width: i32, n: i32, threads: i32);
}

macro_rules! decl_decode {
    ($($name:ident: $t:ty),*) => { extern "C" { $(
        fn $name(out: *mut $t, max_logits: *mut f32, exp_sums: *mut f32, tmp_out: *mut f32, q: *const $t, kc: *const $t, vc: *const $t,
                 tables: *const i32, ctx: *const i32, rows: *const i32, num_seqs: i32, num_heads: i32, num_parts: i32,
                 num_kv_heads: i32, head_dim: i32, block_size: i32, max_blocks: i32, scale: f32);
    )* } };
}
decl_decode!(simt_paged_attention_f32: f32, simt_paged_attention_f16: U16, simt_paged_attention_bf16: U16);

macro_rules! decl_prefill {
    ($($name:ident: $t:ty),*) => { extern "C" { $(
        fn $name(out: *mut $t, q: *const $t, kc: *const $t, vc: *const $t, tables: *const i32, tiles: *const i32, num_tiles: i32,
                 num_heads: i32, num_kv_heads: i32, block_size: i32, max_blocks: i32, scale: f32);
    )* } };
}
decl_prefill!(
    simt_paged_prefill_f32_hd64: f32, simt_paged_prefill_f32_hd128: f32,
    simt_paged_prefill_f16_hd64: U16, simt_paged_prefill_f16_hd128: U16,
    simt_paged_prefill_bf16_hd64: U16, simt_paged_prefill_bf16_hd128: U16
);

extern "C" {
    fn simt_paged_attention_partition() -> i32;
    fn simt_paged_prefill_tile_rows() -> i32;
}

/// The kernels' compile-time constants, as compiled (tests check them against `plan`'s).
pub fn kernel_constants() -> (usize, usize) {
    // SAFETY: the functions only return a constant.
    unsafe { (simt_paged_attention_partition() as usize, simt_paged_prefill_tile_rows() as usize) }
}

/// Storage types of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

/// An element type the kernels are instantiated for. f16 and bf16 are passed as their bits.
pub trait SimtElem: KvElem + Default {
    const DTYPE: Dtype;
}
impl SimtElem for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl SimtElem for f16 {
    const DTYPE: Dtype = Dtype::F16;
}
impl SimtElem for bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
}

fn i32_of(x: usize) -> i32 {
    i32::try_from(x).expect("argument fits in 32 bits")
}

/// `reshape_and_cache`: write rows of `k`/`v` (`width` each) into the slots of `slot_mapping`
/// (negative: skip). Panics on inconsistent lengths or a slot outside the caches.
pub fn reshape_and_cache<T: SimtElem>(k: &[T], v: &[T], kc: &mut [T], vc: &mut [T], slot_mapping: &[i64], width: usize) {
    let n = slot_mapping.len();
    assert!(k.len() == n * width && v.len() == n * width, "k/v must hold {n} rows of {width}");
    assert!(kc.len() == vc.len() && kc.len().is_multiple_of(width), "caches of equal size, whole slots");
    let slots = kc.len() / width;
    assert!(slot_mapping.iter().all(|&s| s < slots as i64), "slot outside the cache of {slots} slots");
    let threads = i32_of(width.min(512));
    // SAFETY: lengths and slots were checked above; f16/bf16 are repr(transparent) over u16.
    unsafe {
        match T::DTYPE {
            Dtype::F32 => simt_reshape_and_cache_f32(k.as_ptr().cast(), v.as_ptr().cast(), kc.as_mut_ptr().cast(), vc.as_mut_ptr().cast(), slot_mapping.as_ptr(), i32_of(width), i32_of(n), threads),
            Dtype::F16 => simt_reshape_and_cache_f16(k.as_ptr().cast(), v.as_ptr().cast(), kc.as_mut_ptr().cast(), vc.as_mut_ptr().cast(), slot_mapping.as_ptr(), i32_of(width), i32_of(n), threads),
            Dtype::Bf16 => simt_reshape_and_cache_bf16(k.as_ptr().cast(), v.as_ptr().cast(), kc.as_mut_ptr().cast(), vc.as_mut_ptr().cast(), slot_mapping.as_ptr(), i32_of(width), i32_of(n), threads),
        }
    }
}

/// Attention of every planned row (decode kernel for one-row sequences, prefill kernel for the
/// tiles) into `out` (`[rows, num_heads * head_dim]`; rows not in the plan are left as they are).
pub fn attention<T: SimtElem>(plan: &AttnPlan, geom: CacheGeom, q: &[T], kc: &[T], vc: &[T], num_heads: usize, out: &mut [T]) -> Result<(), String> {
    let (hd, nkv, bs) = (geom.head_dim, geom.num_kv_heads, geom.block_size);
    let qw = num_heads * hd;
    if q.len() != out.len() || !q.len().is_multiple_of(qw) || kc.len() != vc.len() || !kc.len().is_multiple_of(bs * geom.slot_width()) {
        return Err("inconsistent q/out/cache sizes".into());
    }
    if nkv == 0 || !num_heads.is_multiple_of(nkv) {
        return Err(format!("{num_heads} heads are not a multiple of {nkv} KV heads"));
    }
    plan.check(kc.len() / (bs * geom.slot_width()), q.len() / qw)?;
    let scale = 1.0 / (hd as f32).sqrt();
    let (nh, nkv32, hd32, bs32, mb) = (i32_of(num_heads), i32_of(nkv), i32_of(hd), i32_of(bs), i32_of(plan.max_blocks));
    let d = &plan.decode;
    if d.num_seqs() > 0 {
        if hd > hhh_kernels::plan::DECODE_MAX_HEAD_DIM {
            return Err(format!("head_dim {hd} above the decode kernel's {}", hhh_kernels::plan::DECODE_MAX_HEAD_DIM));
        }
        let stats = d.num_seqs() * num_heads * d.num_parts;
        let (mut ml, mut es, mut tmp) = (vec![0f32; stats], vec![0f32; stats], vec![0f32; stats * hd]);
        let (ns, np) = (i32_of(d.num_seqs()), i32_of(d.num_parts));
        // SAFETY: plan.check bounded every block id and row; the scratch buffers hold
        // num_seqs * num_heads * num_parts entries (times head_dim for tmp).
        unsafe {
            let a = (out.as_mut_ptr(), ml.as_mut_ptr(), es.as_mut_ptr(), tmp.as_mut_ptr(), q.as_ptr(), kc.as_ptr(), vc.as_ptr());
            let m = (d.block_tables.as_ptr(), d.context_lens.as_ptr(), d.rows.as_ptr());
            match T::DTYPE {
                Dtype::F32 => simt_paged_attention_f32(a.0.cast(), a.1, a.2, a.3, a.4.cast(), a.5.cast(), a.6.cast(), m.0, m.1, m.2, ns, nh, np, nkv32, hd32, bs32, mb, scale),
                Dtype::F16 => simt_paged_attention_f16(a.0.cast(), a.1, a.2, a.3, a.4.cast(), a.5.cast(), a.6.cast(), m.0, m.1, m.2, ns, nh, np, nkv32, hd32, bs32, mb, scale),
                Dtype::Bf16 => simt_paged_attention_bf16(a.0.cast(), a.1, a.2, a.3, a.4.cast(), a.5.cast(), a.6.cast(), m.0, m.1, m.2, ns, nh, np, nkv32, hd32, bs32, mb, scale),
            }
        }
    }
    let p = &plan.prefill;
    if p.num_tiles() > 0 {
        if !PREFILL_HEAD_DIMS.contains(&hd) {
            return Err(format!("head_dim {hd}: the prefill kernel is built for {PREFILL_HEAD_DIMS:?}"));
        }
        let nt = i32_of(p.num_tiles());
        macro_rules! call {
            ($f:ident) => {
                $f(out.as_mut_ptr().cast(), q.as_ptr().cast(), kc.as_ptr().cast(), vc.as_ptr().cast(), p.block_tables.as_ptr(), p.tiles.as_ptr(), nt, nh, nkv32, bs32, mb, scale)
            };
        }
        // SAFETY: bounds were checked by plan.check; f16/bf16 are repr(transparent) over u16.
        unsafe {
            match (T::DTYPE, hd) {
                (Dtype::F32, 64) => call!(simt_paged_prefill_f32_hd64),
                (Dtype::F32, _) => call!(simt_paged_prefill_f32_hd128),
                (Dtype::F16, 64) => call!(simt_paged_prefill_f16_hd64),
                (Dtype::F16, _) => call!(simt_paged_prefill_f16_hd128),
                (Dtype::Bf16, 64) => call!(simt_paged_prefill_bf16_hd64),
                (Dtype::Bf16, _) => call!(simt_paged_prefill_bf16_hd128),
            }
        }
    }
    Ok(())
}
