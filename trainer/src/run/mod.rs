//! A run directory: the resolved config, checkpoints written atomically, the metrics
//! log, and the pictures.
//!
//! ```text
//! RUN/config.toml             resolved configuration (what `--resume`, eval, export rebuild)
//! RUN/metrics.jsonl           one JSON object per epoch (and per evaluation)
//! RUN/LATEST                  name of the newest complete checkpoint folder
//! RUN/checkpoints/epoch-0007/ student.safetensors, teacher.safetensors,
//!                             optimizer.safetensors, metrics.json, state.json
//! RUN/loss.png, recall.png, retrieval.png
//! ```
//! A checkpoint folder is written under a temporary name, synced, then renamed; only then
//! is `LATEST` replaced (atomically). A kill -9 at any moment leaves `LATEST` naming a
//! complete checkpoint.

pub mod killpoint;
pub mod plots;
pub mod report;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{io_err, Result, TrainError};

/// Progress saved with a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs fully completed (training resumes at this epoch index).
    pub epochs_done: usize,
    /// Optimiser steps taken so far.
    pub global_step: usize,
    /// Images that could not be decoded so far (skipped, with a warning each).
    pub skipped_images: usize,
    /// Seconds spent training so far.
    pub train_seconds: f64,
}

/// An open run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

/// Names of a checkpoint's files.
pub const STUDENT: &str = "student.safetensors";
pub const TEACHER: &str = "teacher.safetensors";
pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const STATE: &str = "state.json";
/// The checkpoint's epoch line of metrics.jsonl (restored from here if a kill lost it).
pub const METRICS: &str = "metrics.json";

impl RunDir {
    /// Creates a new run directory; refuses to overwrite an existing run.
    pub fn create(root: &Path, config: &TrainConfig) -> Result<Self> {
        if root.join("config.toml").exists() {
            return Err(TrainError::Run {
                path: root.into(),
                reason: "already holds a run; pass --resume to continue it, or choose another --out".into(),
            });
        }
        std::fs::create_dir_all(root.join("checkpoints")).map_err(io_err(root))?;
        let run = Self { root: root.into() };
        run.write_file("config.toml", config.to_toml().as_bytes())?;
        Ok(run)
    }

    /// Opens an existing run directory.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join("config.toml").is_file() {
            return Err(TrainError::Run {
                path: root.into(),
                reason: "is not a run directory (no config.toml); pass the --out folder of a `trainer fit`".into(),
            });
        }
        Ok(Self { root: root.into() })
    }

    pub fn config(&self) -> Result<TrainConfig> {
        TrainConfig::from_file(&self.root.join("config.toml"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes a file in the run directory atomically.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.root.join(name);
        models::weights::write_atomic(&p, bytes).map_err(io_err(p))
    }

    /// Appends one JSON line to metrics.jsonl.
    pub fn log_metrics(&self, value: &serde_json::Value) -> Result<()> {
        let p = self.root.join("metrics.jsonl");
        // A line torn by a crash (no newline at the end) must not swallow this one.
        let torn = std::fs::read(&p).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n'));
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(io_err(&p))?;
        if torn {
            writeln!(f).map_err(io_err(&p))?;
        }
        writeln!(f, "{value}").map_err(io_err(&p))?;
        f.sync_data().map_err(io_err(&p))
    }

    /// Every metrics line, in order (lines that do not parse, e.g. torn by a crash, are
    /// skipped). An epoch trained again after a resume replaces its earlier line.
    pub fn metrics(&self) -> Vec<serde_json::Value> {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(self.root.join("metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let epoch = |m: &serde_json::Value| m.get("epoch").and_then(|e| e.as_u64());
        let last: std::collections::HashMap<u64, usize> =
            lines.iter().enumerate().filter_map(|(i, m)| Some((epoch(m)?, i))).collect();
        lines.into_iter().enumerate().filter(|(i, m)| epoch(m).is_none_or(|e| last[&e] == *i)).map(|(_, m)| m).collect()
    }

    /// Appends the metrics line saved in checkpoint `ck` to metrics.jsonl unless its epoch
    /// has a line there already (a kill between the checkpoint and the log loses it).
    pub fn restore_metrics(&self, ck: &Path) -> Result<()> {
        let p = ck.join(METRICS);
        let Ok(text) = std::fs::read_to_string(&p) else { return Ok(()) };
        let line: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Run { path: p.clone(), reason: format!("corrupt metrics line: {e}") })?;
        let epoch = |m: &serde_json::Value| m.get("epoch").and_then(|e| e.as_u64());
        if epoch(&line).is_some() && !self.metrics().iter().any(|m| epoch(m) == epoch(&line)) {
            tracing::info!(
                "metrics.jsonl lacked epoch {}'s line (stopped just after its checkpoint): restored it",
                line["epoch"]
            );
            self.log_metrics(&line)?;
        }
        Ok(())
    }

    /// The newest complete checkpoint folder, if any.
    pub fn latest_checkpoint(&self) -> Option<PathBuf> {
        let name = std::fs::read_to_string(self.root.join("LATEST")).ok()?;
        let dir = self.root.join("checkpoints").join(name.trim());
        dir.join(STATE).is_file().then_some(dir)
    }

    /// Writes a checkpoint: `write(dir)` fills a temporary folder, which is synced and
    /// renamed, then `LATEST` is switched to it and older checkpoints beyond `keep` removed.
    pub fn save_checkpoint(
        &self,
        epoch: usize,
        state: &RunState,
        write: impl FnOnce(&Path) -> Result<()>,
        keep: usize,
    ) -> Result<PathBuf> {
        let ckdir = self.root.join("checkpoints");
        let name = format!("epoch-{epoch:04}");
        let tmp = ckdir.join(format!(".{name}.tmp"));
        let dst = ckdir.join(&name);
        // Folders of writes cut short (a kill mid-checkpoint) are never complete: remove them.
        for e in std::fs::read_dir(&ckdir).map_err(io_err(&ckdir))?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".epoch-") && n.ends_with(".tmp") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        write(&tmp)?;
        killpoint::reached("checkpoint.files");
        let st = serde_json::to_vec_pretty(state).expect("state serialises");
        models::weights::write_atomic(&tmp.join(STATE), &st).map_err(io_err(tmp.join(STATE)))?;
        if dst.exists() {
            std::fs::remove_dir_all(&dst).map_err(io_err(&dst))?;
        }
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        if let Ok(d) = std::fs::File::open(&ckdir) {
            let _ = d.sync_all();
        }
        killpoint::reached("checkpoint.renamed");
        self.write_file("LATEST", name.as_bytes())?;
        killpoint::reached("checkpoint.latest");
        // Prune older complete checkpoints.
        let mut all: Vec<PathBuf> = std::fs::read_dir(&ckdir)
            .map_err(io_err(&ckdir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("epoch-")))
            .collect();
        all.sort();
        if all.len() > keep {
            for old in &all[..all.len() - keep] {
                if old != &dst {
                    let _ = std::fs::remove_dir_all(old);
                }
            }
        }
        Ok(dst)
    }

    /// Reads a checkpoint's progress.
    pub fn read_state(dir: &Path) -> Result<RunState> {
        let p = dir.join(STATE);
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Run { path: p, reason: format!("corrupt state.json: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_always_names_a_complete_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig::defaults("x".into());
        let run = RunDir::create(dir.path(), &cfg).unwrap();
        assert!(run.latest_checkpoint().is_none());
        for e in 0..4 {
            let st = RunState { epochs_done: e + 1, ..Default::default() };
            run.save_checkpoint(
                e,
                &st,
                |d| {
                    std::fs::write(d.join("x"), b"1").unwrap();
                    Ok(())
                },
                2,
            )
            .unwrap();
        }
        let latest = run.latest_checkpoint().unwrap();
        assert!(latest.ends_with("epoch-0003"));
        assert_eq!(RunDir::read_state(&latest).unwrap().epochs_done, 4);
        let n = std::fs::read_dir(dir.path().join("checkpoints")).unwrap().count();
        assert_eq!(n, 2);
        // A failing writer leaves LATEST where it was.
        let r = run.save_checkpoint(9, &RunState::default(), |_| Err(TrainError::Config("boom".into())), 2);
        assert!(r.is_err());
        assert!(run.latest_checkpoint().unwrap().ends_with("epoch-0003"));
        assert!(RunDir::create(dir.path(), &cfg).is_err());
    }
}
