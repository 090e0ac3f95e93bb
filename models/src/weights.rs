//! Named weights in safetensors files: reading, checking against a graph, writing
//! atomically. Plain Rust, so the export path needs no libtorch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::graph::ParamSpec;
use crate::{Error, Result};

/// One f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Named f32 tensors, e.g. a whole state dict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    pub tensors: BTreeMap<String, Tensor>,
    /// Where they were read from (for error messages).
    pub source: PathBuf,
}

impl Weights {
    /// Reads every floating-point tensor of a safetensors file (f32, f16, bf16, f64 are
    /// converted to f32; integer counters such as `num_batches_tracked` are skipped).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::WeightsUnreadable { path: path.to_path_buf(), reason: e.to_string() })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::WeightsUnreadable {
            path: path.to_path_buf(),
            reason: format!("not a valid safetensors file ({e}); it may be truncated or in another format (convert .pt/.pth files with scripts/convert_weights.py)"),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if let Some(data) = to_f32(&view) {
                tensors.insert(name, Tensor { shape: view.shape().to_vec(), data });
            }
        }
        Ok(Self { tensors, source: path.to_path_buf() })
    }

    /// Compares the file with what a graph needs. Tensors under `ignore_prefixes` (a
    /// classifier the embedding does not use) are allowed extra; names for which
    /// `optional(name)` is true (fresh heads) may be missing. Everything else must match.
    pub fn check(
        &self,
        arch: &str,
        specs: &[ParamSpec],
        ignore_prefixes: &[&str],
        optional: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let mut missing = Vec::new();
        let mut misshaped = Vec::new();
        for s in specs {
            match self.tensors.get(&s.name) {
                None if optional(&s.name) => {}
                None => missing.push(format!("{} {:?}", s.name, s.shape)),
                Some(t) if t.shape != s.shape => {
                    misshaped.push(format!("{}: file has {:?}, network needs {:?}", s.name, t.shape, s.shape))
                }
                Some(_) => {}
            }
        }
        let unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !specs.iter().any(|s| &s.name == *k))
            .filter(|k| !ignore_prefixes.iter().any(|p| k.starts_with(p)))
            .cloned()
            .collect();
        if missing.is_empty() && misshaped.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        let mut details = String::new();
        for (title, list) in [("missing", &missing), ("mis-shaped", &misshaped), ("unexpected", &unexpected)] {
            if !list.is_empty() {
                details.push_str(&format!("\n  {} {title} tensor(s):", list.len()));
                for item in list.iter().take(20) {
                    details.push_str(&format!("\n    {item}"));
                }
                if list.len() > 20 {
                    details.push_str(&format!("\n    ... and {} more", list.len() - 20));
                }
            }
        }
        Err(Error::WeightsMismatch { path: self.source.clone(), arch: arch.to_string(), details })
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Writes all tensors as f32 safetensors, atomically (temporary file, fsync, rename).
    pub fn write(&self, path: &Path, metadata: Option<std::collections::HashMap<String, String>>) -> Result<()> {
        let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), source: e };
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone()))
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(k, b, s)| (k.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("consistent sizes")))
            .collect();
        let out = safetensors::serialize(views, &metadata)
            .map_err(|e| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
        crate::weights::write_atomic(path, &out).map_err(io)
    }
}

/// Writes `bytes` to `path` so that a crash at any moment leaves either the old file or
/// the new one, never a torn one: write a sibling temporary file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let b = view.data();
    Some(match view.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        Dtype::BF16 => {
            b.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()
        }
        _ => return None,
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}
