//! Turning uploaded bytes into an image safely ([`contract::decode`]: format sniffed, pixel
//! count checked from the header, allocation limits), and the thumbnails kept for result
//! pages.

#[cfg(test)]
use std::io::Cursor;

use contract::{ContractError, DecodeLimits};
use image::DynamicImage;

use crate::{Error, Result};

/// Longest side of stored thumbnails.
pub const THUMBNAIL_SIDE: u32 = 160;

/// Decodes an uploaded image, refusing more than `max_pixels` pixels before decoding them.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage> {
    contract::decode_bytes(bytes, "the body", DecodeLimits::new(max_pixels)).map_err(|e| match e {
        ContractError::ImageTooLarge { width, height, pixels, limit, .. } => {
            Error::ImageTooLarge { width, height, pixels, limit }
        }
        ContractError::NotAnImage { reason, .. } => Error::NotAnImage { reason },
        other => Error::NotAnImage { reason: other.to_string() },
    })
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
