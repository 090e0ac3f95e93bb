//! `trainer eval`: retrieval figures of a run's served embedding (or its other head), or of a pretrained
//! backbone's pooled feature (the baseline every run is compared with), on the test split
//! of labelled data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use contract::Output;
use models::net::Network;
use models::{Arch, Head, ModelConfig};
use tch::nn::VarStore;

pub use crate::eval::EvalReport;

use crate::config::DeviceKind;
use crate::data::{self, Dataset, Split};
use crate::embed::embed_eval;
use crate::error::{Result, TrainError};
use crate::eval::{evaluate_embeddings, Distance};
use crate::run::{RunDir, STUDENT};
use crate::train::default_weights;

/// Options shared by both kinds of evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub data: PathBuf,
    pub format: data::Format,
    /// `None`: the layout's official test split, or all of a folder without one.
    pub split: Option<Split>,
    pub limit: usize,
    pub ks: Vec<usize>,
    pub cosine: bool,
    pub threads: usize,
    pub device: DeviceKind,
    /// Input size for a backbone evaluation (default: the architecture's).
    pub image_size: Option<u32>,
    /// The student head a run is evaluated with (default: the one it serves).
    pub head: Option<Head>,
}

fn test_split(opts: &EvalOptions, seed: u64) -> Result<Arc<Dataset>> {
    let format = data::resolve_format(&opts.data, opts.format)?;
    let split = opts.split.unwrap_or(format.default_split(data::Purpose::Eval));
    let ds = data::load(&opts.data, format, split)?;
    if ds.labels().is_none() {
        return Err(TrainError::Config(format!(
            "{} ({}) has no labels; evaluation needs a labelled layout (labeled folder, cub, cars, sop, idx)",
            opts.data.display(),
            ds.format
        )));
    }
    Ok(Arc::new(ds.random_subset(opts.limit, seed)))
}

impl EvalOptions {
    fn distance(&self) -> Distance {
        if self.cosine {
            Distance::Cosine
        } else {
            Distance::Euclidean
        }
    }
}

/// Evaluates the latest checkpoint of a run.
pub fn eval_run(run: &Path, opts: &EvalOptions) -> Result<EvalReport> {
    let run = RunDir::open(run)?;
    let cfg = run.config()?;
    let ck = run
        .latest_checkpoint()
        .ok_or_else(|| TrainError::Run { path: run.root.clone(), reason: "has no checkpoint yet".into() })?;
    let threads = crate::device::set_threads(opts.threads);
    let device = crate::device::select(opts.device)?;
    let vs = VarStore::new(device);
    let net = Network::new(&vs.root(), cfg.model.student_graph());
    net.load_file(&ck.join(STUDENT), cfg.model.arch.name(), &[], &|_| false)?;
    let ds = test_split(opts, cfg.seed + 1)?;
    let head = opts.head.unwrap_or(cfg.model.served_head);
    let e = embed_eval(&net, &ds, &cfg.model.preprocess(), head.output(), threads, device, Some("eval"))?;
    evaluate_embeddings(&e, &ds, &opts.ks, opts.distance())
}

/// Evaluates a backbone's pooled (GAP + GMP) feature before any training.
pub fn eval_backbone(arch: Arch, weights: Option<&Path>, opts: &EvalOptions) -> Result<EvalReport> {
    let threads = crate::device::set_threads(opts.threads);
    let device = crate::device::select(opts.device)?;
    let vs = VarStore::new(device);
    let net = Network::new(&vs.root(), ModelConfig::pooled_graph(arch));
    let w = weights.map(Path::to_path_buf).or_else(|| default_weights(arch)).ok_or_else(|| {
        TrainError::Config(format!("{arch} has no pretrained weights installed here; pass --weights FILE"))
    })?;
    net.load_file(&w, arch.name(), arch.classifier_prefixes(), &|_| false)?;
    let pre = match opts.image_size {
        Some(s) => arch.preprocess().with_size(s),
        None => arch.preprocess(),
    };
    let ds = test_split(opts, 1)?; // the subset a run with seed 0 evaluates on
    let e = embed_eval(&net, &ds, &pre, Output::Embedding, threads, device, Some("eval"))?;
    evaluate_embeddings(&e, &ds, &opts.ks, opts.distance())
}
