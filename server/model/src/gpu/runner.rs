//! The GPU model runner: the same [`Executor`] seam as the CPU runner, with the model and its
//! paged KV pool on a candle device. Host-side work (sampling, logprobs, pooling heads) is the
//! CPU runner's ([`crate::step_plan::StepPlan`]); the only device-to-host copies of a step are
//! the logits of the rows that need them and the pooled rows' hidden states (see
//! `tests/gpu_no_host_roundtrip.rs`).

use super::model::GpuLlama;
use crate::error::{ModelError, Result};
use crate::reward_head::RewardHead;
use crate::runner::{config_mismatch, head_mismatch, WeightUpdate};
use crate::step_plan::{ModelOut, StepPlan};
use candle_core::{DType, Tensor};
use hhh_engine::{Batch, Executor, ExecutorError, KvGeometry, StepOutput};

/// Owns the device model, its KV pool and an optional reward head; lives on the engine thread.
pub struct GpuRunner {
    model: GpuLlama,
    /// One `[2, num_blocks * block_size, width]` tensor per layer.
    cache: Vec<Tensor>,
    block_size: usize,
    head: Option<RewardHead>,
    /// Structured-output states of the running constrained sequences.
    constrained: crate::constrained::Constrained,
}

impl GpuRunner {
    /// Allocate the KV pool the engine's geometry asks for next to the model.
    pub fn new(model: GpuLlama, kv: KvGeometry) -> Result<Self> {
        let KvGeometry { num_blocks, block_size } = kv;
        if block_size == 0 || num_blocks == 0 {
            return Err(ModelError::Invalid("the KV pool needs at least one block of at least one token".into()));
        }
        let cache = model.new_cache(num_blocks, block_size)?;
        Ok(Self { model, cache, block_size, head: None, constrained: Default::default() })
    }

    /// Attach a reward head (its width must be the model's hidden size).
    pub fn with_head(mut self, head: RewardHead) -> Result<Self> {
        self.head = Some(head.for_model(self.model.cfg.hidden_size)?);
        Ok(self)
    }

    pub fn model(&self) -> &GpuLlama {
        &self.model
    }

    fn run(&mut self, batch: &Batch) -> Result<StepOutput> {
        let plan = StepPlan::new(batch);
        // Kernels launch asynchronously: constrained rows' masks are computed on another thread
        // until the logits are copied back.
        let (model, cache, block_size) = (&self.model, &self.cache, self.block_size);
        let (masks, hidden) = self.constrained.overlap(batch, model.cfg.vocab_size, || model.forward_hidden(&plan.ids, &plan.positions, plan.metas.clone(), cache, block_size, &plan.all_rows()))?;
        let hidden = hidden?;
        // The step's only device-to-host copies: logits of the rows that need them, pooled rows.
        let Some(hidden) = hidden else {
            return Ok(plan.finish(batch, ModelOut { logits: &[], vocab: 0, pooled_h: &[], hidden: self.model.cfg.hidden_size }, self.head.as_ref(), masks, &mut self.constrained));
        };
        let (logits, vocab) = if plan.want.is_empty() {
            (Vec::new(), 0)
        } else {
            let l = self.model.logits(&hidden.narrow(0, 0, plan.want.len())?)?;
            let vocab = l.dim(1)?;
            (l.flatten_all()?.to_vec1::<f32>()?, vocab)
        };
        let pooled_h = if plan.pool_rows.is_empty() { Vec::new() } else { hidden.narrow(0, plan.want.len(), plan.pool_rows.len())?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? };
        Ok(plan.finish(batch, ModelOut { logits: &logits, vocab, pooled_h: &pooled_h, hidden: self.model.cfg.hidden_size }, self.head.as_ref(), masks, &mut self.constrained))
    }
}

impl Executor for GpuRunner {
    fn execute(&mut self, batch: &Batch) -> std::result::Result<StepOutput, ExecutorError> {
        self.run(batch).map_err(ExecutorError::step)
    }

    fn release(&mut self, request_id: hhh_engine::RequestId) {
        self.constrained.release(request_id);
    }

    fn inspect(&mut self, req: &hhh_engine::InspectRequest) -> std::result::Result<hhh_engine::InspectOutput, ExecutorError> {
        self.model.inspect(req).map_err(ExecutorError::step)
    }

    /// Apply a [`WeightUpdate`] of a [`GpuLlama`] (same architecture, dtype and device: the KV
    /// pool stays) and/or a reward head of the served shape, both checked before either applies.
    /// The new weights were loaded next to the old ones, so the device briefly holds both.
    fn update_weights(&mut self, weights: hhh_engine::WeightPayload) -> std::result::Result<(), ExecutorError> {
        let WeightUpdate { model, head } = WeightUpdate::<GpuLlama>::take(weights)?;
        let model_why = model.as_ref().and_then(|new| {
            let old = &self.model;
            config_mismatch(&old.cfg, &new.cfg)
                .or_else(|| (old.dtype != new.dtype).then(|| format!("dtype mismatch: the new weights are {:?}, the served model {:?}", new.dtype, old.dtype)))
                .or_else(|| (!old.device.same_device(&new.device)).then(|| "the new weights are on another device".to_string()))
        });
        if let Some(why) = model_why.or_else(|| head_mismatch(self.head.as_ref(), head.as_ref())) {
            return Err(ExecutorError::step(why));
        }
        if let Some(new) = model {
            self.model = new;
        }
        if let Some(h) = head {
            self.head = Some(h);
        }
        crate::runner::release_freed_memory();
        Ok(())
    }
}
