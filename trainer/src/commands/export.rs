//! `trainer export`: the student's served embedding of a run (`g` by default, `f` in the
//! paper), as an ONNX file whose manifest tells the server everything it needs.

use std::path::Path;

use contract::{Distance, Manifest, Output, Provenance, INPUT_NAME, MANIFEST_FORMAT};
use models::Head;

use crate::error::{Result, TrainError};
use crate::run::{RunDir, STUDENT};

/// The git commit this binary was built from, if known at build time.
pub fn git_commit() -> String {
    option_env!("STML_GIT_COMMIT").unwrap_or("unknown").to_string()
}

/// Exports the latest checkpoint of `run` to `out`, its `head` or else the head the run
/// serves; returns the manifest written.
pub fn export_run(run: &Path, out: &Path, normalize: bool, head: Option<Head>) -> Result<Manifest> {
    let run = RunDir::open(run)?;
    let mut cfg = run.config()?;
    if let Some(h) = head {
        cfg.model.served_head = h;
    }
    let ck = run.latest_checkpoint().ok_or_else(|| TrainError::Run {
        path: run.root.clone(),
        reason: "has no checkpoint yet; let `trainer fit` finish at least one epoch".into(),
    })?;
    let state = RunDir::read_state(&ck)?;
    let weights = models::weights::Weights::read(&ck.join(STUDENT))?;
    let normalized = normalize || cfg.model.student_norm;
    let graph = cfg.model.export_graph(normalized);
    let run_id = run
        .root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into());
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        arch: cfg.model.arch.name().into(),
        embedding_dim: cfg.model.served_dim(),
        normalized,
        distance: if normalized { Distance::Cosine } else { Distance::Euclidean },
        input_name: INPUT_NAME.into(),
        output_name: Output::Embedding.name().into(),
        preprocess: cfg.model.preprocess(),
        provenance: Provenance {
            run_id,
            git_commit: git_commit(),
            created: chrono::Utc::now().to_rfc3339(),
            notes: format!(
                "STML, {} epochs of {}, head {}, data {}",
                state.epochs_done,
                cfg.optim.epochs,
                cfg.model.served_head,
                cfg.data.path.display()
            ),
        },
        weights_sha256: None,
    };
    Ok(models::onnx::export(&graph, &weights, &manifest, cfg.model.image_size, out)?)
}
