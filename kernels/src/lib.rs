//! hhh-kernels: the engine's custom compute kernels.
//!
//! Every kernel has a plain-Rust CPU implementation ([`cpu`]) that serves on CPU and is the
//! reference for its CUDA twin (`cuda/*.cu`, compiled to PTX with the `cuda` feature); the CPU
//! kernels are themselves checked against naive f64 implementations ([`reference`]).
//!
//! | kernel | CPU | CUDA |
//! |---|---|---|
//! | write new keys/values into the paged cache through the block tables (`reshape_and_cache`) | [`cpu::write_kv`], [`cpu::reshape_and_cache`] (slices, f32/f16/bf16) | `cuda/reshape_and_cache.cu` |
//! | paged attention, decode and prefill chunks (causal, GQA, any context length) | [`cpu::paged_attention`], [`cpu::paged_attention_slices`] | `cuda/paged_attention.cu` (decode rows: split context, log-sum-exp combine), `cuda/paged_prefill.cu` (prefill tiles, flash-attention-2 style, WMMA for bf16/f16); which rows go where: [`plan::AttnPlan`] |
//! | quantized matmuls (Q4_1, Q8_0 weights × int8 activations; AVX2 row tiles, or AVX-512 VNNI on weights interleaved 16 rows at a time, the bits of candle's generic loops) | [`quant::matmul_many`] | — |
//! | Q4_1 weights dequantized per panel × f32 activations (prompt rows on CPUs without AVX-512 VNNI; int8 arithmetic up to rounding) | [`quant::matmul_f32_many`] | — |
//! | `exp`, softmax numerators, `silu(g) * u` | [`act`] | — |
//!
//! The CUDA sources are compiled to PTX and cubins (CI: `scripts/check-cuda.sh`, nvcc 13.0 from
//! PyPI, ptxas resources against a baseline), run on the CPU through a SIMT shim against the CPU
//! twins (`kernels/simt`, also under ThreadSanitizer), and launched through cudarc by
//! `hhh_model::gpu::cuda`; they have not run on a GPU yet (no GPU machine was lent to the
//! sessions that wrote them; docs/gpu.md).

pub mod act;
pub mod cpu;
pub mod mem;
pub mod paged;
pub mod plan;
pub mod pool;
pub mod quant;
pub mod reference;
pub mod simd;

pub use paged::{KvBuf, KvDtype, PagedKvCache, SeqMeta};

/// PTX of each CUDA kernel file, embedded at build time (`cuda` feature only).
#[cfg(feature = "cuda")]
pub mod ptx {
    pub const RESHAPE_AND_CACHE: &str = include_str!(concat!(env!("OUT_DIR"), "/reshape_and_cache.ptx"));
    pub const PAGED_ATTENTION: &str = include_str!(concat!(env!("OUT_DIR"), "/paged_attention.ptx"));
    pub const PAGED_PREFILL: &str = include_str!(concat!(env!("OUT_DIR"), "/paged_prefill.ptx"));
}
