//! The model manifest an ONNX file carries (`stml.manifest`): what the server accepts
//! must be usable. An accepted manifest reads back the same after writing, and its
//! preprocessing turns an image into finite numbers of the promised size.

use contract::{Distance, Preprocess, Provenance, MANIFEST_FORMAT};

fn manifest(pre: Preprocess, distance: Distance) -> contract::Manifest {
    contract::Manifest {
        format: MANIFEST_FORMAT.into(),
        arch: "resnet50".into(),
        embedding_dim: 128,
        normalized: true,
        distance,
        input_name: contract::INPUT_NAME.into(),
        output_name: "embedding".into(),
        preprocess: pre,
        provenance: Provenance {
            run_id: "run-1".into(),
            git_commit: "0123abc".into(),
            created: "2026-12-06T00:00:00Z".into(),
            notes: String::new(),
        },
        weights_sha256: Some("ab".repeat(32)),
    }
}

/// The `manifest` target.
pub const TARGET: crate::Target = crate::Target {
    name: "manifest",
    about: "the ONNX model manifest (JSON) and the preprocessing it prescribes",
    seeds,
    dictionary,
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    vec![
        manifest(Preprocess::imagenet(256, 224), Distance::Euclidean).to_json().into_bytes(),
        manifest(Preprocess::caffe(8, 8), Distance::Cosine).to_json().into_bytes(),
    ]
}

fn dictionary() -> Vec<&'static [u8]> {
    vec![
        b"\"resize\"",
        b"\"crop\"",
        b"\"mean\"",
        b"\"std\"",
        b"\"scale\"",
        b"\"channel_order\"",
        b"\"bgr\"",
        b"\"rgb\"",
        b"\"cosine\"",
        b"\"euclidean\"",
        b"\"embedding_dim\"",
        b"\"format\"",
        b"stml-embedding/1",
        b"3.4e38",
        b"1e39",
        b"1e-45",
        b"0.0",
        b"4294967295",
        b"65536",
    ]
}

fn run(input: &[u8]) -> bool {
    let text = String::from_utf8_lossy(input);
    let Ok(m) = contract::Manifest::from_json(&text) else { return false };
    let again = contract::Manifest::from_json(&m.to_json());
    assert_eq!(again.as_ref().ok(), Some(&m), "an accepted manifest does not read back the same: {again:?}");
    let p = &m.preprocess;
    assert!(p.crop >= 1 && p.crop <= contract::preprocess::MAX_INPUT_SIDE, "accepted crop = {}", p.crop);
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(9, 5, |x, y| {
        image::Rgb([(x * 29) as u8, (y * 51) as u8, 255])
    }));
    let x = p.apply(&img);
    assert_eq!(x.len(), 3 * (p.crop * p.crop) as usize);
    assert!(x.iter().all(|v| v.is_finite()), "the manifest's preprocessing gives non-finite values: {p:?}");
    true
}
