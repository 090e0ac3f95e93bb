//! Which files of a folder are images: one extension list and one walk, so that `trainer
//! fit` and `server index` see the same images in the same folder.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::{ContractError, Result};

/// File extensions read as images, compared case-insensitively.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// True for a visible file name with an image extension (`.DS_Store`, `._x.jpg` and
/// other hidden files are not images).
pub fn is_image_name(name: &str) -> bool {
    !name.starts_with('.')
        && name.rsplit_once('.').is_some_and(|(_, ext)| IMAGE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// Every image under `dir`, recursively, sorted by path.
///
/// Hidden files and folders (name starting with `.`) are skipped. Symbolic links are
/// followed; a folder reached twice (a link loop, or two links to one folder) is read
/// once.
pub fn find_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, &mut |p| {
        out.push(p.to_path_buf());
        ControlFlow::Continue(())
    })?;
    out.sort();
    Ok(out)
}

/// True when at least one image is under `dir` (stops at the first).
pub fn contains_image(dir: &Path) -> Result<bool> {
    let mut found = false;
    walk(dir, &mut |_| {
        found = true;
        ControlFlow::Break(())
    })?;
    Ok(found)
}

/// Entries of a folder, sorted by name.
pub fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| ContractError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

/// Calls `visit` on every image under `dir`, depth first in name order, until it breaks.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path) -> ControlFlow<()>) -> Result<()> {
    let mut seen = HashSet::new();
    walk_from(dir, &mut seen, visit).map(|_| ())
}

fn walk_from(
    dir: &Path,
    seen: &mut HashSet<PathBuf>,
    visit: &mut dyn FnMut(&Path) -> ControlFlow<()>,
) -> Result<ControlFlow<()>> {
    let real = dir.canonicalize().map_err(|source| ContractError::Io { path: dir.to_path_buf(), source })?;
    if !seen.insert(real) {
        return Ok(ControlFlow::Continue(()));
    }
    for p in read_dir_sorted(dir)? {
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let flow = if p.is_dir() {
            walk_from(&p, seen, visit)?
        } else if p.is_file() && is_image_name(&name) {
            visit(&p)
        } else {
            ControlFlow::Continue(())
        };
        if flow.is_break() {
            return Ok(flow);
        }
    }
    Ok(ControlFlow::Continue(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn finds_visible_images_recursively_in_order() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in ["b/2.PNG", "a/1.jpg", "a/deep/er/3.webp", "notes.txt", ".hidden.png", ".git/x.png", "a/._1.jpg"] {
            touch(&r.join(f));
        }
        let found: Vec<_> =
            find_images(r).unwrap().iter().map(|p| p.strip_prefix(r).unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(found, ["a/1.jpg", "a/deep/er/3.webp", "b/2.PNG"]);
        assert!(contains_image(r).unwrap());
        std::fs::create_dir_all(r.join("empty/inner")).unwrap();
        touch(&r.join("empty/inner/.x.png"));
        assert!(!contains_image(&r.join("empty")).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn follows_links_and_survives_a_loop() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("a/1.png"));
        std::os::unix::fs::symlink(r, r.join("a/loop")).unwrap();
        let found = find_images(r).unwrap();
        assert_eq!(found, [r.join("a/1.png")]);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let err = find_images(Path::new("/no/such/folder")).unwrap_err();
        assert!(err.to_string().contains("/no/such/folder"), "{err}");
    }
}
