//! Pretrained backbones on real photos, through the tch port: EfficientNet-Lite0 must
//! classify scikit-image's cat and coffee cup as ImageNet does, and MobileNetV2's pooled
//! embedding must keep a photo closer to its own flipped and cropped copies than to other
//! photos. The weights and photos are installed by scripts/setup.sh.
//!
//! Run with `cargo test -p models --features tch --test pretrained`.
#![cfg(feature = "tch")]

use std::path::PathBuf;

use image::DynamicImage;
use models::net::Network;
use models::{Arch, ModelConfig, Output, Preprocess};
use tch::{nn, Device, Kind, Tensor};

/// ImageNet classes of domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian).
const CAT_CLASSES: std::ops::RangeInclusive<i64> = 281..=285;
/// ImageNet class "espresso".
const ESPRESSO: i64 = 967;
const PHOTOS: [&str; 4] = ["chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png"];

/// A file under the set-up's `deps/` folder, or a failure that says how to install it.
fn deps_file(parts: &[&str]) -> PathBuf {
    let deps = std::env::var("STML_DEPS").unwrap_or_else(|_| env!("STML_DEPS").to_string());
    let path = parts.iter().fold(PathBuf::from(deps), |p, part| p.join(part));
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh to install the pretrained weights and photos",
        path.display()
    );
    path
}

fn photo(name: &str) -> DynamicImage {
    let path = deps_file(&["photos", name]);
    image::open(&path).unwrap_or_else(|e| panic!("cannot decode {}: {e}", path.display()))
}

/// Preprocesses images into one batch.
///
/// # Shapes
/// - returns `[images.len(), 3, crop, crop]`
fn batch(pre: &Preprocess, images: &[DynamicImage]) -> Tensor {
    let data: Vec<f32> = images.iter().flat_map(|img| pre.apply(img)).collect();
    let crop = pre.crop as i64;
    Tensor::from_slice(&data).reshape([images.len() as i64, 3, crop, crop])
}

/// `graph` with the architecture's installed pretrained weights; tensors under
/// `ignore` may be in the file without being used.
fn pretrained(arch: Arch, graph: models::graph::Graph, ignore: &[&str]) -> Network {
    let file = deps_file(&["weights", arch.pretrained_file().expect("arch has a pretrained file")]);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs.root(), graph);
    net.load_file(&file, arch.name(), ignore, &|_| false).unwrap_or_else(|e| panic!("{e}"));
    net
}

#[test]
fn efficientnet_lite0_recognises_a_cat_and_an_espresso() {
    let arch = Arch::EfficientnetLite0;
    let graph = ModelConfig::classifier_graph(arch, 1000).expect("EfficientNet-Lite0 has a classifier");
    let net = pretrained(arch, graph, &[]);
    let xs = batch(&Preprocess::imagenet(256, 224), &[photo("chelsea.png"), photo("coffee.png")]);
    let logits =
        tch::no_grad(|| net.forward(&xs, false)).expect("forward").get(Output::Logits).expect("logits").shallow_clone(); // [2, 1000]
    assert_eq!(logits.size(), [2, 1000]);
    let top1 = Vec::<i64>::try_from(logits.argmax(1, false)).expect("class ids");
    assert!(CAT_CLASSES.contains(&top1[0]), "chelsea.png (a cat) came out as class {}", top1[0]);
    assert_eq!(top1[1], ESPRESSO, "coffee.png (an espresso) came out as class {}", top1[1]);
}

/// The centre `fraction` of an image (both sides).
fn centre_crop(img: &DynamicImage, fraction: f64) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let (cw, ch) = ((w as f64 * fraction) as u32, (h as f64 * fraction) as u32);
    img.crop_imm((w - cw) / 2, (h - ch) / 2, cw, ch)
}

#[test]
fn mobilenet_v2_embedding_keeps_a_photo_near_its_own_copies() {
    let arch = Arch::MobilenetV2;
    let net = pretrained(arch, ModelConfig::pooled_graph(arch), arch.classifier_prefixes());
    let originals: Vec<DynamicImage> = PHOTOS.iter().map(|p| photo(p)).collect();
    let flipped: Vec<DynamicImage> = originals.iter().map(DynamicImage::fliph).collect();
    let cropped: Vec<DynamicImage> = originals.iter().map(|img| centre_crop(img, 0.8)).collect();
    let all: Vec<DynamicImage> = originals.iter().chain(&flipped).chain(&cropped).cloned().collect();
    let xs = batch(&arch.preprocess(), &all);
    let emb = tch::no_grad(|| net.forward(&xs, false))
        .expect("forward")
        .get(Output::Embedding)
        .expect("embedding")
        .shallow_clone(); // [12, 1280]
    assert_eq!(emb.size(), [12, 1280]);
    let dist = Vec::<Vec<f32>>::try_from(Tensor::cdist(&emb, &emb, 2.0, None).to_kind(Kind::Float)).expect("distances"); // [12, 12]
    let n = PHOTOS.len();
    for (i, name) in PHOTOS.iter().enumerate() {
        let nearest_other = (0..n).filter(|&j| j != i).map(|j| dist[i][j]).fold(f32::INFINITY, f32::min);
        for (copy, offset) in [("flipped", n), ("80% centre crop", 2 * n)] {
            let d = dist[i][i + offset];
            assert!(
                d < nearest_other,
                "{name}: distance to its {copy} copy {d} is not below the distance to the nearest other photo {nearest_other}"
            );
        }
    }
}
