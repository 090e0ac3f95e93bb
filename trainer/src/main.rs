//! The `trainer` command: fit a self-taught embedding (STML) to a folder of images
//! without labels, evaluate it where labels exist, and export it to ONNX.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use trainer::config::{DeviceKind, HeadInit, Preset, TrainConfig};
use trainer::optim::Algorithm;

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
    /// Train an embedding on a folder of images without labels (or with a few: --labels).
    Fit(Box<FitArgs>),
    /// Report Recall@K, NMI and MAP@R of a run (or of a pretrained backbone) on labelled data.
    Eval(EvalArgs),
    /// Export a run's served embedding (`g` by default, `f` in the paper) to ONNX, manifest included.
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

/// Flags of `trainer fit`. Each says its default (the `default` preset) and, where it
/// differs, the paper's value (`--preset paper`). A flag overrides the preset and --config.
#[derive(Args)]
struct FitArgs {
    /// Training images: a folder (searched recursively; subfolder names, if any, are not used
    /// for training) or a dataset layout (see --format).
    #[arg(long, conflicts_with = "from_index")]
    data: Option<PathBuf>,
    /// Train on the images a server's collection holds: its index folder (`server index
    /// --index`), its collection folder, or a snapshot file of it (`POST
    /// /collections/NAME/snapshots`; take one while a server is serving the folder). Kept
    /// originals are read from the index, other items from the files they were indexed
    /// from. The same as `--data PATH --format index`.
    #[arg(long)]
    from_index: Option<PathBuf>,
    /// Run directory to create (or continue with --resume).
    #[arg(long)]
    out: PathBuf,
    /// Defaults to start from: `default` (the paper's method started at the pretrained
    /// feature: --head-init pca, --bn-freeze, --lr and --emb-lr 5e-4, --crop-scale 0.08,
    /// --served-head g) or `paper` (the paper's settings exactly).
    #[arg(long, value_enum, default_value = "default")]
    preset: Preset,
    /// TOML file with any of the settings below (a run's config.toml is a complete example);
    /// it replaces the preset, and flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint. Flags may raise --epochs or
    /// change --eval-every, --threads, --device, --eval-limit; any other change is refused.
    #[arg(long)]
    resume: bool,
    /// Dataset layout of --data [default: auto, detected].
    #[arg(long, value_enum)]
    format: Option<trainer::data::Format>,
    /// Which split of --data to train on [default: the official training split of cub, cars,
    /// sop and idx layouts (the first half of the classes); all of any other folder].
    #[arg(long, value_enum)]
    split: Option<trainer::data::Split>,
    /// Labelled images to evaluate during training (monitoring only, never to choose an
    /// epoch): all classes of a labelled folder, or the test split of a cub/cars/sop/idx
    /// layout [default: none; the official test split when --data is such a layout].
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Hold out this fraction of the training classes (a fixed random choice) and evaluate
    /// on them instead of --eval-data, e.g. 0.5 [default: 0, train on every class].
    #[arg(long)]
    holdout_classes: Option<f64>,
    /// Semi-supervised: a file of `path<TAB>class` (or `path,class`) lines naming the class
    /// of some training images (paths relative to --data). Pairs of labelled images get
    /// W = 1 / 0; the rest come from STML [default: none].
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Semi-supervised from the layout's own labels, kept for this fraction of the training
    /// images (a seeded random choice), e.g. 0.1 to measure the mode [default: 0].
    #[arg(long)]
    label_fraction: Option<f64>,
    /// Backbone: mobilenet_v2 | efficientnet_lite0 | resnet18 | resnet50 | googlenet |
    /// bn_inception [default: mobilenet_v2; paper: googlenet / bn_inception / resnet50].
    #[arg(long)]
    arch: Option<String>,
    /// Backbone weights (safetensors) [default: the pretrained file set-up installed].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Dimension of the target embedding f, distilled from g [default: 128; paper: 64, 128
    /// or 512].
    #[arg(long)]
    dim: Option<usize>,
    /// Dimension of the wide embedding g, trained on the teacher's soft labels [default:
    /// 1024; paper: 1024].
    #[arg(long)]
    g_dim: Option<usize>,
    /// The head that is evaluated, exported and served: g (--g-dim wide, the better one on
    /// every development run) or f (--dim, smaller vectors) [default: g; paper: f].
    #[arg(long)]
    served_head: Option<models::Head>,
    /// How f and g start: pca (principal components of the pretrained pooled feature of the
    /// training images) or orthogonal (random) [default: pca; paper: orthogonal].
    #[arg(long, value_enum)]
    head_init: Option<HeadInit>,
    /// Network input size, a square crop [default: the architecture's, 224 for mobilenet_v2;
    /// paper: 224, 227 for bn_inception].
    #[arg(long)]
    image_size: Option<u32>,
    /// Side of the squashed images used to find each image's neighbours for the batches
    /// [default: 256/224 x --image-size; paper: 256].
    #[arg(long)]
    sampling_size: Option<u32>,
    /// Bandwidth sigma of the pairwise similarity exp(-d^2 / sigma) [default: 3; paper: 3].
    #[arg(long)]
    sigma: Option<f64>,
    /// Margin delta of the relaxed contrastive loss [default: 1; paper: 1, 0.9 for SOP].
    #[arg(long)]
    delta: Option<f64>,
    /// Neighbours K per query image in a batch; k = K x view in the contextual similarity
    /// [default: 5; paper: 5, 2 for SOP].
    #[arg(long)]
    num_neighbors: Option<usize>,
    /// Augmented views of each image in a batch [default: 2; paper: 2].
    #[arg(long)]
    view: Option<usize>,
    /// EMA momentum m of the teacher [default: 0.999; paper: 0.999, 0.9 for SOP].
    #[arg(long)]
    momentum: Option<f64>,
    /// Smallest area fraction of the random crop of a training view (RandomResizedCrop's
    /// scale (MIN, 1)) [default: 0.08; paper: 0.16].
    #[arg(long)]
    crop_scale: Option<f64>,
    /// Learning rate of the backbone [default: 5e-4; paper: 1e-4].
    #[arg(long)]
    lr: Option<f64>,
    /// Learning rate of the heads f and g [default: 5e-4; paper: 1e-4, 1e-2 for SOP].
    #[arg(long)]
    emb_lr: Option<f64>,
    /// Weight decay [default: 1e-2; paper: 1e-2].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Optimiser [default: adamp; paper: adamp].
    #[arg(long, value_enum)]
    optimizer: Option<Algorithm>,
    /// Epochs [default: 90; paper: 90].
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch B, each seen in --view augmentations; a multiple of --num-neighbors
    /// [default: 120; paper: 120].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Stop each epoch after this many steps [default: 0, full epochs of floor(N / B) steps].
    #[arg(long)]
    max_steps_per_epoch: Option<usize>,
    /// Linear learning-rate warm-up over this many epochs' worth of steps [default: 0, as the paper; 0.25 was the default until 2026-12-03].
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Batch norm in eval mode with frozen affine parameters: `--bn-freeze` or
    /// `--bn-freeze false` [default: true; paper: false, true for bn_inception].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    bn_freeze: Option<bool>,
    /// Constant learning rate instead of cosine annealing [default: false; paper: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    fix_lr: Option<bool>,
    /// L2-normalise the student's outputs [default: false; paper: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    student_norm: Option<bool>,
    /// Train with the true labels as W (the supervised comparison; needs labelled data)
    /// [default: false].
    #[arg(long)]
    supervised: bool,
    /// With known classes (--labels, --label-fraction, --supervised): follow an image of
    /// known class in its batch by others of its class, so that batches hold pairs known
    /// to match and to differ: `--known-positives` or `--known-positives false` [default:
    /// true; paper: false, its batches come from neighbours only].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    known_positives: Option<bool>,
    /// With some classes known (--labels, --label-fraction): how many times a pair of two
    /// labelled images counts in the loss against a pair the teacher labels [default: 16;
    /// paper: 1].
    #[arg(long)]
    label_weight: Option<f64>,
    /// Use at most this many training images, a seeded random subset [default: 0, all].
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate on at most this many images, a seeded random subset [default: 0, all].
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Evaluate every N epochs when there is evaluation data (0 = only at the end) [default: 1].
    #[arg(long)]
    eval_every: Option<usize>,
    /// Random seed of initialisation, batches and augmentation [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Threads for libtorch and image decoding [default: 0, all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Where to train: auto (CUDA when available), cpu, cuda [default: auto].
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
    /// Labelled data: every class of a labelled folder, or the test split of a cub, cars,
    /// sop or idx layout (see --split).
    #[arg(long)]
    data: PathBuf,
    /// Dataset layout.
    #[arg(long, value_enum, default_value = "auto")]
    format: trainer::data::Format,
    /// Which split to evaluate [default: test for layouts with an official split, all otherwise].
    #[arg(long, value_enum)]
    split: Option<trainer::data::Split>,
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
    /// Evaluate a run with this head, f or g [default: the head the run serves].
    #[arg(long, conflicts_with = "arch")]
    head: Option<models::Head>,
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
    /// Export this head, f (--dim values) or g (--g-dim values) [default: the head the run
    /// serves].
    #[arg(long)]
    head: Option<models::Head>,
}

/// The configuration of `fit`: `base` (a resumed run's own), or --config, or the preset;
/// then the flags.
fn resolve_fit(a: &FitArgs, base: Option<TrainConfig>) -> anyhow::Result<TrainConfig> {
    let mut c = match (base, &a.config) {
        (Some(b), _) => b,
        (None, Some(p)) => TrainConfig::from_file(p)?,
        (None, None) => {
            let data = a.data.clone().or_else(|| a.from_index.clone()).context(
                "--data is required (a folder of images or a dataset layout), or --from-index (a server's collection)",
            )?;
            TrainConfig::preset(a.preset, data)
        }
    };
    if let Some(d) = &a.data {
        c.data.path = d.clone();
    }
    if let Some(v) = &a.format {
        c.data.format = *v;
    }
    if let Some(d) = &a.from_index {
        anyhow::ensure!(
            a.format.is_none_or(|f| f == trainer::data::Format::Index),
            "--from-index reads a server's collection; leave out --format"
        );
        c.data.path = d.clone();
        c.data.format = trainer::data::Format::Index;
    }
    if a.split.is_some() {
        c.data.split = a.split;
    }
    if a.eval_data.is_some() {
        c.data.eval_data = a.eval_data.clone();
    }
    if a.labels.is_some() {
        c.data.labels = a.labels.clone();
    }
    if let Some(v) = a.head_init {
        c.head_init = v;
    }
    if let Some(v) = &a.arch {
        let arch: models::Arch = v.parse()?;
        if arch != c.model.arch {
            let keep = c.model.clone();
            c.model = models::ModelConfig::new(arch, keep.dim);
            c.model.g_dim = keep.g_dim;
            c.model.student_norm = keep.student_norm;
            c.model.served_head = keep.served_head;
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
    if let Some(v) = a.student_norm {
        m.student_norm = v;
    }
    if let Some(v) = a.served_head {
        m.served_head = v;
    }
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
    set!(s.crop_scale, a.crop_scale);
    s.supervised |= a.supervised;
    set!(s.known_positives, a.known_positives);
    set!(s.label_weight, a.label_weight);
    let o = &mut c.optim;
    set!(o.lr, a.lr);
    set!(o.emb_lr, a.emb_lr);
    set!(o.weight_decay, a.weight_decay);
    set!(o.optimizer, a.optimizer);
    set!(o.epochs, a.epochs);
    set!(o.batch_size, a.batch_size);
    set!(o.max_steps_per_epoch, a.max_steps_per_epoch);
    set!(o.warmup_epochs, a.warmup_epochs);
    set!(o.bn_freeze, a.bn_freeze);
    set!(o.fix_lr, a.fix_lr);
    set!(c.data.limit, a.limit);
    set!(c.data.eval_limit, a.eval_limit);
    set!(c.data.holdout_classes, a.holdout_classes);
    set!(c.data.label_fraction, a.label_fraction);
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
                let saved = trainer::run::RunDir::open(&a.out)?.config()?;
                trainer::commands::fit::resume(&a.out, Some(resolve_fit(&a, Some(saved))?))?
            } else {
                let cfg = resolve_fit(&a, None)?;
                trainer::commands::fit::fit(cfg, &a.out)?
            };
            println!("{}", serde_json::to_string_pretty(&summary)?);
            if let Some(line) = summary.comparison() {
                eprintln!("{line}");
            }
        }
        Command::Eval(a) => {
            let opts = trainer::commands::eval::EvalOptions {
                data: a.data,
                format: a.format,
                split: a.split,
                limit: a.limit,
                ks: a.ks,
                cosine: a.cosine,
                threads: a.threads,
                device: a.device,
                image_size: a.image_size,
                head: a.head,
            };
            let report = match (a.run, a.arch) {
                (Some(run), None) => trainer::commands::eval::eval_run(&run, &opts)?,
                (None, Some(arch)) => {
                    trainer::commands::eval::eval_backbone(arch.parse()?, a.weights.as_deref(), &opts)?
                }
                _ => anyhow::bail!("pass either --run RUN_DIR or --arch ARCH [--weights FILE]"),
            };
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.table());
            }
        }
        Command::WriteImages(a) => {
            let n = trainer::commands::write_images::write_images(&a.data, a.format, a.split, a.limit, &a.out)?;
            eprintln!("wrote {n} images to {}", a.out.display());
        }
        Command::Export(a) => {
            let m = trainer::commands::export::export_run(&a.run, &a.out, a.normalize, a.head)?;
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
