//! Exact k-nearest-neighbour search over one set of embeddings (each point a query against
//! all the others, itself excluded), in query blocks so memory stays
//! `O(block * N)` per thread instead of `O(N^2)`.

use std::borrow::Cow;
use std::cmp::Ordering;

use rayon::prelude::*;

use super::{Distance, EvalError};

/// One neighbour of a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub index: u32,
    /// Squared Euclidean distance, or cosine distance for [`Distance::Cosine`].
    pub distance: f32,
}

/// Neighbour lists of every point: row `i` holds its `k` nearest other points, nearest
/// first; equal distances go to the lower index first.
///
/// # Shapes
/// - `indices`, `distances`: `[n, k]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbors {
    pub k: usize,
    pub indices: Vec<u32>,
    pub distances: Vec<f32>,
}

impl Neighbors {
    /// Neighbour indices of point `i`.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }

    /// Labels of every neighbour list, `[n, k]` row-major, as the metrics take them.
    pub fn labels(&self, labels: &[u32]) -> Vec<u32> {
        self.indices.iter().map(|&j| labels[j as usize]).collect()
    }
}

/// Floats of distance scratch one query block may use (the block holds
/// `max(1, SCRATCH_FLOATS / N)` queries): 16 MiB per worker thread.
pub const SCRATCH_FLOATS: usize = 1 << 22;

/// Squared Euclidean distance `sum_d (a_d - b_d)^2`, summed in eight lanes.
pub fn squared_euclidean(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let mut s = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    acc.iter().sum::<f32>() + s
}

/// Embeddings checked and prepared for a distance: L2-normalised rows for cosine.
pub(crate) struct Points<'a> {
    pub data: Cow<'a, [f32]>,
    pub dim: usize,
    pub n: usize,
    pub distance: Distance,
}

impl<'a> Points<'a> {
    pub fn new(embeddings: &'a [f32], dim: usize, distance: Distance) -> Result<Self, EvalError> {
        if embeddings.len().checked_rem(dim) != Some(0) {
            return Err(EvalError::Shape { len: embeddings.len(), dim });
        }
        if let Some(p) = embeddings.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::NotFinite { point: p / dim });
        }
        let n = embeddings.len() / dim;
        let data = match distance {
            Distance::Euclidean => Cow::Borrowed(embeddings),
            Distance::Cosine => {
                let mut v = embeddings.to_vec();
                for row in v.chunks_exact_mut(dim) {
                    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                    if norm > 0.0 {
                        row.iter_mut().for_each(|x| *x /= norm);
                    }
                }
                Cow::Owned(v)
            }
        };
        Ok(Self { data, dim, n, distance })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Queries per block for a scratch budget of `scratch` floats.
    fn block(&self, scratch: usize) -> usize {
        (scratch / self.n.max(1)).clamp(1, 256)
    }

    /// Run `visit(query, neighbours)` for every query, where `neighbours` are its
    /// `k_of(query)` nearest other points (capped at n - 1), sorted. Queries are processed in
    /// parallel blocks; each block folds into an accumulator made by `init`, and the
    /// blocks' accumulators are merged with `merge`.
    pub fn fold<A, I, F, M, K>(&self, scratch: usize, k_of: K, init: I, visit: F, merge: M) -> A
    where
        A: Send,
        I: Fn() -> A + Sync + Send,
        F: Fn(&mut A, usize, &[Neighbor]) + Sync + Send,
        M: Fn(A, A) -> A + Sync + Send,
        K: Fn(usize) -> usize + Sync + Send,
    {
        const GALLERY_TILE: usize = 512;
        let n = self.n;
        let block = self.block(scratch);
        let blocks = n.div_ceil(block);
        (0..blocks)
            .into_par_iter()
            .map(|b| {
                let (q0, q1) = (b * block, ((b + 1) * block).min(n));
                let mut acc = init();
                // [q1 - q0, n] distances of this block's queries to every point.
                let mut dist = vec![0f32; (q1 - q0) * n];
                for g0 in (0..n).step_by(GALLERY_TILE) {
                    let g1 = (g0 + GALLERY_TILE).min(n);
                    for q in q0..q1 {
                        let qr = self.row(q);
                        let out = &mut dist[(q - q0) * n..(q - q0 + 1) * n];
                        for (j, o) in out.iter_mut().enumerate().take(g1).skip(g0) {
                            *o = squared_euclidean(qr, self.row(j));
                        }
                    }
                }
                let scale = if self.distance == Distance::Cosine { 0.5 } else { 1.0 };
                let mut cand: Vec<Neighbor> = Vec::new();
                for q in q0..q1 {
                    let row = &dist[(q - q0) * n..(q - q0 + 1) * n];
                    select_nearest(row, q, k_of(q), &mut cand);
                    cand.iter_mut().for_each(|c| c.distance *= scale);
                    visit(&mut acc, q, &cand);
                }
                acc
            })
            .reduce(&init, &merge)
    }
}

/// The `k` smallest entries of a distance row other than `skip`, sorted by [`order`], into
/// `out`. A short list is kept by insertion (one comparison per entry once full); a long one
/// by selection over all candidates.
fn select_nearest(row: &[f32], skip: usize, k: usize, out: &mut Vec<Neighbor>) {
    out.clear();
    let k = k.min(row.len().saturating_sub(1));
    if k == 0 {
        return;
    }
    let all = row.iter().enumerate().filter(|&(j, _)| j != skip);
    let all = all.map(|(j, &d)| Neighbor { index: j as u32, distance: d });
    if k * 16 <= row.len() {
        for c in all {
            // Candidates arrive by increasing index, so an equal distance never displaces.
            if out.len() == k && c.distance.total_cmp(&out[k - 1].distance) != Ordering::Less {
                continue;
            }
            let at = out.partition_point(|x| order(x, &c) == Ordering::Less);
            out.insert(at, c);
            out.truncate(k);
        }
    } else {
        out.extend(all);
        if k < out.len() {
            out.select_nth_unstable_by(k - 1, order);
            out.truncate(k);
        }
        out.sort_unstable_by(order);
    }
}

/// Nearest first, ties to the lower index.
fn order(a: &Neighbor, b: &Neighbor) -> Ordering {
    a.distance.total_cmp(&b.distance).then(a.index.cmp(&b.index))
}

/// The `k` nearest other points of every point (k capped at n - 1).
///
/// Computed exactly, in blocks of queries against all points, using at most
/// `scratch_floats` floats of distance scratch per block (the block always holds at least
/// one query, so the floor is N floats): never an N x N matrix unless asked for one.
///
/// # Shapes
/// - `embeddings`: `[n, dim]` row-major; returns `[n, min(k, n - 1)]` lists.
pub fn knn(
    embeddings: &[f32],
    dim: usize,
    k: usize,
    distance: Distance,
    scratch_floats: usize,
) -> Result<Neighbors, EvalError> {
    let points = Points::new(embeddings, dim, distance)?;
    let n = points.n;
    let k = k.min(n.saturating_sub(1));
    let rows: Vec<(usize, Vec<Neighbor>)> = points.fold(
        scratch_floats,
        |_| k,
        Vec::new,
        |acc, q, nb| acc.push((q, nb.to_vec())),
        |mut a, b| {
            a.extend(b);
            a
        },
    );
    let mut indices = vec![0u32; n * k];
    let mut distances = vec![0f32; n * k];
    for (q, nb) in rows {
        for (c, nbr) in nb.iter().enumerate() {
            indices[q * k + c] = nbr.index;
            distances[q * k + c] = nbr.distance;
        }
    }
    Ok(Neighbors { k, indices, distances })
}
