//! Turning uploaded bytes into an image safely ([`contract::decode`]: format sniffed, pixel
//! count checked from the header, allocation limits), and the thumbnails kept for result
//! pages.

use std::borrow::Cow;
#[cfg(test)]
use std::io::Cursor;

use contract::{ContractError, DecodeLimits};
use image::{DynamicImage, ImageBuffer, ImageFormat};

use crate::{Error, Result};

/// Longest side of stored thumbnails.
pub const THUMBNAIL_SIDE: u32 = 160;

/// Largest file [`thumbnail`] keeps as its own thumbnail. A JPEG thumbnail of
/// [`THUMBNAIL_SIDE`] pixels takes 5-15 KiB; the base64 of this many bytes still fits the
/// 64 KiB text field a Milvus gallery stores a thumbnail in.
pub const KEPT_FILE_BYTES: usize = 32 * 1024;

/// The fewest pixels the shorter side of a decoded image must keep for `preprocess` (its
/// resize) and for a thumbnail: what [`decode_image`] may reduce a large JPEG to.
pub fn min_side(preprocess: &contract::Preprocess) -> u32 {
    preprocess.resize.max(preprocess.crop).max(THUMBNAIL_SIDE)
}

/// Decodes an uploaded image, refusing more than `max_pixels` pixels before decoding them;
/// a JPEG of more than twice `min_side` on its shorter side is decoded at a reduced scale
/// (see [`contract::decode_bytes_scaled`]). The result is 8-bit grey when the file is grey
/// without alpha, 8-bit RGB otherwise: converted once here, so that the preprocessing and
/// the thumbnail both read it as it is (and a grey image keeps a grey thumbnail).
pub fn decode_image(bytes: &[u8], max_pixels: u64, min_side: u32) -> Result<DynamicImage> {
    let img = contract::decode_bytes_scaled(bytes, "the body", DecodeLimits::new(max_pixels), min_side).map_err(
        |e| match e {
            ContractError::ImageTooLarge { width, height, pixels, limit, .. } => {
                Error::ImageTooLarge { width, height, pixels, limit }
            }
            ContractError::NotAnImage { reason, .. } => Error::NotAnImage { reason },
            other => Error::NotAnImage { reason: other.to_string() },
        },
    )?;
    Ok(match img {
        grey @ DynamicImage::ImageLuma8(_) => grey,
        other => DynamicImage::ImageRgb8(contract::into_rgb8(other)),
    })
}

/// The thumbnail of the image file `file`, decoded as `img`, for result pages: the file
/// itself when it is a PNG or a JPEG already no larger than a thumbnail, in pixels and in
/// bytes ([`KEPT_FILE_BYTES`]): every browser shows those as they are, and encoding them
/// again would cost time (the largest part of indexing a folder of small images, after
/// inference) and lose quality. Any other file gives [`thumbnail_jpeg`] of `img`.
pub fn thumbnail(file: &[u8], img: &DynamicImage) -> Result<Vec<u8>> {
    let shown_as_is = matches!(image::guess_format(file), Ok(ImageFormat::Png | ImageFormat::Jpeg));
    if shown_as_is && file.len() <= KEPT_FILE_BYTES && img.width().max(img.height()) <= THUMBNAIL_SIDE {
        return Ok(file.to_vec());
    }
    thumbnail_jpeg(img)
}

/// The media type of a stored thumbnail: a PNG kept as it is by [`thumbnail`], or a JPEG.
pub fn thumbnail_media_type(thumbnail: &[u8]) -> &'static str {
    match image::guess_format(thumbnail) {
        Ok(ImageFormat::Png) => "image/png",
        _ => "image/jpeg",
    }
}

/// A small JPEG of the image for result pages: at most [`THUMBNAIL_SIDE`] on its longer
/// side, the aspect ratio kept, never enlarged. A grey image gives a grey JPEG (one
/// channel: a third of the encoding work and a smaller file).
fn thumbnail_jpeg(img: &DynamicImage) -> Result<Vec<u8>> {
    use jpeg_encoder::ColorType::{Luma, Rgb};
    match img {
        DynamicImage::ImageLuma8(g) => encode_jpeg(&shrink(Cow::Borrowed(g)), Luma),
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => {
            encode_jpeg(&shrink(Cow::Owned(img.to_luma8())), Luma)
        }
        _ => encode_jpeg(&shrink(contract::rgb8(img)), Rgb),
    }
}

/// `img` resized to at most [`THUMBNAIL_SIDE`] on its longer side, or itself when smaller.
fn shrink<P: image::Pixel<Subpixel = u8>>(img: Cow<'_, ImageBuffer<P, Vec<u8>>>) -> Cow<'_, ImageBuffer<P, Vec<u8>>>
where
    ImageBuffer<P, Vec<u8>>: fast_image_resize::IntoImageView + fast_image_resize::IntoImageViewMut,
{
    let (w, h) = img.dimensions();
    if w.max(h) <= THUMBNAIL_SIDE {
        return img;
    }
    let scale = THUMBNAIL_SIDE as f64 / w.max(h) as f64;
    let side = |n: u32| ((n as f64 * scale).round() as u32).clamp(1, THUMBNAIL_SIDE);
    Cow::Owned(contract::resize(&img, side(w), side(h)))
}

/// `img` as a JPEG of quality 85, its pixels read as `color`.
fn encode_jpeg<P: image::Pixel<Subpixel = u8>>(
    img: &ImageBuffer<P, Vec<u8>>,
    color: jpeg_encoder::ColorType,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let encode_error = |e: jpeg_encoder::EncodingError| Error::Inference(format!("cannot encode a thumbnail: {e}"));
    // THUMBNAIL_SIDE keeps both sides far under the format's 65,535.
    let side = |n: u32| u16::try_from(n).expect("a thumbnail side fits in u16");
    jpeg_encoder::Encoder::new(&mut out, 85)
        .encode(img.as_raw(), side(img.width()), side(img.height()), color)
        .map_err(encode_error)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `img` written as a file of `format`.
    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        encode(
            DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]))),
            ImageFormat::Png,
        )
    }

    #[test]
    fn decodes_and_refuses_bad_input() {
        let ok = png(20, 10);
        assert_eq!(decode_image(&ok, 1000, 0).unwrap().width(), 20);
        assert!(matches!(decode_image(&ok, 199, 0), Err(Error::ImageTooLarge { pixels: 200, .. })));
        assert!(matches!(decode_image(b"", 1000, 0), Err(Error::NotAnImage { .. })));
        assert!(matches!(decode_image(b"hello, not an image", 1000, 0), Err(Error::NotAnImage { .. })));
        assert!(matches!(decode_image(&ok[..ok.len() / 2], 1000, 0), Err(Error::NotAnImage { .. })));
        let thumb = thumbnail_jpeg(&decode_image(&ok, 1000, 0).unwrap()).unwrap();
        assert_eq!(&thumb[..2], &[0xFF, 0xD8]);
    }

    #[test]
    fn decoding_gives_grey_or_rgb_so_a_grey_file_keeps_a_grey_thumbnail() {
        let grey = encode(
            DynamicImage::ImageLuma8(image::GrayImage::from_pixel(30, 20, image::Luma([90]))),
            image::ImageFormat::Png,
        );
        let img = decode_image(&grey, 1000, 0).unwrap();
        assert!(matches!(img, DynamicImage::ImageLuma8(_)), "{:?}", img.color());
        let thumb = image::load_from_memory(&thumbnail_jpeg(&img).unwrap()).unwrap();
        assert!(matches!(thumb, DynamicImage::ImageLuma8(_)), "{:?}", thumb.color());
        let rgba = image::RgbaImage::from_pixel(30, 20, image::Rgba([200, 10, 10, 128]));
        let img = decode_image(&encode(DynamicImage::ImageRgba8(rgba), image::ImageFormat::Png), 1000, 0).unwrap();
        assert!(matches!(img, DynamicImage::ImageRgb8(_)), "alpha dropped once, at decoding: {:?}", img.color());
        let grey_alpha = image::GrayAlphaImage::from_pixel(30, 20, image::LumaA([90, 10]));
        let img =
            decode_image(&encode(DynamicImage::ImageLumaA8(grey_alpha), image::ImageFormat::Png), 1000, 0).unwrap();
        assert!(matches!(img, DynamicImage::ImageRgb8(_)), "{:?}", img.color());
    }

    #[test]
    fn small_png_and_jpeg_files_are_their_own_thumbnails_others_become_jpegs() {
        let thumb_of = |file: &[u8]| thumbnail(file, &decode_image(file, 1 << 20, 0).unwrap()).unwrap();
        let small = DynamicImage::ImageRgb8(image::RgbImage::from_fn(THUMBNAIL_SIDE, 90, |x, y| {
            image::Rgb([x as u8, y as u8, 7])
        }));
        for (format, media_type) in [(ImageFormat::Png, "image/png"), (ImageFormat::Jpeg, "image/jpeg")] {
            let file = encode(small.clone(), format);
            assert_eq!(thumb_of(&file), file, "{format:?} kept as it is");
            assert_eq!(thumbnail_media_type(&thumb_of(&file)), media_type);
        }
        let jpeg_of = |file: &[u8], why: &str| {
            let thumb = thumb_of(file);
            assert_eq!(&thumb[..2], &[0xFF, 0xD8], "{why}");
            assert_eq!(thumbnail_media_type(&thumb), "image/jpeg");
            image::load_from_memory(&thumb).unwrap()
        };
        let wide = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(THUMBNAIL_SIDE + 1, 10, image::Rgb([1, 2, 3])));
        assert_eq!(jpeg_of(&encode(wide, ImageFormat::Png), "one pixel too wide").width(), THUMBNAIL_SIDE);
        let mut noise = 1u32;
        let heavy = DynamicImage::ImageRgb8(image::RgbImage::from_fn(150, 150, |_, _| {
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            image::Rgb([(noise >> 24) as u8, (noise >> 16) as u8, (noise >> 8) as u8])
        }));
        let heavy = encode(heavy, ImageFormat::Png);
        assert!(heavy.len() > KEPT_FILE_BYTES);
        assert_eq!(jpeg_of(&heavy, "too many bytes").width(), 150, "small in pixels, so not resized");
        jpeg_of(&encode(small.clone(), ImageFormat::Bmp), "only PNG and JPEG files are kept");
        jpeg_of(&encode(small, ImageFormat::Gif), "only PNG and JPEG files are kept");
    }

    #[test]
    fn thumbnails_keep_grey_images_grey_and_shrink_large_ones() {
        let thumb = |img: DynamicImage| image::load_from_memory(&thumbnail_jpeg(&img).unwrap()).unwrap();
        let grey = image::GrayImage::from_fn(400, 200, |x, _| image::Luma([(x % 256) as u8]));
        let t = thumb(DynamicImage::ImageLuma8(grey));
        assert!(matches!(t, DynamicImage::ImageLuma8(_)), "a grey image gives a one-channel JPEG: {:?}", t.color());
        assert_eq!((t.width(), t.height()), (THUMBNAIL_SIDE, THUMBNAIL_SIDE / 2));
        let t = thumb(DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_fn(30, 20, |_, _| image::LumaA([9, 200]))));
        assert!(matches!(t, DynamicImage::ImageLuma8(_)));
        assert_eq!((t.width(), t.height()), (30, 20), "never enlarged");
        let t = thumb(DynamicImage::ImageRgb8(image::RgbImage::from_pixel(500, 1000, image::Rgb([200, 10, 10]))));
        assert!(matches!(t, DynamicImage::ImageRgb8(_)));
        assert_eq!((t.width(), t.height()), (THUMBNAIL_SIDE / 2, THUMBNAIL_SIDE));
        let red = t.as_rgb8().unwrap().get_pixel(40, 80).0;
        assert!(red[0] > 150 && red[1] < 60, "colour kept: {red:?}");
    }
}
