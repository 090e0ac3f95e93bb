//! How an embedding learns: the STML algorithm, data loading, evaluation and runs.
//!
//! - [`commands`]: what `trainer` does, one module per subcommand (fit, eval, export,
//!   write-images).
//! - [`train`]: the training loop and what it sets up (networks, head initialisation,
//!   resuming, the learning-rate schedule).
//! - [`stml`]: the paper's parts (similarities, losses, EMA teacher, sampler);
//!   [`optim`]: AdamP, AdamW and SGD.
//! - [`data`]: dataset readers, decoding, augmentation, the batch loader; [`embed`]:
//!   embedding a whole dataset.
//! - [`eval`]: retrieval metrics; [`run`]: the run directory, its reports and pictures.
//!
//! `docs/algorithm.md` describes the method as implemented here.

pub mod commands;
pub mod config;
pub mod data;
pub mod device;
pub mod embed;
pub mod error;
pub mod eval;
pub mod optim;
pub mod run;
pub mod stml;
pub mod train;
