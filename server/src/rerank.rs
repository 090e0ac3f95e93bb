//! Query-time re-ranking with the contextual similarity STML trains with
//! ([`contract::contextual`]): the query and its nearest candidates form a small set; each
//! candidate is scored `(W_P + w W_C) / (1 + w)` with the query (`w = 1`: STML's pseudo
//! label `W`), where `W_P` is the pairwise similarity and `W_C` measures how much their
//! k-reciprocal neighbourhoods within the set overlap. A candidate near the query *and*
//! sharing its neighbours rises; one near only by chance falls. Measured on the
//! development domains it does not reliably raise Recall@1 (BENCHMARKS.md), so it is off
//! unless a query asks for it.

use serde::Serialize;

use crate::index::Neighbor;
use crate::{Error, Result};

/// Candidates re-ranked when a query does not say (or `offset + k`, if more).
pub const DEFAULT_DEPTH: usize = 50;
/// Neighbourhood size `k` of the contextual similarity when a query does not say. Chosen
/// with [`DEFAULT_WEIGHT`] on galleries of the development domains' *training* classes
/// (BENCHMARKS.md, "Query-time re-ranking"): STML's own `k = 10`, `w = 1` lost up to 9
/// points of Recall@1 there.
pub const DEFAULT_K: usize = 5;
/// Most candidates one query may re-rank (the work grows with its square).
pub const MAX_DEPTH: usize = 1000;
/// Weight of the contextual term when a query does not say (1 is STML's own pseudo label):
/// small, so that the neighbourhoods reorder only candidates at nearly equal distances.
pub const DEFAULT_WEIGHT: f32 = 0.03;

/// How to re-rank a query's hits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rerank {
    /// Candidates taken from the index and re-ordered.
    pub depth: usize,
    /// Neighbourhood size of the contextual similarity.
    pub k: usize,
    /// Weight `w` of the contextual term: score `(W_P + w W_C) / (1 + w)`.
    pub weight: f32,
}

impl Default for Rerank {
    fn default() -> Self {
        Self { depth: DEFAULT_DEPTH, k: DEFAULT_K, weight: DEFAULT_WEIGHT }
    }
}

impl Rerank {
    /// Checked options: `depth` in `2..=MAX_DEPTH`, `k` in `1..=depth`, `weight` finite
    /// and >= 0.
    pub fn new(depth: Option<usize>, k: Option<usize>, weight: Option<f32>) -> Result<Self> {
        let weight = weight.unwrap_or(DEFAULT_WEIGHT);
        if !weight.is_finite() || weight < 0.0 {
            return Err(Error::BadRequest(format!("rerank_weight = {weight} must be a finite number >= 0")));
        }
        let depth = depth.unwrap_or(DEFAULT_DEPTH);
        if !(2..=MAX_DEPTH).contains(&depth) {
            return Err(Error::BadRequest(format!(
                "rerank_depth = {depth} is out of range; expected 2 ..= {MAX_DEPTH}"
            )));
        }
        let k = k.unwrap_or(DEFAULT_K);
        if k == 0 || k > depth {
            return Err(Error::BadRequest(format!(
                "rerank_k = {k} is out of range; expected 1 ..= rerank_depth ({depth})"
            )));
        }
        Ok(Self { depth, k, weight })
    }
}

/// `candidates` (nearest first, each with its vector) re-ordered by their pseudo label
/// with `query`, highest first (ties keep the index's order), each with that score.
pub fn rerank(query: &[f32], candidates: Vec<(Neighbor, Vec<f32>)>, opts: Rerank) -> Vec<(Neighbor, f32)> {
    use contract::contextual::{contextual_similarity, normalized, pairwise_similarity, SIGMA};
    let mut set: Vec<&[f32]> = Vec::with_capacity(candidates.len() + 1);
    set.push(query);
    set.extend(candidates.iter().map(|(_, v)| v.as_slice()));
    let w_p = pairwise_similarity(&normalized(&set), SIGMA);
    let group: Vec<usize> = (0..set.len()).collect();
    // The query takes part in the neighbourhoods: k counts it, as a sample counts itself.
    let w_c = contextual_similarity(&w_p, &group, opts.k + 1);
    let w = f64::from(opts.weight);
    let mut scored: Vec<(Neighbor, f32)> = candidates
        .into_iter()
        .enumerate()
        .map(|(i, (n, _))| (n, ((w_p[i + 1] + w * w_c[i + 1]) / (1.0 + w)) as f32))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_near_candidate_falls_below_members_of_the_querys_neighbourhood() {
        // Points on the unit circle by angle. The query (0) has its own tight group A just
        // below it; key 0 is the single nearest point, but it belongs to group B above it.
        let at = |a: f32| vec![a.cos(), a.sin()];
        let q = at(0.0);
        let mut cands = vec![(Neighbor { key: 0, distance: 0.05 }, at(0.05))];
        for (i, a) in [0.06f32, 0.065, 0.07, 0.075].iter().enumerate() {
            cands.push((Neighbor { key: 1 + i as u64, distance: *a }, at(-a)));
        }
        for (i, a) in [0.072f32, 0.077, 0.082, 0.087].iter().enumerate() {
            cands.push((Neighbor { key: 5 + i as u64, distance: *a }, at(*a)));
        }
        let out = rerank(&q, cands, Rerank { depth: 9, k: 4, weight: 1.0 });
        let order: Vec<u64> = out.iter().map(|(n, _)| n.key).collect();
        assert!(out.windows(2).all(|w| w[0].1 >= w[1].1), "sorted by score: {out:?}");
        // Key 0 was first by distance; the query's k-reciprocal neighbours (1-3) pass it.
        assert_eq!(&order[..3], &[1, 2, 3], "the query's own group first: {out:?}");
        assert!(order.iter().position(|&k| k == 0).unwrap() >= 3, "{order:?}");
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(Rerank::new(None, None, None).unwrap(), Rerank::default());
        assert!(Rerank::new(Some(1), None, None).is_err());
        assert!(Rerank::new(Some(20), Some(21), None).unwrap_err().to_string().contains("rerank_k"));
        assert!(Rerank::new(None, None, Some(-1.0)).unwrap_err().to_string().contains("rerank_weight"));
    }
}
