//! The one definition of a network: a small graph of named operations. The same graph
//! is run by libtorch for training (`net`, behind the `tch` feature) and written out as
//! ONNX for serving (`onnx`), so the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// Index of a node in a [`Graph`].
pub type NodeId = usize;

/// One operation. Tensors are NCHW until a global pool makes them `[batch, channels]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The image batch `[batch, 3, H, W]`.
    Input,
    /// 2-D convolution; parameters `{name}.weight` `[out, in/groups, kh, kw]` and
    /// `{name}.bias` `[out]` when `bias`. Symmetric zero padding.
    Conv2d {
        name: String,
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        groups: usize,
        bias: bool,
    },
    /// Batch norm; `{name}.weight`, `.bias` (trained) and `.running_mean`, `.running_var` (buffers).
    BatchNorm {
        name: String,
        channels: usize,
        eps: f64,
    },
    Relu,
    Relu6,
    MaxPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
    },
    AvgPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
        count_include_pad: bool,
    },
    /// Local response normalisation across channels (Caffe / ONNX semantics):
    /// `x / (bias + alpha / size * sum_{window} x^2) ^ beta`.
    Lrn {
        size: usize,
        alpha: f64,
        beta: f64,
        bias: f64,
    },
    /// Element-wise sum of the inputs (residual connections).
    Add,
    /// Concatenation along channels.
    Concat,
    /// STML pooling: global average pool + global max pool, added. `[b, c, h, w] -> [b, c]`.
    GlobalAvgMaxPool,
    /// Global average pool. `[b, c, h, w] -> [b, c]`.
    GlobalAvgPool,
    /// Fully connected layer: `{name}.weight` `[out, in]`, `{name}.bias` `[out]`.
    Linear {
        name: String,
        in_features: usize,
        out_features: usize,
        bias: bool,
        init: LinearInit,
    },
    /// Row-wise L2 normalisation of `[b, d]`.
    L2Normalize,
}

/// How a linear layer is initialised when no weights are loaded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinearInit {
    /// PyTorch's default (Kaiming-uniform with a = sqrt(5), uniform bias).
    Default,
    /// Orthogonal weight, zero bias: STML's embedding heads.
    Orthogonal,
}

/// Whether a parameter is trained by gradients or is a running statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Trainable,
    Buffer,
}

/// How a parameter starts when not loaded from a file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Kaiming-normal, fan-out, ReLU gain (torchvision's conv init).
    KaimingConv,
    /// PyTorch's default linear init; the bias bound uses `fan_in`.
    LinearDefault {
        fan_in: usize,
    },
    Orthogonal,
    Zeros,
    Ones,
}

/// A named tensor that a graph needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
    pub init: Init,
}

/// A node: an operation applied to the outputs of earlier nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
}

/// A network: nodes in topological order (inputs always come before their users) and
/// named outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub outputs: Vec<(String, NodeId)>,
}

impl Graph {
    /// The node id of the named output, if any.
    pub fn output(&self, name: &str) -> Option<NodeId> {
        self.outputs.iter().find(|(n, _)| n == name).map(|&(_, id)| id)
    }

    /// Every parameter the graph needs, in node order.
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        let p = |name: &str, suffix: &str, shape: Vec<usize>, kind, init| ParamSpec {
            name: format!("{name}.{suffix}"),
            shape,
            kind,
            init,
        };
        for node in &self.nodes {
            match &node.op {
                Op::Conv2d { name, in_channels, out_channels, kernel, groups, bias, .. } => {
                    out.push(p(
                        name,
                        "weight",
                        vec![*out_channels, in_channels / groups, kernel[0], kernel[1]],
                        ParamKind::Trainable,
                        Init::KaimingConv,
                    ));
                    if *bias {
                        out.push(p(name, "bias", vec![*out_channels], ParamKind::Trainable, Init::Zeros));
                    }
                }
                Op::BatchNorm { name, channels, .. } => {
                    out.push(p(name, "weight", vec![*channels], ParamKind::Trainable, Init::Ones));
                    out.push(p(name, "bias", vec![*channels], ParamKind::Trainable, Init::Zeros));
                    out.push(p(name, "running_mean", vec![*channels], ParamKind::Buffer, Init::Zeros));
                    out.push(p(name, "running_var", vec![*channels], ParamKind::Buffer, Init::Ones));
                }
                Op::Linear { name, in_features, out_features, bias, init } => {
                    let (wi, bi) = match init {
                        LinearInit::Default => {
                            (Init::LinearDefault { fan_in: *in_features }, Init::LinearDefault { fan_in: *in_features })
                        }
                        LinearInit::Orthogonal => (Init::Orthogonal, Init::Zeros),
                    };
                    out.push(p(name, "weight", vec![*out_features, *in_features], ParamKind::Trainable, wi));
                    if *bias {
                        out.push(p(name, "bias", vec![*out_features], ParamKind::Trainable, bi));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Number of consumers of each node (named outputs count as consumers).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                uses[i] += 1;
            }
        }
        for (_, o) in &self.outputs {
            uses[*o] += 1;
        }
        uses
    }
}

/// Builds a [`Graph`] with hierarchical parameter names, like `nn::Path` / `vb.pp(..)`.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: Graph,
}

/// Options of a convolution (stride, padding, groups, bias); built with [`ConvOpts::k`].
#[derive(Debug, Clone, Copy)]
pub struct ConvOpts {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub groups: usize,
    pub bias: bool,
}

impl ConvOpts {
    /// A square `k` x `k` kernel, stride 1, "same" padding `k / 2`, no groups, no bias.
    pub fn k(k: usize) -> Self {
        Self { kernel: [k, k], stride: [1, 1], padding: [k / 2, k / 2], groups: 1, bias: false }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    pub fn pad(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, op: Op, inputs: Vec<NodeId>) -> NodeId {
        debug_assert!(inputs.iter().all(|&i| i < self.graph.nodes.len()));
        self.graph.nodes.push(Node { op, inputs });
        self.graph.nodes.len() - 1
    }

    pub fn input(&mut self) -> NodeId {
        self.push(Op::Input, vec![])
    }

    pub fn conv(&mut self, x: NodeId, name: &str, cin: usize, cout: usize, o: ConvOpts) -> NodeId {
        self.push(
            Op::Conv2d {
                name: name.to_string(),
                in_channels: cin,
                out_channels: cout,
                kernel: o.kernel,
                stride: o.stride,
                padding: o.padding,
                groups: o.groups,
                bias: o.bias,
            },
            vec![x],
        )
    }

    pub fn bn(&mut self, x: NodeId, name: &str, channels: usize, eps: f64) -> NodeId {
        self.push(Op::BatchNorm { name: name.to_string(), channels, eps }, vec![x])
    }

    pub fn relu(&mut self, x: NodeId) -> NodeId {
        self.push(Op::Relu, vec![x])
    }

    pub fn relu6(&mut self, x: NodeId) -> NodeId {
        self.push(Op::Relu6, vec![x])
    }

    pub fn max_pool(&mut self, x: NodeId, k: usize, s: usize, p: usize, ceil_mode: bool) -> NodeId {
        self.push(Op::MaxPool { kernel: [k, k], stride: [s, s], padding: [p, p], ceil_mode }, vec![x])
    }

    pub fn avg_pool(
        &mut self,
        x: NodeId,
        k: usize,
        s: usize,
        p: usize,
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> NodeId {
        self.push(
            Op::AvgPool { kernel: [k, k], stride: [s, s], padding: [p, p], ceil_mode, count_include_pad },
            vec![x],
        )
    }

    pub fn lrn(&mut self, x: NodeId, size: usize, alpha: f64, beta: f64, bias: f64) -> NodeId {
        self.push(Op::Lrn { size, alpha, beta, bias }, vec![x])
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.push(Op::Add, vec![a, b])
    }

    pub fn concat(&mut self, xs: &[NodeId]) -> NodeId {
        self.push(Op::Concat, xs.to_vec())
    }

    pub fn global_avg_max_pool(&mut self, x: NodeId) -> NodeId {
        self.push(Op::GlobalAvgMaxPool, vec![x])
    }

    pub fn global_avg_pool(&mut self, x: NodeId) -> NodeId {
        self.push(Op::GlobalAvgPool, vec![x])
    }

    pub fn linear(&mut self, x: NodeId, name: &str, cin: usize, cout: usize, bias: bool, init: LinearInit) -> NodeId {
        self.push(Op::Linear { name: name.to_string(), in_features: cin, out_features: cout, bias, init }, vec![x])
    }

    pub fn l2_normalize(&mut self, x: NodeId) -> NodeId {
        self.push(Op::L2Normalize, vec![x])
    }

    /// Conv (no bias) + batch norm: the most common block.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_bn(
        &mut self,
        x: NodeId,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        o: ConvOpts,
        eps: f64,
    ) -> NodeId {
        let c = self.conv(x, conv, cin, cout, o);
        self.bn(c, bn, cout, eps)
    }

    pub fn output(&mut self, name: &str, node: NodeId) {
        self.graph.outputs.push((name.to_string(), node));
    }

    pub fn finish(self) -> Graph {
        self.graph
    }
}
