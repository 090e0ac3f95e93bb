//! The resolved training configuration: defaults (the paper's), then a TOML file, then
//! command-line flags. Saved as `config.toml` in every run directory; evaluation, export
//! and `--resume` rebuild exactly what was trained from it.

use std::path::{Path, PathBuf};

use models::{Arch, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::Algorithm;

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// CUDA when libtorch sees a GPU, otherwise CPU.
    Auto,
    Cpu,
    Cuda,
}

/// How the heads `f` and `g` start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HeadInit {
    /// Random orthogonal weights, zero bias: the paper's choice. `f` starts below the
    /// pretrained feature and spends the first epochs catching up.
    Orthogonal,
    /// Principal components of the pretrained pooled features of the training images
    /// (bias centres them): `f` and `g` start where the pretrained feature is.
    Pca,
}

/// Where the training images come from, and what is evaluated during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A folder of images, or a dataset layout (see `format`).
    pub path: PathBuf,
    /// auto | folder | labeled | cub | cars | sop | idx
    pub format: crate::data::Format,
    /// Which split of `path` to train on; `None`: the layout's official training split
    /// (CUB, Cars, SOP, IDX), all of it otherwise.
    #[serde(default)]
    pub split: Option<crate::data::Split>,
    /// Largest number of training images to use (a seeded random subset); 0 = all.
    #[serde(default)]
    pub limit: usize,
    /// Labelled data evaluated during training (monitoring only): all its classes, or the
    /// official test split of a layout that has one.
    #[serde(default)]
    pub eval_data: Option<PathBuf>,
    /// Fraction of the training classes held out for evaluation instead (0 = none).
    #[serde(default)]
    pub holdout_classes: f64,
    /// Largest number of evaluation images (seeded subset); 0 = all.
    #[serde(default)]
    pub eval_limit: usize,
    /// Semi-supervised: a file of `path<TAB or ,>class` lines for some training images.
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// Semi-supervised from the layout's own labels: keep them for this seeded fraction of
    /// the training images (0 = none), e.g. to measure the semi-supervised mode.
    #[serde(default)]
    pub label_fraction: f64,
}

/// STML's hyper-parameters (docs/algorithm.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StmlConfig {
    /// Bandwidth of the pairwise similarity exp(-d^2 / sigma).
    pub sigma: f64,
    /// Margin of the relaxed contrastive loss.
    pub delta: f64,
    /// Neighbours per query in batch construction (K); k = K * view in the contextual similarity.
    pub num_neighbors: usize,
    /// Augmented views per image.
    pub view: usize,
    /// EMA momentum of the teacher.
    pub momentum: f64,
    /// Smallest area fraction of a training view's random crop (RandomResizedCrop's
    /// `scale = (crop_scale, 1)`).
    #[serde(default = "paper_crop_scale")]
    pub crop_scale: f64,
    /// Use the true labels as W instead of STML's pseudo labels (supervised upper bound).
    #[serde(default)]
    pub supervised: bool,
    /// With known classes (semi-supervised or supervised): an image of known class is
    /// followed in its batch by others of its class rather than only by its nearest
    /// neighbours (`sampler::known_positives_first`). A config written before the key
    /// existed reads as `false`, what those runs did.
    #[serde(default)]
    pub known_positives: bool,
    /// With known classes (semi-supervised): the weight in the relaxed contrastive loss of
    /// a pair whose two classes are known, against 1 for a pair the teacher labels
    /// (`loss::weighted_relaxed_contrastive`); 1 = the paper.
    #[serde(default = "paper_label_weight")]
    pub label_weight: f64,
}

/// The paper's weight of a pair of two labelled images: every pair alike.
fn paper_label_weight() -> f64 {
    1.0
}

/// Optimisation schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub optimizer: Algorithm,
    pub lr: f64,
    /// Learning rate of the embedding heads' parameter group.
    pub emb_lr: f64,
    pub weight_decay: f64,
    pub epochs: usize,
    /// Images per batch (each augmented `view` times).
    pub batch_size: usize,
    /// Batch norm in eval mode with frozen affine parameters.
    pub bn_freeze: bool,
    /// Keep the learning rate constant (no cosine annealing).
    pub fix_lr: bool,
    /// Stop each epoch after this many steps (0 = a full epoch of floor(N / B) batches).
    #[serde(default)]
    pub max_steps_per_epoch: usize,
    /// Linear learning-rate warm-up over this many epochs' worth of steps (0 = none).
    #[serde(default)]
    pub warmup_epochs: f64,
}

/// The whole configuration of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    /// Backbone weights (safetensors). `None`: the pretrained file set-up installed for
    /// the architecture, or random initialisation where there is none.
    pub weights: Option<PathBuf>,
    pub stml: StmlConfig,
    pub optim: OptimConfig,
    /// How the heads start.
    #[serde(default = "paper_head_init")]
    pub head_init: HeadInit,
    /// Side of the squashed sampling-transform images used for batch construction.
    pub sampling_size: u32,
    pub seed: u64,
    /// Threads for libtorch and for image decoding (0 = all cores).
    pub threads: usize,
    pub device: DeviceKind,
    /// Evaluate on the test split every this many epochs, when the data has labels (0 = only at the end).
    pub eval_every: usize,
    /// Recall@K values to report; empty = the protocol's defaults (1,2,4,8; SOP 1,10,100,1000).
    #[serde(default)]
    pub recall_ks: Vec<usize>,
    /// Write a checkpoint every this many epochs (the last epoch always).
    pub checkpoint_every: usize,
}

fn paper_crop_scale() -> f64 {
    PAPER_CROP_SCALE
}

/// The paper's smallest crop area of a training view.
pub const PAPER_CROP_SCALE: f64 = 0.16;

/// The default preset's smallest crop area of a training view: stronger crops than the
/// paper's, as torchvision's RandomResizedCrop default. Chosen on the development domains
/// (BENCHMARKS.md): 0.08 gains over 0.16 on both, 0.4 loses on Fashion-MNIST.
pub const DEFAULT_CROP_SCALE: f64 = 0.08;

/// The default preset's served head: the wide `g` (the paper serves `f`). Chosen on the
/// development domains (BENCHMARKS.md): on the same six runs `g` is 0.36-0.75 R@1 above `f`,
/// and neither a wider `f` (512) nor `g` projected to 128 or 256 dimensions keeps that.
pub const DEFAULT_SERVED_HEAD: models::Head = models::Head::G;

fn paper_head_init() -> HeadInit {
    HeadInit::Orthogonal
}

/// The default preset's learning rate, backbone and heads (the paper: 1e-4). Chosen on
/// the development domains (BENCHMARKS.md): 1e-4, 3e-4, 5e-4 and 1e-3 all gain, more with
/// each step, and 3e-3 collapses the fonts embedding; 5e-4 keeps a margin from that.
pub const DEFAULT_LR: f64 = 5e-4;

/// The default preset's weight of a pair of two labelled images in the loss (the paper: 1,
/// every pair alike). Chosen on the development domains with a tenth labelled
/// (BENCHMARKS.md, "Semi-supervised: a weight on the labelled pairs"): on the fonts, medians
/// of three seeds over the pretrained feature, 1 gives +8.7 R@1, 4 +9.5, 16 +10.2 (no labels
/// +9.4); on Fashion-MNIST, whose five labelled classes teach little about the five
/// searched, 16 ends under the pretrained feature, as training on all labels does there.
pub const DEFAULT_LABEL_WEIGHT: f64 = 16.0;

/// A named set of defaults that flags and a config file then override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Preset {
    /// The product's defaults: the paper's method, started where the pretrained feature
    /// is (PCA heads), batch norm frozen, a higher learning rate, stronger crops
    /// (docs/algorithm.md).
    #[default]
    Default,
    /// The paper's settings exactly (orthogonal heads, batch norm trained, no warm-up).
    Paper,
}

impl TrainConfig {
    /// The defaults of a preset, training on `data`.
    pub fn preset(preset: Preset, data: PathBuf) -> Self {
        let mut c = Self::paper(data);
        if preset == Preset::Default {
            c.head_init = HeadInit::Pca;
            c.optim.bn_freeze = true;
            c.optim.lr = DEFAULT_LR;
            c.optim.emb_lr = DEFAULT_LR;
            c.stml.crop_scale = DEFAULT_CROP_SCALE;
            c.model.served_head = DEFAULT_SERVED_HEAD;
            c.stml.known_positives = true;
            c.stml.label_weight = DEFAULT_LABEL_WEIGHT;
        }
        c
    }

    /// The product's defaults (MobileNetV2, `f` 128-d, `g` 1024-d and served).
    pub fn defaults(data: PathBuf) -> Self {
        Self::preset(Preset::Default, data)
    }

    /// The paper's defaults with the product's default backbone (MobileNetV2, d = 128).
    pub fn paper(data: PathBuf) -> Self {
        let model = ModelConfig::new(Arch::MobilenetV2, 128);
        Self {
            data: DataConfig {
                path: data,
                format: crate::data::Format::Auto,
                split: None,
                limit: 0,
                eval_data: None,
                holdout_classes: 0.0,
                eval_limit: 0,
                labels: None,
                label_fraction: 0.0,
            },
            head_init: HeadInit::Orthogonal,
            sampling_size: 256,
            model,
            weights: None,
            stml: StmlConfig {
                sigma: 3.0,
                delta: 1.0,
                num_neighbors: 5,
                view: 2,
                momentum: 0.999,
                crop_scale: PAPER_CROP_SCALE,
                supervised: false,
                known_positives: false,
                label_weight: paper_label_weight(),
            },
            optim: OptimConfig {
                optimizer: Algorithm::AdamP,
                lr: 1e-4,
                emb_lr: 1e-4,
                weight_decay: 1e-2,
                epochs: 90,
                batch_size: 120,
                bn_freeze: false,
                fix_lr: false,
                max_steps_per_epoch: 0,
                warmup_epochs: 0.0,
            },
            seed: 0,
            threads: 0,
            device: DeviceKind::Auto,
            eval_every: 1,
            recall_ks: Vec::new(),
            checkpoint_every: 1,
        }
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::ConfigFile { path: path.into(), reason: e.to_string() })?;
        toml::from_str(&text).map_err(|e| TrainError::ConfigFile {
            path: path.into(),
            reason: format!("{e}\nSee `trainer fit --help` for the options, or a run directory's config.toml for a complete example"),
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Checks values that would only fail later, mid-run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        let s = &self.stml;
        let o = &self.optim;
        if s.view < 1 {
            return bad("--view must be at least 1".into());
        }
        if s.num_neighbors < 1 {
            return bad("--num-neighbors must be at least 1".into());
        }
        if o.batch_size < s.num_neighbors || !o.batch_size.is_multiple_of(s.num_neighbors) {
            return bad(format!(
                "--batch-size {} must be a multiple of --num-neighbors {} (a batch is B/K queries, each with its K neighbours)",
                o.batch_size, s.num_neighbors
            ));
        }
        if s.label_weight <= 0.0 || !s.label_weight.is_finite() {
            return bad(format!("--label-weight must be positive, got {}", s.label_weight));
        }
        if s.sigma <= 0.0 || !s.sigma.is_finite() {
            return bad(format!("--sigma must be positive, got {}", s.sigma));
        }
        if !(s.crop_scale > 0.0 && s.crop_scale <= 1.0) {
            return bad(format!("--crop-scale must be in (0, 1], got {}", s.crop_scale));
        }
        if !(0.0..=1.0).contains(&s.momentum) {
            return bad(format!("--momentum must be in [0, 1], got {}", s.momentum));
        }
        if o.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if o.lr <= 0.0 || o.emb_lr <= 0.0 {
            return bad("--lr and --emb-lr must be positive".into());
        }
        if self.model.dim == 0 || self.model.g_dim == 0 {
            return bad("--dim and --g-dim must be positive".into());
        }
        if self.model.image_size < 32 {
            return bad(format!("--image-size {} is too small; use at least 32", self.model.image_size));
        }
        if let Err(reason) = self.model.preprocess().check() {
            return bad(format!("--image-size {} makes an unusable input: {reason}", self.model.image_size));
        }
        if !(0.0..1.0).contains(&self.data.holdout_classes) {
            return bad(format!("--holdout-classes must be in [0, 1), got {}", self.data.holdout_classes));
        }
        if !(0.0..=1.0).contains(&self.data.label_fraction) {
            return bad(format!("--label-fraction must be in [0, 1], got {}", self.data.label_fraction));
        }
        if self.data.label_fraction > 0.0 && self.data.labels.is_some() {
            return bad("pass either --labels FILE or --label-fraction, not both".into());
        }
        if self.data.holdout_classes > 0.0 && self.data.eval_data.is_some() {
            return bad("pass either --eval-data DIR or --holdout-classes, not both".into());
        }
        if !(o.warmup_epochs >= 0.0 && o.warmup_epochs.is_finite()) {
            return bad(format!("--warmup-epochs must be 0 or more, got {}", o.warmup_epochs));
        }
        if self.sampling_size < self.model.image_size {
            return bad(format!(
                "sampling size {} is smaller than --image-size {}",
                self.sampling_size, self.model.image_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip() {
        let c = TrainConfig::defaults("data".into());
        let back: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(c, back);
        c.validate().unwrap();
    }

    #[test]
    fn batch_must_hold_whole_neighbourhoods() {
        let mut c = TrainConfig::defaults("data".into());
        c.optim.batch_size = 121;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--batch-size 121"), "{e}");
    }

    /// The defaults as a config file written before the setting `key` existed.
    fn written_without(key: &str) -> TrainConfig {
        let text = TrainConfig::defaults("d".into()).to_toml();
        let old: String = text.lines().filter(|l| !l.starts_with(key)).map(|l| format!("{l}\n")).collect();
        assert_ne!(old, text, "the line to drop is there");
        toml::from_str(&old).unwrap()
    }

    #[test]
    fn a_config_written_before_crop_scale_existed_reads_as_the_paper_crop() {
        assert_eq!(written_without("crop_scale").stml.crop_scale, PAPER_CROP_SCALE);
    }

    #[test]
    fn a_config_written_before_known_positives_existed_batches_by_neighbours() {
        assert!(TrainConfig::defaults("d".into()).stml.known_positives);
        assert!(!written_without("known_positives").stml.known_positives);
    }

    #[test]
    fn a_config_written_before_label_weight_existed_weighs_every_pair_alike() {
        assert_eq!(TrainConfig::defaults("d".into()).stml.label_weight, DEFAULT_LABEL_WEIGHT);
        assert_eq!(written_without("label_weight").stml.label_weight, 1.0);
        let mut c = TrainConfig::defaults("d".into());
        c.stml.label_weight = 0.0;
        assert!(c.validate().unwrap_err().to_string().contains("--label-weight"));
    }

    #[test]
    fn a_config_written_before_served_head_existed_serves_f() {
        assert_eq!(TrainConfig::defaults("d".into()).model.served_head, models::Head::G);
        assert_eq!(written_without("served_head").model.served_head, models::Head::F);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let mut text = TrainConfig::defaults("d".into()).to_toml();
        text.push_str("\nsigmaa = 3\n");
        assert!(toml::from_str::<TrainConfig>(&text).is_err());
        // In a nested table too: a misspelt `served_head` must not quietly serve `f`.
        let text = TrainConfig::defaults("d".into()).to_toml().replace("served_head =", "served-head =");
        let e = toml::from_str::<TrainConfig>(&text).unwrap_err().to_string();
        assert!(e.contains("served-head"), "{e}");
    }
}
