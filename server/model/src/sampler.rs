//! Token selection: penalties, greedy, temperature, top-k, top-p, min-p; logprobs.
//!
//! Reported logprobs are those of the model's own distribution (raw logits, before penalties
//! and temperature), as vLLM reports them by default. Randomness comes from an RNG seeded by
//! `(request seed, index of the token being generated)`, so a request's tokens do not depend on
//! what else is in the batch, and a preempted request recomputes the same tokens.

use hhh_engine::{SamplingParams, TokenId, TokenLogprob};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::borrow::Cow;

/// `log_softmax` of one row ([`logsumexp`]).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let lse = logsumexp(logits);
    logits.iter().map(|&l| l - lse).collect()
}

/// `log Σ exp(l)` of one row ([`hhh_kernels::act::logsumexp`]: the exponentials 8 wide where
/// the CPU has AVX2, within 2e-7 relative of the true value, summed in f64 in a fixed order, so
/// a row's result never depends on the batch; nothing copied). Sampling calls it once per
/// generated token over the whole vocabulary.
pub fn logsumexp(logits: &[f32]) -> f32 {
    hhh_kernels::act::logsumexp(logits)
}

/// The `k` most likely tokens of a logprob row, best first (ties: lower id first).
pub fn top_logprobs(lp: &[f32], k: usize) -> Vec<(TokenId, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..lp.len() as u32).collect();
    let k = k.min(idx.len());
    let cmp = |a: &u32, b: &u32| lp[*b as usize].total_cmp(&lp[*a as usize]).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, lp[i as usize])).collect()
}

fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Apply repetition (HF), frequency and presence (OpenAI) penalties; `logits` is copied (made
/// owned) only when one of them applies.
pub fn apply_penalties(logits: &mut Cow<[f32]>, p: &SamplingParams, prompt: &[TokenId], output: &[TokenId]) {
    if p.repetition_penalty != 1.0 {
        let logits = logits.to_mut();
        let mut seen = vec![false; logits.len()];
        for &t in prompt.iter().chain(output) {
            if let Some(s) = seen.get_mut(t as usize) {
                *s = true;
            }
        }
        for (l, s) in logits.iter_mut().zip(seen) {
            if s {
                *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
            }
        }
    }
    if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
        let logits = logits.to_mut();
        let mut counts = std::collections::HashMap::<TokenId, u32>::new();
        for &t in output {
            *counts.entry(t).or_default() += 1;
        }
        for (t, c) in counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= p.frequency_penalty * c as f32 + p.presence_penalty;
            }
        }
    }
}

fn rng_for(seed: u64, index: usize) -> StdRng {
    // splitmix64 of the pair, so nearby seeds and indices give unrelated streams.
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// Pick the next token from one row of raw logits.
/// `output` is every token generated so far (the token's index is its length).
pub fn sample(raw: &[f32], p: &SamplingParams, prompt: &[TokenId], output: &[TokenId]) -> TokenLogprob {
    sample_masked(raw, p, prompt, output, output.len(), None)
}

/// [`sample`] for the `index`-th generated token (the random stream is keyed by the seed and
/// `index`; `output` may be empty when no penalty needs it) among the tokens `allowed` marks (a
/// structured-output mask; tokens past its end are not allowed). Reported logprobs stay the
/// model's own.
pub fn sample_masked(raw: &[f32], p: &SamplingParams, prompt: &[TokenId], output: &[TokenId], index: usize, allowed: Option<&[bool]>) -> TokenLogprob {
    let lse = logsumexp(raw);
    // Each adjustment copies the row (once) only when it applies: most requests use the
    // model's row as it is.
    let mut logits = Cow::Borrowed(raw);
    for &(t, b) in &p.logit_bias {
        if let Some(l) = logits.to_mut().get_mut(t as usize) {
            *l += b;
        }
    }
    apply_penalties(&mut logits, p, prompt, output);
    if let Some(a) = allowed {
        for (i, l) in logits.to_mut().iter_mut().enumerate() {
            if !a.get(i).copied().unwrap_or(false) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    let token = if p.temperature <= 0.0 || p.top_k == 1 { argmax(&logits) } else { sample_random(&logits, p, index) };
    // The full logprob row only when top logprobs are asked for.
    let top = match p.logprobs.unwrap_or(0) {
        0 => Vec::new(),
        k => top_logprobs(&raw.iter().map(|&l| l - lse).collect::<Vec<f32>>(), k),
    };
    TokenLogprob { token: token as TokenId, logprob: raw[token] - lse, top }
}

/// Candidates sorted by a partial sort first: most draws end within the most likely tokens.
const FIRST_SORTED: usize = 64;

fn sample_random(logits: &[f32], p: &SamplingParams, index: usize) -> usize {
    let cmp = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if p.top_k > 0 && p.top_k < idx.len() {
        idx.select_nth_unstable_by(p.top_k - 1, cmp);
        idx.truncate(p.top_k);
    }
    let max = idx.iter().map(|&i| logits[i]).fold(f32::NEG_INFINITY, f32::max);
    let weight = |i: usize| (((logits[i] - max) / p.temperature) as f64).exp();
    // The normaliser over every candidate, summed in id order (deterministic for a given row).
    let mut by_id = idx.clone();
    by_id.sort_unstable();
    let z: f64 = by_id.iter().map(|&i| weight(i)).sum();
    let u01 = rng_for(p.seed, index).random::<f64>();
    // Sort only the FIRST_SORTED most likely candidates; sort them all only when a truncation
    // (min_p, top_p) or the draw reaches past them. The candidates, their order (best first, ties
    // by lower id) and the kept mass are those of a full sort.
    let mut sorted = FIRST_SORTED.min(idx.len());
    loop {
        let complete = sorted == idx.len();
        if !complete {
            idx.select_nth_unstable_by(sorted - 1, cmp);
        }
        idx[..sorted].sort_by(cmp);
        let probs: Vec<f64> = idx[..sorted].iter().map(|&i| weight(i) / z).collect();
        let mut keep = idx.len();
        if p.min_p > 0.0 {
            let thr = probs[0] * p.min_p as f64;
            let n = probs.iter().take_while(|&&x| x >= thr).count();
            if n == sorted && !complete {
                sorted = idx.len();
                continue;
            }
            keep = n.max(1);
        }
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut n = None;
            for (j, &x) in probs[..keep.min(sorted)].iter().enumerate() {
                cum += x;
                if cum >= p.top_p as f64 {
                    n = Some(j + 1);
                    break;
                }
            }
            match n {
                Some(n) => keep = keep.min(n),
                None if keep <= sorted => {}
                None => {
                    sorted = idx.len();
                    continue;
                }
            }
        }
        // The kept mass: all of it without a truncation, else the kept (sorted) candidates'.
        let total: f64 = if keep == idx.len() { 1.0 } else { probs[..keep].iter().sum() };
        let mut u = u01 * total;
        for (j, &x) in probs[..keep.min(sorted)].iter().enumerate() {
            if u < x {
                return idx[j];
            }
            u -= x;
        }
        if keep <= sorted {
            // Rounding left a sliver of u: the last kept candidate.
            return idx[keep - 1];
        }
        sorted = idx.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams { temperature: t, ..Default::default() }
    }

    #[test]
    fn greedy_picks_argmax_and_reports_logprob() {
        let s = sample(&[0.0, 3.0, 1.0], &SamplingParams { logprobs: Some(2), ..params(0.0) }, &[], &[]);
        assert_eq!(s.token, 1);
        let lp = log_softmax(&[0.0, 3.0, 1.0]);
        assert!((s.logprob - lp[1]).abs() < 1e-6);
        assert_eq!(s.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn same_seed_same_token_and_top_k_restricts() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let p = SamplingParams { seed: 42, ..params(1.0) };
        let a: Vec<_> = (0..20).map(|i| sample(&logits, &p, &[], &vec![0; i]).token).collect();
        let b: Vec<_> = (0..20).map(|i| sample(&logits, &p, &[], &vec![0; i]).token).collect();
        assert_eq!(a, b);
        let pk = SamplingParams { top_k: 1, ..p.clone() };
        assert!((0..20).all(|i| sample(&logits, &pk, &[], &vec![0; i]).token == 6));
        let pp = SamplingParams { top_p: 1e-6, ..p };
        assert!((0..20).all(|i| sample(&logits, &pp, &[], &vec![0; i]).token == 6));
    }

    #[test]
    fn penalties_push_down_seen_tokens() {
        let row = [1.0, 1.0, -1.0];
        let mut l = Cow::Borrowed(&row[..]);
        apply_penalties(&mut l, &SamplingParams { repetition_penalty: 2.0, ..params(1.0) }, &[0], &[2]);
        assert_eq!(*l, [0.5, 1.0, -2.0]);
        let mut l = Cow::Borrowed(&row[..2]);
        apply_penalties(&mut l, &SamplingParams { frequency_penalty: 0.5, presence_penalty: 0.25, ..params(1.0) }, &[], &[1, 1]);
        assert_eq!(*l, [1.0, -0.25]);
        // No penalty: the row is not copied.
        let mut l = Cow::Borrowed(&row[..]);
        apply_penalties(&mut l, &params(1.0), &[0], &[0, 1]);
        assert!(matches!(l, Cow::Borrowed(_)));
    }

    /// Penalties and biases change the pick but not the reported logprob (the model's own).
    #[test]
    fn sample_applies_penalties_and_bias_then_reports_raw_logprob() {
        let raw = [2.0f32, 1.5, 0.0];
        let lse = logsumexp(&raw);
        assert_eq!(sample(&raw, &params(0.0), &[0], &[]).token, 0);
        let rep = SamplingParams { repetition_penalty: 2.0, ..params(0.0) };
        let s = sample(&raw, &rep, &[0], &[]);
        assert_eq!((s.token, s.logprob), (1, 1.5 - lse));
        let freq = SamplingParams { frequency_penalty: 0.6, ..params(0.0) };
        assert_eq!(sample(&raw, &freq, &[], &[0]).token, 1);
        assert_eq!(sample(&raw, &SamplingParams { logit_bias: vec![(2, 5.0)], ..params(0.0) }, &[], &[]).token, 2);
    }

    /// The sampler before the partial sort (a full sort of every candidate), kept as the
    /// reference: the same candidates in the same order, the same kept mass.
    fn sample_reference(logits: &[f32], p: &SamplingParams, index: usize) -> usize {
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        let cmp = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
        if p.top_k > 0 && p.top_k < idx.len() {
            idx.select_nth_unstable_by(p.top_k - 1, cmp);
            idx.truncate(p.top_k);
        }
        idx.sort_by(cmp);
        let max = logits[idx[0]];
        let mut probs: Vec<f64> = idx.iter().map(|&i| (((logits[i] - max) / p.temperature) as f64).exp()).collect();
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= z);
        let mut keep = probs.len();
        if p.min_p > 0.0 {
            let thr = probs[0] * p.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&x| x >= thr).count().max(1));
        }
        if p.top_p < 1.0 {
            let (mut cum, mut n) = (0.0, 0);
            for &x in &probs[..keep] {
                cum += x;
                n += 1;
                if cum >= p.top_p as f64 {
                    break;
                }
            }
            keep = n.max(1);
        }
        let total: f64 = probs[..keep].iter().sum();
        let mut u = rng_for(p.seed, index).random::<f64>() * total;
        for (j, &x) in probs[..keep].iter().enumerate() {
            if u < x {
                return idx[j];
            }
            u -= x;
        }
        idx[keep - 1]
    }

    #[test]
    fn partial_sort_draws_what_a_full_sort_draws() {
        // Random rows (flat ones put the draw past the first 64 candidates), every truncation;
        // the two may differ only where float rounding of the normaliser moves a boundary.
        let mut rng = StdRng::seed_from_u64(3);
        let (mut same, mut total) = (0, 0);
        for row in 0..24 {
            let vocab = [50usize, 300, 5000][row % 3];
            let scale = [0.1f32, 1.0, 4.0][row / 3 % 3];
            let logits: Vec<f32> = (0..vocab).map(|_| rng.random::<f32>() * 10.0 * scale).collect();
            for (k, (t, top_k, top_p, min_p)) in [(1.0, 0, 1.0, 0.0), (0.7, 0, 0.9, 0.0), (1.3, 40, 1.0, 0.0), (1.0, 0, 1.0, 0.05), (0.8, 0, 0.999, 0.0), (1.0, 0, 1.0, 1e-6)].into_iter().enumerate() {
                let p = SamplingParams { temperature: t, top_k, top_p, min_p, seed: (row * 10 + k) as u64, ..Default::default() };
                for i in 0..100 {
                    total += 1;
                    same += (sample_random(&logits, &p, i) == sample_reference(&logits, &p, i)) as usize;
                }
            }
        }
        eprintln!("{same} of {total} draws agree with the full sort");
        assert!(same as f64 >= 0.999 * total as f64, "{same} of {total} draws agree");
    }

    #[test]
    fn each_token_index_draws_afresh() {
        // Two equally likely tokens: over 64 token indices of one seed both must appear (one
        // fixed draw per request would pick the same one every time).
        let p = SamplingParams { seed: 7, ..params(1.0) };
        let picks: Vec<u32> = (0..64).map(|i| sample_masked(&[0.0, 0.0], &p, &[], &[], i, None).token).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
        // A mask leaves only the allowed token, whatever the logits.
        let masked = sample_masked(&[5.0, 0.0], &params(0.0), &[], &[], 0, Some(&[false, true]));
        assert_eq!(masked.token, 1);
    }
}
