//! What a run trains and evaluates on: the training images, the evaluation images (given,
//! held out, or the layout's official test split) and any known labels.

use std::sync::Arc;

use crate::config::TrainConfig;
use crate::data::labels::KnownLabels;
use crate::data::{self, Dataset, Format, ImageCache, Purpose, Split};
use crate::error::{Result, TrainError};

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

/// The evaluation images of a run and where they come from, taken out of `train` when
/// classes are held out.
fn eval_data(
    cfg: &TrainConfig,
    format: Format,
    split: Split,
    train: &mut Dataset,
) -> Result<Option<(Dataset, String)>> {
    let d = &cfg.data;
    if let Some(path) = &d.eval_data {
        let ef = data::resolve_format(path, Format::Auto)?;
        let es = ef.default_split(Purpose::Eval);
        let e = data::load(path, ef, es)?;
        need_labels(&e, "--eval-data")?;
        return Ok(Some((e, format!("{} ({ef}, split {es}) from --eval-data", path.display()))));
    }
    if d.holdout_classes > 0.0 {
        let (kept, held) = train.hold_out_classes(d.holdout_classes, HOLDOUT_SEED)?;
        let source = format!(
            "{} of the {} classes of the training data, held out by --holdout-classes {}",
            held.num_labels_present(),
            train.num_labels_present(),
            d.holdout_classes
        );
        *train = kept;
        return Ok(Some((held, source)));
    }
    if format.has_official_split() && split == Split::Train {
        let t = data::load(&d.path, format, Split::Test)?;
        if t.labels().is_some() {
            return Ok(Some((t, format!("the official test split of {} ({format})", d.path.display()))));
        }
    }
    Ok(None)
}

/// The known classes of training images: all (`--supervised`), a file's, a seeded
/// fraction, or none.
fn known_labels(cfg: &TrainConfig, train: &Dataset) -> Result<Option<KnownLabels>> {
    let d = &cfg.data;
    if cfg.stml.supervised {
        let all = KnownLabels::all(train).ok_or_else(|| {
            TrainError::Config(format!(
                "--supervised needs labels, but {} ({}) has none",
                d.path.display(),
                train.format
            ))
        })?;
        return Ok(Some(all));
    }
    if let Some(file) = &d.labels {
        return Ok(Some(KnownLabels::from_file(file, train)?));
    }
    if d.label_fraction > 0.0 {
        return Ok(Some(KnownLabels::fraction(train, d.label_fraction, cfg.seed)?));
    }
    Ok(None)
}

/// Reads the training images, the evaluation images and any known labels of a run.
pub fn load_data(cfg: &TrainConfig) -> Result<RunData> {
    let d = &cfg.data;
    let format = data::resolve_format(&d.path, d.format)?;
    let split = d.split.unwrap_or(format.default_split(Purpose::Train));
    let mut train = data::load(&d.path, format, split)?;
    let eval = eval_data(cfg, format, split, &mut train)?;
    let train = train.random_subset(d.limit, cfg.seed);
    if train.len() < cfg.optim.batch_size {
        return Err(TrainError::Config(format!(
            "{} has {} training images, fewer than --batch-size {}; lower --batch-size (a multiple of --num-neighbors)",
            d.path.display(),
            train.len(),
            cfg.optim.batch_size
        )));
    }
    let known = known_labels(cfg, &train)?;
    let (eval, eval_source) = match eval {
        Some((e, source)) => (Some(Arc::new(e.random_subset(d.eval_limit, cfg.seed + 1))), source),
        None => (None, String::new()),
    };
    Ok(RunData { train: Arc::new(train), eval, eval_source, known })
}

/// Decoded training images stay in memory across epochs up to 4 GiB.
pub fn image_cache(ds: &Dataset) -> Arc<ImageCache> {
    Arc::new(ImageCache::new(ds.len(), 4 << 30))
}
