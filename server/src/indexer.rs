//! The batch indexing job behind `server index`: embed every image under a folder
//! (recursively, as [`contract::find_images`] lists them, the same files `trainer fit`
//! reads) in batches and store it, skipping files whose content is already indexed, so an
//! interrupted run resumes where it stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::embed::{decode_image, thumbnail_jpeg};
use crate::gallery::{Gallery, NewImage};
use crate::runtime::OnnxModel;
use crate::{Error, Result};

/// Where a run stands, reported after every batch.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Files looked at so far (indexed, skipped or failed).
    pub done: usize,
    pub total: usize,
    pub indexed: usize,
    /// Already in the index (same content hash).
    pub skipped: usize,
    pub failed: usize,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub progress: Progress,
    /// Files that could not be read or decoded, with the reason.
    pub failures: Vec<(PathBuf, String)>,
    pub seconds: f64,
}

/// The id the job gives a file: the first 128 bits of its SHA-256, in hex.
pub fn content_id(hash_hex: &str) -> String {
    hash_hex[..32].to_string()
}

/// Indexes the images under `dir` into `gallery`, `batch` at a time; `on_progress` is
/// called after each batch. Unreadable files are reported, not fatal.
pub fn index_folder(
    model: &OnnxModel,
    gallery: &Gallery,
    dir: &Path,
    batch: usize,
    max_pixels: u64,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Report> {
    let started = Instant::now();
    let files = contract::find_images(dir)?;
    let mut report = Report { progress: Progress { total: files.len(), ..Progress::default() }, ..Report::default() };
    on_progress(&report.progress);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    for chunk in files.chunks(batch.max(1)) {
        let mut todo = Vec::new();
        for path in chunk {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let hash = contract::sha256_hex(&bytes);
                    let dup = todo.iter().any(|(_, h, _): &(PathBuf, String, Vec<u8>)| *h == hash);
                    if dup || gallery.has_hash(&hash)? {
                        report.progress.skipped += 1;
                    } else {
                        todo.push((path.clone(), hash, bytes));
                    }
                }
                Err(e) => report.failures.push((path.clone(), e.to_string())),
            }
        }
        let prepared = prepare(model, &todo, max_pixels, threads);
        let mut inputs = Vec::new();
        let mut ok = Vec::new();
        for ((path, hash, bytes), result) in todo.iter().zip(prepared) {
            match result {
                Ok((input, thumb)) => {
                    inputs.extend_from_slice(&input);
                    ok.push((path, hash, bytes.len(), thumb));
                }
                Err(e) => report.failures.push((path.clone(), e.to_string())),
            }
        }
        let vectors = model.embed(inputs, ok.len())?;
        let images: Vec<NewImage> = ok
            .into_iter()
            .zip(vectors)
            .map(|((path, hash, len, thumb), vector)| {
                let rel = path.strip_prefix(dir).unwrap_or(path);
                let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                NewImage {
                    id: Some(content_id(hash)),
                    metadata: json!({ "path": rel, "bytes": len }),
                    content_hash: Some(hash.clone()),
                    vector,
                    thumbnail: Some(thumb),
                }
            })
            .collect();
        report.progress.indexed += images.len();
        if !images.is_empty() {
            gallery.insert(images)?;
        }
        report.progress.failed = report.failures.len();
        report.progress.done += chunk.len();
        on_progress(&report.progress);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Decodes and preprocesses files on `threads` threads.
///
/// # Shapes
/// - each `Ok` holds `[3, crop, crop]` and a JPEG thumbnail
fn prepare(
    model: &OnnxModel,
    todo: &[(PathBuf, String, Vec<u8>)],
    max_pixels: u64,
    threads: usize,
) -> Vec<Result<(Vec<f32>, Vec<u8>)>> {
    let preprocess = &model.manifest().preprocess;
    let per = todo.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = todo
            .chunks(per)
            .map(|part| {
                let n = part.len();
                let handle = s.spawn(move || {
                    part.iter()
                        .map(|(_, _, bytes)| {
                            let img = decode_image(bytes, max_pixels)?;
                            Ok((preprocess.apply(&img), thumbnail_jpeg(&img)?))
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
