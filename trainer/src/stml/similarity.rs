//! Contextualized semantic similarity: the teacher's soft "same class" score for every
//! pair of samples in a batch (docs/algorithm.md, "The teacher's soft
//! labels", steps 1-8). Nothing here carries gradients.

use tch::{Kind, Tensor};

use super::distance::squared_distances;

/// Rows divided by their L2 norm (as `F.normalize`, with the norm clamped at `1e-12`).
///
/// # Shapes
/// - `x`: `[N, D]`; returns `[N, D]`
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12); // [N, 1]
    x / norm
}

/// Pairwise similarity (step 1): `W_P[i,j] = exp(-||t_i - t_j||^2 / sigma)`.
///
/// `t` holds the teacher's L2-normalised `g` embeddings; the paper uses `sigma = 3`.
/// The result is symmetric, in `(0, 1]`, with ones on the diagonal.
///
/// # Shapes
/// - `t`: `[N, D]`, L2-normalised rows
/// - returns `[N, N]`
pub fn pairwise_similarity(t: &Tensor, sigma: f64) -> Tensor {
    tch::no_grad(|| (squared_distances(t) / -sigma).exp())
}

/// The number of neighbours used by query expansion (step 6): `h = round(k / 2)`,
/// rounding half to even like `np.around` (k = 10 gives 5, k = 5 gives 2), and never
/// fewer than one.
pub fn expansion_size(k: i64) -> i64 {
    ((k as f64 / 2.0).round_ties_even() as i64).max(1)
}

/// Contextual similarity `W_C` (steps 2-7), vectorised over the whole batch.
///
/// 2. `P = W_P` with `P[i,j] = 1` wherever `idx_i == idx_j` (views of one image, and the
///    diagonal, are certain neighbours).
/// 3. `NN_k(i)`: the `k` largest entries of row `i` of `P`, in descending order, ties to
///    the lower index (a stable sort); `A[i,j] = 1` iff `j ∈ NN_k(i)`.
/// 4. `V = A ⊙ Aᵀ`: `R(i) = { j : V[i,j] = 1 }` are the k-reciprocal neighbours.
/// 5. `W~[i,j] = V[i,j] |R(i) ∩ R(j)| / |R(i)|`, where `|R(i) ∩ R(j)| = (V V)[i,j]`.
/// 6. `W^[i,:] = mean_{j ∈ NN_h(i)} W~[j,:]` over the first `h = round(k/2)` neighbours.
/// 7. `W_C = (W^ + W^ᵀ) / 2`.
///
/// `k` is `num_neighbors * view` (clamped to `N`). A row whose sample is not among its own
/// `k` neighbours (possible only with more than `k` exact ties) has an empty `R(i)` and a
/// zero row in `W~`, as in the reference.
///
/// # Shapes
/// - `w_p`: `[N, N]` pairwise similarity
/// - `idx`: `[N]` integer dataset index of each sample
/// - returns `[N, N]`, symmetric, in `[0, 1]`
pub fn contextual_similarity(w_p: &Tensor, idx: &Tensor, k: i64) -> Tensor {
    tch::no_grad(|| {
        let n = w_p.size()[0];
        let k = k.clamp(1, n.max(1));
        let idx = idx.to_device(w_p.device());
        let same_image = idx.unsqueeze(1).eq_tensor(&idx.unsqueeze(0)); // [N, N] bool
        let ranked = w_p.masked_fill(&same_image, 1.0);
        // Stable descending sort: equal entries keep ascending index order.
        let (_, order) = ranked.sort_stable(true, 1, true); // [N, N]
        let nn_k = order.narrow(1, 0, k); // [N, k]
        let a = w_p.zeros_like().scatter_value(1, &nn_k, 1.0); // [N, N]
        let v = &a * a.tr();
        let r_size = v.sum_dim_intlist(1, true, None).clamp_min(1.0); // [N, 1]
        let w_tilde = &v * v.matmul(&v) / r_size;
        let h = expansion_size(k);
        let nn_h = nn_k.narrow(1, 0, h).reshape([-1]); // [N * h]
        let w_hat = w_tilde.index_select(0, &nn_h).reshape([n, h, n]).mean_dim(1, false, None);
        (&w_hat + w_hat.tr()) * 0.5
    })
}

/// Final pseudo labels (step 8): `W = (W_P + W_C) / 2` from the teacher's `g` embeddings,
/// which are L2-normalised here.
///
/// `k = num_neighbors * view`; the paper uses `sigma = 3`.
///
/// # Shapes
/// - `teacher_g`: `[N, D]` teacher embeddings (any norm)
/// - `idx`: `[N]` integer dataset index of each sample
/// - returns `[N, N]`, symmetric, in `[0, 1]`
pub fn pseudo_labels(teacher_g: &Tensor, idx: &Tensor, sigma: f64, k: i64) -> Tensor {
    tch::no_grad(|| {
        let t = l2_normalize(&teacher_g.detach());
        let w_p = pairwise_similarity(&t, sigma);
        let w_c = contextual_similarity(&w_p, idx, k);
        (w_p + w_c) * 0.5
    })
}

/// Supervised stand-in for the pseudo labels: `W[i,j] = 1` iff samples `i` and `j` share a
/// class label (the upper bound STML is compared with).
///
/// # Shapes
/// - `labels`: `[N]` integer class labels
/// - returns `[N, N]` of `kind`
pub fn label_similarity(labels: &Tensor, kind: Kind) -> Tensor {
    labels.unsqueeze(1).eq_tensor(&labels.unsqueeze(0)).to_kind(kind)
}

/// Semi-supervised pseudo labels: `W[i,j]` is 1 or 0 where both samples have a known class
/// (same class or not), and STML's `w` elsewhere. `labels[i] < 0` marks an unknown class.
///
/// # Shapes
/// - `w`: `[N, N]` pseudo labels; `labels`: `[N]` integer classes, `-1` unknown
/// - returns `[N, N]`
pub fn with_known_labels(w: &Tensor, labels: &Tensor) -> Tensor {
    tch::no_grad(|| label_similarity(labels, w.kind()).where_self(&both_known(labels), w))
}

/// Pair weights for the relaxed contrastive loss: `weight` where both samples have a known
/// class, 1 elsewhere (`--label-weight`).
///
/// # Shapes
/// - `labels`: `[N]` integer classes, `-1` unknown
/// - returns `[N, N]` of `kind`
pub fn known_pair_weights(labels: &Tensor, weight: f64, kind: Kind) -> Tensor {
    let ones = Tensor::ones([labels.size()[0]; 2], (kind, labels.device()));
    (&ones * weight).where_self(&both_known(labels), &ones)
}

/// `[N, N]` booleans: both samples of the pair have a known class (`labels >= 0`).
fn both_known(labels: &Tensor) -> Tensor {
    let known = labels.ge(0); // [N]
    known.unsqueeze(1).logical_and(&known.unsqueeze(0))
}
