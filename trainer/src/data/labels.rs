//! Known classes of some training images, for the semi-supervised mode: read from a labels
//! file, or kept for a seeded fraction of a layout's own labels. Pairs of two labelled
//! images get `W = 1` (same class) or `W = 0`; every other pair keeps STML's pseudo label.

use std::collections::HashMap;
use std::path::Path;

use rand::SeedableRng;

use super::{DataError, Dataset, ImageSource, Result};

/// The known class of each training sample, in dataset order.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownLabels {
    /// `[samples]`: a class id, or `-1` where the class is not known.
    pub labels: Vec<i64>,
    /// How many samples have a known class.
    pub count: usize,
}

impl KnownLabels {
    fn new(labels: Vec<i64>) -> Self {
        let count = labels.iter().filter(|&&l| l >= 0).count();
        Self { labels, count }
    }

    /// Every sample's label from the dataset itself (the supervised stand-in for W).
    pub fn all(ds: &Dataset) -> Option<Self> {
        Some(Self::new(ds.labels()?.into_iter().map(i64::from).collect()))
    }

    /// The dataset's own labels for a seeded random `fraction` of its samples.
    pub fn fraction(ds: &Dataset, fraction: f64, seed: u64) -> Result<Self> {
        let labels = ds.labels().ok_or_else(|| DataError::Layout {
            path: ds.root.clone(),
            format: ds.format,
            reason: "--label-fraction keeps some of the layout's own labels, but this data has none; \
                     pass --labels FILE instead"
                .into(),
        })?;
        let n = (fraction * ds.len() as f64).round() as usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x1abe1);
        let mut known = vec![-1i64; ds.len()];
        for i in rand::seq::index::sample(&mut rng, ds.len(), n.min(ds.len())) {
            known[i] = labels[i] as i64;
        }
        Ok(Self::new(known))
    }

    /// Reads `path<TAB>class` or `path,class` lines (`#` starts a comment; an optional
    /// `path,class` header). A path is relative to the dataset root, as `fit` lists it
    /// (e.g. `birds/0001.jpg`), or an absolute path to one of its images.
    pub fn from_file(file: &Path, ds: &Dataset) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).map_err(|source| DataError::Io { path: file.to_path_buf(), source })?;
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let mut by_path: HashMap<&Path, usize> = HashMap::new();
        for (i, s) in ds.samples.iter().enumerate() {
            by_name.insert(s.name.as_str(), i);
            if let ImageSource::File(p) = &s.source {
                by_path.insert(p.as_path(), i);
            }
        }
        let mut classes: HashMap<String, i64> = HashMap::new();
        let mut known = vec![-1i64; ds.len()];
        let bad = |line: usize, reason: String| DataError::Malformed { path: file.to_path_buf(), line, reason };
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let l = raw.split('#').next().unwrap_or("").trim();
            if l.is_empty() {
                continue;
            }
            let (name, class) = l
                .split_once('\t')
                .or_else(|| l.rsplit_once(','))
                .map(|(a, b)| (a.trim(), b.trim()))
                .ok_or_else(|| bad(line, format!("expected `path<TAB>class` or `path,class`, found `{l}`")))?;
            if line == 1 && name == "path" {
                continue;
            }
            if class.is_empty() {
                return Err(bad(line, format!("{name} has an empty class")));
            }
            let i = by_name.get(name).or_else(|| by_path.get(Path::new(name))).copied().ok_or_else(|| {
                bad(
                    line,
                    format!(
                        "{name} is not one of the {} training images of {}; write paths relative to the --data folder",
                        ds.len(),
                        ds.root.display()
                    ),
                )
            })?;
            let next = classes.len() as i64;
            let id = *classes.entry(class.to_string()).or_insert(next);
            if known[i] >= 0 && known[i] != id {
                return Err(bad(line, format!("{name} is given two different classes")));
            }
            known[i] = id;
        }
        let k = Self::new(known);
        if k.count == 0 {
            return Err(DataError::BadFile {
                path: file.to_path_buf(),
                reason: "names no training image; write `path<TAB>class` lines".into(),
            });
        }
        Ok(k)
    }
}
