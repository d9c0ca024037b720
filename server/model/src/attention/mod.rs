//! Paged KV cache and paged attention (the layout and the CPU kernels live in `hhh-kernels`).
//!
//! Layout of one layer's cache (keys and values alike): `[num_blocks, block_size, num_kv_heads,
//! head_dim]`, f32, row-major. Token at position `p` of a sequence lives in slot
//! `block_table[p / block_size] * block_size + p % block_size`. There is no per-request
//! contiguous KV buffer anywhere.

pub mod cpu;
pub mod rope;

pub use hhh_kernels::{KvDtype, PagedKvCache, SeqMeta};
