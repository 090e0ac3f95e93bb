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
            quantization: Quantization::Auto,
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
    /// `f16` for a new graph of vectors of at least [`Quantization::WIDE`] coordinates,
    /// `f32` for narrower ones; a saved graph of either kind is kept as it is, and a
    /// Euclidean graph holding a coordinate beyond half precision's range keeps `f32`.
    #[default]
    Auto,
    F32,
    /// IEEE half precision: about three significant digits, up to ±65,504. A Euclidean
    /// graph that gets a coordinate beyond that turns to `f32`, and is kept so when loaded
    /// again; a cosine graph holds each vector scaled to unit length, which never leaves
    /// the range (cosine distance does not change with the scale).
    F16,
    /// USearch scales each vector to unit length before rounding to 8 bits: only its
    /// direction is kept, so this suits cosine distance only.
    I8,
}

impl Quantization {
    /// The width from which [`Quantization::Auto`] keeps the graph's vectors in `f16`. At
    /// 1,024 coordinates (the default export's) the server indexed and served about 1.1x
    /// as fast with an `f16` graph as with `f32`, in half the graph's memory; at 128 there
    /// was no clear difference (BENCHMARKS.md, "Wide vectors in `f16` by default").
    pub const WIDE: usize = 512;

    /// The kind a new graph of `dim`-coordinate vectors gets.
    pub fn resolved(self, dim: usize) -> Self {
        match self {
            Self::Auto if dim >= Self::WIDE => Self::F16,
            Self::Auto => Self::F32,
            other => other,
        }
    }

    fn scalar(self) -> ScalarKind {
        match self {
            Self::Auto | Self::F32 => ScalarKind::F32,
            Self::F16 => ScalarKind::F16,
            Self::I8 => ScalarKind::I8,
        }
    }

    /// The settings' name of the scalar type.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
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
        [Self::Auto, Self::F32, Self::F16, Self::I8]
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| format!("`{s}` is not one of auto, f32, f16, i8"))
    }
}

/// The full-precision vectors a quantised graph ranks its candidates by (the store's).
pub trait FullVectors: Send + Sync {
    /// The vectors of `keys`, in order; `None` for a key without one.
    fn full_vectors(&self, keys: &[u64]) -> Vec<Option<Vec<f32>>>;
}

/// The largest finite half-precision number.
const F16_MAX: f32 = 65_504.0;

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
    /// Where a quantised graph reads full precision (`None`, or an `f32` graph: the
    /// graph's own copy).
    full: Option<Arc<dyn FullVectors>>,
}

impl HnswIndex {
    /// An empty graph sized for about `capacity` vectors (an `auto` quantisation is
    /// [resolved](Quantization::resolved) here).
    pub fn new(dim: usize, metric: Distance, params: HnswParams, capacity: usize) -> Self {
        let params = HnswParams { quantization: params.quantization.resolved(dim), ..params };
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

    /// Ranks the candidates of a quantised graph by the vectors `full` gives, and rebuilds
    /// it from them (an `f32` graph's own copy is full precision already: it keeps using
    /// that).
    pub fn with_full_vectors(mut self, full: Arc<dyn FullVectors>) -> Self {
        self.full = Some(full);
        self
    }

    /// Where candidates are ranked and rebuilds read at full precision: `None` for an
    /// `f32` graph, whose own copy is that.
    fn ranked_by(&self) -> Option<&dyn FullVectors> {
        match self.params.quantization {
            Quantization::F32 | Quantization::Auto => None,
            Quantization::F16 | Quantization::I8 => self.full.as_deref(),
        }
    }

    /// The graph's copy's scalar type, once resolved.
    pub fn quantization(&self) -> Quantization {
        self.params.quantization
    }

    /// A fresh graph with this one's settings holding the live vectors, at full precision
    /// where there is a [`FullVectors`] source (a quantised copy would be rounded twice),
    /// else from this graph's own copy.
    pub fn rebuilt(&self) -> Self {
        self.rebuilt_as(self.params)
    }

    /// Whether inserting `items` turns this `f16` graph to `f32`: the distance is
    /// Euclidean and one of them has a coordinate beyond half precision's range. A caller
    /// that must not block searches for a rebuild swaps in [`HnswIndex::rebuilt_f32`] first.
    pub fn turns_f32(&self, items: &[(u64, Vec<f32>)]) -> bool {
        self.params.quantization == Quantization::F16
            && self.metric == Distance::Euclidean
            && items.iter().any(|(_, v)| v.len() == self.dim && v.iter().any(|x| x.abs() > F16_MAX))
    }

    /// [`HnswIndex::rebuilt`] keeping the vectors in `f32`.
    pub fn rebuilt_f32(&self) -> Self {
        self.rebuilt_as(HnswParams { quantization: Quantization::F32, ..self.params })
    }

    fn rebuilt_as(&self, params: HnswParams) -> Self {
        if params.quantization == Quantization::F32 && self.params.quantization == Quantization::F16 {
            tracing::warn!(
                "a vector has a coordinate beyond half precision's range (±65,504): the HNSW graph keeps its \
                 vectors in f32 from now on (set [hnsw] quantization = \"f32\" to start that way)"
            );
        }
        let keys: Vec<u64> = self.keys.iter().copied().collect();
        let vectors = match self.ranked_by() {
            Some(full) => full.full_vectors(&keys),
            None => keys.iter().map(|&k| self.vector(k)).collect(),
        };
        let live: Vec<(u64, Vec<f32>)> = keys.into_iter().zip(vectors).filter_map(|(k, v)| Some((k, v?))).collect();
        let mut fresh = Self::new(self.dim, self.metric, params, live.len());
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
        // `auto` keeps a saved graph of either kind it may choose; `f16` keeps an `f32`
        // one of Euclidean vectors only if it holds a coordinate beyond half precision's
        // range (checked once loaded), which is what an `f16` graph turns into on
        // inserting one: rebuilding it at every start would only turn it back.
        let asked = params.quantization;
        let kind = match (asked, meta.quantization) {
            (Quantization::Auto | Quantization::F16, ScalarKind::F32) => Quantization::F32,
            (Quantization::Auto, ScalarKind::F16) => Quantization::F16,
            (q, _) => q.resolved(dim),
        };
        let refused = |kind: Quantization| {
            format!(
                "graph file {} stores {:?} vectors, the settings ask for {}",
                files.file,
                meta.quantization,
                kind.name()
            )
        };
        let params = HnswParams { quantization: kind, ..params };
        if meta.quantization != kind.scalar() {
            return Err(refused(kind));
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
        if asked == Quantization::F16 && kind == Quantization::F32 && (metric == Distance::Cosine || !idx.beyond_f16())
        {
            return Err(refused(asked));
        }
        if !idx.holds_unit_copies() {
            return Err(format!(
                "graph file {} holds cosine vectors in f16 as they were given, not scaled to unit length as \
                 this version keeps them",
                files.file
            ));
        }
        Ok(idx)
    }

    /// Whether the graph's copies are as [`Self::in_graph`] makes them: in a cosine `f16`
    /// graph, of unit length (or zero), which [`Self::at_least`] relies on. A graph saved
    /// by an earlier version may hold them as they were given; up to 64 of its vectors are
    /// looked at.
    fn holds_unit_copies(&self) -> bool {
        if self.params.quantization != Quantization::F16 || self.metric != Distance::Cosine {
            return true;
        }
        self.keys.iter().take(64).filter_map(|&k| self.vector(k)).all(|v| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            norm == 0.0 || (norm - 1.0).abs() < 0.01
        })
    }

    /// Whether a live vector of the graph has a coordinate beyond half precision's range.
    fn beyond_f16(&self) -> bool {
        self.keys.iter().any(|&k| self.vector(k).is_some_and(|v| v.iter().any(|x| x.abs() > F16_MAX)))
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
        match self.ranked_by() {
            Some(full) => self.rescored(full, query, nearest(all, rescored_candidates(k)), k),
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
        let depth = if self.ranked_by().is_some() { rescored_candidates(k) } else { k };
        let breadth = ef.unwrap_or(self.params.ef_search).max(depth);
        let query_in_graph = self.in_graph(query);
        let found = self.contexts.with(|| match accept {
            None => self.graph.search(&query_in_graph, breadth),
            Some(accept) => self.graph.filtered_search(&query_in_graph, breadth, accept),
        });
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("an HNSW search failed: {e}");
                return Vec::new();
            }
        };
        if let Some(full) = self.ranked_by() {
            let candidates: Vec<Neighbor> = found
                .keys
                .iter()
                .zip(&found.distances)
                .map(|(&key, &d)| Neighbor { key, distance: self.usearch_distance(d) })
                .collect();
            return self.rescored(full, query, candidates, k);
        }
        let mut v = vec![0f32; self.dim];
        let scored: Vec<Neighbor> = found.keys.iter().filter_map(|&key| self.scored(query, key, &mut v)).collect();
        nearest(scored, k)
    }
}

impl HnswIndex {
    /// A distance of USearch's kernels in the unit of [`distance`] (USearch's Euclidean
    /// kernel leaves out the square root).
    fn usearch_distance(&self, d: f32) -> f32 {
        match self.metric {
            Distance::Euclidean => d.max(0.0).sqrt(),
            Distance::Cosine => d,
        }
    }

    /// The nearest `k` of a quantised graph's `candidates` (their distances by the
    /// graph's copy) by [`distance`] to their full-precision vectors from `full`; a
    /// candidate whose vector it lacks (deleted meanwhile) is dropped. The `k` nearest by
    /// the copy are read first; of the rest only those that [`Self::at_least`] allows to
    /// beat the `k`-th distance found, so the answer is the one reading all of them
    /// would give, from fewer reads of the store.
    fn rescored(
        &self,
        full: &dyn FullVectors,
        query: &[f32],
        mut candidates: Vec<Neighbor>,
        k: usize,
    ) -> Vec<Neighbor> {
        candidates.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        let query_norm = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        let score = |batch: &[Neighbor]| -> Vec<Neighbor> {
            let keys: Vec<u64> = batch.iter().map(|n| n.key).collect();
            keys.iter()
                .zip(full.full_vectors(&keys))
                .filter_map(|(&key, v)| Some(Neighbor { key, distance: distance(self.metric, query, &v?) }))
                .collect()
        };
        let (first, rest) = candidates.split_at(k.min(candidates.len()));
        let mut scored = score(first);
        let kth = if scored.len() < k {
            f32::INFINITY
        } else {
            scored.iter().map(|n| n.distance).fold(f32::NEG_INFINITY, f32::max)
        };
        let contenders: Vec<Neighbor> =
            rest.iter().copied().filter(|n| self.at_least(n.distance, query_norm) <= kth).collect();
        if !contenders.is_empty() {
            scored.extend(score(&contenders));
        }
        nearest(scored, k)
    }

    /// `v` as the graph takes it: scaled to unit length in a half-precision cosine graph
    /// (the distance is the same, every coordinate is within `f16`'s range, none is lost
    /// to underflow, and [`Self::at_least`] can bound the rounding), else as it is. A zero
    /// vector stays zero.
    fn in_graph<'a>(&self, v: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        if self.params.quantization != Quantization::F16 || self.metric != Distance::Cosine {
            return std::borrow::Cow::Borrowed(v);
        }
        let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return std::borrow::Cow::Borrowed(v);
        }
        std::borrow::Cow::Owned(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
    }

    /// A lower bound on the full-precision [`distance`] of a vector whose distance by the
    /// graph's copy is `approx`, from a query of norm `query_norm`.
    ///
    /// For a half-precision graph and Euclidean distance: rounding to `f16` moves each
    /// coordinate by at most `U0 = 2^-11` of itself, so the query and the vector each move
    /// by at most `U0` of their norms (plus `2^-25` a coordinate where `f16` is
    /// subnormal). With `a` the true distance and `a'` the graph's, the triangle
    /// inequality gives `|a - a'| <= u (|q| + |v|) + s <= u (2|q| + a) + s`, as
    /// `|v| <= |q| + a`; so `a >= (a' - 2u|q| - s) / (1 + u)`. `u = 2^-8` is eight times
    /// `U0`, room for the kernels' own `f32` arithmetic: those that subtract before
    /// squaring (USearch's x86 and Arm kernels) err by under `2^-15` of `a` on 1,024
    /// coordinates; one that expands `|q|^2 + |v|^2 - 2 q.v` (NumKong's AVX10.2 kernel)
    /// can lose up to about `2^-8 |q|` to cancellation when `a` is small, a loss that grows
    /// with the square root of the width, so `u` does too beyond 1,024 coordinates. (With
    /// `2^-9`, 10.7 of 42 candidates were read on 1,024-d vectors; with `2^-8`, 11.5.)
    ///
    /// For a half-precision graph and cosine distance, both vectors are unit length in the
    /// graph ([`Self::in_graph`]), and rounding moves each by at most `e = U0 + 2^-25
    /// sqrt(dim)` (as above, with the subnormal part), so it turns each by an angle of at
    /// most `asin(e)`. The angle between the two rounded vectors is then within `2
    /// asin(e)` of the true one, and as `cos` changes by no more than its argument, so is
    /// the distance `1 - cos`: about `2^-10` (the subnormal part is negligible at any
    /// width). The kernels accumulate in `f32` and take `1 / sqrt` to at least `2^-21` (an
    /// estimate refined by Newton steps): on unit vectors under `3 dim 2^-24 + 2^-20`,
    /// `2^-12` at 1,024 coordinates. The bound subtracts `2^-8`: three times the two
    /// together at 1,024 coordinates, 1.6 times at 8,192, beyond which it grows with the
    /// width as the kernels' part does. A graph saved before its copies were scaled is
    /// not loaded (see [`Self::holds_unit_copies`]).
    ///
    /// Any other graph gives no bound (0), nor does a distance that is not finite (a
    /// Euclidean query beyond half precision's range) or a zero query: every such
    /// candidate is read.
    fn at_least(&self, approx: f32, query_norm: f32) -> f32 {
        if self.params.quantization != Quantization::F16 || !approx.is_finite() {
            return 0.0;
        }
        match self.metric {
            Distance::Euclidean => {
                let u = (self.dim as f32 / 1024.0).sqrt().max(1.0) / 256.0;
                let subnormal = 2.0 * (self.dim as f32).sqrt() * 2f32.powi(-24);
                ((approx - 2.0 * u * query_norm - subnormal) / (1.0 + u)).max(0.0)
            }
            Distance::Cosine if query_norm > 0.0 => {
                let margin = (self.dim as f32 / 8192.0).max(1.0) / 256.0;
                (approx - margin).max(0.0)
            }
            Distance::Cosine => 0.0,
        }
    }
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
        if self.turns_f32(items) {
            *self = self.rebuilt_f32();
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
        let v = self.in_graph(v);
        match self.contexts.with(|| self.graph.add(key, &v)) {
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

    /// Full-precision vectors from memory, counting the vectors read.
    struct Counted(std::collections::HashMap<u64, Vec<f32>>, std::sync::atomic::AtomicUsize);

    impl FullVectors for Counted {
        fn full_vectors(&self, keys: &[u64]) -> Vec<Option<Vec<f32>>> {
            self.1.fetch_add(keys.len(), std::sync::atomic::Ordering::Relaxed);
            keys.iter().map(|k| self.0.get(k).cloned()).collect()
        }
    }

    /// Groups of near-duplicates far from the origin: within a group the distances to a
    /// query differ by less than half precision's rounding, so the graph's order of the
    /// candidates is not the true one and only the bound keeps the answers exact.
    fn near_duplicates(groups: usize, per_group: usize, dim: usize) -> Vec<(u64, Vec<f32>)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut out = Vec::new();
        for g in 0..groups {
            let centre: Vec<f32> = (0..dim).map(|_| rng.gen_range(-40.0..40.0)).collect();
            for i in 0..per_group {
                let v = centre.iter().map(|c| c + rng.gen_range(-0.02..0.02)).collect();
                out.push(((g * per_group + i) as u64, v));
            }
        }
        out
    }

    /// Checks a half-precision graph of `pts` compared by `metric` against the exact index:
    /// the same answers, fewer than all candidates read back, and the graph's own order
    /// wrong for most queries (so the bound, not luck, made the answers exact).
    fn check_half_precision_graph(metric: Distance, pts: &[(u64, Vec<f32>)]) {
        let dim = pts[0].1.len();
        let full = Arc::new(Counted(pts.iter().cloned().collect(), Default::default()));
        let f16 = HnswParams { quantization: Quantization::F16, ..params() };
        let mut idx = HnswIndex::new(dim, metric, f16, 10).with_full_vectors(full.clone());
        idx.insert(pts);
        assert_eq!(idx.quantization(), Quantization::F16, "{metric:?}: the graph stays f16");
        let mut exact = ExactIndex::new(dim, metric);
        exact.insert(pts);
        let (mut searches, mut reordered) = (0, 0);
        for (_, q) in pts.iter().step_by(7) {
            let want = exact.search(q, 10, None);
            let before = full.1.load(std::sync::atomic::Ordering::Relaxed);
            let got = idx.search(q, 10, Some(600));
            let read = full.1.load(std::sync::atomic::Ordering::Relaxed) - before;
            assert_eq!(got, want, "{metric:?}: the exact index's keys and distances");
            assert!(read < rescored_candidates(10), "{read} of {} candidates read", rescored_candidates(10));
            assert_eq!(idx.scan(q, 10, &|_| true), want, "{metric:?}: scan");
            let mut v = vec![0f32; dim];
            let copy = nearest(idx.keys.iter().filter_map(|&key| idx.scored(q, key, &mut v)).collect(), 10);
            reordered += usize::from(copy.iter().map(|n| n.key).ne(want.iter().map(|n| n.key)));
            searches += 1;
        }
        assert!(
            reordered * 2 > searches,
            "{metric:?}: only {reordered} of {searches} queries were reordered by rounding"
        );
    }

    #[test]
    fn a_half_precision_graph_reads_fewer_candidates_and_answers_exactly() {
        check_half_precision_graph(Distance::Euclidean, &near_duplicates(20, 30, 64));
    }

    /// Cosine: within a group the directions differ by about as much as half precision's
    /// rounding turns them, and the vectors' lengths span thirteen orders of magnitude, so
    /// that as they are their coordinates would underflow or overflow `f16`. Only the
    /// unit-length copies and the bound keep the answers exact, and the graph stays `f16`.
    #[test]
    fn a_half_precision_cosine_graph_reads_fewer_candidates_and_answers_exactly() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let pts: Vec<(u64, Vec<f32>)> = near_duplicates(20, 30, 64)
            .into_iter()
            .map(|(key, v)| {
                let scale = 10f32.powi(rng.gen_range(-8..=5));
                (key, v.iter().map(|x| x * scale).collect())
            })
            .collect();
        check_half_precision_graph(Distance::Cosine, &pts);
    }

    /// A cosine `f16` graph saved with its vectors as they were given (as an earlier
    /// version did) would break the bound: it is refused, so the gallery rebuilds it.
    #[test]
    fn a_cosine_half_precision_graph_of_unscaled_vectors_is_not_loaded() {
        let dim = 8;
        let pts = random_points(40, dim);
        let keys: Vec<u64> = pts.iter().map(|(k, _)| *k).collect();
        let f16 = HnswParams { quantization: Quantization::F16, ..params() };
        let dir = tempfile::tempdir().unwrap();
        let old = Index::new(&HnswIndex::options(dim, Distance::Cosine, f16)).unwrap();
        old.reserve(64).unwrap();
        for (key, v) in &pts {
            old.add(*key, v).unwrap();
        }
        let path = dir.path().join(GraphFiles::file_name("graph-1"));
        old.save(path.to_str().unwrap()).unwrap();
        let (bytes, sha256) = HnswIndex::measure(&path).unwrap();
        let files = GraphFiles { file: GraphFiles::file_name("graph-1"), bytes, sha256 };
        let err = HnswIndex::load(dir.path(), &files, dim, Distance::Cosine, f16, &keys, 1000).err().unwrap();
        assert!(err.contains("unit length"), "{err}");

        let mut idx = HnswIndex::new(dim, Distance::Cosine, f16, 10);
        idx.insert(&pts);
        let files = idx.dump(dir.path(), "graph-2").unwrap();
        let back = HnswIndex::load(dir.path(), &files, dim, Distance::Cosine, f16, &keys, 1000).unwrap();
        assert_eq!(back.search(&pts[3].1, 1, None)[0].key, pts[3].0);
    }

    #[test]
    fn auto_keeps_wide_vectors_in_half_precision_and_a_saved_graph_as_it_is() {
        let auto = HnswParams { quantization: Quantization::Auto, ..params() };
        let wide = Quantization::WIDE;
        assert_eq!(HnswIndex::new(wide, Distance::Euclidean, auto, 10).quantization(), Quantization::F16);
        assert_eq!(HnswIndex::new(wide - 1, Distance::Euclidean, auto, 10).quantization(), Quantization::F32);
        assert_eq!(HnswIndex::new(wide, Distance::Cosine, auto, 10).quantization(), Quantization::F16);
        // A saved f32 graph of wide vectors (an earlier default) is loaded, not rebuilt.
        let f32s = HnswParams { quantization: Quantization::F32, ..params() };
        let mut idx = HnswIndex::new(wide, Distance::Euclidean, f32s, 10);
        let pts = random_points(50, wide);
        idx.insert(&pts);
        let dir = tempfile::tempdir().unwrap();
        let files = idx.dump(dir.path(), "graph-1").unwrap();
        let keys: Vec<u64> = pts.iter().map(|(k, _)| *k).collect();
        let back = HnswIndex::load(dir.path(), &files, wide, Distance::Euclidean, auto, &keys, 1000).unwrap();
        assert_eq!(back.quantization(), Quantization::F32);
        let f16 = HnswParams { quantization: Quantization::F16, ..params() };
        assert!(HnswIndex::load(dir.path(), &files, wide, Distance::Euclidean, f16, &keys, 1000).is_err());
    }

    #[test]
    fn a_coordinate_beyond_half_precision_turns_the_graph_to_f32() {
        let dim = 8;
        let mut pts = random_points(40, dim);
        let f16 = HnswParams { quantization: Quantization::F16, ..params() };
        pts[30].1[3] = 1e6;
        // The store's vectors: a rebuild reads them, not the rounded copy.
        let full = Arc::new(Counted(pts.iter().cloned().collect(), Default::default()));
        let mut idx = HnswIndex::new(dim, Distance::Euclidean, f16, 10).with_full_vectors(full);
        idx.insert(&pts[..20]);
        assert_eq!(idx.quantization(), Quantization::F16);
        idx.insert(&pts[20..]);
        assert_eq!((idx.quantization(), idx.len()), (Quantization::F32, 40));
        let far = pts[30].1.clone();
        assert_eq!(idx.search(&far, 1, None), vec![Neighbor { key: pts[30].0, distance: 0.0 }]);

        // Saved and loaded with `f16` still asked: kept in `f32`, not rebuilt at every
        // start; an `f32` graph within range is still refused (then rebuilt in `f16`).
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<u64> = pts.iter().map(|(k, _)| *k).collect();
        let bound = keys.iter().max().unwrap() + 1;
        let files = idx.dump(dir.path(), "graph-1").unwrap();
        let back = HnswIndex::load(dir.path(), &files, dim, Distance::Euclidean, f16, &keys, bound).unwrap();
        assert_eq!((back.quantization(), back.len()), (Quantization::F32, 40));
        let f32 = HnswParams { quantization: Quantization::F32, ..params() };
        let mut within = HnswIndex::new(dim, Distance::Euclidean, f32, 10);
        within.insert(&pts[..20]);
        let files = within.dump(dir.path(), "graph-2").unwrap();
        let err = HnswIndex::load(dir.path(), &files, dim, Distance::Euclidean, f16, &keys[..20], bound).err().unwrap();
        assert!(err.contains("the settings ask for f16"), "{err}");
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
