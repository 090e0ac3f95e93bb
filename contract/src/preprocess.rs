//! The preprocessing contract: how an image file becomes the network's input tensor.
//! The trainer (evaluation, export) and the server both use it, so both embed a file
//! identically.

use image::{imageops::FilterType, DynamicImage, RgbImage};
use serde::{Deserialize, Serialize};

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

    /// Resize (shorter side) and centre-crop an image, giving `crop` x `crop` RGB pixels.
    pub fn resize_crop(&self, img: &DynamicImage) -> RgbImage {
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        let s = self.resize.max(self.crop) as f64;
        let (nw, nh) = if w <= h {
            (s as u32, ((h as f64) * s / (w as f64)).round().max(1.0) as u32)
        } else {
            (((w as f64) * s / (h as f64)).round().max(1.0) as u32, s as u32)
        };
        let resized = image::imageops::resize(&rgb, nw, nh, FilterType::Triangle);
        let x0 = (nw - self.crop) / 2;
        let y0 = (nh - self.crop) / 2;
        image::imageops::crop_imm(&resized, x0, y0, self.crop, self.crop).to_image()
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
        self.normalize(&self.resize_crop(img))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bgr_swaps_channels() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30])));
        let p = Preprocess::caffe(4, 4);
        let v = p.apply(&img);
        assert_eq!(v[0], 30.0 - 104.0);
        assert_eq!(v[16], 20.0 - 117.0);
        assert_eq!(v[32], 10.0 - 128.0);
    }
}
