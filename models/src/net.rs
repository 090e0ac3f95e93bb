//! Runs a [`Graph`] on libtorch: parameters live in a `VarStore` under their
//! hierarchical names, so a state dict loads and saves by name.

use std::collections::HashMap;

use tch::{nn, Kind, Tensor};

use crate::graph::{Graph, Init, Op, ParamKind, ParamSpec};
use crate::weights::{self, Weights};
use crate::{Error, Result};

/// A graph bound to parameters in a `VarStore`.
#[derive(Debug)]
pub struct Network {
    graph: Graph,
    specs: Vec<ParamSpec>,
    vars: HashMap<String, Tensor>,
    bn_frozen: bool,
}

/// Named outputs of one forward pass.
pub type Outputs = HashMap<String, Tensor>;

fn var(path: &nn::Path, spec: &ParamSpec) -> Tensor {
    let mut p = path.clone();
    let parts: Vec<&str> = spec.name.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        p = p.sub(*part);
    }
    let leaf = parts[parts.len() - 1];
    let dims: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
    let init = match spec.init {
        Init::KaimingConv => nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        Init::LinearDefault { fan_in } => {
            let bound = 1.0 / (fan_in as f64).sqrt();
            nn::Init::Uniform { lo: -bound, up: bound }
        }
        Init::Orthogonal => nn::Init::Orthogonal { gain: 1.0 },
        Init::Zeros => nn::Init::Const(0.0),
        Init::Ones => nn::Init::Const(1.0),
    };
    match spec.kind {
        ParamKind::Trainable => p.var(leaf, &dims, init),
        ParamKind::Buffer => {
            let t = p.var(leaf, &dims, init);
            t.set_requires_grad(false)
        }
    }
}

impl Network {
    /// Creates the graph's parameters under `path` with their default initialisation.
    pub fn new(path: &nn::Path, graph: Graph) -> Self {
        let specs = graph.params();
        let vars = specs.iter().map(|s| (s.name.clone(), var(path, s))).collect();
        Self { graph, specs, vars, bn_frozen: false }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The tensor of one parameter or buffer.
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.vars.get(name)
    }

    /// Names of the batch-norm affine parameters (frozen with [`Network::freeze_bn`]).
    pub fn bn_param_names(&self) -> Vec<String> {
        self.graph
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::BatchNorm { name, .. } => Some([format!("{name}.weight"), format!("{name}.bias")]),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Batch-norm freeze: BN layers always use running statistics and their affine
    /// parameters stop receiving gradients.
    pub fn freeze_bn(&mut self, frozen: bool) {
        self.bn_frozen = frozen;
        for name in self.bn_param_names() {
            if let Some(t) = self.vars.get(&name) {
                let _ = t.set_requires_grad(!frozen);
            }
        }
    }

    /// Copies weights in by name. Missing names for which `optional` is true keep their
    /// initialisation; anything else that does not match is an error naming the tensors.
    pub fn load(&self, w: &Weights, arch: &str, ignore_prefixes: &[&str], optional: &dyn Fn(&str) -> bool) -> Result<()> {
        w.check(arch, &self.specs, ignore_prefixes, optional)?;
        tch::no_grad(|| {
            for (name, t) in &self.vars {
                if let Some(src) = w.get(name) {
                    let src = Tensor::from_slice(&src.data)
                        .reshape(src.shape.iter().map(|&d| d as i64).collect::<Vec<_>>())
                        .to_device(t.device())
                        .to_kind(t.kind());
                    let mut t = t.shallow_clone();
                    t.copy_(&src);
                }
            }
        });
        Ok(())
    }

    /// Loads a safetensors file (see [`Network::load`]).
    pub fn load_file(&self, path: &std::path::Path, arch: &str, ignore_prefixes: &[&str], optional: &dyn Fn(&str) -> bool) -> Result<()> {
        self.load(&Weights::read(path)?, arch, ignore_prefixes, optional)
    }

    /// Every parameter and buffer as plain f32 tensors (a state dict).
    pub fn to_weights(&self) -> Weights {
        let mut w = Weights::default();
        for (name, t) in &self.vars {
            let t = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let data = Vec::<f32>::try_from(t.view(-1)).expect("f32 tensor");
            w.tensors.insert(name.clone(), weights::Tensor { shape, data });
        }
        w
    }

    /// Runs the graph and returns all named outputs.
    ///
    /// # Shapes
    /// - `xs`: `[batch, 3, H, W]`
    /// - outputs: feature maps `[batch, c, h, w]` or vectors `[batch, d]`, as the graph says.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<Outputs> {
        let g = &self.graph;
        let mut uses = g.use_counts();
        let mut vals: Vec<Option<Tensor>> = (0..g.nodes.len()).map(|_| None).collect();
        let p = |name: &str, suffix: &str| -> Result<&Tensor> {
            let key = format!("{name}.{suffix}");
            self.vars.get(&key).ok_or_else(|| Error::Config(format!("parameter {key} is not defined")))
        };
        for (id, node) in g.nodes.iter().enumerate() {
            let inp = |k: usize| vals[node.inputs[k]].as_ref().expect("input computed before use");
            let y = match &node.op {
                Op::Input => xs.shallow_clone(),
                Op::Conv2d { name, stride, padding, groups, bias, .. } => {
                    let b = if *bias { Some(p(name, "bias")?) } else { None };
                    inp(0).f_conv2d(
                        p(name, "weight")?,
                        b,
                        [stride[0] as i64, stride[1] as i64],
                        [padding[0] as i64, padding[1] as i64],
                        [1, 1],
                        *groups as i64,
                    )?
                }
                Op::BatchNorm { name, eps, .. } => Tensor::batch_norm(
                    inp(0),
                    Some(p(name, "weight")?),
                    Some(p(name, "bias")?),
                    Some(p(name, "running_mean")?),
                    Some(p(name, "running_var")?),
                    train && !self.bn_frozen,
                    0.1,
                    *eps,
                    true,
                ),
                Op::Relu => inp(0).relu(),
                Op::Relu6 => inp(0).clamp(0.0, 6.0),
                Op::MaxPool { kernel, stride, padding, ceil_mode } => inp(0).max_pool2d(
                    [kernel[0] as i64, kernel[1] as i64],
                    [stride[0] as i64, stride[1] as i64],
                    [padding[0] as i64, padding[1] as i64],
                    [1, 1],
                    *ceil_mode,
                ),
                Op::AvgPool { kernel, stride, padding, ceil_mode, count_include_pad } => inp(0).avg_pool2d(
                    [kernel[0] as i64, kernel[1] as i64],
                    [stride[0] as i64, stride[1] as i64],
                    [padding[0] as i64, padding[1] as i64],
                    *ceil_mode,
                    *count_include_pad,
                    None,
                ),
                Op::Lrn { size, alpha, beta, bias } => {
                    let x = inp(0);
                    let s = *size as i64;
                    // Sum of squares over a window of `size` channels, as an average pool.
                    let sq = x.square().unsqueeze(1); // [b, 1, c, h, w]
                    let sq = sq.constant_pad_nd([0, 0, 0, 0, s / 2, (s - 1) / 2]);
                    let avg = sq.avg_pool3d([s, 1, 1], [1, 1, 1], [0, 0, 0], false, true, None).squeeze_dim(1);
                    x / (avg * *alpha + *bias).pow_tensor_scalar(*beta)
                }
                Op::Add => {
                    let mut acc = inp(0).shallow_clone();
                    for &i in &node.inputs[1..] {
                        acc = acc.f_add(vals[i].as_ref().expect("input computed"))?;
                    }
                    acc
                }
                Op::Concat => {
                    let xs: Vec<&Tensor> = node.inputs.iter().map(|&i| vals[i].as_ref().expect("input computed")).collect();
                    Tensor::f_cat(&xs, 1)?
                }
                Op::GlobalAvgMaxPool => {
                    let x = inp(0);
                    x.mean_dim([2i64, 3].as_slice(), false, Kind::Float) + x.amax([2i64, 3].as_slice(), false)
                }
                Op::GlobalAvgPool => inp(0).mean_dim([2i64, 3].as_slice(), false, Kind::Float),
                Op::Linear { name, bias, .. } => {
                    let b = if *bias { Some(p(name, "bias")?) } else { None };
                    inp(0).f_linear(p(name, "weight")?, b)?
                }
                Op::L2Normalize => {
                    let x = inp(0);
                    x / x.norm_scalaropt_dim(2, [1i64].as_slice(), true).clamp_min(1e-12)
                }
            };
            for &i in &node.inputs {
                uses[i] -= 1;
                if uses[i] == 0 {
                    vals[i] = None;
                }
            }
            vals[id] = Some(y);
        }
        Ok(g.outputs
            .iter()
            .map(|(name, id)| (name.clone(), vals[*id].as_ref().expect("output computed").shallow_clone()))
            .collect())
    }
}

/// Writes a network's state dict atomically as safetensors.
pub fn save(net: &Network, path: &std::path::Path) -> Result<()> {
    net.to_weights().write(path, None)
}
