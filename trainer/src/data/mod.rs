//! Datasets and image transforms: reading the supported layouts into a [`Dataset`],
//! decoding images, augmenting them, and a threaded [`Loader`] that keeps a training step fed.

mod decode;
mod idx;
pub mod labels;
mod layouts;
mod loader;
pub mod mat;
mod transform;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use decode::{decode, ImageCache};
pub use idx::IdxImages;
pub use loader::{sequential_batches, Batch, Loader, LoaderOptions};
pub use transform::{sample_rng, CropBox, RandomResizedCrop, Transform, HFLIP_P};

/// Everything that can go wrong reading a dataset or one of its images.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset path {path} does not exist; pass --data an existing folder of images or a dataset root")]
    Missing { path: PathBuf },
    #[error("cannot read {path}: {source}; check that it exists and is readable")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no images found in {path} (format {format}, split {split}); check --data, --format and --split")]
    Empty { path: PathBuf, format: Format, split: Split },
    #[error("{path} is not a valid {format} dataset: {reason}")]
    Layout { path: PathBuf, format: Format, reason: String },
    #[error("{path}, line {line}: {reason}; fix or regenerate this index file")]
    Malformed { path: PathBuf, line: usize, reason: String },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("cannot decode image {name}: {reason}")]
    Decode { name: String, reason: String },
    #[error("batch refers to image {index} but the dataset has {len} images; build batches from this dataset")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("cannot start {threads} data loading threads: {reason}; try a smaller --threads")]
    Threads { threads: usize, reason: String },
}

/// Result alias for this module.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl From<contract::ContractError> for DataError {
    fn from(e: contract::ContractError) -> Self {
        use contract::ContractError as C;
        match e {
            C::Io { path, source } => DataError::Io { path, source },
            C::NotAnImage { name, reason } => DataError::Decode { name, reason },
            C::ImageTooLarge { ref name, .. } => DataError::Decode { name: name.clone(), reason: e.to_string() },
            C::Manifest { reason } => DataError::BadFile { path: PathBuf::new(), reason },
            C::Stored { path, reason } => DataError::BadFile { path, reason },
        }
    }
}

/// On-disk dataset layouts. `Auto` detects one of the others from the folder's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Detect: images.txt + image_class_labels.txt -> cub; cars_annos.mat -> cars;
    /// Ebay_train.txt -> sop; *idx3-ubyte[.gz] -> idx; images.redb or ACTIVE, or a .tar
    /// file -> index; no images at the top level but
    /// at least two subfolders with images -> labeled; otherwise folder.
    #[default]
    Auto,
    /// Any folder of images, searched recursively; no labels.
    Folder,
    /// One subfolder per class (searched recursively); the subfolder name is the class.
    Labeled,
    /// CUB-200-2011: images.txt, image_class_labels.txt, images/.
    Cub,
    /// Cars-196: cars_annos.mat and the car_ims/ it points to.
    Cars,
    /// Stanford Online Products: Ebay_train.txt, Ebay_test.txt.
    Sop,
    /// MNIST / Fashion-MNIST IDX files.
    Idx,
    /// A server's stored collection: an index folder (`images.redb`), a collection folder
    /// (its live version), or a snapshot file (`.tar`). Its kept originals, or the files it
    /// was indexed from; a `label` in the metadata is the class.
    Index,
}

/// What a split is read for: training, or evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Train,
    Eval,
}

impl Format {
    /// Whether the layout defines an official zero-shot split (CUB, Cars, SOP; IDX by the
    /// project's Fashion-MNIST protocol). A folder or labelled folder has none.
    pub fn has_official_split(self) -> bool {
        matches!(self, Format::Cub | Format::Cars | Format::Sop | Format::Idx)
    }

    /// The split read when none is given: the official training or test split where the
    /// layout has one, all of it otherwise.
    pub fn default_split(self, purpose: Purpose) -> Split {
        match (self.has_official_split(), purpose) {
            (true, Purpose::Train) => Split::Train,
            (true, Purpose::Eval) => Split::Test,
            (false, _) => Split::All,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Format::Auto => "auto",
            Format::Folder => "folder",
            Format::Labeled => "labeled",
            Format::Cub => "cub",
            Format::Cars => "cars",
            Format::Sop => "sop",
            Format::Idx => "idx",
            Format::Index => "index",
        };
        f.write_str(s)
    }
}

/// Which part of a dataset to read. The zero-shot protocol splits by class: `train` is the
/// first half of the classes, `test` the second (CUB 1-100 / 101-200, Cars 1-98 / 99-196,
/// SOP the official Ebay_train / Ebay_test lists, IDX and labelled folders the first
/// ceil(C/2) classes / the rest). A plain folder has no classes: every split is all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
    #[default]
    All,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::All => "all",
        })
    }
}

impl Split {
    /// Whether a 0-based class index belongs to this split when the first `train_classes`
    /// classes are the training half.
    pub fn keeps(self, class: usize, train_classes: usize) -> bool {
        match self {
            Split::Train => class < train_classes,
            Split::Test => class >= train_classes,
            Split::All => true,
        }
    }
}

/// Where a sample's pixels come from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// An image file, decoded on demand.
    File(PathBuf),
    /// Image `index` of an in-memory set of grey IDX images.
    Idx { images: Arc<IdxImages>, index: usize },
    /// The kept original of image `index` of a stored collection, read on demand.
    Stored { images: Arc<contract::stored::StoredImages>, index: usize },
}

/// One image of a dataset.
#[derive(Debug, Clone)]
pub struct Sample {
    pub source: ImageSource,
    /// 0-based index into [`Dataset::classes`]; `None` for unlabelled layouts.
    pub label: Option<u32>,
    /// Display name: the path relative to the dataset root (`file[i]` for IDX images).
    pub name: String,
}

/// A list of samples, in a deterministic order, with the dataset's class names.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The folder the dataset was read from.
    pub root: PathBuf,
    /// The layout it was read as (never `Auto`).
    pub format: Format,
    pub split: Split,
    pub samples: Vec<Sample>,
    /// Every class name of the dataset (both splits); labels index into it. Empty when
    /// unlabelled.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Every sample's label, or `None` if any sample is unlabelled.
    pub fn labels(&self) -> Option<Vec<u32>> {
        self.samples.iter().map(|s| s.label).collect()
    }

    /// Number of distinct labels among the samples (the clusters NMI asks k-means for).
    pub fn num_labels_present(&self) -> usize {
        let mut l: Vec<u32> = self.samples.iter().filter_map(|s| s.label).collect();
        l.sort_unstable();
        l.dedup();
        l.len()
    }

    /// A dataset of the given samples (in the given order), e.g. a benchmark subset.
    /// Indices out of range are skipped.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            samples: indices.iter().filter_map(|&i| self.samples.get(i).cloned()).collect(),
            ..self.clone_empty()
        }
    }

    /// A seeded random subset of at most `limit` samples, in dataset order (all of them
    /// when `limit` is 0 or at least the size): what every `--limit` flag takes.
    pub fn random_subset(self, limit: usize, seed: u64) -> Dataset {
        use rand::SeedableRng;
        if limit == 0 || limit >= self.len() {
            return self;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let mut idx = rand::seq::index::sample(&mut rng, self.len(), limit).into_vec();
        idx.sort_unstable();
        self.subset(&idx)
    }

    /// Splits off a seeded random `fraction` of the classes (at least one, and at least one
    /// left): `(kept, held_out)`. The choice depends only on the class names and `seed`.
    pub fn hold_out_classes(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        use rand::{seq::SliceRandom, SeedableRng};
        let mut present: Vec<u32> = self.samples.iter().filter_map(|s| s.label).collect();
        present.sort_unstable();
        present.dedup();
        if present.len() < 2 || self.labels().is_none() {
            return Err(DataError::Layout {
                path: self.root.clone(),
                format: self.format,
                reason: format!(
                    "--holdout-classes needs labelled data with at least two classes, found {} classes; \
                     pass --eval-data DIR instead",
                    present.len()
                ),
            });
        }
        let n = ((fraction * present.len() as f64).round() as usize).clamp(1, present.len() - 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        present.shuffle(&mut rng);
        let held: std::collections::HashSet<u32> = present[..n].iter().copied().collect();
        let (mut kept, mut out) = (self.clone_empty(), self.clone_empty());
        for s in &self.samples {
            if s.label.is_some_and(|l| held.contains(&l)) { &mut out } else { &mut kept }.samples.push(s.clone());
        }
        Ok((kept, out))
    }

    fn clone_empty(&self) -> Dataset {
        Dataset {
            root: self.root.clone(),
            format: self.format,
            split: self.split,
            samples: Vec::new(),
            classes: self.classes.clone(),
        }
    }
}

/// Read the dataset at `path` in `format` (detected when `Auto`), keeping `split`.
///
/// Fails before any image is decoded when the folder is missing, the layout is unknown or
/// invalid, an index file is malformed (the error names the line), or no image is left.
/// Missing or corrupt individual images are not checked here: the loader skips them.
pub fn load(path: &Path, format: Format, split: Split) -> Result<Dataset> {
    let format = resolve_format(path, format)?;
    let (samples, classes) = match format {
        Format::Auto | Format::Folder => (layouts::folder(path)?, Vec::new()),
        Format::Labeled => layouts::labeled(path, split)?,
        Format::Cub => layouts::cub(path, split)?,
        Format::Cars => layouts::cars(path, split)?,
        Format::Sop => layouts::sop(path, split)?,
        Format::Idx => layouts::idx(path, split)?,
        Format::Index => {
            let (samples, classes, sourceless) = layouts::index(path, split)?;
            if sourceless > 0 {
                tracing::warn!(
                    "{sourceless} items of {} have neither a kept original nor a source file (added as vectors, \
                     or uploaded to a collection without `keep_originals`): left out",
                    path.display()
                );
            }
            (samples, classes)
        }
    };
    if samples.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf(), format, split });
    }
    // (A stored collection's source files may be gone since it was indexed: those are
    // skipped like any unreadable image.)
    if let (Some(ImageSource::File(first)), false) = (samples.first().map(|s| &s.source), format == Format::Index) {
        if !first.is_file() {
            return Err(DataError::Layout {
                path: path.to_path_buf(),
                format,
                reason: format!(
                    "its first listed image {} does not exist; pass the dataset's root folder",
                    first.display()
                ),
            });
        }
    }
    Ok(Dataset { root: path.to_path_buf(), format, split, samples, classes })
}

/// The layout `path` is read as: `format`, or the detected one when `Auto`. Fails when
/// `path` is not a folder.
pub fn resolve_format(path: &Path, format: Format) -> Result<Format> {
    // A stored collection may be a file (a snapshot); its reader names what is wrong.
    if format == Format::Index || (path.is_file() && contract::stored::is_stored_collection(path)) {
        return Ok(Format::Index);
    }
    if !path.is_dir() {
        if path.exists() {
            return Err(DataError::Layout {
                path: path.to_path_buf(),
                format,
                reason: "expected a folder, found a file; pass the folder that contains it".into(),
            });
        }
        return Err(DataError::Missing { path: path.to_path_buf() });
    }
    if format == Format::Auto {
        detect(path)
    } else {
        Ok(format)
    }
}

/// The layout of a folder, by the rules documented on [`Format::Auto`].
pub fn detect(path: &Path) -> Result<Format> {
    let has = |f: &str| path.join(f).is_file();
    if has("images.txt") && has("image_class_labels.txt") {
        return Ok(Format::Cub);
    }
    if has("cars_annos.mat") {
        return Ok(Format::Cars);
    }
    if has("Ebay_train.txt") {
        return Ok(Format::Sop);
    }
    if contract::stored::is_stored_collection(path) {
        return Ok(Format::Index);
    }
    let mut top_images = false;
    let mut dirs = Vec::new();
    for entry in layouts::read_dir_sorted(path)? {
        let name = entry.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if idx::is_images_file(&name) {
            return Ok(Format::Idx);
        }
        if entry.is_dir() {
            dirs.push(entry);
        } else if contract::is_image_name(&name) {
            top_images = true;
        }
    }
    if !top_images {
        let mut with_images = 0;
        for d in &dirs {
            if contract::images::contains_image(d)? {
                with_images += 1;
            }
        }
        if with_images >= 2 {
            return Ok(Format::Labeled);
        }
    }
    Ok(Format::Folder)
}
