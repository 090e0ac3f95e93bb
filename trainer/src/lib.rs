//! How an embedding learns: the STML algorithm, data loading, evaluation and runs.
//!
//! - [`stml`]: the paper's parts (similarities, losses, EMA teacher, AdamP, sampler).
//! - [`data`]: dataset readers, decoding, augmentation, the batch loader.
//! - [`eval`]: retrieval metrics; [`evaluate`]: `trainer eval`.
//! - [`init`]: heads started from the principal components of the pretrained feature.
//! - [`train`]: the training loop; [`run`]: the run directory; [`export`]: `trainer export`.

pub mod config;
pub mod data;
pub mod device;
pub mod embed;
pub mod error;
pub mod eval;
pub mod evaluate;
pub mod export;
pub mod init;
pub mod plots;
pub mod report;
pub mod run;
pub mod stml;
pub mod train;
pub mod write_images;
