//! The STML training loop (docs/algorithm.md): per epoch, nearest-neighbour batches from
//! the student's `g` embedding; per step, two views, student and teacher forward, pseudo
//! labels from the teacher, the STML loss, backward, EMA update of the teacher, optimiser
//! step. Checkpoints, metrics and pictures go to the run directory.

pub mod data;
pub mod epoch;
pub mod init;
pub mod networks;
pub mod resume;
pub mod schedule;
pub mod start;
pub mod step;

use std::path::PathBuf;

use tracing::info;

pub use self::data::{load_data, RunData};
pub use self::epoch::{EpochTimes, Epochs, StepStats};
pub use self::networks::{build_networks, build_optimizer, default_weights, Networks};
use crate::config::TrainConfig;
use crate::error::Result;
use crate::eval::EvalReport;
use crate::run::{RunDir, RunState};
use crate::stml::ema::EmaPairs;

/// Where a run stands after [`train_run`].
#[derive(Debug, Clone)]
pub struct Trained {
    pub state: RunState,
    /// Mean loss of the last epoch trained in this call (NaN when none was).
    pub last_loss: f64,
    pub images_per_second: f64,
    /// The last evaluation of this call.
    pub eval: Option<EvalReport>,
}

/// Trains `run` from `checkpoint` (a fresh start when `None`) to `cfg.optim.epochs`.
pub fn train_run(run: &RunDir, cfg: &TrainConfig, data: &RunData, checkpoint: Option<PathBuf>) -> Result<Trained> {
    let threads = crate::device::set_threads(cfg.threads);
    let device = crate::device::select(cfg.device)?;
    tch::manual_seed(cfg.seed as i64);
    log_plan(cfg, data, device);
    let nets = build_networks(cfg, device)?;
    let mut opt = build_optimizer(cfg, &nets.student)?;
    let ema = EmaPairs::new(&nets.vs_teacher, &nets.vs_student)?;
    let mut state = RunState::default();
    if let Some(ck) = &checkpoint {
        state = RunDir::read_state(ck)?;
        networks::load_checkpoint(&nets, &mut opt, ck, cfg, device)?;
        info!("resumed from {} ({} epochs done)", ck.display(), state.epochs_done);
        run.restore_metrics(ck)?;
    }
    if state.epochs_done >= cfg.optim.epochs {
        info!("run already finished its {} epochs", cfg.optim.epochs);
    }
    let epochs = Epochs {
        cfg,
        run,
        data,
        nets: &nets,
        stepper: step::Stepper { cfg, nets: &nets, ema: &ema, known: data.known.as_ref(), device },
        preprocess: cfg.model.preprocess(),
        cache: data::image_cache(&data.train),
        threads,
        device,
    };
    let mut sampled = if checkpoint.is_none() { start::start_run(&epochs, &ema)? } else { None };
    let mut trained = Trained { state, last_loss: f64::NAN, images_per_second: 0.0, eval: None };
    for epoch in trained.state.epochs_done..cfg.optim.epochs {
        let (stats, report) = epochs.run_epoch(&mut opt, &mut trained.state, epoch, sampled.take())?;
        trained.last_loss = stats.mean[0];
        trained.images_per_second = stats.images_per_second;
        trained.eval = report.or(trained.eval);
    }
    if let Some(eval) = &data.eval {
        let head = cfg.model.served_head.output();
        crate::run::report::retrieval_grid(run, &nets.student, head, eval, &epochs.preprocess, threads, device)?;
    }
    Ok(trained)
}

/// What the run will train on and how it is evaluated, in the log.
fn log_plan(cfg: &TrainConfig, data: &RunData, device: tch::Device) {
    let train = &data.train;
    info!(
        "training {} (f {}-d, g {}-d, {} served) on {} images of {} ({}), {}",
        cfg.model.arch,
        cfg.model.dim,
        cfg.model.g_dim,
        cfg.model.served_head,
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
    if let Some(k) = data.known.as_ref().filter(|_| !cfg.stml.supervised) {
        info!("semi-supervised: {} of {} training images have a known class", k.count, train.len());
    }
}
