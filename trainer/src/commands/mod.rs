//! The `trainer` subcommands, one module each; `main.rs` parses flags into their options.

pub mod eval;
pub mod export;
pub mod fit;
pub mod write_images;
