//! HNSW against the exact index on the same clustered data: recall@10 >= 0.99.

use contract::Distance;
mod common;

use common::clustered;
use server::index::{ExactIndex, HnswIndex, HnswParams, VectorRead, VectorWrite};

fn recall_at_10(metric: Distance) -> f64 {
    let (n, dim) = (20_000, 32);
    let data = clustered(n, dim, 100, 1);
    let items: Vec<(u64, Vec<f32>)> = data.into_iter().enumerate().map(|(i, v)| (i as u64, v)).collect();
    let mut exact = ExactIndex::new(dim, metric);
    exact.insert(&items);
    let mut hnsw = HnswIndex::new(
        dim,
        metric,
        HnswParams { m: 16, ef_construction: 100, ef_search: 128, ..HnswParams::default() },
        n,
    );
    hnsw.insert(&items);
    assert_eq!(hnsw.len(), n);
    let queries = clustered(200, dim, 100, 2);
    let mut found = 0;
    for q in &queries {
        let truth: Vec<u64> = exact.search(q, 10, None).iter().map(|h| h.key).collect();
        let got: Vec<u64> = hnsw.search(q, 10, None).iter().map(|h| h.key).collect();
        found += got.iter().filter(|k| truth.contains(k)).count();
    }
    found as f64 / (10 * queries.len()) as f64
}

#[test]
fn hnsw_recall_at_10_euclidean() {
    let r = recall_at_10(Distance::Euclidean);
    assert!(r >= 0.99, "recall@10 = {r}");
}

#[test]
fn hnsw_recall_at_10_cosine() {
    let r = recall_at_10(Distance::Cosine);
    assert!(r >= 0.99, "recall@10 = {r}");
}
