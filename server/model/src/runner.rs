//! The model runner: turns an engine [`Batch`] into one forward pass and samples the results.

use crate::attention::{PagedKvCache, SeqMeta};
use crate::error::Result;
use crate::llama::LlamaModel;
use crate::sampler;
use hhh_engine::{Batch, Executor, SeqOutput, StepOutput, TokenLogprob};

/// KV pool geometry.
#[derive(Debug, Clone, Copy)]
pub struct RunnerConfig {
    pub num_blocks: usize,
    pub block_size: usize,
}

/// Owns the model and the paged KV cache; lives on the engine thread.
pub struct ModelRunner {
    model: LlamaModel,
    kv: PagedKvCache,
}

impl ModelRunner {
    pub fn new(model: LlamaModel, cfg: RunnerConfig) -> Self {
        let c = &model.cfg;
        let kv = PagedKvCache::new(c.num_layers, cfg.num_blocks, cfg.block_size, c.num_kv_heads, c.head_dim);
        Self { model, kv }
    }

    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    fn run(&mut self, batch: &Batch) -> Result<StepOutput> {
        let n = batch.num_tokens();
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut metas = Vec::with_capacity(batch.seqs.len());
        let mut want: Vec<u32> = Vec::new();
        // Per sequence: index in `want` of its first prompt-logprob row and of its sample row.
        let mut plan = Vec::with_capacity(batch.seqs.len());
        for s in &batch.seqs {
            let row_start = ids.len();
            ids.extend_from_slice(&s.tokens);
            positions.extend((0..s.tokens.len()).map(|i| s.start_pos + i));
            metas.push(SeqMeta { row_start, num_rows: s.tokens.len(), start_pos: s.start_pos, block_table: s.block_table.clone() });
            let plp = want.len();
            want.extend((0..s.prompt_targets.len()).map(|i| (row_start + i) as u32));
            let samp = if s.sample {
                want.push((row_start + s.tokens.len() - 1) as u32);
                Some(want.len() - 1)
            } else {
                None
            };
            plan.push((plp, samp));
        }
        let logits = self.model.forward(&ids, &positions, &metas, &mut self.kv, &want)?;
        let vocab = logits.dim(1)?;
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let row = |i: usize| &logits[i * vocab..(i + 1) * vocab];
        let mut out = StepOutput { seqs: Vec::with_capacity(batch.seqs.len()) };
        for (s, (plp, samp)) in batch.seqs.iter().zip(plan) {
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
            out.seqs.push(SeqOutput { sampled, prompt_logprobs });
        }
        Ok(out)
    }
}

impl Executor for ModelRunner {
    fn execute(&mut self, batch: &Batch) -> std::result::Result<StepOutput, String> {
        self.run(batch).map_err(|e| e.to_string())
    }
}
