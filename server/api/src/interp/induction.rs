//! Induction heads and in-context learning (Olsson et al., 2022), measured through the engine's
//! inspection path ([`hhh_engine::inspect`]).
//!
//! - **Prefix matching** of head `(l, h)`: on a sequence of `n` random tokens (no repeats) shown
//!   twice, the attention each token of the second copy (positions `n..2n`) pays to the token
//!   right after its earlier occurrence (position `i - n + 1`), averaged over positions and
//!   sequences. Chance for a uniform head at position `i` is `1 / (i + 1)`.
//! - **Copying** of head `(l, h)`: on the second copy (positions `n..2n-1`), the head's direct
//!   effect on the logit of the next token relative to the mean logit (see
//!   [`hhh_engine::InspectOutput::direct_logit`]), averaged — an empirical stand-in for the
//!   paper's OV-circuit eigenvalue criterion: positive when the head raises the token it
//!   should copy.
//! - **In-context learning score**: mean loss at token `positions[1]` minus at `positions[0]`,
//!   over texts.

use crate::error::ApiError;
use crate::state::FeedbackModel;
use hhh_engine::InspectRequest;
use hhh_proto::{HeadScore, IclScore, InductionResponse, RepeatedLoss};

/// Longest random sequence (it is shown twice).
pub const MAX_SEQ_LEN: usize = 512;
/// Most random sequences per request.
pub const MAX_SEQUENCES: usize = 64;
/// Most texts for the in-context learning score.
pub const MAX_ICL_TEXTS: usize = 256;

/// A validated request.
pub struct Plan {
    pub fm: FeedbackModel,
    pub seq_len: usize,
    pub num_sequences: usize,
    pub seed: u64,
    /// Token ids of each ICL text (already checked to be long enough).
    pub icl: Vec<Vec<u32>>,
    pub icl_positions: [usize; 2],
    pub top_k: usize,
}

/// Token ids that decode to visible text (no special tokens), the pool random sequences draw from.
pub fn ordinary_tokens(fm: &FeedbackModel) -> Vec<u32> {
    (0..fm.tokenizer.vocab_size() as u32).filter(|&id| fm.tokenizer.decode(&[id], true).is_ok_and(|t| !t.trim().is_empty())).collect()
}

/// `n` distinct tokens from `pool`, drawn with a seeded generator (splitmix64).
pub fn random_sequence(pool: &[u32], n: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut picked = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n.min(pool.len()) {
        let t = pool[(next() % pool.len() as u64) as usize];
        if picked.insert(t) {
            out.push(t);
        }
    }
    out
}

/// Prefix-matching scores `[heads]` of one layer's attention `[heads, 2n, 2n]`.
pub fn prefix_matching(att: &[f32], heads: usize, n: usize) -> Vec<f64> {
    let t = 2 * n;
    (0..heads).map(|h| (n..t).map(|i| att[h * t * t + i * t + (i - n + 1)] as f64).sum::<f64>() / n as f64).collect()
}

/// Copying scores `[layers][heads]` from direct logit effects `[layers, heads, 2n - 1]`.
pub fn copying(dla: &[f32], layers: usize, heads: usize, n: usize) -> Vec<Vec<f64>> {
    let rows = 2 * n - 1;
    (0..layers).map(|l| (0..heads).map(|h| (n..rows).map(|i| dla[(l * heads + h) * rows + i] as f64).sum::<f64>() / (rows - n).max(1) as f64).collect()).collect()
}

/// Run the plan.
pub async fn run(plan: Plan) -> Result<InductionResponse, ApiError> {
    let pool = ordinary_tokens(&plan.fm);
    if pool.len() < plan.seq_len {
        return Err(ApiError::invalid("seq_len", format!("`seq_len` must be at most the {} ordinary tokens of the vocabulary, got {}.", pool.len(), plan.seq_len)));
    }
    let n = plan.seq_len;
    let mut pm_sum: Vec<Vec<f64>> = Vec::new();
    let mut copy_sum: Vec<Vec<f64>> = Vec::new();
    let (mut first, mut second) = (0.0, 0.0);
    let (mut layers, mut heads, mut tokens) = (0, 0, 0);
    for s in 0..plan.num_sequences {
        let half = random_sequence(&pool, n, plan.seed.wrapping_mul(1_000_003).wrapping_add(s as u64));
        let seq: Vec<u32> = half.iter().chain(&half).copied().collect();
        tokens += seq.len();
        // Learn the layer count from the first answer, then ask for every layer's attention.
        let nl = if layers == 0 { plan.fm.engine.inspect(InspectRequest { tokens: vec![seq[0]], ..Default::default() }).await?.num_layers } else { layers };
        let req = InspectRequest { tokens: seq, attention_layers: (0..nl).collect(), token_logprobs: true, direct_logit: true, ..Default::default() };
        let out = plan.fm.engine.inspect(req).await?;
        (layers, heads) = (out.num_layers, out.num_heads);
        if pm_sum.is_empty() {
            pm_sum = vec![vec![0.0; heads]; layers];
            copy_sum = vec![vec![0.0; heads]; layers];
        }
        for (l, att) in out.attention.iter().enumerate() {
            for (h, v) in prefix_matching(att, heads, n).into_iter().enumerate() {
                pm_sum[l][h] += v;
            }
        }
        for (l, row) in copying(&out.direct_logit, layers, heads, n).into_iter().enumerate() {
            for (h, v) in row.into_iter().enumerate() {
                copy_sum[l][h] += v;
            }
        }
        // token_logprobs[t] predicts token t + 1. The first copy: t < n - 1. The second copy's
        // first token (t = n - 1) follows nothing seen before; the rest (t >= n) each follow a
        // token whose successor the first copy showed.
        let lp = &out.token_logprobs;
        first += -lp[..n - 1].iter().map(|&v| v as f64).sum::<f64>() / (n - 1) as f64;
        second += -lp[n..].iter().map(|&v| v as f64).sum::<f64>() / (lp.len() - n) as f64;
    }
    let k = plan.num_sequences as f64;
    let prefix: Vec<Vec<f64>> = pm_sum.iter().map(|r| r.iter().map(|v| v / k).collect()).collect();
    let copy: Vec<Vec<f64>> = copy_sum.iter().map(|r| r.iter().map(|v| v / k).collect()).collect();
    let mut top: Vec<HeadScore> = (0..layers).flat_map(|l| (0..heads).map(move |h| (l, h))).map(|(l, h)| HeadScore { layer: l, head: h, prefix_matching: prefix[l][h], copying: copy[l][h] }).collect();
    top.sort_by(|a, b| b.prefix_matching.total_cmp(&a.prefix_matching));
    top.truncate(plan.top_k);
    let icl = if plan.icl.is_empty() { None } else { Some(icl_score(&plan, &mut tokens).await?) };
    Ok(InductionResponse {
        object: "interpretability.induction".into(),
        created: crate::respond::now(),
        model: plan.fm.name.clone(),
        num_layers: layers,
        num_heads: heads,
        seq_len: n,
        num_sequences: plan.num_sequences,
        seed: plan.seed,
        prefix_matching: prefix,
        copying: copy,
        top_heads: top,
        repeated_loss: RepeatedLoss { first_copy: first / k, second_copy: second / k },
        icl,
        tokens,
    })
}

/// The in-context learning score over the plan's texts.
async fn icl_score(plan: &Plan, tokens: &mut usize) -> Result<IclScore, ApiError> {
    let [a, b] = plan.icl_positions;
    let mut diffs = Vec::with_capacity(plan.icl.len());
    let (mut la, mut lb) = (0.0, 0.0);
    for ids in &plan.icl {
        let ids = ids[..=b].to_vec();
        *tokens += ids.len();
        let out = plan.fm.engine.inspect(InspectRequest { tokens: ids, token_logprobs: true, ..Default::default() }).await?;
        // The loss at token p is -log p(token p | tokens before it) = -token_logprobs[p - 1].
        let (x, y) = (-(out.token_logprobs[a - 1] as f64), -(out.token_logprobs[b - 1] as f64));
        la += x;
        lb += y;
        diffs.push(y - x);
    }
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let var = if diffs.len() > 1 { diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    Ok(IclScore { positions: vec![a, b], losses: vec![la / n, lb / n], score: mean, score_stderr: (var / n).sqrt(), num_texts: diffs.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching_reads_the_token_after_the_earlier_occurrence() {
        // n = 2, t = 4, one head attending exactly to i - n + 1 on the second copy.
        let (n, t) = (2, 4);
        let mut att = vec![0f32; t * t];
        att[2 * t + 1] = 1.0; // i = 2 -> 1
        att[3 * t + 2] = 0.5; // i = 3 -> 2
        assert_eq!(prefix_matching(&att, 1, n), vec![0.75]);
    }

    #[test]
    fn random_sequences_are_seeded_and_distinct() {
        let pool: Vec<u32> = (10..1000).collect();
        let a = random_sequence(&pool, 50, 7);
        assert_eq!(a, random_sequence(&pool, 50, 7));
        assert_ne!(a, random_sequence(&pool, 50, 8));
        let set: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(set.len(), 50);
        assert!(a.iter().all(|t| pool.contains(t)));
    }
}
