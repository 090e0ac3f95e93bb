//! Snapshots: a collection in one file, to restore on another server. The file is a tar
//! archive (inspect it with `tar tf`):
//!
//! - `snapshot.json`: the format, the index spec, the counts;
//! - `model.onnx`: the collection's model;
//! - `items.jsonl`: one item a line (`id`, `metadata`, `content_hash`, `vector`, and in
//!   base64 the `thumbnail` (JPEG or PNG) and the kept `original`, when there are);
//! - `paths.jsonl`: the index job's per-path records.
//!
//! Items and path records are read in one read transaction, so a snapshot taken while
//! images are being added holds the collection as it was at one moment: every insert that
//! was acknowledged before it began, none half. The file is written beside its final
//! name and renamed into place. The layout is [`contract::stored::snapshot`]'s, where
//! `trainer fit --from-index` reads it too.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::gallery::{Gallery, GalleryChange, LocalGallery, NewImage};
use crate::store::{IndexSpec, PathRecord, Store, StoredItem};
use crate::{Error, Result};

pub use contract::stored::snapshot::FORMAT;
use contract::stored::snapshot::{Item, HEADER, ITEMS, MODEL, PATHS};

/// Items per transaction when restoring.
const RESTORE_BATCH: usize = 1024;

/// What `snapshot.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub collection: String,
    pub spec: IndexSpec,
    pub items: usize,
    pub paths: usize,
    /// RFC 3339 time the snapshot was taken.
    pub created: String,
}

#[derive(Serialize, Deserialize)]
struct PathLine {
    path: PathBuf,
    record: PathRecord,
}

fn bad(file: &Path, reason: impl Into<String>) -> Error {
    Error::Snapshot { path: file.to_path_buf(), reason: reason.into() }
}

/// Writes a snapshot of `store` (the collection `name`, its model at `model`) to `out`.
pub fn write(store: &Store, spec: &IndexSpec, name: &str, model: &Path, out: &Path) -> Result<Header> {
    let tmp = out.with_extension("partial");
    let result = write_to(store, spec, name, model, &tmp);
    match result {
        Ok(header) => {
            std::fs::rename(&tmp, out).map_err(Error::io(out))?;
            Ok(header)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_to(store: &Store, spec: &IndexSpec, name: &str, model: &Path, tmp: &Path) -> Result<Header> {
    if let Some(dir) = tmp.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    // The items go to temporary files first: tar needs each entry's size up front.
    let scratch = tempfile::tempdir_in(tmp.parent().unwrap_or(Path::new("."))).map_err(Error::io(tmp))?;
    let (items_path, paths_path) = (scratch.path().join(ITEMS), scratch.path().join(PATHS));
    let mut items = std::io::BufWriter::new(std::fs::File::create(&items_path).map_err(Error::io(&items_path))?);
    let mut paths = std::io::BufWriter::new(std::fs::File::create(&paths_path).map_err(Error::io(&paths_path))?);
    let (mut n_items, mut n_paths) = (0usize, 0usize);
    let b64 = base64::engine::general_purpose::STANDARD;
    store.visit_all(
        &mut |stored: StoredItem| {
            let line = Item {
                id: stored.record.id,
                metadata: stored.record.metadata,
                content_hash: stored.record.content_hash,
                vector: stored.vector,
                thumbnail: stored.thumbnail.map(|t| b64.encode(t)),
                original: stored.original.map(|o| b64.encode(o)),
            };
            serde_json::to_writer(&mut items, &line).map_err(|e| bad(tmp, e.to_string()))?;
            items.write_all(b"\n").map_err(Error::io(&items_path))?;
            n_items += 1;
            Ok(())
        },
        &mut |path, record| {
            serde_json::to_writer(&mut paths, &PathLine { path, record }).map_err(|e| bad(tmp, e.to_string()))?;
            paths.write_all(b"\n").map_err(Error::io(&paths_path))?;
            n_paths += 1;
            Ok(())
        },
    )?;
    items.flush().map_err(Error::io(&items_path))?;
    paths.flush().map_err(Error::io(&paths_path))?;
    drop((items, paths));
    let header = Header {
        format: FORMAT,
        collection: name.to_string(),
        spec: spec.clone(),
        items: n_items,
        paths: n_paths,
        created: chrono::Utc::now().to_rfc3339(),
    };
    let file = std::fs::File::create(tmp).map_err(Error::io(tmp))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let json = serde_json::to_vec_pretty(&header).expect("headers serialise");
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let io = |e: std::io::Error| Error::Io { path: tmp.to_path_buf(), source: e };
    tar.append_data(&mut h, HEADER, json.as_slice()).map_err(io)?;
    tar.append_path_with_name(model, MODEL).map_err(io)?;
    tar.append_path_with_name(&items_path, ITEMS).map_err(io)?;
    tar.append_path_with_name(&paths_path, PATHS).map_err(io)?;
    let mut inner = tar.into_inner().map_err(io)?;
    inner.flush().map_err(io)?;
    inner.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    Ok(header)
}

/// Unpacks the snapshot `file` into the empty folder `dir`: its model as
/// `dir/model.onnx`, its items and path records into a fresh index in `dir`. Returns the
/// header and the model's path.
pub fn unpack(file: &Path, dir: &Path, hnsw: &crate::index::HnswParams) -> Result<(Header, PathBuf)> {
    let f = std::fs::File::open(file).map_err(Error::io(file))?;
    let mut archive = tar::Archive::new(BufReader::new(f));
    let mut header: Option<Header> = None;
    let scratch = tempfile::tempdir_in(dir).map_err(Error::io(dir))?;
    let model = dir.join(MODEL);
    for entry in archive.entries().map_err(|e| bad(file, format!("not a tar archive: {e}")))? {
        let mut entry = entry.map_err(|e| bad(file, format!("damaged archive: {e}")))?;
        let name = entry.path().map_err(|e| bad(file, e.to_string()))?.to_string_lossy().into_owned();
        let target = match name.as_str() {
            HEADER => {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(|e| bad(file, e.to_string()))?;
                let h: Header = serde_json::from_str(&text).map_err(|e| bad(file, format!("snapshot.json: {e}")))?;
                if h.format != FORMAT {
                    return Err(bad(file, format!("snapshot format {} is not this server's {FORMAT}; restore it with the server version that wrote it", h.format)));
                }
                header = Some(h);
                continue;
            }
            MODEL => model.clone(),
            ITEMS | PATHS => scratch.path().join(&name),
            other => return Err(bad(file, format!("unexpected entry `{other}`; this is not a snapshot"))),
        };
        let mut out = std::fs::File::create(&target).map_err(Error::io(&target))?;
        std::io::copy(&mut entry, &mut out).map_err(Error::io(&target))?;
    }
    let header = header.ok_or_else(|| bad(file, "no snapshot.json; this is not a snapshot"))?;
    for needed in [&model, &scratch.path().join(ITEMS), &scratch.path().join(PATHS)] {
        if !needed.is_file() {
            return Err(bad(file, format!("it lacks {}", needed.file_name().unwrap_or_default().to_string_lossy())));
        }
    }
    let gallery = LocalGallery::open(dir, header.spec.clone(), hnsw, crate::gallery::IndexKind::Hnsw)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut change = GalleryChange::default();
    let mut restored = 0usize;
    let lines = BufReader::new(std::fs::File::open(scratch.path().join(ITEMS)).map_err(Error::io(file))?).lines();
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| bad(file, e.to_string()))?;
        let item: Item =
            serde_json::from_str(&line).map_err(|e| bad(file, format!("items.jsonl line {}: {e}", i + 1)))?;
        let decode = |field: Option<String>| {
            field.map(|t| b64.decode(t)).transpose().map_err(|e| bad(file, format!("items.jsonl line {}: {e}", i + 1)))
        };
        let (thumbnail, original) = (decode(item.thumbnail)?, decode(item.original)?);
        change.insert.push(NewImage {
            id: Some(item.id),
            metadata: item.metadata,
            content_hash: item.content_hash,
            vector: item.vector,
            thumbnail,
            original,
        });
        if change.insert.len() == RESTORE_BATCH {
            restored += change.insert.len();
            gallery.apply(std::mem::take(&mut change))?;
        }
    }
    let lines = BufReader::new(std::fs::File::open(scratch.path().join(PATHS)).map_err(Error::io(file))?).lines();
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| bad(file, e.to_string()))?;
        let p: PathLine =
            serde_json::from_str(&line).map_err(|e| bad(file, format!("paths.jsonl line {}: {e}", i + 1)))?;
        change.set_paths.push((p.path, p.record));
    }
    restored += change.insert.len();
    gallery.apply(change)?;
    if restored != header.items {
        return Err(bad(file, format!("it holds {restored} items but says {}; the file is damaged", header.items)));
    }
    gallery.snapshot()?;
    Ok((header, model))
}
