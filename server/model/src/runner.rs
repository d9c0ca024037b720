//! The model runner: turns an engine [`Batch`] into one forward pass and samples the results.

use crate::attention::{KvDtype, PagedKvCache, SeqMeta};
use crate::error::Result;
use crate::llama::LlamaModel;
use crate::reward_head::RewardHead;
use crate::sampler;
use hhh_engine::{Batch, Executor, PooledOutput, SeqOutput, StepOutput, TokenLogprob};

/// KV pool geometry.
#[derive(Debug, Clone, Copy)]
pub struct RunnerConfig {
    pub num_blocks: usize,
    pub block_size: usize,
    /// Storage type of the cached keys and values; `None`: the model's default (f16 for GGUF,
    /// f32 for safetensors). Always f32 in reference mode (`HHH_DENSE_ATTENTION=1`).
    pub kv_dtype: Option<KvDtype>,
}

/// Owns the model, its optional reward head and the paged KV cache; lives on the engine thread.
pub struct ModelRunner {
    model: LlamaModel,
    kv: PagedKvCache,
    /// Applied to the final hidden state of pooling requests.
    head: Option<RewardHead>,
    /// Compute threads (`RAYON_NUM_THREADS`, default all cores). A step runs inside the pool
    /// (`install`): the kernels' own pool (`hhh_kernels::pool`, spinning helpers) takes its
    /// size from it, and candle ops that use rayon run on it.
    pool: Option<rayon::ThreadPool>,
}

impl ModelRunner {
    pub fn new(model: LlamaModel, cfg: RunnerConfig) -> Self {
        let c = &model.cfg;
        let dtype: KvDtype = model.kv_dtype(cfg.kv_dtype);
        let kv = PagedKvCache::new(c.num_layers, cfg.num_blocks, cfg.block_size, c.num_kv_heads, c.head_dim, dtype);
        let threads = std::env::var("RAYON_NUM_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(0);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("hhh-compute-{i}")).build().ok();
        Self { model, kv, head: None, pool }
    }

    /// Attach a reward head (its width must be the model's hidden size).
    pub fn with_head(mut self, head: RewardHead) -> Result<Self> {
        if head.hidden_size != self.model.cfg.hidden_size {
            return Err(crate::ModelError::Invalid(format!(
                "reward head width {} != model hidden size {}",
                head.hidden_size, self.model.cfg.hidden_size
            )));
        }
        self.head = Some(head);
        Ok(self)
    }

    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    fn run(&mut self, batch: &Batch) -> Result<StepOutput> {
        let n = batch.num_tokens();
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        // Prompt-token rows (the model's f32 path for Q4_1 weights).
        let mut prompt_rows = Vec::with_capacity(n);
        let mut metas = Vec::with_capacity(batch.seqs.len());
        // Rows that need logits (prompt logprobs, sampling) and rows that are pooled.
        let mut want: Vec<u32> = Vec::new();
        let mut pool_rows: Vec<u32> = Vec::new();
        // Per sequence: index in `want` of its first prompt-logprob row, of its sample row, and
        // index in `pool_rows` of its pooled row.
        let mut plan = Vec::with_capacity(batch.seqs.len());
        for s in &batch.seqs {
            let row_start = ids.len();
            ids.extend_from_slice(&s.tokens);
            positions.extend((0..s.tokens.len()).map(|i| s.start_pos + i));
            prompt_rows.extend((0..s.tokens.len()).map(|i| s.start_pos + i < s.prompt_len));
            metas.push(SeqMeta { row_start, num_rows: s.tokens.len(), start_pos: s.start_pos, block_table: s.block_table.clone() });
            let plp = want.len();
            let off = row_start + s.prompt_targets_offset;
            want.extend((0..s.prompt_targets.len()).map(|i| (off + i) as u32));
            let last = (row_start + s.tokens.len() - 1) as u32;
            let (mut samp, mut pool) = (None, None);
            if s.sample && s.params.pooling.is_some() {
                pool_rows.push(last);
                pool = Some(pool_rows.len() - 1);
            } else if s.sample {
                want.push(last);
                samp = Some(want.len() - 1);
            }
            plan.push((plp, samp, pool));
        }
        // One pass for both kinds of rows; the LM head runs only over rows that need logits.
        let all_rows: Vec<u32> = want.iter().chain(&pool_rows).copied().collect();
        let hidden = self.model.forward_hidden(&ids, &positions, &metas, &mut self.kv, &all_rows, &prompt_rows)?;
        let (logits, vocab) = if want.is_empty() {
            (Vec::new(), 0)
        } else {
            let h = hidden.narrow(0, 0, want.len())?;
            let l = self.model.logits(&h)?;
            let vocab = l.dim(1)?;
            (l.flatten_all()?.to_vec1::<f32>()?, vocab)
        };
        let pooled_h: Vec<f32> = if pool_rows.is_empty() { Vec::new() } else { hidden.narrow(0, want.len(), pool_rows.len())?.flatten_all()?.to_vec1::<f32>()? };
        let hs = self.model.cfg.hidden_size;
        let row = |i: usize| &logits[i * vocab..(i + 1) * vocab];
        let mut out = StepOutput { seqs: Vec::with_capacity(batch.seqs.len()) };
        for (s, (plp, samp, pool)) in batch.seqs.iter().zip(plan) {
            let k = s.params.prompt_logprobs.unwrap_or(0);
            let prompt_logprobs = s
                .prompt_targets
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    let lp = sampler::log_softmax(row(plp + i));
                    TokenLogprob { token: t, logprob: lp[t as usize], top: sampler::top_logprobs(&lp, k) }
                })
                .collect();
            let sampled = samp.map(|i| sampler::sample(row(i), &s.params, &s.prompt_tokens, &s.output_tokens));
            let pooled = pool.map(|i| {
                let h = &pooled_h[i * hs..(i + 1) * hs];
                let ret_hidden = s.params.pooling.is_some_and(|p| p.return_hidden);
                PooledOutput { scores: self.head.as_ref().map(|hd| hd.apply(h)).unwrap_or_default(), hidden: ret_hidden.then(|| h.to_vec()) }
            });
            out.seqs.push(SeqOutput { sampled, prompt_logprobs, pooled });
        }
        Ok(out)
    }
}

impl Executor for ModelRunner {
    fn execute(&mut self, batch: &Batch) -> std::result::Result<StepOutput, String> {
        match self.pool.take() {
            Some(pool) => {
                let out = pool.install(|| self.run(batch));
                self.pool = Some(pool);
                out.map_err(|e| e.to_string())
            }
            None => self.run(batch).map_err(|e| e.to_string()),
        }
    }
}
