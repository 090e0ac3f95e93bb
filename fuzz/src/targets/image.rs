//! Uploaded images: the server's decoding (format sniffing, the pixel limit, scaled JPEG
//! decoding) and the preprocessing contract (resize, centre crop, normalisation).

use std::io::Cursor;

use contract::Preprocess;
use image::{DynamicImage, ImageFormat};

use super::split_params;

/// The server's default pixel limit.
const MAX_PIXELS: u64 = contract::DecodeLimits::DEFAULT_MAX_PIXELS;

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encoding a seed");
    out.into_inner()
}

fn pattern(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 37) as u8, (y * 53) as u8, ((x ^ y) * 11) as u8]))
}

/// The `image` target.
pub const TARGET: crate::Target = crate::Target {
    name: "image",
    about: "image decoding (JPEG, PNG, WebP, BMP, GIF; scaled JPEG), thumbnails, preprocessing",
    seeds,
    dictionary,
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    let rgb = DynamicImage::ImageRgb8(pattern(9, 7));
    let mut seeds = vec![
        encode(rgb.clone(), ImageFormat::Png),
        encode(DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(pattern(5, 3)).to_rgba8()), ImageFormat::Png),
        encode(DynamicImage::ImageLuma16(DynamicImage::ImageRgb8(pattern(4, 6)).to_luma16()), ImageFormat::Png),
        encode(DynamicImage::ImageRgb8(pattern(16, 16)), ImageFormat::Jpeg),
        encode(DynamicImage::ImageRgb8(pattern(64, 40)), ImageFormat::Jpeg),
        encode(DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(pattern(24, 8)).to_luma8()), ImageFormat::Jpeg),
        encode(DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::Gif),
        encode(rgb.clone(), ImageFormat::Bmp),
        encode(DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::WebP),
    ];
    // Parameter bytes: which preprocessing, crop, extra resize, decode hint.
    for (i, s) in seeds.iter_mut().enumerate() {
        s.extend_from_slice(&[i as u8, 7 + i as u8, 3, i as u8 % 3]);
    }
    seeds
}

fn dictionary() -> Vec<&'static [u8]> {
    vec![
        b"\x89PNG\r\n\x1a\n",
        b"IHDR",
        b"IDAT",
        b"IEND",
        b"PLTE",
        b"tRNS",
        b"\xff\xd8\xff",
        b"\xff\xc0",
        b"\xff\xc2",
        b"\xff\xc4",
        b"\xff\xda",
        b"\xff\xdb",
        b"\xff\xdd",
        b"\xff\xd9",
        b"RIFF",
        b"WEBPVP8L",
        b"VP8X",
        b"GIF89a",
        b"NETSCAPE2.0",
        b"BM",
        b"\xff\xff\x00\x00",
        b"\x00\x00\xff\xff",
    ]
}

fn run(input: &[u8]) -> bool {
    let (bytes, mut u) = split_params(input, 4);
    let caffe: bool = u.arbitrary().unwrap_or(false);
    let crop = 1 + u.int_in_range(0u32..=47).unwrap_or(0);
    let resize = crop + u.int_in_range(0u32..=16).unwrap_or(0);
    let min_side = match u.int_in_range(0u8..=2).unwrap_or(0) {
        0 => 0,
        1 => crop,
        _ => resize,
    };
    let _ = contract::decode::header_pixels(bytes);
    let Ok(img) = server::embed::decode::decode_image(bytes, MAX_PIXELS, min_side) else { return false };
    assert!(img.width() > 0 && img.height() > 0, "decoded an empty image");
    assert!(img.width() as u64 * img.height() as u64 <= MAX_PIXELS, "decoded past the pixel limit");
    let thumb = server::embed::decode::thumbnail(bytes, &img).expect("a decoded image makes a thumbnail");
    assert!(!thumb.is_empty());
    if server::embed::decode::thumbnail_media_type(&thumb) == "image/png" {
        assert_eq!(thumb, bytes, "a PNG thumbnail is only ever the file kept as it is");
    }
    let pre = if caffe { Preprocess::caffe(resize, crop) } else { Preprocess::imagenet(resize, crop) };
    let x = pre.apply(&img);
    assert_eq!(x.len(), (3 * crop * crop) as usize, "preprocessing gave the wrong tensor size");
    assert!(x.iter().all(|v| v.is_finite()), "preprocessing gave a non-finite value");
    true
}
