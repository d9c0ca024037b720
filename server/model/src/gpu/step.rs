//! Per-step metadata shared by every layer's ops: the slot of each new token, the attention
//! kernels' launch plan, and (on a GPU) their device copies, uploaded once per step.

use candle_core::{Device, Result};
use hhh_kernels::cpu::{self, CacheGeom};
use hhh_kernels::plan::AttnPlan;
use hhh_kernels::SeqMeta;

/// Everything the ops need to know about the step beyond their tensors.
pub struct StepMeta {
    pub geom: CacheGeom,
    /// The step's sequences, rows in order (the CPU twins' input).
    pub seqs: Vec<SeqMeta>,
    /// Rows (tokens) of the step.
    pub num_rows: usize,
    /// Cache slot of each row (`reshape_and_cache`'s slot mapping).
    pub slots: Vec<i64>,
    /// Decode rows and prefill tiles for the CUDA kernels (checked against the pool).
    pub plan: AttnPlan,
    /// Device copies of `slots` and `plan` (CUDA only).
    #[cfg(feature = "cuda")]
    pub dev: Option<super::cuda::DevMeta>,
}

impl StepMeta {
    /// Plan the step and, on a CUDA device, upload its metadata (six small host-to-device
    /// copies per step, none per layer). `num_blocks`: the pool's size, every block id is
    /// checked against it here.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn new(geom: CacheGeom, seqs: Vec<SeqMeta>, num_rows: usize, num_blocks: usize, device: &Device) -> Result<Self> {
        let slots = cpu::slot_mapping(geom, &seqs, num_rows);
        let plan = AttnPlan::build(&seqs, geom.block_size).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        plan.check(num_blocks, num_rows).map_err(candle_core::Error::Msg)?;
        Ok(Self {
            #[cfg(feature = "cuda")]
            dev: match device {
                Device::Cuda(d) => Some(super::cuda::DevMeta::upload(d, &slots, &plan)?),
                _ => None,
            },
            geom,
            seqs,
            num_rows,
            slots,
            plan,
        })
    }
}
