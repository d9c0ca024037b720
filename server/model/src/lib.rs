//! hhh-model: Llama-family models on candle, a paged KV cache with a CPU paged-attention
//! kernel, the sampler, and the model runner that implements [`hhh_engine::Executor`].
//!
//! ```text
//! Batch (engine) ─▶ ModelRunner::execute
//!     flatten tokens of all sequences ─▶ LlamaModel::forward
//!         per layer: RMSNorm → QKV (QMatMul) → RoPE → write K/V through the slot mapping
//!                    → paged attention over each sequence's block table → O → MLP
//!     rows that need logits ─▶ final norm → LM head ─▶ Sampler (per-request seeded RNG)
//! ```

pub mod attention;
pub mod config;
mod constrained;
mod embedding;
pub mod error;
pub mod gpu;
pub mod inspect;
pub mod llama;
pub mod reward_head;
pub mod runner;
pub mod sampler;
mod step_plan;
#[doc(hidden)]
pub mod testing;

pub use config::LlamaConfig;
pub use error::ModelError;
pub use llama::LlamaModel;
pub use reward_head::RewardHead;
pub use runner::{ModelRunner, RunnerConfig, WeightUpdate};
