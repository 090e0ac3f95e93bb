//! The STML training loop (STML.md, "Optimisation"): per epoch, nearest-neighbour batches
//! from the student's `g` embedding; per step, two views, student and teacher forward,
//! pseudo labels from the teacher, the STML loss, backward, EMA update of the teacher,
//! optimizer step. Checkpoints, metrics and pictures go to the run directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use models::net::Network;
use models::{Arch, Preprocess, HEAD_F, HEAD_G};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{nn::VarStore, Device, Kind, Tensor};
use tracing::{info, warn};

use crate::config::{HeadInit, OptimizerKind, TrainConfig};
use crate::data::labels::KnownLabels;
use crate::data::{self, Dataset, Format, ImageCache, Loader, LoaderOptions, Purpose, Split, Transform};
use crate::embed::{embed, embed_many, progress, EmbedOptions, Embedded};
use crate::error::{Result, TrainError};
use crate::evaluate::{evaluate_embeddings, EvalReport};
use crate::init::{apply_head, init_head, Pca};
use crate::run::{RunDir, RunState, OPTIMIZER, STUDENT, TEACHER};
use crate::stml::ema::EmaPairs;
use crate::stml::optim::{cosine_lr, Algorithm, Optimizer, OptimizerConfig, ParamGroup};
use crate::stml::{loss, sampler, similarity};

/// What `trainer fit` prints when it is done.
#[derive(Debug, Clone, Serialize)]
pub struct FitSummary {
    pub run: String,
    pub epochs: usize,
    pub steps: usize,
    pub train_images: usize,
    pub skipped_images: usize,
    pub final_loss: f64,
    pub images_per_second: f64,
    /// Evaluation of the last epoch on the evaluation data, when there is some.
    pub eval: Option<EvalReport>,
    /// The pretrained backbone's pooled feature on the same evaluation data.
    pub baseline: Option<EvalReport>,
}

impl FitSummary {
    /// "Recall@1 61.20 (pretrained pooled feature 57.80: +3.40)", when both were measured.
    pub fn comparison(&self) -> Option<String> {
        let (e, b) = (self.eval.as_ref()?, self.baseline.as_ref()?);
        let (r, rb) = (e.recall.first()?, b.recall.first()?);
        let d = 100.0 * (r.1 - rb.1);
        Some(format!(
            "Recall@{} {:.2} after training; the pretrained pooled feature gives {:.2} on the same images: {:+.2} ({}); \
             MAP@R {:.2} vs {:.2}",
            r.0,
            100.0 * r.1,
            100.0 * rb.1,
            d,
            if d > 0.0 { "training helped" } else { "training did not help" },
            100.0 * e.map_at_r,
            100.0 * b.map_at_r
        ))
    }
}

/// The student and its momentum teacher.
pub struct Networks {
    pub vs_student: VarStore,
    pub student: Network,
    pub vs_teacher: VarStore,
    pub teacher: Network,
}

/// Default pretrained weights that scripts/setup.sh installed for an architecture.
pub fn default_weights(arch: Arch) -> Option<std::path::PathBuf> {
    let file = arch.pretrained_file()?;
    let deps = std::env::var_os("STML_DEPS")
        .map(std::path::PathBuf::from)
        .or_else(|| option_env!("STML_DEPS").map(std::path::PathBuf::from))?;
    Some(deps.join("weights").join(file))
}

/// Builds student and teacher; loads backbone weights into the student; the teacher
/// starts as an exact copy (a deliberate difference from the reference, see STML.md).
pub fn build_networks(cfg: &TrainConfig, device: Device) -> Result<Networks> {
    let arch = cfg.model.arch;
    let vs_student = VarStore::new(device);
    let mut student = Network::new(&vs_student.root(), cfg.model.student_graph());
    let weights = cfg.weights.clone().or_else(|| default_weights(arch));
    match &weights {
        Some(w) if w.exists() || cfg.weights.is_some() => {
            student.load_file(w, arch.name(), arch.classifier_prefixes(), &|n| n.starts_with("head_"))?;
            info!("backbone weights: {}", w.display());
        }
        Some(w) => warn!(
            "no pretrained weights at {} (run scripts/setup.sh); {} starts from random initialisation",
            w.display(),
            arch.name()
        ),
        None => warn!(
            "{} has no pretrained weights here; starting from random initialisation (pass --weights FILE)",
            arch.name()
        ),
    }
    student.freeze_bn(cfg.optim.bn_freeze);
    let mut vs_teacher = VarStore::new(device);
    let teacher = Network::new(&vs_teacher.root(), cfg.model.teacher_graph());
    teacher.load(&student.to_weights(), arch.name(), &["head_f."], &|_| false)?;
    vs_teacher.freeze();
    Ok(Networks { vs_student, student, vs_teacher, teacher })
}

/// The optimizer's two parameter groups: backbone (lr) and heads (emb_lr).
pub fn build_optimizer(cfg: &TrainConfig, student: &Network) -> Result<Optimizer> {
    let frozen: std::collections::HashSet<String> =
        if cfg.optim.bn_freeze { student.bn_param_names().into_iter().collect() } else { Default::default() };
    let mut backbone = Vec::new();
    let mut heads = Vec::new();
    for spec in student.specs() {
        if spec.kind != models::graph::ParamKind::Trainable || frozen.contains(&spec.name) {
            continue;
        }
        let t = student.param(&spec.name).expect("spec has a tensor").shallow_clone();
        if spec.name.starts_with("head_") {
            heads.push((spec.name.clone(), t));
        } else {
            backbone.push((spec.name.clone(), t));
        }
    }
    let algorithm = match cfg.optim.optimizer {
        OptimizerKind::Adamp => Algorithm::AdamP,
        OptimizerKind::Adamw => Algorithm::AdamW,
        OptimizerKind::Sgd => Algorithm::Sgd,
    };
    let oc = OptimizerConfig { algorithm, weight_decay: cfg.optim.weight_decay, ..OptimizerConfig::default() };
    Ok(Optimizer::new(
        oc,
        vec![ParamGroup { lr: cfg.optim.lr, params: backbone }, ParamGroup { lr: cfg.optim.emb_lr, params: heads }],
    )?)
}

/// Seeded random subset of at most `limit` items (all when `limit` is 0 or larger).
pub(crate) fn limit_dataset(ds: Dataset, limit: usize, seed: u64) -> Dataset {
    if limit == 0 || limit >= ds.len() {
        return ds;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut idx = rand::seq::index::sample(&mut rng, ds.len(), limit).into_vec();
    idx.sort_unstable();
    ds.subset(&idx)
}

/// Seed of `--holdout-classes`: fixed, so runs with different `--seed` hold out the same classes.
const HOLDOUT_SEED: u64 = 0x601d;

/// What a run trains and evaluates on.
pub struct RunData {
    pub train: Arc<Dataset>,
    /// Labelled images evaluated during training (monitoring only).
    pub eval: Option<Arc<Dataset>>,
    /// Where `eval` comes from, in words (for the log).
    pub eval_source: String,
    /// Known classes of training images: all of them with `--supervised`, some in the
    /// semi-supervised mode, `None` for pure STML.
    pub known: Option<KnownLabels>,
}

fn need_labels(ds: &Dataset, what: &str) -> Result<()> {
    match ds.labels() {
        Some(_) => Ok(()),
        None => Err(TrainError::Config(format!(
            "{what} {} ({}) has no labels; evaluation needs a labelled layout (one subfolder per class, cub, cars, sop, idx)",
            ds.root.display(),
            ds.format
        ))),
    }
}

/// Reads the training images, the evaluation images and any known labels of a run.
pub fn load_data(cfg: &TrainConfig) -> Result<RunData> {
    let d = &cfg.data;
    let format = data::resolve_format(&d.path, d.format)?;
    let split = d.split.unwrap_or(format.default_split(Purpose::Train));
    let mut train = data::load(&d.path, format, split)?;
    let mut eval = None;
    let mut eval_source = String::new();
    if let Some(path) = &d.eval_data {
        let ef = data::resolve_format(path, Format::Auto)?;
        let es = ef.default_split(Purpose::Eval);
        let e = data::load(path, ef, es)?;
        need_labels(&e, "--eval-data")?;
        eval_source = format!("{} ({ef}, split {es}) from --eval-data", path.display());
        eval = Some(e);
    } else if d.holdout_classes > 0.0 {
        let (kept, held) = train.hold_out_classes(d.holdout_classes, HOLDOUT_SEED)?;
        eval_source = format!(
            "{} of the {} classes of the training data, held out by --holdout-classes {}",
            held.num_labels_present(),
            train.num_labels_present(),
            d.holdout_classes
        );
        train = kept;
        eval = Some(held);
    } else if format.has_official_split() && split == Split::Train {
        let t = data::load(&d.path, format, Split::Test)?;
        if t.labels().is_some() {
            eval_source = format!("the official test split of {} ({format})", d.path.display());
            eval = Some(t);
        }
    }
    let train = limit_dataset(train, d.limit, cfg.seed);
    let eval = eval.map(|e| limit_dataset(e, d.eval_limit, cfg.seed + 1));
    if train.len() < cfg.optim.batch_size {
        return Err(TrainError::Config(format!(
            "{} has {} training images, fewer than --batch-size {}; lower --batch-size (a multiple of --num-neighbors)",
            d.path.display(),
            train.len(),
            cfg.optim.batch_size
        )));
    }
    let known = if cfg.stml.supervised {
        Some(KnownLabels::all(&train).ok_or_else(|| {
            TrainError::Config(format!(
                "--supervised needs labels, but {} ({}) has none",
                d.path.display(),
                train.format
            ))
        })?)
    } else if let Some(file) = &d.labels {
        Some(KnownLabels::from_file(file, &train)?)
    } else if d.label_fraction > 0.0 {
        Some(KnownLabels::fraction(&train, d.label_fraction, cfg.seed)?)
    } else {
        None
    };
    Ok(RunData { train: Arc::new(train), eval: eval.map(Arc::new), eval_source, known })
}

fn cache_for(ds: &Dataset) -> Option<Arc<ImageCache>> {
    // Decoded images stay in memory across epochs up to 4 GiB.
    Some(Arc::new(ImageCache::new(ds.len(), 4 << 30)))
}

/// Starts a new run.
pub fn fit(cfg: TrainConfig, out: &Path) -> Result<FitSummary> {
    cfg.validate()?;
    let data = load_data(&cfg)?; // errors before the run directory is created
    let run = RunDir::create(out, &cfg)?;
    train_run(&run, cfg, data, None)
}

/// Settings a resumed run may change; any other difference from the run's config is refused.
pub const RESUMABLE_KEYS: [&str; 6] =
    ["optim.epochs", "eval_every", "checkpoint_every", "threads", "device", "data.eval_limit"];

/// Continues a run from its latest checkpoint, with `changed` settings (a config built
/// from the run's own plus flags): more epochs, or how it evaluates and where it runs, are
/// applied; anything that would make it another run is refused.
pub fn resume(out: &Path, changed: Option<TrainConfig>) -> Result<FitSummary> {
    let run = RunDir::open(out)?;
    let saved = run.config()?;
    let ck = run.latest_checkpoint();
    let cfg = match changed {
        Some(new) if new != saved => {
            let diff = config_diff(&saved, &new);
            let refused: Vec<&String> = diff.iter().filter(|k| !RESUMABLE_KEYS.contains(&k.as_str())).collect();
            if !refused.is_empty() {
                return Err(TrainError::Run {
                    path: run.root.clone(),
                    reason: format!(
                        "--resume keeps a run's settings, but these differ from its config.toml: {}; drop those \
                         flags, or start a new run with another --out (a resumed run may change only {})",
                        refused.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                        RESUMABLE_KEYS.join(", ")
                    ),
                });
            }
            let done = match &ck {
                Some(c) => RunDir::read_state(c)?.epochs_done,
                None => 0,
            };
            if new.optim.epochs < done {
                return Err(TrainError::Run {
                    path: run.root.clone(),
                    reason: format!("has done {done} epochs already; --epochs {} would undo them", new.optim.epochs),
                });
            }
            new.validate()?;
            info!("resuming with changed settings: {}", diff.join(", "));
            run.write_file("config.toml", new.to_toml().as_bytes())?;
            new
        }
        _ => saved,
    };
    let data = load_data(&cfg)?;
    train_run(&run, cfg, data, ck)
}

/// Dotted keys whose values differ between two configs.
fn config_diff(a: &TrainConfig, b: &TrainConfig) -> Vec<String> {
    fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
        match (a, b) {
            (toml::Value::Table(x), toml::Value::Table(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    match (x.get(k), y.get(k)) {
                        (Some(u), Some(v)) => walk(&p, u, v, out),
                        _ => out.push(p),
                    }
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let (a, b) = (toml::Value::try_from(a).expect("config"), toml::Value::try_from(b).expect("config"));
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out
}

/// Moves a batch's pixels to a `[rows, 3, S, S]` tensor.
fn batch_tensor(b: &data::Batch, device: Device) -> Tensor {
    let s = b.size as i64;
    Tensor::from_slice(&b.data).view([b.rows as i64, 3, s, s]).to_device(device)
}

/// Seconds spent in each part of an epoch.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EpochTimes {
    /// Embedding the training set and building the nearest-neighbour batches.
    pub sampler: f64,
    /// The optimisation steps (data loading overlapped).
    pub steps: f64,
    pub eval: f64,
    pub checkpoint: f64,
}

/// Everything a step needs besides the batch.
struct Stepper<'a> {
    cfg: &'a TrainConfig,
    nets: &'a Networks,
    ema: &'a EmaPairs,
    known: Option<&'a KnownLabels>,
    device: Device,
}

impl Stepper<'_> {
    /// One STML step: student forward, pseudo labels from the teacher (or known labels),
    /// loss, backward, EMA update, optimizer step. Returns the loss parts.
    fn step(&self, opt: &mut Optimizer, batch: &data::Batch) -> Result<[f64; 4]> {
        let s = &self.cfg.stml;
        let x = batch_tensor(batch, self.device);
        let out = self.nets.student.forward(&x, true)?;
        let head = |name: &str| {
            out.get(name).ok_or_else(|| TrainError::MissingOutput { name: name.into(), what: "a student head".into() })
        };
        let (f, g) = (head("f")?, head("g")?);
        let labels = self.known.map(|k| {
            let rows: Vec<i64> = batch.idx.iter().map(|&i| k.labels[i as usize]).collect();
            Tensor::from_slice(&rows).to_device(self.device)
        });
        let all_known = labels.as_ref().is_some_and(|l| l.min().int64_value(&[]) >= 0);
        let w = match &labels {
            Some(l) if all_known => similarity::label_similarity(l, Kind::Float),
            _ => {
                let idx = Tensor::from_slice(&batch.idx).to_device(self.device);
                let t_g = tch::no_grad(|| self.nets.teacher.forward(&x, false))?;
                let k_context = (s.num_neighbors * s.view) as i64;
                let w = similarity::pseudo_labels(&t_g["g"], &idx, s.sigma, k_context);
                match &labels {
                    Some(l) => similarity::with_known_labels(&w, l),
                    None => w,
                }
            }
        };
        let parts = loss::stml_loss(f, g, &w, s.delta);
        opt.zero_grad();
        parts.total.backward();
        self.ema.momentum_update(s.momentum);
        opt.step();
        Ok(parts.values())
    }
}

/// The learning-rate factor of step `step` (0-based, counted over the whole run) in
/// `epoch`: the paper's cosine annealing stepped per epoch, times a linear warm-up.
fn lr_factor(cfg: &TrainConfig, epoch: usize, step: usize, steps_per_epoch: usize) -> f64 {
    let o = &cfg.optim;
    let cosine = if o.fix_lr { 1.0 } else { cosine_lr(1.0, epoch, o.epochs, 0.0) };
    let warmup = (o.warmup_epochs * steps_per_epoch as f64).round();
    let ramp = if warmup >= 1.0 { ((step + 1) as f64 / warmup).min(1.0) } else { 1.0 };
    cosine * ramp
}

/// A fresh run's start: heads from the principal components of the pretrained pooled
/// features (`--head-init pca`), and the pretrained baseline beside the starting `f` on
/// the evaluation data. Returns the `g` embedding of the training set for the first
/// epoch's batches when it was computed on the way.
#[allow(clippy::too_many_arguments)]
fn start_run(
    run: &RunDir,
    cfg: &TrainConfig,
    nets: &Networks,
    ema: &EmaPairs,
    data: &RunData,
    sampling_tf: &Transform,
    cache: &Option<Arc<ImageCache>>,
    threads: usize,
    device: Device,
) -> Result<Option<Embedded>> {
    let mut sampled = None;
    if cfg.head_init == HeadInit::Pca {
        let opts = EmbedOptions {
            output: "pooled",
            transform: sampling_tf.clone(),
            batch_size: 128,
            threads,
            device,
            cache: cache.clone(),
            label: Some("pca"),
        };
        let pooled = embed(&nets.student, &data.train, &opts)?;
        let pca = Pca::fit(&pooled.tensor(Device::Cpu));
        init_head(&nets.student, HEAD_F, &pca)?;
        init_head(&nets.student, HEAD_G, &pca)?;
        ema.copy_into();
        let g = apply_head(&nets.student, HEAD_G, &pooled.tensor(device), cfg.model.student_norm)?;
        info!(
            "heads f and g start at the first {} / {} principal components of the pooled feature",
            cfg.model.dim, cfg.model.g_dim
        );
        sampled = Some(pooled.with_rows(&g)?);
    }
    if let Some(eval) = &data.eval {
        let pre = cfg.model.preprocess();
        let opts = EmbedOptions {
            output: "f",
            transform: Transform::eval(&pre),
            batch_size: 128,
            threads,
            device,
            cache: None,
            label: Some("eval"),
        };
        let e = embed_many(&nets.student, eval, &opts, &["pooled", "f"])?;
        let ks = cfg.ks(eval.format == data::Format::Sop);
        let baseline = evaluate_embeddings(&e[0], eval, &ks, false)?;
        let start = evaluate_embeddings(&e[1], eval, &ks, false)?;
        info!("pretrained pooled feature: {}", baseline.one_line());
        info!("epoch 0 (f before training): {}", start.one_line());
        run.log_metrics(&serde_json::json!({"epoch": 0, "step": 0, "eval": start, "baseline": baseline}))?;
    }
    Ok(sampled)
}

fn train_run(
    run: &RunDir,
    cfg: TrainConfig,
    data: RunData,
    checkpoint: Option<std::path::PathBuf>,
) -> Result<FitSummary> {
    let threads = crate::device::set_threads(cfg.threads);
    let device = crate::device::select(cfg.device)?;
    tch::manual_seed(cfg.seed as i64);
    let train = data.train.clone();
    info!(
        "training {} (d = {}, g = {}) on {} images of {} ({}), {}",
        cfg.model.arch,
        cfg.model.dim,
        cfg.model.g_dim,
        train.len(),
        cfg.data.path.display(),
        train.format,
        crate::device::describe(device)
    );
    match &data.eval {
        Some(e) => info!("evaluating on {} images: {}", e.len(), data.eval_source),
        None => info!(
            "no evaluation during training; pass --eval-data DIR (labelled) or --holdout-classes 0.5 to watch retrieval improve"
        ),
    }
    if let Some(k) = &data.known {
        if !cfg.stml.supervised {
            info!("semi-supervised: {} of {} training images have a known class", k.count, train.len());
        }
    }
    let nets = build_networks(&cfg, device)?;
    let mut opt = build_optimizer(&cfg, &nets.student)?;
    let ema = EmaPairs::new(&nets.vs_teacher, &nets.vs_student)?;
    let mut state = RunState::default();
    if let Some(ck) = &checkpoint {
        state = RunDir::read_state(ck)?;
        load_checkpoint(&nets, &mut opt, ck, &cfg, device)?;
        info!("resumed from {} ({} epochs done)", ck.display(), state.epochs_done);
    }
    if state.epochs_done >= cfg.optim.epochs {
        info!("run already finished its {} epochs", cfg.optim.epochs);
    }

    let pre: Preprocess = cfg.model.preprocess();
    let train_tf = Transform::train(&pre);
    let sampling_tf = Transform::sampling(&pre, cfg.sampling_size);
    let cache = cache_for(&train);
    let mut first_sampled = if checkpoint.is_none() {
        start_run(run, &cfg, &nets, &ema, &data, &sampling_tf, &cache, threads, device)?
    } else {
        None
    };
    let ks = cfg.ks(data.eval.as_ref().is_some_and(|e| e.format == data::Format::Sop));
    let stepper = Stepper { cfg: &cfg, nets: &nets, ema: &ema, known: data.known.as_ref(), device };
    let mut last_eval = None;
    let mut last_loss = f64::NAN;
    let mut ips = 0.0;

    for epoch in state.epochs_done..cfg.optim.epochs {
        let mut times = EpochTimes::default();
        // 1. Nearest-neighbour batches from the student's g embedding (eval mode).
        let t0 = Instant::now();
        let sampled = match first_sampled.take() {
            Some(s) => s,
            None => embed(
                &nets.student,
                &train,
                &EmbedOptions {
                    output: "g",
                    transform: sampling_tf.clone(),
                    batch_size: 128,
                    threads,
                    device,
                    cache: cache.clone(),
                    label: Some("sampling"),
                },
            )?,
        };
        let batches = epoch_batches(&cfg, &sampled, epoch)?;
        times.sampler = t0.elapsed().as_secs_f64();

        // 2. The epoch's steps.
        let steps = batches.len();
        let mut loader = Loader::new(
            train.clone(),
            batches,
            train_tf.clone(),
            LoaderOptions {
                views: cfg.stml.view,
                threads,
                prefetch: 3,
                seed: cfg.seed,
                epoch: epoch as u64,
                cache: cache.clone(),
            },
        )?;
        let pb = progress((steps * cfg.optim.batch_size) as u64, &format!("epoch {}", epoch + 1), "img");
        let t0 = Instant::now();
        let mut sums = [0.0f64; 4];
        let mut n_steps = 0usize;
        let mut n_images = 0usize;
        let mut lr_scale = 1.0;
        for batch in loader.by_ref() {
            lr_scale = lr_factor(&cfg, epoch, state.global_step, steps);
            opt.set_lr(0, cfg.optim.lr * lr_scale)?;
            opt.set_lr(1, cfg.optim.emb_lr * lr_scale)?;
            let v = stepper.step(&mut opt, &batch)?;
            if !v[0].is_finite() {
                return Err(TrainError::NonFiniteLoss { value: v[0], epoch: epoch + 1, step: n_steps + 1 });
            }
            for (s, x) in sums.iter_mut().zip(v) {
                *s += x;
            }
            n_steps += 1;
            n_images += batch.images;
            state.global_step += 1;
            pb.inc(batch.images as u64);
            pb.set_message(format!("loss {:.4}", v[0]));
        }
        pb.finish_and_clear();
        times.steps = t0.elapsed().as_secs_f64();
        state.train_seconds += times.steps;
        state.skipped_images += loader.skipped() + if epoch == 0 { sampled.skipped } else { 0 };
        state.epochs_done = epoch + 1;
        ips = n_images as f64 / times.steps.max(1e-9);
        let mean = sums.map(|s| s / n_steps.max(1) as f64);
        last_loss = mean[0];
        info!(
            "epoch {}/{}: loss {:.4} (rc_f {:.4}, rc_g {:.4}, kl {:.4}), {:.1} img/s, {:.2} s/step, lr {:.2e}",
            epoch + 1,
            cfg.optim.epochs,
            mean[0],
            mean[1],
            mean[2],
            mean[3],
            ips,
            times.steps / n_steps.max(1) as f64,
            cfg.optim.lr * lr_scale
        );
        let mut line = serde_json::json!({
            "epoch": epoch + 1, "step": state.global_step, "loss": mean[0], "rc_f": mean[1], "rc_g": mean[2],
            "kl": mean[3], "lr": cfg.optim.lr * lr_scale, "emb_lr": cfg.optim.emb_lr * lr_scale,
            "images_per_second": ips, "seconds": times.steps, "seconds_per_step": times.steps / n_steps.max(1) as f64,
            "skipped_images": state.skipped_images,
        });

        // 3. Evaluation on the held-out classes (monitoring only: never selects an epoch).
        let last = epoch + 1 == cfg.optim.epochs;
        let due = cfg.eval_every > 0 && (epoch + 1) % cfg.eval_every == 0;
        let t0 = Instant::now();
        if let (Some(eval), true) = (&data.eval, last || due) {
            let report = eval_student(&nets.student, eval, &pre, &ks, threads, device)?;
            info!("epoch {}: {}", epoch + 1, report.one_line());
            line["eval"] = serde_json::to_value(&report).expect("report serialises");
            last_eval = Some(report);
        }
        times.eval = t0.elapsed().as_secs_f64();

        // 4. Checkpoint (atomic), pictures.
        let t0 = Instant::now();
        if last || (cfg.checkpoint_every > 0 && (epoch + 1) % cfg.checkpoint_every == 0) {
            save_checkpoint(run, &nets, &opt, epoch, &state)?;
        }
        times.checkpoint = t0.elapsed().as_secs_f64();
        info!(
            "epoch {} time: sampler {:.1} s, steps {:.1} s, evaluation {:.1} s, checkpoint {:.1} s",
            epoch + 1,
            times.sampler,
            times.steps,
            times.eval,
            times.checkpoint
        );
        line["time"] = serde_json::to_value(times).expect("times serialise");
        run.log_metrics(&line)?;
        crate::report::curves(run)?;
    }
    if let Some(eval) = &data.eval {
        crate::report::retrieval_grid(run, &nets.student, eval, &pre, threads, device)?;
    }
    let baseline = run.metrics().into_iter().find_map(|m| serde_json::from_value(m.get("baseline")?.clone()).ok());
    let summary = FitSummary {
        run: run.root.display().to_string(),
        epochs: state.epochs_done,
        steps: state.global_step,
        train_images: train.len(),
        skipped_images: state.skipped_images,
        final_loss: last_loss,
        images_per_second: ips,
        eval: last_eval,
        baseline,
    };
    if summary.skipped_images > 0 {
        warn!("{} images could not be decoded and were skipped (see the warnings above)", summary.skipped_images);
    }
    if let Some(line) = summary.comparison() {
        info!("{line}");
    }
    run.write_file("summary.json", serde_json::to_string_pretty(&summary).expect("serialises").as_bytes())?;
    Ok(summary)
}

/// The batches of one epoch from the training set's `g` embedding.
fn epoch_batches(cfg: &TrainConfig, sampled: &Embedded, epoch: usize) -> Result<Vec<Vec<usize>>> {
    let g = sampled.tensor(Device::Cpu);
    let knn_local = sampler::nearest_neighbors(&g, cfg.stml.num_neighbors)?;
    let knn: Vec<Vec<usize>> = knn_local.iter().map(|row| row.iter().map(|&j| sampled.kept[j]).collect()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
    let mut batches = sampler::epoch_batches(&knn, cfg.optim.batch_size, cfg.stml.num_neighbors, &mut rng);
    if cfg.optim.max_steps_per_epoch > 0 {
        batches.truncate(cfg.optim.max_steps_per_epoch);
    }
    Ok(batches)
}

fn load_checkpoint(nets: &Networks, opt: &mut Optimizer, ck: &Path, cfg: &TrainConfig, device: Device) -> Result<()> {
    let arch = cfg.model.arch.name();
    nets.student.load_file(&ck.join(STUDENT), arch, &[], &|_| false)?;
    nets.teacher.load_file(&ck.join(TEACHER), arch, &[], &|_| false)?;
    let st = models::weights::Weights::read(&ck.join(OPTIMIZER))?;
    let named: Vec<(String, Tensor)> = st
        .tensors
        .iter()
        .map(|(k, t)| {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            (k.clone(), Tensor::from_slice(&t.data).reshape(shape).to_device(device))
        })
        .collect();
    opt.load_state(&named)?;
    Ok(())
}

fn save_checkpoint(run: &RunDir, nets: &Networks, opt: &Optimizer, epoch: usize, state: &RunState) -> Result<()> {
    run.save_checkpoint(
        epoch,
        state,
        |dir| {
            nets.student.to_weights().write(&dir.join(STUDENT), None)?;
            nets.teacher.to_weights().write(&dir.join(TEACHER), None)?;
            let mut w = models::weights::Weights::default();
            for (name, t) in opt.state_tensors() {
                let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
                let shape = t.size().iter().map(|&d| d as usize).collect();
                let data = Vec::<f32>::try_from(t.view(-1))?;
                w.tensors.insert(name, models::weights::Tensor { shape, data });
            }
            w.write(&dir.join(OPTIMIZER), None)?;
            Ok(())
        },
        2,
    )?;
    Ok(())
}

/// Embeds the test split with the student's `f` head and evaluates retrieval.
pub fn eval_student(
    student: &Network,
    test: &Arc<Dataset>,
    pre: &Preprocess,
    ks: &[usize],
    threads: usize,
    device: Device,
) -> Result<EvalReport> {
    let e = crate::embed::embed_eval(student, test, pre, "f", threads, device, Some("eval"))?;
    evaluate_embeddings(&e, test, ks, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_ramps_linearly_then_the_cosine_steps_per_epoch() {
        let mut c = TrainConfig::defaults("x".into());
        c.optim.epochs = 2;
        c.optim.warmup_epochs = 0.5; // 10 steps per epoch: a 5-step ramp
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(lr_factor(&c, 0, 0, 10), 0.2));
        assert!(close(lr_factor(&c, 0, 3, 10), 0.8));
        assert!(close(lr_factor(&c, 0, 4, 10), 1.0));
        assert!(close(lr_factor(&c, 0, 9, 10), 1.0));
        assert!(close(lr_factor(&c, 1, 10, 10), 0.5)); // (1 + cos(pi / 2)) / 2
        c.optim.warmup_epochs = 0.0;
        assert!(close(lr_factor(&c, 0, 0, 10), 1.0));
        c.optim.fix_lr = true;
        assert!(close(lr_factor(&c, 1, 10, 10), 1.0));
    }

    #[test]
    fn config_diff_names_the_changed_keys() {
        let a = TrainConfig::defaults("x".into());
        let mut b = a.clone();
        assert!(config_diff(&a, &b).is_empty());
        b.optim.epochs = 7;
        b.stml.sigma = 2.0;
        b.data.eval_data = Some("y".into());
        assert_eq!(config_diff(&a, &b), ["data.eval_data", "optim.epochs", "stml.sigma"]);
    }

    #[test]
    fn presets_differ_only_where_documented() {
        let d = TrainConfig::preset(crate::config::Preset::Default, "x".into());
        let p = TrainConfig::preset(crate::config::Preset::Paper, "x".into());
        assert_eq!(config_diff(&p, &d), ["head_init", "optim.bn_freeze", "optim.warmup_epochs"]);
        assert_eq!(p.head_init, HeadInit::Orthogonal);
        assert!(!p.optim.bn_freeze && p.optim.warmup_epochs == 0.0);
    }
}
