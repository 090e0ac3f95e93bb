//! Turning uploaded bytes into an image safely: the format is sniffed from the bytes, the
//! pixel count is checked from the header before anything is decoded (a
//! decompression-bomb guard), and decoding runs under allocation limits.

use std::io::Cursor;

use image::{DynamicImage, ImageReader, Limits};

use crate::{Error, Result};

/// Bytes per pixel the decoder may allocate at most (RGBA of 16-bit channels).
const MAX_BYTES_PER_PIXEL: u64 = 8;
/// Longest side of stored thumbnails.
pub const THUMBNAIL_SIDE: u32 = 160;

/// Decodes an image, refusing more than `max_pixels` pixels before decoding them.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(Error::NotAnImage { reason: "the body is empty".into() });
    }
    let reader = |what: &str| -> Result<ImageReader<Cursor<&[u8]>>> {
        let r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::NotAnImage { reason: format!("{what}: {e}") })?;
        if r.format().is_none() {
            return Err(Error::NotAnImage { reason: "unrecognised format (send JPEG, PNG, WebP, BMP or GIF)".into() });
        }
        Ok(r)
    };
    let (width, height) = reader("reading the header")?
        .into_dimensions()
        .map_err(|e| Error::NotAnImage { reason: format!("unreadable header: {e}") })?;
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(Error::ImageTooLarge { width, height, pixels, limit: max_pixels });
    }
    if pixels == 0 {
        return Err(Error::NotAnImage { reason: "the image has no pixels".into() });
    }
    let mut r = reader("decoding")?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL).max(1 << 20));
    r.limits(limits);
    r.decode().map_err(|e| Error::NotAnImage { reason: format!("corrupt or truncated: {e}") })
}

/// A small JPEG of the image for result pages.
pub fn thumbnail_jpeg(img: &DynamicImage) -> Result<Vec<u8>> {
    let small = img.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE).to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&small)
        .map_err(|e| Error::Inference(format!("cannot encode a thumbnail: {e}")))?;
    Ok(out)
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
        assert_eq!(decode_image(&ok, 1000).unwrap().width(), 20);
        assert!(matches!(decode_image(&ok, 199), Err(Error::ImageTooLarge { pixels: 200, .. })));
        assert!(matches!(decode_image(b"", 1000), Err(Error::NotAnImage { .. })));
        assert!(matches!(decode_image(b"hello, not an image", 1000), Err(Error::NotAnImage { .. })));
        assert!(matches!(decode_image(&ok[..ok.len() / 2], 1000), Err(Error::NotAnImage { .. })));
        let thumb = thumbnail_jpeg(&decode_image(&ok, 1000).unwrap()).unwrap();
        assert_eq!(&thumb[..2], &[0xFF, 0xD8]);
    }
}
