//! Golden tests: the engine against reference outputs on real models.

#[path = "golden/engine_equivalence.rs"]
mod engine_equivalence;
