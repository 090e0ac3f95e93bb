//! The STML training loop (STML.md, "Optimisation"): per epoch, nearest-neighbour batches
//! from the student's `g` embedding; per step, two views, student and teacher forward,
//! pseudo labels from the teacher, the STML loss, backward, EMA update of the teacher,
//! optimizer step. Checkpoints, metrics and pictures go to the run directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use models::net::Network;
use models::{Arch, Preprocess};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{nn::VarStore, Device, Kind, Tensor};
use tracing::{info, warn};

use crate::config::{OptimizerKind, TrainConfig};
use crate::data::{self, Dataset, ImageCache, Loader, LoaderOptions, Split, Transform};
use crate::embed::{embed, progress, EmbedOptions};
use crate::error::{Result, TrainError};
use crate::evaluate::{evaluate_embeddings, EvalReport};
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
    /// Evaluation of the last epoch on the test split, when the data has labels.
    pub eval: Option<EvalReport>,
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

/// The datasets of a run: training images, and labelled test images when the layout has them.
pub fn load_data(cfg: &TrainConfig) -> Result<(Arc<Dataset>, Option<Arc<Dataset>>)> {
    let format = cfg.data.format;
    let train = data::load(&cfg.data.path, format, Split::Train)?;
    let train = limit_dataset(train, cfg.data.limit, cfg.seed);
    let test = if train.format == data::Format::Folder {
        None
    } else {
        let t = data::load(&cfg.data.path, train.format, Split::Test)?;
        let t = limit_dataset(t, cfg.data.eval_limit, cfg.seed + 1);
        (t.labels().is_some() && !t.is_empty()).then_some(t)
    };
    if train.len() < cfg.optim.batch_size {
        return Err(TrainError::Config(format!(
            "{} has {} training images, fewer than --batch-size {}; lower --batch-size (a multiple of --num-neighbors)",
            cfg.data.path.display(),
            train.len(),
            cfg.optim.batch_size
        )));
    }
    if cfg.stml.supervised && train.labels().is_none() {
        return Err(TrainError::Config(format!(
            "--supervised needs labels, but {} ({}) has none",
            cfg.data.path.display(),
            train.format
        )));
    }
    Ok((Arc::new(train), test.map(Arc::new)))
}

fn cache_for(ds: &Dataset) -> Option<Arc<ImageCache>> {
    // Decoded images stay in memory across epochs up to 4 GiB.
    Some(Arc::new(ImageCache::new(ds.len(), 4 << 30)))
}

/// Starts a new run.
pub fn fit(cfg: TrainConfig, out: &Path) -> Result<FitSummary> {
    cfg.validate()?;
    let (train, test) = load_data(&cfg)?; // errors before the run directory is created
    let run = RunDir::create(out, &cfg)?;
    train_run(&run, cfg, train, test, None)
}

/// Continues a run from its latest checkpoint.
pub fn resume(out: &Path) -> Result<FitSummary> {
    let run = RunDir::open(out)?;
    let cfg = run.config()?;
    let (train, test) = load_data(&cfg)?;
    let ck = run.latest_checkpoint();
    train_run(&run, cfg, train, test, ck)
}

/// Moves a batch's pixels to a `[rows, 3, S, S]` tensor.
fn batch_tensor(b: &data::Batch, device: Device) -> Tensor {
    let s = b.size as i64;
    Tensor::from_slice(&b.data).view([b.rows as i64, 3, s, s]).to_device(device)
}

fn train_run(
    run: &RunDir,
    cfg: TrainConfig,
    train: Arc<Dataset>,
    test: Option<Arc<Dataset>>,
    checkpoint: Option<std::path::PathBuf>,
) -> Result<FitSummary> {
    let threads = crate::device::set_threads(cfg.threads);
    let device = crate::device::select(cfg.device)?;
    tch::manual_seed(cfg.seed as i64);
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
    let nets = build_networks(&cfg, device)?;
    let mut opt = build_optimizer(&cfg, &nets.student)?;
    let ema = EmaPairs::new(&nets.vs_teacher, &nets.vs_student)?;
    let mut state = RunState::default();
    if let Some(ck) = &checkpoint {
        state = RunDir::read_state(ck)?;
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
        info!("resumed from {} ({} epochs done)", ck.display(), state.epochs_done);
    }
    if state.epochs_done >= cfg.optim.epochs {
        info!("run already finished its {} epochs", cfg.optim.epochs);
    }

    let pre: Preprocess = cfg.model.preprocess();
    let train_tf = Transform::train(&pre);
    let sampling_tf = Transform::sampling(&pre, cfg.sampling_size);
    let cache = cache_for(&train);
    let k_context = (cfg.stml.num_neighbors * cfg.stml.view) as i64;
    let sop = train.format == data::Format::Sop;
    let ks = cfg.ks(sop);
    let mut last_eval = None;
    let mut last_loss = f64::NAN;
    let mut ips = 0.0;

    for epoch in state.epochs_done..cfg.optim.epochs {
        let lr_scale = if cfg.optim.fix_lr { 1.0 } else { cosine_lr(1.0, epoch, cfg.optim.epochs, 0.0) };
        opt.set_lr(0, cfg.optim.lr * lr_scale)?;
        opt.set_lr(1, cfg.optim.emb_lr * lr_scale)?;

        // 1. Nearest-neighbour batches from the student's g embedding (eval mode).
        let sampled = embed(
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
        )?;
        let g = Tensor::from_slice(&sampled.vectors).view([sampled.kept.len() as i64, sampled.dim as i64]);
        let knn_local = sampler::nearest_neighbors(&g, cfg.stml.num_neighbors)?;
        let knn: Vec<Vec<usize>> = knn_local.iter().map(|row| row.iter().map(|&j| sampled.kept[j]).collect()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let mut batches = sampler::epoch_batches(&knn, cfg.optim.batch_size, cfg.stml.num_neighbors, &mut rng);
        if cfg.optim.max_steps_per_epoch > 0 {
            batches.truncate(cfg.optim.max_steps_per_epoch);
        }

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
        for batch in loader.by_ref() {
            let x = batch_tensor(&batch, device);
            let idx = Tensor::from_slice(&batch.idx).to_device(device);
            let out = nets.student.forward(&x, true)?;
            let (f, g) = (&out["f"], &out["g"]);
            let w = if cfg.stml.supervised {
                let labels =
                    batch.labels.as_ref().ok_or_else(|| TrainError::Config("--supervised needs labels".into()))?;
                similarity::label_similarity(&Tensor::from_slice(labels).to_device(device), Kind::Float)
            } else {
                let t_g = tch::no_grad(|| nets.teacher.forward(&x, false))?;
                similarity::pseudo_labels(&t_g["g"], &idx, cfg.stml.sigma, k_context)
            };
            let parts = loss::stml_loss(f, g, &w, cfg.stml.delta);
            opt.zero_grad();
            parts.total.backward();
            ema.momentum_update(cfg.stml.momentum);
            opt.step();
            let v = parts.values();
            if !v[0].is_finite() {
                return Err(TrainError::Config(format!(
                    "the loss became {} at epoch {} step {}; lower --lr / --emb-lr",
                    v[0],
                    epoch + 1,
                    n_steps + 1
                )));
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
        let secs = t0.elapsed().as_secs_f64();
        state.train_seconds += secs;
        state.skipped_images += loader.skipped() + if epoch == 0 { sampled.skipped } else { 0 };
        state.epochs_done = epoch + 1;
        ips = n_images as f64 / secs.max(1e-9);
        let mean = sums.map(|s| s / n_steps.max(1) as f64);
        last_loss = mean[0];
        info!(
            "epoch {}/{}: loss {:.4} (rc_f {:.4}, rc_g {:.4}, kl {:.4}), {:.1} img/s, lr {:.2e}",
            epoch + 1,
            cfg.optim.epochs,
            mean[0],
            mean[1],
            mean[2],
            mean[3],
            ips,
            cfg.optim.lr * lr_scale
        );
        let mut line = serde_json::json!({
            "epoch": epoch + 1, "step": state.global_step, "loss": mean[0], "rc_f": mean[1], "rc_g": mean[2],
            "kl": mean[3], "lr": cfg.optim.lr * lr_scale, "emb_lr": cfg.optim.emb_lr * lr_scale,
            "images_per_second": ips, "seconds": secs, "skipped_images": state.skipped_images,
        });

        // 3. Evaluation on the held-out classes (monitoring only: never selects an epoch).
        let last = epoch + 1 == cfg.optim.epochs;
        let due = cfg.eval_every > 0 && (epoch + 1) % cfg.eval_every == 0;
        if let (Some(test), true) = (&test, last || due) {
            let report = eval_student(&nets.student, test, &pre, &ks, threads, device)?;
            info!("epoch {}: {}", epoch + 1, report.one_line());
            line["eval"] = serde_json::to_value(&report).expect("report serialises");
            last_eval = Some(report);
        }
        run.log_metrics(&line)?;

        // 4. Checkpoint (atomic), pictures.
        if last || (cfg.checkpoint_every > 0 && (epoch + 1) % cfg.checkpoint_every == 0) {
            run.save_checkpoint(
                epoch,
                &state,
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
        }
        crate::report::curves(run)?;
    }
    if let Some(test) = &test {
        crate::report::retrieval_grid(run, &nets.student, test, &pre, threads, device)?;
    }
    let summary = FitSummary {
        run: run.root.display().to_string(),
        epochs: state.epochs_done,
        steps: state.global_step,
        train_images: train.len(),
        skipped_images: state.skipped_images,
        final_loss: last_loss,
        images_per_second: ips,
        eval: last_eval,
    };
    if summary.skipped_images > 0 {
        warn!("{} images could not be decoded and were skipped (see the warnings above)", summary.skipped_images);
    }
    run.write_file("summary.json", serde_json::to_string_pretty(&summary).expect("serialises").as_bytes())?;
    Ok(summary)
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
