//! Nearest-neighbour batch construction (docs/algorithm.md, "Batches
//! from neighbours"): each epoch, every image's K nearest neighbours on the student's `g`
//! embedding, then batches of random queries each followed by its neighbours, so that a
//! batch holds enough likely positives.

use rand::Rng;
use tch::{Device, Kind, TchError, Tensor};

use super::distance::squared_distances_between;

/// Elements of one `[chunk, N]` distance block: 2^24 (64 MiB of f32).
const CHUNK_ELEMENTS: i64 = 1 << 24;

/// The `k` nearest neighbours of every row by squared Euclidean distance, the row itself
/// first, then by increasing distance. Works in row chunks, so memory stays
/// `O(N · chunk)` and 100k rows never build an `N × N` matrix.
///
/// `k` is clamped to `N`. Runs on the device of `embeddings`.
///
/// # Shapes
/// - `embeddings`: `[N, D]`
/// - returns `N` lists of `min(k, N)` indices
pub fn nearest_neighbors(embeddings: &Tensor, k: usize) -> Result<Vec<Vec<usize>>, TchError> {
    let n = embeddings.size().first().copied().unwrap_or(0).max(1);
    nearest_neighbors_in_chunks(embeddings, k, (CHUNK_ELEMENTS / n).max(1))
}

/// [`nearest_neighbors`] with an explicit number of query rows per chunk.
///
/// # Shapes
/// - `embeddings`: `[N, D]`
/// - returns `N` lists of `min(k, N)` indices
pub fn nearest_neighbors_in_chunks(
    embeddings: &Tensor,
    k: usize,
    rows_per_chunk: i64,
) -> Result<Vec<Vec<usize>>, TchError> {
    let (n, _dim) = embeddings.size2().map_err(|_| {
        TchError::Shape(format!("nearest-neighbour search needs [N, D] embeddings, got shape {:?}", embeddings.size()))
    })?;
    if n == 0 || k == 0 {
        return Ok(vec![Vec::new(); n as usize]);
    }
    let k = (k as i64).min(n);
    let rows_per_chunk = rows_per_chunk.max(1);
    tch::no_grad(|| {
        let x = embeddings.f_to_kind(Kind::Float)?;
        let mut out = Vec::with_capacity(n as usize);
        let mut start = 0;
        while start < n {
            let len = rows_per_chunk.min(n - start);
            let dist = squared_distances_between(&x.narrow(0, start, len), &x); // [len, N]
                                                                                // Each row is its own first neighbour, even among exact duplicates.
            let own = Tensor::arange_start(start, start + len, (Kind::Int64, x.device())).unsqueeze(1); // [len, 1]
            let dist = dist.scatter_value(1, &own, f64::NEG_INFINITY);
            let (_, nn) = dist.topk(k, 1, false, true); // [len, k]
            let nn = Vec::<Vec<i64>>::try_from(&nn.to_device(Device::Cpu))?;
            out.extend(nn.into_iter().map(|row| row.into_iter().map(|j| j as usize).collect::<Vec<_>>()));
            start += len;
        }
        Ok(out)
    })
}

/// Neighbour lists for training with some known classes (docs/algorithm.md,
/// "Semi-supervised mode"): an image of known class is followed by up to `k - 1` other
/// images of its class, a seeded random choice among those with a known class, and then,
/// where its class has fewer, by its own nearest neighbours. A batch then holds pairs
/// known to match (W = 1 within such a group) and, between the groups of different
/// classes, pairs known to differ; images of unknown class keep their lists.
///
/// An image with an empty list is never chosen. Deterministic for a seeded `rng`.
///
/// # Shapes
/// - `knn`: `N` neighbour lists, each starting with the image itself
/// - `labels`: `[N]` classes, `-1` unknown
/// - returns `N` lists of at most `max(k, len(knn[i]))` indices
pub fn known_positives_first<R: Rng + ?Sized>(
    knn: &[Vec<usize>],
    labels: &[i64],
    k: usize,
    rng: &mut R,
) -> Vec<Vec<usize>> {
    let mut members: std::collections::BTreeMap<i64, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, &l) in labels.iter().enumerate().take(knn.len()) {
        if l >= 0 && !knn[i].is_empty() {
            members.entry(l).or_default().push(i);
        }
    }
    knn.iter()
        .enumerate()
        .map(|(i, own)| {
            let class = labels.get(i).filter(|&&l| l >= 0 && !own.is_empty()).and_then(|l| members.get(l));
            let Some(class) = class else {
                return own.clone();
            };
            let mut list = vec![i];
            let peers = k.saturating_sub(1).min(class.len().saturating_sub(1));
            // One more than needed, so that dropping the image itself still leaves enough.
            let picked = rand::seq::index::sample(rng, class.len(), (peers + 1).min(class.len()));
            list.extend(picked.into_iter().map(|j| class[j]).filter(|&j| j != i).take(peers));
            list.extend(own.iter().copied().filter(|j| !list.contains(j)).collect::<Vec<_>>());
            list.truncate(k.max(own.len()));
            list
        })
        .collect()
}

/// The batches of one epoch: `floor(N / B)` batches, each of `B / K` distinct random
/// query images, each followed by its neighbours — the first `K` entries of its `knn`
/// list, which start with the query itself — so a batch has `(B / K) · K` entries (`B`
/// when `K` divides it). Neighbour lists of different queries may overlap.
///
/// Deterministic for a seeded `rng` (e.g. `rand_chacha::ChaCha8Rng`). Returns no batch
/// when `B` is 0 or larger than `N`.
///
/// # Shapes
/// - `knn`: `N` neighbour lists (from [`nearest_neighbors`])
/// - returns `floor(N / B)` lists of dataset indices
pub fn epoch_batches<R: Rng + ?Sized>(knn: &[Vec<usize>], batch_size: usize, k: usize, rng: &mut R) -> Vec<Vec<usize>> {
    let n = knn.len();
    let k = k.max(1);
    let queries = batch_size / k;
    if batch_size == 0 || queries == 0 || batch_size > n {
        return Vec::new();
    }
    (0..n / batch_size)
        .map(|_| {
            rand::seq::index::sample(rng, n, queries).into_iter().flat_map(|q| knn[q].iter().take(k).copied()).collect()
        })
        .collect()
}
