//! Retrieval and clustering metrics as pure functions of labels.

use std::collections::HashMap;

/// Whether a query with neighbour labels `row` (nearest first) finds its own label within
/// each of the first `ks` neighbours: `hit@K = 1[exists j < K: row[j] == label]`.
pub fn hits_at_k(row: &[u32], label: u32, ks: &[usize]) -> Vec<bool> {
    let first = row.iter().position(|&l| l == label);
    ks.iter().map(|&k| first.is_some_and(|p| p < k)).collect()
}

/// Recall@K of the standard deep-metric-learning protocol, for every K in `ks`:
///
/// `Recall@K = (1/n) * sum_q 1[some of the K nearest neighbours of q has q's label]`.
///
/// # Shapes
/// - `knn_labels`: `[n, k]` row-major, the labels of each query's neighbours, nearest first
///   (self excluded); a K larger than k counts the k available neighbours.
/// - `query_labels`: `[n]`. Returns `[ks.len()]`.
pub fn recall_at_k(knn_labels: &[u32], query_labels: &[u32], ks: &[usize]) -> Vec<f64> {
    let n = query_labels.len();
    if n == 0 {
        return vec![0.0; ks.len()];
    }
    let k = knn_labels.len() / n;
    let mut hits = vec![0usize; ks.len()];
    for (q, &label) in query_labels.iter().enumerate() {
        for (h, hit) in hits.iter_mut().zip(hits_at_k(&knn_labels[q * k..(q + 1) * k], label, ks)) {
            *h += usize::from(hit);
        }
    }
    hits.into_iter().map(|h| h as f64 / n as f64).collect()
}

/// Average precision at R of one query (Musgrave et al., "A Metric Learning Reality
/// Check", 2020), with R the number of items sharing the query's label (other than the
/// query itself):
///
/// `AP@R = (1/R) * sum_{i=1..R} P(i) * rel(i)`, where `rel(i) = 1` if the i-th neighbour has
/// the query's label and `P(i)` is the precision over the first i neighbours.
///
/// Neighbours beyond `row.len()` count as not relevant. Returns `None` when R = 0.
pub fn average_precision_at_r(row: &[u32], label: u32, r: usize) -> Option<f64> {
    if r == 0 {
        return None;
    }
    let mut relevant = 0usize;
    let mut sum = 0f64;
    for (i, &l) in row.iter().take(r).enumerate() {
        if l == label {
            relevant += 1;
            sum += relevant as f64 / (i + 1) as f64;
        }
    }
    Some(sum / r as f64)
}

/// MAP@R: the mean of [`average_precision_at_r`] over queries, where the gallery is the
/// query set itself, so `R_q = |{p != q : label_p = label_q}|`. Queries alone in their
/// class (R = 0) are left out; 0 when every query is.
///
/// # Shapes
/// - `knn_labels`: `[n, k]` as in [`recall_at_k`]; exact when `k >= max_q R_q`.
/// - `query_labels`: `[n]`.
pub fn map_at_r(knn_labels: &[u32], query_labels: &[u32]) -> f64 {
    let n = query_labels.len();
    if n == 0 {
        return 0.0;
    }
    let k = knn_labels.len() / n;
    let counts = label_counts(query_labels);
    let (sum, used) = query_labels
        .iter()
        .enumerate()
        .filter_map(|(q, &l)| average_precision_at_r(&knn_labels[q * k..(q + 1) * k], l, counts[&l] - 1))
        .fold((0f64, 0usize), |(s, c), ap| (s + ap, c + 1));
    if used == 0 {
        0.0
    } else {
        sum / used as f64
    }
}

/// How many times each label occurs.
pub fn label_counts(labels: &[u32]) -> HashMap<u32, usize> {
    let mut counts = HashMap::new();
    for &l in labels {
        *counts.entry(l).or_insert(0) += 1;
    }
    counts
}

/// Normalised mutual information between a labelling and a clustering, normalised by the
/// arithmetic mean of the entropies (scikit-learn's default):
///
/// `NMI(Y, C) = 2 I(Y; C) / (H(Y) + H(C))`, with `I(Y; C) = sum_{y,c} p(y,c) ln(p(y,c) / (p(y) p(c)))`
/// and `H(X) = -sum_x p(x) ln p(x)` over empirical frequencies. 1 when both are a single
/// group (or the inputs are empty); 0 when exactly one side has a single group.
///
/// # Shapes
/// - `labels`, `clusters`: `[n]`; extra entries of the longer one are ignored.
pub fn nmi(labels: &[u32], clusters: &[u32]) -> f64 {
    let n = labels.len().min(clusters.len());
    let (labels, clusters) = (&labels[..n], &clusters[..n]);
    let (py, pc) = (label_counts(labels), label_counts(clusters));
    if py.len() <= 1 && pc.len() <= 1 {
        return 1.0;
    }
    let mut joint: HashMap<(u32, u32), usize> = HashMap::new();
    for (&y, &c) in labels.iter().zip(clusters) {
        *joint.entry((y, c)).or_insert(0) += 1;
    }
    let nf = n as f64;
    let entropy = |m: &HashMap<u32, usize>| -> f64 { m.values().map(|&c| c as f64 / nf).map(|p| -p * p.ln()).sum() };
    let mi: f64 = joint
        .iter()
        .map(|(&(y, c), &nyc)| {
            let pyc = nyc as f64 / nf;
            pyc * (pyc * nf * nf / (py[&y] as f64 * pc[&c] as f64)).ln()
        })
        .sum();
    let denom = entropy(&py) + entropy(&pc);
    if denom <= 0.0 {
        return 0.0;
    }
    (2.0 * mi / denom).clamp(0.0, 1.0)
}
