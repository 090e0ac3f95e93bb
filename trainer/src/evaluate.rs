//! `trainer eval`: retrieval figures of a run's student `f` embedding, or of a pretrained
//! backbone's pooled feature (the baseline every run is compared with), on the test split
//! of labelled data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::net::Network;
use models::{Arch, ModelConfig};
use tch::nn::VarStore;

pub use crate::eval::EvalReport;

use crate::config::DeviceKind;
use crate::data::{self, Dataset, Split};
use crate::embed::{embed_eval, Embedded};
use crate::error::{Result, TrainError};
use crate::eval::Distance;
use crate::run::{RunDir, STUDENT};

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
}

impl EvalReport {
    /// A small table for people.
    pub fn table(&self) -> String {
        let mut s = format!("{} queries, {} classes\n", self.queries, self.classes);
        for (k, r) in &self.recall {
            s.push_str(&format!("Recall@{k:<5} {:6.2} %\n", 100.0 * r));
        }
        s.push_str(&format!("NMI          {:6.2} %\nMAP@R        {:6.2} %", 100.0 * self.nmi, 100.0 * self.map_at_r));
        s
    }

    /// One log line.
    pub fn one_line(&self) -> String {
        let r: Vec<String> = self.recall.iter().map(|(k, r)| format!("R@{k} {:.2}", 100.0 * r)).collect();
        format!("{}, NMI {:.2}, MAP@R {:.2}", r.join(", "), 100.0 * self.nmi, 100.0 * self.map_at_r)
    }
}

/// Evaluates embeddings of a labelled dataset (rows of skipped images are left out).
pub fn evaluate_embeddings(e: &Embedded, ds: &Dataset, ks: &[usize], cosine: bool) -> Result<EvalReport> {
    let labels: Vec<u32> =
        e.kept.iter().map(|&i| ds.samples[i].label).collect::<Option<Vec<u32>>>().ok_or_else(|| {
            TrainError::Config(format!("{} has unlabelled images; evaluation needs labels", ds.root.display()))
        })?;
    let distance = if cosine { Distance::Cosine } else { Distance::Euclidean };
    Ok(crate::eval::evaluate(&e.vectors, e.dim, &labels, ks, distance)?)
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
    let ds = crate::train::limit_dataset(ds, opts.limit, seed);
    Ok(Arc::new(ds))
}

fn ks_for(opts: &EvalOptions, ds: &Dataset) -> Vec<usize> {
    crate::eval::recall_ks(&opts.ks, ds.format == data::Format::Sop)
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
    let e = embed_eval(&net, &ds, &cfg.model.preprocess(), "f", threads, device, Some("eval"))?;
    evaluate_embeddings(&e, &ds, &ks_for(opts, &ds), opts.cosine)
}

/// Evaluates a backbone's pooled (GAP + GMP) feature before any training.
pub fn eval_backbone(arch: Arch, weights: Option<&Path>, opts: &EvalOptions) -> Result<EvalReport> {
    let threads = crate::device::set_threads(opts.threads);
    let device = crate::device::select(opts.device)?;
    let vs = VarStore::new(device);
    let net = Network::new(&vs.root(), ModelConfig::pooled_graph(arch));
    let w = weights.map(Path::to_path_buf).or_else(|| crate::train::default_weights(arch)).ok_or_else(|| {
        TrainError::Config(format!("{arch} has no pretrained weights installed here; pass --weights FILE"))
    })?;
    net.load_file(&w, arch.name(), arch.classifier_prefixes(), &|_| false)?;
    let pre = match opts.image_size {
        Some(s) => arch.preprocess().with_size(s),
        None => arch.preprocess(),
    };
    let ds = test_split(opts, 1)?; // the subset a run with seed 0 evaluates on
    let e = embed_eval(&net, &ds, &pre, "embedding", threads, device, Some("eval"))?;
    evaluate_embeddings(&e, &ds, &ks_for(opts, &ds), opts.cosine)
}
