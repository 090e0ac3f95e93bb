//! Writing a dataset split out as PNG files, one subfolder per class.

use std::path::Path;

use crate::data::{self, decode, Format, Split};
use crate::error::{io_err, Result};

/// Writes the images of one split of a dataset to `out/<class>/<n>.png` (unlabelled
/// layouts: `out/<n>.png`); at most `limit` images (0 = all), the seeded subset that
/// `fit --limit` takes with `--seed 0`. Images that cannot be decoded are skipped with a
/// warning. Returns the number written.
pub fn write_images(path: &Path, format: Format, split: Split, limit: usize, out: &Path) -> Result<usize> {
    let ds = data::load(path, format, split)?.random_subset(limit, 0);
    let mut written = 0;
    for (i, s) in ds.samples.iter().enumerate() {
        let img = match decode(s) {
            Ok(img) => img,
            Err(e) => {
                tracing::warn!("skipping {}: {e}", s.name);
                continue;
            }
        };
        let dir = match s.label.and_then(|l| ds.classes.get(l as usize)) {
            Some(c) => out.join(c.replace(['/', '\\'], "_")),
            None => out.to_path_buf(),
        };
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let file = dir.join(format!("{i:06}.png"));
        img.save(&file).map_err(|e| io_err(&file)(std::io::Error::other(e.to_string())))?;
        written += 1;
    }
    Ok(written)
}
