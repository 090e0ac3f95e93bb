//! How an embedding learns: the STML algorithm, data loading, evaluation and runs.

pub mod data;
pub mod eval;
pub mod stml;
