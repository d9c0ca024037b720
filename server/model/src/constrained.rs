//! The runner's side of constrained decoding: one [`ConstraintState`] per running sequence that
//! samples under a constraint, kept in step with the sequence's output tokens (a preempted and
//! recomputed sequence is replayed from the start), and the allowed-token mask for its next
//! token. Shared by the CPU and GPU runners.
//!
//! Masks are computed off the critical path ([`Constrained::overlap`]): a step's masks depend
//! only on the tokens sampled before it, so they are computed on a second thread while the
//! forward pass runs (vLLM's structured-output manager does the same), and a batch without
//! constrained rows spawns nothing.

use crate::error::ModelError;
use hhh_engine::{Batch, BatchSeq, ConstraintState, RequestId, TokenId};
use std::collections::HashMap;

/// Per batch row: the allowed-token mask of a constrained row that samples this step.
pub(crate) type Masks = Vec<Option<Vec<bool>>>;

struct Tracked {
    state: Box<dyn ConstraintState>,
    /// Output tokens the state has consumed.
    consumed: usize,
}

/// Constraint states of the running sequences.
#[derive(Default)]
pub(crate) struct Constrained {
    states: HashMap<RequestId, Tracked>,
}

impl Constrained {
    /// Run `forward` on this thread while the masks of `batch`'s constrained sampling rows are
    /// computed on another; `vocab` is the model's vocabulary size.
    pub fn overlap<T>(&mut self, batch: &Batch, vocab: usize, forward: impl FnOnce() -> T) -> crate::error::Result<(Masks, T)> {
        if !batch.seqs.iter().any(|s| s.sample && s.params.constraint.is_some()) {
            return Ok((Vec::new(), forward()));
        }
        std::thread::scope(|scope| {
            let job = scope.spawn(|| self.masks(batch, vocab));
            let out = forward();
            let masks = job.join().map_err(|_| ModelError::Invalid("the constraint mask thread panicked".into()))?;
            Ok((masks, out))
        })
    }

    /// Masks of every row (`None` for rows that do not sample or are unconstrained).
    pub fn masks(&mut self, batch: &Batch, vocab: usize) -> Masks {
        batch.seqs.iter().map(|s| if s.sample { self.mask(s, vocab) } else { None }).collect()
    }

    /// The mask of tokens `s` may sample next (`None` when it is unconstrained), after bringing
    /// its state up to its output so far. A constraint that fails (it should not) allows only its
    /// end-of-sequence tokens, which ends the output.
    pub fn mask(&mut self, s: &BatchSeq, vocab: usize) -> Option<Vec<bool>> {
        let c = s.params.constraint.as_ref()?;
        let mut allowed = vec![false; vocab];
        let ok = (|| -> Result<(), String> {
            let stale = self.states.get(&s.request_id).is_none_or(|t| t.consumed > s.output_tokens.len());
            if stale {
                self.states.insert(s.request_id, Tracked { state: c.0.start()?, consumed: 0 });
            }
            let t = self.states.get_mut(&s.request_id).ok_or("constraint state missing")?;
            for &tok in &s.output_tokens[t.consumed..] {
                t.state.consume(tok)?;
            }
            t.consumed = s.output_tokens.len();
            t.state.allowed(&mut allowed)
        })();
        if let Err(e) = ok {
            tracing::warn!(request_id = s.request_id, error = %e, "constraint failed: ending the output");
            allowed.iter_mut().for_each(|a| *a = false);
            for t in c.0.end_tokens() {
                if let Some(a) = allowed.get_mut(t as usize) {
                    *a = true;
                }
            }
            self.states.remove(&s.request_id);
        }
        Some(allowed)
    }

    /// `token` was sampled for request `id` (the state advances now, so the next step's mask
    /// does not replay it).
    pub fn sampled(&mut self, id: RequestId, token: TokenId) {
        if let Some(t) = self.states.get_mut(&id) {
            if t.state.consume(token).is_ok() {
                t.consumed += 1;
            } else {
                self.states.remove(&id);
            }
        }
    }

    /// The request ended.
    pub fn release(&mut self, id: RequestId) {
        self.states.remove(&id);
    }
}
