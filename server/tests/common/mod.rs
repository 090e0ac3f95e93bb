//! Shared test fixtures: a tiny exported ONNX model (a hand-built graph with random
//! weights, written by `models::onnx::export`, no libtorch), synthetic images, and the
//! `server` binary run on a loopback port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// A `server` process listening on a free loopback port.
pub struct ServerProc {
    child: Child,
    pub base: String,
    log: mpsc::Receiver<String>,
}

/// The built binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_server")
}

impl ServerProc {
    /// Starts `server serve` and waits until it listens. `env` adds `STML_SERVER_*` settings.
    pub fn start(model: &Path, index: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--port", "0", "--model"]).arg(model).arg("--index").arg(index);
        cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the server binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let base = rest.trim().to_string();
                        return Self { child, base, log: rx };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the server did not start:\n{}", seen.join("\n"));
                }
            }
        }
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no chance to flush or dump anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM and wait for a graceful exit; returns the log lines printed meanwhile.
    pub fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success());
        let exit = self.child.wait().expect("reap");
        assert!(exit.success(), "graceful exit, got {exit}");
        self.log.try_iter().collect()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `server index --model MODEL --images IMAGES --index INDEX EXTRA...`, not yet run.
pub fn index_cmd(model: &Path, images: &Path, index: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(["index", "--model"]).arg(model).arg("--images").arg(images).arg("--index").arg(index).args(extra);
    cmd
}

/// Runs the index job to completion, asserting success, and returns its log.
pub fn run_index(model: &Path, images: &Path, index: &Path, extra: &[&str]) -> String {
    let out = index_cmd(model, images, index, extra).output().expect("run server index");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    log
}

/// A blocking HTTP client with a generous timeout.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client")
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
