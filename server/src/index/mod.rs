//! Vector indexes behind a read trait and a write trait. [`ExactIndex`] scans every
//! vector (the oracle for tests); [`HnswIndex`] is the approximate graph index served in
//! production. Both rank by the same [`distance`].

mod exact;
mod hnsw;

pub use exact::ExactIndex;
pub use hnsw::{GraphFiles, HnswIndex, HnswParams};

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
        Distance::Euclidean => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt(),
        Distance::Cosine => {
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for (x, y) in a.iter().zip(b) {
                dot += (*x as f64) * (*y as f64);
                na += (*x as f64) * (*x as f64);
                nb += (*y as f64) * (*y as f64);
            }
            if na > 0.0 && nb > 0.0 {
                (1.0 - dot / (na * nb).sqrt()).max(0.0) as f32
            } else {
                1.0
            }
        }
    }
}
