//! Images to vectors: decode (with the bomb guard), preprocess exactly as the model's
//! manifest says (the shared [`models::Preprocess`]), then embed through the dynamic
//! batcher. Decoding and preprocessing of a large image run on the blocking pool; a small
//! one ([`INLINE_DECODE_PIXELS`]) is decoded on the HTTP worker that received it, since the
//! hand-off would cost more than the work. Inference runs on its own thread.

mod batcher;
pub mod decode;

pub use batcher::Batcher;
pub use decode::{decode_image, min_side, thumbnail, thumbnail_media_type, KEPT_FILE_BYTES, THUMBNAIL_SIDE};

use std::sync::Arc;
use std::time::Instant;

use contract::Manifest;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::runtime::OnnxModel;
use crate::settings::BatchSettings;
use crate::{Error, Result};

/// Images of at most this many pixels (by their header) are decoded and preprocessed on the
/// HTTP worker itself: about half a millisecond of work, while the round trip through the
/// blocking pool cost 0.1-0.2 ms of thread wake-ups on a 2-core VM (BENCHMARKS.md).
pub const INLINE_DECODE_PIXELS: u64 = 320 * 320;

/// Where the time of one embedding went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EmbedTimings {
    /// Decoding and preprocessing.
    pub decode_ms: f64,
    /// Waiting for a batch and running it.
    pub embed_ms: f64,
}

/// An embedded image.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// `[embedding_dim]`
    pub vector: Vec<f32>,
    /// JPEG, when asked for.
    pub thumbnail: Option<Vec<u8>>,
    pub timings: EmbedTimings,
}

/// The model plus its batcher.
pub struct Embedder {
    model: Arc<OnnxModel>,
    batcher: Batcher,
    max_pixels: u64,
}

impl Embedder {
    /// Starts batching inference for `model`.
    pub fn new(model: Arc<OnnxModel>, batch: &BatchSettings, max_pixels: u64, metrics: Arc<Metrics>) -> Self {
        let batcher = Batcher::start(model.clone(), batch, metrics);
        Self { model, batcher, max_pixels }
    }

    /// The model's manifest.
    pub fn manifest(&self) -> &Manifest {
        self.model.manifest()
    }

    /// The model.
    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// Decodes, preprocesses and embeds one uploaded image file.
    pub async fn embed_bytes(&self, bytes: actix_web::web::Bytes, with_thumbnail: bool) -> Result<Embedded> {
        let started = Instant::now();
        let preprocess = self.model.manifest().preprocess.clone();
        let (max_pixels, min_side) = (self.max_pixels, min_side(&preprocess));
        let small = contract::header_pixels(&bytes).is_some_and(|p| p <= INLINE_DECODE_PIXELS);
        let prepare = move || -> Result<_> {
            let img = decode_image(&bytes, max_pixels, min_side)?;
            let thumb = if with_thumbnail { Some(thumbnail(&bytes, &img)?) } else { None };
            Ok((preprocess.apply(&img), thumb))
        };
        let (input, thumbnail) = if small {
            prepare()?
        } else {
            tokio::task::spawn_blocking(prepare).await.map_err(|_| Error::Unavailable)??
        };
        let decoded = Instant::now();
        let vector = self.batcher.embed(input).await?;
        let timings = EmbedTimings {
            decode_ms: (decoded - started).as_secs_f64() * 1e3,
            embed_ms: decoded.elapsed().as_secs_f64() * 1e3,
        };
        Ok(Embedded { vector, thumbnail, timings })
    }
}
