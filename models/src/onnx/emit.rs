//! Emission of the ONNX graph: one walk over the [`Graph`] that names every value, infers
//! shapes, checks weights and writes the ONNX nodes and initialisers of each op.

use std::collections::HashSet;
use std::path::Path;

use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};

use super::fold::{fold_batch_norm, fold_targets};
use super::proto::{self, attr_float, attr_int, attr_ints};
use crate::graph::{Graph, NodeId, Op};
use crate::weights::{Tensor, Weights};
use crate::{Error, Manifest, Result};

/// Smallest norm `L2Normalize` divides by, as in torch's `F.normalize`.
const L2_EPS: f32 = 1e-12;

/// What flows out of a node, without the batch axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// A feature map `[c, h, w]`.
    Map { c: usize, h: usize, w: usize },
    /// A vector `[d]`.
    Vector(usize),
}

impl Shape {
    pub(super) fn dims(self) -> Vec<usize> {
        match self {
            Shape::Map { c, h, w } => vec![c, h, w],
            Shape::Vector(d) => vec![d],
        }
    }

    fn channels(self) -> usize {
        match self {
            Shape::Map { c, .. } => c,
            Shape::Vector(d) => d,
        }
    }
}

/// Walks the graph once, emitting ONNX nodes and initialisers and inferring shapes.
pub(super) struct Exporter<'a> {
    graph: &'a Graph,
    weights: &'a Weights,
    input_name: &'a str,
    input_size: usize,
    path: &'a Path,
    /// The ONNX value each graph node produces.
    names: Vec<String>,
    pub(super) shapes: Vec<Option<Shape>>,
    /// For each convolution folded into the batch norm after it: that batch norm.
    folded_into: Vec<Option<NodeId>>,
    pub(super) nodes: Vec<NodeProto>,
    pub(super) initializers: Vec<TensorProto>,
    initializer_names: HashSet<String>,
}

impl<'a> Exporter<'a> {
    pub(super) fn new(
        graph: &'a Graph,
        weights: &'a Weights,
        manifest: &'a Manifest,
        input_size: u32,
        path: &'a Path,
    ) -> Self {
        let n = graph.nodes.len();
        let folded_into = fold_targets(graph);
        // A node's value takes the name of the first graph output that shows it, so
        // outputs need no Identity node; everything else is named by id and kind.
        let mut names: Vec<String> =
            graph.nodes.iter().enumerate().map(|(id, node)| internal_name(id, &node.op)).collect();
        let mut named = vec![false; n];
        for (out, id) in &graph.outputs {
            if *id < n && !named[*id] && !matches!(graph.nodes[*id].op, Op::Input) {
                names[*id] = out.clone();
                named[*id] = true;
            }
        }
        for (id, node) in graph.nodes.iter().enumerate() {
            if matches!(node.op, Op::Input) {
                names[id] = manifest.input_name.clone();
            }
        }
        Self {
            graph,
            weights,
            input_name: &manifest.input_name,
            input_size: input_size as usize,
            path,
            names,
            shapes: vec![None; n],
            folded_into,
            nodes: Vec::new(),
            initializers: Vec::new(),
            initializer_names: HashSet::new(),
        }
    }

    fn fail(&self, reason: impl Into<String>) -> Error {
        Error::Export { path: self.path.to_path_buf(), reason: reason.into() }
    }

    pub(super) fn run(&mut self) -> Result<()> {
        let graph = self.graph;
        let n = graph.nodes.len();
        let mut seen = HashSet::new();
        for (name, id) in &graph.outputs {
            if *id >= n {
                return Err(self.fail(format!("graph output `{name}` refers to node {id}, which does not exist")));
            }
            if !seen.insert(name.as_str()) || name == self.input_name {
                return Err(self.fail(format!("the name `{name}` is used twice among the graph's input and outputs")));
            }
        }
        if !graph.nodes.iter().any(|node| matches!(node.op, Op::Input)) {
            return Err(self.fail("the graph has no input node"));
        }
        for (id, node) in graph.nodes.iter().enumerate() {
            if let Some(&bad) = node.inputs.iter().find(|&&i| i >= id) {
                return Err(self.fail(format!("node {id} reads node {bad}, which does not come before it")));
            }
            let shape = self.emit(id)?;
            self.shapes[id] = Some(shape);
        }
        // Outputs that could not take over a node's value name (the input itself, or a
        // node shown by two outputs) are copies.
        for (name, id) in &graph.outputs {
            if self.names[*id] != *name {
                let src = self.names[*id].clone();
                self.node("Identity", vec![src], name, vec![]);
            }
        }
        Ok(())
    }

    fn input_shape(&self, id: NodeId, k: usize) -> Shape {
        self.shapes[self.graph.nodes[id].inputs[k]].expect("inputs come before their users")
    }

    fn input_name(&self, id: NodeId, k: usize) -> String {
        self.names[self.graph.nodes[id].inputs[k]].clone()
    }

    fn map_input(&self, id: NodeId, what: &str) -> Result<(usize, usize, usize)> {
        match self.input_shape(id, 0) {
            Shape::Map { c, h, w } => Ok((c, h, w)),
            Shape::Vector(d) => {
                Err(self.fail(format!("{what} (node {id}) needs a feature map but gets a vector of {d}")))
            }
        }
    }

    fn arity(&self, id: NodeId, expected: usize, what: &str) -> Result<()> {
        let got = self.graph.nodes[id].inputs.len();
        if got != expected {
            return Err(self.fail(format!("{what} (node {id}) has {got} inputs, expected {expected}")));
        }
        Ok(())
    }

    /// Emits the ONNX nodes of graph node `id` and returns its output shape.
    fn emit(&mut self, id: NodeId) -> Result<Shape> {
        let graph = self.graph;
        let op = &graph.nodes[id].op;
        let out = self.names[id].clone();
        match op {
            Op::Input => {
                self.arity(id, 0, "the input")?;
                Ok(Shape::Map { c: 3, h: self.input_size, w: self.input_size })
            }
            Op::Conv2d { .. } => self.emit_conv(id, &out),
            Op::BatchNorm { name, channels, eps } => self.emit_batch_norm(id, &out, name, *channels, *eps),
            Op::Relu => self.emit_relu(id, &out),
            Op::Relu6 => self.emit_relu6(id, &out),
            Op::MaxPool { .. } | Op::AvgPool { .. } => self.emit_pool(id, &out, op),
            Op::Lrn { size, alpha, beta, bias } => self.emit_lrn(id, &out, *size, *alpha, *beta, *bias),
            Op::Add => self.emit_add(id, &out),
            Op::Concat => self.emit_concat(id, &out),
            Op::GlobalAvgMaxPool => self.emit_global_avg_max_pool(id, &out),
            Op::GlobalAvgPool => self.emit_global_avg_pool(id, &out),
            Op::Linear { name, in_features, out_features, bias, .. } => {
                self.emit_linear(id, &out, name, *in_features, *out_features, *bias)
            }
            Op::L2Normalize => self.emit_l2_normalize(id, &out),
        }
    }

    /// A convolution; when a batch norm is folded into it, that batch norm emits it.
    fn emit_conv(&mut self, id: NodeId, out: &str) -> Result<Shape> {
        let Op::Conv2d { name, in_channels, out_channels, kernel, stride, padding, groups, .. } =
            &self.graph.nodes[id].op
        else {
            unreachable!("emit_conv is called on convolutions")
        };
        self.arity(id, 1, name)?;
        let (c, h, w) = self.map_input(id, name)?;
        if c != *in_channels {
            return Err(self.fail(format!("convolution `{name}` expects {in_channels} channels but gets {c}")));
        }
        if *groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
            return Err(self.fail(format!(
                "convolution `{name}`: {groups} groups do not divide {in_channels} -> {out_channels} channels"
            )));
        }
        let shape = Shape::Map {
            c: *out_channels,
            h: self.window_out(name, h, kernel[0], stride[0], padding[0], false)?,
            w: self.window_out(name, w, kernel[1], stride[1], padding[1], false)?,
        };
        if self.folded_into[id].is_none() {
            let (weight, bias) = self.conv_params(id)?;
            self.conv_node(id, &weight.data, bias.map(|b| b.data.as_slice()), out);
        }
        Ok(shape)
    }

    /// A batch norm: folded into the convolution before it when that convolution has no
    /// other user, a `BatchNormalization` node otherwise.
    fn emit_batch_norm(&mut self, id: NodeId, out: &str, name: &str, channels: usize, eps: f64) -> Result<Shape> {
        self.arity(id, 1, name)?;
        let shape = self.input_shape(id, 0);
        if shape.channels() != channels {
            return Err(
                self.fail(format!("batch norm `{name}` expects {channels} channels but gets {}", shape.channels()))
            );
        }
        let gamma = &self.param(name, "weight", &[channels])?.data;
        let beta = &self.param(name, "bias", &[channels])?.data;
        let mean = &self.param(name, "running_mean", &[channels])?.data;
        let var = &self.param(name, "running_var", &[channels])?.data;
        let src = self.graph.nodes[id].inputs[0];
        if self.folded_into[src] == Some(id) {
            let (weight, conv_bias) = self.conv_params(src)?;
            let (w, b) =
                fold_batch_norm(&weight.data, conv_bias.map(|b| b.data.as_slice()), gamma, beta, mean, var, eps)
                    .map_err(|reason| self.fail(format!("batch norm `{name}`: {reason}")))?;
            self.conv_node(src, &w, Some(&b), out);
        } else {
            let x = self.input_name(id, 0);
            let ins = vec![
                x,
                self.initializer(&format!("{name}.weight"), &[channels], gamma),
                self.initializer(&format!("{name}.bias"), &[channels], beta),
                self.initializer(&format!("{name}.running_mean"), &[channels], mean),
                self.initializer(&format!("{name}.running_var"), &[channels], var),
            ];
            self.node("BatchNormalization", ins, out, vec![attr_float("epsilon", eps as f32)]);
        }
        Ok(shape)
    }

    fn emit_relu(&mut self, id: NodeId, out: &str) -> Result<Shape> {
        self.arity(id, 1, "relu")?;
        let x = self.input_name(id, 0);
        self.node("Relu", vec![x], out, vec![]);
        Ok(self.input_shape(id, 0))
    }

    fn emit_relu6(&mut self, id: NodeId, out: &str) -> Result<Shape> {
        self.arity(id, 1, "relu6")?;
        let x = self.input_name(id, 0);
        let lo = self.initializer("const.zero", &[], &[0.0]);
        let hi = self.initializer("const.six", &[], &[6.0]);
        self.node("Clip", vec![x, lo, hi], out, vec![]);
        Ok(self.input_shape(id, 0))
    }

    /// A max or average pool (`op`).
    fn emit_pool(&mut self, id: NodeId, out: &str, op: &Op) -> Result<Shape> {
        let (op_type, what, kernel, stride, padding, ceil_mode, count_include_pad) = match op {
            Op::MaxPool { kernel, stride, padding, ceil_mode } => {
                ("MaxPool", "max pool", kernel, stride, padding, *ceil_mode, None)
            }
            Op::AvgPool { kernel, stride, padding, ceil_mode, count_include_pad } => {
                ("AveragePool", "average pool", kernel, stride, padding, *ceil_mode, Some(*count_include_pad))
            }
            _ => unreachable!("emit_pool is called on pools"),
        };
        self.arity(id, 1, what)?;
        let shape = self.pool_shape(id, kernel, stride, padding, ceil_mode)?;
        let x = self.input_name(id, 0);
        let mut attrs = vec![
            attr_ints("kernel_shape", kernel),
            attr_ints("strides", stride),
            attr_ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
            attr_int("ceil_mode", ceil_mode as i64),
        ];
        if let Some(count_include_pad) = count_include_pad {
            attrs.push(attr_int("count_include_pad", count_include_pad as i64));
        }
        self.node(op_type, vec![x], out, attrs);
        Ok(shape)
    }

    fn emit_lrn(&mut self, id: NodeId, out: &str, size: usize, alpha: f64, beta: f64, bias: f64) -> Result<Shape> {
        self.arity(id, 1, "local response norm")?;
        self.map_input(id, "local response norm")?;
        // ONNX centres an even window one channel later than torch does.
        if size.is_multiple_of(2) {
            return Err(self.fail(format!(
                "local response norm (node {id}) has an even size {size}, whose window ONNX places differently from torch; use an odd size"
            )));
        }
        let x = self.input_name(id, 0);
        let attrs = vec![
            attr_int("size", size as i64),
            attr_float("alpha", alpha as f32),
            attr_float("beta", beta as f32),
            attr_float("bias", bias as f32),
        ];
        self.node("LRN", vec![x], out, attrs);
        Ok(self.input_shape(id, 0))
    }

    fn emit_add(&mut self, id: NodeId, out: &str) -> Result<Shape> {
        let k = self.graph.nodes[id].inputs.len();
        if k == 0 {
            return Err(self.fail(format!("add (node {id}) has no inputs")));
        }
        let shape = self.input_shape(id, 0);
        if let Some(other) = (1..k).map(|i| self.input_shape(id, i)).find(|&s| s != shape) {
            return Err(self.fail(format!("add (node {id}) sums {:?} and {:?}", shape.dims(), other.dims())));
        }
        let ins = (0..k).map(|i| self.input_name(id, i)).collect();
        self.node(if k == 2 { "Add" } else { "Sum" }, ins, out, vec![]);
        Ok(shape)
    }

    fn emit_concat(&mut self, id: NodeId, out: &str) -> Result<Shape> {
        let k = self.graph.nodes[id].inputs.len();
        if k == 0 {
            return Err(self.fail(format!("concat (node {id}) has no inputs")));
        }
        let first = self.input_shape(id, 0);
        let mut channels = 0;
        for i in 0..k {
            let s = self.input_shape(id, i);
            let same_rest = match (first, s) {
                (Shape::Map { h, w, .. }, Shape::Map { h: h2, w: w2, .. }) => h == h2 && w == w2,
                (Shape::Vector(_), Shape::Vector(_)) => true,
                _ => false,
            };
            if !same_rest {
                return Err(self.fail(format!("concat (node {id}) joins {:?} and {:?}", first.dims(), s.dims())));
            }
            channels += s.channels();
        }
        let ins = (0..k).map(|i| self.input_name(id, i)).collect();
        self.node("Concat", ins, out, vec![attr_int("axis", 1)]);
        Ok(match first {
            Shape::Map { h, w, .. } => Shape::Map { c: channels, h, w },
            Shape::Vector(_) => Shape::Vector(channels),
        })
    }

    fn emit_global_avg_max_pool(&mut self, id: NodeId, out: &str) -> Result<Shape> {
        self.arity(id, 1, "global pool")?;
        let (c, _, _) = self.map_input(id, "global pool")?;
        let x = self.input_name(id, 0);
        let (avg, max, sum) = (format!("{out}.avg"), format!("{out}.max"), format!("{out}.sum"));
        self.node("GlobalAveragePool", vec![x.clone()], &avg, vec![]); // [b, c, 1, 1]
        self.node("GlobalMaxPool", vec![x], &max, vec![]); // [b, c, 1, 1]
        self.node("Add", vec![avg, max], &sum, vec![]);
        self.node("Flatten", vec![sum], out, vec![attr_int("axis", 1)]); // [b, c]
        Ok(Shape::Vector(c))
    }

    fn emit_global_avg_pool(&mut self, id: NodeId, out: &str) -> Result<Shape> {
        self.arity(id, 1, "global pool")?;
        let (c, _, _) = self.map_input(id, "global pool")?;
        let x = self.input_name(id, 0);
        let avg = format!("{out}.avg");
        self.node("GlobalAveragePool", vec![x], &avg, vec![]); // [b, c, 1, 1]
        self.node("Flatten", vec![avg], out, vec![attr_int("axis", 1)]); // [b, c]
        Ok(Shape::Vector(c))
    }

    fn emit_linear(
        &mut self,
        id: NodeId,
        out: &str,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Shape> {
        self.arity(id, 1, name)?;
        match self.input_shape(id, 0) {
            Shape::Vector(d) if d == in_features => {}
            s => {
                return Err(self
                    .fail(format!("linear layer `{name}` expects a vector of {in_features} but gets {:?}", s.dims())))
            }
        }
        let weight = self.param(name, "weight", &[out_features, in_features])?;
        let b = if bias { Some(self.param(name, "bias", &[out_features])?) } else { None };
        let x = self.input_name(id, 0);
        let mut ins = vec![x, self.initializer(&format!("{name}.weight"), &weight.shape, &weight.data)];
        if let Some(b) = b {
            ins.push(self.initializer(&format!("{name}.bias"), &b.shape, &b.data));
        }
        self.node("Gemm", ins, out, vec![attr_int("transB", 1)]);
        Ok(Shape::Vector(out_features))
    }

    fn emit_l2_normalize(&mut self, id: NodeId, out: &str) -> Result<Shape> {
        self.arity(id, 1, "L2 normalisation")?;
        let shape = self.input_shape(id, 0);
        if !matches!(shape, Shape::Vector(_)) {
            return Err(self.fail(format!("L2 normalisation (node {id}) needs a vector, gets {:?}", shape.dims())));
        }
        // x / max(||x||, eps), as torch's F.normalize.
        let x = self.input_name(id, 0);
        let (norm, clamped) = (format!("{out}.norm"), format!("{out}.clamped"));
        let eps = self.initializer("const.l2_eps", &[], &[L2_EPS]);
        let attrs = vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)];
        self.node("ReduceL2", vec![x.clone()], &norm, attrs); // [b, 1]
        self.node("Max", vec![norm, eps], &clamped, vec![]);
        self.node("Div", vec![x, clamped], out, vec![]); // [b, d]
        Ok(shape)
    }

    /// The weight and (when it has one) bias tensors of graph node `conv`, a convolution.
    fn conv_params(&self, conv: NodeId) -> Result<(&'a Tensor, Option<&'a Tensor>)> {
        let Op::Conv2d { name, in_channels, out_channels, kernel, groups, bias, .. } = &self.graph.nodes[conv].op
        else {
            unreachable!("conv_params is called on convolutions")
        };
        let weight = self.param(name, "weight", &[*out_channels, in_channels / groups, kernel[0], kernel[1]])?;
        let bias = if *bias { Some(self.param(name, "bias", &[*out_channels])?) } else { None };
        Ok((weight, bias))
    }

    /// Emits a Conv node with the hyper-parameters of graph node `conv` reading the input
    /// of that convolution; initialisers are named after the convolution.
    fn conv_node(&mut self, conv: NodeId, weight: &[f32], bias: Option<&[f32]>, out: &str) {
        let Op::Conv2d { name, in_channels, out_channels, kernel, stride, padding, groups, .. } =
            &self.graph.nodes[conv].op
        else {
            unreachable!("conv_node is called on convolutions")
        };
        let x = self.input_name(conv, 0);
        let w = self.initializer(
            &format!("{name}.weight"),
            &[*out_channels, in_channels / groups, kernel[0], kernel[1]],
            weight,
        );
        let mut ins = vec![x, w];
        if let Some(b) = bias {
            ins.push(self.initializer(&format!("{name}.bias"), &[*out_channels], b));
        }
        let attrs = vec![
            attr_ints("kernel_shape", kernel),
            attr_ints("strides", stride),
            attr_ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
            attr_ints("dilations", &[1, 1]),
            attr_int("group", *groups as i64),
        ];
        self.node("Conv", ins, out, attrs);
    }

    fn pool_shape(
        &self,
        id: NodeId,
        kernel: &[usize; 2],
        stride: &[usize; 2],
        padding: &[usize; 2],
        ceil_mode: bool,
    ) -> Result<Shape> {
        let what = format!("pooling (node {id})");
        let (c, h, w) = self.map_input(id, &what)?;
        for axis in 0..2 {
            if 2 * padding[axis] > kernel[axis] {
                return Err(
                    self.fail(format!("{what}: padding {} exceeds half the kernel {}", padding[axis], kernel[axis]))
                );
            }
        }
        Ok(Shape::Map {
            c,
            h: self.window_out(&what, h, kernel[0], stride[0], padding[0], ceil_mode)?,
            w: self.window_out(&what, w, kernel[1], stride[1], padding[1], ceil_mode)?,
        })
    }

    /// Output length of a sliding window, with torch's rule that in ceil mode the last
    /// window must start inside the input or its left padding.
    fn window_out(&self, what: &str, len: usize, k: usize, s: usize, p: usize, ceil_mode: bool) -> Result<usize> {
        if s == 0 || k == 0 || len + 2 * p < k {
            return Err(self.fail(format!(
                "{what}: a {k}-wide window with stride {s} and padding {p} does not fit a {len}-pixel input; use a larger image size"
            )));
        }
        let span = len + 2 * p - k;
        let mut out = if ceil_mode { span.div_ceil(s) + 1 } else { span / s + 1 };
        if ceil_mode && (out - 1) * s >= len + p {
            out -= 1;
        }
        Ok(out)
    }

    /// The weight tensor `{name}.{suffix}`, checked against the shape the graph needs.
    fn param(&self, name: &str, suffix: &str, shape: &[usize]) -> Result<&'a Tensor> {
        let key = format!("{name}.{suffix}");
        let t = self.weights.get(&key).ok_or_else(|| {
            self.fail(format!(
                "the weights have no tensor `{key}` (the graph needs {shape:?}); export from a checkpoint saved with the same model configuration"
            ))
        })?;
        if t.shape != shape || t.data.len() != shape.iter().product::<usize>() {
            return Err(self.fail(format!(
                "tensor `{key}` has shape {:?} ({} values) but the graph needs {shape:?}; export from a checkpoint saved with the same model configuration",
                t.shape,
                t.data.len()
            )));
        }
        Ok(t)
    }

    /// Adds an f32 initialiser (once per name) and returns its name.
    fn initializer(&mut self, name: &str, shape: &[usize], data: &[f32]) -> String {
        if self.initializer_names.insert(name.to_string()) {
            self.initializers.push(proto::tensor(name, shape, data));
        }
        name.to_string()
    }

    fn node(&mut self, op_type: &str, inputs: Vec<String>, output: &str, attribute: Vec<AttributeProto>) {
        self.nodes.push(proto::node(op_type, inputs, output, attribute));
    }
}

/// Name of a node's value when no graph output claims it.
fn internal_name(id: NodeId, op: &Op) -> String {
    let kind = match op {
        Op::Input => "input",
        Op::Conv2d { name, .. } | Op::BatchNorm { name, .. } | Op::Linear { name, .. } => name.as_str(),
        Op::Relu => "relu",
        Op::Relu6 => "relu6",
        Op::MaxPool { .. } => "max_pool",
        Op::AvgPool { .. } => "avg_pool",
        Op::Lrn { .. } => "lrn",
        Op::Add => "add",
        Op::Concat => "concat",
        Op::GlobalAvgMaxPool => "global_avg_max_pool",
        Op::GlobalAvgPool => "global_avg_pool",
        Op::L2Normalize => "l2_normalize",
    };
    format!("/{id}/{kind}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testutil::{manifest, tiny_graph, tiny_weights, SIZE};
    use super::Exporter;

    #[test]
    fn pooling_output_sizes_follow_torch_ceil_mode() {
        let g = tiny_graph();
        let w = tiny_weights(&g);
        let m = manifest(5, true);
        let ex = Exporter::new(&g, &w, &m, SIZE, Path::new("x.onnx"));
        // ceil((7 - 3) / 2) + 1 = 3, and the last window starts inside: 3.
        assert_eq!(ex.window_out("p", 7, 3, 2, 0, true).unwrap(), 3);
        assert_eq!(ex.window_out("p", 6, 3, 2, 1, true).unwrap(), 4);
        // ceil((5 + 2 - 2) / 2) + 1 = 4, but that window would start in the right padding.
        assert_eq!(ex.window_out("p", 5, 2, 2, 1, true).unwrap(), 3);
        assert_eq!(ex.window_out("p", 7, 3, 2, 0, false).unwrap(), 3);
        assert_eq!(ex.window_out("p", 8, 3, 2, 0, false).unwrap(), 3);
        assert!(ex.window_out("p", 2, 3, 1, 0, false).is_err());
    }
}
