//! HNSW against the exact index on the same clustered data: recall@10 >= 0.99.

use contract::Distance;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use server::index::{ExactIndex, HnswIndex, HnswParams, VectorRead, VectorWrite};

/// `n` points around `clusters` centres, the way embeddings cluster: Gaussian-like
/// spread in an 8-dimensional latent space, mapped linearly into `dim` dimensions, plus a
/// little isotropic noise. Every seed shares the centres and the map, so queries drawn
/// with another seed fall in the same clusters.
fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let latent = 8;
    let mut prng = ChaCha8Rng::seed_from_u64(99);
    let proj: Vec<Vec<f32>> = (0..dim).map(|_| (0..latent).map(|_| prng.gen_range(-1.0f32..1.0)).collect()).collect();
    let centres: Vec<Vec<f32>> =
        (0..clusters).map(|_| (0..latent).map(|_| prng.gen_range(-1.0f32..1.0)).collect()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let c = &centres[rng.gen_range(0..clusters)];
            let z: Vec<f32> =
                c.iter().map(|x| x + (0..3).map(|_| rng.gen_range(-0.12f32..0.12)).sum::<f32>()).collect();
            proj.iter()
                .map(|row| row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + rng.gen_range(-0.01f32..0.01))
                .collect()
        })
        .collect()
}

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
