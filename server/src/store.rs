//! The durable side of an index: ids, metadata, vectors, content hashes and thumbnails in
//! an embedded redb database, plus the indexing job's per-path records (source file ->
//! item, size, mtime, content hash). Every write is one transaction committed (fsync)
//! before it returns, so an acknowledged insert survives kill -9. The tables themselves
//! are defined in [`contract::stored`], where the trainer reads them too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use crate::index::GraphFiles;
use crate::{Error, Result};

use contract::stored::tables::{
    HASHES, IDS, META, META_FORMAT, META_GRAPH, META_NEXT_SLOT, META_SPEC, ORIGINALS, PATHS, RECORDS, THUMBNAILS,
    VECTORS,
};
pub use contract::stored::{Record, DB_FILE, FORMAT};

/// What every vector in an index must agree on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexSpec {
    pub dim: usize,
    pub distance: contract::Distance,
    /// Identifies the model the vectors came from (architecture and training run).
    pub model: String,
}

impl IndexSpec {
    /// The spec of the vectors a model produces. The model is named by its identity (the
    /// hash of its weights, [`contract::Manifest::weights_sha256`]), so re-exporting the
    /// same checkpoint keeps it; a model exported before identities were recorded is named
    /// by its run and export time.
    pub fn for_manifest(m: &contract::Manifest) -> Self {
        let model = match &m.weights_sha256 {
            Some(h) => format!("{} weights={h}", m.arch),
            None => Self::legacy_model(m),
        };
        Self { dim: m.embedding_dim, distance: m.distance, model }
    }

    /// How indexes named a model before identities were recorded.
    pub fn legacy_model(m: &contract::Manifest) -> String {
        format!("{} run={} created={}", m.arch, m.provenance.run_id, m.provenance.created)
    }
}

/// One image to store.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub record: Record,
    pub vector: Vec<f32>,
    pub thumbnail: Option<Vec<u8>>,
    /// The uploaded file, kept to re-embed it with another model.
    pub original: Option<Vec<u8>>,
}

/// Everything stored of one item, as [`Store::visit_all`] reads it.
#[derive(Debug, Clone)]
pub struct StoredItem {
    pub record: Record,
    pub vector: Vec<f32>,
    pub thumbnail: Option<Vec<u8>>,
    pub original: Option<Vec<u8>>,
}

/// What `server index` last saw of a source file, keyed by its absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRecord {
    /// The item made from this file.
    pub id: String,
    /// File size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch; `None` when unknown or too
    /// recent to trust (the file may change again within the same clock tick), so the next
    /// run hashes the file instead of trusting size and mtime.
    pub mtime_ns: Option<i64>,
    /// SHA-256 of the content, 64 hex digits.
    pub content_hash: String,
}

/// A stored path record and whether the item it names is stored with that content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathState {
    pub record: PathRecord,
    /// The item `record.id` exists and its content hash is `record.content_hash`.
    pub item_current: bool,
}

/// One atomic change to the store: applied in a single transaction, deletions first.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Images to store; an id already present is replaced.
    pub insert: Vec<NewRecord>,
    /// Ids to delete (unknown ids are ignored).
    pub delete: Vec<String>,
    /// Path records to write (replacing any record of the same path).
    pub set_paths: Vec<(PathBuf, PathRecord)>,
    /// Path records to remove.
    pub remove_paths: Vec<PathBuf>,
    /// New metadata for stored items, applied after the inserts (unknown ids are ignored).
    pub set_metadata: Vec<(String, serde_json::Value)>,
}

/// What [`Store::apply`] did to the slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Per inserted image: its new slot and the slot it replaced.
    pub inserted: Vec<(u64, Option<u64>)>,
    /// Per deleted id: the slot it had, `None` when it was unknown.
    pub deleted: Vec<Option<u64>>,
    /// Per metadata update: the slot updated, `None` when the id was unknown.
    pub updated: Vec<Option<u64>>,
}

/// The database key of a source path: its bytes (on Unix, so that no file name is
/// mangled), else its UTF-8 form.
pub fn path_key(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

/// The path a [`path_key`] was made from.
fn key_path(key: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(key))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(key).into_owned())
    }
}

/// The graph dump the database vouches for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphState {
    pub files: GraphFiles,
}

/// redb's own page cache (its default is 1 GiB). The operating system caches the file as
/// well, so a large redb cache only doubles the memory of a start that reads every record:
/// a 100k-item server took 430 MiB with the default and 322 MiB with this
/// (`scripts/bench_cold_start.sh`, BENCHMARKS.md).
const CACHE_BYTES: usize = 32 << 20;

/// The redb database of an index directory.
pub struct Store {
    db: Database,
    path: PathBuf,
}

/// Turns any redb error into [`Error::Store`] naming the database file.
trait DbResult<T> {
    fn db(self, path: &Path) -> Result<T>;
}

impl<T, E: Into<redb::Error>> DbResult<T> for std::result::Result<T, E> {
    fn db(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::Store { path: path.to_path_buf(), reason: e.into().to_string() })
    }
}

fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A quantised graph ranks its candidates by the stored vectors; a read that fails is
/// logged and leaves those candidates out.
impl crate::index::FullVectors for Store {
    fn full_vectors(&self, keys: &[u64]) -> Vec<Option<Vec<f32>>> {
        self.vectors_of(keys).unwrap_or_else(|e| {
            tracing::warn!("reading stored vectors to rank search candidates failed: {e}");
            vec![None; keys.len()]
        })
    }
}

impl Store {
    /// Opens (creating when absent) the database in `dir`. An index of an older
    /// [`FORMAT`] is migrated (the new tables start empty, and `server index` replaces the
    /// old content-id items when it meets their files); a newer one is refused, never
    /// misread (a format-2 server would not delete the originals of deleted items).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let path = dir.join(DB_FILE);
        let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(&path).db(&path)?;
        let store = Self { db, path };
        let tx = store.db.begin_write().db(&store.path)?;
        {
            tx.open_table(RECORDS).db(&store.path)?;
            tx.open_table(VECTORS).db(&store.path)?;
            tx.open_table(THUMBNAILS).db(&store.path)?;
            tx.open_table(IDS).db(&store.path)?;
            tx.open_table(HASHES).db(&store.path)?;
            tx.open_table(PATHS).db(&store.path)?;
            tx.open_table(ORIGINALS).db(&store.path)?;
            let mut meta = tx.open_table(META).db(&store.path)?;
            let found = meta.get(META_FORMAT).db(&store.path)?.map(|v| v.value().to_string());
            match found {
                None => {
                    // A new index, or one of format 1: either way it is format 2 from now.
                    meta.insert(META_FORMAT, FORMAT.to_string().as_str()).db(&store.path)?;
                }
                Some(v) => {
                    let found: u32 = v.trim().parse().map_err(|_| Error::Store {
                        path: store.path.clone(),
                        reason: format!("its format `{v}` is not a number; the file is damaged or not an index"),
                    })?;
                    if found > FORMAT {
                        return Err(Error::IndexFormatTooNew { path: store.path.clone(), found, supported: FORMAT });
                    }
                    if found < FORMAT {
                        meta.insert(META_FORMAT, FORMAT.to_string().as_str()).db(&store.path)?;
                    }
                }
            }
        }
        tx.commit().db(&store.path)?;
        Ok(store)
    }

    /// The database layout of this index ([`FORMAT`] once opened).
    pub fn format(&self) -> Result<u32> {
        Ok(self.meta::<u32>(META_FORMAT)?.unwrap_or(1))
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(META).db(p)?;
        let Some(v) = t.get(key).db(p)? else {
            return Ok(None);
        };
        serde_json::from_str(v.value())
            .map(Some)
            .map_err(|err| Error::Store { path: self.path.clone(), reason: format!("meta `{key}` is corrupt: {err}") })
    }

    fn set_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let p = self.path.as_path();
        let json = serde_json::to_string(value).expect("meta values serialise");
        let tx = self.db.begin_write().db(p)?;
        tx.open_table(META).db(p)?.insert(key, json.as_str()).db(p)?;
        tx.commit().db(p)
    }

    /// Records `spec` in a new index, or checks that an existing index was built with it.
    /// An index that names the model by `also` (its pre-identity name) is the same model:
    /// its spec is updated to `spec`.
    pub fn check_spec(&self, spec: &IndexSpec, also: Option<&str>) -> Result<()> {
        match self.meta::<IndexSpec>(META_SPEC)? {
            None => self.set_meta(META_SPEC, spec),
            Some(s) if s == *spec => Ok(()),
            Some(s) if also == Some(s.model.as_str()) && s.dim == spec.dim && s.distance == spec.distance => {
                tracing::info!(old = %s.model, new = %spec.model, "the index names its model by the weights' hash from now on");
                self.set_meta(META_SPEC, spec)
            }
            Some(s) => Err(Error::IndexModelMismatch {
                path: self.path.clone(),
                reason: format!(
                    "index holds {}-d {:?} vectors of model `{}`, this model gives {}-d {:?} vectors and is `{}`",
                    s.dim, s.distance, s.model, spec.dim, spec.distance, spec.model
                ),
            }),
        }
    }

    /// Stores images in one transaction, committed before returning. An id already present
    /// is replaced. Returns, per image, its new slot and the slot it replaced.
    pub fn insert(&self, items: &[NewRecord]) -> Result<Vec<(u64, Option<u64>)>> {
        let change = Change { insert: items.to_vec(), ..Change::default() };
        Ok(self.apply(&change)?.inserted)
    }

    /// Deletes an image; returns its slot, or `None` when the id is unknown.
    pub fn delete(&self, id: &str) -> Result<Option<u64>> {
        let change = Change { delete: vec![id.to_string()], ..Change::default() };
        Ok(self.apply(&change)?.deleted.pop().flatten())
    }

    /// Applies `change` in one transaction, committed (fsync) before returning: after a
    /// crash either all of it is stored or none of it.
    pub fn apply(&self, change: &Change) -> Result<Applied> {
        let p = self.path.as_path();
        let tx = self.db.begin_write().db(p)?;
        let mut out = Applied::default();
        {
            let mut meta = tx.open_table(META).db(p)?;
            let mut records = tx.open_table(RECORDS).db(p)?;
            let mut vectors = tx.open_table(VECTORS).db(p)?;
            let mut thumbs = tx.open_table(THUMBNAILS).db(p)?;
            let mut originals = tx.open_table(ORIGINALS).db(p)?;
            let mut ids = tx.open_table(IDS).db(p)?;
            let mut hashes = tx.open_table(HASHES).db(p)?;
            let mut paths = tx.open_table(PATHS).db(p)?;
            for id in &change.delete {
                let slot = ids.remove(id.as_str()).db(p)?.map(|g| g.value());
                if let Some(slot) = slot {
                    let old = records.remove(slot).db(p)?.map(|g| g.value().to_vec());
                    vectors.remove(slot).db(p)?;
                    thumbs.remove(slot).db(p)?;
                    originals.remove(slot).db(p)?;
                    let hash = old.and_then(|b| serde_json::from_slice::<Record>(&b).ok()).and_then(|r| r.content_hash);
                    if let Some(h) = hash {
                        let points_here = hashes.get(h.as_str()).db(p)?.map(|g| g.value()) == Some(slot);
                        if points_here {
                            hashes.remove(h.as_str()).db(p)?;
                        }
                    }
                }
                out.deleted.push(slot);
            }
            if !change.insert.is_empty() {
                let mut next: u64 = match meta.get(META_NEXT_SLOT).db(p)? {
                    Some(v) => v.value().parse().unwrap_or(0),
                    None => 0,
                };
                for item in &change.insert {
                    let slot = next;
                    next += 1;
                    let replaced = ids.insert(item.record.id.as_str(), slot).db(p)?.map(|g| g.value());
                    if let Some(old) = replaced {
                        records.remove(old).db(p)?;
                        vectors.remove(old).db(p)?;
                        thumbs.remove(old).db(p)?;
                        originals.remove(old).db(p)?;
                    }
                    let json = serde_json::to_vec(&item.record).expect("records serialise");
                    records.insert(slot, json.as_slice()).db(p)?;
                    vectors.insert(slot, encode_vector(&item.vector).as_slice()).db(p)?;
                    if let Some(t) = &item.thumbnail {
                        thumbs.insert(slot, t.as_slice()).db(p)?;
                    }
                    if let Some(o) = &item.original {
                        originals.insert(slot, o.as_slice()).db(p)?;
                    }
                    if let Some(h) = &item.record.content_hash {
                        hashes.insert(h.as_str(), slot).db(p)?;
                    }
                    out.inserted.push((slot, replaced));
                }
                meta.insert(META_NEXT_SLOT, next.to_string().as_str()).db(p)?;
            }
            for (id, metadata) in &change.set_metadata {
                let slot = ids.get(id.as_str()).db(p)?.map(|g| g.value());
                if let Some(slot) = slot {
                    let old = records.get(slot).db(p)?.map(|g| self.parse_record(g.value())).transpose()?;
                    if let Some(mut record) = old {
                        record.metadata = metadata.clone();
                        let json = serde_json::to_vec(&record).expect("records serialise");
                        records.insert(slot, json.as_slice()).db(p)?;
                    }
                }
                out.updated.push(slot);
            }
            for path in &change.remove_paths {
                paths.remove(path_key(path).as_slice()).db(p)?;
            }
            for (path, rec) in &change.set_paths {
                let json = serde_json::to_vec(rec).expect("path records serialise");
                paths.insert(path_key(path).as_slice(), json.as_slice()).db(p)?;
            }
        }
        tx.commit().db(p)?;
        Ok(out)
    }

    fn parse_path_record(&self, key: &[u8], bytes: &[u8]) -> Result<PathRecord> {
        serde_json::from_slice(bytes).map_err(|err| Error::Store {
            path: self.path.clone(),
            reason: format!("the path record of {} is corrupt: {err}", key_path(key).display()),
        })
    }

    /// The path records of `files` (absolute paths) and whether their items are current,
    /// in one snapshot.
    pub fn path_states(&self, files: &[PathBuf]) -> Result<Vec<Option<PathState>>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let paths = tx.open_table(PATHS).db(p)?;
        let ids = tx.open_table(IDS).db(p)?;
        let records = tx.open_table(RECORDS).db(p)?;
        let mut out = Vec::with_capacity(files.len());
        for file in files {
            let key = path_key(file);
            let Some(rec) =
                paths.get(key.as_slice()).db(p)?.map(|g| self.parse_path_record(&key, g.value())).transpose()?
            else {
                out.push(None);
                continue;
            };
            let item = match ids.get(rec.id.as_str()).db(p)?.map(|g| g.value()) {
                Some(slot) => records.get(slot).db(p)?.map(|g| self.parse_record(g.value())).transpose()?,
                None => None,
            };
            let item_current = item.is_some_and(|r| r.content_hash.as_deref() == Some(rec.content_hash.as_str()));
            out.push(Some(PathState { record: rec, item_current }));
        }
        Ok(out)
    }

    /// Every path record whose path lies under `root` (component-wise), in path order.
    pub fn paths_under(&self, root: &Path) -> Result<Vec<(PathBuf, PathRecord)>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let paths = tx.open_table(PATHS).db(p)?;
        let prefix = path_key(root);
        let mut out = Vec::new();
        for row in paths.range(prefix.as_slice()..).db(p)? {
            let (k, v) = row.db(p)?;
            let key = k.value();
            if !key.starts_with(&prefix) {
                break;
            }
            let path = key_path(key);
            if path.starts_with(root) {
                out.push((path, self.parse_path_record(key, v.value())?));
            }
        }
        Ok(out)
    }

    /// Every stored record, in slot order.
    pub fn all_records(&self) -> Result<Vec<Record>> {
        let mut all: Vec<(u64, Record)> = self.records_by_slot()?.into_iter().collect();
        all.sort_by_key(|(slot, _)| *slot);
        Ok(all.into_iter().map(|(_, r)| r).collect())
    }

    /// Every stored record by slot.
    pub fn records_by_slot(&self) -> Result<HashMap<u64, Record>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(RECORDS).db(p)?;
        let mut out = HashMap::new();
        for row in t.iter().db(p)? {
            let (k, v) = row.db(p)?;
            out.insert(k.value(), self.parse_record(v.value())?);
        }
        Ok(out)
    }

    /// The slot and record of an id.
    pub fn get(&self, id: &str) -> Result<Option<(u64, Record)>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let Some(slot) = tx.open_table(IDS).db(p)?.get(id).db(p)?.map(|g| g.value()) else {
            return Ok(None);
        };
        let records = tx.open_table(RECORDS).db(p)?;
        let rec = records.get(slot).db(p)?.map(|g| self.parse_record(g.value())).transpose()?;
        Ok(rec.map(|r| (slot, r)))
    }

    fn parse_record(&self, bytes: &[u8]) -> Result<Record> {
        serde_json::from_slice(bytes)
            .map_err(|err| Error::Store { path: self.path.clone(), reason: format!("a record is corrupt: {err}") })
    }

    /// The records of the given slots (`None` for slots deleted meanwhile), in one snapshot.
    pub fn records(&self, slots: &[u64]) -> Result<Vec<Option<Record>>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let records = tx.open_table(RECORDS).db(p)?;
        slots.iter().map(|s| records.get(*s).db(p)?.map(|g| self.parse_record(g.value())).transpose()).collect()
    }

    /// The stored vector of a slot.
    pub fn vector(&self, slot: u64) -> Result<Option<Vec<f32>>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(VECTORS).db(p)?;
        let v = t.get(slot).db(p)?.map(|g| decode_vector(g.value()));
        Ok(v)
    }

    /// The stored vectors of `slots` (`None` for slots deleted meanwhile), in one snapshot.
    pub fn vectors_of(&self, slots: &[u64]) -> Result<Vec<Option<Vec<f32>>>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(VECTORS).db(p)?;
        slots.iter().map(|s| Ok(t.get(*s).db(p)?.map(|g| decode_vector(g.value())))).collect()
    }

    /// The stored thumbnail of a slot.
    pub fn thumbnail(&self, slot: u64) -> Result<Option<Vec<u8>>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(THUMBNAILS).db(p)?;
        let v = t.get(slot).db(p)?.map(|g| g.value().to_vec());
        Ok(v)
    }

    /// The kept original of a slot.
    pub fn original(&self, slot: u64) -> Result<Option<Vec<u8>>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(ORIGINALS).db(p)?;
        let v = t.get(slot).db(p)?.map(|g| g.value().to_vec());
        Ok(v)
    }

    /// Whether an image with this content hash is stored (as last inserted with it: after
    /// deleting one of several images with the same content this may answer `false`).
    pub fn has_hash(&self, hash: &str) -> Result<bool> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(HASHES).db(p)?;
        let found = t.get(hash).db(p)?.is_some();
        Ok(found)
    }

    /// Number of stored images.
    pub fn len(&self) -> Result<usize> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let n = tx.open_table(IDS).db(p)?.len().db(p)?;
        Ok(n as usize)
    }

    /// True when no image is stored.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every stored vector, in slot order.
    pub fn vectors(&self) -> Result<Vec<(u64, Vec<f32>)>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(VECTORS).db(p)?;
        let mut out = Vec::with_capacity(t.len().db(p)? as usize);
        for row in t.iter().db(p)? {
            let (k, v) = row.db(p)?;
            out.push((k.value(), decode_vector(v.value())));
        }
        Ok(out)
    }

    /// The slot the next insert gets: every slot ever given is below it.
    pub fn next_slot(&self) -> Result<u64> {
        Ok(self.meta::<u64>(META_NEXT_SLOT)?.unwrap_or(0))
    }

    /// The slot of every stored vector, in order (the vectors themselves are not decoded).
    pub fn vector_slots(&self) -> Result<Vec<u64>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(VECTORS).db(p)?;
        let mut out = Vec::with_capacity(t.len().db(p)? as usize);
        for row in t.iter().db(p)? {
            out.push(row.db(p)?.0.value());
        }
        Ok(out)
    }

    /// Visits every stored item (record, vector, thumbnail) and then every path record,
    /// all read in one read transaction: a consistent view of one moment, while writers
    /// go on.
    pub fn visit_all(
        &self,
        item: &mut dyn FnMut(StoredItem) -> Result<()>,
        path: &mut dyn FnMut(PathBuf, PathRecord) -> Result<()>,
    ) -> Result<()> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let records = tx.open_table(RECORDS).db(p)?;
        let vectors = tx.open_table(VECTORS).db(p)?;
        let thumbs = tx.open_table(THUMBNAILS).db(p)?;
        let originals = tx.open_table(ORIGINALS).db(p)?;
        for row in records.iter().db(p)? {
            let (slot, bytes) = row.db(p)?;
            let slot = slot.value();
            let record = self.parse_record(bytes.value())?;
            let Some(vector) = vectors.get(slot).db(p)?.map(|g| decode_vector(g.value())) else {
                return Err(Error::Store {
                    path: self.path.clone(),
                    reason: format!("item `{}` has no vector", record.id),
                });
            };
            let thumbnail = thumbs.get(slot).db(p)?.map(|g| g.value().to_vec());
            let original = originals.get(slot).db(p)?.map(|g| g.value().to_vec());
            item(StoredItem { record, vector, thumbnail, original })?;
        }
        let paths = tx.open_table(PATHS).db(p)?;
        for row in paths.iter().db(p)? {
            let (k, v) = row.db(p)?;
            path(key_path(k.value()), self.parse_path_record(k.value(), v.value())?)?;
        }
        Ok(())
    }

    /// The graph dump recorded by [`Store::set_graph`].
    pub fn graph(&self) -> Result<Option<GraphState>> {
        self.meta(META_GRAPH)
    }

    /// Records the current graph dump.
    pub fn set_graph(&self, state: &GraphState) -> Result<()> {
        self.set_meta(META_GRAPH, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, hash: &str) -> NewRecord {
        NewRecord {
            record: Record { id: id.into(), metadata: serde_json::json!({}), content_hash: Some(hash.into()) },
            vector: vec![0.0, 1.0],
            thumbnail: None,
            original: None,
        }
    }

    fn path_rec(id: &str, hash: &str) -> PathRecord {
        PathRecord { id: id.into(), size: 3, mtime_ns: Some(7), content_hash: hash.into() }
    }

    #[test]
    fn path_records_go_with_their_items() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, ab, b) = (PathBuf::from("/r/a.png"), PathBuf::from("/r/ab/x.png"), PathBuf::from("/rb/b.png"));
        let change = Change {
            insert: vec![item("a", "h1"), item("ab", "h1"), item("b", "h2")],
            set_paths: vec![
                (a.clone(), path_rec("a", "h1")),
                (ab.clone(), path_rec("ab", "h1")),
                (b.clone(), path_rec("b", "h2")),
            ],
            ..Change::default()
        };
        store.apply(&change).unwrap();
        let states = store.path_states(&[a.clone(), PathBuf::from("/r/none.png")]).unwrap();
        assert_eq!(states[0], Some(PathState { record: path_rec("a", "h1"), item_current: true }));
        assert_eq!(states[1], None);
        // `/rb` is not under `/r`, though its key starts with the same bytes.
        let under: Vec<PathBuf> = store.paths_under(Path::new("/r")).unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(under, vec![a.clone(), ab.clone()]);
        // An item replaced with other content no longer vouches for its path record.
        store.insert(&[item("a", "h3")]).unwrap();
        assert!(!store.path_states(std::slice::from_ref(&a)).unwrap()[0].as_ref().unwrap().item_current);
        // Deleting an item and its path record together.
        let applied = store
            .apply(&Change { delete: vec!["ab".into(), "nope".into()], remove_paths: vec![ab], ..Change::default() })
            .unwrap();
        assert_eq!(applied.deleted.len(), 2);
        assert!(applied.deleted[0].is_some() && applied.deleted[1].is_none());
        assert_eq!(store.paths_under(Path::new("/r")).unwrap().len(), 1);
        assert_eq!(store.len().unwrap(), 2);
        let ids: Vec<String> = store.all_records().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, vec!["b", "a"]);
    }

    /// Writes an index as the server wrote it before formats were numbered (format 1): the
    /// five item tables and `meta` with the spec and slot counter, no `paths` table and no
    /// `format` key. One image, id `old`, vector `[0.5, -1]`.
    fn write_format_1(dir: &Path) {
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let rec = serde_json::json!({"id": "old", "metadata": {"path": "a.png"}, "content_hash": "h"});
            tx.open_table(RECORDS).unwrap().insert(0u64, serde_json::to_vec(&rec).unwrap().as_slice()).unwrap();
            tx.open_table(VECTORS).unwrap().insert(0u64, encode_vector(&[0.5, -1.0]).as_slice()).unwrap();
            tx.open_table(THUMBNAILS).unwrap();
            tx.open_table(IDS).unwrap().insert("old", 0u64).unwrap();
            tx.open_table(HASHES).unwrap().insert("h", 0u64).unwrap();
            let mut meta = tx.open_table(META).unwrap();
            let spec = IndexSpec { dim: 2, distance: contract::Distance::Euclidean, model: "m".into() };
            meta.insert(META_SPEC, serde_json::to_string(&spec).unwrap().as_str()).unwrap();
            meta.insert(META_NEXT_SLOT, "1").unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_format_1_index_is_migrated_and_a_newer_format_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_format_1(dir.path());
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.format().unwrap(), FORMAT);
        let (slot, rec) = store.get("old").unwrap().expect("the format-1 item is kept");
        assert_eq!(rec.metadata["path"], "a.png");
        assert_eq!(store.vector(slot).unwrap(), Some(vec![0.5, -1.0]));
        assert!(store.paths_under(Path::new("/")).unwrap().is_empty());
        // A format-2 index (no originals table) is migrated the same way.
        store.set_meta(META_FORMAT, &2).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.format().unwrap(), FORMAT);
        assert_eq!(store.original(slot).unwrap(), None);
        store.set_meta(META_FORMAT, &(FORMAT + 1)).unwrap();
        drop(store);
        let err = Store::open(dir.path()).err().expect("a newer format is refused");
        assert!(
            matches!(err, Error::IndexFormatTooNew { found, supported: FORMAT, .. } if found == FORMAT + 1),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("format {}", FORMAT + 1)) && msg.contains("upgrade"), "{msg}");
        // A fresh index starts at the current format.
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(Store::open(fresh.path()).unwrap().format().unwrap(), FORMAT);
    }
}
