//! Decoding a sample into RGB pixels ([`contract::decode`]: the server's decoder and
//! limits, so `fit` and `index` accept the same files), and an optional in-memory cache of
//! decoded images for datasets small enough to keep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use contract::DecodeLimits;
use image::RgbImage;

use super::{DataError, Dataset, ImageSource, Result, Sample};

/// Decode a sample into 8-bit RGB. Grey images are replicated to three channels; alpha is
/// dropped. Images over [`DecodeLimits::DEFAULT_MAX_PIXELS`] fail instead of exhausting
/// memory. The format is sniffed from the file's bytes, so a mislabelled extension still
/// decodes.
pub fn decode(sample: &Sample) -> Result<RgbImage> {
    let fail = |reason: String| DataError::Decode { name: describe(sample), reason };
    let img = match &sample.source {
        ImageSource::File(path) => contract::into_rgb8(contract::decode_file(path, DecodeLimits::default())?),
        ImageSource::Idx { images, index } => {
            let plane = images.image(*index).ok_or_else(|| fail(format!("no image {index} in the IDX file")))?;
            let rgb: Vec<u8> = plane.iter().flat_map(|&v| [v, v, v]).collect();
            RgbImage::from_raw(images.cols, images.rows, rgb)
                .ok_or_else(|| fail("inconsistent IDX image size".into()))?
        }
        ImageSource::Stored { images, index } => {
            let bytes = images.original(*index)?;
            contract::into_rgb8(contract::decode_bytes(&bytes, &sample.name, DecodeLimits::default())?)
        }
    };
    if img.width() == 0 || img.height() == 0 {
        return Err(fail("the image has no pixels".into()));
    }
    Ok(img)
}

/// The sample's file path (or IDX name), for messages.
fn describe(sample: &Sample) -> String {
    match &sample.source {
        ImageSource::File(p) => p.display().to_string(),
        ImageSource::Idx { .. } => sample.name.clone(),
        ImageSource::Stored { images, .. } => format!("{} in {}", sample.name, images.path().display()),
    }
}

/// Decoded images kept in memory up to a byte budget, shared by the loader's threads and
/// across epochs. Images are inserted on first decode until the budget is spent; later
/// ones are decoded every time. Failures are never cached.
pub struct ImageCache {
    slots: Vec<OnceLock<Arc<RgbImage>>>,
    used: AtomicU64,
    budget: u64,
}

impl ImageCache {
    /// A cache for a dataset of `len` samples holding at most `budget_bytes` of pixels.
    pub fn new(len: usize, budget_bytes: u64) -> Self {
        Self { slots: (0..len).map(|_| OnceLock::new()).collect(), used: AtomicU64::new(0), budget: budget_bytes }
    }

    /// Bytes of pixels held.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Sample `i` of `dataset`, decoded (from the cache when present).
    pub fn get_or_decode(&self, dataset: &Dataset, i: usize) -> Result<Arc<RgbImage>> {
        let sample = dataset.samples.get(i).ok_or(DataError::IndexOutOfRange { index: i, len: dataset.len() })?;
        let Some(slot) = self.slots.get(i) else {
            return decode(sample).map(Arc::new);
        };
        if let Some(img) = slot.get() {
            return Ok(img.clone());
        }
        let img = Arc::new(decode(sample)?);
        let bytes = img.as_raw().len() as u64;
        if self.used.fetch_add(bytes, Ordering::Relaxed) + bytes <= self.budget {
            if slot.set(img.clone()).is_err() {
                self.used.fetch_sub(bytes, Ordering::Relaxed);
            }
        } else {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
        }
        Ok(img)
    }
}
