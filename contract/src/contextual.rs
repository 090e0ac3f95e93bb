//! STML's contextualized similarity on a small set of vectors, in plain Rust: what the
//! trainer computes on a batch with libtorch (`trainer::stml::similarity`, steps 1-7 of
//! docs/algorithm.md), for the server to re-rank a query's candidates with at query time.
//! A trainer test checks that both give the same numbers.
//!
//! Matrices are row-major `n x n` slices.

/// The bandwidth of the pairwise similarity the paper uses.
pub const SIGMA: f64 = 3.0;

/// Rows of `vectors` L2-normalised (the norm clamped at `1e-12`), in `f64`.
pub fn normalized(vectors: &[&[f32]]) -> Vec<Vec<f64>> {
    vectors
        .iter()
        .map(|v| {
            let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt().max(1e-12);
            v.iter().map(|&x| f64::from(x) / norm).collect()
        })
        .collect()
}

/// Step 1: `W_P[i,j] = exp(-||t_i - t_j||^2 / sigma)` of L2-normalised rows `t`.
pub fn pairwise_similarity(t: &[Vec<f64>], sigma: f64) -> Vec<f64> {
    let n = t.len();
    let mut w = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let d2: f64 = t[i].iter().zip(&t[j]).map(|(a, b)| (a - b) * (a - b)).sum();
            w[i * n + j] = (-d2 / sigma).exp();
        }
    }
    w
}

/// Step 6's `h = round(k / 2)`, half to even (k = 10 gives 5, k = 5 gives 2), at least 1.
pub fn expansion_size(k: usize) -> usize {
    ((k as f64 / 2.0).round_ties_even() as usize).max(1)
}

/// Steps 2-7: the contextual similarity `W_C` of `n` items with pairwise similarity `w_p`;
/// `group[i]` names the image item `i` is a view of (items of one group, and each item
/// with itself, are certain neighbours); `k` is clamped to `1..=n`.
///
/// 3. `NN_k(i)`: the `k` largest entries of row `i` (ties to the lower index);
/// 4. `R(i)`: the `j` with `j ∈ NN_k(i)` and `i ∈ NN_k(j)`;
/// 5. `W~[i,j] = |R(i) ∩ R(j)| / |R(i)|` for `j ∈ R(i)`, else 0;
/// 6. `W^[i,:]`: the mean of `W~[j,:]` over the first `h` of `NN_k(i)`;
/// 7. `W_C = (W^ + W^ᵀ) / 2`.
pub fn contextual_similarity(w_p: &[f64], group: &[usize], k: usize) -> Vec<f64> {
    let n = group.len();
    assert_eq!(w_p.len(), n * n, "w_p must be n x n for n = group.len()");
    if n == 0 {
        return Vec::new();
    }
    let k = k.clamp(1, n);
    let ranked = |i: usize, j: usize| if group[i] == group[j] { 1.0 } else { w_p[i * n + j] };
    let nn: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut order: Vec<usize> = (0..n).collect();
            // A stable sort, descending: equal entries keep ascending index order.
            order.sort_by(|&a, &b| ranked(i, b).total_cmp(&ranked(i, a)));
            order.truncate(k);
            order
        })
        .collect();
    let mut a = vec![false; n * n];
    for (i, row) in nn.iter().enumerate() {
        for &j in row {
            a[i * n + j] = true;
        }
    }
    let r: Vec<Vec<usize>> = (0..n).map(|i| (0..n).filter(|&j| a[i * n + j] && a[j * n + i]).collect()).collect();
    let mut in_r = vec![false; n * n];
    for (i, row) in r.iter().enumerate() {
        for &j in row {
            in_r[i * n + j] = true;
        }
    }
    let mut w_tilde = vec![0.0; n * n];
    for i in 0..n {
        let size = r[i].len().max(1) as f64;
        for &j in &r[i] {
            let common = r[i].iter().filter(|&&m| in_r[j * n + m]).count();
            w_tilde[i * n + j] = common as f64 / size;
        }
    }
    let h = expansion_size(k);
    let mut w_hat = vec![0.0; n * n];
    for i in 0..n {
        for &j in &nn[i][..h.min(nn[i].len())] {
            for m in 0..n {
                w_hat[i * n + m] += w_tilde[j * n + m] / h as f64;
            }
        }
    }
    let mut w_c = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            w_c[i * n + j] = 0.5 * (w_hat[i * n + j] + w_hat[j * n + i]);
        }
    }
    w_c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tight_groups_are_each_others_context_and_nothing_else() {
        // Items 0-2 close together, 3-5 close together, far apart.
        let v: Vec<Vec<f32>> = vec![
            vec![1.0, 0.0, 0.01],
            vec![1.0, 0.02, 0.0],
            vec![1.0, 0.0, -0.02],
            vec![0.0, 1.0, 0.01],
            vec![0.02, 1.0, 0.0],
            vec![0.0, 1.0, -0.02],
        ];
        let refs: Vec<&[f32]> = v.iter().map(Vec::as_slice).collect();
        let t = normalized(&refs);
        let w_p = pairwise_similarity(&t, SIGMA);
        let w_c = contextual_similarity(&w_p, &[0, 1, 2, 3, 4, 5], 3);
        for i in 0..6 {
            for j in 0..6 {
                let same = (i < 3) == (j < 3);
                assert!(
                    if same { w_c[i * 6 + j] > 0.9 } else { w_c[i * 6 + j] == 0.0 },
                    "W_C[{i},{j}] = {}",
                    w_c[i * 6 + j]
                );
                assert_eq!(w_c[i * 6 + j], w_c[j * 6 + i], "symmetric");
            }
        }
        assert!(w_p[1] + w_c[1] > w_p[3] + w_c[3], "a neighbour scores above a stranger");
    }

    #[test]
    fn expansion_rounds_half_to_even() {
        assert_eq!((expansion_size(10), expansion_size(5), expansion_size(3), expansion_size(1)), (5, 2, 2, 1));
    }
}
