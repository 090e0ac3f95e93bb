//! Readers for each supported layout: they list samples and class names, touching only
//! folder listings and index files (no image is decoded here).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use contract::{find_images, is_image_name};

use super::{idx, mat, DataError, Format, ImageSource, Result, Sample, Split};

/// Class names of Fashion-MNIST, by label.
const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Entries of a folder, sorted by name.
pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(contract::images::read_dir_sorted(dir)?)
}

fn file_sample(root: &Path, path: PathBuf, label: Option<u32>) -> Sample {
    let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
    Sample { source: ImageSource::File(path), label, name }
}

/// A plain folder: every image file below it ([`contract::find_images`]: hidden files
/// skipped, links followed), sorted, unlabelled.
pub(crate) fn folder(root: &Path) -> Result<Vec<Sample>> {
    Ok(find_images(root)?.into_iter().map(|p| file_sample(root, p, None)).collect())
}

/// One subfolder per class (sorted names; subfolders without images are not classes).
pub(crate) fn labeled(root: &Path, split: Split) -> Result<(Vec<Sample>, Vec<String>)> {
    let mut classes = Vec::new();
    let mut per_class = Vec::new();
    for p in read_dir_sorted(root)? {
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if p.is_dir() && !name.starts_with('.') {
            let paths = find_images(&p)?;
            if !paths.is_empty() {
                classes.push(name);
                per_class.push(paths);
            }
        } else if is_image_name(&name) {
            return Err(DataError::Layout {
                path: root.to_path_buf(),
                format: Format::Labeled,
                reason: format!(
                    "image {name} lies outside any class subfolder; move it into one, or use --format folder"
                ),
            });
        }
    }
    let train = classes.len().div_ceil(2);
    let mut samples = Vec::new();
    for (c, paths) in per_class.into_iter().enumerate() {
        if split.keeps(c, train) {
            samples.extend(paths.into_iter().map(|p| file_sample(root, p, Some(c as u32))));
        }
    }
    Ok((samples, classes))
}

/// A server's stored collection ([`contract::stored::StoredImages`]: an index folder, a
/// collection folder, or a snapshot file): each item's kept original, read on demand, or
/// else the file it was indexed from. Items with neither are left out, and counted in the
/// returned number. A `label` in an item's metadata (as `server index --label-from-folder`
/// records) is its class: sorted names, split like a labelled folder.
pub(crate) fn index(root: &Path, split: Split) -> Result<(Vec<Sample>, Vec<String>, usize)> {
    use contract::stored::{Source, StoredImages};
    let stored = std::sync::Arc::new(StoredImages::open(root)?);
    let label_of = |m: &serde_json::Value| match &m["label"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let labels: Vec<Option<String>> = stored.images().iter().map(|i| label_of(&i.metadata)).collect();
    // Labels count only when every item has one; otherwise the collection is unlabelled.
    let labelled = labels.iter().all(Option::is_some);
    let mut classes: Vec<String> = if labelled { labels.iter().flatten().cloned().collect() } else { Vec::new() };
    classes.sort();
    classes.dedup();
    let class_of: HashMap<&str, u32> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
    let train = classes.len().div_ceil(2);
    let (mut samples, mut sourceless) = (Vec::new(), 0usize);
    for (i, (item, label)) in stored.images().iter().zip(&labels).enumerate() {
        let label = label.as_deref().and_then(|l| class_of.get(l).copied());
        if label.is_some_and(|c| !split.keeps(c as usize, train)) {
            continue;
        }
        let name = item.metadata["path"].as_str().map_or_else(|| item.id.clone(), str::to_string);
        let source = match &item.source {
            Source::Kept => ImageSource::Stored { images: stored.clone(), index: i },
            Source::File(path) => ImageSource::File(path.clone()),
            Source::None => {
                sourceless += 1;
                continue;
            }
        };
        samples.push(Sample { source, label, name });
    }
    Ok((samples, classes, sourceless))
}

/// Lines of a whitespace-separated index file: (1-based line number, fields), skipping
/// blank lines.
fn index_lines(path: &Path, format: Format) -> Result<Vec<(usize, Vec<String>)>> {
    if !path.is_file() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        return Err(DataError::Layout {
            path: path.parent().unwrap_or(path).to_path_buf(),
            format,
            reason: format!("{name} is missing; pass the dataset's root folder"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.split_whitespace().map(str::to_string).collect()))
        .collect())
}

fn parse_id(path: &Path, line: usize, what: &str, s: &str) -> Result<usize> {
    match s.parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(DataError::Malformed {
            path: path.to_path_buf(),
            line,
            reason: format!("{what} {s:?} is not a positive integer"),
        }),
    }
}

fn malformed(path: &Path, line: usize, reason: String) -> DataError {
    DataError::Malformed { path: path.to_path_buf(), line, reason }
}

/// CUB-200-2011: `images.txt` (`<image_id> <path under images/>`),
/// `image_class_labels.txt` (`<image_id> <class_id>`), optional `classes.txt`
/// (`<class_id> <name>`). Classes 1-100 train, 101-200 test.
pub(crate) fn cub(root: &Path, split: Split) -> Result<(Vec<Sample>, Vec<String>)> {
    const TRAIN_CLASSES: usize = 100;
    let images_txt = root.join("images.txt");
    let labels_txt = root.join("image_class_labels.txt");
    let mut label_of = HashMap::new();
    for (line, f) in index_lines(&labels_txt, Format::Cub)? {
        if f.len() != 2 {
            return Err(malformed(
                &labels_txt,
                line,
                format!("expected `<image_id> <class_id>`, found {} fields", f.len()),
            ));
        }
        let id = parse_id(&labels_txt, line, "image id", &f[0])?;
        let class = parse_id(&labels_txt, line, "class id", &f[1])?;
        if label_of.insert(id, class).is_some() {
            return Err(malformed(&labels_txt, line, format!("image id {id} is listed twice")));
        }
    }
    let mut names: HashMap<usize, String> = HashMap::new();
    let classes_txt = root.join("classes.txt");
    if classes_txt.is_file() {
        for (line, f) in index_lines(&classes_txt, Format::Cub)? {
            if f.len() < 2 {
                return Err(malformed(&classes_txt, line, "expected `<class_id> <name>`".into()));
            }
            names.insert(parse_id(&classes_txt, line, "class id", &f[0])?, f[1..].join(" "));
        }
    }
    let mut listed = Vec::new();
    for (line, f) in index_lines(&images_txt, Format::Cub)? {
        if f.len() < 2 {
            return Err(malformed(&images_txt, line, "expected `<image_id> <relative path>`".into()));
        }
        let id = parse_id(&images_txt, line, "image id", &f[0])?;
        let rel = f[1..].join(" ");
        let class = *label_of.get(&id).ok_or_else(|| {
            malformed(&images_txt, line, format!("image id {id} has no class in image_class_labels.txt"))
        })?;
        names.entry(class).or_insert_with(|| rel.split('/').next().unwrap_or_default().to_string());
        listed.push((class, rel));
    }
    let max_class = names.keys().copied().max().unwrap_or(0);
    let classes = (1..=max_class).map(|c| names.get(&c).cloned().unwrap_or_else(|| format!("class {c}"))).collect();
    let images = root.join("images");
    let samples = listed
        .into_iter()
        .filter(|(c, _)| split.keeps(c - 1, TRAIN_CLASSES))
        .map(|(c, rel)| file_sample(root, images.join(rel), Some((c - 1) as u32)))
        .collect();
    Ok((samples, classes))
}

/// Cars-196: `cars_annos.mat` holds a struct array `annotations` with fields
/// `relative_im_path` (relative to the root) and `class` (1-196), and optionally a cell
/// array `class_names`. Classes 1-98 train, 99-196 test (the file's `test` flag, the
/// classification split, is not used).
pub(crate) fn cars(root: &Path, split: Split) -> Result<(Vec<Sample>, Vec<String>)> {
    const TRAIN_CLASSES: usize = 98;
    let path = root.join("cars_annos.mat");
    let bytes = std::fs::read(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
    let bad = |reason: String| DataError::BadFile { path: path.clone(), reason };
    let vars = mat::read(&bytes).map_err(|r| bad(format!("{r}; download cars_annos.mat again")))?;
    let annotations = vars
        .get("annotations")
        .ok_or_else(|| bad("no variable `annotations`; expected the official Cars-196 cars_annos.mat".into()))?;
    let count = match annotations {
        mat::MatValue::Struct { elements, .. } => elements.len(),
        _ => return Err(bad("`annotations` is not a struct array".into())),
    };
    let mut listed = Vec::with_capacity(count);
    let mut max_class = 0;
    for e in 0..count {
        let rel = annotations.field(e, "relative_im_path").and_then(mat::MatValue::as_str);
        let class = annotations.field(e, "class").and_then(mat::MatValue::as_f64);
        let (Some(rel), Some(class)) = (rel, class) else {
            return Err(bad(format!("annotation {} lacks a text `relative_im_path` or a numeric `class`", e + 1)));
        };
        if !(class >= 1.0 && class.fract() == 0.0) {
            return Err(bad(format!("annotation {} has class {class}, expected 1, 2, ...", e + 1)));
        }
        let class = class as usize;
        max_class = max_class.max(class);
        listed.push((class, rel.to_string()));
    }
    let mut classes: Vec<String> = (1..=max_class).map(|c| format!("class {c}")).collect();
    if let Some(mat::MatValue::Cell { items, .. }) = vars.get("class_names") {
        for (slot, item) in classes.iter_mut().zip(items) {
            if let Some(name) = item.as_str() {
                *slot = name.to_string();
            }
        }
    }
    let samples = listed
        .into_iter()
        .filter(|(c, _)| split.keeps(c - 1, TRAIN_CLASSES))
        .map(|(c, rel)| file_sample(root, root.join(rel), Some((c - 1) as u32)))
        .collect();
    Ok((samples, classes))
}

/// Stanford Online Products: `Ebay_train.txt` / `Ebay_test.txt`, a header line then
/// `<image_id> <class_id> <super_class_id> <path>`. `all` pools both lists.
pub(crate) fn sop(root: &Path, split: Split) -> Result<(Vec<Sample>, Vec<String>)> {
    let files: &[&str] = match split {
        Split::Train => &["Ebay_train.txt"],
        Split::Test => &["Ebay_test.txt"],
        Split::All => &["Ebay_train.txt", "Ebay_test.txt"],
    };
    let mut listed = Vec::new();
    let mut names: HashMap<usize, String> = HashMap::new();
    for file in files {
        let path = root.join(file);
        for (line, f) in index_lines(&path, Format::Sop)? {
            if f.first().is_some_and(|h| h == "image_id") {
                continue;
            }
            if f.len() != 4 {
                return Err(malformed(
                    &path,
                    line,
                    format!("expected `image_id class_id super_class_id path`, found {} fields", f.len()),
                ));
            }
            parse_id(&path, line, "image id", &f[0])?;
            let class = parse_id(&path, line, "class id", &f[1])?;
            parse_id(&path, line, "super class id", &f[2])?;
            let folder = f[3].split('/').next().unwrap_or_default();
            names.entry(class).or_insert_with(|| format!("{folder} {class}"));
            listed.push((class, f[3].clone()));
        }
    }
    let max_class = names.keys().copied().max().unwrap_or(0);
    let classes = (1..=max_class).map(|c| names.get(&c).cloned().unwrap_or_else(|| format!("class {c}"))).collect();
    let samples = listed.into_iter().map(|(c, rel)| file_sample(root, root.join(rel), Some((c - 1) as u32))).collect();
    Ok((samples, classes))
}

/// MNIST-style IDX files: every `*idx3-ubyte[.gz]` in the folder with its labels file,
/// pooled (files whose name starts with `train` first, then by name). Labels < ceil(C/2)
/// are the train split (Fashion-MNIST: classes 0-4 train, 5-9 test; DATA.md).
pub(crate) fn idx(root: &Path, split: Split) -> Result<(Vec<Sample>, Vec<String>)> {
    let mut files: Vec<PathBuf> = read_dir_sorted(root)?
        .into_iter()
        .filter(|p| p.is_file() && idx::is_images_file(&p.file_name().unwrap_or_default().to_string_lossy()))
        .collect();
    files.sort_by_key(|p| {
        let n = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        (!n.starts_with("train"), n)
    });
    if files.is_empty() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            format: Format::Idx,
            reason: "no *-images-idx3-ubyte[.gz] file in it".into(),
        });
    }
    let pairs = files.iter().map(|f| idx::read_pair(f)).collect::<Result<Vec<_>>>()?;
    let num_classes = pairs.iter().flat_map(|p| p.labels.iter()).map(|&l| l as usize + 1).max().unwrap_or(0).max(10);
    let fashion = root.to_string_lossy().to_ascii_lowercase().contains("fashion");
    let classes = (0..num_classes)
        .map(|c| match (fashion, FASHION_CLASSES.get(c)) {
            (true, Some(n)) => n.to_string(),
            _ => c.to_string(),
        })
        .collect();
    let train = num_classes.div_ceil(2);
    let mut samples = Vec::new();
    for pair in pairs {
        let file = pair.images_path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for (i, &label) in pair.labels.iter().enumerate() {
            if split.keeps(label as usize, train) {
                samples.push(Sample {
                    source: ImageSource::Idx { images: pair.images.clone(), index: i },
                    label: Some(label as u32),
                    name: format!("{file}[{i}]"),
                });
            }
        }
    }
    Ok((samples, classes))
}
