//! The student's losses: the relaxed contrastive loss on each head with the teacher's soft
//! labels, and self-distillation from the `g` head to the `f` head (docs/algorithm.md,
//! "The loss"; the authors' `RC_STML`, `KL_STML`).

use tch::{Kind, Tensor};

use super::distance::{off_diagonal, squared_distances};

/// Squared distances below this are clamped before the square root, so that the zero
/// diagonal (and identical rows) give finite gradients.
const MIN_SQUARED_DISTANCE: f64 = 1e-12;

/// Row-mean-normalised Euclidean distances:
/// `D[i,j] = ||e_i - e_j|| / mean_l ||e_i - e_l||` (the mean includes the zero diagonal).
///
/// The diagonal is exactly zero and carries no gradient.
///
/// # Shapes
/// - `e`: `[N, D]`
/// - returns `[N, N]`
pub fn normalized_distances(e: &Tensor) -> Tensor {
    let off_diagonal = off_diagonal(e.size()[0], (e.kind(), e.device()));
    let d = squared_distances(e).clamp_min(MIN_SQUARED_DISTANCE).sqrt() * off_diagonal; // [N, N]
    let row_mean = d.mean_dim(1, true, None).clamp_min(f64::MIN_POSITIVE); // [N, 1]
    d / row_mean
}

/// Relaxed contrastive loss `RC(e, W)`:
///
/// `RC = Σ_{i≠j} ( W_ij D_ij² + (1 − W_ij) max(0, δ − D_ij)² ) / (N (N − 1))`
///
/// with `D` from [`normalized_distances`]. Pairs the teacher believes similar are pulled
/// together in proportion to `W_ij`, the others pushed beyond the margin `δ` (1; 0.9 for
/// SOP). Never negative.
///
/// # Shapes
/// - `e`: `[N, D]` student embeddings of one head
/// - `w`: `[N, N]` pseudo labels in `[0, 1]`
/// - returns a scalar
pub fn relaxed_contrastive(e: &Tensor, w: &Tensor, delta: f64) -> Tensor {
    let n = e.size()[0];
    let pairs = (n * (n - 1)).max(1) as f64;
    pair_terms(e, w, delta).sum(e.kind()) / pairs
}

/// `RC(e, W)` with a weight `A_ij >= 0` on each pair, a weighted mean over the pairs:
///
/// `RC_A = Σ_{i≠j} A_ij ( W_ij D_ij² + (1 − W_ij) max(0, δ − D_ij)² ) / Σ_{i≠j} A_ij`
///
/// With every `A_ij` equal it is [`relaxed_contrastive`]. Used to give the pairs whose
/// classes are known more say than those the teacher guessed (`--label-weight`).
///
/// # Shapes
/// - `e`: `[N, D]`, `w`: `[N, N]`, `a`: `[N, N]`
/// - returns a scalar
pub fn weighted_relaxed_contrastive(e: &Tensor, w: &Tensor, a: &Tensor, delta: f64) -> Tensor {
    let a = a * off_diagonal(e.size()[0], (e.kind(), e.device()));
    let total = a.sum(e.kind()).clamp_min(f64::MIN_POSITIVE);
    (pair_terms(e, w, delta) * a).sum(e.kind()) / total
}

/// The summands of `RC(e, W)`: `[N, N]`, zero on the diagonal.
fn pair_terms(e: &Tensor, w: &Tensor, delta: f64) -> Tensor {
    let off_diagonal = off_diagonal(e.size()[0], (e.kind(), e.device()));
    let d = normalized_distances(e);
    let pull = w * d.square();
    let push = (1.0f64 - w) * (delta - &d).relu().square();
    (pull + push) * off_diagonal
}

/// Self-distillation `KL(f, g)`: per row, `p = softmax(−D_g[i,:])` from the detached `g`
/// head teaches `q = softmax(−D_f[i,:])` from the `f` head (diagonals included):
///
/// `KL = Σ_i Σ_j p_ij (log p_ij − log q_ij) / N`
///
/// No gradient flows into `g`. Never negative.
///
/// # Shapes
/// - `f`: `[N, d]`, `g`: `[N, d_g]`
/// - returns a scalar
pub fn self_distillation(f: &Tensor, g: &Tensor) -> Tensor {
    let n = f.size()[0];
    let log_p = normalized_distances(&g.detach()).neg().log_softmax(1, None); // [N, N]
    let log_q = normalized_distances(f).neg().log_softmax(1, None); // [N, N]
    (log_p.exp() * (log_p - log_q)).sum(f.kind()) / n.max(1) as f64
}

/// The parts of the STML loss, each a scalar tensor (the total carries the gradient).
#[derive(Debug)]
pub struct LossParts {
    /// `(rc_f + rc_g) / 2 + kl`
    pub total: Tensor,
    /// `RC(f, W)`
    pub rc_f: Tensor,
    /// `RC(g, W)`
    pub rc_g: Tensor,
    /// `KL(f, g)`
    pub kl: Tensor,
}

impl LossParts {
    /// The four values as `f64`, in the order total, rc_f, rc_g, kl (for logging).
    pub fn values(&self) -> [f64; 4] {
        [&self.total, &self.rc_f, &self.rc_g, &self.kl].map(|t| t.to_kind(Kind::Double).double_value(&[]))
    }
}

/// The STML objective: `L = (RC(f, W) + RC(g, W)) / 2 + KL(f, g)`; with pair weights `A`,
/// each `RC` is [`weighted_relaxed_contrastive`].
///
/// # Shapes
/// - `f`: `[N, d]` student `f` head, `g`: `[N, d_g]` student `g` head
/// - `w`: `[N, N]` pseudo labels (from [`super::similarity::pseudo_labels`])
/// - `a`: `[N, N]` pair weights, or `None` (the paper: all equal)
pub fn stml_loss(f: &Tensor, g: &Tensor, w: &Tensor, a: Option<&Tensor>, delta: f64) -> LossParts {
    let rc = |e: &Tensor| match a {
        Some(a) => weighted_relaxed_contrastive(e, w, a, delta),
        None => relaxed_contrastive(e, w, delta),
    };
    let (rc_f, rc_g) = (rc(f), rc(g));
    let kl = self_distillation(f, g);
    let total = (&rc_f + &rc_g) * 0.5 + &kl;
    LossParts { total, rc_f, rc_g, kl }
}
