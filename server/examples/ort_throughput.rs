//! Raw ONNX Runtime throughput of an exported model: the ceiling `/search` is measured
//! against. The model is opened exactly as `server serve` opens it (same settings layering,
//! same library, same intra-op thread count), then batches of the batcher's largest size
//! run back to back on preprocessed inputs for a fixed time.
//!
//! ```text
//! cargo run --release -p server --example ort_throughput -- --model model.onnx [--batch 16] [--min-batch 6] [--seconds 3] [--repeats 3] [--streams]
//! ```
//!
//! Prints one line per repeat and a final `images_per_second=<median>` line for scripts;
//! with `--decode LIST`, also `decode_ms=<median>`: the server's decoding and preprocessing
//! of the image files listed in LIST, per image (and `decode_only_ms`, the decoding alone).
//! `STML_SERVER_INTRA_SPINNING=off` (or any other setting) measures the model as a server
//! with that setting would run it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::{Rng, SeedableRng};
use server::{serve, Settings};

#[derive(Parser)]
#[command(about = "Raw ONNX Runtime batch throughput of an exported model, opened as the server opens it")]
struct Args {
    /// The ONNX model written by `trainer export`.
    #[arg(long)]
    model: PathBuf,
    /// TOML config file, as for `server serve` (`STML_SERVER_*` variables apply too).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Images per inference call (default: the batcher's `batch.max_batch`).
    #[arg(long)]
    batch: Option<usize>,
    /// Seconds each repeat runs batches back to back.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Timed repeats; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Vary the batch size: each call takes a size drawn evenly from this many ..= the
    /// batch (what the server's batcher forms under load), so that the cost of shapes
    /// changing from call to call shows; images/s counts the images actually run.
    #[arg(long)]
    min_batch: Option<usize>,
    /// Untimed batches run first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Run the batches on every inference stream of the model at once (one thread each:
    /// what the server and `server index` do under load) instead of on its wide session.
    #[arg(long)]
    streams: bool,
    /// Also time decoding and preprocessing (the server's own code) of the image files
    /// listed in this file, one path a line: prints `decode_ms=<median per image>`.
    #[arg(long)]
    decode: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.seconds > 0.0 && args.repeats > 0, "--seconds and --repeats must be positive");
    let mut settings = Settings::load(args.config.as_deref(), std::env::vars())?;
    settings.model = args.model.clone();
    let batch = args.batch.unwrap_or(settings.batch.max_batch);
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let min_batch = args.min_batch.unwrap_or(batch);
    anyhow::ensure!((1..=batch).contains(&min_batch), "--min-batch must be 1 ..= the batch ({batch})");
    let model = serve::open_model(&settings).with_context(|| format!("opening {}", args.model.display()))?;

    // Preprocessed images are normalised pixels; random values of that range cost the
    // same to run as real ones.
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let input: Vec<f32> = (0..batch * model.input_len()).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    for _ in 0..args.warmup {
        model.embed(input.clone(), batch)?;
    }

    let mut rates = Vec::with_capacity(args.repeats);
    for repeat in 1..=args.repeats {
        let budget = Duration::from_secs_f64(args.seconds);
        let started = Instant::now();
        let streams = if args.streams { model.streams().max(1) } else { 1 };
        let input = &input;
        let run = |stream: usize| -> anyhow::Result<(usize, usize)> {
            let mut sizes = rand::rngs::StdRng::seed_from_u64(stream as u64);
            let (mut batches, mut images) = (0usize, 0usize);
            while started.elapsed() < budget {
                let n = sizes.gen_range(min_batch..=batch);
                let one = input[..n * model.input_len()].to_vec();
                let vectors = if args.streams { model.embed_on(stream, one, n)? } else { model.embed(one, n)? };
                anyhow::ensure!(vectors.len() == n, "the model answered {} vectors for {n}", vectors.len());
                batches += 1;
                images += n;
            }
            Ok((batches, images))
        };
        let (batches, images) = std::thread::scope(|s| {
            let threads: Vec<_> = (0..streams).map(|i| s.spawn(move || run(i))).collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a stream thread panicked"))
                .try_fold((0, 0), |(b, i), r| r.map(|(rb, ri)| (b + rb, i + ri)))
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let rate = images as f64 / seconds;
        let sizes = if min_batch == batch { batch.to_string() } else { format!("{min_batch}..={batch}") };
        println!(
            "repeat {repeat}: {batches} batches of {sizes} ({images} images) in {seconds:.2} s = {rate:.1} images/s"
        );
        rates.push(rate);
    }
    let crop = model.manifest().preprocess.crop;
    println!(
        "model={} arch={} input={crop}x{crop} batch={batch} intra_threads={} intra_spinning={:?} streams={}",
        args.model.display(),
        model.manifest().arch,
        settings.intra_threads,
        settings.intra_spinning,
        if args.streams { model.streams() } else { 0 }
    );
    println!("images_per_second={:.1}", median(&mut rates));
    if let Some(list) = &args.decode {
        let (decode_only, with_preprocess) = decode_ms(list, model.manifest(), settings.max_image_pixels)?;
        println!("decode_only_ms={decode_only:.3}");
        println!("decode_ms={with_preprocess:.3}");
    }
    Ok(())
}

/// Median milliseconds to decode one of the files listed in `list`, and to decode and
/// preprocess it, as the server does for an upload (each file read once, then decoded
/// three times).
fn decode_ms(list: &std::path::Path, manifest: &contract::Manifest, max_pixels: u64) -> anyhow::Result<(f64, f64)> {
    let text = std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    let (mut decoded, mut preprocessed) = (Vec::new(), Vec::new());
    for path in text.lines().filter(|l| !l.trim().is_empty()) {
        let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        for _ in 0..3 {
            let started = Instant::now();
            let img = server::embed::decode_image(&bytes, max_pixels, server::embed::min_side(&manifest.preprocess))?;
            decoded.push(started.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(manifest.preprocess.apply(&img));
            preprocessed.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    anyhow::ensure!(!decoded.is_empty(), "{} lists no files", list.display());
    Ok((median(&mut decoded), median(&mut preprocessed)))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
