//! Image transforms: the training view (RandomResizedCrop + horizontal flip), the sampling
//! transform (squash to S x S) and the evaluation transform (the model's [`Preprocess`]),
//! each ending in a normalised CHW float buffer. Randomness comes from a per-sample
//! ChaCha8 stream, so a run is reproducible whatever the thread count.

use image::{imageops, DynamicImage, RgbImage};
use models::preprocess::Preprocess;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Probability of the horizontal flip in training views.
pub const HFLIP_P: f64 = 0.5;

/// The random stream of one augmented sample: a ChaCha8 key made of the run seed, the
/// epoch, the batch number, the image's position in its batch and the view number, so
/// every sample of a run draws independent numbers and the same ones on every rerun.
pub fn sample_rng(seed: u64, epoch: u64, batch: u64, position: u32, view: u32) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&batch.to_le_bytes());
    key[24..28].copy_from_slice(&position.to_le_bytes());
    key[28..32].copy_from_slice(&view.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// A crop rectangle in pixels: top-left corner (`x`, `y`), width `w`, height `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// torchvision's `RandomResizedCrop`: crop a random area fraction in `scale` with a random
/// aspect ratio (log-uniform in `ratio`), then resize to `size` x `size` (bilinear).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    pub size: u32,
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// STML's training crop: scale (`min_scale`, 1) (the paper: 0.16), ratio (3/4, 4/3).
    pub fn new(size: u32, min_scale: f64) -> Self {
        Self { size, scale: (min_scale, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) }
    }

    /// The crop box for a `width` x `height` image, as torchvision's `get_params`:
    /// up to 10 attempts of area = A * U(scale), aspect = exp(U(ln ratio)),
    /// w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)), accepted when it
    /// fits, at a uniform position; otherwise the centre crop of the whole image clamped
    /// to the ratio range.
    pub fn params(&self, width: u32, height: u32, rng: &mut impl Rng) -> CropBox {
        let (wf, hf) = (width as f64, height as f64);
        let area = wf * hf;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, lr0, lr1).exp();
            let w = (target * aspect).sqrt().round_ties_even();
            let h = (target / aspect).sqrt().round_ties_even();
            if w > 0.0 && h > 0.0 && w <= wf && h <= hf {
                let (w, h) = (w as u32, h as u32);
                let y = rng.gen_range(0..=height - h);
                let x = rng.gen_range(0..=width - w);
                return CropBox { x, y, w, h };
            }
        }
        let in_ratio = wf / hf;
        let (w, h) = if in_ratio < self.ratio.0 {
            (width, ((wf / self.ratio.0).round_ties_even() as u32).clamp(1, height.max(1)))
        } else if in_ratio > self.ratio.1 {
            (((hf * self.ratio.1).round_ties_even() as u32).clamp(1, width.max(1)), height)
        } else {
            (width, height)
        };
        CropBox { x: (width - w) / 2, y: (height - h) / 2, w, h }
    }

    /// Crop and resize an image.
    pub fn apply(&self, img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
        let b = self.params(img.width(), img.height(), rng);
        let region = [b.x as f64, b.y as f64, b.w as f64, b.h as f64];
        contract::resize_region(img, region, self.size, self.size)
    }
}

/// U(lo, hi), tolerating lo == hi.
fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.gen_range(lo..hi)
    } else {
        lo
    }
}

/// The image-to-tensor pipelines of the trainer. Each returns `[3, S, S]` normalised
/// values (channel-major) through [`Preprocess::normalize`].
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Training view: RandomResizedCrop to `crop.size`, horizontal flip with probability
    /// `flip_p`, normalise.
    Train { crop: RandomResizedCrop, flip_p: f64, preprocess: Preprocess },
    /// Sampling transform for the per-epoch neighbour search: resize to `size` x `size`
    /// (squashing the aspect ratio, no crop), normalise.
    Sampling { size: u32, preprocess: Preprocess },
    /// Evaluation: [`Preprocess::apply`] (shorter side to `resize`, centre crop, normalise).
    Eval(Preprocess),
}

impl Transform {
    /// STML's training view at the model's input size (`preprocess.crop`), its random crop
    /// keeping at least `min_scale` of the image's area.
    pub fn train(preprocess: &Preprocess, min_scale: f64) -> Self {
        Transform::Train {
            crop: RandomResizedCrop::new(preprocess.crop, min_scale),
            flip_p: HFLIP_P,
            preprocess: preprocess.clone(),
        }
    }

    /// The sampling transform at `size` x `size`.
    pub fn sampling(preprocess: &Preprocess, size: u32) -> Self {
        Transform::Sampling { size, preprocess: preprocess.clone() }
    }

    /// The evaluation transform.
    pub fn eval(preprocess: &Preprocess) -> Self {
        Transform::Eval(preprocess.clone())
    }

    /// Side S of the square output.
    pub fn output_size(&self) -> u32 {
        match self {
            Transform::Train { crop, .. } => crop.size,
            Transform::Sampling { size, .. } => *size,
            Transform::Eval(p) => p.crop,
        }
    }

    /// Whether the transform draws random numbers.
    pub fn is_random(&self) -> bool {
        matches!(self, Transform::Train { .. })
    }

    /// Transform one image.
    ///
    /// # Shapes
    /// - returns `3 * S * S` values, `[3, S, S]` channel-major, S = [`Self::output_size`].
    pub fn apply(&self, img: &RgbImage, rng: &mut impl Rng) -> Vec<f32> {
        match self {
            Transform::Train { crop, flip_p, preprocess } => {
                let mut out = crop.apply(img, rng);
                if rng.gen::<f64>() < *flip_p {
                    imageops::flip_horizontal_in_place(&mut out);
                }
                preprocess.normalize(&out)
            }
            Transform::Sampling { size, preprocess } => preprocess.normalize(&contract::resize(img, *size, *size)),
            Transform::Eval(preprocess) => preprocess.apply(&DynamicImage::ImageRgb8(img.clone())),
        }
    }
}
