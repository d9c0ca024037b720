//! Size the KV pool of a CUDA model: run one worst-case step (the largest token budget, the
//! most rows needing logits) on a scratch pool, then apply [`super::planner::kv_blocks`] to the
//! memory the device reports.

use super::model::GpuLlama;
use super::planner::{kv_blocks, MemoryBudget};
use crate::error::{ModelError, Result};
use hhh_kernels::SeqMeta;

/// What the engine will ask of the model at most in one step.
#[derive(Debug, Clone, Copy)]
pub struct StepLimits {
    pub max_num_batched_tokens: usize,
    pub max_num_seqs: usize,
    pub max_model_len: usize,
    pub block_size: usize,
}

/// The pool's size in blocks: `override_blocks` when given (checked against one
/// `max_model_len` sequence), else what `utilization` of the device leaves after the weights
/// and a profiled worst-case step. Only for CUDA devices.
pub fn plan_kv_blocks(model: &GpuLlama, lim: StepLimits, utilization: f64, override_blocks: Option<usize>) -> Result<usize> {
    let tokens = lim.max_num_batched_tokens.min(lim.max_model_len).max(1);
    let bs = lim.block_size.max(1);
    let blocks = tokens.div_ceil(bs);
    {
        let cache = model.new_cache(blocks, bs)?;
        let ids = vec![0u32; tokens];
        let positions: Vec<usize> = (0..tokens).collect();
        let seqs = vec![SeqMeta { row_start: 0, num_rows: tokens, start_pos: 0, block_table: (0..blocks as u32).collect() }];
        let want: Vec<u32> = (tokens.saturating_sub(lim.max_num_seqs.max(1)) as u32..tokens as u32).collect();
        if let Some(hidden) = model.forward_hidden(&ids, &positions, seqs, &cache, bs, &want)? {
            model.logits(&hidden)?;
        }
    }
    let Some((free, total)) = super::device_memory(&model.device)? else {
        return Err(ModelError::Invalid("memory planning needs a CUDA device".into()));
    };
    let budget = MemoryBudget { total, free, utilization };
    let n = kv_blocks(budget, model.block_bytes(bs) as u64, bs, lim.max_model_len, override_blocks).map_err(ModelError::Invalid)?;
    tracing::info!(total_gib = total as f64 / (1u64 << 30) as f64, free_gib = free as f64 / (1u64 << 30) as f64, utilization, profiled_tokens = tokens, kv_blocks = n, "GPU memory planned");
    Ok(n)
}
