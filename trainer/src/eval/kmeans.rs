//! Seeded k-means (k-means++ initialisation, Lloyd iterations) for the NMI metric.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::knn::squared_euclidean;

/// k-means settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KMeansOptions {
    pub seed: u64,
    /// Lloyd iterations at most; stops earlier when no assignment changes.
    pub max_iter: usize,
}

impl Default for KMeansOptions {
    fn default() -> Self {
        Self { seed: 0, max_iter: 100 }
    }
}

/// Cluster `[n, dim]` points into `k` clusters; returns each point's cluster in `0..k`.
///
/// Minimises `sum_i ||x_i - mu_{c(i)}||^2`. Initial centres by k-means++ (Arthur &
/// Vassilvitskii 2007: the first uniformly, each next one with probability proportional to
/// the squared distance to the nearest chosen centre), then Lloyd's algorithm (assign
/// to the nearest centre, ties to the lower centre; move each centre to its points' mean).
/// A cluster that empties is re-seeded with the point farthest from its centre.
/// `k` is capped at n; n = 0 or k = 0 gives every point cluster 0.
///
/// # Shapes
/// - `points`: `[n, dim]` row-major; returns `[n]`.
pub fn kmeans(points: &[f32], dim: usize, k: usize, options: &KMeansOptions) -> Vec<u32> {
    let n = points.len().checked_div(dim).unwrap_or(0);
    let k = k.min(n);
    if k == 0 {
        return vec![0; n];
    }
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);

    // k-means++ seeding.
    let mut centres: Vec<f32> = Vec::with_capacity(k * dim); // [k, dim]
    centres.extend_from_slice(row(rng.gen_range(0..n)));
    let mut nearest: Vec<f32> = (0..n).into_par_iter().map(|i| squared_euclidean(row(i), &centres[..dim])).collect();
    for _ in 1..k {
        let total: f64 = nearest.iter().map(|&d| d as f64).sum();
        let pick = if total > 0.0 {
            let mut t = rng.gen::<f64>() * total;
            let mut chosen = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                t -= d as f64;
                if t < 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        } else {
            rng.gen_range(0..n)
        };
        let c = centres.len();
        centres.extend_from_slice(row(pick));
        let new = &centres[c..c + dim];
        nearest.par_iter_mut().enumerate().for_each(|(i, d)| *d = d.min(squared_euclidean(row(i), new)));
    }

    let mut assign = vec![u32::MAX; n];
    for _ in 0..options.max_iter.max(1) {
        let next: Vec<(u32, f32)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let x = row(i);
                let mut best = (0u32, f32::INFINITY);
                for (c, mu) in centres.chunks_exact(dim).enumerate() {
                    let d = squared_euclidean(x, mu);
                    if d < best.1 {
                        best = (c as u32, d);
                    }
                }
                best
            })
            .collect();
        let changed = next.iter().zip(&assign).any(|(a, &b)| a.0 != b);
        for (a, &(c, _)) in assign.iter_mut().zip(&next) {
            *a = c;
        }
        if !changed {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &c) in assign.iter().enumerate() {
            counts[c as usize] += 1;
            for (s, &v) in sums[c as usize * dim..(c as usize + 1) * dim].iter_mut().zip(row(i)) {
                *s += v as f64;
            }
        }
        let mut taken = vec![false; n];
        for c in 0..k {
            let mu = &mut centres[c * dim..(c + 1) * dim];
            if counts[c] > 0 {
                for (m, s) in mu.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                    *m = (s / counts[c] as f64) as f32;
                }
            } else if let Some((far, _)) = next
                .iter()
                .enumerate()
                .filter(|(i, _)| !taken[*i])
                .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1).then(b.0.cmp(&a.0)))
            {
                taken[far] = true;
                mu.copy_from_slice(row(far));
            }
        }
    }
    assign
}
