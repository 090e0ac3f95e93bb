//! A fresh run's start: the heads initialised from the principal components of the
//! pretrained pooled features (`--head-init pca`), and the pretrained baseline measured
//! beside the starting served head on the evaluation images (the epoch-0 line of metrics.jsonl).

use contract::{Distance, Output};
use models::{HEAD_F, HEAD_G};
use tch::Device;
use tracing::info;

use super::epoch::Epochs;
use super::init::{apply_head, init_head, Pca};
use crate::config::HeadInit;
use crate::data::Transform;
use crate::embed::{embed, embed_many, EmbedOptions, Embedded};
use crate::error::Result;
use crate::eval::evaluate_embeddings;
use crate::stml::ema::EmaPairs;

/// Initialises the heads (PCA) and logs the baseline. Returns the training set's `g`
/// embedding for the first epoch's batches when it was computed on the way.
pub fn start_run(e: &Epochs<'_>, ema: &EmaPairs) -> Result<Option<Embedded>> {
    let sampled = match e.cfg.head_init {
        HeadInit::Pca => Some(pca_heads(e, ema)?),
        HeadInit::Orthogonal => None,
    };
    log_baseline(e)?;
    Ok(sampled)
}

/// Both heads from the leading principal components of the pooled feature of the
/// training images; returns their `g` embedding.
fn pca_heads(e: &Epochs<'_>, ema: &EmaPairs) -> Result<Embedded> {
    let opts = EmbedOptions {
        output: Output::Pooled,
        transform: e.sampling_transform(),
        batch_size: 128,
        threads: e.threads,
        device: e.device,
        cache: Some(e.cache.clone()),
        label: Some("pca"),
    };
    let student = &e.nets.student;
    let pooled = embed(student, &e.data.train, &opts)?;
    let pca = Pca::fit(&pooled.tensor(Device::Cpu));
    init_head(student, HEAD_F, &pca)?;
    init_head(student, HEAD_G, &pca)?;
    ema.copy_into();
    let g = apply_head(student, HEAD_G, &pooled.tensor(e.device), e.cfg.model.student_norm)?;
    info!(
        "heads f and g start at the first {} / {} principal components of the pooled feature",
        e.cfg.model.dim, e.cfg.model.g_dim
    );
    pooled.with_rows(&g)
}

/// The pretrained pooled feature and the starting served head on the evaluation images.
fn log_baseline(e: &Epochs<'_>) -> Result<()> {
    let Some(eval) = &e.data.eval else { return Ok(()) };
    let opts = EmbedOptions {
        output: e.cfg.model.served_head.output(),
        transform: Transform::eval(&e.preprocess),
        batch_size: 128,
        threads: e.threads,
        device: e.device,
        cache: None,
        label: Some("eval"),
    };
    let both = embed_many(&e.nets.student, eval, &opts, &[Output::Pooled, opts.output])?;
    let ks = &e.cfg.recall_ks;
    let baseline = evaluate_embeddings(&both[0], eval, ks, Distance::Euclidean)?;
    let start = evaluate_embeddings(&both[1], eval, ks, Distance::Euclidean)?;
    info!("pretrained pooled feature: {}", baseline.one_line());
    info!("epoch 0 ({} before training): {}", e.cfg.model.served_head, start.one_line());
    e.run.log_metrics(&serde_json::json!({"epoch": 0, "step": 0, "eval": start, "baseline": baseline}))
}
