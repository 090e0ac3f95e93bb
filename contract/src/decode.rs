//! Decoding image bytes or files into pixels, safely and the same way in the trainer and
//! the server: the format is sniffed from the bytes (a wrong extension still decodes), the
//! pixel count is checked from the header before anything is decoded (a
//! decompression-bomb guard), decoding runs under an allocation limit, and the EXIF
//! orientation of phone photos is applied, so an image is embedded the way it is seen.

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::{ContractError, Result};

/// Bytes per pixel the decoder may allocate at most (RGBA of 16-bit channels).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// How large an image may be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width x height) an image may have.
    pub max_pixels: u64,
}

impl DecodeLimits {
    /// 40 megapixels: any camera's photo, not a decompression bomb.
    pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

    pub fn new(max_pixels: u64) -> Self {
        Self { max_pixels }
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_PIXELS)
    }
}

/// Decodes `bytes` (named `name` in errors: a path, or "the request body").
pub fn decode_bytes(bytes: &[u8], name: &str, limits: DecodeLimits) -> Result<DynamicImage> {
    decode_bytes_scaled(bytes, name, limits, 0)
}

/// Like [`decode_bytes`], for a consumer that needs no more than `min_side` pixels on the
/// shorter side (the preprocessing's resize, a thumbnail): a JPEG at least four times that
/// size is decoded at 1/4 or 1/8 of its size by a smaller inverse DCT, the larger
/// reduction that keeps the shorter side at `min_side` or more (as libjpeg's scaled
/// decoding and PIL's `draft` do); each reduction averages the pixels it merges, a box
/// filter the resize then follows. A 12-megapixel photo decodes 2.3x faster so; at 1/2 the
/// scaled decoder is no faster than the full one. Other images, and JPEGs the scaled
/// decoder cannot read, are decoded in full. The server decodes so (queries and `server
/// index` alike, so a gallery and its queries agree); the trainer decodes in full, as its
/// random crops may zoom into any part of a photo.
pub fn decode_bytes_scaled(bytes: &[u8], name: &str, limits: DecodeLimits, min_side: u32) -> Result<DynamicImage> {
    let fail = |reason: String| ContractError::NotAnImage { name: name.to_string(), reason };
    if bytes.is_empty() {
        return Err(fail("it is empty".into()));
    }
    let reader = |what: &str| -> Result<ImageReader<Cursor<&[u8]>>> {
        let r = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| fail(format!("{what}: {e}")))?;
        if r.format().is_none() {
            return Err(fail("unrecognised format (use JPEG, PNG, WebP, BMP or GIF)".into()));
        }
        Ok(r)
    };
    let (width, height) =
        reader("reading the header")?.into_dimensions().map_err(|e| fail(format!("unreadable header: {e}")))?;
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(ContractError::ImageTooLarge {
            name: name.to_string(),
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(fail("the image has no pixels".into()));
    }
    let mut r = reader("decoding")?;
    let mut l = Limits::default();
    l.max_image_width = Some(width);
    l.max_image_height = Some(height);
    l.max_alloc = Some(limits.max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL).max(1 << 20));
    let max_alloc = l.max_alloc;
    r.limits(l);
    let jpeg = r.format() == Some(ImageFormat::Jpeg);
    let corrupt = |e: image::ImageError| fail(format!("corrupt or truncated: {e}"));
    let mut decoder = r.into_decoder().map_err(corrupt)?;
    // An unreadable EXIF block is not worth refusing the pixels for.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let reduced = if jpeg && min_side > 0 && width.min(height) >= min_side.saturating_mul(4) {
        jpeg_reduced(bytes, width, height, min_side, max_alloc)
    } else {
        None
    };
    let mut img = match reduced {
        Some(img) => img,
        None => DynamicImage::from_decoder(decoder).map_err(corrupt)?,
    };
    img.apply_orientation(orientation);
    Ok(img)
}

/// A JPEG decoded at the smallest scale that keeps its shorter side at `min_side` or
/// more; `None` when the scaled decoder cannot read it or its colour model is not grey or
/// RGB (the full decoder then decides).
fn jpeg_reduced(bytes: &[u8], width: u32, height: u32, min_side: u32, max_alloc: Option<u64>) -> Option<DynamicImage> {
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    if let Some(max) = max_alloc {
        d.set_max_decoding_buffer_size(usize::try_from(max).unwrap_or(usize::MAX));
    }
    // The decoder picks the smallest scale at which either requested side is reached:
    // ask for the shorter side only.
    let side = u16::try_from(min_side).ok()?;
    let (w, h) = if width <= height { d.scale(side, u16::MAX) } else { d.scale(u16::MAX, side) }.ok()?;
    let grey = match d.info()?.pixel_format {
        jpeg_decoder::PixelFormat::L8 => true,
        jpeg_decoder::PixelFormat::RGB24 => false,
        _ => return None,
    };
    let pixels = d.decode().ok()?;
    let (w, h) = (u32::from(w), u32::from(h));
    if grey {
        image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
    } else {
        image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    }
}

/// The pixel count (width x height) the header of `bytes` declares, read without decoding;
/// `None` when the format or the header is not recognised.
pub fn header_pixels(bytes: &[u8]) -> Option<u64> {
    let (w, h) = ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()?;
    Some(w as u64 * h as u64)
}

/// Reads and decodes the file at `path`.
pub fn decode_file(path: &Path, limits: DecodeLimits) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|source| ContractError::Io { path: path.to_path_buf(), source })?;
    decode_bytes(&bytes, &path.display().to_string(), limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7])));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn header_pixels_reads_the_size_without_decoding() {
        let bytes = png(30, 7);
        assert_eq!(header_pixels(&bytes), Some(210));
        assert_eq!(header_pixels(b"not an image"), None);
    }

    #[test]
    fn decodes_and_refuses_bad_input() {
        let ok = png(20, 10);
        let limits = DecodeLimits::new(1000);
        assert_eq!(decode_bytes(&ok, "a.png", limits).unwrap().width(), 20);
        assert!(matches!(
            decode_bytes(&ok, "a.png", DecodeLimits::new(199)),
            Err(ContractError::ImageTooLarge { pixels: 200, .. })
        ));
        for bad in [&b""[..], b"hello, not an image", &ok[..ok.len() / 2]] {
            let err = decode_bytes(bad, "a.png", limits).unwrap_err();
            assert!(matches!(err, ContractError::NotAnImage { .. }), "{err}");
            assert!(err.to_string().starts_with("a.png "), "{err}");
        }
    }

    /// A JPEG of `w` x `h` with an EXIF block saying "rotate 90 degrees clockwise to view"
    /// (orientation 6, as phones write for portrait photos).
    fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, _| image::Rgb([(x * 60) as u8, 0, 0])));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        // TIFF header (little endian), one IFD entry: tag 0x0112 SHORT x1, next IFD none.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        tiff.extend(orientation.to_le_bytes());
        tiff.extend([0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend([0xFF, 0xE1]);
        out.extend(((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        let upright = decode_bytes(&jpeg_with_orientation(4, 2, 1), "a.jpg", DecodeLimits::default()).unwrap();
        assert_eq!((upright.width(), upright.height()), (4, 2));
        let turned = decode_bytes(&jpeg_with_orientation(4, 2, 6), "a.jpg", DecodeLimits::default()).unwrap();
        assert_eq!((turned.width(), turned.height()), (2, 4));
    }

    #[test]
    fn sixteen_bit_and_grey_images_decode() {
        let img = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(3, 2, |x, _| {
            image::Rgb([x as u16 * 20000, 0, 65535])
        }));
        let mut png16 = Cursor::new(Vec::new());
        img.write_to(&mut png16, image::ImageFormat::Png).unwrap();
        let back = decode_bytes(png16.get_ref(), "a.png", DecodeLimits::default()).unwrap().to_rgb8();
        assert_eq!(back.get_pixel(2, 0).0, [156, 0, 255]);
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(2, 2, image::Luma([77])));
        let mut pngg = Cursor::new(Vec::new());
        grey.write_to(&mut pngg, image::ImageFormat::Png).unwrap();
        assert_eq!(
            decode_bytes(pngg.get_ref(), "g.png", DecodeLimits::default()).unwrap().to_rgb8().get_pixel(1, 1).0,
            [77; 3]
        );
    }

    #[test]
    fn a_file_is_sniffed_not_trusted_by_extension() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("really_a_png.jpg");
        std::fs::write(&p, png(3, 4)).unwrap();
        assert_eq!(decode_file(&p, DecodeLimits::default()).unwrap().height(), 4);
        assert!(matches!(
            decode_file(&d.path().join("gone.png"), DecodeLimits::default()),
            Err(ContractError::Io { .. })
        ));
    }

    #[test]
    fn large_jpegs_decode_reduced_to_about_the_full_decode_resized() {
        // 1,000 x 640 with smooth gradients; a consumer needing 120 px on the shorter side.
        let (w, h) = (1000, 640);
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x / 4) as u8, (y / 3) as u8, ((x + y) / 7) as u8])
        }));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        let limits = DecodeLimits::default();
        let full = decode_bytes(&jpeg, "a.jpg", limits).unwrap();
        assert_eq!((full.width(), full.height()), (w, h));
        // 640 / 4 = 160 >= 120 > 640 / 8: a quarter of each side.
        let reduced = decode_bytes_scaled(&jpeg, "a.jpg", limits, 120).unwrap();
        assert_eq!((reduced.width(), reduced.height()), (250, 160));
        let resized = crate::resize(&full.to_rgb8(), 250, 160);
        let diff: f64 = resized
            .as_raw()
            .iter()
            .zip(reduced.to_rgb8().as_raw())
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / resized.as_raw().len() as f64;
        assert!(diff < 2.0, "mean |difference| {diff} of 255");
        // Under four times the need, or with no need given: decoded in full.
        assert_eq!(decode_bytes_scaled(&jpeg, "a.jpg", limits, 161).unwrap().width(), w);
        assert_eq!(decode_bytes_scaled(&jpeg, "a.jpg", limits, 0).unwrap().width(), w);
        // The orientation of a reduced photo is applied as of a full one.
        let big = jpeg_with_orientation(800, 400, 6);
        let turned = decode_bytes_scaled(&big, "a.jpg", limits, 100).unwrap();
        assert_eq!((turned.width(), turned.height()), (100, 200));
        // A truncated JPEG goes to the full decoder (its error or its partial pixels),
        // never a panic.
        let _ = decode_bytes_scaled(&jpeg[..jpeg.len() / 3], "a.jpg", limits, 120);
    }
}
