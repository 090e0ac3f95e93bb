//! Writes a collection of `--n` synthetic items for the model at `--model` into `--index`
//! (a fresh folder): clustered unit vectors of the model's dimension, a label and a path
//! in each item's metadata, and a filler thumbnail of `--thumbnail-bytes` (never decoded
//! at start, but it makes the database as large as a real one). The HNSW graph is saved at
//! the end, as a server saves it at shutdown. `scripts/bench_cold_start.sh` then times a
//! server starting on it.
//!
//!   cargo run --release -p server --example synthetic_collection -- --model M --index DIR \
//!       [--n 100000] [--thumbnail-bytes 4096]

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use server::gallery::{IndexKind, NewImage};
use server::settings::Settings;

/// Items written per transaction.
const BATCH: usize = 1000;
/// Cluster centres the vectors are drawn around.
const CLUSTERS: usize = 1000;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.into_iter().map(|x| x / norm).collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut settings = Settings::load(None, std::env::vars())?;
    settings.model = arg(&args, "--model").ok_or_else(|| anyhow::anyhow!("--model M is required"))?.into();
    settings.index_dir = arg(&args, "--index").ok_or_else(|| anyhow::anyhow!("--index DIR is required"))?.into();
    let n: usize = arg(&args, "--n").map_or(Ok(100_000), |v| v.parse())?;
    let thumbnail_bytes: usize = arg(&args, "--thumbnail-bytes").map_or(Ok(4096), |v| v.parse())?;
    anyhow::ensure!(
        !settings.index_dir.exists(),
        "{} exists; give a fresh folder (this writes a new collection)",
        settings.index_dir.display()
    );

    let model = server::serve::open_model_file(&settings, &settings.model.clone())?;
    let gallery = server::serve::open_gallery_dir(&settings, &settings.index_dir.clone(), &model, IndexKind::Hnsw)?;
    let dim = model.manifest().embedding_dim;
    let mut rng = StdRng::seed_from_u64(11);
    let centres: Vec<Vec<f32>> =
        (0..CLUSTERS).map(|_| unit((0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect())).collect();
    let filler: Vec<u8> = (0..thumbnail_bytes).map(|i| (i * 131 % 251) as u8).collect();

    let started = Instant::now();
    for first in (0..n).step_by(BATCH) {
        let batch: Vec<NewImage> = (first..(first + BATCH).min(n))
            .map(|i| {
                let c = i % CLUSTERS;
                let vector = unit(centres[c].iter().map(|x| x + rng.gen_range(-0.08..0.08)).collect());
                NewImage {
                    id: Some(format!("item-{i:07}")),
                    metadata: serde_json::json!({ "label": format!("c{c:04}"), "path": format!("synthetic/{c:04}/{i:07}.jpg") }),
                    content_hash: Some(format!("{i:064x}")),
                    vector,
                    thumbnail: Some(filler.clone()),
                    original: None,
                }
            })
            .collect();
        gallery.insert(batch)?;
        let done = (first + BATCH).min(n);
        if done.is_multiple_of(10 * BATCH) || done == n {
            let s = started.elapsed().as_secs_f64();
            eprintln!("{done} / {n} items, {:.0} items/s", done as f64 / s);
        }
    }
    gallery.snapshot()?;
    println!("wrote {n} items to {} in {:.1} s", settings.index_dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}
