//! What a step asks of the model, independent of the device: the flattened rows, which rows
//! need logits (prompt logprobs, sampling) or pooling, and — once the model has answered — the
//! sampling, logprobs and pooling on the host. Shared by the CPU runner and the GPU runner.

use crate::attention::SeqMeta;
use crate::constrained::{Constrained, Masks};
use crate::reward_head::RewardHead;
use crate::sampler;
use hhh_engine::{Batch, PooledOutput, SeqOutput, StepOutput, TokenLogprob};

/// What the model answered for a step: logits of the `want` rows (`vocab` wide) and hidden
/// states (`hidden` wide) of the pooled rows.
pub(crate) struct ModelOut<'a> {
    pub logits: &'a [f32],
    pub vocab: usize,
    pub pooled_h: &'a [f32],
    pub hidden: usize,
}

/// The flattened step.
pub(crate) struct StepPlan {
    pub ids: Vec<u32>,
    pub positions: Vec<usize>,
    /// Prompt-token rows (the CPU model's f32 path for Q4_1 weights).
    pub prompt_rows: Vec<bool>,
    pub metas: Vec<SeqMeta>,
    /// Rows that need logits, then rows that are pooled: the model returns hidden states of
    /// these rows in this order.
    pub want: Vec<u32>,
    pub pool_rows: Vec<u32>,
    /// Per sequence: index in `want` of its first prompt-logprob row, of its sample row, and
    /// index in `pool_rows` of its pooled row.
    per_seq: Vec<(usize, Option<usize>, Option<usize>)>,
}

impl StepPlan {
    pub fn new(batch: &Batch) -> Self {
        let n = batch.num_tokens();
        let mut p = StepPlan {
            ids: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
            prompt_rows: Vec::with_capacity(n),
            metas: Vec::with_capacity(batch.seqs.len()),
            want: Vec::new(),
            pool_rows: Vec::new(),
            per_seq: Vec::with_capacity(batch.seqs.len()),
        };
        for s in &batch.seqs {
            let row_start = p.ids.len();
            p.ids.extend_from_slice(&s.tokens);
            p.positions.extend((0..s.tokens.len()).map(|i| s.start_pos + i));
            p.prompt_rows.extend((0..s.tokens.len()).map(|i| s.start_pos + i < s.prompt_len));
            p.metas.push(SeqMeta { row_start, num_rows: s.tokens.len(), start_pos: s.start_pos, block_table: s.block_table.clone() });
            let plp = p.want.len();
            let off = row_start + s.prompt_targets_offset;
            p.want.extend((0..s.prompt_targets.len()).map(|i| (off + i) as u32));
            let last = (row_start + s.tokens.len()).saturating_sub(1) as u32;
            let (mut samp, mut pool) = (None, None);
            if s.sample && s.params.pooling.is_some() {
                p.pool_rows.push(last);
                pool = Some(p.pool_rows.len() - 1);
            } else if s.sample {
                p.want.push(last);
                samp = Some(p.want.len() - 1);
            }
            p.per_seq.push((plp, samp, pool));
        }
        p
    }

    /// Every row whose final hidden state is needed: `want`, then `pool_rows`.
    pub fn all_rows(&self) -> Vec<u32> {
        self.want.iter().chain(&self.pool_rows).copied().collect()
    }

    /// Sample, gather logprobs and pool on the host. `logits`: `[want.len(), vocab]` f32;
    /// `pooled_h`: `[pool_rows.len(), hidden]` f32; `masks`: per batch row, from
    /// [`Constrained::overlap`] (empty when no row is constrained).
    pub fn finish(&self, batch: &Batch, out: ModelOut<'_>, head: Option<&RewardHead>, masks: Masks, constrained: &mut Constrained) -> StepOutput {
        let ModelOut { logits, vocab, pooled_h, hidden } = out;
        // The plan was made for this batch (`new`); a sequence without an entry would get the
        // empty output below.
        debug_assert_eq!(self.per_seq.len(), batch.seqs.len(), "step plan made for another batch");
        let row = |i: usize| &logits[i * vocab..(i + 1) * vocab];
        // Rows are independent (a row's draw depends only on its logits, params and index), so
        // they are sampled in parallel on the kernel pool (whose helper would otherwise spin
        // beside a rayon loop, three threads on two cores); the constraint states advance
        // afterwards, in row order.
        let mut masks: Vec<Option<Vec<bool>>> = masks.into_iter().collect();
        masks.resize(batch.seqs.len(), None);
        /// A sequence's mask going in and its output coming out.
        type Slot = (Option<Vec<bool>>, Option<(SeqOutput, bool)>);
        let mut slots: Vec<Slot> = masks.into_iter().map(|m| (m, None)).collect();
        hhh_kernels::pool::for_each_mut(&mut slots, |i, (mask, done)| {
            let (Some(s), Some(&(plp, samp, pool))) = (batch.seqs.get(i), self.per_seq.get(i)) else { return };
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
            let masked = mask.is_some();
            let sampled = samp.map(|i| {
                if let Some(m) = mask.as_mut() {
                    m.resize(vocab, false);
                }
                sampler::sample_masked(row(i), &s.params, &s.prompt_tokens, &s.output_tokens, s.num_output_tokens, mask.as_deref())
            });
            let pooled = pool.map(|i| {
                let h = &pooled_h[i * hidden..(i + 1) * hidden];
                let ret_hidden = s.params.pooling.is_some_and(|p| p.return_hidden);
                PooledOutput { scores: head.map(|hd| hd.apply(h)).unwrap_or_default(), hidden: ret_hidden.then(|| h.to_vec()) }
            });
            *done = Some((SeqOutput { sampled, prompt_logprobs, pooled }, masked));
        });
        let rows = slots.into_iter().map(|(_, done)| done.unwrap_or((SeqOutput { sampled: None, prompt_logprobs: Vec::new(), pooled: None }, false)));
        let mut out = StepOutput { seqs: Vec::with_capacity(batch.seqs.len()) };
        for (s, (seq, masked)) in batch.seqs.iter().zip(rows) {
            if let (true, Some(t)) = (masked, &seq.sampled) {
                constrained.sampled(s.request_id, t.token);
            }
            out.seqs.push(seq);
        }
        out
    }
}
