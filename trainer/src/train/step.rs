//! One STML optimisation step (docs/algorithm.md, "One step").

use contract::Output;
use tch::{Device, Kind, Tensor};

use super::networks::Networks;
use crate::config::TrainConfig;
use crate::data::labels::KnownLabels;
use crate::data::Batch;
use crate::error::Result;
use crate::optim::Optimizer;
use crate::stml::ema::EmaPairs;
use crate::stml::{loss, similarity};

/// Moves a batch's pixels to a `[rows, 3, S, S]` tensor.
pub fn batch_tensor(b: &Batch, device: Device) -> Tensor {
    let s = b.size as i64;
    Tensor::from_slice(&b.data).view([b.rows as i64, 3, s, s]).to_device(device)
}

/// Everything a step needs besides the batch.
pub struct Stepper<'a> {
    pub cfg: &'a TrainConfig,
    pub nets: &'a Networks,
    pub ema: &'a EmaPairs,
    pub known: Option<&'a KnownLabels>,
    pub device: Device,
}

impl Stepper<'_> {
    /// One STML step: student forward, pseudo labels from the teacher (or known labels),
    /// loss, backward, EMA update, optimizer step. Returns the loss parts
    /// `[total, RC(f), RC(g), KL]`.
    pub fn step(&self, opt: &mut Optimizer, batch: &Batch) -> Result<[f64; 4]> {
        let x = batch_tensor(batch, self.device);
        let out = self.nets.student.forward(&x, true)?;
        let (f, g) = (out.get(Output::F)?, out.get(Output::G)?);
        let (w, a) = self.soft_labels(&x, batch)?;
        let parts = loss::stml_loss(f, g, &w, a.as_ref(), self.cfg.stml.delta);
        opt.zero_grad();
        parts.total.backward();
        self.ema.momentum_update(self.cfg.stml.momentum);
        opt.step();
        Ok(parts.values())
    }

    /// The batch's soft labels W: the teacher's pseudo labels, with known classes set to
    /// 0/1 (all known: labels only, and the teacher is not run); and the loss's pair
    /// weights where some classes are known and `--label-weight` is not 1.
    fn soft_labels(&self, x: &Tensor, batch: &Batch) -> Result<(Tensor, Option<Tensor>)> {
        let s = &self.cfg.stml;
        let labels = self.known.map(|k| {
            let rows: Vec<i64> = batch.idx.iter().map(|&i| k.labels[i as usize]).collect();
            Tensor::from_slice(&rows).to_device(self.device)
        });
        if let Some(l) = labels.as_ref().filter(|l| l.min().int64_value(&[]) >= 0) {
            return Ok((similarity::label_similarity(l, Kind::Float), None));
        }
        let idx = Tensor::from_slice(&batch.idx).to_device(self.device);
        let t = tch::no_grad(|| self.nets.teacher.forward(x, false))?;
        let k_context = (s.num_neighbors * s.view) as i64;
        let w = similarity::pseudo_labels(t.get(Output::G)?, &idx, s.sigma, k_context);
        Ok(match &labels {
            Some(l) => {
                let a = (s.label_weight != 1.0).then(|| similarity::known_pair_weights(l, s.label_weight, w.kind()));
                (similarity::with_known_labels(&w, l), a)
            }
            None => (w, None),
        })
    }
}
