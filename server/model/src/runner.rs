//! The model runner: turns an engine [`Batch`] into one forward pass and samples the results.

use crate::attention::{KvDtype, PagedKvCache};
use crate::error::Result;
use crate::llama::LlamaModel;
use crate::reward_head::RewardHead;
use crate::step_plan::{ModelOut, StepPlan};
use hhh_engine::{Batch, Executor, ExecutorError, KvGeometry, StepOutput};

/// KV pool geometry.
#[derive(Debug, Clone, Copy)]
pub struct RunnerConfig {
    /// The KV pool's shape, as the engine hands it to the executor factory.
    pub kv: KvGeometry,
    /// Storage type of the cached keys and values; `None`: the model's default (f16 for GGUF,
    /// f32 for safetensors). Always f32 in reference mode (`LlamaModel::dense_attention`).
    pub kv_dtype: Option<KvDtype>,
    /// Compute threads of the runner's pool; 0: one per core.
    pub threads: usize,
}

/// Owns the model, its optional reward head and the paged KV cache; lives on the engine thread.
pub struct ModelRunner {
    model: LlamaModel,
    kv: PagedKvCache,
    /// Applied to the final hidden state of pooling requests.
    head: Option<RewardHead>,
    /// Compute threads (`RunnerConfig::threads`, default all cores). A step runs inside the pool
    /// (`install`): the kernels' own pool (`hhh_kernels::pool`, spinning helpers) takes its
    /// size from it, and candle ops that use rayon run on it.
    pool: Option<rayon::ThreadPool>,
    /// Structured-output states of the running constrained sequences.
    constrained: crate::constrained::Constrained,
}

impl ModelRunner {
    pub fn new(model: LlamaModel, cfg: RunnerConfig) -> Self {
        let c = &model.cfg;
        let dtype: KvDtype = model.kv_dtype(cfg.kv_dtype);
        let kv = PagedKvCache::new(c.num_layers, cfg.kv.num_blocks, cfg.kv.block_size, c.num_kv_heads, c.head_dim, dtype);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(cfg.threads).thread_name(|i| format!("hhh-compute-{i}")).build().ok();
        Self { model, kv, head: None, pool, constrained: Default::default() }
    }

    /// Attach a reward head (its width must be the model's hidden size).
    pub fn with_head(mut self, head: RewardHead) -> Result<Self> {
        self.head = Some(head.for_model(self.model.cfg.hidden_size)?);
        Ok(self)
    }

    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    fn run(&mut self, batch: &Batch) -> Result<StepOutput> {
        let plan = StepPlan::new(batch);
        // One pass for both kinds of rows; the LM head runs only over rows that need logits.
        // Constrained rows' masks are computed meanwhile on another thread.
        let (model, kv) = (&self.model, &mut self.kv);
        let (masks, hidden) = self.constrained.overlap(batch, model.cfg.vocab_size, || model.forward_hidden(&plan.ids, &plan.positions, &plan.metas, kv, &plan.all_rows(), &plan.prompt_rows))?;
        let hidden = hidden?;
        let (logits, vocab) = if plan.want.is_empty() {
            (Vec::new(), 0)
        } else {
            let h = hidden.narrow(0, 0, plan.want.len())?;
            let l = self.model.logits(&h)?;
            let vocab = l.dim(1)?;
            (l.flatten_all()?.to_vec1::<f32>()?, vocab)
        };
        let pooled_h: Vec<f32> = if plan.pool_rows.is_empty() { Vec::new() } else { hidden.narrow(0, plan.want.len(), plan.pool_rows.len())?.flatten_all()?.to_vec1::<f32>()? };
        Ok(plan.finish(batch, ModelOut { logits: &logits, vocab, pooled_h: &pooled_h, hidden: self.model.cfg.hidden_size }, self.head.as_ref(), masks, &mut self.constrained))
    }
}

impl Executor for ModelRunner {
    fn execute(&mut self, batch: &Batch) -> std::result::Result<StepOutput, ExecutorError> {
        match self.pool.take() {
            Some(pool) => {
                let out = pool.install(|| self.run(batch));
                self.pool = Some(pool);
                out.map_err(ExecutorError::step)
            }
            None => self.run(batch).map_err(ExecutorError::step),
        }
    }

    fn release(&mut self, request_id: hhh_engine::RequestId) {
        self.constrained.release(request_id);
    }

    /// Swap in a [`LlamaModel`] of the same architecture (layers, heads, sizes, vocabulary and
    /// weight type: the KV cache and the tokenizer stay); it keeps the serving model's
    /// arithmetic flags. Anything else is refused and the old model keeps serving.
    fn update_weights(&mut self, weights: hhh_engine::WeightPayload) -> std::result::Result<(), ExecutorError> {
        let mut new = weights.downcast::<LlamaModel>().map_err(|_| ExecutorError::step("the new weights are not a Llama model"))?;
        if let Some(why) = incompatible(&self.model, &new) {
            return Err(ExecutorError::step(why));
        }
        new.dense_attention = self.model.dense_attention;
        new.prompt_f32 = self.model.prompt_f32;
        self.model = *new;
        Ok(())
    }
}

/// Why `new` cannot replace `old` in a running engine, if it cannot.
pub fn incompatible(old: &LlamaModel, new: &LlamaModel) -> Option<String> {
    let (a, b) = (&old.cfg, &new.cfg);
    let fields = [
        ("vocab_size", a.vocab_size, b.vocab_size),
        ("hidden_size", a.hidden_size, b.hidden_size),
        ("intermediate_size", a.intermediate_size, b.intermediate_size),
        ("num_layers", a.num_layers, b.num_layers),
        ("num_heads", a.num_heads, b.num_heads),
        ("num_kv_heads", a.num_kv_heads, b.num_kv_heads),
        ("head_dim", a.head_dim, b.head_dim),
    ];
    if let Some((name, x, y)) = fields.iter().find(|(_, x, y)| x != y) {
        return Some(format!("architecture mismatch: {name} is {y} in the new weights, {x} in the served model"));
    }
    if old.dtype_name != new.dtype_name {
        return Some(format!("weight type mismatch: the new weights are {}, the served model is {}", new.dtype_name, old.dtype_name));
    }
    if a.rope_interleaved != b.rope_interleaved || a.tie_word_embeddings != b.tie_word_embeddings {
        return Some("architecture mismatch: RoPE layout or tied embeddings differ".into());
    }
    None
}
