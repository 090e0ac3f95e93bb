//! Images as users have them, from fixture files (made by `fixtures/make_fixtures.py`).

use contract::decode::{decode_bytes, DecodeLimits};

#[test]
fn a_cmyk_jpeg_decodes_to_the_right_colours() {
    let bytes = include_bytes!("fixtures/cmyk.jpg");
    let img = decode_bytes(bytes, "cmyk.jpg", DecodeLimits::default()).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (16, 12));
    let near = |got: [u8; 3], want: [u8; 3]| got.iter().zip(want).all(|(g, w)| (*g as i32 - w as i32).abs() <= 24);
    let red = img.get_pixel(3, 6).0;
    let blue = img.get_pixel(12, 6).0;
    assert!(near(red, [255, 0, 0]), "left half should be red, got {red:?}");
    assert!(near(blue, [0, 0, 255]), "right half should be blue, got {blue:?}");
}
