//! The durable side of an index: ids, metadata, vectors, content hashes and thumbnails in
//! an embedded redb database. Every write is one transaction committed (fsync) before it
//! returns, so an acknowledged insert survives kill -9.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::index::GraphFiles;
use crate::{Error, Result};

/// File name of the database inside the index directory.
pub const DB_FILE: &str = "images.redb";

/// slot -> JSON [`Record`].
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// slot -> little-endian f32 vector.
const VECTORS: TableDefinition<u64, &[u8]> = TableDefinition::new("vectors");
/// slot -> JPEG thumbnail.
const THUMBNAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("thumbnails");
/// id -> slot.
const IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
/// content hash -> slot.
const HASHES: TableDefinition<&str, u64> = TableDefinition::new("hashes");
/// Small JSON values: the index spec, the slot counter, the graph dump.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

const META_SPEC: &str = "spec";
const META_NEXT_SLOT: &str = "next_slot";
const META_GRAPH: &str = "graph";

/// What every vector in an index must agree on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexSpec {
    pub dim: usize,
    pub distance: contract::Distance,
    /// Identifies the model the vectors came from (architecture and training run).
    pub model: String,
}

impl IndexSpec {
    /// The spec of the vectors a model produces.
    pub fn for_manifest(m: &contract::Manifest) -> Self {
        Self {
            dim: m.embedding_dim,
            distance: m.distance,
            model: format!("{} run={} created={}", m.arch, m.provenance.run_id, m.provenance.created),
        }
    }
}

/// What is stored about one image besides its vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub metadata: serde_json::Value,
    pub content_hash: Option<String>,
}

/// One image to store.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub record: Record,
    pub vector: Vec<f32>,
    pub thumbnail: Option<Vec<u8>>,
}

/// The graph dump the database vouches for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphState {
    pub files: GraphFiles,
}

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

impl Store {
    /// Opens (creating when absent) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).db(&path)?;
        let store = Self { db, path };
        let tx = store.db.begin_write().db(&store.path)?;
        {
            tx.open_table(RECORDS).db(&store.path)?;
            tx.open_table(VECTORS).db(&store.path)?;
            tx.open_table(THUMBNAILS).db(&store.path)?;
            tx.open_table(IDS).db(&store.path)?;
            tx.open_table(HASHES).db(&store.path)?;
            tx.open_table(META).db(&store.path)?;
        }
        tx.commit().db(&store.path)?;
        Ok(store)
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
    pub fn check_spec(&self, spec: &IndexSpec) -> Result<()> {
        match self.meta::<IndexSpec>(META_SPEC)? {
            None => self.set_meta(META_SPEC, spec),
            Some(s) if s == *spec => Ok(()),
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
        let p = self.path.as_path();
        let tx = self.db.begin_write().db(p)?;
        let mut out = Vec::with_capacity(items.len());
        {
            let mut meta = tx.open_table(META).db(p)?;
            let mut next: u64 = match meta.get(META_NEXT_SLOT).db(p)? {
                Some(v) => v.value().parse().unwrap_or(0),
                None => 0,
            };
            let mut records = tx.open_table(RECORDS).db(p)?;
            let mut vectors = tx.open_table(VECTORS).db(p)?;
            let mut thumbs = tx.open_table(THUMBNAILS).db(p)?;
            let mut ids = tx.open_table(IDS).db(p)?;
            let mut hashes = tx.open_table(HASHES).db(p)?;
            for item in items {
                let slot = next;
                next += 1;
                let replaced = ids.insert(item.record.id.as_str(), slot).db(p)?.map(|g| g.value());
                if let Some(old) = replaced {
                    records.remove(old).db(p)?;
                    vectors.remove(old).db(p)?;
                    thumbs.remove(old).db(p)?;
                }
                let json = serde_json::to_vec(&item.record).expect("records serialise");
                records.insert(slot, json.as_slice()).db(p)?;
                vectors.insert(slot, encode_vector(&item.vector).as_slice()).db(p)?;
                if let Some(t) = &item.thumbnail {
                    thumbs.insert(slot, t.as_slice()).db(p)?;
                }
                if let Some(h) = &item.record.content_hash {
                    hashes.insert(h.as_str(), slot).db(p)?;
                }
                out.push((slot, replaced));
            }
            meta.insert(META_NEXT_SLOT, next.to_string().as_str()).db(p)?;
        }
        tx.commit().db(p)?;
        Ok(out)
    }

    /// Deletes an image; returns its slot, or `None` when the id is unknown.
    pub fn delete(&self, id: &str) -> Result<Option<u64>> {
        let p = self.path.as_path();
        let tx = self.db.begin_write().db(p)?;
        let slot = {
            let mut ids = tx.open_table(IDS).db(p)?;
            let slot = ids.remove(id).db(p)?.map(|g| g.value());
            if let Some(slot) = slot {
                let mut records = tx.open_table(RECORDS).db(p)?;
                let old = records.remove(slot).db(p)?.map(|g| g.value().to_vec());
                tx.open_table(VECTORS).db(p)?.remove(slot).db(p)?;
                tx.open_table(THUMBNAILS).db(p)?.remove(slot).db(p)?;
                let hash = old.and_then(|b| serde_json::from_slice::<Record>(&b).ok()).and_then(|r| r.content_hash);
                if let Some(h) = hash {
                    let mut hashes = tx.open_table(HASHES).db(p)?;
                    let points_here = hashes.get(h.as_str()).db(p)?.map(|g| g.value()) == Some(slot);
                    if points_here {
                        hashes.remove(h.as_str()).db(p)?;
                    }
                }
            }
            slot
        };
        tx.commit().db(p)?;
        Ok(slot)
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

    /// The stored thumbnail of a slot.
    pub fn thumbnail(&self, slot: u64) -> Result<Option<Vec<u8>>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(THUMBNAILS).db(p)?;
        let v = t.get(slot).db(p)?.map(|g| g.value().to_vec());
        Ok(v)
    }

    /// Whether an image with this content hash is stored.
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

    /// Every stored vector by slot.
    pub fn vectors(&self) -> Result<HashMap<u64, Vec<f32>>> {
        let p = self.path.as_path();
        let tx = self.db.begin_read().db(p)?;
        let t = tx.open_table(VECTORS).db(p)?;
        let mut out = HashMap::new();
        for row in t.iter().db(p)? {
            let (k, v) = row.db(p)?;
            out.insert(k.value(), decode_vector(v.value()));
        }
        Ok(out)
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
