//! Named collections, each with its own model file, index and batcher. The `default`
//! collection is the server's `model` and `index_dir`; others are declared in the config
//! file (`[collections.NAME]`) or created through the API. An API-created collection lives
//! in `collections_dir/NAME/`: a copy of its model (`model.onnx`), its index, and
//! `collection.json` naming it, so it is reopened at the next start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
use crate::gallery::{Gallery, GalleryStats, IndexKind};
use crate::metrics::Metrics;
use crate::serve;
use crate::settings::{Backend, Settings};
use crate::snapshot;
use crate::upgrade;
use crate::{Error, Result};

/// Name of the collection the routes without `/collections/{name}` use.
pub const DEFAULT: &str = "default";
/// Longest collection name.
pub const MAX_NAME_LEN: usize = 64;
/// The file that marks an API-created collection's folder.
const MARKER: &str = "collection.json";
/// The model copy inside an API-created collection's folder.
const MODEL_FILE: &str = "model.onnx";

/// What a new collection is made from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A model file (empty index).
    Model(&'a Path),
    /// A snapshot file (its model and items).
    Snapshot(&'a Path),
}

/// Where a collection was defined, which decides who may drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The server's `model` and `index_dir`.
    Default,
    /// `[collections.NAME]` in the config file.
    Config,
    /// `POST /collections`.
    Api,
}

/// One collection: a model, its batcher and the gallery of its vectors.
pub struct Collection {
    pub name: String,
    pub origin: Origin,
    pub model_path: PathBuf,
    /// The collection's home folder.
    pub index_dir: PathBuf,
    /// Where its live index is: the home, or the version folder an upgrade made.
    pub live_dir: PathBuf,
    pub gallery: Arc<dyn Gallery>,
    pub embedder: Arc<Embedder>,
    /// Uploaded files are kept, to re-embed them with another model.
    pub keep_originals: bool,
}

/// What `GET /collections` says of one.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub origin: Origin,
    /// The model file on the server, only where the caller asked for paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    pub arch: String,
    pub keep_originals: bool,
    pub index: GalleryStats,
}

impl Collection {
    /// Its description; with `paths`, where its model file is.
    pub fn info(&self, paths: bool) -> CollectionInfo {
        CollectionInfo {
            name: self.name.clone(),
            origin: self.origin,
            model: paths.then(|| self.model_path.clone()),
            arch: self.embedder.manifest().arch.clone(),
            keep_originals: self.keep_originals,
            index: self.gallery.stats(),
        }
    }
}

/// What `collection.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    name: String,
    /// `None`: the server's `keep_originals`.
    #[serde(default)]
    keep_originals: Option<bool>,
}

/// Checks a collection name: 1 to [`MAX_NAME_LEN`] characters from `a-z 0-9 _ -`,
/// starting with a letter or digit (names are folder names and URL segments).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidCollection { name: name.chars().take(MAX_NAME_LEN).collect(), reason: reason.into() })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad(&format!("names are 1 to {MAX_NAME_LEN} characters long"));
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')) {
        return bad("names may contain only lower-case letters, digits, '_' and '-'");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("names start with a letter or a digit");
    }
    Ok(())
}

/// Where the collection `name` of a server with `settings` lives and its configured model,
/// without opening it (for `server index --collection`).
pub fn locate(settings: &Settings, name: &str) -> Result<(PathBuf, PathBuf)> {
    validate_name(name)?;
    if name == DEFAULT {
        return Ok((settings.index_dir.clone(), settings.model.clone()));
    }
    if let Some(c) = settings.collections.get(name) {
        let dir = c.index_dir.clone().unwrap_or_else(|| settings.collections_dir().join(name));
        return Ok((dir, c.model.clone()));
    }
    let dir = settings.collections_dir().join(name);
    if dir.join(MARKER).is_file() {
        return Ok((dir.clone(), dir.join(MODEL_FILE)));
    }
    Err(Error::CollectionNotFound { name: name.to_string() })
}

/// Every collection of a server.
pub struct Collections {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    map: RwLock<BTreeMap<String, Arc<Collection>>>,
    /// Serialises creating, dropping and swapping.
    changing: Mutex<()>,
    /// The last upgrade of each collection, running or ended.
    upgrades: Mutex<BTreeMap<String, upgrade::Status>>,
    /// Upgrades built and waiting for `swap` or `discard`.
    pending: Mutex<BTreeMap<String, upgrade::Built>>,
}

impl Collections {
    /// Opens the default collection, the declared ones and the API-created ones found in
    /// `collections_dir`.
    pub fn open(settings: Arc<Settings>, metrics: Arc<Metrics>) -> Result<Self> {
        let this = Self {
            settings,
            metrics,
            map: RwLock::new(BTreeMap::new()),
            changing: Mutex::new(()),
            upgrades: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(BTreeMap::new()),
        };
        let s = this.settings.clone();
        if s.index.backend == Backend::Milvus {
            let created = Self::created(&s.collections_dir())?;
            let mut names: Vec<&str> = vec![DEFAULT];
            names.extend(s.collections.keys().map(String::as_str));
            names.extend(created.iter().map(|(n, _, _)| n.as_str()).filter(|n| !s.collections.contains_key(*n)));
            serve::check_milvus_names(&s, &names)?;
        }
        this.add(this.open_one(DEFAULT, Origin::Default, &s.model, &s.index_dir, s.keep_originals)?);
        for (name, c) in &s.collections {
            validate_name(name)
                .map_err(|e| Error::Settings { source_name: format!("collections.{name}"), reason: e.to_string() })?;
            if name == DEFAULT {
                return Err(Error::Settings {
                    source_name: format!("collections.{name}"),
                    reason: "`default` is the server's own `model` and `index_dir`; name this collection otherwise"
                        .into(),
                });
            }
            let dir = c.index_dir.clone().unwrap_or_else(|| s.collections_dir().join(name));
            this.add(this.open_one(
                name,
                Origin::Config,
                &c.model,
                &dir,
                c.keep_originals.unwrap_or(s.keep_originals),
            )?);
        }
        for (name, keep, dir) in Self::created(&s.collections_dir())? {
            if this.map.read().unwrap_or_else(|p| p.into_inner()).contains_key(&name) {
                tracing::warn!(name, dir = %dir.display(), "a collection folder has the name of a declared one; the declared one is used");
                continue;
            }
            this.add(this.open_one(
                &name,
                Origin::Api,
                &dir.join(MODEL_FILE),
                &dir,
                keep.unwrap_or(s.keep_originals),
            )?);
        }
        Ok(this)
    }

    /// The API-created collections under `root`, by their marker files.
    fn created(root: &Path) -> Result<Vec<(String, Option<bool>, PathBuf)>> {
        let Ok(entries) = std::fs::read_dir(root) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let marker = dir.join(MARKER);
            let Ok(text) = std::fs::read_to_string(&marker) else { continue };
            let m: Marker = serde_json::from_str(&text).map_err(|e| Error::Store {
                path: marker.clone(),
                reason: format!("the collection marker is corrupt ({e}); remove the folder or fix the file"),
            })?;
            out.push((m.name, m.keep_originals, dir));
        }
        out.sort();
        Ok(out)
    }

    fn open_one(
        &self,
        name: &str,
        origin: Origin,
        model: &Path,
        dir: &Path,
        keep_originals: bool,
    ) -> Result<Collection> {
        let s = &self.settings;
        if keep_originals && s.index.backend == Backend::Milvus {
            return Err(Error::Settings {
                source_name: format!("keep_originals (collection `{name}`)"),
                reason: "the milvus backend keeps no original files; turn keep_originals off".into(),
            });
        }
        let (live, upgraded) = upgrade::resolve(dir)?;
        upgrade::remove_leftovers(dir, &live);
        if let Some(m) = &upgraded {
            if origin != Origin::Api {
                tracing::warn!(collection = name, configured = %model.display(), live = %m.display(), "the collection was upgraded; serving the model of its live version, not the configured one (point `model` at the new model to silence this)");
            }
        }
        let model = serve::open_model_file(s, upgraded.as_deref().unwrap_or(model))?;
        let gallery = serve::open_collection_gallery(s, name, &live, &model, IndexKind::Hnsw)?;
        let embedder = Arc::new(Embedder::new(model.clone(), &s.batch, s.max_image_pixels, self.metrics.clone()));
        tracing::info!(collection = name, model = %model.path().display(), "opened the collection");
        Ok(Collection {
            name: name.to_string(),
            origin,
            model_path: model.path().to_path_buf(),
            index_dir: dir.to_path_buf(),
            live_dir: live,
            gallery,
            embedder,
            keep_originals,
        })
    }

    /// Refuses `what` on the Milvus backend: it would change only this replica's files.
    fn not_on_milvus(&self, what: &str, instead: &str) -> Result<()> {
        if self.settings.index.backend == Backend::Milvus {
            return Err(Error::NotOnBackend { what: what.into(), backend: "milvus", instead: instead.into() });
        }
        Ok(())
    }

    fn add(&self, c: Collection) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).insert(c.name.clone(), Arc::new(c));
    }

    /// The collection called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Collection>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound { name: name.chars().take(MAX_NAME_LEN).collect() })
    }

    /// The default collection.
    pub fn default_collection(&self) -> Arc<Collection> {
        self.get(DEFAULT).expect("the default collection is opened first and never dropped")
    }

    /// Every collection, by name.
    pub fn all(&self) -> Vec<Arc<Collection>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Creates a collection from `source` (a model file on the server, copied into the
    /// collection's folder, or a snapshot, unpacked there) and returns it.
    pub fn create(&self, name: &str, source: Source, keep_originals: Option<bool>) -> Result<Arc<Collection>> {
        validate_name(name)?;
        self.not_on_milvus(
            "creating a collection through the API",
            "declare it under [collections.NAME] in the settings file of every replica",
        )?;
        let _c = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        if self.get(name).is_ok() {
            return Err(Error::CollectionExists { name: name.to_string() });
        }
        let root = self.settings.collections_dir();
        let dir = root.join(name);
        if dir.exists() {
            return Err(Error::CollectionExists { name: name.to_string() });
        }
        let given = match source {
            Source::Model(p) | Source::Snapshot(p) => p,
        };
        if !given.is_file() {
            return Err(Error::InvalidCollection {
                name: name.to_string(),
                reason: format!(
                    "{} is not a file on the server; pass the path of a model written by `trainer export`, or of a snapshot",
                    given.display()
                ),
            });
        }
        // Built in a staging folder and renamed into place, so a failure leaves nothing.
        let staging = root.join(format!(".{name}.creating"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(Error::io(&staging))?;
        let built = (|| -> Result<()> {
            match source {
                Source::Model(model) => {
                    std::fs::copy(model, staging.join(MODEL_FILE)).map_err(Error::io(model))?;
                    // Check the model before the collection exists.
                    serve::open_model_file(&self.settings, &staging.join(MODEL_FILE))?;
                }
                Source::Snapshot(file) => {
                    let (header, _) = snapshot::unpack(file, &staging, &self.settings.hnsw)?;
                    tracing::info!(collection = name, from = %header.collection, items = header.items, "restored a snapshot");
                }
            }
            let marker =
                serde_json::to_string(&Marker { name: name.to_string(), keep_originals }).expect("markers serialise");
            std::fs::write(staging.join(MARKER), marker).map_err(Error::io(staging.join(MARKER)))?;
            std::fs::rename(&staging, &dir).map_err(Error::io(&dir))
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let keep = keep_originals.unwrap_or(self.settings.keep_originals);
        let c = self.open_one(name, Origin::Api, &dir.join(MODEL_FILE), &dir, keep)?;
        self.add(c);
        self.get(name)
    }

    /// Writes a snapshot of the collection `name` into the snapshots folder; returns its
    /// path and header.
    pub fn snapshot(&self, name: &str) -> Result<(PathBuf, snapshot::Header)> {
        let c = self.get(name)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let out = self.settings.snapshots_dir().join(format!("{name}-{stamp}.snapshot.tar"));
        let header = c.gallery.write_snapshot(name, &c.model_path, &out)?;
        tracing::info!(collection = name, file = %out.display(), items = header.items, "wrote a snapshot");
        Ok((out, header))
    }

    /// Drops an API-created collection and deletes its folder; `Ok(false)` when unknown.
    /// Searches already running on it finish first (they hold it).
    pub fn drop_collection(&self, name: &str) -> Result<bool> {
        let _c = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(c) = self.get(name) else {
            return Ok(false);
        };
        if matches!(self.upgrade_status(name), Some(upgrade::Status::Running { .. } | upgrade::Status::Ready { .. })) {
            return Err(Error::Upgrading);
        }
        match c.origin {
            Origin::Api => {}
            Origin::Default => {
                return Err(Error::InvalidCollection {
                    name: name.into(),
                    reason: "the default collection cannot be dropped".into(),
                })
            }
            Origin::Config => {
                return Err(Error::InvalidCollection {
                    name: name.into(),
                    reason: "it is declared in the config file; remove it there and restart".into(),
                })
            }
        }
        self.map.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        // Renamed away first, so a crash mid-delete never leaves a half collection that
        // the next start would open.
        let gone = self.settings.collections_dir().join(format!(".{name}.dropped"));
        let _ = std::fs::remove_dir_all(&gone);
        std::fs::rename(&c.index_dir, &gone).map_err(Error::io(&c.index_dir))?;
        drop(c);
        std::fs::remove_dir_all(&gone).map_err(Error::io(&gone))?;
        tracing::info!(collection = name, "dropped the collection");
        Ok(true)
    }

    /// Starts re-embedding the collection `name` with another model in the background
    /// (see [`crate::upgrade`]); [`Collections::upgrade_status`] follows it.
    pub fn start_upgrade(self: &Arc<Self>, name: &str, req: upgrade::Request) -> Result<()> {
        let old = self.get(name)?;
        self.not_on_milvus(
            "a model upgrade",
            "index the images with the new model into a new Milvus collection (`server index` with another `index.milvus.collection`), then point the replicas at it",
        )?;
        if !req.model.is_file() {
            return Err(Error::BadRequest(format!(
                "model {} is not a file on the server; pass the path of a model written by `trainer export`",
                req.model.display()
            )));
        }
        {
            let mut ups = self.upgrades.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(ups.get(name), Some(upgrade::Status::Running { .. } | upgrade::Status::Ready { .. })) {
                return Err(Error::Upgrading);
            }
            ups.insert(name.to_string(), upgrade::Status::Running { done: 0, total: old.gallery.stats().images });
        }
        old.gallery.freeze(true);
        let this = self.clone();
        let name = name.to_string();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let status = match this.upgrade(&old, &req, &name) {
                Ok((items, skipped, model, summary)) => {
                    let seconds = started.elapsed().as_secs_f64();
                    if req.swap {
                        upgrade::Status::Done { items, skipped, model, seconds, summary }
                    } else {
                        upgrade::Status::Ready { items, skipped, model, seconds, summary }
                    }
                }
                Err(e) => {
                    old.gallery.freeze(false);
                    tracing::error!(collection = %name, "the upgrade failed: {e}");
                    upgrade::Status::Failed { message: e.to_string() }
                }
            };
            this.upgrades.lock().unwrap_or_else(|p| p.into_inner()).insert(name, status);
        });
        Ok(())
    }

    fn upgrade(
        &self,
        old: &Collection,
        req: &upgrade::Request,
        name: &str,
    ) -> Result<(usize, usize, PathBuf, upgrade::Summary)> {
        let mut progress = |done: usize, total: usize| {
            self.upgrades
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), upgrade::Status::Running { done, total });
        };
        let built = upgrade::build(&self.settings, &old.index_dir, old.gallery.as_ref(), req, &mut progress)?;
        let summary = match upgrade::judge(old.gallery.as_ref(), &built) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&built.dir);
                return Err(e);
            }
        };
        let out = (built.items, built.skipped, built.model.path().to_path_buf(), summary);
        if req.swap {
            self.swap_in(old, built)?;
        } else {
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), built);
        }
        Ok(out)
    }

    /// Swaps a ready upgrade of `name` in.
    pub fn swap(&self, name: &str) -> Result<()> {
        let old = self.get(name)?;
        let built = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(name).ok_or_else(|| {
            Error::BadRequest(format!("collection `{name}` has no upgrade waiting; start one with \"swap\": false"))
        })?;
        self.swap_in(&old, built)?;
        let mut ups = self.upgrades.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(upgrade::Status::Ready { items, skipped, model, seconds, summary }) = ups.remove(name) {
            ups.insert(name.to_string(), upgrade::Status::Done { items, skipped, model, seconds, summary });
        }
        Ok(())
    }

    /// Throws a ready upgrade of `name` away; the collection takes changes again.
    pub fn discard(&self, name: &str) -> Result<()> {
        let old = self.get(name)?;
        let built = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .ok_or_else(|| Error::BadRequest(format!("collection `{name}` has no upgrade waiting to discard")))?;
        let dir = built.dir.clone();
        drop(built);
        std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
        old.gallery.freeze(false);
        self.upgrades.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), upgrade::Status::Discarded);
        Ok(())
    }

    fn swap_in(&self, old: &Collection, built: upgrade::Built) -> Result<()> {
        let name = old.name.as_str();
        let _c = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        upgrade::activate(&old.index_dir, &built, &old.live_dir)?;
        let s = &self.settings;
        let fresh = Collection {
            name: old.name.clone(),
            origin: old.origin,
            model_path: built.model.path().to_path_buf(),
            index_dir: old.index_dir.clone(),
            live_dir: built.dir.clone(),
            gallery: built.gallery.clone(),
            embedder: Arc::new(Embedder::new(built.model.clone(), &s.batch, s.max_image_pixels, self.metrics.clone())),
            keep_originals: old.keep_originals,
        };
        self.add(fresh);
        tracing::info!(collection = name, items = built.items, skipped = built.skipped, model = %built.model.path().display(), "swapped in the upgraded index");
        Ok(())
    }

    /// The last upgrade of `name`, if any.
    pub fn upgrade_status(&self, name: &str) -> Option<upgrade::Status> {
        self.upgrades.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Dumps every HNSW graph (at shutdown).
    pub fn snapshot_all(&self) -> Result<()> {
        for c in self.all() {
            c.gallery.snapshot()?;
        }
        Ok(())
    }
}
