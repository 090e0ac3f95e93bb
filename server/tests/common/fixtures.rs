//! Fixtures that need no server process: a tiny exported ONNX model (a hand-built graph
//! with random weights, written by `models::onnx::export`, no libtorch), synthetic images
//! and clustered points. Shared by the integration tests and `examples/fixture.rs`.

#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use models::graph::{ConvOpts, GraphBuilder, LinearInit};
use models::manifest::MANIFEST_FORMAT;
use models::weights::{Tensor, Weights};
use models::{Distance, Manifest, Preprocess, Provenance};
use rand::{Rng, SeedableRng};

/// Input side of the test model.
pub const SIZE: u32 = 32;
/// Embedding width of the test model.
pub const DIM: usize = 8;

/// Writes a two-conv, avg+max-pool, linear, L2-normalised embedding model to `dir`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    tiny_model_with(dir, "tiny.onnx", DIM, 7, "test")
}

/// Like [`tiny_model`], to `dir/name`, with `dim`-long vectors, weights from `seed` and
/// `run_id` in its provenance.
pub fn tiny_model_with(dir: &Path, name: &str, dim: usize, seed: u64, run_id: &str) -> PathBuf {
    let mut b = GraphBuilder::new();
    let x = b.input();
    let x = b.conv(x, "c1", 3, 8, ConvOpts::k(3).stride(2).pad(1).bias(true));
    let x = b.relu(x);
    let x = b.conv(x, "c2", 8, 16, ConvOpts::k(3).stride(2).pad(1).bias(true));
    let x = b.relu(x);
    let x = b.global_avg_max_pool(x);
    let x = b.linear(x, "head", 16, dim, true, LinearInit::Default);
    let x = b.l2_normalize(x);
    b.output("embedding", x);
    let graph = b.finish();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut weights = Weights::default();
    for spec in graph.params() {
        let n: usize = spec.shape.iter().product();
        let data = (0..n).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
        weights.tensors.insert(spec.name, Tensor { shape: spec.shape, data });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_string(),
        arch: "tiny-test".into(),
        embedding_dim: dim,
        normalized: true,
        distance: Distance::Euclidean,
        input_name: "image".into(),
        output_name: "embedding".into(),
        preprocess: Preprocess::imagenet(36, SIZE),
        provenance: Provenance { run_id: run_id.into(), ..Provenance::default() },
        weights_sha256: None,
    };
    let path = dir.join(name);
    models::onnx::export(&graph, &weights, &manifest, SIZE, &path).expect("export the test model");
    path
}

/// A distinct synthetic picture for each `seed`, encoded as PNG.
pub fn png(seed: u64, w: u32, h: u32) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (a, b, c): (u8, u8, u8) = (rng.gen(), rng.gen(), rng.gen());
    let freq = rng.gen_range(1..8u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let stripe = ((x * freq / w.max(1)) + (y * freq / h.max(1))) & 1 == 0;
        if stripe {
            image::Rgb([a, b, c])
        } else {
            image::Rgb([255 - a, c, b / 2])
        }
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).expect("encode png");
    out.into_inner()
}

/// `n` points around `clusters` centres, the way embeddings cluster: Gaussian-like
/// spread in an 8-dimensional latent space, mapped linearly into `dim` dimensions, plus a
/// little isotropic noise. Every seed shares the centres and the map, so queries drawn
/// with another seed fall in the same clusters.
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let latent = 8;
    let mut prng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let proj: Vec<Vec<f32>> = (0..dim).map(|_| (0..latent).map(|_| prng.gen_range(-1.0f32..1.0)).collect()).collect();
    let centres: Vec<Vec<f32>> =
        (0..clusters).map(|_| (0..latent).map(|_| prng.gen_range(-1.0f32..1.0)).collect()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let c = &centres[rng.gen_range(0..clusters)];
            let z: Vec<f32> =
                c.iter().map(|x| x + (0..3).map(|_| rng.gen_range(-0.12f32..0.12)).sum::<f32>()).collect();
            proj.iter()
                .map(|row| row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + rng.gen_range(-0.01f32..0.01))
                .collect()
        })
        .collect()
}
