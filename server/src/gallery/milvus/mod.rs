//! A gallery kept in Milvus: any number of server replicas and `server index` workers share
//! one collection, and Milvus owns durability, replication and sharding.
//!
//! Two Milvus collections per gallery. `<name>` holds one row per item: `id` (primary
//! key), `vector`, `metadata` (the item's JSON, verbatim), `terms` (what filters are
//! translated against, [`expr::terms`]), `content_hash` and `thumbnail` (base64 JPEG or PNG).
//! `<name>_paths` holds `server index`'s path records (Milvus wants a vector in every
//! collection: a constant 2-d one). The collection's description records the
//! [`IndexSpec`], so a server with another model refuses to open it.
//!
//! Reads wait as `index.milvus.consistency` says: by default (`session`) for this server's
//! own writes, so a replica always sees what it acknowledged and sees the other replicas'
//! writes a time tick later; `strong` makes every read wait for every acknowledged write
//! (about 250 ms a read on Milvus's default 200 ms time tick). Milvus has no transactions
//! across rows, so a
//! [`GalleryChange`] is applied in steps (deletions, items, metadata, path records) and
//! acknowledged when all are done; after a crash between steps an item may lack its path
//! record, and the next `server index` run embeds its file again (same id: replaced).

pub mod expr;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use milvus::client::{Client, ClientBuilder};
use milvus::data::FieldColumn;
use milvus::index::{IndexParams, IndexType, MetricType};
use milvus::mutate::{DeleteOptions, UpsertOptions};
use milvus::proto::schema::DataType;
use milvus::query::{QueryOptions, SearchOptions};
use milvus::schema::{CollectionSchema, CollectionSchemaBuilder, FieldSchema};
use milvus::value::{Value as MValue, ValueVec};

use super::{
    check_dim, merge_patch, validate_id, Found, Gallery, GalleryChange, GalleryStats, Hit, Item, Page, Query, Strategy,
};
use crate::filter::Filter;
use crate::index::{distance, nearest, HnswParams, Neighbor, Quantization};
use crate::rerank;
use crate::settings::{MilvusConsistency, MilvusIndexKind, MilvusSettings};
use crate::store::{IndexSpec, PathRecord, PathState, Record, StoredItem};
use crate::{Error, Result};

/// Most hits one Milvus search returns, and most rows one query does.
pub const MAX_TOPK: usize = 16384;
/// Longest VarChar Milvus stores.
const MAX_VARCHAR: usize = 65535;
// A file kept as its own thumbnail fits the thumbnail field once in base64.
const _: () = assert!(crate::embed::KEPT_FILE_BYTES.div_ceil(3) * 4 <= MAX_VARCHAR);
/// Rows per insert, upsert or `in [...]` lookup.
const CHUNK: usize = 256;
/// Milvus's number for the `session` consistency level.
const SESSION: i32 = 1;
/// How long after a deletion this server's `session` reads are `strong` (see
/// `MilvusGallery::read_level`): ten of Milvus's default 200 ms time ticks.
const STRONG_AFTER_DELETE: Duration = Duration::from_secs(2);
/// Dimension of the placeholder vector of the path-record collection.
const PATHS_DIM: usize = 2;

/// What a gallery's Milvus collection is made of, besides its name.
#[derive(Debug, Clone, Copy)]
pub struct MilvusIndex {
    pub kind: MilvusIndexKind,
    pub hnsw: HnswParams,
}

/// One gallery in a Milvus collection.
pub struct MilvusGallery {
    /// `None` only while dropped (see the `Drop` impl).
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    uri: String,
    items: String,
    paths: String,
    spec: IndexSpec,
    index: MilvusIndex,
    timeout: Duration,
    /// Milvus's number for the consistency level of reads.
    consistency: i32,
    /// When this server last deleted rows (see [`MilvusGallery::read_level`]).
    last_delete: std::sync::Mutex<Option<Instant>>,
    /// Serialises this server's writes, so read-modify-writes (metadata patches) do not
    /// lose each other's changes.
    writer: std::sync::Mutex<()>,
    frozen: AtomicBool,
    /// The last item count read, for `/stats` while Milvus does not answer.
    last_count: AtomicUsize,
}

impl Drop for MilvusGallery {
    fn drop(&mut self) {
        // A runtime dropped the plain way blocks, which panics where the last holder of
        // the gallery is an HTTP worker's async task.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A search hit as Milvus returned it.
struct Raw {
    id: String,
    distance: f32,
    metadata: serde_json::Value,
}

impl MilvusGallery {
    /// Connects to Milvus and opens (creating when absent) the collection `collection` for
    /// vectors described by `spec`; `also` is a model name the collection may record instead
    /// (see [`crate::store::Store::check_spec`]).
    pub fn open(
        settings: &MilvusSettings,
        collection: &str,
        spec: IndexSpec,
        also: Option<&str>,
        index: MilvusIndex,
    ) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("milvus")
            .enable_all()
            .build()
            .map_err(Error::io("the Milvus client's runtime"))?;
        let timeout = Duration::from_secs(settings.timeout_s);
        let fail =
            |reason: String| Error::Milvus { uri: settings.uri.clone(), collection: collection.to_string(), reason };
        let mut builder = ClientBuilder::new(settings.uri.clone()).timeout(timeout);
        if let (Some(u), Some(p)) = (&settings.user, &settings.password) {
            builder = builder.username(u).password(p);
        }
        // Not `block_on`: `server serve` opens galleries from within its own runtime.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, builder.build()).await);
        });
        let connect = rx.recv().map_err(|_| fail("the Milvus client failed (panicked) while connecting".into()))?;
        let client = match connect {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(fail(format!(
                    "cannot connect ({e}); start Milvus or point `index.milvus.uri` at its proxy"
                )))
            }
            Err(_) => return Err(fail(format!("no answer within {} s; is Milvus running there?", settings.timeout_s))),
        };
        let gallery = Self {
            rt: Some(rt),
            client,
            uri: settings.uri.clone(),
            items: collection.to_string(),
            paths: format!("{collection}_paths"),
            spec,
            index,
            timeout,
            consistency: match settings.consistency {
                MilvusConsistency::Strong => 0,
                MilvusConsistency::Session => SESSION,
                MilvusConsistency::Bounded => 2,
                MilvusConsistency::Eventually => 3,
            },
            last_delete: std::sync::Mutex::new(None),
            writer: std::sync::Mutex::new(()),
            frozen: AtomicBool::new(false),
            last_count: AtomicUsize::new(0),
        };
        gallery.prepare(also)?;
        gallery.last_count.store(gallery.count(None)?, Ordering::Relaxed);
        Ok(gallery)
    }

    /// The collections exist, record this spec, are indexed and loaded.
    fn prepare(&self, also: Option<&str>) -> Result<()> {
        let spec_text = serde_json::to_string(&self.spec).expect("specs serialise");
        let (items, paths) = (self.items.clone(), self.paths.clone());
        let (item_schema, path_schema) = (self.item_schema(&spec_text)?, self.path_schema()?);
        let (metric, params) = self.vector_index();
        let index_type = match self.index.kind {
            MilvusIndexKind::Hnsw => IndexType::HNSW,
            MilvusIndexKind::Flat => IndexType::Flat,
        };
        let stored = self.call("open the collection", move |c| async move {
            for (name, schema, field, index) in [
                (&items, item_schema, "vector", IndexParams::new("vector".into(), index_type, metric, params)),
                (
                    &paths,
                    path_schema,
                    "v",
                    IndexParams::new("v".into(), IndexType::Flat, MetricType::L2, HashMap::new()),
                ),
            ] {
                // Another replica or index job may be creating the same collection and
                // index at this moment: whichever call loses the race finds the other's.
                if !c.has_collection(name.as_str()).await? {
                    if let Err(e) = c.create_collection(schema, None).await {
                        if !c.has_collection(name.as_str()).await? {
                            return Err(e);
                        }
                    }
                }
                let indexed = |c: Client, name: String| async move {
                    c.describe_index(name, field.to_string()).await.map(|i| !i.is_empty()).unwrap_or(false)
                };
                if !indexed(c.clone(), name.clone()).await {
                    if let Err(e) = c.create_index(name.as_str(), field, index).await {
                        if !indexed(c.clone(), name.clone()).await {
                            return Err(e);
                        }
                    }
                }
                c.load_collection(name.as_str(), None).await?;
            }
            Ok(c.describe_collection(items.as_str()).await?.schema.description)
        })?;
        let found: IndexSpec = serde_json::from_str(&stored).map_err(|e| {
            self.fail(format!(
                "the collection was not made by this server (its description is not an index spec: {e}); name another one in `index.milvus.collection`"
            ))
        })?;
        let same = found.dim == self.spec.dim && found.distance == self.spec.distance;
        if same && (found.model == self.spec.model || also == Some(found.model.as_str())) {
            return Ok(());
        }
        Err(Error::IndexModelMismatch {
            path: PathBuf::from(format!("{}/{}", self.uri, self.items)),
            reason: format!(
                "the collection holds {}-d {:?} vectors of model `{}`, this model gives {}-d {:?} vectors and is `{}`",
                found.dim, found.distance, found.model, self.spec.dim, self.spec.distance, self.spec.model
            ),
        })
    }

    fn item_schema(&self, description: &str) -> Result<CollectionSchema> {
        CollectionSchemaBuilder::new(&self.items, description)
            .add_field(FieldSchema::new_primary_varchar("id", "item id", false, super::MAX_ID_LEN as i32))
            .add_field(FieldSchema::new_float_vector("vector", "embedding", self.spec.dim as i64))
            .add_field(FieldSchema::new_varchar("metadata", "metadata JSON, verbatim", MAX_VARCHAR as i32))
            .add_field(json_field(expr::TERMS, "what filters are translated against"))
            .add_field(FieldSchema::new_varchar("content_hash", "SHA-256 of the file", 64))
            .add_field(FieldSchema::new_varchar("thumbnail", "base64 JPEG", MAX_VARCHAR as i32))
            .build()
            .map_err(|e| self.fail(e.to_string()))
    }

    fn path_schema(&self) -> Result<CollectionSchema> {
        CollectionSchemaBuilder::new(&self.paths, "server index's path records")
            .add_field(FieldSchema::new_primary_varchar("path", "absolute source path", false, MAX_VARCHAR as i32))
            .add_field(FieldSchema::new_varchar("record", "the path record, JSON", MAX_VARCHAR as i32))
            .add_field(FieldSchema::new_float_vector("v", "placeholder", PATHS_DIM as i64))
            .build()
            .map_err(|e| self.fail(e.to_string()))
    }

    fn vector_index(&self) -> (MetricType, HashMap<String, String>) {
        let metric = match self.spec.distance {
            contract::Distance::Euclidean => MetricType::L2,
            contract::Distance::Cosine => MetricType::COSINE,
        };
        let params = match self.index.kind {
            MilvusIndexKind::Hnsw => HashMap::from([
                ("M".to_string(), self.index.hnsw.m.to_string()),
                ("efConstruction".to_string(), self.index.hnsw.ef_construction.to_string()),
            ]),
            MilvusIndexKind::Flat => HashMap::new(),
        };
        (metric, params)
    }

    fn fail(&self, reason: String) -> Error {
        Error::Milvus { uri: self.uri.clone(), collection: self.items.clone(), reason }
    }

    /// Runs one client call on the gallery's runtime and waits for it (callers are
    /// synchronous, some of them on an HTTP worker's own runtime). A panic in the client
    /// becomes an error.
    fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = milvus::error::Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.client.clone());
        let timeout = self.timeout;
        self.rt.as_ref().expect("the runtime lives as long as the gallery").spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, fut).await);
        });
        match rx.recv() {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(self.fail(format!("cannot {what}: {e}"))),
            Ok(Err(_)) => Err(self.fail(format!("cannot {what}: no answer within {} s", timeout.as_secs()))),
            Err(_) => Err(self.fail(format!("cannot {what}: the Milvus client failed (panicked)"))),
        }
    }

    /// Rows of `collection` passing `expr`, at most `limit`, in primary-key order.
    fn query(&self, collection: &str, expr: String, fields: &[&str], limit: usize) -> Result<Columns> {
        let collection = collection.to_string();
        let options = QueryOptions::new()
            .output_fields(fields.iter().map(|f| f.to_string()).collect())
            .limit(limit.min(MAX_TOPK) as i64)
            .consistency_level(self.read_level());
        let columns = self.call("query", move |c| async move { c.query(collection, &expr, &options).await })?;
        Ok(Columns(columns))
    }

    /// Every row of `collection` passing `expr`, page after page in key order (pages of
    /// `page` rows, at most [`MAX_TOPK`]); `visit` returns `false` to stop.
    #[allow(clippy::too_many_arguments)]
    fn scan_rows(
        &self,
        collection: &str,
        key: &str,
        expr: Option<&str>,
        from: Option<(&str, bool)>,
        fields: &[&str],
        page: usize,
        visit: &mut dyn FnMut(&Columns, usize) -> Result<bool>,
    ) -> Result<()> {
        let page = page.clamp(1, MAX_TOPK);
        let mut after: Option<(String, bool)> = from.map(|(k, inclusive)| (k.to_string(), inclusive));
        let mut with_key: Vec<&str> = fields.to_vec();
        if !with_key.contains(&key) {
            with_key.push(key);
        }
        loop {
            let mut clauses: Vec<String> = Vec::new();
            if let Some((k, inclusive)) = &after {
                clauses.push(format!("{key} {} {}", if *inclusive { ">=" } else { ">" }, expr::quote(k)));
            }
            clauses.extend(expr.map(str::to_string));
            let text = if clauses.is_empty() { format!("{key} != \"\"") } else { clauses.join(" and ") };
            let rows = self.query(collection, text, &with_key, page)?;
            let keys = rows.strings(key)?;
            for row in 0..keys.len() {
                if !visit(&rows, row)? {
                    return Ok(());
                }
            }
            match keys.last() {
                Some(last) if keys.len() == page => after = Some((last.clone(), false)),
                _ => return Ok(()),
            }
        }
    }

    /// Seals what was inserted and waits until the query node serves every row from a
    /// segment with its vector index loaded (until then Milvus searches new rows by brute
    /// force): for benchmarks.
    pub fn wait_indexed(&self, timeout: Duration) -> Result<()> {
        self.snapshot()?;
        let rows = self.count(None)?;
        let started = Instant::now();
        loop {
            let items = self.items.clone();
            let (indexed, total) = self.call("read the loaded segments", move |c| async move {
                let segments = c.list_loaded_segments(items).await?;
                let indexed: i64 = segments.iter().filter(|s| s.index_id != 0).map(|s| s.num_rows).sum();
                let total: i64 = segments.iter().map(|s| s.num_rows).sum();
                Ok((indexed, total))
            })?;
            if indexed as usize >= rows && total as usize >= rows {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(self
                    .fail(format!("{indexed} of {rows} rows are served from an index after {} s", timeout.as_secs())));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The consistency level of the next read. Milvus 2.3 acknowledges a deletion without
    /// the timestamp that `session` reads wait for (it does for inserts), so for a while
    /// after this server deleted something its reads are `strong`: it sees its own
    /// deletions at once as well.
    fn read_level(&self) -> i32 {
        const STRONG: i32 = 0;
        let deleted = *self.last_delete.lock().unwrap_or_else(|p| p.into_inner());
        if self.consistency == SESSION && deleted.is_some_and(|t| t.elapsed() < STRONG_AFTER_DELETE) {
            STRONG
        } else {
            self.consistency
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.frozen.load(Ordering::SeqCst) {
            return Err(Error::Upgrading);
        }
        Ok(())
    }

    /// Writes item rows (replacing rows of the same ids).
    fn upsert_items(&self, rows: Vec<ItemRow>) -> Result<()> {
        for chunk in rows.chunks(CHUNK) {
            let schema = self.item_schema("")?;
            let field = |name: &str| schema.get_field(name).expect("the item schema has this field").clone();
            let columns = vec![
                FieldColumn::new(&field("id"), chunk.iter().map(|r| r.id.clone()).collect::<Vec<_>>()),
                FieldColumn::new(
                    &field("vector"),
                    chunk.iter().flat_map(|r| r.vector.iter().copied()).collect::<Vec<f32>>(),
                ),
                FieldColumn::new(&field("metadata"), chunk.iter().map(|r| r.metadata.to_string()).collect::<Vec<_>>()),
                FieldColumn::new(
                    &field(expr::TERMS),
                    ValueVec::Json(chunk.iter().map(|r| expr::terms(&r.metadata).to_string().into_bytes()).collect()),
                ),
                FieldColumn::new(
                    &field("content_hash"),
                    chunk.iter().map(|r| r.content_hash.clone()).collect::<Vec<_>>(),
                ),
                FieldColumn::new(&field("thumbnail"), chunk.iter().map(|r| r.thumbnail.clone()).collect::<Vec<_>>()),
            ];
            let items = self.items.clone();
            self.call("store items", move |c| async move { c.upsert(items, columns, UpsertOptions::new()).await })?;
        }
        Ok(())
    }

    fn delete_keys(&self, collection: &str, key: &str, keys: &[String]) -> Result<()> {
        if !keys.is_empty() {
            *self.last_delete.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        for chunk in keys.chunks(CHUNK) {
            let options = DeleteOptions::with_filter(expr::one_of(key, chunk.iter().map(String::as_str)));
            let collection = collection.to_string();
            self.call("delete", move |c| async move { c.delete(collection, &options).await })?;
        }
        Ok(())
    }

    /// The full rows of `ids` (those that exist), by id.
    fn rows(&self, ids: &[String]) -> Result<HashMap<String, ItemRow>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let cols = self.query(
                &self.items,
                expr::one_of("id", chunk.iter().map(String::as_str)),
                &["id", "vector", "metadata", "content_hash", "thumbnail"],
                chunk.len(),
            )?;
            for row in cols.item_rows(self.spec.dim)? {
                out.insert(row.id.clone(), row);
            }
        }
        Ok(out)
    }

    fn set_path_records(&self, records: &[(PathBuf, PathRecord)]) -> Result<()> {
        for chunk in records.chunks(CHUNK) {
            let schema = self.path_schema()?;
            let field = |name: &str| schema.get_field(name).expect("the path schema has this field").clone();
            let columns = vec![
                FieldColumn::new(&field("path"), chunk.iter().map(|(p, _)| path_text(p)).collect::<Vec<_>>()),
                FieldColumn::new(
                    &field("record"),
                    chunk.iter().map(|(_, r)| serde_json::to_string(r).expect("records serialise")).collect::<Vec<_>>(),
                ),
                FieldColumn::new(&field("v"), vec![0f32; PATHS_DIM * chunk.len()]),
            ];
            let paths = self.paths.clone();
            self.call(
                "store path records",
                move |c| async move { c.upsert(paths, columns, UpsertOptions::new()).await },
            )?;
        }
        Ok(())
    }

    /// Milvus's nearest `limit` among the items `expr` passes.
    fn search_raw(&self, vector: &[f32], limit: usize, ef: Option<usize>, expr: Option<&str>) -> Result<Vec<Raw>> {
        let mut options = SearchOptions::new()
            .limit(limit)
            .output_fields(vec!["id".into()])
            .add_param("anns_field", "vector")
            .add_param("metric_type", self.vector_index().0.to_string())
            .consistency_level(self.read_level());
        if self.index.kind == MilvusIndexKind::Hnsw {
            // Milvus wants ef >= the hits asked for.
            let ef = ef.unwrap_or(self.index.hnsw.ef_search).max(limit);
            options = options.add_param("params", format!("{{\"ef\": {ef}}}"));
        }
        if let Some(e) = expr {
            options = options.filter(e.to_string());
        }
        let items = self.items.clone();
        let query = MValue::from(vector.to_vec());
        let results = self.call("search", move |c| async move {
            let found = c.search(items, vec![query], Some(options)).await?;
            // Owned values, so the answer can leave the task.
            Ok(found
                .into_iter()
                .map(|r| {
                    let ids: Vec<String> =
                        r.id.into_iter()
                            .map(|v| match v {
                                MValue::String(s) => s.into_owned(),
                                other => format!("{other:?}"),
                            })
                            .collect();
                    (ids, r.score)
                })
                .collect::<Vec<_>>())
        })?;
        let Some((ids, scores)) = results.into_iter().next() else {
            return Ok(Vec::new());
        };
        // The client cannot read a search's text fields from Milvus 2.3: the metadata is
        // fetched by id.
        let mut metadata: HashMap<String, serde_json::Value> = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let cols = self.query(
                &self.items,
                expr::one_of("id", chunk.iter().map(String::as_str)),
                &["id", "metadata"],
                chunk.len(),
            )?;
            for (row, id) in cols.strings("id")?.into_iter().enumerate() {
                metadata.insert(id, parse_metadata(&cols.string("metadata", row)?));
            }
        }
        Ok(ids
            .into_iter()
            .zip(scores)
            .filter_map(|(id, score)| {
                let m = metadata.remove(&id)?;
                Some(Raw { id, distance: self.to_distance(score), metadata: m })
            })
            .collect())
    }

    /// Milvus's score as this crate's [`distance`]: L2 scores are squared, cosine scores
    /// are similarities.
    fn to_distance(&self, score: f32) -> f32 {
        match self.spec.distance {
            contract::Distance::Euclidean => score.max(0.0).sqrt(),
            contract::Distance::Cosine => (1.0 - score).max(0.0),
        }
    }

    fn find_excluding(&self, query: &Query, exclude: Option<&str>) -> Result<Found> {
        check_dim(&self.spec, &query.vector)?;
        if query.vector.iter().any(|x| !x.is_finite()) {
            return Err(Error::BadRequest("the query vector contains NaN or infinite values".into()));
        }
        let paged = query.offset.saturating_add(query.k);
        let want = query.rerank.map_or(paged, |r| r.depth.max(paged));
        if want > MAX_TOPK {
            return Err(Error::BadRequest(format!(
                "offset + k = {want} is more than the {MAX_TOPK} hits Milvus returns; page with a smaller offset or filter more"
            )));
        }
        let filter = query.filter.as_ref().filter(|f| !f.is_empty());
        let translated = filter.map(expr::translate);
        let mut clauses: Vec<String> = exclude.map(|id| format!("id != {}", expr::quote(id))).into_iter().collect();
        clauses.extend(translated.as_ref().and_then(|t| t.expr.clone()));
        let pushed = (!clauses.is_empty()).then(|| clauses.join(" and "));
        let post = filter.filter(|_| translated.as_ref().is_some_and(|t| !t.exact));
        let (mut found, strategy) = match post {
            None => {
                let strategy = if filter.is_some() { Strategy::FilteredIndex } else { Strategy::Index };
                (self.search_raw(&query.vector, want, query.ef, pushed.as_deref())?, strategy)
            }
            Some(f) => self.search_checked(query, want, pushed.as_deref(), f)?,
        };
        if let Some(m) = query.max_distance {
            found.retain(|r| r.distance <= m);
        }
        let scored: Vec<(Raw, Option<f32>)> = match query.rerank {
            Some(r) if found.len() > 1 => {
                let ids: Vec<String> = found.iter().map(|h| h.id.clone()).collect();
                let rows = self.rows(&ids)?;
                let mut by_key: HashMap<u64, Raw> = HashMap::new();
                let mut candidates = Vec::new();
                for (key, raw) in found.into_iter().enumerate() {
                    if let Some(row) = rows.get(&raw.id) {
                        candidates.push((Neighbor { key: key as u64, distance: raw.distance }, row.vector.clone()));
                        by_key.insert(key as u64, raw);
                    }
                }
                rerank::rerank(&query.vector, candidates, r)
                    .into_iter()
                    .filter_map(|(n, s)| by_key.remove(&n.key).map(|raw| (raw, Some(s))))
                    .collect()
            }
            _ => found.into_iter().map(|r| (r, None)).collect(),
        };
        let hits = scored
            .into_iter()
            .skip(query.offset)
            .take(query.k)
            .map(|(r, score)| Hit { id: r.id, distance: r.distance, metadata: r.metadata, score })
            .collect();
        Ok(Found { hits, strategy })
    }

    /// A search whose filter Milvus passes a superset of: more candidates are asked for
    /// until `want` pass the filter; past [`MAX_TOPK`], every item Milvus passes is compared.
    fn search_checked(
        &self,
        query: &Query,
        want: usize,
        pushed: Option<&str>,
        filter: &Filter,
    ) -> Result<(Vec<Raw>, Strategy)> {
        let mut limit = (want * 4).clamp(1, MAX_TOPK);
        loop {
            let raw = self.search_raw(&query.vector, limit, query.ef, pushed)?;
            let complete = raw.len() < limit;
            let passed: Vec<Raw> = raw.into_iter().filter(|r| filter.matches(&r.metadata)).collect();
            if passed.len() >= want || complete {
                return Ok((passed.into_iter().take(want).collect(), Strategy::FilteredIndex));
            }
            if limit == MAX_TOPK {
                break;
            }
            limit = (limit * 4).min(MAX_TOPK);
        }
        let mut candidates: Vec<(Neighbor, Raw)> = Vec::new();
        let metric = self.spec.distance;
        let dim = self.spec.dim;
        self.scan_rows(&self.items, "id", pushed, None, &["id", "vector", "metadata"], MAX_TOPK, &mut |cols, row| {
            let metadata = parse_metadata(&cols.string("metadata", row)?);
            if filter.matches(&metadata) {
                let v = cols.vector("vector", row, dim)?;
                let d = distance(metric, &query.vector, &v);
                let key = candidates.len() as u64;
                candidates
                    .push((Neighbor { key, distance: d }, Raw { id: cols.string("id", row)?, distance: d, metadata }));
            }
            Ok(true)
        })?;
        let best = nearest(candidates.iter().map(|(n, _)| *n).collect(), want);
        let mut slots: Vec<Option<Raw>> = candidates.into_iter().map(|(_, r)| Some(r)).collect();
        let found = best.into_iter().filter_map(|n| slots[n.key as usize].take()).collect();
        Ok((found, Strategy::FilteredIndexThenScan))
    }
}

/// One item row as stored.
#[derive(Debug, Clone)]
struct ItemRow {
    id: String,
    vector: Vec<f32>,
    metadata: serde_json::Value,
    content_hash: String,
    /// base64; empty when none.
    thumbnail: String,
}

/// The columns a query returned.
struct Columns(Vec<FieldColumn>);

impl Columns {
    fn column(&self, name: &str) -> Result<&FieldColumn> {
        self.0.iter().find(|c| c.name == name).ok_or_else(|| Error::Milvus {
            uri: String::new(),
            collection: String::new(),
            reason: format!("an answer lacks the field `{name}`"),
        })
    }

    fn strings(&self, name: &str) -> Result<Vec<String>> {
        match &self.column(name)?.value {
            ValueVec::String(v) => Ok(v.clone()),
            other => Err(bad_column(name, other)),
        }
    }

    fn string(&self, name: &str, row: usize) -> Result<String> {
        match &self.column(name)?.value {
            ValueVec::String(v) => v.get(row).cloned().ok_or_else(|| bad_column(name, &ValueVec::None)),
            other => Err(bad_column(name, other)),
        }
    }

    fn vector(&self, name: &str, row: usize, dim: usize) -> Result<Vec<f32>> {
        match &self.column(name)?.value {
            ValueVec::Float(v) if v.len() >= (row + 1) * dim => Ok(v[row * dim..(row + 1) * dim].to_vec()),
            other => Err(bad_column(name, other)),
        }
    }

    fn item_rows(&self, dim: usize) -> Result<Vec<ItemRow>> {
        let ids = self.strings("id")?;
        (0..ids.len())
            .map(|row| {
                Ok(ItemRow {
                    id: ids[row].clone(),
                    vector: self.vector("vector", row, dim)?,
                    metadata: parse_metadata(&self.string("metadata", row)?),
                    content_hash: self.string("content_hash", row)?,
                    thumbnail: self.string("thumbnail", row)?,
                })
            })
            .collect()
    }
}

fn kind_of(v: &ValueVec) -> &'static str {
    match v {
        ValueVec::None => "no values",
        ValueVec::String(_) => "text",
        ValueVec::Json(_) => "JSON",
        ValueVec::Float(_) => "floats",
        ValueVec::Long(_) | ValueVec::Int(_) => "integers",
        _ => "another type",
    }
}

fn bad_column(name: &str, got: &ValueVec) -> Error {
    let kind = kind_of(got);
    Error::Milvus {
        uri: String::new(),
        collection: String::new(),
        reason: format!("field `{name}`: unexpected {kind}"),
    }
}

/// Refuses metadata Milvus would not store: its text, or the filter terms made from it,
/// past the 64 KiB a VarChar and a JSON field hold.
fn check_fits(id: &str, metadata: &serde_json::Value) -> Result<()> {
    let (text, terms) = (metadata.to_string().len(), expr::terms(metadata).to_string().len());
    if text > MAX_VARCHAR || terms > MAX_VARCHAR {
        return Err(Error::BadRequest(format!(
            "the metadata of `{id}` is {text} bytes of JSON ({terms} as filter terms); the milvus backend keeps at most {MAX_VARCHAR} of each: store less per item"
        )));
    }
    Ok(())
}

fn json_field(name: &str, description: &str) -> FieldSchema {
    let mut f = FieldSchema::new_varchar(name, description, 1);
    f.dtype = DataType::Json;
    f.max_length = 0;
    f
}

fn parse_metadata(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Gallery for MilvusGallery {
    fn spec(&self) -> &IndexSpec {
        &self.spec
    }

    fn apply(&self, change: GalleryChange) -> Result<Vec<String>> {
        self.check_writable()?;
        change.check(&self.spec)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let rows: Vec<ItemRow> = change
            .insert
            .into_iter()
            .map(|img| {
                let thumbnail = img.thumbnail.map(|t| b64.encode(t)).unwrap_or_default();
                ItemRow {
                    id: img.id.unwrap_or_else(|| format!("{:032x}", rand::random::<u128>())),
                    vector: img.vector,
                    metadata: img.metadata,
                    content_hash: img.content_hash.unwrap_or_default(),
                    // Milvus keeps at most 64 KiB of text: a larger thumbnail (the server
                    // makes them far smaller) is left out, and said so.
                    thumbnail: if thumbnail.len() <= MAX_VARCHAR {
                        thumbnail
                    } else {
                        tracing::warn!(bytes = thumbnail.len(), "a thumbnail too large for Milvus is not stored");
                        String::new()
                    },
                }
            })
            .collect();
        // Everything is checked before the first write: Milvus has no transactions, so a
        // refusal half way would leave the change half applied.
        for r in &rows {
            check_fits(&r.id, &r.metadata)?;
        }
        for (id, metadata) in &change.set_metadata {
            check_fits(id, metadata)?;
        }
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        // One row per id, the last one given (as the embedded backend keeps it): Milvus
        // would store both copies of a key written twice in one request.
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            last.insert(r.id.clone(), i);
        }
        let rows: Vec<ItemRow> =
            rows.into_iter().enumerate().filter(|(i, r)| last[&r.id] == *i).map(|(_, r)| r).collect();
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.delete_keys(&self.items, "id", &change.delete)?;
        self.upsert_items(rows)?;
        if !change.set_metadata.is_empty() {
            let wanted: Vec<String> = change.set_metadata.iter().map(|(id, _)| id.clone()).collect();
            let mut stored = self.rows(&wanted)?;
            let updated: Vec<ItemRow> = change
                .set_metadata
                .into_iter()
                .filter_map(|(id, metadata)| stored.remove(&id).map(|row| ItemRow { metadata, ..row }))
                .collect();
            self.upsert_items(updated)?;
        }
        self.set_path_records(&change.set_paths)?;
        let gone: Vec<String> = change.remove_paths.iter().map(|p| path_text(p)).collect();
        self.delete_keys(&self.paths, "path", &gone)?;
        Ok(ids)
    }

    fn delete(&self, id: &str) -> Result<bool> {
        validate_id(id)?;
        self.check_writable()?;
        let known = self.get(id)?.is_some();
        if known {
            self.delete_keys(&self.items, "id", &[id.to_string()])?;
        }
        Ok(known)
    }

    fn patch_metadata(&self, id: &str, patch: &serde_json::Value) -> Result<Option<Record>> {
        validate_id(id)?;
        self.check_writable()?;
        // Read, merge and write under the lock, so that concurrent patches through this
        // server all land (across replicas the last write wins).
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(row) = self.rows(&[id.to_string()])?.remove(id) else {
            return Ok(None);
        };
        let mut metadata = row.metadata.clone();
        merge_patch(&mut metadata, patch);
        check_fits(id, &metadata)?;
        let record = Record {
            id: id.to_string(),
            metadata: metadata.clone(),
            content_hash: Some(row.content_hash.clone()).filter(|h| !h.is_empty()),
        };
        self.upsert_items(vec![ItemRow { metadata, ..row }])?;
        Ok(Some(record))
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }

    fn path_states(&self, files: &[PathBuf]) -> Result<Vec<Option<PathState>>> {
        let mut records: HashMap<String, PathRecord> = HashMap::new();
        let texts: Vec<String> = files.iter().map(|p| path_text(p)).collect();
        for chunk in texts.chunks(CHUNK) {
            let cols = self.query(
                &self.paths,
                expr::one_of("path", chunk.iter().map(String::as_str)),
                &["path", "record"],
                chunk.len(),
            )?;
            for (row, path) in cols.strings("path")?.into_iter().enumerate() {
                if let Ok(r) = serde_json::from_str::<PathRecord>(&cols.string("record", row)?) {
                    records.insert(path, r);
                }
            }
        }
        let ids: Vec<String> = records.values().map(|r| r.id.clone()).collect();
        let mut hashes: HashMap<String, String> = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let cols = self.query(
                &self.items,
                expr::one_of("id", chunk.iter().map(String::as_str)),
                &["id", "content_hash"],
                chunk.len(),
            )?;
            for (row, id) in cols.strings("id")?.into_iter().enumerate() {
                hashes.insert(id, cols.string("content_hash", row)?);
            }
        }
        Ok(files
            .iter()
            .map(|p| {
                records
                    .get(&path_text(p))
                    .map(|r| PathState { item_current: hashes.get(&r.id) == Some(&r.content_hash), record: r.clone() })
            })
            .collect())
    }

    fn paths_under(&self, root: &Path) -> Result<Vec<(PathBuf, PathRecord)>> {
        let prefix = path_text(root);
        let mut out = Vec::new();
        self.scan_rows(
            &self.paths,
            "path",
            None,
            Some((&prefix, true)),
            &["path", "record"],
            MAX_TOPK,
            &mut |cols, row| {
                let text = cols.string("path", row)?;
                if !text.starts_with(&prefix) {
                    return Ok(false);
                }
                let path = PathBuf::from(&text);
                if path.starts_with(root) {
                    let record = serde_json::from_str(&cols.string("record", row)?)
                        .map_err(|e| self.fail(format!("the path record of {text} is corrupt: {e}")))?;
                    out.push((path, record));
                }
                Ok(true)
            },
        )?;
        Ok(out)
    }

    fn get(&self, id: &str) -> Result<Option<Record>> {
        validate_id(id)?;
        let cols =
            self.query(&self.items, format!("id == {}", expr::quote(id)), &["id", "metadata", "content_hash"], 1)?;
        if cols.strings("id")?.is_empty() {
            return Ok(None);
        }
        Ok(Some(Record {
            id: id.to_string(),
            metadata: parse_metadata(&cols.string("metadata", 0)?),
            content_hash: Some(cols.string("content_hash", 0)?).filter(|h| !h.is_empty()),
        }))
    }

    fn vector(&self, id: &str) -> Result<Option<Vec<f32>>> {
        validate_id(id)?;
        Ok(self.rows(&[id.to_string()])?.remove(id).map(|r| r.vector))
    }

    fn thumbnail(&self, id: &str) -> Result<Option<Vec<u8>>> {
        validate_id(id)?;
        let Some(row) = self.rows(&[id.to_string()])?.remove(id) else {
            return Ok(None);
        };
        if row.thumbnail.is_empty() {
            return Ok(None);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&row.thumbnail)
            .map_err(|e| self.fail(format!("the thumbnail of `{id}` is not base64: {e}")))?;
        Ok(Some(bytes))
    }

    fn original(&self, id: &str) -> Result<Option<Vec<u8>>> {
        validate_id(id)?;
        // Originals are not kept in Milvus (`keep_originals` is refused at start).
        Ok(None)
    }

    fn has_hash(&self, hash: &str) -> Result<bool> {
        let cols = self.query(&self.items, format!("content_hash == {}", expr::quote(hash)), &["id"], 1)?;
        Ok(!cols.strings("id")?.is_empty())
    }

    fn find(&self, query: &Query) -> Result<Found> {
        self.find_excluding(query, None)
    }

    fn similar(&self, id: &str, query: &Query) -> Result<Option<Found>> {
        let Some(vector) = self.vector(id)? else {
            return Ok(None);
        };
        self.find_excluding(&Query { vector, ..query.clone() }, Some(id)).map(Some)
    }

    fn list(&self, filter: Option<&Filter>, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let filter = filter.filter(|f| !f.is_empty());
        let translated = filter.map(expr::translate);
        let pushed = translated.as_ref().and_then(|t| t.expr.clone());
        let check = filter.filter(|_| translated.as_ref().is_some_and(|t| !t.exact));
        let mut items = Vec::new();
        let mut more = false;
        self.scan_rows(
            &self.items,
            "id",
            pushed.as_deref(),
            cursor.map(|c| (c, false)),
            &["id", "metadata"],
            // One more row than the page tells whether there is a next one; a filter that
            // Milvus only narrows reads ahead further.
            if check.is_some() { limit.saturating_add(1).saturating_mul(4) } else { limit.saturating_add(1) },
            &mut |cols, row| {
                let metadata = parse_metadata(&cols.string("metadata", row)?);
                if check.is_some_and(|f| !f.matches(&metadata)) {
                    return Ok(true);
                }
                if items.len() == limit {
                    more = true;
                    return Ok(false);
                }
                items.push(Item { id: cols.string("id", row)?, metadata });
                Ok(true)
            },
        )?;
        let next_cursor = if more { items.last().map(|i| i.id.clone()) } else { None };
        Ok(Page { items, next_cursor })
    }

    fn count(&self, filter: Option<&Filter>) -> Result<usize> {
        let filter = filter.filter(|f| !f.is_empty());
        let translated = filter.map(expr::translate);
        let pushed = translated.as_ref().and_then(|t| t.expr.clone());
        if let Some(f) = filter.filter(|_| translated.as_ref().is_some_and(|t| !t.exact)) {
            let mut n = 0;
            self.scan_rows(
                &self.items,
                "id",
                pushed.as_deref(),
                None,
                &["id", "metadata"],
                MAX_TOPK,
                &mut |cols, row| {
                    n += usize::from(f.matches(&parse_metadata(&cols.string("metadata", row)?)));
                    Ok(true)
                },
            )?;
            return Ok(n);
        }
        let items = self.items.clone();
        let text = pushed.unwrap_or_else(|| expr::ALL.to_string());
        let options = QueryOptions::new().output_fields(vec!["count(*)".into()]).consistency_level(self.read_level());
        let cols = self.call("count", move |c| async move { c.query(items, &text, &options).await })?;
        let n = match cols.first().map(|c| &c.value) {
            Some(ValueVec::Long(v)) => v.first().copied().unwrap_or(0),
            _ => return Err(self.fail("count(*) answered no number".into())),
        };
        let n = usize::try_from(n).unwrap_or(0);
        if filter.is_none() {
            self.last_count.store(n, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn stats(&self) -> GalleryStats {
        let images = self.count(None).unwrap_or_else(|e| {
            tracing::warn!("reporting the last item count: {e}");
            self.last_count.load(Ordering::Relaxed)
        });
        GalleryStats {
            images,
            graph_points: images,
            tombstones: 0,
            dim: self.spec.dim,
            distance: self.spec.distance,
            index: "milvus",
            quantization: Quantization::F32.name(),
        }
    }

    fn snapshot(&self) -> Result<()> {
        // Milvus persists by itself; sealing the growing segments makes its restart faster.
        let items = self.items.clone();
        self.call("flush", move |c| async move { c.flush(items).await })
    }

    fn visit_all(
        &self,
        item: &mut dyn FnMut(StoredItem) -> Result<()>,
        path: &mut dyn FnMut(PathBuf, PathRecord) -> Result<()>,
    ) -> Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let dim = self.spec.dim;
        let fields = ["id", "vector", "metadata", "content_hash", "thumbnail"];
        self.scan_rows(&self.items, "id", None, None, &fields, MAX_TOPK, &mut |cols, row| {
            let thumbnail = cols.string("thumbnail", row)?;
            let content_hash = cols.string("content_hash", row)?;
            item(StoredItem {
                record: Record {
                    id: cols.string("id", row)?,
                    metadata: parse_metadata(&cols.string("metadata", row)?),
                    content_hash: Some(content_hash).filter(|h| !h.is_empty()),
                },
                vector: cols.vector("vector", row, dim)?,
                thumbnail: b64.decode(thumbnail).ok().filter(|t| !t.is_empty()),
                original: None,
            })?;
            Ok(true)
        })?;
        self.scan_rows(&self.paths, "path", None, None, &["path", "record"], MAX_TOPK, &mut |cols, row| {
            let text = cols.string("path", row)?;
            let record = serde_json::from_str(&cols.string("record", row)?)
                .map_err(|e| self.fail(format!("the path record of {text} is corrupt: {e}")))?;
            path(PathBuf::from(text), record)?;
            Ok(true)
        })
    }

    fn write_snapshot(&self, _name: &str, _model: &Path, _out: &Path) -> Result<crate::snapshot::Header> {
        Err(Error::NotOnBackend {
            what: "writing a snapshot file".into(),
            backend: "milvus",
            instead: "back the collection up with Milvus's own backup tool".into(),
        })
    }
}
