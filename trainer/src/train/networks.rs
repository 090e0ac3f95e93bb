//! The networks a run trains: the student, its momentum teacher, the optimiser over the
//! student's parameters, and their checkpoints.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use models::net::Network;
use models::weights::{self, Weights};
use models::{Arch, HEAD_F, HEAD_PREFIX};
use tch::{nn::VarStore, Device, Kind, Tensor};
use tracing::{info, warn};

use crate::config::TrainConfig;
use crate::error::Result;
use crate::optim::{Optimizer, OptimizerConfig, ParamGroup};
use crate::run::{RunDir, RunState, METRICS, OPTIMIZER, STUDENT, TEACHER};

/// The student and its momentum teacher.
pub struct Networks {
    pub vs_student: VarStore,
    pub student: Network,
    pub vs_teacher: VarStore,
    pub teacher: Network,
}

/// Default pretrained weights that scripts/setup.sh installed for an architecture.
pub fn default_weights(arch: Arch) -> Option<PathBuf> {
    let file = arch.pretrained_file()?;
    let deps =
        std::env::var_os("STML_DEPS").map(PathBuf::from).or_else(|| option_env!("STML_DEPS").map(PathBuf::from))?;
    Some(deps.join("weights").join(file))
}

/// Builds student and teacher; loads backbone weights into the student; the teacher
/// starts as an exact copy (a deliberate difference from the reference, see
/// docs/algorithm.md).
pub fn build_networks(cfg: &TrainConfig, device: Device) -> Result<Networks> {
    let arch = cfg.model.arch;
    let vs_student = VarStore::new(device);
    let mut student = Network::new(&vs_student.root(), cfg.model.student_graph());
    let weights = cfg.weights.clone().or_else(|| default_weights(arch));
    match &weights {
        Some(w) if w.exists() || cfg.weights.is_some() => {
            student.load_file(w, arch.name(), arch.classifier_prefixes(), &|n| n.starts_with(HEAD_PREFIX))?;
            info!("backbone weights: {}", w.display());
        }
        Some(w) => warn!(
            "no pretrained weights at {} (run scripts/setup.sh); {} starts from random initialisation",
            w.display(),
            arch.name()
        ),
        None => warn!(
            "{} has no pretrained weights here; starting from random initialisation (pass --weights FILE)",
            arch.name()
        ),
    }
    student.freeze_bn(cfg.optim.bn_freeze);
    let mut vs_teacher = VarStore::new(device);
    let teacher = Network::new(&vs_teacher.root(), cfg.model.teacher_graph());
    let f_head = format!("{HEAD_F}.");
    teacher.load(&student.to_weights(), arch.name(), &[f_head.as_str()], &|_| false)?;
    vs_teacher.freeze();
    Ok(Networks { vs_student, student, vs_teacher, teacher })
}

/// The optimizer's two parameter groups: backbone (lr) and heads (emb_lr).
pub fn build_optimizer(cfg: &TrainConfig, student: &Network) -> Result<Optimizer> {
    let frozen: HashSet<String> =
        if cfg.optim.bn_freeze { student.bn_param_names().into_iter().collect() } else { HashSet::new() };
    let mut backbone = Vec::new();
    let mut heads = Vec::new();
    for spec in student.specs() {
        if spec.kind != models::graph::ParamKind::Trainable || frozen.contains(&spec.name) {
            continue;
        }
        let Some(t) = student.param(&spec.name) else { continue };
        let group = if spec.name.starts_with(HEAD_PREFIX) { &mut heads } else { &mut backbone };
        group.push((spec.name.clone(), t.shallow_clone()));
    }
    let oc = OptimizerConfig {
        algorithm: cfg.optim.optimizer,
        weight_decay: cfg.optim.weight_decay,
        ..OptimizerConfig::default()
    };
    Ok(Optimizer::new(
        oc,
        vec![ParamGroup { lr: cfg.optim.lr, params: backbone }, ParamGroup { lr: cfg.optim.emb_lr, params: heads }],
    )?)
}

/// Restores student, teacher and optimiser state from a checkpoint folder.
pub fn load_checkpoint(
    nets: &Networks,
    opt: &mut Optimizer,
    ck: &Path,
    cfg: &TrainConfig,
    device: Device,
) -> Result<()> {
    let arch = cfg.model.arch.name();
    nets.student.load_file(&ck.join(STUDENT), arch, &[], &|_| false)?;
    nets.teacher.load_file(&ck.join(TEACHER), arch, &[], &|_| false)?;
    let st = Weights::read(&ck.join(OPTIMIZER))?;
    let named: Vec<(String, Tensor)> = st
        .tensors
        .iter()
        .map(|(k, t)| {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            (k.clone(), Tensor::from_slice(&t.data).reshape(shape).to_device(device))
        })
        .collect();
    opt.load_state(&named)?;
    Ok(())
}

/// Writes the checkpoint of `epoch` (atomically; the two latest are kept), with the
/// epoch's line of metrics.jsonl.
pub fn save_checkpoint(
    run: &RunDir,
    nets: &Networks,
    opt: &Optimizer,
    epoch: usize,
    state: &RunState,
    metrics: &serde_json::Value,
) -> Result<()> {
    run.save_checkpoint(
        epoch,
        state,
        |dir| {
            nets.student.to_weights().write(&dir.join(STUDENT), None)?;
            crate::run::killpoint::reached("checkpoint.student");
            nets.teacher.to_weights().write(&dir.join(TEACHER), None)?;
            let mut w = Weights::default();
            for (name, t) in opt.state_tensors() {
                let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
                let shape = t.size().iter().map(|&d| d as usize).collect();
                let data = Vec::<f32>::try_from(t.view(-1))?;
                w.tensors.insert(name, weights::Tensor { shape, data });
            }
            w.write(&dir.join(OPTIMIZER), None)?;
            let p = dir.join(METRICS);
            weights::write_atomic(&p, metrics.to_string().as_bytes()).map_err(crate::error::io_err(&p))
        },
        2,
    )?;
    Ok(())
}
