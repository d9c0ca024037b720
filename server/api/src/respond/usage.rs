//! Token usage of a generating request, one rule for every route (OpenAI's and vLLM's): each
//! prompt is counted once however many choices share it (`n`), `cached_tokens` is the most any
//! of a prompt's choices took from the prefix cache (summed over prompts), completion tokens are
//! summed over all choices.

use crate::jobs::ChoiceUsage;
use hhh_proto::{PromptTokensDetails, Usage};

/// Accumulates [`ChoiceUsage`] of a request's choices; choice `i` belongs to prompt `i / n`.
#[derive(Debug, Clone)]
pub struct UsageAcc {
    prompt_lens: Vec<usize>,
    n: usize,
    /// Per prompt, the largest cached-token count of its choices so far.
    cached: Vec<usize>,
    completion: usize,
}

impl UsageAcc {
    /// A request of `prompt_lens.len()` prompts with `n` choices each.
    pub fn new(prompt_lens: Vec<usize>, n: usize) -> Self {
        let cached = vec![0; prompt_lens.len()];
        Self { prompt_lens, n: n.max(1), cached, completion: 0 }
    }

    /// Account for the finished choice `index`.
    pub fn add(&mut self, index: usize, u: &ChoiceUsage) {
        if let Some(c) = self.cached.get_mut(index / self.n) {
            *c = (*c).max(u.cached_tokens);
        }
        self.completion += u.completion_tokens;
    }

    /// The usage so far.
    pub fn usage(&self) -> Usage {
        let prompt_tokens = self.prompt_lens.iter().sum();
        Usage {
            prompt_tokens,
            completion_tokens: self.completion,
            total_tokens: prompt_tokens + self.completion,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: self.cached.iter().sum() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(completion: usize, cached: usize) -> ChoiceUsage {
        ChoiceUsage { completion_tokens: completion, cached_tokens: cached, ..Default::default() }
    }

    #[test]
    fn prompts_once_completions_summed_cached_per_prompt() {
        // Two prompts (10 and 7 tokens), n = 3: choices 0-2 share prompt 0, 3-5 prompt 1.
        let mut u = UsageAcc::new(vec![10, 7], 3);
        for (i, (c, cached)) in [(4, 0), (4, 8), (2, 8), (5, 0), (5, 0), (1, 0)].into_iter().enumerate() {
            u.add(i, &done(c, cached));
        }
        let got = u.usage();
        assert_eq!((got.prompt_tokens, got.completion_tokens, got.total_tokens), (17, 21, 38));
        assert_eq!(got.prompt_tokens_details.map(|d| d.cached_tokens), Some(8));
    }

    #[test]
    fn single_prompt_and_out_of_range_index() {
        let mut u = UsageAcc::new(vec![5], 1);
        u.add(0, &done(3, 4));
        u.add(9, &done(1, 100)); // not a choice of this request: completion counted, no prompt
        let got = u.usage();
        assert_eq!((got.prompt_tokens, got.completion_tokens), (5, 4));
        assert_eq!(got.prompt_tokens_details.map(|d| d.cached_tokens), Some(4));
    }
}
