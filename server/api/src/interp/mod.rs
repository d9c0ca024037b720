//! Looking inside the served model: induction heads and in-context learning
//! ([`induction`]), through the engine's inspection path.

pub mod induction;
