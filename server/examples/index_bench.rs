//! Search-only benchmark of the server's two indexes on clustered vectors (or real ones,
//! `--vectors`): HNSW build time, then queries per second (one thread) and recall@10
//! against the exact index, for several `ef_search` values and graph quantisations. No
//! model and no HTTP: just [`HnswIndex`] and [`ExactIndex`]. A quantised graph ranks its
//! candidates by full-precision vectors, which the server reads from its store and this
//! benchmark from memory.
//!
//! ```text
//! cargo run --release -p server --example index_bench -- [--n 100000] [--dim 128] [--ef 32,64,128,256] \
//!     [--quantization f32,f16,i8] [--vectors FILE]
//! ```
//!
//! Prints a markdown table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use contract::Distance;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use server::index::{ExactIndex, FullVectors, HnswIndex, HnswParams, Quantization, VectorRead, VectorWrite};

#[derive(Parser)]
#[command(about = "HNSW vs exact search: build time, QPS and recall@10 on clustered or given vectors")]
struct Args {
    /// Indexed vectors.
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Vector length (the model's embedding dimension).
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Cluster centres the vectors are drawn around.
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    /// Dimension of the latent space the clusters live in before the linear map to `dim`.
    #[arg(long, default_value_t = 32)]
    latent: usize,
    /// Spread of each cluster in the latent space: each latent coordinate gets the sum of
    /// three uniform draws from `-spread ..= spread` (the recall test uses 0.12).
    #[arg(long, default_value_t = 0.3)]
    spread: f32,
    /// Query vectors (drawn from the same clusters, not indexed).
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// `ef_search` values to measure.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128,256")]
    ef: Vec<usize>,
    /// Links per node (default: the server's `hnsw.m`).
    #[arg(long)]
    m: Option<usize>,
    /// Build breadth (default: the server's `hnsw.ef_construction`).
    #[arg(long)]
    ef_construction: Option<usize>,
    /// `euclidean` or `cosine`.
    #[arg(long, default_value = "euclidean")]
    distance: String,
    /// Graph quantisations to measure: f32, f16, i8 (i8 with cosine only).
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    quantization: Vec<String>,
    /// Also measure a Milvus collection (HNSW with the same M and ef_construction) at this
    /// address, searched through the server's Milvus gallery (needs `--features milvus`).
    #[arg(long)]
    milvus: Option<String>,
    /// Client threads for the extra Milvus row measured under concurrency.
    #[arg(long, default_value_t = 4)]
    milvus_threads: usize,
    /// Real vectors instead of clustered ones: raw little-endian f32 rows of `--dim`
    /// (`scripts/embed_fashion_mnist.py` writes them); the first `--n` rows are indexed
    /// and the last `--queries` rows are the queries.
    #[arg(long)]
    vectors: Option<PathBuf>,
}

/// Vectors, one a row.
type Rows = Vec<Vec<f32>>;

/// The first `n` rows of `path` and its last `queries` rows (see `Args::vectors`).
fn read_vectors(path: &Path, dim: usize, n: usize, queries: usize) -> anyhow::Result<(Rows, Rows)> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("--vectors {}: {e}", path.display()))?;
    let row = 4 * dim;
    anyhow::ensure!(bytes.len() % row == 0, "--vectors {}: not rows of {dim} f32 (--dim)", path.display());
    let rows = bytes.len() / row;
    anyhow::ensure!(n + queries <= rows, "--vectors {} has {rows} rows, fewer than --n + --queries", path.display());
    let vector = |i: usize| {
        bytes[i * row..(i + 1) * row].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    Ok(((0..n).map(vector).collect(), (rows - queries..rows).map(vector).collect()))
}

/// `n` points around `clusters` centres: Gaussian-like spread in a `latent`-dimensional
/// space, mapped linearly into `dim` dimensions, plus a little isotropic noise. Every seed
/// shares the centres and the map, so queries drawn with another seed fall in the same
/// clusters. (The construction of the server's recall test, with its sizes as parameters.)
fn clustered(n: usize, dim: usize, latent: usize, clusters: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut prng = StdRng::seed_from_u64(99);
    let proj: Vec<Vec<f32>> = (0..dim).map(|_| (0..latent).map(|_| prng.gen_range(-1.0f32..1.0)).collect()).collect();
    let centres: Vec<Vec<f32>> =
        (0..clusters).map(|_| (0..latent).map(|_| prng.gen_range(-1.0f32..1.0)).collect()).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let c = &centres[rng.gen_range(0..clusters)];
            let z: Vec<f32> =
                c.iter().map(|x| x + (0..3).map(|_| rng.gen_range(-spread..spread)).sum::<f32>()).collect();
            proj.iter()
                .map(|row| row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + rng.gen_range(-0.01f32..0.01))
                .collect()
        })
        .collect()
}

const MIB: f64 = 1024.0 * 1024.0;

/// The full-precision vectors, in memory, and how many of them were read.
struct Full(HashMap<u64, Vec<f32>>, AtomicUsize);

impl FullVectors for Full {
    fn full_vectors(&self, keys: &[u64]) -> Vec<Option<Vec<f32>>> {
        self.1.fetch_add(keys.len(), Ordering::Relaxed);
        keys.iter().map(|k| self.0.get(k).cloned()).collect()
    }
}

/// Runs every query once; returns queries per second and the answers' keys.
fn timed_search(index: &dyn VectorRead, queries: &[Vec<f32>], k: usize, ef: Option<usize>) -> (f64, Vec<Vec<u64>>) {
    let started = Instant::now();
    let answers: Vec<Vec<u64>> =
        queries.iter().map(|q| index.search(q, k, ef).iter().map(|n| n.key).collect()).collect();
    (queries.len() as f64 / started.elapsed().as_secs_f64(), answers)
}

fn recall(truth: &[Vec<u64>], got: &[Vec<u64>], k: usize) -> f64 {
    let found: usize = truth.iter().zip(got).map(|(t, g)| g.iter().filter(|key| t.contains(key)).count()).sum();
    found as f64 / (k * truth.len()) as f64
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.n > 0 && args.queries > 0 && args.k > 0, "--n, --queries and --k must be positive");
    anyhow::ensure!(
        args.clusters > 0 && args.latent > 0 && args.dim > 0,
        "--clusters, --latent, --dim must be positive"
    );
    let metric: Distance = args.distance.parse().map_err(|e: String| anyhow::anyhow!("--distance: {e}"))?;
    let defaults = HnswParams::default();
    let params = HnswParams {
        m: args.m.unwrap_or(defaults.m),
        ef_construction: args.ef_construction.unwrap_or(defaults.ef_construction),
        ..defaults
    };

    let (data, queries) = match &args.vectors {
        Some(path) => read_vectors(path, args.dim, args.n, args.queries)?,
        None => (
            clustered(args.n, args.dim, args.latent, args.clusters, args.spread, 1),
            clustered(args.queries, args.dim, args.latent, args.clusters, args.spread, 2),
        ),
    };
    let items: Vec<(u64, Vec<f32>)> = data.into_iter().enumerate().map(|(i, v)| (i as u64, v)).collect();

    let started = Instant::now();
    let mut exact = ExactIndex::new(args.dim, metric);
    exact.insert(&items);
    let exact_build = started.elapsed().as_secs_f64();

    let quantizations = args
        .quantization
        .iter()
        .map(|q| {
            let q: Quantization = q.parse().map_err(|e| anyhow::anyhow!("--quantization: {e}"))?;
            q.check(metric).map_err(|e| anyhow::anyhow!("--quantization: {e}"))?;
            Ok(q)
        })
        .collect::<anyhow::Result<Vec<Quantization>>>()?;
    let full = Arc::new(Full(items.iter().cloned().collect(), AtomicUsize::new(0)));

    let (exact_qps, truth) = timed_search(&exact, &queries, args.k, None);
    let what = match &args.vectors {
        Some(path) => format!("the first rows of {} (the last rows as queries)", path.display()),
        None => format!(
            "clustered vectors ({} clusters, latent dimension {}, spread {})",
            args.clusters, args.latent, args.spread
        ),
    };
    println!(
        "{} of dimension {}: {what}, {} distance, {} queries, k = {}; \
         HNSW M = {}, ef_construction = {}; HNSW build and queries on one thread.",
        args.n, args.dim, args.distance, args.queries, args.k, params.m, params.ef_construction,
    );
    println!();
    println!(
        "| index | ef_search | build (s) | build (vectors/s) | memory (MiB) | QPS | recall@{} | full-precision reads / query |",
        args.k
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| exact | - | {exact_build:.2} | {:.0} | {:.0} | {exact_qps:.1} | 1.000 | - |",
        args.n as f64 / exact_build.max(1e-9),
        (args.n * args.dim * 4) as f64 / MIB
    );
    for quantization in quantizations {
        let params = HnswParams { quantization, ..params };
        let started = Instant::now();
        let mut hnsw = HnswIndex::new(args.dim, metric, params, args.n).with_full_vectors(full.clone());
        hnsw.insert(&items);
        let hnsw_build = started.elapsed().as_secs_f64();
        anyhow::ensure!(hnsw.len() == args.n, "the graph holds {} of {} vectors", hnsw.len(), args.n);
        for &ef in &args.ef {
            let before = full.1.load(Ordering::Relaxed);
            let (qps, got) = timed_search(&hnsw, &queries, args.k, Some(ef));
            let reads = (full.1.load(Ordering::Relaxed) - before) as f64 / queries.len() as f64;
            println!(
                "| hnsw {} | {ef} | {hnsw_build:.1} | {:.0} | {:.0} | {qps:.0} | {:.3} | {reads:.1} |",
                hnsw.quantization().name(),
                args.n as f64 / hnsw_build,
                hnsw.memory_bytes() as f64 / MIB,
                recall(&truth, &got, args.k)
            );
        }
    }
    if let Some(uri) = &args.milvus {
        milvus_rows(&args, uri, metric, params, &items, &queries, &truth)?;
    }
    Ok(())
}

/// The same vectors in Milvus: insert and index time, then QPS (one thread, and
/// `--milvus-threads` threads) and recall@k per `ef`, each query through
/// [`server::gallery::MilvusGallery`] as a server runs it (a search, then the hits'
/// metadata by id).
#[cfg(feature = "milvus")]
fn milvus_rows(
    args: &Args,
    uri: &str,
    metric: Distance,
    params: HnswParams,
    items: &[(u64, Vec<f32>)],
    queries: &[Vec<f32>],
    truth: &[Vec<u64>],
) -> anyhow::Result<()> {
    use server::gallery::{Gallery, MilvusGallery, MilvusIndex, NewImage};
    use server::settings::{MilvusIndexKind, MilvusSettings};
    use server::store::IndexSpec;
    let spec = IndexSpec { dim: args.dim, distance: metric, model: "index_bench".into() };
    let settings = MilvusSettings { uri: uri.to_string(), timeout_s: 600, ..MilvusSettings::default() };
    let name = format!("index_bench_{}", std::process::id());
    let gallery =
        MilvusGallery::open(&settings, &name, spec, None, MilvusIndex { kind: MilvusIndexKind::Hnsw, hnsw: params })?;
    let started = Instant::now();
    for chunk in items.chunks(2048) {
        let images = chunk
            .iter()
            .map(|(key, v)| NewImage {
                id: Some(key.to_string()),
                metadata: serde_json::json!({}),
                content_hash: None,
                vector: v.clone(),
                thumbnail: None,
                original: None,
            })
            .collect();
        gallery.insert(images)?;
    }
    let insert_s = started.elapsed().as_secs_f64();
    gallery.wait_indexed(std::time::Duration::from_secs(1200))?;
    let build_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        gallery.count(None)? == items.len(),
        "Milvus holds {} of {} vectors",
        gallery.count(None)?,
        items.len()
    );
    let search = |q: &Vec<f32>, ef: usize| -> anyhow::Result<Vec<u64>> {
        Ok(gallery.search(q, args.k, Some(ef))?.iter().map(|h| h.id.parse().unwrap_or(u64::MAX)).collect())
    };
    for &ef in &args.ef {
        let t = Instant::now();
        let got: Vec<Vec<u64>> = queries.iter().map(|q| search(q, ef)).collect::<anyhow::Result<_>>()?;
        let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let per_thread = queries.len().div_ceil(args.milvus_threads.max(1));
        std::thread::scope(|s| -> anyhow::Result<()> {
            let workers: Vec<_> = queries
                .chunks(per_thread)
                .map(|part| s.spawn(move || part.iter().try_for_each(|q| search(q, ef).map(drop))))
                .collect();
            workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a search thread panicked"))?)
        })?;
        let qps_threads = queries.len() as f64 / t.elapsed().as_secs_f64();
        println!(
            "| milvus (insert {insert_s:.1} s) | {ef} | {build_s:.1} | {:.0} | - | {qps:.0} ({qps_threads:.0} on {} threads) | {:.3} | - |",
            items.len() as f64 / build_s,
            args.milvus_threads,
            recall(truth, &got, args.k)
        );
    }
    Ok(())
}

#[cfg(not(feature = "milvus"))]
fn milvus_rows(
    _: &Args,
    _: &str,
    _: Distance,
    _: HnswParams,
    _: &[(u64, Vec<f32>)],
    _: &[Vec<f32>],
    _: &[Vec<u64>],
) -> anyhow::Result<()> {
    anyhow::bail!("--milvus needs the Milvus client: run with `--features milvus`")
}
