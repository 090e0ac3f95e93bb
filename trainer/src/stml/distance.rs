//! Squared Euclidean distances between embedding rows, through one matrix product
//! (`|a|^2 + |b|^2 - 2 a.b`), the way `torch.cdist` computes them for large inputs.

use tch::{Device, Kind, Tensor};

/// Squared distances between every row of `queries` and every row of `keys`:
/// `S[i,j] = ||q_i - k_j||^2`, clamped at 0 against rounding.
///
/// # Shapes
/// - `queries`: `[M, D]`, `keys`: `[N, D]`
/// - returns `[M, N]`
pub fn squared_distances_between(queries: &Tensor, keys: &Tensor) -> Tensor {
    let q_sq = queries.square().sum_dim_intlist(1, true, None); // [M, 1]
    let k_sq = keys.square().sum_dim_intlist(1, false, None).unsqueeze(0); // [1, N]
    (q_sq + k_sq - queries.matmul(&keys.tr()) * 2.0).clamp_min(0.0)
}

/// Squared distances between all pairs of rows, with an exactly zero diagonal.
///
/// # Shapes
/// - `x`: `[N, D]`
/// - returns `[N, N]`, symmetric
pub fn squared_distances(x: &Tensor) -> Tensor {
    let off_diagonal = off_diagonal(x.size()[0], (x.kind(), x.device()));
    let s = squared_distances_between(x, x);
    // The matrix product is not bitwise symmetric; average it with its transpose.
    (&s + s.tr()) * 0.5 * off_diagonal
}

/// `1 - I`: ones everywhere except on the diagonal.
///
/// # Shapes
/// - returns `[n, n]`
pub fn off_diagonal(n: i64, options: (Kind, Device)) -> Tensor {
    Tensor::ones([n, n], options) - Tensor::eye(n, options)
}
