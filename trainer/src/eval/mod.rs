//! Retrieval metrics: Recall@K, NMI, MAP@R, over exact k-nearest neighbours computed in
//! bounded memory. The metric maths are pure functions in [`metrics`]; [`evaluate`] runs
//! the whole protocol on a set of labelled embeddings.

pub mod embedded;
pub mod kmeans;
pub mod knn;
pub mod metrics;

use serde::Serialize;

pub use contract::Distance;
pub use embedded::{evaluate_embeddings, evaluate_student};
pub use kmeans::{kmeans, KMeansOptions};
pub use knn::{knn, squared_euclidean, Neighbor, Neighbors, SCRATCH_FLOATS};
pub use metrics::{average_precision_at_r, hits_at_k, label_counts, map_at_r, nmi, recall_at_k};

/// What can be wrong with the inputs of an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("embeddings hold {len} values, not a whole number of rows of dimension {dim}; pass [n, dim] row-major with dim > 0")]
    Shape { len: usize, dim: usize },
    #[error("{embeddings} embeddings but {labels} labels; give one label per embedded image")]
    Labels { embeddings: usize, labels: usize },
    #[error("evaluation needs at least 2 embedded images, got {0}; check the test split is not empty")]
    TooFew(usize),
    #[error("embedding {point} is not finite (NaN or infinity); the model diverged or the input is broken")]
    NotFinite { point: usize },
}

/// Recall@K, NMI and MAP@R of one set of embeddings (every point a query against all the
/// others).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Number of queries (embedded images).
    pub queries: usize,
    /// Number of distinct labels (the k of k-means).
    pub classes: usize,
    /// `(K, Recall@K)` for each requested K, as fractions in [0, 1].
    pub recall: Vec<(usize, f64)>,
    pub nmi: f64,
    pub map_at_r: f64,
}

impl EvalReport {
    /// Recall@K for one K, if it was computed.
    pub fn recall_at(&self, k: usize) -> Option<f64> {
        self.recall.iter().find(|(kk, _)| *kk == k).map(|&(_, r)| r)
    }

    /// A small table for people.
    pub fn table(&self) -> String {
        let mut s = format!("{} queries, {} classes\n", self.queries, self.classes);
        for (k, r) in &self.recall {
            s.push_str(&format!("Recall@{k:<5} {:6.2} %\n", 100.0 * r));
        }
        s.push_str(&format!("NMI          {:6.2} %\nMAP@R        {:6.2} %", 100.0 * self.nmi, 100.0 * self.map_at_r));
        s
    }

    /// One log line.
    pub fn one_line(&self) -> String {
        let r: Vec<String> = self.recall.iter().map(|(k, r)| format!("R@{k} {:.2}", 100.0 * r)).collect();
        format!("{}, NMI {:.2}, MAP@R {:.2}", r.join(", "), 100.0 * self.nmi, 100.0 * self.map_at_r)
    }
}

/// Seed of the k-means behind NMI, fixed so a report is reproducible.
pub const KMEANS_SEED: u64 = 0;

/// The evaluation protocol: each point queries all the others (itself excluded) by
/// `distance`; Recall@K for every K in `ks` (see [`recall_at_k`]); MAP@R (see
/// [`map_at_r`]); NMI (see [`nmi`]) between the labels and a k-means clustering
/// ([`kmeans`], seed [`KMEANS_SEED`], L2-normalised points for cosine) with as many
/// clusters as distinct labels.
///
/// Memory stays bounded: queries are processed in blocks with at most
/// [`SCRATCH_FLOATS`] distances each, and each query's neighbour list (max(K, R) long)
/// is reduced to its metrics at once, never stored for all queries.
///
/// # Shapes
/// - `embeddings`: `[n, dim]` row-major; `labels`: `[n]`.
pub fn evaluate(
    embeddings: &[f32],
    dim: usize,
    labels: &[u32],
    ks: &[usize],
    distance: Distance,
) -> Result<EvalReport, EvalError> {
    let points = knn::Points::new(embeddings, dim, distance)?;
    let n = points.n;
    if labels.len() != n {
        return Err(EvalError::Labels { embeddings: n, labels: labels.len() });
    }
    if n < 2 {
        return Err(EvalError::TooFew(n));
    }
    let counts = label_counts(labels);
    let k_max = ks.iter().copied().max().unwrap_or(0);
    // Per block: (hits per K, sum of AP@R, queries with R > 0).
    type Acc = (Vec<usize>, f64, usize);
    let (hits, ap_sum, ap_queries) = points.fold(
        SCRATCH_FLOATS,
        |q| k_max.max(counts[&labels[q]] - 1),
        || (vec![0usize; ks.len()], 0f64, 0usize),
        |acc: &mut Acc, q, nb| {
            let row: Vec<u32> = nb.iter().map(|x| labels[x.index as usize]).collect();
            for (h, hit) in acc.0.iter_mut().zip(hits_at_k(&row, labels[q], ks)) {
                *h += usize::from(hit);
            }
            if let Some(ap) = average_precision_at_r(&row, labels[q], counts[&labels[q]] - 1) {
                acc.1 += ap;
                acc.2 += 1;
            }
        },
        |mut a: Acc, b: Acc| {
            a.0.iter_mut().zip(&b.0).for_each(|(x, y)| *x += y);
            (a.0, a.1 + b.1, a.2 + b.2)
        },
    );
    let clusters = kmeans(&points.data, dim, counts.len(), &KMeansOptions { seed: KMEANS_SEED, ..Default::default() });
    Ok(EvalReport {
        queries: n,
        classes: counts.len(),
        recall: ks.iter().zip(hits).map(|(&k, h)| (k, h as f64 / n as f64)).collect(),
        nmi: nmi(labels, &clusters),
        map_at_r: if ap_queries == 0 { 0.0 } else { ap_sum / ap_queries as f64 },
    })
}

/// Recall@K cut-offs: `configured`, or the protocol's defaults (1, 2, 4, 8; SOP 1, 10,
/// 100, 1000).
pub fn recall_ks(configured: &[usize], sop: bool) -> Vec<usize> {
    if !configured.is_empty() {
        configured.to_vec()
    } else if sop {
        vec![1, 10, 100, 1000]
    } else {
        vec![1, 2, 4, 8]
    }
}
