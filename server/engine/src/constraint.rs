//! Constrained decoding seam (structured outputs): the API compiles a grammar into a
//! [`TokenConstraint`]; the model runner keeps one [`ConstraintState`] per running sequence,
//! asks it which tokens may come next before sampling, and feeds it each sampled token. The
//! engine itself only carries the constraint in [`crate::SamplingParams`].

use crate::request::TokenId;
use std::sync::Arc;

/// A compiled constraint, shared by every sequence that samples under it.
pub trait TokenConstraint: Send + Sync {
    /// A fresh state at the start of the output.
    fn start(&self) -> Result<Box<dyn ConstraintState>, String>;
    /// What the constraint is, for logs (e.g. `json_schema`).
    fn describe(&self) -> String;
    /// The end-of-sequence tokens (allowed alone once the constraint is complete, or if it fails).
    fn end_tokens(&self) -> Vec<TokenId>;
}

/// One sequence's progress through a constraint.
pub trait ConstraintState: Send {
    /// Set `allowed[t]` for every token `t` that may come next (`allowed` starts all false; its
    /// length is the tokenizer's vocabulary). When the constraint is complete, only end-of-sequence
    /// tokens are allowed.
    fn allowed(&mut self, allowed: &mut [bool]) -> Result<(), String>;
    /// Advance by one sampled token.
    fn consume(&mut self, token: TokenId) -> Result<(), String>;
}

/// A shareable constraint in [`crate::SamplingParams`] (equal when it is the same compiled one).
#[derive(Clone)]
pub struct Constraint(pub Arc<dyn TokenConstraint>);

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Constraint({})", self.0.describe())
    }
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
