//! Runs a [`Graph`] on libtorch: parameters live in a `VarStore` under their
//! hierarchical names, so a state dict loads and saves by name.

use std::collections::HashMap;

use tch::{nn, Kind, Tensor};

use crate::graph::{Graph, Init, Op, ParamKind, ParamSpec};
use crate::weights::{self, Weights};
use crate::{Error, Output, Result};

/// A graph bound to parameters in a `VarStore`.
#[derive(Debug)]
pub struct Network {
    graph: Graph,
    specs: Vec<ParamSpec>,
    vars: HashMap<String, Tensor>,
    bn_frozen: bool,
}

/// Named outputs of one forward pass.
#[derive(Debug)]
pub struct Outputs(HashMap<String, Tensor>);

impl Outputs {
    /// The output `o`, or an error naming it and the outputs the graph has.
    pub fn get(&self, o: Output) -> Result<&Tensor> {
        self.0.get(o.name()).ok_or_else(|| {
            let mut have: Vec<&str> = self.0.keys().map(String::as_str).collect();
            have.sort_unstable();
            Error::MissingOutput { name: o.name().to_string(), available: have.join(", ") }
        })
    }

    /// An output of a graph with names of its own (not one of the STML networks').
    pub fn by_name(&self, name: &str) -> Option<&Tensor> {
        self.0.get(name)
    }
}

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
    pub fn load(
        &self,
        w: &Weights,
        arch: &str,
        ignore_prefixes: &[&str],
        optional: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
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
    pub fn load_file(
        &self,
        path: &std::path::Path,
        arch: &str,
        ignore_prefixes: &[&str],
        optional: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
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
                Op::Relu | Op::Relu6 => {
                    let src = node.inputs[0];
                    let six = matches!(node.op, Op::Relu6);
                    if uses[src] == 1 && output_not_saved_for_backward(&g.nodes[src].op) {
                        // In place, as torchvision's `inplace=True`: nothing else reads the
                        // input, and its producer's backward does not need it. Saves
                        // allocating (and page-faulting) one activation per layer.
                        let mut x = vals[src].take().expect("input computed before use");
                        if six {
                            x.relu6_()
                        } else {
                            x.relu_()
                        }
                    } else if six {
                        // hardtanh(0, 6), as torch.nn.ReLU6: one fused backward kernel,
                        // where clamp's backward takes several passes over the tensor.
                        inp(0).relu6()
                    } else {
                        inp(0).relu()
                    }
                }
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
                    let xs: Vec<&Tensor> =
                        node.inputs.iter().map(|&i| vals[i].as_ref().expect("input computed")).collect();
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
        let mut out = HashMap::new();
        for (name, id) in &g.outputs {
            let value = vals[*id].as_ref().ok_or_else(|| Error::MissingOutput {
                name: name.clone(),
                available: "(the graph's outputs; it is malformed: this one was never computed)".into(),
            })?;
            out.insert(name.clone(), value.shallow_clone());
        }
        Ok(Outputs(out))
    }
}

/// True for ops whose backward does not read their own output (convolution, batch norm
/// and sums need only their inputs), so an activation may overwrite that output in place.
fn output_not_saved_for_backward(op: &Op) -> bool {
    matches!(op, Op::Conv2d { .. } | Op::BatchNorm { .. } | Op::Add)
}

/// Writes a network's state dict atomically as safetensors.
pub fn save(net: &Network, path: &std::path::Path) -> Result<()> {
    net.to_weights().write(path, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{ConvOpts, GraphBuilder};
    use tch::{Device, Tensor};

    /// conv-bn-relu6 (in place), conv-bn (also an output, so its relu must not be in
    /// place), a residual sum and a relu on it (in place), global pooling.
    fn graph() -> crate::graph::Graph {
        let mut b = GraphBuilder::new();
        let x = b.input();
        let h = b.conv_bn(x, "c1", "b1", 3, 4, ConvOpts::k(3), 1e-5);
        let r6 = b.relu6(h);
        let h2 = b.conv_bn(r6, "c2", "b2", 4, 4, ConvOpts::k(1), 1e-5);
        b.output("b2", h2);
        let r = b.relu(h2);
        let sum = b.add(r6, r);
        let y = b.relu(sum);
        let pooled = b.global_avg_max_pool(y);
        b.output("y", pooled);
        b.finish()
    }

    const PARAMS: [&str; 6] = ["c1.weight", "b1.weight", "b1.bias", "c2.weight", "b2.weight", "b2.bias"];

    /// The same computation with out-of-place tch ops on leaf copies of the parameters.
    fn reference(net: &Network, xs: &Tensor) -> (Tensor, Tensor, Vec<Tensor>) {
        let leaf = |n: &str| net.param(n).unwrap().detach().copy().set_requires_grad(true);
        let buf = |n: &str| net.param(n).unwrap().detach().copy();
        let leaves: Vec<Tensor> = PARAMS.iter().map(|n| leaf(n)).collect();
        let [c1, b1w, b1b, c2, b2w, b2b] = [0, 1, 2, 3, 4, 5].map(|i| leaves[i].shallow_clone());
        let bn = |x: &Tensor, w: &Tensor, b: &Tensor, name: &str| {
            let (m, v) = (buf(&format!("{name}.running_mean")), buf(&format!("{name}.running_var")));
            Tensor::batch_norm(x, Some(w), Some(b), Some(&m), Some(&v), true, 0.1, 1e-5, false)
        };
        let h = bn(&xs.conv2d(&c1, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1), &b1w, &b1b, "b1");
        let r6 = h.clamp(0.0, 6.0);
        let h2 = bn(&r6.conv2d(&c2, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1), &b2w, &b2b, "b2");
        let y = (&r6 + h2.relu()).relu();
        let pooled = y.mean_dim([2i64, 3].as_slice(), false, Kind::Float) + y.amax([2i64, 3].as_slice(), false);
        (pooled, h2, leaves)
    }

    #[test]
    fn in_place_activations_keep_values_and_gradients() {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), graph());
        // A large BN scale drives activations past 6, so both ends of relu6 are exercised.
        tch::no_grad(|| {
            let _ = net.param("b1.weight").unwrap().shallow_clone().fill_(4.0);
        });
        let xs = Tensor::randn([5, 3, 6, 6], (Kind::Float, Device::Cpu));

        let (want, want_b2, leaves) = reference(&net, &xs);
        (&want * &want).sum(Kind::Float).backward();
        let out = net.forward(&xs, true).unwrap();
        let y = out.by_name("y").expect("y");
        (y * y).sum(Kind::Float).backward();

        assert!(want.ge(6.0).any().int64_value(&[]) == 1, "the test must reach relu6's ceiling");
        assert!(y.allclose(&want, 1e-5, 1e-6, false), "pooled output differs");
        assert!(
            out.by_name("b2").expect("b2").allclose(&want_b2, 1e-5, 1e-6, false),
            "a graph output was overwritten in place"
        );
        for (name, leaf) in PARAMS.iter().zip(&leaves) {
            let got = net.param(name).unwrap().grad();
            assert!(got.allclose(&leaf.grad(), 1e-4, 1e-5, false), "gradient of {name} differs");
        }
    }
}
