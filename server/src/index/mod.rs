//! Vector indexes behind a read trait and a write trait. [`ExactIndex`] scans every
//! vector (the oracle for tests); [`HnswIndex`] is the approximate graph index served in
//! production. Both rank by the same [`distance`].

mod exact;
mod hnsw;

pub use exact::ExactIndex;
pub use hnsw::{FullVectors, GraphFiles, HnswIndex, HnswParams, Quantization};

use contract::Distance;

/// A search result: the key an item was inserted under and its distance to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub key: u64,
    pub distance: f32,
}

/// Read access to an index.
pub trait VectorRead: Send + Sync {
    /// Length of the indexed vectors.
    fn dim(&self) -> usize;
    /// Number of live (not deleted) vectors.
    fn len(&self) -> usize;
    /// True when no live vector is indexed.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `k` live vectors nearest to `query`, nearest first. `ef` is the search breadth
    /// of approximate indexes (ignored by exact ones); `None` uses the index default.
    ///
    /// # Shapes
    /// - `query`: `[dim]`
    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Vec<Neighbor>;
    /// Like [`VectorRead::search`], among the keys `accept` lets through: the graph is
    /// walked as usual and only accepted keys are collected, so this may return fewer than
    /// `k` even when `k` keys are accepted (the caller then falls back to [`VectorRead::scan`]).
    fn search_filtered(&self, query: &[f32], k: usize, ef: Option<usize>, accept: &Accept) -> Vec<Neighbor>;
    /// The exact `k` nearest among the accepted keys, by comparing the query with every
    /// accepted vector.
    fn scan(&self, query: &[f32], k: usize, accept: &Accept) -> Vec<Neighbor>;
}

/// Which keys a filtered search may return.
pub type Accept<'a> = dyn Fn(u64) -> bool + Sync + 'a;

/// The `k` nearest of `candidates`, nearest first, ties broken by key.
pub fn nearest(mut candidates: Vec<Neighbor>, k: usize) -> Vec<Neighbor> {
    let by_distance = |a: &Neighbor, b: &Neighbor| a.distance.total_cmp(&b.distance).then(a.key.cmp(&b.key));
    if candidates.len() > k {
        candidates.select_nth_unstable_by(k, by_distance);
        candidates.truncate(k);
    }
    candidates.sort_by(by_distance);
    candidates
}

/// Write access to an index. Keys are unique and never reused after a removal.
pub trait VectorWrite {
    /// Adds vectors under fresh keys.
    ///
    /// # Shapes
    /// - each vector: `[dim]`
    fn insert(&mut self, items: &[(u64, Vec<f32>)]);
    /// Removes a key; returns whether it was present.
    fn remove(&mut self, key: u64) -> bool;
}

/// An index that can be both searched and updated.
pub trait VectorIndex: VectorRead + VectorWrite {}
impl<T: VectorRead + VectorWrite> VectorIndex for T {}

/// The distance both indexes rank by: Euclidean `sqrt(sum (a_i - b_i)^2)`, or cosine
/// `1 - a.b / (|a| |b|)` clamped at 0 (1, as for orthogonal vectors, when either vector
/// is zero: a zero vector is near nothing, rather than nearest to everything).
///
/// # Shapes
/// - `a`, `b`: `[dim]`
pub fn distance(metric: Distance, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Distance::Euclidean => squared_euclidean(a, b).sqrt(),
        Distance::Cosine => {
            let [dot, na, nb] = dot_and_norms(a, b);
            if na > 0.0 && nb > 0.0 {
                (1.0 - dot / (na * nb).sqrt()).max(0.0)
            } else {
                1.0
            }
        }
    }
}

/// Partial sums kept side by side: a single running sum must be added in order, which
/// the compiler may not vectorise; `LANES` independent ones it turns into SIMD adds (the
/// search walks the graph through these loops, a few thousand vectors per query).
const LANES: usize = 8;

fn squared_euclidean(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ra) = a.as_chunks::<LANES>();
    let (cb, rb) = b.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..LANES {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum::<f32>()
}

/// `[a.b, a.a, b.b]`
fn dot_and_norms(a: &[f32], b: &[f32]) -> [f32; 3] {
    let (ca, ra) = a.as_chunks::<LANES>();
    let (cb, rb) = b.as_chunks::<LANES>();
    let (mut dot, mut na, mut nb) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..LANES {
            dot[i] += x[i] * y[i];
            na[i] += x[i] * x[i];
            nb[i] += y[i] * y[i];
        }
    }
    let mut out = [dot.iter().sum::<f32>(), na.iter().sum::<f32>(), nb.iter().sum::<f32>()];
    for (x, y) in ra.iter().zip(rb) {
        out[0] += x * y;
        out[1] += x * x;
        out[2] += y * y;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same sums in f64, one term after the other.
    fn reference(metric: Distance, a: &[f32], b: &[f32]) -> f64 {
        let (a, b): (Vec<f64>, Vec<f64>) =
            (a.iter().map(|&x| x as f64).collect(), b.iter().map(|&x| x as f64).collect());
        match metric {
            Distance::Euclidean => a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt(),
            Distance::Cosine => {
                let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                let (na, nb): (f64, f64) = (a.iter().map(|x| x * x).sum(), b.iter().map(|x| x * x).sum());
                if na > 0.0 && nb > 0.0 {
                    (1.0 - dot / (na * nb).sqrt()).max(0.0)
                } else {
                    1.0
                }
            }
        }
    }

    #[test]
    fn lane_sums_match_sequential_f64_sums() {
        for dim in [1, 3, 8, 13, 128, 130] {
            let a: Vec<f32> = (0..dim).map(|i| ((i * 7919 % 101) as f32 - 50.0) / 37.0).collect();
            let b: Vec<f32> = (0..dim).map(|i| ((i * 104729 % 97) as f32 - 48.0) / 41.0).collect();
            for metric in [Distance::Euclidean, Distance::Cosine] {
                let got = distance(metric, &a, &b) as f64;
                let want = reference(metric, &a, &b);
                assert!((got - want).abs() <= 1e-5 * want.max(1.0), "{metric:?} dim {dim}: {got} vs {want}");
            }
        }
        let zero = vec![0f32; 16];
        let one: Vec<f32> = (0..16).map(|i| i as f32).collect();
        assert_eq!(distance(Distance::Cosine, &zero, &one), 1.0, "a zero vector is near nothing");
        assert_eq!(distance(Distance::Cosine, &one, &one), 0.0);
    }
}
