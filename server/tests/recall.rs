//! HNSW against the exact index on the same clustered data: recall@10 >= 0.99, with the
//! graph's vectors at full precision and quantised (`f16`, and `i8` for cosine), the
//! quantised graphs ranking their candidates by the full-precision vectors.

use std::collections::HashMap;
use std::sync::Arc;

use contract::Distance;
mod common;

use common::clustered;
use server::index::{ExactIndex, FullVectors, HnswIndex, HnswParams, Quantization, VectorRead, VectorWrite};

/// The full-precision vectors, as the store would give them.
struct Full(HashMap<u64, Vec<f32>>);

impl FullVectors for Full {
    fn full_vectors(&self, keys: &[u64]) -> Vec<Option<Vec<f32>>> {
        keys.iter().map(|k| self.0.get(k).cloned()).collect()
    }
}

/// Recall@10 of the graph's answers, and whether its distances are the exact index's.
fn recall_at_10(metric: Distance, quantization: Quantization) -> (f64, bool) {
    let (n, dim) = (20_000, 32);
    let data = clustered(n, dim, 100, 1);
    let items: Vec<(u64, Vec<f32>)> = data.into_iter().enumerate().map(|(i, v)| (i as u64, v)).collect();
    let mut exact = ExactIndex::new(dim, metric);
    exact.insert(&items);
    let params = HnswParams { m: 16, ef_construction: 100, ef_search: 128, quantization, ..HnswParams::default() };
    let mut hnsw =
        HnswIndex::new(dim, metric, params, n).with_full_vectors(Arc::new(Full(items.iter().cloned().collect())));
    hnsw.insert(&items);
    assert_eq!(hnsw.len(), n);
    let queries = clustered(200, dim, 100, 2);
    let (mut found, mut exact_distances) = (0, true);
    for q in &queries {
        let truth = exact.search(q, 10, None);
        let got = hnsw.search(q, 10, None);
        found += got.iter().filter(|h| truth.iter().any(|t| t.key == h.key)).count();
        // A hit's distance is the exact index's distance of the same key.
        let all = exact.search(q, n, None);
        exact_distances &= got.iter().all(|h| all.iter().any(|t| t.key == h.key && t.distance == h.distance));
    }
    (found as f64 / (10 * queries.len()) as f64, exact_distances)
}

fn check(metric: Distance, quantization: Quantization) {
    let (r, exact_distances) = recall_at_10(metric, quantization);
    assert!(r >= 0.99, "{metric:?} {quantization:?}: recall@10 = {r}");
    assert!(exact_distances, "{metric:?} {quantization:?}: distances are not the full-precision ones");
}

#[test]
fn hnsw_recall_at_10_euclidean() {
    check(Distance::Euclidean, Quantization::F32);
}

#[test]
fn hnsw_recall_at_10_cosine() {
    check(Distance::Cosine, Quantization::F32);
}

#[test]
fn hnsw_f16_recall_at_10_euclidean() {
    check(Distance::Euclidean, Quantization::F16);
}

#[test]
fn hnsw_f16_recall_at_10_cosine() {
    check(Distance::Cosine, Quantization::F16);
}

#[test]
fn hnsw_i8_recall_at_10_cosine() {
    check(Distance::Cosine, Quantization::I8);
}

#[test]
fn i8_is_refused_for_euclidean_vectors_with_the_fix() {
    let err = Quantization::I8.check(Distance::Euclidean).unwrap_err();
    assert!(err.contains("\"f16\"") && err.contains("--normalize"), "{err}");
    assert!(Quantization::I8.check(Distance::Cosine).is_ok());
    assert!(Quantization::F16.check(Distance::Euclidean).is_ok());
}
