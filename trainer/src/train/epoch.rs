//! One epoch of training, in its four parts: the sampler pass (nearest-neighbour batches
//! from the student's `g`), the optimisation steps, monitoring evaluation and the
//! checkpoint. Each part is timed.

use std::sync::Arc;
use std::time::Instant;

use contract::{Output, Preprocess};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;
use tch::Device;
use tracing::info;

use super::data::RunData;
use super::networks::{save_checkpoint, Networks};
use super::schedule::lr_factor;
use super::step::Stepper;
use crate::config::TrainConfig;
use crate::data::{ImageCache, Loader, LoaderOptions, Transform};
use crate::embed::{embed, EmbedOptions, Embedded};
use crate::error::{Result, TrainError};
use crate::eval::{evaluate_student, EvalReport};
use crate::optim::Optimizer;
use crate::run::{RunDir, RunState};
use crate::stml::sampler;

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

/// Below this [`spread`] the training set's embedding has collapsed (all images at one
/// point, or nearly): seen with `--lr 3e-3` on the fonts domain, where Recall@1 fell to
/// chance within an epoch.
pub const COLLAPSED_SPREAD: f64 = 1e-3;

/// How spread out a set of embeddings is, scale-free in [0, 1]: the root mean squared
/// distance to the centroid over the root mean squared norm. About 1 for centred
/// embeddings (the PCA heads start centred), 0 when every vector is the same.
///
/// # Shapes
/// - `e.vectors`: `[n, dim]` row-major
pub fn spread(e: &Embedded) -> f64 {
    let (n, d) = (e.kept.len(), e.dim);
    if n < 2 || d == 0 {
        return 1.0;
    }
    let rows = || e.vectors.chunks_exact(d);
    let mut mean = vec![0f64; d];
    for r in rows() {
        mean.iter_mut().zip(r).for_each(|(m, &x)| *m += x as f64 / n as f64);
    }
    let (mut var, mut sq) = (0f64, 0f64);
    for r in rows() {
        for (&x, m) in r.iter().zip(&mean) {
            var += (x as f64 - m).powi(2);
            sq += (x as f64).powi(2);
        }
    }
    if sq == 0.0 {
        return 0.0;
    }
    (var / sq).sqrt()
}

/// Mean loss parts and throughput of an epoch's steps.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// `[total, RC(f), RC(g), KL]`, averaged over the epoch's steps.
    pub mean: [f64; 4],
    pub steps: usize,
    pub images_per_second: f64,
    /// The learning-rate factor of the last step.
    pub lr_scale: f64,
}

/// What every epoch of a run shares.
pub struct Epochs<'a> {
    pub cfg: &'a TrainConfig,
    pub run: &'a RunDir,
    pub data: &'a RunData,
    pub nets: &'a Networks,
    pub stepper: Stepper<'a>,
    pub preprocess: Preprocess,
    pub cache: Arc<ImageCache>,
    pub threads: usize,
    pub device: Device,
}

impl Epochs<'_> {
    /// The evaluation preprocessing squashed to the sampling size, as the sampler embeds.
    pub fn sampling_transform(&self) -> Transform {
        Transform::sampling(&self.preprocess, self.cfg.sampling_size)
    }

    /// Trains epoch `epoch` (0-based), updating `state`; `sampled` is the training set's
    /// `g` embedding when it is already known (the first epoch of a PCA-initialised run).
    /// Returns the epoch's evaluation, when it was due.
    pub fn run_epoch(
        &self,
        opt: &mut Optimizer,
        state: &mut RunState,
        epoch: usize,
        sampled: Option<Embedded>,
    ) -> Result<(StepStats, Option<EvalReport>)> {
        let mut times = EpochTimes::default();
        let t0 = Instant::now();
        let sampled = match sampled {
            Some(s) => s,
            None => self.embed_g()?,
        };
        let spread = spread(&sampled);
        if spread < COLLAPSED_SPREAD {
            return Err(TrainError::Collapsed { epoch: epoch + 1, spread });
        }
        let batches = self.batches(&sampled, epoch)?;
        times.sampler = t0.elapsed().as_secs_f64();

        let t0 = Instant::now();
        let (stats, skipped) = self.steps(opt, state, epoch, batches)?;
        times.steps = t0.elapsed().as_secs_f64();
        state.train_seconds += times.steps;
        state.skipped_images += skipped + if epoch == 0 { sampled.skipped } else { 0 };
        state.epochs_done = epoch + 1;
        self.log_epoch(epoch, &stats, times.steps);

        let last = epoch + 1 == self.cfg.optim.epochs;
        let t0 = Instant::now();
        let report = self.evaluate(epoch, last)?;
        times.eval = t0.elapsed().as_secs_f64();

        // The epoch's metrics line goes into its checkpoint too, so a kill between the
        // checkpoint and the log cannot lose it (a resume restores it from there).
        let mut line = self.metrics_line(epoch, state, &stats, &times, spread, report.as_ref());
        let t0 = Instant::now();
        if last || (self.cfg.checkpoint_every > 0 && (epoch + 1).is_multiple_of(self.cfg.checkpoint_every)) {
            save_checkpoint(self.run, self.nets, opt, epoch, state, &line)?;
        }
        times.checkpoint = t0.elapsed().as_secs_f64();
        line["time"]["checkpoint"] = json!(times.checkpoint);
        info!(
            "epoch {} time: sampler {:.1} s, steps {:.1} s, evaluation {:.1} s, checkpoint {:.1} s",
            epoch + 1,
            times.sampler,
            times.steps,
            times.eval,
            times.checkpoint
        );
        self.run.log_metrics(&line)?;
        crate::run::report::curves(self.run)?;
        Ok((stats, report))
    }

    /// The training set embedded with the student's `g` (eval mode, sampling transform).
    pub fn embed_g(&self) -> Result<Embedded> {
        let opts = EmbedOptions {
            output: Output::G,
            transform: self.sampling_transform(),
            batch_size: 128,
            threads: self.threads,
            device: self.device,
            cache: Some(self.cache.clone()),
            label: Some("sampling"),
        };
        embed(&self.nets.student, &self.data.train, &opts)
    }

    /// The batches of one epoch from the training set's `g` embedding.
    fn batches(&self, sampled: &Embedded, epoch: usize) -> Result<Vec<Vec<usize>>> {
        let cfg = self.cfg;
        let g = sampled.tensor(Device::Cpu);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let mut local = sampler::nearest_neighbors(&g, cfg.stml.num_neighbors)?;
        if let Some(known) = self.data.known.as_ref().filter(|_| cfg.stml.known_positives) {
            let labels: Vec<i64> = sampled.kept.iter().map(|&i| known.labels[i]).collect();
            local = sampler::known_positives_first(&local, &labels, cfg.stml.num_neighbors, &mut rng);
        }
        let knn: Vec<Vec<usize>> = local.iter().map(|row| row.iter().map(|&j| sampled.kept[j]).collect()).collect();
        let mut batches = sampler::epoch_batches(&knn, cfg.optim.batch_size, cfg.stml.num_neighbors, &mut rng);
        if cfg.optim.max_steps_per_epoch > 0 {
            batches.truncate(cfg.optim.max_steps_per_epoch);
        }
        Ok(batches)
    }

    /// The epoch's optimisation steps over `batches` (loaded ahead on worker threads).
    /// Returns the step statistics and the number of images that failed to decode.
    fn steps(
        &self,
        opt: &mut Optimizer,
        state: &mut RunState,
        epoch: usize,
        batches: Vec<Vec<usize>>,
    ) -> Result<(StepStats, usize)> {
        let cfg = self.cfg;
        let n = batches.len();
        let options = LoaderOptions {
            views: cfg.stml.view,
            threads: self.threads,
            prefetch: 3,
            seed: cfg.seed,
            epoch: epoch as u64,
            cache: Some(self.cache.clone()),
        };
        let mut loader = Loader::new(
            self.data.train.clone(),
            batches,
            Transform::train(&self.preprocess, self.cfg.stml.crop_scale),
            options,
        )?;
        let pb = contract::progress::bar((n * cfg.optim.batch_size) as u64, &format!("epoch {}", epoch + 1), "img");
        let t0 = Instant::now();
        let (mut sums, mut steps, mut images, mut lr_scale) = ([0.0f64; 4], 0usize, 0usize, 1.0);
        for batch in loader.by_ref() {
            lr_scale = lr_factor(cfg, epoch, state.global_step, n);
            opt.set_lr(0, cfg.optim.lr * lr_scale)?;
            opt.set_lr(1, cfg.optim.emb_lr * lr_scale)?;
            let v = self.stepper.step(opt, &batch)?;
            if !v[0].is_finite() {
                return Err(TrainError::NonFiniteLoss { value: v[0], epoch: epoch + 1, step: steps + 1 });
            }
            sums.iter_mut().zip(v).for_each(|(s, x)| *s += x);
            steps += 1;
            images += batch.images;
            state.global_step += 1;
            pb.inc(batch.images as u64);
            pb.set_message(format!("loss {:.4}", v[0]));
        }
        pb.finish_and_clear();
        let seconds = t0.elapsed().as_secs_f64().max(1e-9);
        let mean = sums.map(|s| s / steps.max(1) as f64);
        Ok((StepStats { mean, steps, images_per_second: images as f64 / seconds, lr_scale }, loader.skipped()))
    }

    fn log_epoch(&self, epoch: usize, s: &StepStats, seconds: f64) {
        info!(
            "epoch {}/{}: loss {:.4} (rc_f {:.4}, rc_g {:.4}, kl {:.4}), {:.1} img/s, {:.2} s/step, lr {:.2e}",
            epoch + 1,
            self.cfg.optim.epochs,
            s.mean[0],
            s.mean[1],
            s.mean[2],
            s.mean[3],
            s.images_per_second,
            seconds / s.steps.max(1) as f64,
            self.cfg.optim.lr * s.lr_scale
        );
    }

    /// Monitoring evaluation on the evaluation images, when due (never selects an epoch).
    fn evaluate(&self, epoch: usize, last: bool) -> Result<Option<EvalReport>> {
        let due = self.cfg.eval_every > 0 && (epoch + 1).is_multiple_of(self.cfg.eval_every);
        let Some(eval) = self.data.eval.as_ref().filter(|_| last || due) else { return Ok(None) };
        let report = evaluate_student(
            &self.nets.student,
            self.cfg.model.served_head.output(),
            eval,
            &self.preprocess,
            &self.cfg.recall_ks,
            self.threads,
            self.device,
        )?;
        info!("epoch {}: {}", epoch + 1, report.one_line());
        Ok(Some(report))
    }

    /// The epoch's line of metrics.jsonl.
    fn metrics_line(
        &self,
        epoch: usize,
        state: &RunState,
        s: &StepStats,
        times: &EpochTimes,
        spread: f64,
        report: Option<&EvalReport>,
    ) -> serde_json::Value {
        let o = &self.cfg.optim;
        let mut line = json!({
            "epoch": epoch + 1, "step": state.global_step, "loss": s.mean[0], "rc_f": s.mean[1], "rc_g": s.mean[2],
            "kl": s.mean[3], "lr": o.lr * s.lr_scale, "emb_lr": o.emb_lr * s.lr_scale,
            "images_per_second": s.images_per_second, "seconds": times.steps,
            "seconds_per_step": times.steps / s.steps.max(1) as f64, "skipped_images": state.skipped_images,
            "g_spread": spread, "time": times,
        });
        if let Some(r) = report {
            line["eval"] = json!(r);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded(vectors: Vec<f32>, dim: usize) -> Embedded {
        let n = vectors.len() / dim;
        Embedded { vectors, dim, kept: (0..n).collect(), skipped: 0 }
    }

    #[test]
    fn spread_tells_a_collapsed_embedding_from_a_healthy_one() {
        // Centred points: spread 1.
        let healthy = embedded(vec![1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0], 2);
        assert!((spread(&healthy) - 1.0).abs() < 1e-9);
        // The same points far from the origin are still told apart.
        let shifted = embedded(healthy.vectors.iter().map(|x| x + 3.0).collect(), 2);
        assert!(spread(&shifted) > 0.2, "{}", spread(&shifted));
        // Every image at one point (what --lr 3e-3 did to the fonts), or nearly.
        let collapsed = embedded([0.7f32, -0.2].repeat(50), 2);
        assert!(spread(&collapsed) < 1e-9);
        let nearly: Vec<f32> = (0..100).map(|i| if i % 2 == 0 { 0.7 + 1e-6 * i as f32 } else { -0.2 }).collect();
        assert!(spread(&embedded(nearly, 2)) < COLLAPSED_SPREAD);
        assert_eq!(spread(&embedded(vec![0.0; 8], 2)), 0.0);
    }
}
