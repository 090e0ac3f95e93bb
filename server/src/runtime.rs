//! ONNX Runtime: finding and loading its shared library (load-dynamic), choosing the
//! execution provider (CUDA when built with `cuda` and a GPU is present, else CPU), and
//! running an exported embedding model.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use contract::{Manifest, MANIFEST_KEY};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use crate::settings::Spinning;
use crate::{Error, Result};

/// Where scripts/setup.sh installs the library, relative to the repository root.
pub const SETUP_DYLIB: &str = "deps/onnxruntime/libonnxruntime.so";

/// The execution provider a model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
}

static ENVIRONMENT: Mutex<Option<(Environment, PathBuf)>> = Mutex::new(None);

/// The library to load: the configured path, else `ORT_DYLIB_PATH`, else the set-up's
/// copy found next to the repository (walking up from the executable and the working
/// directory) or next to the executable.
pub fn resolve_dylib(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let mut candidates = Vec::new();
    let starts =
        [std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)), std::env::current_dir().ok()];
    for start in starts.into_iter().flatten() {
        candidates.push(start.join("libonnxruntime.so"));
        candidates.extend(start.ancestors().map(|a| a.join(SETUP_DYLIB)));
    }
    candidates.iter().find(|c| c.is_file()).cloned().unwrap_or_else(|| PathBuf::from(SETUP_DYLIB))
}

/// Loads ONNX Runtime from `dylib` (once per process) and returns its environment.
/// A missing or unloadable library is an error naming the path and the fix.
pub fn environment(dylib: &Path) -> Result<Environment> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((env, loaded)) = slot.as_ref() {
        if loaded != dylib {
            tracing::warn!(loaded = %loaded.display(), asked = %dylib.display(), "ONNX Runtime is already loaded from another path");
        }
        return Ok(env.clone());
    }
    if !dylib.is_file() {
        return Err(Error::OrtLibraryMissing { path: dylib.to_path_buf() });
    }
    let broken = |reason: String| Error::OrtLibraryBroken { path: dylib.to_path_buf(), reason };
    let builder = ort::init_from(dylib).map_err(|e| broken(e.to_string()))?;
    // No telemetry: a search server over a team's own images reports nothing anywhere
    // (and has no network to report to in most deployments).
    let env = builder.with_name("stml-server").with_telemetry(false).build().map_err(|e| broken(e.to_string()))?;
    tracing::info!(path = %dylib.display(), "loaded ONNX Runtime");
    *slot = Some((env.clone(), dylib.to_path_buf()));
    Ok(env)
}

/// Inference sessions at most besides the wide one: each holds its own activations.
pub const MAX_STREAMS: usize = 4;

/// How many narrow sessions ("streams") to open on `cores` cores, and the intra-op
/// threads of each: one single-threaded session per core, at most [`MAX_STREAMS`]
/// (beyond that the cores are split between them); none on one core. `configured`
/// other than 0 is the settings' `inference_streams`.
pub fn stream_plan(cores: usize, configured: usize) -> (usize, usize) {
    let streams = if configured > 0 { configured } else { cores.min(MAX_STREAMS) };
    if streams <= 1 {
        return (0, 0);
    }
    (streams, (cores / streams).max(1))
}

/// An exported embedding model open in ONNX Runtime: one wide session with all the
/// intra-op threads, for a lone image, and (on a multi-core CPU) narrow sessions,
/// "streams", that run independent batches side by side. Streams never wait for each
/// other's threads, so under load a thread pre-empted by decoding or HTTP work delays one
/// batch instead of every operator of every batch; they cost a little latency alone.
pub struct OnnxModel {
    wide: Mutex<Session>,
    streams: Vec<Mutex<Session>>,
    manifest: Manifest,
    provider: Provider,
    path: PathBuf,
}

impl OnnxModel {
    /// Opens `path` (an ONNX file written by `trainer export`) and reads its manifest.
    /// `intra_threads` 0 keeps ONNX Runtime's default for the wide session; `streams`
    /// narrow sessions of `stream_threads` threads each are opened too (CPU only).
    pub fn open(
        env: &Environment,
        path: &Path,
        intra_threads: usize,
        (streams, stream_threads): (usize, usize),
        spinning: Spinning,
    ) -> Result<Self> {
        let fail = |reason: String| Error::Model { path: path.to_path_buf(), reason };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        let (wide, provider) = Self::session(env, path, intra_threads, spinning, false)?;
        let streams = if provider == Provider::Cpu { streams } else { 0 };
        let streams = (0..streams)
            .map(|_| Self::session(env, path, stream_threads, spinning, true).map(|(s, _)| s))
            .collect::<Result<Vec<_>>>()?;
        let session = wide.lock().unwrap_or_else(|p| p.into_inner());
        let json = session
            .metadata()
            .map_err(|e| fail(e.to_string()))?
            .custom(MANIFEST_KEY)
            .ok_or_else(|| fail(format!("it has no `{MANIFEST_KEY}` metadata")))?;
        let manifest = Manifest::from_json(&json).map_err(|e| fail(e.to_string()))?;
        if !session.inputs().iter().any(|i| i.name() == manifest.input_name) {
            return Err(fail(format!("the graph has no input named `{}`", manifest.input_name)));
        }
        if !session.outputs().iter().any(|o| o.name() == manifest.output_name) {
            return Err(fail(format!("the graph has no output named `{}`", manifest.output_name)));
        }
        drop(session);
        tracing::info!(model = %path.display(), arch = %manifest.arch, dim = manifest.embedding_dim, ?provider, streams = streams.len(), "opened the model");
        Ok(Self { wide, streams, manifest, provider, path: path.to_path_buf() })
    }

    /// One session of `path` with `intra_threads` (0: ONNX Runtime's default), on the CPU
    /// when `cpu`, else on the best provider at hand.
    fn session(
        env: &Environment,
        path: &Path,
        intra_threads: usize,
        spinning: Spinning,
        cpu: bool,
    ) -> Result<(Mutex<Session>, Provider)> {
        let fail = |reason: String| Error::Model { path: path.to_path_buf(), reason };
        let mut builder = Session::builder(env).map_err(|e| fail(e.to_string()))?;
        builder = builder.with_intra_op_spinning(spinning != Spinning::Off).map_err(|e| fail(e.to_string()))?;
        if spinning == Spinning::DuringRun {
            builder = builder.with_config_entry("session.force_spinning_stop", "1").map_err(|e| fail(e.to_string()))?;
        }
        if intra_threads > 0 {
            builder = builder.with_intra_threads(intra_threads).map_err(|e| fail(e.to_string()))?;
        }
        let (mut builder, provider) = if cpu { (builder, Provider::Cpu) } else { with_provider(builder) };
        let session = builder.commit_from_file(path).map_err(|e| fail(e.to_string()))?;
        Ok((Mutex::new(session), provider))
    }

    /// Narrow sessions (streams); 0 where there is only the wide session.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The model's manifest (input size, preprocessing, distance, ...).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The execution provider the model runs on.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Values in one preprocessed image: `3 * crop * crop`.
    pub fn input_len(&self) -> usize {
        let c = self.manifest.preprocess.crop as usize;
        3 * c * c
    }

    /// Embeds a batch of preprocessed images in one inference call on the wide session.
    ///
    /// # Shapes
    /// - `input`: `[n, 3, crop, crop]` flattened (`n * input_len()` values)
    /// - returns `n` vectors of `[embedding_dim]`
    pub fn embed(&self, input: Vec<f32>, n: usize) -> Result<Vec<Vec<f32>>> {
        self.run(&self.wide, input, n)
    }

    /// Like [`OnnxModel::embed`], on stream `stream` (below [`OnnxModel::streams`]; the
    /// wide session where there is no such stream).
    pub fn embed_on(&self, stream: usize, input: Vec<f32>, n: usize) -> Result<Vec<Vec<f32>>> {
        match self.streams.get(stream) {
            Some(session) => self.run(session, input, n),
            None => self.embed(input, n),
        }
    }

    fn run(&self, session: &Mutex<Session>, input: Vec<f32>, n: usize) -> Result<Vec<Vec<f32>>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if input.len() != n * self.input_len() {
            return Err(Error::Inference(format!(
                "got {} input values for {n} images of {}",
                input.len(),
                self.input_len()
            )));
        }
        let crop = self.manifest.preprocess.crop as i64;
        let tensor =
            Tensor::from_array((vec![n as i64, 3, crop, crop], input)).map_err(|e| Error::Inference(e.to_string()))?;
        let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![self.manifest.input_name.as_str() => tensor])
            .map_err(|e| Error::Inference(e.to_string()))?;
        let (shape, data) = outputs[self.manifest.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::Inference(e.to_string()))?;
        let dim = self.manifest.embedding_dim;
        if shape.len() != 2 || shape[0] != n as i64 || shape[1] != dim as i64 {
            return Err(Error::Inference(format!("the model answered shape {shape:?}, expected [{n}, {dim}]")));
        }
        Ok(data.chunks_exact(dim).map(<[f32]>::to_vec).collect())
    }
}

#[cfg(feature = "cuda")]
fn with_provider(builder: ort::session::builder::SessionBuilder) -> (ort::session::builder::SessionBuilder, Provider) {
    use ort::ep::ExecutionProvider;
    match ort::ep::CUDA::is_available() {
        Ok(true) => match builder.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()]) {
            Ok(b) => {
                tracing::info!("execution provider: CUDA");
                (b, Provider::Cuda)
            }
            Err(e) => {
                tracing::warn!("CUDA execution provider failed ({e}); using the CPU");
                (e.recover(), Provider::Cpu)
            }
        },
        _ => {
            tracing::info!("execution provider: CPU (no CUDA device or CUDA-enabled ONNX Runtime found)");
            (builder, Provider::Cpu)
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn with_provider(builder: ort::session::builder::SessionBuilder) -> (ort::session::builder::SessionBuilder, Provider) {
    tracing::info!("execution provider: CPU (built without the `cuda` feature)");
    (builder, Provider::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_single_threaded_stream_per_core_up_to_the_cap() {
        assert_eq!(stream_plan(1, 0), (0, 0), "one core: the wide session only");
        assert_eq!(stream_plan(2, 0), (2, 1));
        assert_eq!(stream_plan(6, 0), (4, 1));
        assert_eq!(stream_plan(16, 0), (MAX_STREAMS, 16 / MAX_STREAMS));
        assert_eq!(stream_plan(8, 1), (0, 0), "1: the wide session only");
        assert_eq!(stream_plan(8, 2), (2, 4));
    }
}
