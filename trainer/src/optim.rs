//! Optimisers for the student: AdamP (the paper's default; Heo et al., ICLR 2021), AdamW
//! and SGD with momentum, behind one [`Optimizer`] with per-group learning rates and a
//! state that checkpoints as named tensors; plus the cosine learning-rate schedule.

use std::collections::{HashMap, HashSet};
use std::f64::consts::PI;

use serde::{Deserialize, Serialize};
use tch::{TchError, Tensor};

/// Which update rule an [`Optimizer`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Adam with projection of the radial update component of scale-invariant weights
    /// and decoupled weight decay (clovaai/AdamP).
    #[default]
    #[value(name = "adamp")]
    AdamP,
    /// Adam with decoupled weight decay (`torch.optim.AdamW`).
    #[value(name = "adamw")]
    AdamW,
    /// SGD with momentum and L2 weight decay (`torch.optim.SGD`).
    Sgd,
}

/// Hyper-parameters shared by all groups (the learning rate is per group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizerConfig {
    pub algorithm: Algorithm,
    /// Decoupled (AdamP, AdamW) or L2 (SGD) weight decay.
    pub weight_decay: f64,
    /// Adam's `(beta1, beta2)`.
    pub betas: (f64, f64),
    /// Adam's denominator epsilon; also AdamP's cosine and norm epsilon.
    pub eps: f64,
    /// Nesterov momentum (AdamP and SGD; AdamW has none).
    pub nesterov: bool,
    /// AdamP: a weight counts as scale-invariant when `|cos(grad, w)| < delta / sqrt(dim)`.
    pub delta: f64,
    /// AdamP: weight decay is scaled by this on projected weights.
    pub wd_ratio: f64,
    /// SGD momentum.
    pub momentum: f64,
}

impl Default for OptimizerConfig {
    /// The paper's AdamP: weight decay 1e-2, Nesterov, `delta = 0.1`, `wd_ratio = 0.1`.
    fn default() -> Self {
        Self {
            algorithm: Algorithm::AdamP,
            weight_decay: 1e-2,
            betas: (0.9, 0.999),
            eps: 1e-8,
            nesterov: true,
            delta: 0.1,
            wd_ratio: 0.1,
            momentum: 0.9,
        }
    }
}

/// Parameters that share a learning rate (STML: the backbone, and the two heads with
/// `emb_lr`).
#[derive(Debug)]
pub struct ParamGroup {
    pub lr: f64,
    /// `(name, parameter)`; names key the optimizer state in checkpoints.
    pub params: Vec<(String, Tensor)>,
}

/// Per-parameter state. Adam uses both moments, SGD only `exp_avg` (its momentum buffer).
#[derive(Debug)]
struct Slot {
    name: String,
    group: usize,
    param: Tensor,
    /// Steps this parameter has taken (it skips steps in which it had no gradient).
    steps: i64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// One optimizer over several parameter groups.
///
/// Usage per training step: `zero_grad()`, `loss.backward()`, `step()`.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    lrs: Vec<f64>,
    slots: Vec<Slot>,
    step_count: i64,
}

impl Optimizer {
    /// Creates the optimizer and its (zero) state for every parameter.
    ///
    /// Errors when a parameter name appears twice or a parameter is not floating point.
    pub fn new(config: OptimizerConfig, groups: Vec<ParamGroup>) -> Result<Self, TchError> {
        let mut seen = HashSet::new();
        let mut lrs = Vec::with_capacity(groups.len());
        let mut slots = Vec::new();
        for (group, g) in groups.into_iter().enumerate() {
            lrs.push(g.lr);
            for (name, param) in g.params {
                if !seen.insert(name.clone()) {
                    return Err(TchError::Convert(format!(
                        "parameter {name} is listed twice in the optimizer's groups; give each parameter to one group"
                    )));
                }
                if !param.is_floating_point() {
                    return Err(TchError::Kind(format!(
                        "parameter {name} is {:?}; only floating-point tensors can be optimised",
                        param.kind()
                    )));
                }
                let exp_avg = param.zeros_like().detach();
                let exp_avg_sq = param.zeros_like().detach();
                slots.push(Slot { name, group, param, steps: 0, exp_avg, exp_avg_sq });
            }
        }
        Ok(Self { config, lrs, slots, step_count: 0 })
    }

    /// The configuration this optimizer was built with.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Number of parameter groups.
    pub fn num_groups(&self) -> usize {
        self.lrs.len()
    }

    /// Learning rate of a group.
    pub fn lr(&self, group: usize) -> Option<f64> {
        self.lrs.get(group).copied()
    }

    /// Sets the learning rate of a group (e.g. from [`cosine_lr`] at each epoch).
    pub fn set_lr(&mut self, group: usize, lr: f64) -> Result<(), TchError> {
        let groups = self.lrs.len();
        let slot = self.lrs.get_mut(group).ok_or_else(|| {
            TchError::Convert(format!("optimizer group {group} does not exist; there are {groups} groups"))
        })?;
        *slot = lr;
        Ok(())
    }

    /// Number of [`Optimizer::step`] calls so far (restored by [`Optimizer::load_state`]).
    pub fn step_count(&self) -> i64 {
        self.step_count
    }

    /// Zeroes the gradient of every parameter.
    pub fn zero_grad(&mut self) {
        for slot in &mut self.slots {
            slot.param.zero_grad();
        }
    }

    /// Updates every parameter that has a gradient.
    pub fn step(&mut self) {
        let _guard = tch::no_grad_guard();
        self.step_count += 1;
        let config = self.config.clone();
        for slot in &mut self.slots {
            let grad = slot.param.grad();
            if !grad.defined() {
                continue;
            }
            let lr = self.lrs[slot.group];
            slot.steps += 1;
            match config.algorithm {
                Algorithm::AdamP => adamp_update(slot, &grad, lr, &config),
                Algorithm::AdamW => adamw_update(slot, &grad, lr, &config),
                Algorithm::Sgd => sgd_update(slot, &grad, lr, &config),
            }
        }
    }

    /// The optimizer state as named tensors, for checkpoints: for every parameter
    /// `{name}.exp_avg`, `{name}.exp_avg_sq` and `{name}.step` (an `i64` scalar), plus
    /// `optimizer.step` and `optimizer.group{i}.lr`.
    ///
    /// The moment tensors share storage with the live state: write them out before the
    /// next [`Optimizer::step`].
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.slots.len() + 1 + self.lrs.len());
        out.push(("optimizer.step".to_string(), Tensor::from(self.step_count)));
        for (i, lr) in self.lrs.iter().enumerate() {
            out.push((format!("optimizer.group{i}.lr"), Tensor::from(*lr)));
        }
        for slot in &self.slots {
            out.push((format!("{}.exp_avg", slot.name), slot.exp_avg.shallow_clone()));
            out.push((format!("{}.exp_avg_sq", slot.name), slot.exp_avg_sq.shallow_clone()));
            out.push((format!("{}.step", slot.name), Tensor::from(slot.steps)));
        }
        out
    }

    /// Restores a state written by [`Optimizer::state_tensors`] (other names are ignored,
    /// so a whole checkpoint can be passed). Every name this optimizer needs must be
    /// present with the parameter's shape.
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<(), TchError> {
        let by_name: HashMap<&str, &Tensor> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let get = |name: &str| -> Result<&Tensor, TchError> {
            by_name
                .get(name)
                .copied()
                .ok_or_else(|| TchError::TensorNameNotFound(name.to_string(), "the optimizer state".into()))
        };
        let scalar_i64 = |name: &str| -> Result<i64, TchError> { get(name)?.f_int64_value(&[]) };
        let step_count = scalar_i64("optimizer.step")?;
        let mut lrs = Vec::with_capacity(self.lrs.len());
        for i in 0..self.lrs.len() {
            lrs.push(get(&format!("optimizer.group{i}.lr"))?.f_double_value(&[])?);
        }
        // Check everything before changing anything, so a bad file leaves the state intact.
        let mut loaded = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let mut moments = Vec::with_capacity(2);
            for suffix in ["exp_avg", "exp_avg_sq"] {
                let name = format!("{}.{suffix}", slot.name);
                let t = get(&name)?;
                if t.size() != slot.param.size() {
                    return Err(TchError::Shape(format!(
                        "optimizer state {name} has shape {:?} but parameter {} has {:?}; the checkpoint belongs to another model",
                        t.size(),
                        slot.name,
                        slot.param.size()
                    )));
                }
                moments.push(t.to_device(slot.param.device()).to_kind(slot.param.kind()));
            }
            loaded.push((scalar_i64(&format!("{}.step", slot.name))?, moments));
        }
        tch::no_grad(|| {
            for (slot, (steps, moments)) in self.slots.iter_mut().zip(loaded) {
                slot.steps = steps;
                slot.exp_avg.copy_(&moments[0]);
                slot.exp_avg_sq.copy_(&moments[1]);
            }
        });
        self.step_count = step_count;
        self.lrs = lrs;
        Ok(())
    }
}

/// Adam's moment updates and bias-corrected denominator; returns `(denom, step_size)`.
fn adam_moments(slot: &mut Slot, grad: &Tensor, lr: f64, config: &OptimizerConfig) -> (Tensor, f64) {
    let (beta1, beta2) = config.betas;
    let _ = slot.exp_avg.lerp_(grad, 1.0 - beta1); // b1 m + (1 - b1) g
    let _ = slot.exp_avg_sq.lerp_(&grad.square(), 1.0 - beta2); // b2 v + (1 - b2) g²
    let bias_correction1 = 1.0 - beta1.powi(slot.steps as i32);
    let bias_correction2 = 1.0 - beta2.powi(slot.steps as i32);
    let mut denom = slot.exp_avg_sq.sqrt();
    let _ = denom.g_div_scalar_(bias_correction2.sqrt());
    let _ = denom.g_add_scalar_(config.eps);
    (denom, lr / bias_correction1)
}

/// AdamP (Heo et al., ICLR 2021):
///
/// ```text
/// m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g²
/// denom = sqrt(v) / sqrt(1 - b2^t) + eps
/// u = (b1 m + (1 - b1) g) / denom   (Nesterov)   or   m / denom
/// if w has more than one dimension: u, r = projection(w, g, u)   else r = 1
/// w <- w (1 - lr wd r) - lr / (1 - b1^t) u
/// ```
fn adamp_update(slot: &mut Slot, grad: &Tensor, lr: f64, config: &OptimizerConfig) {
    let beta1 = config.betas.0;
    let (denom, step_size) = adam_moments(slot, grad, lr, config);
    let mut perturb = if config.nesterov {
        grad.lerp(&slot.exp_avg, beta1) // b1 m + (1 - b1) g
    } else {
        slot.exp_avg.copy()
    };
    let _ = perturb.g_div_(&denom);
    let p = &mut slot.param;
    let wd_scale = if p.dim() > 1 {
        project_scale_invariant(p, grad, &mut perturb, config.delta, config.wd_ratio, config.eps)
    } else {
        1.0
    };
    if config.weight_decay > 0.0 {
        let _ = p.g_mul_scalar_(1.0 - lr * config.weight_decay * wd_scale);
    }
    let _ = perturb.g_mul_scalar_(-step_size);
    let _ = p.g_add_(&perturb);
}

/// AdamP's projection. Tries the channel view (rows `w_r` of `[out, rest]`) then the layer
/// view (the whole tensor as one row): if in every row
/// `|cos(g_r, w_r)| < delta / sqrt(row length)`, the weight is treated as scale-invariant
/// there and the radial part of the update is removed in place,
/// `u_r <- u_r - ŵ_r (ŵ_r · u_r)` with `ŵ_r = w_r / (||w_r|| + eps)`; the returned
/// weight-decay scale is then `wd_ratio`, else 1. Norms are clamped at `eps` in the cosine,
/// as in `F.cosine_similarity`.
///
/// Works from per-channel dot products, so the layer view costs no extra pass over the
/// weight, and reads one pair of numbers back from the device.
///
/// # Shapes
/// - `p`, `grad`, `perturb`: the parameter's shape, at least 2-D
fn project_scale_invariant(
    p: &Tensor,
    grad: &Tensor,
    perturb: &mut Tensor,
    delta: f64,
    wd_ratio: f64,
    eps: f64,
) -> f64 {
    let shape = p.size();
    let rows = shape[0];
    let row_len = p.numel() as i64 / rows.max(1);
    let (p_rows, g_rows) = (p.reshape([rows, -1]), grad.reshape([rows, -1])); // [rows, L]
                                                                              // <a_r, b_r> for every row r (faster on CPU than a batched matrix product).
    let row_dot = |a: &Tensor, b: &Tensor| (a * b).sum_dim_intlist(1, false, None); // [rows]
    let gp = row_dot(&g_rows, &p_rows);
    let pp = row_dot(&p_rows, &p_rows);
    let gg = row_dot(&g_rows, &g_rows);
    let cosine =
        |gp: &Tensor, gg: &Tensor, pp: &Tensor| gp.abs() / (gg.sqrt().clamp_min(eps) * pp.sqrt().clamp_min(eps));
    let channel_cos = cosine(&gp, &gg, &pp).max();
    let layer_cos = cosine(&gp.sum(gp.kind()), &gg.sum(gg.kind()), &pp.sum(pp.kind()));
    let cos = Vec::<f64>::try_from(&Tensor::stack(&[channel_cos, layer_cos], 0)).unwrap_or_default();
    let fires = |i: usize, len: i64| cos.get(i).is_some_and(|&c| c < delta / (len as f64).sqrt());
    // u <- u - w <w, u> / (||w|| + eps)^2, per row (channel) or over the whole tensor.
    let coef = if fires(0, row_len) {
        let pu = row_dot(&p_rows, &perturb.reshape([rows, -1]));
        let mut expand = vec![1i64; shape.len()];
        expand[0] = rows;
        (pu / (pp.sqrt() + eps).square()).reshape(expand)
    } else if fires(1, rows * row_len) {
        let pu = row_dot(&p_rows, &perturb.reshape([rows, -1])).sum(pp.kind());
        pu / (pp.sum(pp.kind()).sqrt() + eps).square()
    } else {
        return 1.0;
    };
    let _ = perturb.addcmul_(p, &coef.neg());
    wd_ratio
}

/// AdamW (`torch.optim.AdamW`): `w <- w (1 - lr wd)`, then `w <- w - lr / (1 - b1^t) m / denom`.
fn adamw_update(slot: &mut Slot, grad: &Tensor, lr: f64, config: &OptimizerConfig) {
    let _ = slot.param.g_mul_scalar_(1.0 - lr * config.weight_decay);
    let (denom, step_size) = adam_moments(slot, grad, lr, config);
    let update = &slot.exp_avg / denom * -step_size;
    let _ = slot.param.g_add_(&update);
}

/// SGD with momentum (`torch.optim.SGD`, no dampening): `d = g + wd w`,
/// `b <- mu b + d`, `w <- w - lr (d + mu b)` (Nesterov) or `w - lr b`.
fn sgd_update(slot: &mut Slot, grad: &Tensor, lr: f64, config: &OptimizerConfig) {
    let d = grad + &slot.param * config.weight_decay;
    let buf = &mut slot.exp_avg;
    let _ = buf.g_mul_scalar_(config.momentum);
    let _ = buf.g_add_(&d);
    let update = if config.nesterov { d + &*buf * config.momentum } else { buf.shallow_clone() };
    let _ = slot.param.g_add_(&(update * -lr));
}

/// Cosine annealing, as `torch.optim.lr_scheduler.CosineAnnealingLR` stepped once per
/// epoch: `lr(e) = eta_min + (base - eta_min) (1 + cos(pi e / T)) / 2`, for epoch
/// `e = 0, 1, ..., T`. With `T = 0` the rate stays at `base`.
pub fn cosine_lr(base: f64, epoch: usize, total_epochs: usize, eta_min: f64) -> f64 {
    if total_epochs == 0 {
        return base;
    }
    let progress = epoch as f64 / total_epochs as f64;
    eta_min + (base - eta_min) * (1.0 + (PI * progress).cos()) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn algorithm_names_match_the_cli_and_config() {
        for (name, algorithm) in [("adamp", Algorithm::AdamP), ("adamw", Algorithm::AdamW), ("sgd", Algorithm::Sgd)] {
            assert_eq!(Algorithm::from_str(name, false), Ok(algorithm));
            assert_eq!(serde_json::to_string(&algorithm).unwrap(), format!("\"{name}\""));
        }
    }
}
