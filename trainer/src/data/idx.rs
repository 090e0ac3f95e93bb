//! MNIST-style IDX files (`*-images-idx3-ubyte`, `*-labels-idx1-ubyte`, raw or gzipped):
//! the images stay in memory, one `u8` grey plane each.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::GzDecoder;

use super::DataError;

/// Grey images of one size held in memory, row-major, `len() * rows * cols` bytes.
pub struct IdxImages {
    /// Image height.
    pub rows: u32,
    /// Image width.
    pub cols: u32,
    /// All pixels: image `i` is `pixels[i * rows * cols..(i + 1) * rows * cols]`.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        let plane = self.rows as usize * self.cols as usize;
        self.pixels.len().checked_div(plane).unwrap_or(0)
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pixels of image `i` (None when out of range).
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let plane = self.rows as usize * self.cols as usize;
        self.pixels.get(i * plane..(i + 1) * plane)
    }
}

impl fmt::Debug for IdxImages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdxImages({} x {}x{})", self.len(), self.rows, self.cols)
    }
}

/// Read a whole file, inflating it when it starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| DataError::BadFile {
            path: path.to_path_buf(),
            reason: format!("corrupt gzip stream ({e}); download the file again"),
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse an IDX header of unsigned bytes: returns (dims, payload).
fn parse(path: &Path, bytes: &[u8], ndims: u8) -> Result<(Vec<usize>, usize), DataError> {
    let bad = |reason: String| DataError::BadFile { path: path.to_path_buf(), reason };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (magic number must start with two zero bytes)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!("IDX element type 0x{:02x} is not unsigned bytes (0x08)", bytes[2])));
    }
    if bytes[3] != ndims {
        return Err(bad(format!("IDX file has {} dimensions, expected {ndims}", bytes[3])));
    }
    let header = 4 + 4 * ndims as usize;
    let dims: Vec<usize> = bytes
        .get(4..header)
        .ok_or_else(|| bad("truncated IDX header".into()))?
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if want != Some(bytes.len() - header) {
        return Err(bad(format!(
            "IDX dimensions {dims:?} do not match the {} bytes of data in the file; download it again",
            bytes.len() - header
        )));
    }
    Ok((dims, header))
}

/// One images file with its labels file.
pub(crate) struct IdxPair {
    pub images_path: PathBuf,
    pub images: Arc<IdxImages>,
    pub labels: Vec<u8>,
}

/// Read `*-images-idx3-ubyte[.gz]` and its labels file (`images-idx3` -> `labels-idx1`).
pub(crate) fn read_pair(images_path: &Path) -> Result<IdxPair, DataError> {
    let file = images_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let labels_name = file.replacen("images-idx3", "labels-idx1", 1).replacen("images.idx3", "labels.idx1", 1);
    let labels_path = images_path.with_file_name(&labels_name);
    if labels_name == file || !labels_path.is_file() {
        return Err(DataError::Layout {
            path: images_path.to_path_buf(),
            format: super::Format::Idx,
            reason: format!("its labels file {labels_name} is missing; put the matching labels-idx1 file next to it"),
        });
    }
    let bytes = read_maybe_gz(images_path)?;
    let (dims, header) = parse(images_path, &bytes, 3)?;
    let images = IdxImages { rows: dims[1] as u32, cols: dims[2] as u32, pixels: bytes[header..].to_vec() };
    let lbytes = read_maybe_gz(&labels_path)?;
    let (ldims, lheader) = parse(&labels_path, &lbytes, 1)?;
    if ldims[0] != dims[0] {
        return Err(DataError::BadFile {
            path: labels_path,
            reason: format!(
                "{} labels for {} images in {file}; use the labels file of the same set",
                ldims[0], dims[0]
            ),
        });
    }
    Ok(IdxPair { images_path: images_path.to_path_buf(), images: Arc::new(images), labels: lbytes[lheader..].to_vec() })
}

/// Whether a file name is an IDX images file.
pub(crate) fn is_images_file(name: &str) -> bool {
    let n = name.strip_suffix(".gz").unwrap_or(name);
    n.ends_with("idx3-ubyte")
}
