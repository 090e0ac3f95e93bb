//! The `trainer` command: fit a self-taught embedding (STML) to a folder of images
//! without labels, evaluate it where labels exist, and export it to ONNX.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use trainer::config::{DeviceKind, OptimizerKind, TrainConfig};

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Self-taught metric learning (STML) without labels: fit, evaluate, export"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train an embedding on a folder of images (labels, if any, are ignored).
    Fit(Box<FitArgs>),
    /// Report Recall@K, NMI and MAP@R of a run (or of a pretrained backbone) on labelled data.
    Eval(EvalArgs),
    /// Export a run's student `f` embedding to ONNX, manifest included.
    Export(ExportArgs),
    /// Write a dataset split's images as PNG files, one subfolder per class (e.g. to index
    /// Fashion-MNIST's test classes with `server index`).
    WriteImages(WriteImagesArgs),
}

#[derive(Args)]
struct WriteImagesArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    format: trainer::data::Format,
    #[arg(long, value_enum, default_value = "test")]
    split: trainer::data::Split,
    /// Write at most this many images (seeded random subset; 0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct FitArgs {
    /// Training images: a folder (searched recursively) or a dataset layout.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory to create (or continue with --resume).
    #[arg(long)]
    out: PathBuf,
    /// TOML file with any of the settings below; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Dataset layout.
    #[arg(long, value_enum)]
    format: Option<trainer::data::Format>,
    /// mobilenet_v2 | efficientnet_lite0 | resnet18 | resnet50 | googlenet | bn_inception
    #[arg(long)]
    arch: Option<String>,
    /// Backbone weights (safetensors); default: the pretrained file set-up installed.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Dimension of the target embedding f.
    #[arg(long)]
    dim: Option<usize>,
    /// Dimension of the auxiliary embedding g.
    #[arg(long)]
    g_dim: Option<usize>,
    /// Network input size (square crop).
    #[arg(long)]
    image_size: Option<u32>,
    /// Side of the squashed images used for nearest-neighbour batch construction.
    #[arg(long)]
    sampling_size: Option<u32>,
    #[arg(long)]
    sigma: Option<f64>,
    #[arg(long)]
    delta: Option<f64>,
    #[arg(long)]
    num_neighbors: Option<usize>,
    #[arg(long)]
    view: Option<usize>,
    #[arg(long)]
    momentum: Option<f64>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    emb_lr: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Stop each epoch after this many steps (0 = full epochs).
    #[arg(long)]
    max_steps_per_epoch: Option<usize>,
    /// Batch norm in eval mode with frozen affine parameters.
    #[arg(long)]
    bn_freeze: bool,
    /// Constant learning rate (no cosine annealing).
    #[arg(long)]
    fix_lr: bool,
    /// L2-normalise the student's outputs.
    #[arg(long)]
    student_norm: bool,
    /// Train with the true labels as W (supervised upper bound; needs labelled data).
    #[arg(long)]
    supervised: bool,
    /// Use at most this many training images (seeded random subset).
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate on at most this many test images (seeded random subset).
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Evaluate every N epochs when the data has labels (0 = only at the end).
    #[arg(long)]
    eval_every: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Threads for libtorch and image decoding (0 = all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, value_enum)]
    device: Option<DeviceKind>,
}

#[derive(Args)]
struct EvalArgs {
    /// Run directory of a `trainer fit`.
    #[arg(long, conflicts_with_all = ["arch"])]
    run: Option<PathBuf>,
    /// Evaluate a backbone's pooled features instead of a run.
    #[arg(long)]
    arch: Option<String>,
    /// Weights for --arch (default: the pretrained file set-up installed).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Labelled data; its test split is evaluated.
    #[arg(long)]
    data: PathBuf,
    /// Dataset layout.
    #[arg(long, value_enum, default_value = "auto")]
    format: trainer::data::Format,
    /// Input size for --arch (default: the architecture's).
    #[arg(long)]
    image_size: Option<u32>,
    /// Evaluate at most this many test images (seeded random subset).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Recall@K cut-offs, comma-separated (default: the protocol's).
    #[arg(long, value_delimiter = ',')]
    ks: Vec<usize>,
    /// Use cosine instead of Euclidean distance.
    #[arg(long)]
    cosine: bool,
    /// Print one JSON object with the figures on stdout, nothing else.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceKind,
}

#[derive(Args)]
struct ExportArgs {
    /// Run directory of a `trainer fit`.
    #[arg(long)]
    run: PathBuf,
    /// Output ONNX file.
    #[arg(long)]
    out: PathBuf,
    /// L2-normalise the exported embedding (and serve it with cosine distance).
    #[arg(long)]
    normalize: bool,
}

fn resolve_fit(a: &FitArgs) -> anyhow::Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => {
            let data = a.data.clone().context("--data is required (a folder of images or a dataset layout)")?;
            TrainConfig::defaults(data)
        }
    };
    if let Some(d) = &a.data {
        c.data.path = d.clone();
    }
    if let Some(v) = &a.format {
        c.data.format = *v;
    }
    if let Some(v) = &a.arch {
        let arch: models::Arch = v.parse()?;
        if arch != c.model.arch {
            let keep = c.model.clone();
            c.model = models::ModelConfig::new(arch, keep.dim);
            c.model.g_dim = keep.g_dim;
            c.model.student_norm = keep.student_norm;
        }
    }
    if a.weights.is_some() {
        c.weights = a.weights.clone();
    }
    let m = &mut c.model;
    if let Some(v) = a.dim {
        m.dim = v;
    }
    if let Some(v) = a.g_dim {
        m.g_dim = v;
    }
    if let Some(v) = a.image_size {
        m.image_size = v;
        if a.sampling_size.is_none() {
            c.sampling_size = ((v as f64) * 256.0 / 224.0).round() as u32;
        }
    }
    m.student_norm |= a.student_norm;
    if let Some(v) = a.sampling_size {
        c.sampling_size = v;
    }
    let s = &mut c.stml;
    macro_rules! set {
        ($dst:expr, $src:expr) => {
            if let Some(v) = $src {
                $dst = v;
            }
        };
    }
    set!(s.sigma, a.sigma);
    set!(s.delta, a.delta);
    set!(s.num_neighbors, a.num_neighbors);
    set!(s.view, a.view);
    set!(s.momentum, a.momentum);
    s.supervised |= a.supervised;
    let o = &mut c.optim;
    set!(o.lr, a.lr);
    set!(o.emb_lr, a.emb_lr);
    set!(o.weight_decay, a.weight_decay);
    set!(o.optimizer, a.optimizer);
    set!(o.epochs, a.epochs);
    set!(o.batch_size, a.batch_size);
    set!(o.max_steps_per_epoch, a.max_steps_per_epoch);
    o.bn_freeze |= a.bn_freeze;
    o.fix_lr |= a.fix_lr;
    set!(c.data.limit, a.limit);
    set!(c.data.eval_limit, a.eval_limit);
    set!(c.eval_every, a.eval_every);
    set!(c.seed, a.seed);
    set!(c.threads, a.threads);
    set!(c.device, a.device);
    c.validate()?;
    Ok(c)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Fit(a) => {
            let summary = if a.resume {
                trainer::train::resume(&a.out)?
            } else {
                let cfg = resolve_fit(&a)?;
                trainer::train::fit(cfg, &a.out)?
            };
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Eval(a) => {
            let opts = trainer::evaluate::EvalOptions {
                data: a.data,
                format: a.format,
                limit: a.limit,
                ks: a.ks,
                cosine: a.cosine,
                threads: a.threads,
                device: a.device,
                image_size: a.image_size,
            };
            let report = match (a.run, a.arch) {
                (Some(run), None) => trainer::evaluate::eval_run(&run, &opts)?,
                (None, Some(arch)) => trainer::evaluate::eval_backbone(arch.parse()?, a.weights.as_deref(), &opts)?,
                _ => anyhow::bail!("pass either --run RUN_DIR or --arch ARCH [--weights FILE]"),
            };
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.table());
            }
        }
        Command::WriteImages(a) => {
            let n = trainer::write_images::write_images(&a.data, a.format, a.split, a.limit, &a.out)?;
            eprintln!("wrote {n} images to {}", a.out.display());
        }
        Command::Export(a) => {
            let m = trainer::export::export_run(&a.run, &a.out, a.normalize)?;
            eprintln!(
                "exported {} ({}, d = {}, {} distance) to {}",
                m.provenance.run_id,
                m.arch,
                m.embedding_dim,
                serde_json::to_string(&m.distance)?.trim_matches('"'),
                a.out.display()
            );
        }
    }
    Ok(())
}
