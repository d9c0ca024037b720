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
            self.model.logits_vec(&h)?
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

    fn inspect(&mut self, req: &hhh_engine::InspectRequest) -> std::result::Result<hhh_engine::InspectOutput, ExecutorError> {
        self.model.inspect(req).map_err(ExecutorError::step)
    }

    /// Apply a [`WeightUpdate`]: a [`LlamaModel`] of the same architecture (layers, heads,
    /// sizes, vocabulary and weight type: the KV cache and the tokenizer stay; it keeps the
    /// serving model's arithmetic flags) and/or a reward head of the same shape as the served
    /// one. Both are checked before either is applied: anything else is refused and the old
    /// weights keep serving.
    fn update_weights(&mut self, weights: hhh_engine::WeightPayload) -> std::result::Result<(), ExecutorError> {
        let WeightUpdate { model, head } = WeightUpdate::<LlamaModel>::take(weights)?;
        if let Some(why) = model.as_ref().and_then(|new| incompatible(&self.model, new)).or_else(|| head_mismatch(self.head.as_ref(), head.as_ref())) {
            return Err(ExecutorError::step(why));
        }
        if let Some(mut new) = model {
            new.dense_attention = self.model.dense_attention;
            new.prompt_f32 = self.model.prompt_f32;
            self.model = new;
        }
        if let Some(h) = head {
            self.head = Some(h);
        }
        release_freed_memory();
        Ok(())
    }
}

/// What `/update_weights_from_disk` hands the engine: new model weights (`M`: [`LlamaModel`] for
/// the CPU engine, [`crate::gpu::GpuLlama`] for the GPU one), a new reward head, or both (a
/// sequence-classification checkpoint brings its own head).
#[derive(Debug)]
pub struct WeightUpdate<M = LlamaModel> {
    pub model: Option<M>,
    pub head: Option<RewardHead>,
}

impl<M> Default for WeightUpdate<M> {
    fn default() -> Self {
        Self { model: None, head: None }
    }
}

impl<M: 'static> WeightUpdate<M> {
    /// The update inside an engine payload; refused when it is another kind or carries nothing.
    pub fn take(payload: hhh_engine::WeightPayload) -> std::result::Result<Self, ExecutorError> {
        let u = payload.downcast::<Self>().map_err(|_| ExecutorError::step("the update does not fit this engine's model type"))?;
        if u.model.is_none() && u.head.is_none() {
            return Err(ExecutorError::step("the update carries neither weights nor a reward head"));
        }
        Ok(*u)
    }
}

/// Why a reward head `new` cannot replace the served `old`, if it cannot.
pub fn head_mismatch(old: Option<&RewardHead>, new: Option<&RewardHead>) -> Option<String> {
    let new = new?;
    match old {
        None => Some("this model serves no reward head to replace".into()),
        Some(old) if old.num_labels != new.num_labels || old.hidden_size != new.hidden_size => {
            Some(format!("reward head mismatch: the new head is {} x {}, the served one {} x {}", new.num_labels, new.hidden_size, old.num_labels, old.hidden_size))
        }
        Some(_) => None,
    }
}

/// Hand the pages of freed allocations (the old weights) back to the OS. glibc raises its mmap
/// threshold after large frees, so a model loaded after another may sit in the heap, where freed
/// weights otherwise stay resident: repeated updates would look like a leak.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the OS; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One malloc arena for the whole process (glibc), unless `MALLOC_ARENA_MAX` is set. glibc
/// gives each thread that allocates its own arena (up to 8 per core), and each keeps the memory
/// its thread freed: the HTTP workers, the blocking pool, the engine and the compute threads.
/// Measured with 16 streaming clients on the default model (2 cores, 1024 KV blocks): peak RSS
/// 609 MiB with the default, 588 with 2 arenas, 575 with 1, at the same throughput. Call at the
/// start of `main`, before any thread is spawned.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes the allocator's tuning; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Why `new` cannot replace `old` in a running engine, if it cannot.
pub fn incompatible(old: &LlamaModel, new: &LlamaModel) -> Option<String> {
    if let Some(why) = config_mismatch(&old.cfg, &new.cfg) {
        return Some(why);
    }
    if old.dtype_name != new.dtype_name {
        return Some(format!("weight type mismatch: the new weights are {}, the served model is {}", new.dtype_name, old.dtype_name));
    }
    None
}

/// Why a model of config `b` cannot replace one of config `a` under the same KV cache and
/// tokenizer, if it cannot.
pub fn config_mismatch(a: &crate::LlamaConfig, b: &crate::LlamaConfig) -> Option<String> {
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
    if a.rope_interleaved != b.rope_interleaved || a.tie_word_embeddings != b.tie_word_embeddings {
        return Some("architecture mismatch: RoPE layout or tied embeddings differ".into());
    }
    None
}
