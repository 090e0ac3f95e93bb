//! The preprocessing contract: how an image file becomes the network's input tensor.
//! The trainer (evaluation, export) and the server both use it, so both embed a file
//! identically.

use std::borrow::Cow;

use fast_image_resize::{FilterType, IntoImageView, IntoImageViewMut, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GrayImage, ImageBuffer, Pixel, RgbImage};
use serde::{Deserialize, Serialize};

/// Largest input side (`crop`) a model may ask for, and largest `resize`: 16k pixels, far
/// beyond any image network's input, small enough that one preprocessed image fits in
/// memory.
pub const MAX_INPUT_SIDE: u32 = 16_384;

/// Channel order of the network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Evaluation preprocessing: resize the shorter side to `resize`, centre-crop `crop` x `crop`,
/// scale pixel values by `scale` (1/255 for 0..1 inputs, 1 for Caffe's 0..255), then
/// subtract `mean` and divide by `std` per channel (in the network's channel order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub resize: u32,
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub channel_order: ChannelOrder,
    pub scale: f32,
}

impl Preprocess {
    /// ImageNet mean/std, RGB, 0..1: torchvision-style backbones.
    pub fn imagenet(resize: u32, crop: u32) -> Self {
        Self {
            resize,
            crop,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: ChannelOrder::Rgb,
            scale: 1.0 / 255.0,
        }
    }

    /// Caffe-converted Inception backbones: BGR, 0..255, mean (104, 117, 128), std 1.
    pub fn caffe(resize: u32, crop: u32) -> Self {
        Self {
            resize,
            crop,
            mean: [104.0, 117.0, 128.0],
            std: [1.0, 1.0, 1.0],
            channel_order: ChannelOrder::Bgr,
            scale: 1.0,
        }
    }

    /// The same contract at another input size (keeps the resize/crop ratio of 256/224).
    pub fn with_size(&self, crop: u32) -> Self {
        let resize = ((crop as f64) * (self.resize as f64) / (self.crop as f64)).round() as u32;
        Self { resize, crop, ..self.clone() }
    }

    /// Why this preprocessing cannot be used, if it cannot: sizes of 1 to
    /// [`MAX_INPUT_SIDE`] (a resize below the crop resizes to the crop), finite mean and
    /// scale, finite non-zero std, and the normalised values of every pixel value finite.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.crop == 0 || self.crop > MAX_INPUT_SIDE {
            return Err(format!("crop {} is not in 1..={MAX_INPUT_SIDE}", self.crop));
        }
        if self.resize > MAX_INPUT_SIDE {
            return Err(format!("resize {} is over {MAX_INPUT_SIDE}", self.resize));
        }
        if !self.scale.is_finite() || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("scale {} and mean {:?} must be finite numbers", self.scale, self.mean));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(format!("std {:?} must be finite and non-zero", self.std));
        }
        for c in 0..3 {
            for v in [0.0, 255.0] {
                if !((v * self.scale - self.mean[c]) / self.std[c]).is_finite() {
                    return Err(format!(
                        "channel {c} overflows: ({v} x {} - {}) / {}",
                        self.scale, self.mean[c], self.std[c]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Resize (shorter side) and centre-crop an image, giving `crop` x `crop` RGB pixels.
    /// One pass: only the source region under the crop is resampled, at the scale of the
    /// full resize, so the pixels are those of resizing the whole image and then cropping.
    pub fn resize_crop(&self, img: &DynamicImage) -> RgbImage {
        let rgb = rgb8(img);
        self.resize_crop_pixels(&rgb)
    }

    /// [`Self::resize_crop`] of pixels of any 8-bit layout, kept in it.
    fn resize_crop_pixels<P: Pixel<Subpixel = u8>>(&self, img: &ImageBuffer<P, Vec<u8>>) -> ImageBuffer<P, Vec<u8>>
    where
        ImageBuffer<P, Vec<u8>>: IntoImageView + IntoImageViewMut,
    {
        let (w, h) = img.dimensions();
        let s = self.resize.max(self.crop) as f64;
        let (nw, nh) = if w <= h {
            (s as u32, ((h as f64) * s / (w as f64)).round().max(1.0) as u32)
        } else {
            (((w as f64) * s / (h as f64)).round().max(1.0) as u32, s as u32)
        };
        let (sx, sy) = (w as f64 / nw as f64, h as f64 / nh as f64);
        let x0 = ((nw - self.crop) / 2) as f64;
        let y0 = ((nh - self.crop) / 2) as f64;
        let crop = self.crop as f64;
        resize_region(img, [x0 * sx, y0 * sy, crop * sx, crop * sy], self.crop, self.crop)
    }

    /// Normalise RGB pixels into a CHW float buffer in the network's channel order.
    ///
    /// # Shapes
    /// - `rgb`: H x W RGB pixels; returns `3 * H * W` values, channel-major.
    pub fn normalize(&self, rgb: &RgbImage) -> Vec<f32> {
        let (w, h) = rgb.dimensions();
        let plane = (w * h) as usize;
        let mut out = vec![0f32; 3 * plane];
        let order: [usize; 3] = match self.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        for (i, p) in rgb.pixels().enumerate() {
            for (c, &src) in order.iter().enumerate() {
                out[c * plane + i] = (p[src] as f32 * self.scale - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// The full evaluation transform: resize, centre crop, normalise. Returns `[3, crop, crop]`.
    pub fn apply(&self, img: &DynamicImage) -> Vec<f32> {
        match img {
            // The three channels of a grey image are equal: resizing the one is a third of
            // the work and gives the same values.
            DynamicImage::ImageLuma8(grey) => self.normalize_grey(&self.resize_crop_pixels(grey)),
            _ => self.normalize(&self.resize_crop(img)),
        }
    }

    /// [`Self::normalize`] of grey pixels, read as RGB with three equal channels.
    fn normalize_grey(&self, grey: &GrayImage) -> Vec<f32> {
        let plane = grey.as_raw().len();
        let mut out = Vec::with_capacity(3 * plane);
        for c in 0..3 {
            out.extend(grey.as_raw().iter().map(|&v| (v as f32 * self.scale - self.mean[c]) / self.std[c]));
        }
        out
    }
}

/// `img` as 8-bit RGB, borrowed when it is already: grey is copied into the three channels
/// and alpha dropped by plain loops (`DynamicImage::to_rgb8` goes through a colour-space
/// conversion in floats, 8 % of `server index`'s time on grey PNGs); other layouts (16-bit,
/// float) through `to_rgb8`. The same pixels as `to_rgb8` either way.
pub fn rgb8(img: &DynamicImage) -> Cow<'_, RgbImage> {
    let (w, h) = (img.width(), img.height());
    let expand = |px: Vec<u8>| Cow::Owned(RgbImage::from_raw(w, h, px).expect("w * h * 3 bytes"));
    match img {
        DynamicImage::ImageRgb8(rgb) => Cow::Borrowed(rgb),
        DynamicImage::ImageLuma8(g) => expand(g.as_raw().iter().flat_map(|&v| [v, v, v]).collect()),
        DynamicImage::ImageLumaA8(ga) => expand(ga.as_raw().chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect()),
        DynamicImage::ImageRgba8(rgba) => {
            expand(rgba.as_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect())
        }
        other => Cow::Owned(other.to_rgb8()),
    }
}

/// [`rgb8`], taking the image: an RGB one is moved, not copied.
pub fn into_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => rgb8(&other).into_owned(),
    }
}

/// Resizes `img` to `width` x `height` with a triangle (bilinear) filter whose support
/// widens with the shrink factor, as PIL's and torchvision's antialiased resize do.
/// The one resize of the project: training views, evaluation and serving all use it, on RGB
/// images (and the server's thumbnails of grey ones on grey pixels).
pub fn resize<P: Pixel<Subpixel = u8>>(
    img: &ImageBuffer<P, Vec<u8>>,
    width: u32,
    height: u32,
) -> ImageBuffer<P, Vec<u8>>
where
    ImageBuffer<P, Vec<u8>>: IntoImageView + IntoImageViewMut,
{
    let (w, h) = img.dimensions();
    resize_region(img, [0.0, 0.0, w as f64, h as f64], width, height)
}

/// Resizes the region `[left, top, width, height]` (source pixels, fractional allowed) of
/// `img` to `width` x `height`, as [`resize`] does (SIMD where the CPU has it). The region
/// is clipped to the image: a region computed in floats may overshoot its edge by a
/// rounding error (fuzzing found a centre crop that did), which the resizer refuses.
pub fn resize_region<P: Pixel<Subpixel = u8>>(
    img: &ImageBuffer<P, Vec<u8>>,
    region: [f64; 4],
    width: u32,
    height: u32,
) -> ImageBuffer<P, Vec<u8>>
where
    ImageBuffer<P, Vec<u8>>: IntoImageView + IntoImageViewMut,
{
    let mut out = ImageBuffer::new(width.max(1), height.max(1));
    if img.width() == 0 || img.height() == 0 {
        return out;
    }
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let left = region[0].clamp(0.0, iw);
    let top = region[1].clamp(0.0, ih);
    let (w, h) = (region[2].min(iw - left), region[3].min(ih - top));
    let usable = left.is_finite() && top.is_finite() && w > 0.0 && h > 0.0;
    let [left, top, w, h] = if usable { [left, top, w, h] } else { [0.0, 0.0, iw, ih] };
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(left, top, w, h);
    Resizer::new()
        .resize(img, &mut out, &options)
        .expect("a resize of a non-empty image into one of its pixel type cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzzer's find: the centre crop of a 7 x 7 image at 25 x 25 is a region that
    /// overshoots the image by 9e-16 pixels in floats, which the resizer refused (a panic).
    #[test]
    fn a_crop_region_past_the_edge_by_rounding_is_clipped() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(7, 7, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 0])));
        let v = Preprocess::imagenet(25, 25).apply(&img);
        assert_eq!(v.len(), 3 * 25 * 25);
        assert!(v.iter().all(|x| x.is_finite()));
        let out = resize_region(&rgb8(&img), [f64::NAN, -3.0, 99.0, 0.5], 4, 4);
        assert_eq!(out.dimensions(), (4, 4));
    }

    #[test]
    fn crop_is_square_and_centred() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(300, 200, |x, _| image::Rgb([(x % 256) as u8, 0, 0])));
        let p = Preprocess::imagenet(64, 56);
        let out = p.resize_crop(&img);
        assert_eq!(out.dimensions(), (56, 56));
        let v = p.apply(&img);
        assert_eq!(v.len(), 3 * 56 * 56);
    }

    #[test]
    fn resize_matches_a_triangle_filter_and_crops_like_a_full_resize() {
        let img = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([(x * 5 % 256) as u8, (y * 7 % 256) as u8, ((x ^ y) % 256) as u8])
        });
        for (w, h) in [(40, 30), (150, 90), (97, 61)] {
            let ours = resize(&img, w, h);
            let theirs = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
            let worst = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(worst <= 2, "{w}x{h}: off by {worst}");
        }
        let p = Preprocess::imagenet(50, 40);
        let (nw, nh) = (80, 50);
        let full = resize(&img, nw, nh);
        let expected = image::imageops::crop_imm(&full, (nw - 40) / 2, (nh - 40) / 2, 40, 40).to_image();
        let got = p.resize_crop(&DynamicImage::ImageRgb8(img.clone()));
        let worst = got.as_raw().iter().zip(expected.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(worst <= 1, "the one-pass crop is off by {worst}");
    }

    #[test]
    fn a_grey_image_resized_on_its_one_channel_gives_the_values_of_its_rgb_copy() {
        for (w, h) in [(128, 128), (97, 61), (20, 33), (300, 7)] {
            let grey = GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 31) ^ (y * 17)) as u8]));
            let rgb = DynamicImage::ImageRgb8(rgb8(&DynamicImage::ImageLuma8(grey.clone())).into_owned());
            for p in [Preprocess::imagenet(110, 96), Preprocess::caffe(40, 32)] {
                assert_eq!(p.apply(&DynamicImage::ImageLuma8(grey.clone())), p.apply(&rgb), "{w}x{h}, {p:?}");
            }
        }
    }

    #[test]
    fn bgr_swaps_channels() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30])));
        let p = Preprocess::caffe(4, 4);
        let v = p.apply(&img);
        assert_eq!(v[0], 30.0 - 104.0);
        assert_eq!(v[16], 20.0 - 117.0);
        assert_eq!(v[32], 10.0 - 128.0);
    }

    #[test]
    fn rgb8_gives_the_pixels_of_to_rgb8() {
        let (w, h) = (7, 5);
        let grey = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 31 + y * 17) as u8]));
        let grey_alpha =
            image::GrayAlphaImage::from_fn(w, h, |x, y| image::LumaA([(x * 13 + y) as u8, (y * 40) as u8]));
        let rgba = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([x as u8 * 9, y as u8 * 20, 200, (x * y) as u8]));
        let rgb16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(w, h, |x, y| {
            image::Rgb([x as u16 * 9000, y as u16 * 300, 65535])
        });
        for img in [
            DynamicImage::ImageLuma8(grey),
            DynamicImage::ImageLumaA8(grey_alpha),
            DynamicImage::ImageRgba8(rgba),
            DynamicImage::ImageRgb16(rgb16),
        ] {
            assert_eq!(*rgb8(&img), img.to_rgb8(), "{:?}", img.color());
            assert_eq!(into_rgb8(img.clone()), img.to_rgb8());
        }
    }
}
