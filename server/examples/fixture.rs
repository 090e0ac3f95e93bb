//! Writes the integration tests' tiny ONNX model and a folder of distinct synthetic PNGs,
//! for tests that run the server outside cargo (`scripts/test_docker.sh` runs the
//! container image on them):
//!
//! ```sh
//! cargo run --release -p server --example fixture -- OUT_DIR [IMAGES]
//! ```
//!
//! writes `OUT_DIR/model.onnx` (32 px input, 8-d embedding) and `OUT_DIR/gallery/NNN.png`
//! (IMAGES of them, default 12; image `i` is the tests' `png(i, 64, 48)`).

#[path = "../tests/common/fixtures.rs"]
mod fixtures;

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("usage: fixture OUT_DIR [IMAGES]"))?);
    let n: u64 = match args.next() {
        Some(a) => a.parse().map_err(|_| anyhow::anyhow!("IMAGES must be a count, got {a:?}"))?,
        None => 12,
    };
    let gallery = out.join("gallery");
    std::fs::create_dir_all(&gallery)?;
    let written = fixtures::tiny_model_with(&out, "model.onnx.tmp", fixtures::DIM, 7, "fixture");
    std::fs::rename(&written, out.join("model.onnx"))?;
    for i in 0..n {
        std::fs::write(gallery.join(format!("{i:03}.png")), fixtures::png(i, 64, 48))?;
    }
    println!("{}: model.onnx and {n} images in gallery/", out.display());
    Ok(())
}
