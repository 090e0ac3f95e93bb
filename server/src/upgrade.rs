//! Model upgrades without downtime: a collection is re-embedded with a new model into a
//! new index built beside the live one, then swapped in at once.
//!
//! A collection's folder (its *home*) holds the live index directly, or, once upgraded,
//! in the version folder that the `ACTIVE` file names (`v-<time>/`, with its `model.onnx`).
//! An upgrade builds `.upgrading-<time>/` from each item's kept original (collections with
//! `keep_originals`) or its recorded source file (the path `server index` stored in
//! `source.path`), renames it to `v-<time>/`, replaces `ACTIVE`
//! atomically, and swaps the collection in memory; searches run on the old index until the
//! swap and on the new one after it, so none fails. Writes to the collection are refused
//! (409) while the new index is built, since the new index would not see them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::gallery::{Gallery, GalleryChange, IndexKind, NewImage};
use crate::indexer::prepare_all;
use crate::runtime::OnnxModel;
use crate::serve;
use crate::settings::Settings;
use crate::store::{PathRecord, Record, DB_FILE};
use crate::{Error, Result};
use contract::stored::Source;

pub use contract::stored::{ACTIVE, VERSION_MODEL};

/// Items re-embedded per inference call and per transaction.
const BATCH: usize = 32;

/// Where a collection's live index is, and which model it needs when an upgrade chose it
/// (`None`: the configured one).
pub fn resolve(home: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let dir = contract::stored::live_index_dir(home)?;
    let model = (dir != home).then(|| dir.join(VERSION_MODEL));
    Ok((dir, model))
}

/// The comparison files written into a built version folder.
pub const REPORT_JSON: &str = "compare.json";
pub const REPORT_PNG: &str = "compare.png";

/// Where an upgrade stands.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Status {
    Running {
        done: usize,
        total: usize,
    },
    /// Built and compared, waiting for `swap` or `discard`.
    Ready {
        items: usize,
        skipped: usize,
        model: PathBuf,
        seconds: f64,
        summary: Summary,
    },
    Done {
        items: usize,
        skipped: usize,
        model: PathBuf,
        seconds: f64,
        summary: Summary,
    },
    Discarded,
    Failed {
        message: String,
    },
}

/// The headline figures of the comparison (the page has the rest).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mean_overlap: f64,
    pub top1_changed: usize,
    pub queries: usize,
    pub recall: Option<(crate::compare::Recall, crate::compare::Recall)>,
    /// Where the comparison files are.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// How to upgrade.
#[derive(Debug, Clone)]
pub struct Request {
    pub model: PathBuf,
    /// Leave out items whose source is missing or unreadable (reported), instead of failing.
    pub skip_unreadable: bool,
    /// Swap as soon as it is built; `false` stops at `ready` for a look at the comparison.
    pub swap: bool,
}

/// Compares the built version with the live one and writes the report and picture into
/// the version folder.
pub fn judge(old: &dyn Gallery, built: &Built) -> Result<Summary> {
    let report = crate::compare::compare(old, built.gallery.as_ref())?;
    let png = crate::compare::picture(&report, old, built.gallery.as_ref())?;
    std::fs::write(built.dir.join(REPORT_PNG), png).map_err(Error::io(built.dir.join(REPORT_PNG)))?;
    let json = serde_json::to_vec_pretty(&report).expect("reports serialise");
    std::fs::write(built.dir.join(REPORT_JSON), json).map_err(Error::io(built.dir.join(REPORT_JSON)))?;
    Ok(Summary {
        mean_overlap: report.mean_overlap,
        top1_changed: report.top1_changed,
        queries: report.queries,
        recall: report.recall,
        dir: built.dir.clone(),
    })
}

/// What was built: the new live folder, its model and gallery.
pub struct Built {
    pub dir: PathBuf,
    pub model: std::sync::Arc<OnnxModel>,
    pub gallery: std::sync::Arc<dyn Gallery>,
    pub items: usize,
    pub skipped: usize,
}

/// One item to re-embed.
struct Item {
    record: Record,
    source: Source,
}

/// Builds a new index for the collection at `home` from `old` with the model of `req`,
/// reporting progress; the caller swaps it in with [`activate`].
pub fn build(
    settings: &Settings,
    home: &Path,
    old: &dyn Gallery,
    req: &Request,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Built> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let staging = home.join(format!(".upgrading-{stamp}"));
    let result = build_in(settings, home, &staging, &stamp, old, req, progress);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn build_in(
    settings: &Settings,
    home: &Path,
    staging: &Path,
    stamp: &str,
    old: &dyn Gallery,
    req: &Request,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Built> {
    std::fs::create_dir_all(staging).map_err(Error::io(staging))?;
    std::fs::copy(&req.model, staging.join(VERSION_MODEL)).map_err(Error::io(&req.model))?;
    let model = serve::open_model_file(settings, &staging.join(VERSION_MODEL))?;
    let mut items = Vec::new();
    let mut paths: Vec<(PathBuf, PathRecord)> = Vec::new();
    old.visit_all(
        &mut |stored| {
            let source = Source::of(stored.original.is_some(), &stored.record.metadata);
            items.push(Item { record: stored.record, source });
            Ok(())
        },
        &mut |path, rec| {
            paths.push((path, rec));
            Ok(())
        },
    )?;
    let total = items.len();
    let sourceless: Vec<&str> =
        items.iter().filter(|i| matches!(i.source, Source::None)).map(|i| i.record.id.as_str()).collect();
    if !sourceless.is_empty() && !req.skip_unreadable {
        return Err(Error::BadRequest(format!(
            "{} of {total} items have no source file to re-embed from (e.g. {}): they were added as vectors, or uploaded to a collection that keeps no originals (`keep_originals`); pass \"skip_unreadable\": true to leave them out",
            sourceless.len(),
            sourceless[..sourceless.len().min(3)].join(", ")
        )));
    }
    let sourceless = sourceless.len();
    let gallery = serve::open_gallery_dir(settings, staging, &model, IndexKind::Hnsw)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (mut done, mut skipped) = (0usize, sourceless);
    let mut kept = std::collections::HashSet::new();
    for chunk in items.chunks(BATCH) {
        let mut read = Vec::new();
        for item in chunk {
            let bytes = match &item.source {
                Source::None => continue,
                Source::Kept => old.original(&item.record.id)?.ok_or_else(|| Error::Store {
                    path: home.to_path_buf(),
                    reason: format!("the original of item `{}` vanished during the upgrade", item.record.id),
                }),
                Source::File(path) => std::fs::read(path).map_err(|e| {
                    Error::BadRequest(format!(
                        "cannot read {} (item `{}`): {e}; restore the file, or pass \"skip_unreadable\": true",
                        path.display(),
                        item.record.id
                    ))
                }),
            };
            match bytes {
                Ok(bytes) => read.push((item, bytes)),
                Err(e) if req.skip_unreadable => {
                    tracing::warn!(id = %item.record.id, "left out of the upgrade: {e}");
                    skipped += 1;
                }
                Err(e) => return Err(e),
            }
        }
        let slices: Vec<&[u8]> = read.iter().map(|(_, b)| b.as_slice()).collect();
        let prepared = prepare_all(&model, &slices, settings.max_image_pixels, threads);
        let mut inputs = Vec::new();
        let mut ok = Vec::new();
        for ((item, _), p) in read.iter().zip(prepared) {
            match p {
                Ok((input, thumb)) => {
                    inputs.extend_from_slice(&input);
                    ok.push((*item, thumb));
                }
                Err(e) if req.skip_unreadable => {
                    tracing::warn!(id = %item.record.id, "left out of the upgrade: {e}");
                    skipped += 1;
                }
                Err(e) => return Err(Error::BadRequest(format!("item `{}`: {e}", item.record.id))),
            }
        }
        let vectors = model.embed(inputs, ok.len())?;
        let mut change = GalleryChange::default();
        let originals: std::collections::HashMap<&str, &Vec<u8>> = read
            .iter()
            .filter(|(i, _)| matches!(i.source, Source::Kept))
            .map(|(i, b)| (i.record.id.as_str(), b))
            .collect();
        for ((item, thumb), vector) in ok.into_iter().zip(vectors) {
            kept.insert(item.record.id.clone());
            change.insert.push(NewImage {
                id: Some(item.record.id.clone()),
                metadata: item.record.metadata.clone(),
                content_hash: item.record.content_hash.clone(),
                vector,
                thumbnail: Some(thumb),
                original: originals.get(item.record.id.as_str()).map(|b| b.to_vec()),
            });
        }
        gallery.apply(change)?;
        done += chunk.len();
        progress(done, total);
    }
    let paths: Vec<(PathBuf, PathRecord)> = paths.into_iter().filter(|(_, r)| kept.contains(&r.id)).collect();
    gallery.apply(GalleryChange { set_paths: paths, ..GalleryChange::default() })?;
    gallery.snapshot()?;
    let items = gallery.stats().images;
    drop(gallery);
    let dir = home.join(format!("v-{stamp}"));
    std::fs::rename(staging, &dir).map_err(Error::io(&dir))?;
    let gallery = serve::open_gallery_dir(settings, &dir, &model, IndexKind::Hnsw)?;
    Ok(Built { dir, model, gallery, items, skipped })
}

/// Removes what upgrades interrupted by a restart left in `home`: staging folders
/// (`.upgrading-*`) and version folders (`v-*`) other than the live one `live` (an upgrade
/// built but never swapped in). Each is logged; such an upgrade must be started again.
pub fn remove_leftovers(home: &Path, live: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(home) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let (path, name) = (entry.path(), entry.file_name().to_string_lossy().into_owned());
        let leftover = path.is_dir() && (name.starts_with(".upgrading-") || (name.starts_with("v-") && path != live));
        if leftover {
            tracing::warn!(folder = %path.display(), "removing the index of an upgrade that was not swapped in before the server stopped; start that upgrade again");
            if std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

/// Makes `built` the live version of the collection at `home` (replacing `ACTIVE`
/// atomically) and removes the version it replaces, whose folder was `previous`.
pub fn activate(home: &Path, built: &Built, previous: &Path) -> Result<()> {
    let name = built.dir.file_name().expect("a version folder").to_string_lossy().into_owned();
    let tmp = home.join(".ACTIVE.tmp");
    std::fs::write(&tmp, &name).map_err(Error::io(&tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, home.join(ACTIVE)).map_err(Error::io(home.join(ACTIVE)))?;
    if previous == home {
        // The first upgrade: the old index lies in the home folder itself, beside other
        // collections' folders and snapshots, so only its own files go.
        for entry in std::fs::read_dir(home).map_err(Error::io(home))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == DB_FILE || crate::index::GraphFiles::is_graph_file(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    } else if previous != built.dir {
        let _ = std::fs::remove_dir_all(previous);
    }
    Ok(())
}
