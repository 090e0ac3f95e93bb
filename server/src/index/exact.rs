//! Brute-force search over every stored vector: exact, linear in the index size, and the
//! reference the HNSW index is tested against.

use std::collections::HashMap;

use contract::Distance;

use super::{distance, nearest, Accept, Neighbor, VectorRead, VectorWrite};

/// Exact nearest-neighbour search by scanning.
#[derive(Debug, Clone)]
pub struct ExactIndex {
    dim: usize,
    metric: Distance,
    keys: Vec<u64>,
    /// `[len, dim]`, row-major.
    vectors: Vec<f32>,
    position: HashMap<u64, usize>,
}

impl ExactIndex {
    /// An empty index of `dim`-dimensional vectors compared by `metric`.
    pub fn new(dim: usize, metric: Distance) -> Self {
        Self { dim, metric, keys: Vec::new(), vectors: Vec::new(), position: HashMap::new() }
    }
}

impl VectorRead for ExactIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn search(&self, query: &[f32], k: usize, _ef: Option<usize>) -> Vec<Neighbor> {
        self.scan(query, k, &|_| true)
    }

    fn search_filtered(&self, query: &[f32], k: usize, _ef: Option<usize>, accept: &Accept) -> Vec<Neighbor> {
        self.scan(query, k, accept)
    }

    fn scan(&self, query: &[f32], k: usize, accept: &Accept) -> Vec<Neighbor> {
        let all: Vec<Neighbor> = self
            .keys
            .iter()
            .zip(self.vectors.chunks_exact(self.dim))
            .filter(|(&key, _)| accept(key))
            .map(|(&key, v)| Neighbor { key, distance: distance(self.metric, query, v) })
            .collect();
        nearest(all, k)
    }
}

impl VectorWrite for ExactIndex {
    fn insert(&mut self, items: &[(u64, Vec<f32>)]) {
        for (key, v) in items {
            debug_assert_eq!(v.len(), self.dim);
            self.remove(*key);
            self.position.insert(*key, self.keys.len());
            self.keys.push(*key);
            self.vectors.extend_from_slice(v);
        }
    }

    fn remove(&mut self, key: u64) -> bool {
        let Some(i) = self.position.remove(&key) else {
            return false;
        };
        let last = self.keys.len() - 1;
        self.keys.swap_remove(i);
        if i != last {
            let (head, tail) = self.vectors.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.position.insert(self.keys[i], i);
        }
        self.vectors.truncate(last * self.dim);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nearest_in_order_and_forgets_removed() {
        let mut idx = ExactIndex::new(2, Distance::Euclidean);
        idx.insert(&[(1, vec![0.0, 0.0]), (2, vec![1.0, 0.0]), (3, vec![5.0, 5.0])]);
        let hits = idx.search(&[0.9, 0.0], 2, None);
        assert_eq!(hits.iter().map(|h| h.key).collect::<Vec<_>>(), vec![2, 1]);
        assert!((hits[0].distance - 0.1).abs() < 1e-6);
        assert!(idx.remove(2));
        assert!(!idx.remove(2));
        let hits = idx.search(&[0.9, 0.0], 5, None);
        assert_eq!(hits.iter().map(|h| h.key).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn cosine_ignores_length() {
        let mut idx = ExactIndex::new(2, Distance::Cosine);
        idx.insert(&[(1, vec![10.0, 0.0]), (2, vec![0.0, 1.0]), (3, vec![0.0, 0.0])]);
        let hits = idx.search(&[0.5, 0.01], 3, None);
        assert_eq!(hits[0].key, 1);
        assert!(hits[0].distance < 1e-3);
        assert_eq!(hits[2].key, 3, "a zero vector is near nothing");
    }
}
