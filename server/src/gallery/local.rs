//! The embedded gallery: the durable store plus the in-memory vector index over it. Inserts are
//! committed to the store before they reach the index (and before they are acknowledged);
//! at start the HNSW graph is reloaded from its dump and caught up with the store, or
//! rebuilt from the stored vectors.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    check_dim, merge_patch, validate_id, Found, Gallery, GalleryChange, GalleryStats, Hit, IndexKind, Item, Page,
    Query, Strategy,
};
use crate::filter::Filter;
use crate::index::{ExactIndex, GraphFiles, HnswIndex, HnswParams, Neighbor, Quantization, VectorRead, VectorWrite};
use crate::rerank;
use crate::store::{Change, GraphState, IndexSpec, NewRecord, PathRecord, PathState, Record, Store, StoredItem};
use crate::{Error, Result};

/// A filter estimated to pass less than this fraction of the items is answered by
/// scanning the items it passes instead of walking the graph.
pub const SCAN_BELOW_FRACTION: f64 = 0.02;
/// Items whose metadata is tried to estimate what fraction a filter passes.
const FILTER_SAMPLE: usize = 1024;

enum Backend {
    Exact(ExactIndex),
    Hnsw(HnswIndex),
}

/// What searches read: the vector index and, for filters, hits and listings, every live
/// item's record by slot and its slot by id.
struct Live {
    backend: Backend,
    records: HashMap<u64, Record>,
    slots: BTreeMap<String, u64>,
}

impl Live {
    fn forget(&mut self, slot: u64) {
        self.backend.write().remove(slot);
        if let Some(r) = self.records.remove(&slot) {
            if self.slots.get(&r.id) == Some(&slot) {
                self.slots.remove(&r.id);
            }
        }
    }

    /// Estimated fraction of the items `filter` passes, from a sample of their metadata.
    fn pass_fraction(&self, filter: &Filter) -> f64 {
        let sample = self.records.len().min(FILTER_SAMPLE);
        if sample == 0 {
            return 0.0;
        }
        let passed = self.records.values().take(sample).filter(|r| filter.matches(&r.metadata)).count();
        passed as f64 / sample as f64
    }
}

impl Backend {
    fn read(&self) -> &dyn VectorRead {
        match self {
            Backend::Exact(i) => i,
            Backend::Hnsw(i) => i,
        }
    }

    fn write(&mut self) -> &mut dyn VectorWrite {
        match self {
            Backend::Exact(i) => i,
            Backend::Hnsw(i) => i,
        }
    }
}

/// Durable images plus the index that searches them.
pub struct LocalGallery {
    /// Shared with a quantised graph, which ranks its candidates by the stored vectors.
    store: Arc<Store>,
    live: RwLock<Live>,
    /// Serialises writers so the store and the index see changes in the same order.
    writer: Mutex<()>,
    dir: PathBuf,
    spec: IndexSpec,
    rebuild_ratio: f64,
    /// Set while the collection is being re-embedded: writes are refused, reads go on.
    frozen: std::sync::atomic::AtomicBool,
}

impl LocalGallery {
    /// Opens (creating when absent) the gallery in `dir` for vectors described by `spec`.
    pub fn open(dir: &Path, spec: IndexSpec, hnsw: &HnswParams, kind: IndexKind) -> Result<Self> {
        Self::open_as(dir, spec, None, hnsw, kind)
    }

    /// Like [`Gallery::open`], also accepting an index that names the model `also` (see
    /// [`Store::check_spec`]).
    pub fn open_as(
        dir: &Path,
        spec: IndexSpec,
        also: Option<&str>,
        hnsw: &HnswParams,
        kind: IndexKind,
    ) -> Result<Self> {
        let store = Arc::new(Store::open(dir)?);
        store.check_spec(&spec, also)?;
        let params = *hnsw;
        params.quantization.check(spec.distance).map_err(|reason| Error::Settings {
            source_name: format!("the settings of the collection in {}", dir.display()),
            reason,
        })?;
        let backend = match kind {
            IndexKind::Exact => {
                let mut idx = ExactIndex::new(spec.dim, spec.distance);
                idx.insert(&store.vectors()?);
                Backend::Exact(idx)
            }
            IndexKind::Hnsw => Backend::Hnsw(Self::restore_graph(&store, dir, &spec, params)?),
        };
        let records = store.records_by_slot()?;
        let slots = records.iter().map(|(slot, r)| (r.id.clone(), *slot)).collect();
        let gallery = Self {
            store,
            live: RwLock::new(Live { backend, records, slots }),
            writer: Mutex::new(()),
            dir: dir.to_path_buf(),
            spec,
            rebuild_ratio: hnsw.rebuild_tombstone_ratio,
            frozen: std::sync::atomic::AtomicBool::new(false),
        };
        gallery.rebuild_if_needed()?;
        Ok(gallery)
    }

    /// The saved graph caught up with the store (only the vectors it lacks are read), or
    /// a graph built from every stored vector when there is no usable saved one.
    fn restore_graph(store: &Arc<Store>, dir: &Path, spec: &IndexSpec, params: HnswParams) -> Result<HnswIndex> {
        let full: Arc<dyn crate::index::FullVectors> = store.clone();
        let slots = store.vector_slots()?;
        let loaded = match store.graph() {
            Ok(Some(state)) => {
                match HnswIndex::load(dir, &state.files, spec.dim, spec.distance, params, &slots, store.next_slot()?) {
                    Ok(g) => Some(g),
                    Err(reason) => {
                        tracing::warn!("rebuilding the HNSW graph from the stored vectors: {reason}");
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("rebuilding the HNSW graph: {e}");
                None
            }
        };
        let Some(mut graph) = loaded.map(|g| g.with_full_vectors(full.clone())) else {
            let items = store.vectors()?;
            let mut g = HnswIndex::new(spec.dim, spec.distance, params, items.len()).with_full_vectors(full);
            g.insert(&items);
            tracing::info!(points = items.len(), "built the HNSW graph from the stored vectors");
            return Ok(g);
        };
        let missing: Vec<u64> = slots.into_iter().filter(|&s| !graph.contains(s)).collect();
        let vectors = store.vectors_of(&missing)?;
        let items: Vec<(u64, Vec<f32>)> =
            missing.iter().zip(vectors).filter_map(|(&slot, v)| Some((slot, v?))).collect();
        graph.insert(&items);
        tracing::info!(points = graph.len(), caught_up = items.len(), "reloaded the HNSW graph");
        Ok(graph)
    }

    fn check_writable(&self) -> Result<()> {
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Upgrading);
        }
        Ok(())
    }

    fn find_excluding(&self, query: &Query, exclude: Option<u64>) -> Result<Found> {
        check_dim(&self.spec, &query.vector)?;
        if query.vector.iter().any(|x| !x.is_finite()) {
            return Err(Error::BadRequest("the query vector contains NaN or infinite values".into()));
        }
        let paged = query.offset.saturating_add(query.k);
        // Re-ranking orders a deeper list of candidates, then pages through it.
        let want = query.rerank.map_or(paged, |r| r.depth.max(paged));
        let live = self.live();
        let index = live.backend.read();
        let filter = query.filter.as_ref().filter(|f| !f.is_empty());
        let (found, strategy): (Vec<Neighbor>, Strategy) = match filter {
            None => {
                let extra = usize::from(exclude.is_some());
                let mut found = index.search(&query.vector, want + extra, query.ef);
                found.retain(|n| Some(n.key) != exclude);
                found.truncate(want);
                (found, Strategy::Index)
            }
            Some(filter) => {
                let accept = |slot: u64| {
                    Some(slot) != exclude && live.records.get(&slot).is_some_and(|r| filter.matches(&r.metadata))
                };
                if live.pass_fraction(filter) < SCAN_BELOW_FRACTION {
                    (index.scan(&query.vector, want, &accept), Strategy::Scan)
                } else {
                    let found = index.search_filtered(&query.vector, want, query.ef, &accept);
                    if found.len() < want {
                        (index.scan(&query.vector, want, &accept), Strategy::FilteredIndexThenScan)
                    } else {
                        (found, Strategy::FilteredIndex)
                    }
                }
            }
        };
        let found: Vec<Neighbor> = match query.max_distance {
            Some(m) => found.into_iter().filter(|n| n.distance <= m).collect(),
            None => found,
        };
        let scored: Vec<(Neighbor, Option<f32>)> = match query.rerank {
            Some(r) if found.len() > 1 => {
                let slots: Vec<u64> = found.iter().map(|n| n.key).collect();
                let vectors = self.store.vectors_of(&slots)?;
                let candidates = found.into_iter().zip(vectors).filter_map(|(n, v)| Some((n, v?))).collect();
                rerank::rerank(&query.vector, candidates, r).into_iter().map(|(n, s)| (n, Some(s))).collect()
            }
            _ => found.into_iter().map(|n| (n, None)).collect(),
        };
        let hits = scored
            .into_iter()
            .skip(query.offset)
            .take(query.k)
            .filter_map(|(n, score)| {
                live.records.get(&n.key).map(|r| Hit {
                    id: r.id.clone(),
                    distance: n.distance,
                    metadata: r.metadata.clone(),
                    score,
                })
            })
            .collect();
        Ok(Found { hits, strategy })
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    fn live_mut(&self) -> std::sync::RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }

    fn rebuild_if_needed(&self) -> Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.rebuild_locked()
    }

    /// Rebuilds the graph when tombstones pile up; the caller holds the writer lock, so
    /// searches go on against the old graph while the new one is built.
    fn rebuild_locked(&self) -> Result<()> {
        let fresh = {
            let live = self.live();
            match &live.backend {
                Backend::Hnsw(g) if g.needs_rebuild(self.rebuild_ratio) => {
                    tracing::info!(tombstones = g.tombstones(), points = g.graph_len(), "rebuilding the HNSW graph");
                    g.rebuilt()
                }
                _ => return Ok(()),
            }
        };
        self.live_mut().backend = Backend::Hnsw(fresh);
        Ok(())
    }

    /// Swaps in an `f32` copy of an `f16` graph that `items` would turn to `f32` (see
    /// [`HnswIndex::turns_f32`]), built, like [`Self::rebuild_locked`]'s, while searches go
    /// on against the old graph; the caller holds the writer lock.
    fn turn_f32_if_needed(&self, items: &[(u64, Vec<f32>)]) {
        let fresh = match &self.live().backend {
            Backend::Hnsw(g) if g.turns_f32(items) => g.rebuilt_f32(),
            _ => return,
        };
        self.live_mut().backend = Backend::Hnsw(fresh);
    }
}

impl Gallery for LocalGallery {
    fn visit_all(
        &self,
        item: &mut dyn FnMut(StoredItem) -> Result<()>,
        path: &mut dyn FnMut(PathBuf, PathRecord) -> Result<()>,
    ) -> Result<()> {
        self.store.visit_all(item, path)
    }

    fn write_snapshot(&self, name: &str, model: &Path, out: &Path) -> Result<crate::snapshot::Header> {
        crate::snapshot::write(&self.store, &self.spec, name, model, out)
    }

    fn spec(&self) -> &IndexSpec {
        &self.spec
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, std::sync::atomic::Ordering::SeqCst);
    }

    fn delete(&self, id: &str) -> Result<bool> {
        validate_id(id)?;
        self.check_writable()?;
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = self.store.delete(id)? else {
            return Ok(false);
        };
        self.live_mut().forget(slot);
        self.rebuild_locked()?;
        Ok(true)
    }

    fn apply(&self, change: GalleryChange) -> Result<Vec<String>> {
        self.check_writable()?;
        change.check(&self.spec)?;
        let records: Vec<NewRecord> = change
            .insert
            .into_iter()
            .map(|img| NewRecord {
                record: Record {
                    id: img.id.unwrap_or_else(|| format!("{:032x}", rand::random::<u128>())),
                    metadata: img.metadata,
                    content_hash: img.content_hash,
                },
                vector: img.vector,
                thumbnail: img.thumbnail,
                original: img.original,
            })
            .collect();
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let change = Change {
            insert: records,
            delete: change.delete,
            set_paths: change.set_paths,
            remove_paths: change.remove_paths,
            set_metadata: change.set_metadata,
        };
        let applied = self.store.apply(&change)?;
        let items: Vec<(u64, Vec<f32>)> =
            applied.inserted.iter().zip(&change.insert).map(|((s, _), r)| (*s, r.vector.clone())).collect();
        self.turn_f32_if_needed(&items);
        let mut live = self.live_mut();
        let removed: Vec<u64> = applied
            .deleted
            .iter()
            .flatten()
            .chain(applied.inserted.iter().filter_map(|(_, r)| r.as_ref()))
            .copied()
            .collect();
        for old in &removed {
            live.forget(*old);
        }
        live.backend.write().insert(&items);
        for ((slot, _), r) in applied.inserted.iter().zip(&change.insert) {
            live.slots.insert(r.record.id.clone(), *slot);
            live.records.insert(*slot, r.record.clone());
        }
        for (slot, (_, metadata)) in applied.updated.iter().zip(&change.set_metadata) {
            if let Some(r) = slot.and_then(|s| live.records.get_mut(&s)) {
                r.metadata = metadata.clone();
            }
        }
        drop(live);
        if !removed.is_empty() {
            self.rebuild_locked()?;
        }
        Ok(change.insert.into_iter().map(|r| r.record.id).collect())
    }

    fn patch_metadata(&self, id: &str, patch: &serde_json::Value) -> Result<Option<Record>> {
        validate_id(id)?;
        self.check_writable()?;
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut record) = self.get(id)? else {
            return Ok(None);
        };
        merge_patch(&mut record.metadata, patch);
        let change = Change { set_metadata: vec![(id.to_string(), record.metadata.clone())], ..Change::default() };
        let applied = self.store.apply(&change)?;
        if let Some(Some(slot)) = applied.updated.first() {
            if let Some(r) = self.live_mut().records.get_mut(slot) {
                r.metadata = record.metadata.clone();
            }
        }
        Ok(Some(record))
    }

    fn path_states(&self, files: &[PathBuf]) -> Result<Vec<Option<PathState>>> {
        self.store.path_states(files)
    }

    fn paths_under(&self, root: &Path) -> Result<Vec<(PathBuf, PathRecord)>> {
        self.store.paths_under(root)
    }

    fn get(&self, id: &str) -> Result<Option<Record>> {
        validate_id(id)?;
        let live = self.live();
        Ok(live.slots.get(id).and_then(|s| live.records.get(s)).cloned())
    }

    fn vector(&self, id: &str) -> Result<Option<Vec<f32>>> {
        validate_id(id)?;
        match self.store.get(id)? {
            Some((slot, _)) => self.store.vector(slot),
            None => Ok(None),
        }
    }

    fn thumbnail(&self, id: &str) -> Result<Option<Vec<u8>>> {
        validate_id(id)?;
        match self.store.get(id)? {
            Some((slot, _)) => self.store.thumbnail(slot),
            None => Ok(None),
        }
    }

    fn original(&self, id: &str) -> Result<Option<Vec<u8>>> {
        validate_id(id)?;
        match self.store.get(id)? {
            Some((slot, _)) => self.store.original(slot),
            None => Ok(None),
        }
    }

    fn has_hash(&self, hash: &str) -> Result<bool> {
        self.store.has_hash(hash)
    }

    fn find(&self, query: &Query) -> Result<Found> {
        self.find_excluding(query, None)
    }

    fn similar(&self, id: &str, query: &Query) -> Result<Option<Found>> {
        validate_id(id)?;
        let Some((slot, _)) = self.store.get(id)? else {
            return Ok(None);
        };
        let Some(vector) = self.store.vector(slot)? else {
            return Ok(None);
        };
        self.find_excluding(&Query { vector, ..query.clone() }, Some(slot)).map(Some)
    }

    fn list(&self, filter: Option<&Filter>, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let live = self.live();
        let start = match cursor {
            Some(c) => Bound::Excluded(c.to_string()),
            None => Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut more = false;
        for (id, slot) in live.slots.range((start, Bound::Unbounded)) {
            let Some(r) = live.records.get(slot) else { continue };
            if !filter.is_none_or(|f| f.matches(&r.metadata)) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(Item { id: id.clone(), metadata: r.metadata.clone() });
        }
        let next_cursor = if more { items.last().map(|i| i.id.clone()) } else { None };
        Ok(Page { items, next_cursor })
    }

    fn count(&self, filter: Option<&Filter>) -> Result<usize> {
        let live = self.live();
        Ok(match filter {
            None => live.records.len(),
            Some(f) => live.records.values().filter(|r| f.matches(&r.metadata)).count(),
        })
    }

    fn stats(&self) -> GalleryStats {
        let live = self.live();
        let (graph_points, tombstones, kind, quantization) = match &live.backend {
            Backend::Exact(i) => (i.len(), 0, "exact", Quantization::F32),
            Backend::Hnsw(i) => (i.graph_len(), i.tombstones(), "hnsw", i.quantization()),
        };
        GalleryStats {
            images: live.backend.read().len(),
            graph_points,
            tombstones,
            dim: self.spec.dim,
            distance: self.spec.distance,
            index: kind,
            quantization: quantization.name(),
        }
    }

    fn snapshot(&self) -> Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.live();
        let Backend::Hnsw(graph) = &live.backend else {
            return Ok(());
        };
        if graph.is_empty() {
            // Nothing to save; the next start builds the graph from the stored vectors
            // (none) or catches a stale file up with them.
            return Ok(());
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let files = graph
            .dump(&self.dir, &format!("{}{nanos}", GraphFiles::PREFIX))
            .map_err(|reason| Error::Store { path: self.dir.clone(), reason })?;
        self.store.set_graph(&GraphState { files: files.clone() })?;
        // Every other graph file is stale now: earlier saves, and files of a save that
        // crashed before it was recorded.
        for entry in std::fs::read_dir(&self.dir).map_err(Error::io(&self.dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if GraphFiles::is_graph_file(&name) && name != files.file {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        tracing::info!(file = %files.file, points = graph.len(), "saved the HNSW graph");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::NewImage;
    use contract::Distance;

    fn spec() -> IndexSpec {
        IndexSpec { dim: 2, distance: Distance::Euclidean, model: "test".into() }
    }

    fn img(id: &str, v: [f32; 2]) -> NewImage {
        NewImage {
            id: Some(id.into()),
            metadata: serde_json::json!({ "name": id }),
            content_hash: Some(format!("h-{id}")),
            vector: v.to_vec(),
            thumbnail: None,
            original: None,
        }
    }

    #[test]
    fn survives_reopen_with_and_without_graph_dump() {
        let dir = tempfile::tempdir().unwrap();
        let hnsw = HnswParams::default();
        {
            let g = LocalGallery::open(dir.path(), spec(), &hnsw, IndexKind::Hnsw).unwrap();
            g.insert(vec![img("a", [0.0, 0.0]), img("b", [1.0, 0.0]), img("c", [9.0, 9.0])]).unwrap();
            g.snapshot().unwrap();
            // After the dump: one more insert and one delete the dump does not know about.
            g.insert(vec![img("d", [0.9, 0.1])]).unwrap();
            assert!(g.delete("b").unwrap());
            assert!(!g.delete("b").unwrap());
        }
        let g = LocalGallery::open(dir.path(), spec(), &hnsw, IndexKind::Hnsw).unwrap();
        let hits = g.search(&[1.0, 0.0], 3, None).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, vec!["d", "a", "c"]);
        assert_eq!(hits[0].metadata["name"], "d");
        assert!(g.has_hash("h-d").unwrap());
        assert!(!g.has_hash("h-b").unwrap());
        assert_eq!(g.stats().images, 3);
        // Saving leaves one graph file: earlier saves, an interrupted save's temporary
        // file and the hnsw_rs dumps of earlier versions go.
        for stale in ["graph-1.hnsw.graph", "graph-1.hnsw.data", ".graph-2.usearch.tmp"] {
            std::fs::write(dir.path().join(stale), b"stale").unwrap();
        }
        g.snapshot().unwrap();
        g.snapshot().unwrap();
        let graphs: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| GraphFiles::is_graph_file(n))
            .collect();
        assert!(graphs.len() == 1 && graphs[0].ends_with(".usearch"), "{graphs:?}");
        // A different model cannot open the same index.
        drop(g);
        let other = IndexSpec { dim: 3, ..spec() };
        assert!(matches!(
            LocalGallery::open(dir.path(), other, &hnsw, IndexKind::Hnsw),
            Err(Error::IndexModelMismatch { .. })
        ));
    }

    #[test]
    fn a_quantised_graph_answers_full_precision_distances_and_follows_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let f32s = HnswParams { quantization: Quantization::F32, ..HnswParams::default() };
        let f16s = HnswParams { quantization: Quantization::F16, ..f32s };
        // 1/3 is not a half-precision number: the graph's copy of c differs from c.
        let third = 1.0f32 / 3.0;
        {
            let g = LocalGallery::open(dir.path(), spec(), &f32s, IndexKind::Hnsw).unwrap();
            g.insert(vec![img("a", [0.0, 0.0]), img("c", [third, 7.0])]).unwrap();
            assert_eq!(g.stats().quantization, "f32");
            g.snapshot().unwrap();
        }
        // Reopened with f16: the saved f32 graph is refused and rebuilt from the store;
        // distances still come from the stored f32 vectors.
        let g = LocalGallery::open(dir.path(), spec(), &f16s, IndexKind::Hnsw).unwrap();
        assert_eq!(g.stats().quantization, "f16", "reported in /stats");
        g.insert(vec![img("b", [third, 0.0])]).unwrap();
        let hits = g.search(&[0.0, 0.0], 3, None).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(hits[1].distance, third);
        assert_eq!(hits[2].distance, (third * third + 49.0).sqrt());
        assert!(g.delete("a").unwrap());
        assert_eq!(g.search(&[0.0, 0.0], 3, None).unwrap().len(), 2);
        g.snapshot().unwrap();
        drop(g);
        let g = LocalGallery::open(dir.path(), spec(), &f16s, IndexKind::Hnsw).unwrap();
        assert_eq!(g.search(&[0.0, 0.0], 1, None).unwrap()[0].distance, third, "the f16 graph reloads");
        // A coordinate beyond half precision's range turns the graph to f32 (built beside
        // the old one, then swapped in), and it reloads as f32 with f16 still asked.
        g.insert(vec![img("far", [1e6, 0.0])]).unwrap();
        assert_eq!(g.stats().quantization, "f32");
        assert_eq!(g.search(&[1e6, 1.0], 1, None).unwrap()[0].id, "far");
        g.snapshot().unwrap();
        drop(g);
        let g = LocalGallery::open(dir.path(), spec(), &f16s, IndexKind::Hnsw).unwrap();
        assert_eq!(g.stats().quantization, "f32", "reloads as f32");
        assert_eq!(g.search(&[1e6, 1.0], 1, None).unwrap()[0].distance, 1.0);
        drop(g);
        // i8 keeps directions only: refused for Euclidean vectors, with the fix.
        let i8s = HnswParams { quantization: Quantization::I8, ..f32s };
        let err = LocalGallery::open(dir.path(), spec(), &i8s, IndexKind::Hnsw).err().expect("i8 refused");
        assert!(matches!(&err, Error::Settings { reason, .. } if reason.contains("\"f16\"")), "{err}");
    }

    #[test]
    fn replacing_an_id_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let g = LocalGallery::open(dir.path(), spec(), &HnswParams::default(), IndexKind::Exact).unwrap();
        g.insert(vec![img("a", [0.0, 0.0])]).unwrap();
        g.insert(vec![img("a", [5.0, 5.0])]).unwrap();
        let hits = g.search(&[0.0, 0.0], 10, None).unwrap();
        assert_eq!(hits.len(), 1);
        assert!((hits[0].distance - 50f32.sqrt()).abs() < 1e-5);
        assert!(matches!(g.search(&[0.0], 1, None), Err(Error::DimensionMismatch { .. })));
    }
}
