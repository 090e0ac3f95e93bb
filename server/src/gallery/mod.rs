//! A gallery: the items of one collection (ids, metadata, thumbnails, vectors, the index
//! job's path records) and the search over them, behind one trait, [`Gallery`], so the
//! HTTP routes, `server index`, upgrades and snapshots work the same on every backend:
//! - [`LocalGallery`] (`index.backend = "embedded"`): redb on local disk plus the
//!   in-process vector index (HNSW or exact, [`crate::index`]); one process owns the folder.
//! - [`MilvusGallery`] (`index.backend = "milvus"`, feature `milvus`): one Milvus
//!   collection, shared by any number of server replicas and `server index` workers.

mod local;
#[cfg(feature = "milvus")]
mod milvus;

pub use local::LocalGallery;
#[cfg(feature = "milvus")]
pub use milvus::{MilvusGallery, MilvusIndex};

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::filter::Filter;
use crate::rerank::Rerank;
use crate::store::{IndexSpec, PathRecord, PathState, Record, StoredItem};
use crate::{Error, Result};

/// The items of a collection and the search over them. Every write is durable (and seen
/// by every reader of the same backend) when it returns `Ok`.
pub trait Gallery: Send + Sync {
    /// What the vectors of this gallery are.
    fn spec(&self) -> &IndexSpec;

    /// Applies `change` (deletions first), then returns the ids of the inserted images.
    fn apply(&self, change: GalleryChange) -> Result<Vec<String>>;

    /// Stores images and indexes them; returns their ids.
    fn insert(&self, images: Vec<NewImage>) -> Result<Vec<String>> {
        self.apply(GalleryChange { insert: images, ..GalleryChange::default() })
    }

    /// Deletes an image; `Ok(false)` when the id is unknown.
    fn delete(&self, id: &str) -> Result<bool>;

    /// Merges `patch` into an item's metadata (JSON merge patch, RFC 7396: a `null` member
    /// removes that key) and returns the new record; `Ok(None)` when the id is unknown.
    fn patch_metadata(&self, id: &str, patch: &serde_json::Value) -> Result<Option<Record>>;

    /// Refuses (or again accepts) writes, while a new index is built from this one.
    fn freeze(&self, frozen: bool);

    /// The path records of `files` and whether their items are current.
    fn path_states(&self, files: &[PathBuf]) -> Result<Vec<Option<PathState>>>;

    /// Every path record under the folder `root`.
    fn paths_under(&self, root: &Path) -> Result<Vec<(PathBuf, PathRecord)>>;

    /// The stored record of an id.
    fn get(&self, id: &str) -> Result<Option<Record>>;

    /// The stored vector of an id.
    fn vector(&self, id: &str) -> Result<Option<Vec<f32>>>;

    /// The thumbnail of an id (a JPEG, or a small PNG file kept as it was), when one was stored.
    fn thumbnail(&self, id: &str) -> Result<Option<Vec<u8>>>;

    /// The original file of an id, when the collection kept it.
    fn original(&self, id: &str) -> Result<Option<Vec<u8>>>;

    /// Whether an image with this content hash is stored.
    fn has_hash(&self, hash: &str) -> Result<bool>;

    /// Answers a query: nearest first, filtered, paged and cut at `max_distance`.
    fn find(&self, query: &Query) -> Result<Found>;

    /// The `k` stored images nearest to `query`.
    ///
    /// # Shapes
    /// - `query`: `[dim]`
    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>> {
        Ok(self.find(&Query { ef, ..Query::nearest(query.to_vec(), k) })?.hits)
    }

    /// The items nearest to the stored item `id`, the item itself left out; `Ok(None)`
    /// when the id is unknown.
    fn similar(&self, id: &str, query: &Query) -> Result<Option<Found>>;

    /// Up to `limit` items after `cursor` (an id; `None` starts at the first) in id order,
    /// only those `filter` passes.
    fn list(&self, filter: Option<&Filter>, cursor: Option<&str>, limit: usize) -> Result<Page>;

    /// Number of items `filter` passes (all items without one).
    fn count(&self, filter: Option<&Filter>) -> Result<usize>;

    /// Sizes of the gallery and its index.
    fn stats(&self) -> GalleryStats;

    /// Saves what lives only in memory (the HNSW graph) for a fast restart.
    fn snapshot(&self) -> Result<()>;

    /// Every stored item and path record, from one consistent read.
    fn visit_all(
        &self,
        item: &mut dyn FnMut(StoredItem) -> Result<()>,
        path: &mut dyn FnMut(PathBuf, PathRecord) -> Result<()>,
    ) -> Result<()>;

    /// Writes a snapshot of this gallery (the collection `name`, its model at `model`) to
    /// `out` (see [`crate::snapshot`]).
    fn write_snapshot(&self, name: &str, model: &Path, out: &Path) -> Result<crate::snapshot::Header>;
}

/// Longest accepted id.
pub const MAX_ID_LEN: usize = 128;

/// Which index serves searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Hnsw,
    /// Brute force: exact, for tests and small galleries.
    Exact,
}

/// One image to add.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// `None`: a fresh random id is assigned.
    pub id: Option<String>,
    pub metadata: serde_json::Value,
    pub content_hash: Option<String>,
    /// `[dim]`
    pub vector: Vec<f32>,
    /// JPEG bytes.
    pub thumbnail: Option<Vec<u8>>,
    /// The uploaded file, kept (by collections told to) to re-embed it with another model.
    pub original: Option<Vec<u8>>,
}

/// One atomic change to a gallery: committed in a single store transaction, then applied
/// to the index. Deletions come first.
#[derive(Debug, Clone, Default)]
pub struct GalleryChange {
    pub insert: Vec<NewImage>,
    /// Ids to delete (unknown ids are ignored).
    pub delete: Vec<String>,
    /// Source-path records to write (see [`PathRecord`]).
    pub set_paths: Vec<(PathBuf, PathRecord)>,
    /// Source-path records to remove.
    pub remove_paths: Vec<PathBuf>,
    /// New metadata for stored items, vector unchanged (unknown ids are ignored).
    pub set_metadata: Vec<(String, serde_json::Value)>,
}

impl GalleryChange {
    /// Refuses what a backend would otherwise refuse half way through applying it: bad ids,
    /// and vectors that are not of `spec`'s dimension.
    pub fn check(&self, spec: &IndexSpec) -> Result<()> {
        for img in &self.insert {
            if let Some(id) = &img.id {
                validate_id(id)?;
            }
            check_dim(spec, &img.vector)?;
        }
        self.delete.iter().try_for_each(|id| validate_id(id))
    }

    /// True when applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.insert.is_empty()
            && self.delete.is_empty()
            && self.set_paths.is_empty()
            && self.remove_paths.is_empty()
            && self.set_metadata.is_empty()
    }
}

/// A nearest-neighbour query.
#[derive(Debug, Clone)]
pub struct Query {
    /// `[dim]`
    pub vector: Vec<f32>,
    /// Hits wanted.
    pub k: usize,
    /// Hits to skip first (for paging: the next page starts at `offset + k`).
    pub offset: usize,
    /// HNSW search breadth; `None` uses the settings.
    pub ef: Option<usize>,
    /// Only items whose metadata passes it.
    pub filter: Option<Filter>,
    /// Only hits at most this far from the query.
    pub max_distance: Option<f32>,
    /// Re-order the nearest candidates by contextual similarity ([`crate::rerank`]).
    pub rerank: Option<Rerank>,
}

impl Query {
    /// The `k` nearest to `vector`, unfiltered.
    pub fn nearest(vector: Vec<f32>, k: usize) -> Self {
        Self { vector, k, offset: 0, ef: None, filter: None, max_distance: None, rerank: None }
    }
}

/// How a query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The index alone (HNSW, or the exact index).
    Index,
    /// The graph walked with the filter.
    FilteredIndex,
    /// The filtered walk found fewer than wanted, so every passing item was compared.
    FilteredIndexThenScan,
    /// The filter passes few items: every passing item was compared.
    Scan,
}

/// The hits of a query and how they were found.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub hits: Vec<Hit>,
    pub strategy: Strategy,
}

/// A stored item as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub id: String,
    pub metadata: serde_json::Value,
}

/// One page of a listing, in id order.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub items: Vec<Item>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub id: String,
    pub distance: f32,
    pub metadata: serde_json::Value,
    /// With `rerank`: the contextual score the hits are ordered by (higher first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// Sizes for `/stats` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct GalleryStats {
    pub images: usize,
    /// Points in the search structure, deleted ones included.
    pub graph_points: usize,
    pub tombstones: usize,
    pub dim: usize,
    pub distance: contract::Distance,
    pub index: &'static str,
    /// The scalar type of the index's copy of the vectors (`f32`, `f16`, `i8`).
    pub quantization: &'static str,
}

/// Refuses a vector that is not of `spec`'s dimension.
pub fn check_dim(spec: &IndexSpec, vector: &[f32]) -> Result<()> {
    if vector.len() != spec.dim {
        return Err(Error::DimensionMismatch { got: vector.len(), expected: spec.dim });
    }
    Ok(())
}

/// Checks a client-supplied id: 1 to [`MAX_ID_LEN`] characters from `A-Z a-z 0-9 . _ -`,
/// not starting with a dot. Ids are database keys, never paths, but stay printable.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::InvalidId { id: id.chars().take(MAX_ID_LEN).collect(), reason: reason.into() });
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return bad(&format!("ids are 1 to {MAX_ID_LEN} characters long"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return bad("ids may contain only letters, digits, '.', '_' and '-'");
    }
    if id.starts_with('.') {
        return bad("ids may not start with '.'");
    }
    Ok(())
}

/// Applies a JSON merge patch (RFC 7396) to `target`.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(Default::default());
    }
    let fields = target.as_object_mut().expect("made an object above");
    for (key, value) in members {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(serde_json::Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for bad in ["", "../etc", "a/b", ".hidden", "sp ace", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "img-1.png", "A_b-9"] {
            validate_id(good).unwrap();
        }
    }
}
