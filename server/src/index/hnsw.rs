//! The HNSW graph index (hnsw_rs; the only file that uses that crate). hnsw_rs cannot
//! delete, so removals are tombstones filtered out at search time; [`HnswIndex::rebuilt`]
//! drops them once they pile up.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use contract::Distance;
use hnsw_rs::prelude::{AnnT, Hnsw, HnswIo};
use serde::{Deserialize, Serialize};

use super::{distance, nearest, Accept, Neighbor, VectorRead, VectorWrite};

/// Most layers of the graph; hnsw_rs's recommended value.
const MAX_LAYER: usize = 16;

/// Graph construction, search and maintenance parameters (the `[hnsw]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HnswParams {
    /// Links per node (`M`).
    pub m: usize,
    pub ef_construction: usize,
    /// Default search breadth; a query may override it with `ef`.
    pub ef_search: usize,
    /// Rebuild the graph once deleted points exceed this fraction of it.
    pub rebuild_tombstone_ratio: f64,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self { m: 16, ef_construction: 200, ef_search: 64, rebuild_tombstone_ratio: 0.2 }
    }
}

/// The two files of a graph dump, named by the basename hnsw_rs chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphFiles {
    pub basename: String,
    /// Sizes of `<basename>.hnsw.graph` and `<basename>.hnsw.data`.
    pub graph_bytes: u64,
    pub data_bytes: u64,
    /// SHA-256 of the two files, checked before loading: hnsw_rs exits the process on
    /// some malformed dumps, so only byte-identical dumps are handed to it.
    pub graph_sha256: String,
    pub data_sha256: String,
}

impl GraphFiles {
    fn paths(dir: &Path, basename: &str) -> [PathBuf; 2] {
        [dir.join(format!("{basename}.hnsw.graph")), dir.join(format!("{basename}.hnsw.data"))]
    }

    fn sizes(dir: &Path, basename: &str) -> Option<(u64, u64)> {
        let [g, d] = Self::paths(dir, basename);
        Some((std::fs::metadata(g).ok()?.len(), std::fs::metadata(d).ok()?.len()))
    }

    fn hashes(dir: &Path, basename: &str) -> Option<(String, String)> {
        let [g, d] = Self::paths(dir, basename);
        let hash = |p: &Path| -> Option<String> {
            let mut f = std::fs::File::open(p).ok()?;
            contract::hash::sha256_hex_reader(&mut f).ok()
        };
        Some((hash(&g)?, hash(&d)?))
    }

    /// Deletes both files (missing files are not an error).
    pub fn remove(&self, dir: &Path) {
        for p in Self::paths(dir, &self.basename) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The graph's distances: [`super::distance`], the one the exact index ranks by, through
/// hnsw_rs's trait. hnsw_rs's own cosine adds in f64 one term after the other (about five
/// times slower on 128-d vectors) and answers 0, not 1, for a zero vector. The types are
/// named as hnsw_rs's are because a dump records its distance's type name and is loaded
/// only by a distance of that name: graphs dumped before these existed still load (the
/// distances are the same function).
#[derive(Debug, Default, Clone, Copy)]
struct DistL2;

#[derive(Debug, Default, Clone, Copy)]
struct DistCosine;

impl hnsw_rs::prelude::Distance<f32> for DistL2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        distance(Distance::Euclidean, a, b)
    }
}

impl hnsw_rs::prelude::Distance<f32> for DistCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        distance(Distance::Cosine, a, b)
    }
}

enum Graph {
    L2(Hnsw<'static, f32, DistL2>),
    Cosine(Hnsw<'static, f32, DistCosine>),
}

macro_rules! with_graph {
    ($graph:expr, $g:ident => $body:expr) => {
        match $graph {
            Graph::L2($g) => $body,
            Graph::Cosine($g) => $body,
        }
    };
}

/// Approximate nearest-neighbour search on an HNSW graph.
pub struct HnswIndex {
    graph: Graph,
    params: HnswParams,
    dim: usize,
    metric: Distance,
    /// Every key in the graph, live or deleted.
    keys: HashSet<u64>,
    tombstones: HashSet<u64>,
}

impl HnswIndex {
    /// An empty graph sized for about `capacity` vectors.
    pub fn new(dim: usize, metric: Distance, params: HnswParams, capacity: usize) -> Self {
        let cap = capacity.max(1024);
        let graph = match metric {
            Distance::Euclidean => Graph::L2(Hnsw::new(params.m, cap, MAX_LAYER, params.ef_construction, DistL2 {})),
            Distance::Cosine => {
                Graph::Cosine(Hnsw::new(params.m, cap, MAX_LAYER, params.ef_construction, DistCosine {}))
            }
        };
        Self { graph, params, dim, metric, keys: HashSet::new(), tombstones: HashSet::new() }
    }

    /// Number of deleted vectors still in the graph.
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    /// Number of vectors in the graph, deleted ones included.
    pub fn graph_len(&self) -> usize {
        self.keys.len()
    }

    /// Every key in the graph, deleted ones included.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys.iter().copied()
    }

    /// True when deleted vectors exceed `ratio` of the graph.
    pub fn needs_rebuild(&self, ratio: f64) -> bool {
        !self.tombstones.is_empty() && self.tombstones.len() as f64 > ratio * self.keys.len() as f64
    }

    /// A fresh graph holding only the live vectors (taken from this graph's own copy).
    pub fn rebuilt(&self) -> Self {
        let live: Vec<(u64, Vec<f32>)> = with_graph!(&self.graph, g => g
            .get_point_indexation()
            .into_iter()
            .map(|p| (p.get_origin_id() as u64, p.get_v().to_vec()))
            .filter(|(k, _)| !self.tombstones.contains(k))
            .collect());
        let mut fresh = Self::new(self.dim, self.metric, self.params, live.len());
        fresh.insert(&live);
        fresh
    }

    /// Writes the graph to `dir` and returns the names and sizes of the files written.
    pub fn dump(&self, dir: &Path, basename: &str) -> Result<GraphFiles, String> {
        let used = with_graph!(&self.graph, g => g.file_dump(dir, basename)).map_err(|e| e.to_string())?;
        let (graph_bytes, data_bytes) = GraphFiles::sizes(dir, &used)
            .ok_or_else(|| format!("graph dump {used} in {} is incomplete", dir.display()))?;
        let (graph_sha256, data_sha256) = GraphFiles::hashes(dir, &used)
            .ok_or_else(|| format!("graph dump {used} in {} is unreadable", dir.display()))?;
        Ok(GraphFiles { basename: used, graph_bytes, data_bytes, graph_sha256, data_sha256 })
    }

    /// Reloads a dump written by [`HnswIndex::dump`]. Fails (never panics) when the files
    /// are missing, truncated, or of another distance or dimension.
    pub fn load(
        dir: &Path,
        files: &GraphFiles,
        dim: usize,
        metric: Distance,
        params: HnswParams,
    ) -> Result<Self, String> {
        match GraphFiles::sizes(dir, &files.basename) {
            Some(sizes) if sizes == (files.graph_bytes, files.data_bytes) => {}
            Some(_) => return Err(format!("graph dump {} has changed size since it was written", files.basename)),
            None => return Err(format!("graph dump {} is missing", files.basename)),
        }
        if GraphFiles::hashes(dir, &files.basename) != Some((files.graph_sha256.clone(), files.data_sha256.clone())) {
            return Err(format!("graph dump {} has changed since it was written", files.basename));
        }
        // The loaded graph borrows its reader for its whole life; one small reader is
        // leaked per load (loads happen once per start).
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, &files.basename)));
        let loaded = catch_unwind(AssertUnwindSafe(move || -> anyhow::Result<Graph> {
            let io = io;
            Ok(match metric {
                Distance::Euclidean => Graph::L2(io.load_hnsw::<f32, DistL2>()?),
                Distance::Cosine => Graph::Cosine(io.load_hnsw::<f32, DistCosine>()?),
            })
        }))
        .map_err(|_| format!("graph dump {} is corrupt", files.basename))?
        .map_err(|e| format!("graph dump {} cannot be read: {e}", files.basename))?;
        let keys: HashSet<u64> =
            with_graph!(&loaded, g => g.get_point_indexation().into_iter().map(|p| p.get_origin_id() as u64).collect());
        let stored_dim =
            with_graph!(&loaded, g => g.get_point_indexation().into_iter().next().map(|p| p.get_v().len()));
        if let Some(d) = stored_dim {
            if d != dim {
                return Err(format!("graph dump {} holds {d}-dimensional vectors, expected {dim}", files.basename));
            }
        }
        Ok(Self { graph: loaded, params, dim, metric, keys, tombstones: HashSet::new() })
    }
}

impl VectorRead for HnswIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.keys.len() - self.tombstones.len()
    }

    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Vec<Neighbor> {
        if self.tombstones.is_empty() {
            self.walk(query, k, ef, None)
        } else {
            self.search_filtered(query, k, ef, &|_| true)
        }
    }

    fn search_filtered(&self, query: &[f32], k: usize, ef: Option<usize>, accept: &Accept) -> Vec<Neighbor> {
        let alive = |id: &usize| !self.tombstones.contains(&(*id as u64)) && accept(*id as u64);
        self.walk(query, k, ef, Some(&alive))
    }

    fn scan(&self, query: &[f32], k: usize, accept: &Accept) -> Vec<Neighbor> {
        if query.len() != self.dim {
            return Vec::new();
        }
        let all: Vec<Neighbor> = with_graph!(&self.graph, g => g
            .get_point_indexation()
            .into_iter()
            .filter_map(|p| {
                let key = p.get_origin_id() as u64;
                (!self.tombstones.contains(&key) && accept(key))
                    .then(|| Neighbor { key, distance: distance(self.metric, query, p.get_v()) })
            })
            .collect());
        nearest(all, k)
    }
}

impl HnswIndex {
    /// One graph search, collecting only the ids `filter` lets through.
    fn walk(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: Option<&dyn hnsw_rs::prelude::FilterT>,
    ) -> Vec<Neighbor> {
        if k == 0 || self.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        let ef = ef.unwrap_or(self.params.ef_search).max(k);
        let found = with_graph!(&self.graph, g => g.search_filter(query, k, ef, filter));
        found
            .into_iter()
            .filter(|n| filter.is_none_or(|f| f.hnsw_filter(&n.d_id)))
            .map(|n| Neighbor { key: n.d_id as u64, distance: n.distance })
            .collect()
    }
}

impl VectorWrite for HnswIndex {
    fn insert(&mut self, items: &[(u64, Vec<f32>)]) {
        let fresh: Vec<(&[f32], usize)> = items
            .iter()
            .filter(|(k, v)| v.len() == self.dim && !self.keys.contains(k))
            .map(|(k, v)| (v.as_slice(), *k as usize))
            .collect();
        if fresh.len() > 1 {
            with_graph!(&self.graph, g => g.parallel_insert_slice(&fresh));
        } else if let Some(&(v, k)) = fresh.first() {
            with_graph!(&self.graph, g => g.insert_slice((v, k)));
        }
        self.keys.extend(fresh.iter().map(|(_, k)| *k as u64));
    }

    fn remove(&mut self, key: u64) -> bool {
        self.keys.contains(&key) && self.tombstones.insert(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ExactIndex;

    fn params() -> HnswParams {
        HnswParams { m: 16, ef_construction: 100, ef_search: 64, ..HnswParams::default() }
    }

    fn points(n: usize) -> Vec<(u64, Vec<f32>)> {
        (0..n).map(|i| (i as u64 * 3 + 1, vec![(i % 17) as f32, (i / 17) as f32, (i as f32).sin()])).collect()
    }

    #[test]
    fn tombstones_hide_points_and_rebuild_drops_them() {
        let mut idx = HnswIndex::new(3, Distance::Euclidean, params(), 100);
        let pts = points(300);
        idx.insert(&pts);
        let q = pts[10].1.clone();
        assert_eq!(idx.search(&q, 1, None)[0].key, pts[10].0);
        assert!(idx.remove(pts[10].0));
        assert!(!idx.remove(pts[10].0));
        assert!(idx.search(&q, 5, None).iter().all(|n| n.key != pts[10].0));
        assert_eq!(idx.len(), 299);
        assert!(idx.needs_rebuild(0.0));
        let fresh = idx.rebuilt();
        assert_eq!((fresh.graph_len(), fresh.tombstones()), (299, 0));
        assert!(fresh.search(&q, 5, None).iter().all(|n| n.key != pts[10].0));
    }

    #[test]
    fn dump_reloads_the_same_answers_and_bad_dumps_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        for metric in [Distance::Euclidean, Distance::Cosine] {
            let mut idx = HnswIndex::new(3, metric, params(), 100);
            // Without the first point, the zero vector: its cosine distances are NaN, and
            // the exact oracle then ranks it first for every query.
            let pts: Vec<_> = points(201).into_iter().skip(1).collect();
            idx.insert(&pts);
            let files = idx.dump(dir.path(), &format!("g-{metric:?}")).unwrap();
            let back = HnswIndex::load(dir.path(), &files, 3, metric, params()).unwrap();
            let mut exact = ExactIndex::new(3, metric);
            exact.insert(&pts);
            for (_, q) in pts.iter().step_by(37) {
                let want: Vec<u64> = exact.search(q, 1, None).iter().map(|n| n.key).collect();
                let got: Vec<u64> = back.search(q, 1, None).iter().map(|n| n.key).collect();
                assert_eq!(got, want);
            }
            // Truncate the data file: load must refuse, not panic.
            let data = dir.path().join(format!("{}.hnsw.data", files.basename));
            let bytes = std::fs::read(&data).unwrap();
            std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
            assert!(HnswIndex::load(dir.path(), &files, 3, metric, params()).is_err());
            let lying = GraphFiles { data_bytes: (bytes.len() / 2) as u64, ..files.clone() };
            assert!(HnswIndex::load(dir.path(), &lying, 3, metric, params()).is_err());
            // Same size, different bytes.
            let mut flipped = bytes.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 0xFF;
            std::fs::write(&data, &flipped).unwrap();
            assert!(HnswIndex::load(dir.path(), &files, 3, metric, params()).is_err());
        }
    }
}
