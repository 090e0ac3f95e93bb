//! `trainer fit`: a new run, or `--resume` of an existing one, trained to its epochs, with
//! a summary that compares the result with the pretrained feature it started from.

use std::path::Path;

use serde::Serialize;
use tracing::{info, warn};

use crate::config::TrainConfig;
use crate::error::Result;
use crate::eval::EvalReport;
use crate::run::RunDir;
use crate::train::{self, load_data, resume::resumed_config, RunData};

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

/// Starts a new run in `out`.
pub fn fit(cfg: TrainConfig, out: &Path) -> Result<FitSummary> {
    cfg.validate()?;
    let data = load_data(&cfg)?; // errors before the run directory is created
    let run = RunDir::create(out, &cfg)?;
    train_and_summarise(&run, &cfg, &data, None)
}

/// Continues the run in `out` from its latest checkpoint, with `changed` settings (a
/// config built from the run's own plus flags): more epochs, or how it evaluates and where
/// it runs, are applied; anything that would make it another run is refused
/// ([`train::resume::RESUMABLE_KEYS`]).
pub fn resume(out: &Path, changed: Option<TrainConfig>) -> Result<FitSummary> {
    let run = RunDir::open(out)?;
    let (cfg, checkpoint) = resumed_config(&run, changed)?;
    let data = load_data(&cfg)?;
    train_and_summarise(&run, &cfg, &data, checkpoint)
}

fn train_and_summarise(
    run: &RunDir,
    cfg: &TrainConfig,
    data: &RunData,
    checkpoint: Option<std::path::PathBuf>,
) -> Result<FitSummary> {
    let t = train::train_run(run, cfg, data, checkpoint)?;
    let baseline = run.metrics().into_iter().find_map(|m| serde_json::from_value(m.get("baseline")?.clone()).ok());
    let summary = FitSummary {
        run: run.root.display().to_string(),
        epochs: t.state.epochs_done,
        steps: t.state.global_step,
        train_images: data.train.len(),
        skipped_images: t.state.skipped_images,
        final_loss: t.last_loss,
        images_per_second: t.images_per_second,
        eval: t.eval,
        baseline,
    };
    if summary.skipped_images > 0 {
        warn!("{} images could not be decoded and were skipped (see the warnings above)", summary.skipped_images);
    }
    if let Some(line) = summary.comparison() {
        info!("{line}");
    }
    let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
    run.write_file("summary.json", json.as_bytes())?;
    Ok(summary)
}
