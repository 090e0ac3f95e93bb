//! Decoding image bytes or files into pixels, safely and the same way in the trainer and
//! the server: the format is sniffed from the bytes (a wrong extension still decodes), the
//! pixel count is checked from the header before anything is decoded (a
//! decompression-bomb guard), and decoding runs under an allocation limit.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader, Limits};

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
    r.limits(l);
    r.decode().map_err(|e| fail(format!("corrupt or truncated: {e}")))
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
}
