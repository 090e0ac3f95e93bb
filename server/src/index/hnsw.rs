//! The HNSW graph index (USearch; the only file that uses that crate). Removed vectors
//! leave search results at once: USearch marks their nodes free, still linked, and gives
//! a later insert the free node; [`HnswIndex::rebuilt`] builds a fresh graph once free
//! nodes pile up, since the graph walks through them for nothing.
//!
//! The graph may keep its copy of the vectors in half precision or as 8-bit integers
//! ([`Quantization`]); it then finds candidates on that copy and ranks them by their
//! full-precision vectors, read from the store ([`FullVectors`]).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use contract::Distance;
use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::{distance, nearest, Accept, Neighbor, VectorRead, VectorWrite};

/// Graph construction, search and maintenance parameters (the `[hnsw]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HnswParams {
    /// Links per node (`M`).
    pub m: usize,
    /// Search breadth while inserting (`efConstruction`). The default, 128 (USearch's own),
    /// built a graph of 60,000 real 1,024-d embeddings 1.4x faster than 200 did, with the
    /// same recall@10 at the default `ef_search` (BENCHMARKS.md, "ef_construction on real
    /// embeddings").
    pub ef_construction: usize,
    /// Default search breadth; a query may override it with `ef`.
    pub ef_search: usize,
    /// Rebuild the graph once removed points exceed this fraction of it.
    pub rebuild_tombstone_ratio: f64,
    /// How the graph stores its copy of each vector.
    pub quantization: Quantization,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 128,
            ef_search: 64,
            rebuild_tombstone_ratio: 0.2,
            quantization: Quantization::F32,
        }
    }
}

/// The scalar type of the graph's copy of the vectors (`[hnsw] quantization`). With `f16`
/// or `i8` the graph takes a half or a quarter of the memory of `f32`, its search finds
/// candidates by the approximate vectors, and the candidates are ranked by the full
/// precision vectors of the store, so the distances answered are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    #[default]
    F32,
    /// IEEE half precision: any range, about three significant digits.
    F16,
    /// USearch scales each vector to unit length before rounding to 8 bits: only its
    /// direction is kept, so this suits cosine distance only.
    I8,
}

impl Quantization {
    fn scalar(self) -> ScalarKind {
        match self {
            Self::F32 => ScalarKind::F32,
            Self::F16 => ScalarKind::F16,
            Self::I8 => ScalarKind::I8,
        }
    }

    /// The settings' name of the scalar type.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::I8 => "i8",
        }
    }

    /// Whether a graph of this kind can serve vectors compared by `metric`.
    pub fn check(self, metric: Distance) -> Result<(), String> {
        if self == Self::I8 && metric != Distance::Cosine {
            return Err("[hnsw] quantization = \"i8\" keeps only each vector's direction, which suits cosine \
                        distance only, and this collection's model gives Euclidean vectors: use \"f16\", or a \
                        model exported with `trainer export --normalize`"
                .into());
        }
        Ok(())
    }
}

impl std::str::FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::F32, Self::F16, Self::I8]
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| format!("`{s}` is not one of f32, f16, i8"))
    }
}

/// The full-precision vectors a quantised graph ranks its candidates by (the store's).
pub trait FullVectors: Send + Sync {
    /// The vectors of `keys`, in order; `None` for a key without one.
    fn full_vectors(&self, keys: &[u64]) -> Vec<Option<Vec<f32>>>;
}

/// Candidates a quantised graph ranks by full precision, for `k` wanted: enough that the
/// rounding of the approximate distances does not push a true neighbour out.
fn rescored_candidates(k: usize) -> usize {
    (4 * k).max(k + 32)
}

/// The file a graph is saved to, with what it must still be when it is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphFiles {
    /// File name in the index directory: `graph-<stamp>.usearch`.
    pub file: String,
    pub bytes: u64,
    /// SHA-256 of the file, checked before loading: USearch reads a graph file as it was
    /// written, without validating it, so only byte-identical files are handed to it.
    pub sha256: String,
}

impl GraphFiles {
    /// Prefix of every graph file in an index directory, current or stale (earlier
    /// versions wrote `graph-<stamp>.hnsw.graph` and `.hnsw.data`).
    pub const PREFIX: &'static str = "graph-";

    /// The file a graph called `basename` is saved to.
    pub fn file_name(basename: &str) -> String {
        format!("{basename}.usearch")
    }

    /// True for the name of a graph file this or an earlier version wrote, current or
    /// stale: `graph-<digits>.usearch`, its temporary `.graph-<digits>.usearch.tmp`, and
    /// the `graph-<digits>.hnsw.graph` / `.hnsw.data` dumps of hnsw_rs. Nothing else
    /// (another collection's snapshot, a user's file) matches.
    pub fn is_graph_file(name: &str) -> bool {
        let stamped = |rest: &str, suffixes: &[&str]| {
            rest.strip_prefix(Self::PREFIX).is_some_and(|rest| {
                suffixes.iter().any(|suffix| {
                    rest.strip_suffix(suffix).is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
            })
        };
        match name.strip_prefix('.') {
            Some(hidden) => stamped(hidden, &[".usearch.tmp"]),
            None => stamped(name, &[".usearch", ".hnsw.graph", ".hnsw.data"]),
        }
    }
}

/// Searches and inserts that may run at once. USearch keeps one scratch context per
/// concurrent caller, reserved ahead and refused beyond; [`Contexts`] makes callers past
/// this many wait instead.
const CONTEXTS: usize = 64;

/// Hands out USearch's per-caller contexts: at most [`CONTEXTS`] calls into the index at
/// a time.
struct Contexts {
    busy: Mutex<usize>,
    freed: Condvar,
}

impl Contexts {
    fn new() -> Self {
        Self { busy: Mutex::new(0), freed: Condvar::new() }
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            while *busy >= CONTEXTS {
                busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
            }
            *busy += 1;
        }
        let _release = Release(self);
        f()
    }
}

/// Gives a context back when the call that took it ends, however it ends.
struct Release<'a>(&'a Contexts);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

/// Approximate nearest-neighbour search on an HNSW graph.
pub struct HnswIndex {
    graph: Index,
    contexts: Contexts,
    params: HnswParams,
    dim: usize,
    metric: Distance,
    /// Every live key in the graph.
    keys: HashSet<u64>,
    /// Removed keys whose nodes no insert has taken over yet.
    removed: usize,
    /// Where a quantised graph reads full precision (`None`: the graph's own copy).
    full: Option<Arc<dyn FullVectors>>,
}

impl HnswIndex {
    /// An empty graph sized for about `capacity` vectors.
    pub fn new(dim: usize, metric: Distance, params: HnswParams, capacity: usize) -> Self {
        let graph = Index::new(&Self::options(dim, metric, params)).expect("USearch accepts these options");
        let mut idx = Self {
            graph,
            contexts: Contexts::new(),
            params,
            dim,
            metric,
            keys: HashSet::new(),
            removed: 0,
            full: None,
        };
        idx.reserve(capacity.max(1024));
        idx
    }

    fn options(dim: usize, metric: Distance, params: HnswParams) -> IndexOptions {
        IndexOptions {
            dimensions: dim,
            metric: match metric {
                Distance::Euclidean => MetricKind::L2sq,
                Distance::Cosine => MetricKind::Cos,
            },
            quantization: params.quantization.scalar(),
            connectivity: params.m,
            expansion_add: params.ef_construction,
            // A search's breadth is the number of results it asks for when that is
            // larger; each query asks for `ef` of them (see [`HnswIndex::walk`]).
            expansion_search: 1,
            multi: false,
        }
    }

    /// Room for at least `capacity` vectors, growing geometrically.
    fn reserve(&mut self, capacity: usize) {
        if capacity <= self.graph.capacity() {
            return;
        }
        let target = capacity.max(self.graph.capacity() * 2);
        if let Err(e) = self.graph.reserve_capacity_and_threads(target, CONTEXTS) {
            panic!("reserving room for {target} vectors in the HNSW graph failed (out of memory?): {e}");
        }
    }

    /// True when `key` is in the graph (and not removed).
    pub fn contains(&self, key: u64) -> bool {
        self.keys.contains(&key)
    }

    /// Bytes the graph holds in memory (USearch's own count: vectors and links).
    pub fn memory_bytes(&self) -> usize {
        self.graph.memory_usage()
    }

    /// Free nodes: vectors removed and not yet replaced by an insert.
    pub fn tombstones(&self) -> usize {
        self.removed
    }

    /// Nodes in the graph, free ones included.
    pub fn graph_len(&self) -> usize {
        self.keys.len() + self.removed
    }

    /// True when free nodes exceed `ratio` of the graph.
    pub fn needs_rebuild(&self, ratio: f64) -> bool {
        self.removed > 0 && self.removed as f64 > ratio * self.graph_len() as f64
    }

    /// Ranks the candidates of a quantised graph by the vectors `full` gives (an `f32`
    /// graph's own copy is full precision already: it keeps using that).
    pub fn with_full_vectors(mut self, full: Arc<dyn FullVectors>) -> Self {
        if self.params.quantization != Quantization::F32 {
            self.full = Some(full);
        }
        self
    }

    /// A fresh graph with this one's settings holding the live vectors, at full precision
    /// where there is a [`FullVectors`] source (a quantised copy would be rounded twice),
    /// else from this graph's own copy.
    pub fn rebuilt(&self) -> Self {
        let keys: Vec<u64> = self.keys.iter().copied().collect();
        let vectors = match &self.full {
            Some(full) => full.full_vectors(&keys),
            None => keys.iter().map(|&k| self.vector(k)).collect(),
        };
        let live: Vec<(u64, Vec<f32>)> = keys.into_iter().zip(vectors).filter_map(|(k, v)| Some((k, v?))).collect();
        let mut fresh = Self::new(self.dim, self.metric, self.params, live.len());
        fresh.insert(&live);
        fresh.full = self.full.clone();
        fresh
    }

    /// The stored copy of `key`'s vector.
    fn vector(&self, key: u64) -> Option<Vec<f32>> {
        let mut v = vec![0f32; self.dim];
        match self.graph.get(key, &mut v) {
            Ok(1) => Some(v),
            _ => None,
        }
    }

    /// Saves the graph to `dir` as `basename` (written under a temporary name, then
    /// renamed) and returns what [`HnswIndex::load`] checks.
    pub fn dump(&self, dir: &Path, basename: &str) -> Result<GraphFiles, String> {
        let file = GraphFiles::file_name(basename);
        let path = dir.join(&file);
        let tmp = dir.join(format!(".{file}.tmp"));
        let tmp_str = tmp.to_str().ok_or_else(|| format!("{} is not valid UTF-8", tmp.display()))?;
        self.contexts
            .with(|| self.graph.save(tmp_str))
            .map_err(|e| format!("saving the HNSW graph to {} failed: {e}", tmp.display()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("syncing {} failed: {e}", tmp.display()))?;
        let (bytes, sha256) = Self::measure(&tmp).ok_or_else(|| format!("{} is unreadable", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("renaming {} failed: {e}", tmp.display()))?;
        Ok(GraphFiles { file, bytes, sha256 })
    }

    fn measure(path: &Path) -> Option<(u64, String)> {
        let mut f = std::fs::File::open(path).ok()?;
        let bytes = f.metadata().ok()?.len();
        Some((bytes, contract::hash::sha256_hex_reader(&mut f).ok()?))
    }

    /// Loads a graph saved by [`HnswIndex::dump`] and keeps the points among `live`: the
    /// keys the database holds now. Points removed from the database after the save are
    /// removed here: USearch cannot list its keys, so every key below `key_bound` (the
    /// database's next slot: no key was ever given at or above it) is asked for. Fails
    /// (never crashes) when the file is missing or changed, of another distance or
    /// dimension, or holds keys at or above `key_bound`.
    pub fn load(
        dir: &Path,
        files: &GraphFiles,
        dim: usize,
        metric: Distance,
        params: HnswParams,
        live: &[u64],
        key_bound: u64,
    ) -> Result<Self, String> {
        let path = dir.join(&files.file);
        match Self::measure(&path) {
            None => return Err(format!("graph file {} is missing", files.file)),
            Some((bytes, _)) if bytes != files.bytes => {
                return Err(format!("graph file {} has changed size since it was written", files.file))
            }
            Some((_, sha)) if sha != files.sha256 => {
                return Err(format!("graph file {} has changed since it was written", files.file))
            }
            Some(_) => {}
        }
        let path_str = path.to_str().ok_or_else(|| format!("{} is not valid UTF-8", path.display()))?;
        let meta = Index::metadata(path_str).map_err(|e| format!("graph file {} cannot be read: {e}", files.file))?;
        if meta.dimensions != dim as u64 {
            return Err(format!(
                "graph file {} holds {}-dimensional vectors, expected {dim}",
                files.file, meta.dimensions
            ));
        }
        if meta.quantization != params.quantization.scalar() {
            return Err(format!(
                "graph file {} stores {:?} vectors, the settings ask for {}",
                files.file,
                meta.quantization,
                params.quantization.name()
            ));
        }
        let mut idx = Self::new(dim, metric, params, 0);
        idx.removed = usize::try_from(meta.count_deleted).unwrap_or(0);
        idx.graph.load(path_str).map_err(|e| format!("graph file {} cannot be read: {e}", files.file))?;
        if idx.graph.metric_kind() != Self::options(dim, metric, params).metric {
            return Err(format!("graph file {} was built for another distance than {metric:?}", files.file));
        }
        idx.graph.change_expansion_add(params.ef_construction);
        idx.graph.change_expansion_search(1);
        let room = idx.graph.size().max(1024) + 1024;
        idx.graph
            .reserve_capacity_and_threads(room, CONTEXTS)
            .map_err(|e| format!("reserving room for graph file {} failed: {e}", files.file))?;
        idx.keys = live.iter().copied().filter(|&k| idx.graph.contains(k)).collect();
        if idx.keys.len() != idx.graph.size() {
            let live: HashSet<u64> = live.iter().copied().collect();
            let gone: Vec<u64> = (0..key_bound).filter(|k| !live.contains(k) && idx.graph.contains(*k)).collect();
            for key in gone {
                idx.keys.insert(key);
                idx.remove(key);
            }
        }
        if idx.keys.len() != idx.graph.size() {
            return Err(format!(
                "graph file {} holds {} points under keys the database never gave",
                files.file,
                idx.graph.size().abs_diff(idx.keys.len())
            ));
        }
        Ok(idx)
    }
}

impl VectorRead for HnswIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Vec<Neighbor> {
        self.walk(query, k, ef, None)
    }

    fn search_filtered(&self, query: &[f32], k: usize, ef: Option<usize>, accept: &Accept) -> Vec<Neighbor> {
        self.walk(query, k, ef, Some(accept))
    }

    fn scan(&self, query: &[f32], k: usize, accept: &Accept) -> Vec<Neighbor> {
        if query.len() != self.dim {
            return Vec::new();
        }
        let mut v = vec![0f32; self.dim];
        let all: Vec<Neighbor> =
            self.keys.iter().filter(|&&key| accept(key)).filter_map(|&key| self.scored(query, key, &mut v)).collect();
        match &self.full {
            Some(full) => {
                let keys: Vec<u64> = nearest(all, rescored_candidates(k)).iter().map(|n| n.key).collect();
                rescored(full.as_ref(), self.metric, query, &keys, k)
            }
            None => nearest(all, k),
        }
    }
}

impl HnswIndex {
    /// One graph search of breadth `ef`, collecting only the keys `accept` lets through.
    /// USearch ranks by its own kernels (squared Euclidean, `1 - cos`), whose rounding
    /// can order near-ties differently; all `ef` found are re-scored with [`distance`],
    /// the one every index answers in, and the nearest `k` of them kept. A quantised
    /// graph searches at least [`rescored_candidates`] deep and re-scores them at full
    /// precision.
    fn walk(&self, query: &[f32], k: usize, ef: Option<usize>, accept: Option<&Accept>) -> Vec<Neighbor> {
        if k == 0 || self.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        let depth = if self.full.is_some() { rescored_candidates(k) } else { k };
        let breadth = ef.unwrap_or(self.params.ef_search).max(depth);
        let found = self.contexts.with(|| match accept {
            None => self.graph.search(query, breadth),
            Some(accept) => self.graph.filtered_search(query, breadth, accept),
        });
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("an HNSW search failed: {e}");
                return Vec::new();
            }
        };
        if let Some(full) = &self.full {
            return rescored(full.as_ref(), self.metric, query, &found.keys, k);
        }
        let mut v = vec![0f32; self.dim];
        let scored: Vec<Neighbor> = found.keys.iter().filter_map(|&key| self.scored(query, key, &mut v)).collect();
        nearest(scored, k)
    }
}

/// The nearest `k` of the candidate `keys` by [`distance`] to their full-precision vectors
/// from `full`; a candidate whose vector it lacks (deleted meanwhile) is dropped.
fn rescored(full: &dyn FullVectors, metric: Distance, query: &[f32], keys: &[u64], k: usize) -> Vec<Neighbor> {
    let scored = keys
        .iter()
        .zip(full.full_vectors(keys))
        .filter_map(|(&key, v)| Some(Neighbor { key, distance: distance(metric, query, &v?) }))
        .collect();
    nearest(scored, k)
}

impl HnswIndex {
    /// `key` at its [`distance`] from `query`, from the graph's copy of its vector (read
    /// into `buf`, `[dim]`).
    fn scored(&self, query: &[f32], key: u64, buf: &mut [f32]) -> Option<Neighbor> {
        match self.graph.get(key, buf) {
            Ok(1) => Some(Neighbor { key, distance: distance(self.metric, query, buf) }),
            _ => None,
        }
    }
}

impl VectorWrite for HnswIndex {
    fn insert(&mut self, items: &[(u64, Vec<f32>)]) {
        let fresh: Vec<&(u64, Vec<f32>)> =
            items.iter().filter(|(k, v)| v.len() == self.dim && !self.keys.contains(k)).collect();
        if fresh.is_empty() {
            return;
        }
        self.reserve(self.graph.size() + fresh.len());
        // One after the other: USearch's concurrent inserts can leave a node linked in
        // only by edges a neighbour later drops, never found again (unum-cloud/USearch
        // issue 735, open); with parallel inserts the exactness test below failed about
        // one run in three.
        let added: Vec<u64> = fresh.iter().filter(|(k, v)| self.add(*k, v)).map(|(k, _)| *k).collect();
        // USearch gives new vectors the free nodes first.
        self.removed = self.removed.saturating_sub(added.len());
        self.keys.extend(added);
    }

    fn remove(&mut self, key: u64) -> bool {
        if !self.keys.remove(&key) {
            return false;
        }
        match self.contexts.with(|| self.graph.remove(key)) {
            Ok(_) => self.removed += 1,
            // Still in the graph, so searches may find it: the gallery drops hits it no
            // longer has a record for, and the next rebuild leaves it out.
            Err(e) => tracing::warn!(key, "the HNSW graph could not remove a vector: {e}"),
        }
        true
    }
}

impl HnswIndex {
    /// Adds one vector; false (with a warning) when USearch refuses it.
    fn add(&self, key: u64, v: &[f32]) -> bool {
        match self.contexts.with(|| self.graph.add(key, v)) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(key, "the HNSW graph refused a vector: {e}");
                false
            }
        }
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
    fn removed_points_leave_results_and_rebuild_drops_them() {
        let mut idx = HnswIndex::new(3, Distance::Euclidean, params(), 100);
        let pts = points(300);
        idx.insert(&pts);
        let q = pts[10].1.clone();
        assert_eq!(idx.search(&q, 1, None)[0].key, pts[10].0);
        assert!(idx.remove(pts[10].0));
        assert!(!idx.remove(pts[10].0));
        assert!(idx.search(&q, 5, None).iter().all(|n| n.key != pts[10].0));
        assert!(idx.scan(&q, 5, &|_| true).iter().all(|n| n.key != pts[10].0));
        assert_eq!(idx.len(), 299);
        assert!(idx.needs_rebuild(0.0));
        let fresh = idx.rebuilt();
        assert_eq!((fresh.graph_len(), fresh.tombstones(), fresh.len()), (299, 0, 299));
        assert!(fresh.search(&q, 5, None).iter().all(|n| n.key != pts[10].0));
    }

    /// `n` vectors of `dim` pseudo-random coordinates in [-1, 1), keys 1, 4, 7, ...
    fn random_points(n: usize, dim: usize) -> Vec<(u64, Vec<f32>)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        (0..n).map(|i| (i as u64 * 3 + 1, (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect())).collect()
    }

    #[test]
    fn answers_match_the_exact_index_with_and_without_filters() {
        for metric in [Distance::Euclidean, Distance::Cosine] {
            let pts = random_points(600, 16);
            let mut idx = HnswIndex::new(16, metric, params(), 10);
            // Inserted in two batches (the second grows the graph past its first room).
            idx.insert(&pts[..50]);
            idx.insert(&pts[50..]);
            let mut exact = ExactIndex::new(16, metric);
            exact.insert(&pts);
            let odd = |k: u64| k % 2 == 1;
            for (_, q) in pts.iter().step_by(23) {
                let want = exact.search(q, 5, None);
                let got = idx.search(q, 5, Some(300));
                assert_eq!(got, want, "{metric:?}: the same keys at the same distances");
                let want = exact.scan(q, 5, &odd);
                assert_eq!(idx.search_filtered(q, 5, Some(300), &odd), want, "{metric:?} filtered");
                assert_eq!(idx.scan(q, 5, &odd), want, "{metric:?} scan");
            }
        }
    }

    #[test]
    fn saved_graphs_reload_the_same_answers_and_bad_files_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        for metric in [Distance::Euclidean, Distance::Cosine] {
            let mut idx = HnswIndex::new(3, metric, params(), 100);
            let pts: Vec<_> = points(201).into_iter().skip(1).collect();
            idx.insert(&pts);
            let files = idx.dump(dir.path(), &format!("graph-{metric:?}")).unwrap();
            let keys: Vec<u64> = pts.iter().map(|(k, _)| *k).collect();
            let bound = keys.iter().max().unwrap() + 1;
            let back = HnswIndex::load(dir.path(), &files, 3, metric, params(), &keys, bound).unwrap();
            assert_eq!(back.len(), pts.len());
            for (_, q) in pts.iter().step_by(37) {
                assert_eq!(back.search(q, 3, None), idx.search(q, 3, None));
            }
            // A reloaded graph takes inserts and removals like a fresh one.
            let mut back = back;
            back.insert(&[(9_999, vec![100.0, 100.0, 1.0])]);
            assert_eq!(back.search(&[100.0, 100.0, 1.0], 1, None)[0].key, 9_999);
            assert!(back.remove(9_999));

            let other = if metric == Distance::Euclidean { Distance::Cosine } else { Distance::Euclidean };
            assert!(HnswIndex::load(dir.path(), &files, 3, other, params(), &keys, bound).is_err(), "another distance");
            assert!(
                HnswIndex::load(dir.path(), &files, 4, metric, params(), &keys, bound).is_err(),
                "another dimension"
            );
            let f16 = HnswParams { quantization: Quantization::F16, ..params() };
            let err = HnswIndex::load(dir.path(), &files, 3, metric, f16, &keys, bound).err().unwrap();
            assert!(err.contains("the settings ask for f16"), "another quantization: {err}");
            // A point removed from the database after the save leaves the reloaded graph;
            // keys the database never gave make the file unusable.
            let gone = HnswIndex::load(dir.path(), &files, 3, metric, params(), &keys[1..], bound).unwrap();
            assert_eq!((gone.len(), gone.tombstones()), (keys.len() - 1, 1));
            assert!(gone.search(&pts[0].1, 3, None).iter().all(|n| n.key != keys[0]));
            assert!(HnswIndex::load(dir.path(), &files, 3, metric, params(), &keys[1..], 0).is_err());

            // Truncated, or same size with different bytes: refused before USearch reads it.
            let path = dir.path().join(&files.file);
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            assert!(HnswIndex::load(dir.path(), &files, 3, metric, params(), &keys, bound).is_err());
            let mut flipped = bytes.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 0xFF;
            std::fs::write(&path, &flipped).unwrap();
            assert!(HnswIndex::load(dir.path(), &files, 3, metric, params(), &keys, bound).is_err());
            std::fs::remove_file(&path).unwrap();
            assert!(HnswIndex::load(dir.path(), &files, 3, metric, params(), &keys, bound).is_err());
        }
    }

    #[test]
    fn only_graph_files_are_graph_files() {
        for yes in ["graph-1796.usearch", ".graph-1796.usearch.tmp", "graph-17.hnsw.graph", "graph-17.hnsw.data"] {
            assert!(GraphFiles::is_graph_file(yes), "{yes}");
        }
        for no in [
            "graph-20261203T101500Z.snapshot.tar", // a collection named `graph`'s snapshot
            "graph-notes.txt",
            "graph-.usearch",
            "graph-12.usearch.tmp",
            ".graph-12.usearch",
            "images.redb",
        ] {
            assert!(!GraphFiles::is_graph_file(no), "{no}");
        }
    }

    #[test]
    fn inserts_take_over_free_nodes() {
        let mut idx = HnswIndex::new(3, Distance::Euclidean, params(), 100);
        let pts = points(100);
        idx.insert(&pts[..90]);
        for (k, _) in &pts[..10] {
            assert!(idx.remove(*k));
        }
        assert_eq!((idx.len(), idx.tombstones(), idx.graph_len()), (80, 10, 90));
        idx.insert(&pts[90..96]);
        assert_eq!((idx.len(), idx.tombstones(), idx.graph_len()), (86, 4, 90));
        let dir = tempfile::tempdir().unwrap();
        let files = idx.dump(dir.path(), "graph-1").unwrap();
        let live: Vec<u64> = pts[10..96].iter().map(|(k, _)| *k).collect();
        let back = HnswIndex::load(dir.path(), &files, 3, Distance::Euclidean, params(), &live, 1000).unwrap();
        assert_eq!((back.len(), back.tombstones()), (86, 4), "free nodes are counted after a reload too");
    }

    #[test]
    fn more_concurrent_searches_than_contexts_wait_instead_of_failing() {
        let mut idx = HnswIndex::new(3, Distance::Euclidean, params(), 100);
        let pts = points(500);
        idx.insert(&pts);
        let idx = &idx;
        std::thread::scope(|s| {
            for t in 0..CONTEXTS + 16 {
                let q = pts[t % pts.len()].clone();
                s.spawn(move || {
                    for _ in 0..50 {
                        assert_eq!(idx.search(&q.1, 1, None)[0].key, q.0);
                    }
                });
            }
        });
    }
}
