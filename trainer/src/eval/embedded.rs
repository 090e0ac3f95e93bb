//! The evaluation protocol applied to a network's embeddings of a labelled dataset: what
//! monitoring during `fit`, the fit's baseline and `trainer eval` all run.

use std::sync::Arc;

use contract::{Distance, Output, Preprocess};
use models::net::Network;
use tch::Device;

use super::{evaluate, recall_ks, EvalReport};
use crate::data::{Dataset, Format};
use crate::embed::{embed_eval, Embedded};
use crate::error::{Result, TrainError};

/// Evaluates embeddings of a labelled dataset (rows of skipped images are left out), at
/// the Recall@K cut-offs `ks` (empty: the protocol's defaults for the dataset).
pub fn evaluate_embeddings(e: &Embedded, ds: &Dataset, ks: &[usize], distance: Distance) -> Result<EvalReport> {
    let labels: Vec<u32> =
        e.kept.iter().map(|&i| ds.samples[i].label).collect::<Option<Vec<u32>>>().ok_or_else(|| {
            TrainError::Config(format!("{} has unlabelled images; evaluation needs labels", ds.root.display()))
        })?;
    let ks = recall_ks(ks, ds.format == Format::Sop);
    Ok(evaluate(&e.vectors, e.dim, &labels, &ks, distance)?)
}

/// Embeds `test` with the student's `head` output (`f` or `g`) and evaluates retrieval
/// (Euclidean, the protocol's distance).
pub fn evaluate_student(
    student: &Network,
    head: Output,
    test: &Arc<Dataset>,
    pre: &Preprocess,
    ks: &[usize],
    threads: usize,
    device: Device,
) -> Result<EvalReport> {
    let e = embed_eval(student, test, pre, head, threads, device, Some("eval"))?;
    evaluate_embeddings(&e, test, ks, Distance::Euclidean)
}
