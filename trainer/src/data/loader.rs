//! The batch loader: decodes and transforms the images of each batch on a pool of worker
//! threads, a few batches ahead of the training step, and hands them over in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{decode, DataError, Dataset, ImageCache, Result, Transform};
use crate::data::transform::sample_rng;

/// Options of a [`Loader`].
#[derive(Clone)]
pub struct LoaderOptions {
    /// Augmented views per image (STML: 2 for training, 1 for embedding).
    pub views: usize,
    /// Worker threads decoding and transforming (0: one per core).
    pub threads: usize,
    /// Finished batches waiting ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Run seed; with `epoch` it fixes every random draw (see [`sample_rng`]).
    pub seed: u64,
    pub epoch: u64,
    /// Decoded images shared across epochs, if the dataset is worth keeping in memory.
    pub cache: Option<Arc<ImageCache>>,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self { views: 1, threads: 0, prefetch: 3, seed: 0, epoch: 0, cache: None }
    }
}

/// One batch, ready to become a tensor.
///
/// # Shapes
/// - `data`: `[rows, 3, size, size]` row-major, `rows = images * views`. Rows are
///   view-major, as STML's reference concatenates views: all images' first view in batch
///   order, then all images' second view, and so on.
/// - `idx`, `labels`: `[rows]`, the dataset index / label of each row.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Position of this batch in the list given to the loader.
    pub index: usize,
    pub data: Vec<f32>,
    /// Images that made it into the batch (requested images minus skipped ones).
    pub images: usize,
    pub views: usize,
    /// Rows of `data`: `images * views`.
    pub rows: usize,
    /// Side S of every image.
    pub size: u32,
    pub idx: Vec<i64>,
    /// Labels of the rows, when every image of the batch has one.
    pub labels: Option<Vec<i64>>,
    /// Dataset indices of this batch's images that could not be decoded (warned, dropped).
    pub skipped: Vec<usize>,
}

/// Consecutive batches of `0..len` of at most `batch_size` indices (the last may be
/// shorter): the order for embedding a whole dataset.
pub fn sequential_batches(len: usize, batch_size: usize) -> Vec<Vec<usize>> {
    let b = batch_size.max(1);
    (0..len).step_by(b).map(|s| (s..(s + b).min(len)).collect()).collect()
}

/// An iterator of [`Batch`]es computed ahead on worker threads, yielded in the order of the
/// batch list. An image that cannot be decoded is skipped with a `warn!` naming the file and
/// counted ([`Loader::skipped`]); it never stops the epoch. A batch left with no image is not
/// yielded. Dropping the loader stops the workers.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    skipped: Arc<AtomicUsize>,
    batches: usize,
}

impl Loader {
    /// Start loading `batches` (lists of dataset indices) through `transform`.
    /// Fails at once if an index is out of range or the thread pool cannot start.
    pub fn new(
        dataset: Arc<Dataset>,
        batches: Vec<Vec<usize>>,
        transform: Transform,
        options: LoaderOptions,
    ) -> Result<Self> {
        if let Some(&index) = batches.iter().flatten().find(|&&i| i >= dataset.len()) {
            return Err(DataError::IndexOutOfRange { index, len: dataset.len() });
        }
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            options.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("loader-{i}"))
            .build()
            .map_err(|e| DataError::Threads { threads, reason: e.to_string() })?;
        let (tx, rx) = bounded(options.prefetch.max(1));
        let skipped = Arc::new(AtomicUsize::new(0));
        let counter = skipped.clone();
        let count = batches.len();
        let worker = std::thread::Builder::new()
            .name("loader".into())
            .spawn(move || {
                for (b, indices) in batches.iter().enumerate() {
                    let batch = pool.install(|| build(&dataset, b, indices, &transform, &options));
                    counter.fetch_add(batch.skipped.len(), Ordering::Relaxed);
                    if batch.images > 0 && tx.send(batch).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| DataError::Threads { threads, reason: e.to_string() })?;
        Ok(Self { rx: Some(rx), worker: Some(worker), skipped, batches: count })
    }

    /// Images skipped so far because they could not be decoded.
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Number of batches requested (an all-corrupt batch is not yielded).
    pub fn len(&self) -> usize {
        self.batches
    }

    /// Whether no batch was requested.
    pub fn is_empty(&self) -> bool {
        self.batches == 0
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail, so it stops.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Decode and transform one batch on the current rayon pool.
fn build(dataset: &Dataset, b: usize, indices: &[usize], transform: &Transform, options: &LoaderOptions) -> Batch {
    let views = options.views.max(1);
    let size = transform.output_size();
    let per_image = 3 * (size as usize) * (size as usize);
    // [images][views] -> [3, S, S] values, None for a skipped image.
    let done: Vec<Option<Vec<Vec<f32>>>> = indices
        .par_iter()
        .enumerate()
        .map(|(pos, &i)| {
            let img = match &options.cache {
                Some(cache) => cache.get_or_decode(dataset, i),
                None => decode(&dataset.samples[i]).map(Arc::new),
            };
            let img = match img {
                Ok(img) => img,
                Err(e) => {
                    tracing::warn!("skipping image: {e}");
                    return None;
                }
            };
            Some(
                (0..views)
                    .map(|v| {
                        let mut rng = if transform.is_random() {
                            sample_rng(options.seed, options.epoch, b as u64, pos as u32, v as u32)
                        } else {
                            ChaCha8Rng::seed_from_u64(0)
                        };
                        transform.apply(&img, &mut rng)
                    })
                    .collect(),
            )
        })
        .collect();
    let kept: Vec<usize> = (0..indices.len()).filter(|&p| done[p].is_some()).collect();
    let skipped = (0..indices.len()).filter(|&p| done[p].is_none()).map(|p| indices[p]).collect();
    let rows = kept.len() * views;
    let mut data = Vec::with_capacity(rows * per_image);
    let mut idx = Vec::with_capacity(rows);
    let mut labels = Vec::with_capacity(rows);
    for v in 0..views {
        for &p in &kept {
            if let Some(images) = &done[p] {
                data.extend_from_slice(&images[v]);
            }
            idx.push(indices[p] as i64);
            labels.push(dataset.samples[indices[p]].label.map(i64::from));
        }
    }
    Batch { index: b, data, images: kept.len(), views, rows, size, idx, labels: labels.into_iter().collect(), skipped }
}
