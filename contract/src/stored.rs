//! A server's stored collections as files, and the images they hold.
//!
//! The server writes three kinds of thing the trainer must be able to read back for
//! `trainer fit --from-index`, so their layout is defined here, once:
//!
//! - an **index folder**: one redb database, [`DB_FILE`], with the [`tables`] below;
//! - a **collection folder** after an upgrade: the index lives in the version folder that
//!   the file [`ACTIVE`] names ([`live_index_dir`]);
//! - a **snapshot**: a tar archive with [`snapshot::HEADER`], [`snapshot::MODEL`],
//!   [`snapshot::ITEMS`] (one [`snapshot::Item`] a line) and [`snapshot::PATHS`].
//!
//! An item's image is read again (to re-embed it, or to train on it) from the original the
//! collection kept, or else from the file `server index` read it from ([`Source::of`]).
//! [`StoredImages`] lists them and reads the kept originals on demand.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use base64::Engine;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::error::{ContractError, Result};

/// File name of the database inside an index folder.
pub const DB_FILE: &str = "images.redb";

/// In a collection folder that has been upgraded: names the live version folder.
pub const ACTIVE: &str = "ACTIVE";

/// The model file inside a version folder.
pub const VERSION_MODEL: &str = "model.onnx";

/// The database layout the server writes. 1: ids, records, vectors, thumbnails, hashes
/// (such an index has no `format` key); 2: plus the `paths` table; 3: plus `originals`.
pub const FORMAT: u32 = 3;

/// The tables of an index database and the keys of its `meta` table.
pub mod tables {
    use redb::TableDefinition;

    /// slot -> JSON [`Record`](super::Record).
    pub const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
    /// slot -> little-endian f32 vector.
    pub const VECTORS: TableDefinition<u64, &[u8]> = TableDefinition::new("vectors");
    /// slot -> JPEG thumbnail.
    pub const THUMBNAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("thumbnails");
    /// slot -> the uploaded file as sent, for collections that keep originals.
    pub const ORIGINALS: TableDefinition<u64, &[u8]> = TableDefinition::new("originals");
    /// id -> slot.
    pub const IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
    /// content hash -> slot.
    pub const HASHES: TableDefinition<&str, u64> = TableDefinition::new("hashes");
    /// Source file path (the server's `path_key`) -> JSON path record, written by
    /// `server index`.
    pub const PATHS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("paths");
    /// Small JSON values: the index spec, the slot counter, the graph dump.
    pub const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

    pub const META_FORMAT: &str = "format";
    pub const META_SPEC: &str = "spec";
    pub const META_NEXT_SLOT: &str = "next_slot";
    /// The saved HNSW graph file. Earlier versions recorded their hnsw_rs dumps under
    /// `graph`, which is ignored now: such an index rebuilds its graph once.
    pub const META_GRAPH: &str = "graph_file";
}

/// What is stored about one image besides its vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub metadata: serde_json::Value,
    pub content_hash: Option<String>,
}

/// The snapshot archive's layout.
pub mod snapshot {
    use serde::{Deserialize, Serialize};

    /// The snapshot layout the server writes and reads.
    pub const FORMAT: u32 = 1;
    /// The header: format, collection, index spec, counts, time.
    pub const HEADER: &str = "snapshot.json";
    /// The collection's model.
    pub const MODEL: &str = "model.onnx";
    /// One [`Item`] a line.
    pub const ITEMS: &str = "items.jsonl";
    /// The index job's per-path records, one a line.
    pub const PATHS: &str = "paths.jsonl";

    /// One line of [`ITEMS`].
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Item {
        pub id: String,
        pub metadata: serde_json::Value,
        pub content_hash: Option<String>,
        pub vector: Vec<f32>,
        /// The JPEG thumbnail, base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub thumbnail: Option<String>,
        /// The kept original file, base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub original: Option<String>,
    }
}

/// The index folder of the collection at `home`: the version folder [`ACTIVE`] names, or
/// `home` itself when it has never been upgraded.
pub fn live_index_dir(home: &Path) -> Result<PathBuf> {
    let pointer = home.join(ACTIVE);
    match std::fs::read_to_string(&pointer) {
        Ok(text) => {
            let name = text.trim();
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(stored(&pointer, format!("`{name}` is not a version folder name")));
            }
            Ok(home.join(name))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(home.to_path_buf()),
        Err(e) => Err(ContractError::Io { path: pointer, source: e }),
    }
}

/// Whether `path` is an index folder, a collection folder or a snapshot file.
pub fn is_stored_collection(path: &Path) -> bool {
    if path.is_dir() {
        path.join(DB_FILE).is_file() || path.join(ACTIVE).is_file()
    } else {
        path.is_file() && path.extension().is_some_and(|e| e == "tar")
    }
}

/// Where an item's image is to be read again from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The original the collection kept.
    Kept,
    /// The file `server index` read it from (`source.path` in its metadata).
    File(PathBuf),
    /// Neither: added as a vector, or uploaded to a collection that keeps no originals.
    None,
}

impl Source {
    /// The source of an item with this metadata, whose original was kept or not.
    pub fn of(kept: bool, metadata: &serde_json::Value) -> Self {
        match (kept, metadata["source"]["path"].as_str()) {
            (true, _) => Source::Kept,
            (false, Some(p)) => Source::File(PathBuf::from(p)),
            (false, None) => Source::None,
        }
    }
}

/// One item of a stored collection.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub id: String,
    pub metadata: serde_json::Value,
    pub source: Source,
}

/// The images of a stored collection: every item's id, metadata and [`Source`], with the
/// kept originals read on demand ([`StoredImages::original`]).
///
/// An index folder's database is held open (redb allows one process at a time): while a
/// server serves that folder, read a snapshot of it instead.
pub struct StoredImages {
    path: PathBuf,
    images: Vec<StoredImage>,
    backend: Backend,
}

enum Backend {
    /// Slot of each image.
    Db { db: redb::Database, slots: Vec<u64> },
    /// Byte offset and length of each image's line of `items.jsonl` in the archive.
    Snapshot { file: File, lines: Vec<(u64, usize)> },
}

fn stored(path: &Path, reason: impl Into<String>) -> ContractError {
    ContractError::Stored { path: path.to_path_buf(), reason: reason.into() }
}

impl StoredImages {
    /// Opens an index folder, a collection folder (its live version) or a snapshot file.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_file() {
            return Self::open_snapshot(path);
        }
        if !path.is_dir() {
            return Err(stored(path, "does not exist; pass an index folder, a collection folder or a snapshot file"));
        }
        let dir = live_index_dir(path)?;
        let db_path = dir.join(DB_FILE);
        if !db_path.is_file() {
            return Err(stored(
                path,
                format!("holds no {DB_FILE}; pass the folder `server index --index` wrote, a collection folder, or a snapshot file"),
            ));
        }
        let db = redb::Database::open(&db_path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => stored(
                &db_path,
                "is open in another process (a running server or `server index`); snapshot the collection \
                 (POST /collections/NAME/snapshots) and pass the snapshot file, or stop that process",
            ),
            e => stored(&db_path, redb::Error::from(e).to_string()),
        })?;
        let (images, slots) = Self::read_db(&db, &db_path)?;
        Ok(Self { path: db_path, images, backend: Backend::Db { db, slots } })
    }

    fn read_db(db: &redb::Database, path: &Path) -> Result<(Vec<StoredImage>, Vec<u64>)> {
        let e = |e: redb::Error| stored(path, e.to_string());
        let tx = db.begin_read().map_err(|x| e(x.into()))?;
        let meta = tx.open_table(tables::META).map_err(|x| e(x.into()))?;
        let format = meta.get(tables::META_FORMAT).map_err(|x| e(x.into()))?.map(|v| v.value().to_string());
        if let Some(f) = format {
            if f.trim().parse::<u32>().map_or(true, |f| f > FORMAT) {
                return Err(stored(path, format!("its format `{f}` is newer than this program's {FORMAT}; update it")));
            }
        }
        let records = tx.open_table(tables::RECORDS).map_err(|x| e(x.into()))?;
        // An index of format 1 or 2 has no originals table.
        let originals = match tx.open_table(tables::ORIGINALS) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(x) => return Err(e(x.into())),
        };
        let (mut images, mut slots) = (Vec::new(), Vec::new());
        for row in records.iter().map_err(|x| e(x.into()))? {
            let (slot, bytes) = row.map_err(|x| e(x.into()))?;
            let record: Record =
                serde_json::from_slice(bytes.value()).map_err(|x| stored(path, format!("a record is corrupt: {x}")))?;
            let kept = match &originals {
                Some(t) => t.get(slot.value()).map_err(|x| e(x.into()))?.is_some(),
                None => false,
            };
            slots.push(slot.value());
            images.push(StoredImage {
                source: Source::of(kept, &record.metadata),
                id: record.id,
                metadata: record.metadata,
            });
        }
        Ok((images, slots))
    }

    fn open_snapshot(path: &Path) -> Result<Self> {
        let io = |e: std::io::Error| ContractError::Io { path: path.to_path_buf(), source: e };
        let mut archive = tar::Archive::new(File::open(path).map_err(io)?);
        let (mut items_at, mut format) = (None, None);
        for entry in archive.entries().map_err(|e| stored(path, format!("not a tar archive: {e}")))? {
            let mut entry = entry.map_err(|e| stored(path, format!("damaged archive: {e}")))?;
            let name = entry.path().map_err(|e| stored(path, e.to_string()))?.to_string_lossy().into_owned();
            if name == snapshot::HEADER {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(io)?;
                let header: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| stored(path, format!("{}: {e}", snapshot::HEADER)))?;
                format = header["format"].as_u64();
            } else if name == snapshot::ITEMS {
                items_at = Some((entry.raw_file_position(), entry.size()));
            }
        }
        match format {
            Some(f) if f == u64::from(snapshot::FORMAT) => {}
            Some(f) => {
                return Err(stored(path, format!("snapshot format {f} is not this program's {}", snapshot::FORMAT)))
            }
            None => return Err(stored(path, format!("has no {}; this is not a snapshot", snapshot::HEADER))),
        }
        let (start, size) = items_at.ok_or_else(|| stored(path, format!("has no {}", snapshot::ITEMS)))?;
        let mut file = File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut reader = BufReader::new((&file).take(size));
        let (mut images, mut lines) = (Vec::new(), Vec::new());
        let (mut offset, mut line) = (start, String::new());
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            let item: snapshot::Item = serde_json::from_str(&line)
                .map_err(|e| stored(path, format!("{} line {}: {e}", snapshot::ITEMS, images.len() + 1)))?;
            images.push(StoredImage {
                source: Source::of(item.original.is_some(), &item.metadata),
                id: item.id,
                metadata: item.metadata,
            });
            lines.push((offset, n));
            offset += n as u64;
        }
        Ok(Self { path: path.to_path_buf(), images, backend: Backend::Snapshot { file, lines } })
    }

    /// The database or snapshot file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every item, in slot order (or the snapshot's order).
    pub fn images(&self) -> &[StoredImage] {
        &self.images
    }

    /// The kept original of image `i` of [`StoredImages::images`].
    pub fn original(&self, i: usize) -> Result<Vec<u8>> {
        let missing = || stored(&self.path, format!("item {i} has no kept original"));
        match &self.backend {
            Backend::Db { db, slots } => {
                let e = |e: redb::Error| stored(&self.path, e.to_string());
                let slot = *slots.get(i).ok_or_else(missing)?;
                let tx = db.begin_read().map_err(|x| e(x.into()))?;
                let t = tx.open_table(tables::ORIGINALS).map_err(|x| e(x.into()))?;
                let bytes = t.get(slot).map_err(|x| e(x.into()))?.ok_or_else(missing)?.value().to_vec();
                Ok(bytes)
            }
            Backend::Snapshot { file, lines } => {
                use std::os::unix::fs::FileExt;
                let &(offset, len) = lines.get(i).ok_or_else(missing)?;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| ContractError::Io { path: self.path.clone(), source: e })?;
                let item: snapshot::Item = serde_json::from_slice(&buf)
                    .map_err(|e| stored(&self.path, format!("{}: {e}", snapshot::ITEMS)))?;
                let b64 = item.original.ok_or_else(missing)?;
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| stored(&self.path, format!("item `{}`: its original is not base64: {e}", item.id)))
            }
        }
    }
}

impl std::fmt::Debug for StoredImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredImages").field("path", &self.path).field("images", &self.images.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_db(dir: &Path, items: &[(u64, serde_json::Value, Option<&[u8]>)]) {
        let db = redb::Database::create(dir.join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut records = tx.open_table(tables::RECORDS).unwrap();
            let mut originals = tx.open_table(tables::ORIGINALS).unwrap();
            let mut meta = tx.open_table(tables::META).unwrap();
            meta.insert(tables::META_FORMAT, "3").unwrap();
            for (slot, metadata, original) in items {
                let r = Record { id: format!("id{slot}"), metadata: metadata.clone(), content_hash: None };
                records.insert(*slot, serde_json::to_vec(&r).unwrap().as_slice()).unwrap();
                if let Some(o) = original {
                    originals.insert(*slot, *o).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }

    #[test]
    fn an_index_folder_lists_kept_originals_source_files_and_sourceless_items() {
        let dir = tempfile::tempdir().unwrap();
        write_db(
            dir.path(),
            &[
                (0, serde_json::json!({"label": "a"}), Some(b"bytes0")),
                (1, serde_json::json!({"source": {"path": "/data/x.png"}}), None),
                (2, serde_json::json!({}), None),
            ],
        );
        let s = StoredImages::open(dir.path()).unwrap();
        let sources: Vec<_> = s.images().iter().map(|i| i.source.clone()).collect();
        assert_eq!(sources, vec![Source::Kept, Source::File("/data/x.png".into()), Source::None]);
        assert_eq!(s.original(0).unwrap(), b"bytes0");
        assert!(s.original(1).is_err());
        // While it is open (here, or in a running server), it cannot be opened again; the
        // error says what to do instead.
        let err = StoredImages::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is open in another process") && err.contains("snapshot"), "{err}");
    }

    #[test]
    fn a_collection_folder_is_read_at_its_active_version() {
        let home = tempfile::tempdir().unwrap();
        let v = home.path().join("v-1");
        std::fs::create_dir_all(&v).unwrap();
        write_db(&v, &[(7, serde_json::json!({}), Some(b"seven"))]);
        std::fs::write(home.path().join(ACTIVE), "v-1\n").unwrap();
        assert!(is_stored_collection(home.path()));
        let s = StoredImages::open(home.path()).unwrap();
        assert_eq!(s.images()[0].id, "id7");
        assert_eq!(s.original(0).unwrap(), b"seven");
        std::fs::write(home.path().join(ACTIVE), "../elsewhere").unwrap();
        assert!(StoredImages::open(home.path()).unwrap_err().to_string().contains("not a version folder"));
    }

    #[test]
    fn a_snapshot_is_read_line_by_line_with_originals_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.tar");
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut items = String::new();
        for (id, original) in [("a", Some(b64.encode(b"first"))), ("b", None), ("c", Some(b64.encode(b"third")))] {
            let line = snapshot::Item {
                id: id.into(),
                metadata: serde_json::json!({"label": id}),
                content_hash: None,
                vector: vec![0.5, 0.5],
                thumbnail: None,
                original,
            };
            items.push_str(&serde_json::to_string(&line).unwrap());
            items.push('\n');
        }
        let mut tar = tar::Builder::new(File::create(&file).unwrap());
        for (name, data) in [(snapshot::HEADER, r#"{"format": 1}"#.as_bytes()), (snapshot::ITEMS, items.as_bytes())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data).unwrap();
        }
        tar.finish().unwrap();
        drop(tar);
        assert!(is_stored_collection(&file));
        let s = StoredImages::open(&file).unwrap();
        assert_eq!(s.images().len(), 3);
        assert_eq!(s.images()[1].source, Source::None);
        assert_eq!(s.original(2).unwrap(), b"third");
        assert_eq!(s.original(0).unwrap(), b"first");
        assert!(s.original(1).is_err());
    }

    #[test]
    fn a_folder_without_an_index_is_refused_with_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        let err = StoredImages::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds no images.redb"), "{err}");
        assert!(!is_stored_collection(dir.path()));
    }
}
