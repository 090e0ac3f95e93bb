//! The STML algorithm (Kim et al., CVPR 2022), in the parts the paper names; see
//! `docs/algorithm.md` for how this code implements each one.
//!
//! The teacher's [`similarity`] gives the soft labels, [`loss`] trains the student's two
//! heads with them, [`ema`] moves the teacher after the student, and [`sampler`] builds
//! the nearest-neighbour batches of each epoch. The optimiser is not part of the method
//! and lives in [`crate::optim`].

pub mod distance;
pub mod ema;
pub mod loss;
pub mod sampler;
pub mod similarity;

pub use ema::{copy_into, momentum_update, EmaPairs};
pub use loss::{relaxed_contrastive, self_distillation, stml_loss, weighted_relaxed_contrastive, LossParts};
pub use sampler::{epoch_batches, nearest_neighbors};
pub use similarity::{contextual_similarity, pairwise_similarity, pseudo_labels};
