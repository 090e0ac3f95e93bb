//! The batch indexing job behind `server index`: embed every image under a folder
//! (recursively, as [`contract::find_images`] lists them, the same files `trainer fit`
//! reads) in batches. Every file is its own item, with an id derived from its absolute
//! path, so byte-identical files at two paths are two items.
//!
//! Each batch's items and their per-path records (size, mtime, content hash) are committed
//! in one transaction, so an interrupted run resumes where it stopped: a re-run skips a file
//! whose size and mtime match its record (without reading it), re-hashes one whose size or
//! mtime changed, and re-embeds it only when its content changed. With `sync`, the items of
//! files under the folder that the walk no longer lists are removed.
//!
//! Each item's metadata holds what the job measured (`path` relative to the folder,
//! `bytes`, `source.path`, `source.root`), the folder name as `label` with
//! `label_from_folder`, and the file's row of a metadata side file ([`metadata`]). The job
//! sets those keys on every run, also for files it skips, and keeps any other key (one set
//! with `PATCH /images/{id}`, say).

pub mod metadata;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::embed::{decode_image, thumbnail};
use crate::gallery::{merge_patch, Gallery, GalleryChange, NewImage};
use crate::runtime::OnnxModel;
use crate::store::{path_key, PathRecord, PathState};
use crate::{Error, Result};

/// A modification time closer than this to the moment it was read is not trusted to
/// reveal a later change (coarse file-system clocks; FAT has 2 s granularity), so the next
/// run hashes that file again.
const RACY_MTIME_NS: i64 = 2_000_000_000;

/// Path records removed per transaction by a sync.
const SYNC_BATCH: usize = 256;

/// How a run goes.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Images per inference call and per transaction.
    pub batch: usize,
    /// Images with more pixels are reported as failures.
    pub max_pixels: u64,
    /// After the pass, remove the items of files under the folder that are gone.
    pub sync: bool,
    /// A CSV or JSON Lines file of metadata by path (see [`metadata::SideFile`]).
    pub metadata_file: Option<PathBuf>,
    /// Record each file's folder name as its `label`.
    pub label_from_folder: bool,
    /// Index only this part of the folder (several jobs, one part each, fill one shared
    /// collection in parallel); `None`: all of it.
    pub shard: Option<Shard>,
}

/// Part `index` of `count` disjoint parts of a folder. A file belongs to the part its path
/// below the folder hashes to, so every job splitting the same folder the same way agrees on
/// the parts, whichever machine it runs on and whatever it found before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Reads `I/N`: part I (1 to N) of N.
    pub fn parse(text: &str) -> Result<Self> {
        let bad =
            |reason: &str| Error::BadRequest(format!("--shard {text}: {reason}; write I/N with 1 <= I <= N, e.g. 2/4"));
        let (i, n) = text.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let (i, n): (usize, usize) = match (i.trim().parse(), n.trim().parse()) {
            (Ok(i), Ok(n)) => (i, n),
            _ => return Err(bad("I and N must be whole numbers")),
        };
        if n == 0 || i == 0 || i > n {
            return Err(bad("out of range"));
        }
        Ok(Self { index: i - 1, count: n })
    }

    /// Whether the file at `rel` (its path below the folder, `/`-separated) is in this part.
    pub fn holds(&self, rel: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        let digest = contract::sha256_hex(rel.as_bytes());
        let head = u64::from_str_radix(&digest[..16], 16).expect("hex digits");
        (head % self.count as u64) as usize == self.index
    }
}

/// A path below the folder in the `/`-separated form a [`Source`]'s `rel` has.
fn rel_text(below: &Path) -> String {
    below.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Where a run stands, reported after every batch (and after a sync).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Files looked at so far (indexed, updated, skipped or failed).
    pub done: usize,
    pub total: usize,
    /// Files embedded as new items.
    pub indexed: usize,
    /// Files whose content changed since they were indexed, re-embedded in place.
    pub updated: usize,
    /// Already indexed at that path with this content.
    pub skipped: usize,
    /// Items removed by a sync because their file is gone.
    pub removed: usize,
    pub failed: usize,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub progress: Progress,
    /// Files that could not be read or decoded, with the reason.
    pub failures: Vec<(PathBuf, String)>,
    /// Rows of the metadata file that name no listed image, as `(line, path)`.
    pub unmatched_metadata: Vec<(usize, String)>,
    pub seconds: f64,
    /// Seconds each stage of the pipeline worked (not waiting for its neighbours): the
    /// largest is the one that set the pace.
    pub stages: StageSeconds,
}

/// Busy seconds of each stage of the indexing pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageSeconds {
    /// Looking files up in the index, reading and hashing them.
    pub read: f64,
    /// Decoding, preprocessing and thumbnailing (wall time, on every core).
    pub decode: f64,
    /// Inference, summed over the inference streams.
    pub embed: f64,
    /// Writing the items, path records and the vector index.
    pub commit: f64,
}

/// The id the job gives the file at `abs` (an absolute path): the first 128 bits of the
/// SHA-256 of the path, in hex. Stable across runs and independent of the content.
pub fn path_id(abs: &Path) -> String {
    contract::sha256_hex(&path_key(abs))[..32].to_string()
}

/// The id earlier versions of the job gave a file: the first 128 bits of its content's
/// SHA-256, in hex. Such items are replaced by their per-path item when met again.
pub fn content_id(hash_hex: &str) -> String {
    hash_hex[..32].to_string()
}

/// A listed file: as the walk gave it, absolute (the canonical root joined with the path
/// below it, so every listed path lies under the root) and relative, '/'-separated.
struct Source {
    file: PathBuf,
    abs: PathBuf,
    rel: String,
}

/// What the job knows of every item's metadata.
struct Describe<'a> {
    root: &'a Path,
    side: Option<&'a metadata::SideFile>,
    label_from_folder: bool,
}

impl Describe<'_> {
    /// The metadata of the item of `source` (`bytes` long): `base` (the item's current
    /// metadata, if any) with the keys the job owns set anew.
    fn metadata(&self, base: Option<&Value>, source: &Source, bytes: u64) -> Value {
        let mut m = base.cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
        let mut own = json!({
            "path": source.rel,
            "bytes": bytes,
            "source": { "path": source.abs.to_string_lossy(), "root": self.root.to_string_lossy() },
        });
        if self.label_from_folder {
            if let Some(label) = metadata::folder_label(&source.rel) {
                own[metadata::LABEL_KEY] = json!(label);
            }
        }
        if let Some(fields) = self.side.and_then(|s| s.fields(&source.rel)) {
            for (k, v) in fields {
                own[k] = v.clone();
            }
        }
        // `source` is replaced whole, not merged.
        if let Some(obj) = m.as_object_mut() {
            obj.remove("source");
        }
        merge_patch(&mut m, &own);
        m
    }
}

/// A file to embed.
struct Todo {
    source: Source,
    bytes: Vec<u8>,
    record: PathRecord,
    /// Counted as `updated` (its item exists with other content) rather than `indexed`.
    update: bool,
    /// An item from an earlier version of the job (id = content hash) this one replaces.
    legacy: Option<String>,
}

fn sources(dir: &Path, root: &Path, files: Vec<PathBuf>) -> Vec<Source> {
    files
        .into_iter()
        .map(|file| {
            let below = file.strip_prefix(dir).unwrap_or(&file).to_path_buf();
            let rel = rel_text(&below);
            Source { abs: root.join(&below), file, rel }
        })
        .collect()
}

/// Nanoseconds since the Unix epoch (negative before it), `None` where the platform has none.
fn mtime_ns(meta: &std::fs::Metadata) -> Option<i64> {
    let t = meta.modified().ok()?;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).ok(),
        Err(e) => i64::try_from(e.duration().as_nanos()).ok().map(|n| -n),
    }
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Images in flight between two stages of the pipeline, in batches: enough to keep every
/// stage busy while its neighbour finishes a batch, few enough to bound memory.
const QUEUE_BATCHES: usize = 2;

/// Indexes the images under `dir` into `gallery` (see the module docs); `on_progress` is
/// called after each committed batch. Unreadable files are reported, not fatal.
///
/// The work is pipelined over bounded queues, one thread per stage, so that reading and
/// hashing, decoding (on every core), inference and committing overlap: a batch is read
/// while the one before it is decoded, the one before that embedded, and the one before
/// that committed. Batches are committed in walk order.
///
/// Inference runs on each of the model's streams (see [`OnnxModel`]), each taking the
/// next decoded batch: independent streams do not wait for each other's threads, so a
/// thread that the decoder or the commit pre-empts delays only its own batch.
pub fn index_folder(
    model: &OnnxModel,
    gallery: &dyn Gallery,
    dir: &Path,
    opts: &IndexOptions,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Report> {
    let started = Instant::now();
    let root = dir.canonicalize().map_err(Error::io(dir))?;
    let side = opts.metadata_file.as_deref().map(|f| metadata::SideFile::read(f, &root)).transpose()?;
    let describe = Describe { root: &root, side: side.as_ref(), label_from_folder: opts.label_from_folder };
    let mut files = sources(dir, &root, contract::find_images(dir)?);
    // Metadata rows are matched against the whole folder: a row for another shard's file
    // is not unmatched.
    let unmatched = side.as_ref().map(|side| side.unmatched(files.iter().map(|s| s.rel.as_str())));
    if let Some(shard) = opts.shard {
        files.retain(|s| shard.holds(&s.rel));
    }
    let mut report = Report { progress: Progress { total: files.len(), ..Progress::default() }, ..Report::default() };
    report.unmatched_metadata = unmatched.unwrap_or_default();
    on_progress(&report.progress);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let batch = opts.batch.max(1);
    // Batches carry their walk-order number through the stages, so that the commit can
    // put back in order what the inference streams finish out of order.
    let (read_tx, read_rx) = crossbeam_channel::bounded::<(usize, Triaged)>(QUEUE_BATCHES);
    let (prepared_tx, prepared_rx) = crossbeam_channel::bounded::<(usize, Prepared)>(QUEUE_BATCHES);
    let (embedded_tx, embedded_rx) = crossbeam_channel::bounded::<(usize, Embedded)>(QUEUE_BATCHES);
    let describe = &describe;
    let ((read, prepare, embed), commit_s, committed) = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(HashSet<PathBuf>, f64)> {
            let mut listed = HashSet::new();
            let mut busy = 0.0;
            let mut files = files.into_iter().peekable();
            let mut seq = 0;
            while files.peek().is_some() {
                let chunk: Vec<Source> = files.by_ref().take(batch).collect();
                let t = Instant::now();
                listed.extend(chunk.iter().map(|s| s.abs.clone()));
                let triaged = triage(gallery, describe, chunk)?;
                busy += t.elapsed().as_secs_f64();
                if read_tx.send((seq, triaged)).is_err() {
                    break; // a later stage stopped; its error is the one reported
                }
                seq += 1;
            }
            Ok((listed, busy))
        });
        let preparer = s.spawn(move || -> Result<f64> {
            let mut busy = 0.0;
            for (seq, triaged) in read_rx {
                let t = Instant::now();
                let prepared = prepare(model, triaged, opts.max_pixels, threads);
                busy += t.elapsed().as_secs_f64();
                if prepared_tx.send((seq, prepared)).is_err() {
                    break;
                }
            }
            Ok(busy)
        });
        let embedders: Vec<_> = (0..model.streams().max(1))
            .map(|stream| {
                let (prepared_rx, embedded_tx) = (prepared_rx.clone(), embedded_tx.clone());
                s.spawn(move || -> Result<f64> {
                    let mut busy = 0.0;
                    for (seq, prepared) in prepared_rx {
                        let t = Instant::now();
                        let embedded = embed(model, stream, prepared)?;
                        busy += t.elapsed().as_secs_f64();
                        if embedded_tx.send((seq, embedded)).is_err() {
                            break;
                        }
                    }
                    Ok(busy)
                })
            })
            .collect();
        // The streams hold the only other ends: the commit loop ends when they all have.
        drop((prepared_rx, embedded_tx));
        let mut commit_busy = 0.0;
        let committed = (|| -> Result<()> {
            let (mut next, mut waiting) = (0, BTreeMap::new());
            for (seq, embedded) in embedded_rx {
                waiting.insert(seq, embedded);
                while let Some(embedded) = waiting.remove(&next) {
                    let t = Instant::now();
                    commit(gallery, describe, embedded, &mut report)?;
                    commit_busy += t.elapsed().as_secs_f64();
                    on_progress(&report.progress);
                    next += 1;
                }
            }
            Ok(())
        })();
        let crashed = |stage: &str| Error::Inference(format!("the indexing job's {stage} stage crashed"));
        let read = reader.join().unwrap_or_else(|_| Err(crashed("read")));
        let prepare = preparer.join().unwrap_or_else(|_| Err(crashed("decode")));
        let embed = embedders.into_iter().try_fold(0.0, |sum, stream| {
            stream.join().unwrap_or_else(|_| Err(crashed("inference"))).map(|busy| sum + busy)
        });
        ((read, prepare, embed), commit_busy, committed)
    });
    // The first stage that failed is the cause; the stages after it only ran dry.
    let (listed, read_s) = read?;
    let prepare_s = prepare?;
    let embed_s = embed?;
    committed?;
    report.stages = StageSeconds { read: read_s, decode: prepare_s, embed: embed_s, commit: commit_s };
    if opts.sync {
        report.progress.removed = remove_gone(gallery, &root, &listed, opts.shard)?;
        on_progress(&report.progress);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A batch, read and sorted: the files to embed, and what the skipped ones changed.
struct Triaged {
    /// Files in the batch, whatever became of them.
    n: usize,
    todo: Vec<Todo>,
    change: GalleryChange,
    skipped: usize,
    failures: Vec<(PathBuf, String)>,
}

/// A batch, decoded and preprocessed: the inputs of the files that decoded, in order.
struct Prepared {
    triaged: Triaged,
    /// `[ok.len(), 3, crop, crop]` flattened
    inputs: Vec<f32>,
    /// The files that decoded, with their thumbnails.
    ok: Vec<(Todo, Vec<u8>)>,
}

/// A batch, embedded.
struct Embedded {
    prepared: Prepared,
    /// One per `prepared.ok`.
    vectors: Vec<Vec<f32>>,
}

/// Decodes and preprocesses a batch on `threads` threads; files that do not decode become
/// failures.
fn prepare(model: &OnnxModel, mut triaged: Triaged, max_pixels: u64, threads: usize) -> Prepared {
    let files: Vec<&[u8]> = triaged.todo.iter().map(|t| t.bytes.as_slice()).collect();
    let results = prepare_all(model, &files, max_pixels, threads);
    let mut inputs = Vec::with_capacity(results.len() * model.input_len());
    let mut ok = Vec::with_capacity(results.len());
    for (mut item, result) in std::mem::take(&mut triaged.todo).into_iter().zip(results) {
        match result {
            Ok((input, thumb)) => {
                inputs.extend_from_slice(&input);
                item.bytes = Vec::new(); // the file's bytes are no longer needed
                ok.push((item, thumb));
            }
            Err(e) => triaged.failures.push((item.source.file, file_failure(&e))),
        }
    }
    Prepared { triaged, inputs, ok }
}

/// Runs a batch through the model's stream `stream`.
fn embed(model: &OnnxModel, stream: usize, mut prepared: Prepared) -> Result<Embedded> {
    let inputs = std::mem::take(&mut prepared.inputs);
    let vectors = model.embed_on(stream, inputs, prepared.ok.len())?;
    Ok(Embedded { prepared, vectors })
}

/// Writes a batch's items, path records and metadata in one transaction and counts it.
fn commit(gallery: &dyn Gallery, describe: &Describe, embedded: Embedded, report: &mut Report) -> Result<()> {
    let Embedded { prepared, vectors } = embedded;
    let Prepared { triaged, ok, .. } = prepared;
    let Triaged { n, mut change, skipped, failures, .. } = triaged;
    for ((item, thumb), vector) in ok.into_iter().zip(vectors) {
        if item.update || item.legacy.is_some() {
            report.progress.updated += 1;
        } else {
            report.progress.indexed += 1;
        }
        let old = gallery.get(&item.record.id)?.map(|r| r.metadata);
        let metadata = describe.metadata(old.as_ref(), &item.source, item.record.size);
        change.delete.extend(item.legacy);
        change.insert.push(NewImage {
            id: Some(item.record.id.clone()),
            metadata,
            content_hash: Some(item.record.content_hash.clone()),
            vector,
            thumbnail: Some(thumb),
            // The file itself stays where it is, recorded in `source.path`.
            original: None,
        });
        change.set_paths.push((item.source.abs, item.record));
    }
    if !change.is_empty() {
        gallery.apply(change)?;
    }
    report.progress.skipped += skipped;
    report.failures.extend(failures);
    report.progress.failed = report.failures.len();
    report.progress.done += n;
    Ok(())
}

/// Sorts a batch: files already indexed at their path are counted as skipped (with their
/// record refreshed into the batch's change when only the mtime moved, and their metadata
/// when the job's keys changed), unreadable ones as failures; the rest, read and hashed,
/// are to be embedded.
fn triage(gallery: &dyn Gallery, describe: &Describe, chunk: Vec<Source>) -> Result<Triaged> {
    let abs: Vec<PathBuf> = chunk.iter().map(|s| s.abs.clone()).collect();
    let states = gallery.path_states(&abs)?;
    let mut out = Triaged {
        n: chunk.len(),
        todo: Vec::new(),
        change: GalleryChange::default(),
        skipped: 0,
        failures: Vec::new(),
    };
    let change = &mut out.change;
    for (source, state) in chunk.into_iter().zip(states) {
        let meta = match std::fs::metadata(&source.file) {
            Ok(m) => m,
            Err(e) => {
                out.failures.push((source.file, e.to_string()));
                continue;
            }
        };
        let mtime = mtime_ns(&meta);
        let current = state.as_ref().filter(|s| s.item_current).map(|s: &PathState| &s.record);
        if current.is_some_and(|r| r.size == meta.len() && r.mtime_ns.is_some() && r.mtime_ns == mtime) {
            out.skipped += 1;
            refresh_metadata(gallery, describe, &source, meta.len(), change)?;
            continue;
        }
        let bytes = match std::fs::read(&source.file) {
            Ok(b) => b,
            Err(e) => {
                out.failures.push((source.file, e.to_string()));
                continue;
            }
        };
        let hash = contract::sha256_hex(&bytes);
        let trusted = mtime.filter(|m| *m < now_ns() - RACY_MTIME_NS);
        let record =
            PathRecord { id: path_id(&source.abs), size: bytes.len() as u64, mtime_ns: trusted, content_hash: hash };
        if let Some(old) = current.filter(|r| r.content_hash == record.content_hash) {
            out.skipped += 1;
            refresh_metadata(gallery, describe, &source, meta.len(), change)?;
            if *old != record {
                change.set_paths.push((source.abs, record));
            }
            continue;
        }
        let legacy = if state.is_none() { legacy_item(gallery, &record, &source.rel)? } else { None };
        out.todo.push(Todo { source, bytes, update: current.is_some(), record, legacy });
    }
    Ok(out)
}

/// Queues new metadata for the item of a skipped file when the job's keys changed (a new
/// side file, `--label-from-folder` turned on).
fn refresh_metadata(
    gallery: &dyn Gallery,
    describe: &Describe,
    source: &Source,
    bytes: u64,
    change: &mut GalleryChange,
) -> Result<()> {
    let id = path_id(&source.abs);
    if let Some(old) = gallery.get(&id)? {
        let new = describe.metadata(Some(&old.metadata), source, bytes);
        if new != old.metadata {
            change.set_metadata.push((id, new));
        }
    }
    Ok(())
}

/// The item an earlier version of the job made from this file (id = content hash, the
/// same relative path, no source record), which the per-path item replaces.
fn legacy_item(gallery: &dyn Gallery, record: &PathRecord, rel: &str) -> Result<Option<String>> {
    let id = content_id(&record.content_hash);
    if id == record.id {
        return Ok(None);
    }
    let Some(old) = gallery.get(&id)? else {
        return Ok(None);
    };
    let legacy = old.metadata.get("source").is_none() && old.metadata.get("path").and_then(|p| p.as_str()) == Some(rel);
    Ok(legacy.then_some(id))
}

/// Removes the items and path records of files under `root` (in `shard`, when given) not
/// in `listed`; returns how many items were removed.
fn remove_gone(gallery: &dyn Gallery, root: &Path, listed: &HashSet<PathBuf>, shard: Option<Shard>) -> Result<usize> {
    let gone: Vec<(PathBuf, PathRecord)> = gallery
        .paths_under(root)?
        .into_iter()
        .filter(|(p, _)| {
            !listed.contains(p) && shard.is_none_or(|s| s.holds(&rel_text(p.strip_prefix(root).unwrap_or(p))))
        })
        .collect();
    let mut removed = 0;
    for part in gone.chunks(SYNC_BATCH) {
        let mut change = GalleryChange::default();
        for (path, record) in part {
            if gallery.get(&record.id)?.is_some() {
                change.delete.push(record.id.clone());
                removed += 1;
            }
            change.remove_paths.push(path.clone());
        }
        gallery.apply(change)?;
    }
    if removed > 0 {
        tracing::info!(removed, root = %root.display(), "removed the items of files that are gone");
    }
    Ok(removed)
}

/// Why a file failed, in words about the file (not about a request body).
fn file_failure(e: &Error) -> String {
    match e {
        Error::NotAnImage { reason } => format!("not a readable image: {reason}"),
        other => other.to_string(),
    }
}

/// Decodes and preprocesses encoded images on `threads` threads, for `model`.
///
/// # Shapes
/// - each `Ok` holds `[3, crop, crop]` and a thumbnail (see [`thumbnail`])
pub(crate) fn prepare_all(
    model: &OnnxModel,
    images: &[&[u8]],
    max_pixels: u64,
    threads: usize,
) -> Vec<Result<(Vec<f32>, Vec<u8>)>> {
    let preprocess = &model.manifest().preprocess;
    let min_side = crate::embed::min_side(preprocess);
    let per = images.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = images
            .chunks(per)
            .map(|part| {
                let n = part.len();
                let handle = s.spawn(move || {
                    part.iter()
                        .map(|bytes| {
                            let img = decode_image(bytes, max_pixels, min_side)?;
                            Ok((preprocess.apply(&img), thumbnail(bytes, &img)?))
                        })
                        .collect::<Vec<_>>()
                });
                (n, handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| {
                    (0..n)
                        .map(|_| Err(Error::NotAnImage { reason: "the decoder crashed on this file".into() }))
                        .collect()
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_a_folder_into_disjoint_parts() {
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 1, count: 4 });
        for bad in ["0/4", "5/4", "1/0", "2", "a/b", "-1/3"] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--shard") && e.contains("I/N"), "{bad}: {e}");
        }
        let shards: Vec<Shard> = (1..=3).map(|i| Shard::parse(&format!("{i}/3")).unwrap()).collect();
        let files: Vec<String> = (0..300).map(|i| format!("class-{}/img {i}.png", i % 7)).collect();
        let mut sizes = [0usize; 3];
        for f in &files {
            let owners: Vec<usize> = (0..3).filter(|&s| shards[s].holds(f)).collect();
            assert_eq!(owners.len(), 1, "{f} belongs to exactly one part");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 70), "parts are about even: {sizes:?}");
        assert!(files.iter().all(|f| Shard::parse("1/1").unwrap().holds(f)));
    }
}
