//! ONNX export of a [`Graph`] in plain Rust (no Python, no libtorch), and reading the
//! [`Manifest`] back out of an exported file. Batch norm is folded into the convolution
//! before it; the batch axis is symbolic; the manifest travels in `metadata_props`.

use std::collections::HashSet;
use std::path::Path;

use onnx_protobuf::{
    attribute_proto::AttributeType,
    tensor_proto::DataType,
    tensor_shape_proto::{dimension, Dimension},
    type_proto, AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::{EnumOrUnknown, MessageField};

use crate::graph::{Graph, NodeId, Op};
use crate::manifest::MANIFEST_KEY;
use crate::weights::{Tensor, Weights};
use crate::{Error, Manifest, Result};

/// ONNX operator set the exported files use.
pub const OPSET_VERSION: i64 = 17;
/// ONNX IR version of the exported files.
pub const IR_VERSION: i64 = 8;
/// `producer_name` of the exported files.
pub const PRODUCER_NAME: &str = "stml-trainer";
/// Name of the symbolic batch dimension of the input and outputs.
pub const BATCH_DIM: &str = "batch";

/// Smallest norm `L2Normalize` divides by, as in torch's `F.normalize`.
const L2_EPS: f32 = 1e-12;

/// Writes `graph` with `weights` as an ONNX model to `path` (atomically), with `manifest`
/// as JSON in `metadata_props` under [`MANIFEST_KEY`].
///
/// Every batch norm whose input is a convolution used by nothing else is folded into
/// that convolution; any other batch norm becomes a `BatchNormalization` node. The
/// manifest must describe this graph: `manifest.input_name` names the input,
/// `manifest.output_name` one of the graph's outputs, whose width is
/// `manifest.embedding_dim` and which is L2-normalised exactly when
/// `manifest.normalized`; `manifest.preprocess.crop` equals `input_size`.
///
/// # Shapes
/// - input `manifest.input_name`: `[batch, 3, input_size, input_size]`, f32
/// - one output per graph output, under its graph name: `[batch, d]` for vectors,
///   `[batch, c, h, w]` for feature maps, f32
pub fn export(graph: &Graph, weights: &Weights, manifest: &Manifest, input_size: u32, path: &Path) -> Result<()> {
    let model = build_model(graph, weights, manifest, input_size, path)?;
    let bytes = model.write_to_bytes().map_err(|e| Error::Export {
        path: path.to_path_buf(),
        reason: format!("cannot serialise the ONNX protobuf: {e}"),
    })?;
    crate::weights::write_atomic(path, &bytes).map_err(|e| Error::Export {
        path: path.to_path_buf(),
        reason: format!("cannot write the file ({e}); check that its folder exists and is writable"),
    })
}

/// Reads the [`Manifest`] of an ONNX file written by [`export`], checking that the
/// model has the input and output the manifest names.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let bad = |reason: String| Error::Manifest { path: path.to_path_buf(), reason };
    let model = ModelProto::parse_from_bytes(&bytes).map_err(|e| {
        bad(format!(
            "it is not a readable ONNX file ({e}); it may be truncated or in another format. Re-export it with `trainer export`"
        ))
    })?;
    let entry = model.metadata_props.iter().find(|p| p.key == MANIFEST_KEY).ok_or_else(|| {
        bad(format!(
            "it has no `{MANIFEST_KEY}` entry in its metadata (the file may be truncated, or exported by another tool). Export the model with `trainer export`, which writes one"
        ))
    })?;
    let manifest = Manifest::from_json(&entry.value).map_err(bad)?;
    let graph =
        model.graph.as_ref().ok_or_else(|| bad("it has no graph; re-export it with `trainer export`".into()))?;
    if !graph.input.iter().any(|i| i.name == manifest.input_name) {
        return Err(bad(format!(
            "its manifest names input `{}`, which the graph does not have; re-export it with `trainer export`",
            manifest.input_name
        )));
    }
    if !graph.output.iter().any(|o| o.name == manifest.output_name) {
        return Err(bad(format!(
            "its manifest names output `{}`, which the graph does not have; re-export it with `trainer export`",
            manifest.output_name
        )));
    }
    Ok(manifest)
}

/// Builds the in-memory ONNX model that [`export`] writes.
fn build_model(
    graph: &Graph,
    weights: &Weights,
    manifest: &Manifest,
    input_size: u32,
    path: &Path,
) -> Result<ModelProto> {
    let fail = |reason: String| Error::Export { path: path.to_path_buf(), reason };
    if input_size == 0 {
        return Err(fail("the input size is 0; pass the model's image size".into()));
    }
    if manifest.preprocess.crop != input_size {
        return Err(fail(format!(
            "the manifest's preprocessing crops {} px but the network input is {input_size} px; build the manifest from the same model configuration",
            manifest.preprocess.crop
        )));
    }
    let output = graph.output(&manifest.output_name).ok_or_else(|| {
        fail(format!(
            "the manifest's output `{}` is not an output of the graph (which has: {}); set output_name to one of them",
            manifest.output_name,
            graph.outputs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let is_normalized = matches!(graph.nodes.get(output).map(|n| &n.op), Some(Op::L2Normalize));
    if manifest.normalized != is_normalized {
        return Err(fail(format!(
            "the manifest says normalized = {} but the graph's output `{}` is {}L2-normalised; build the graph and the manifest from the same setting",
            manifest.normalized,
            manifest.output_name,
            if is_normalized { "" } else { "not " }
        )));
    }

    let mut ex = Exporter::new(graph, weights, manifest, input_size, path);
    ex.run()?;
    let out_shape = ex.shapes[output].ok_or_else(|| fail("the output was not computed".into()))?;
    match out_shape {
        Shape::Vector(d) if d == manifest.embedding_dim => {}
        other => {
            return Err(fail(format!(
                "the manifest says embedding_dim = {} but output `{}` has shape [batch, {}]; build the manifest from the same model configuration",
                manifest.embedding_dim,
                manifest.output_name,
                other.dims().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            )))
        }
    }

    let mut g = GraphProto { name: manifest.arch.clone(), ..Default::default() };
    g.input.push(value_info(&manifest.input_name, &[3, input_size as usize, input_size as usize]));
    for (name, id) in &graph.outputs {
        let shape = ex.shapes[*id].ok_or_else(|| fail(format!("output `{name}` was not computed")))?;
        g.output.push(value_info(name, &shape.dims()));
    }
    g.node = ex.nodes;
    g.initializer = ex.initializers;

    let mut model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: PRODUCER_NAME.to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        graph: MessageField::some(g),
        ..Default::default()
    };
    model.opset_import.push(OperatorSetIdProto { domain: String::new(), version: OPSET_VERSION, ..Default::default() });
    model.metadata_props.push(StringStringEntryProto {
        key: MANIFEST_KEY.to_string(),
        value: manifest.to_json(),
        ..Default::default()
    });
    Ok(model)
}

/// What flows out of a node, without the batch axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A feature map `[c, h, w]`.
    Map { c: usize, h: usize, w: usize },
    /// A vector `[d]`.
    Vector(usize),
}

impl Shape {
    fn dims(self) -> Vec<usize> {
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
struct Exporter<'a> {
    graph: &'a Graph,
    weights: &'a Weights,
    input_name: &'a str,
    input_size: usize,
    path: &'a Path,
    /// The ONNX value each graph node produces.
    names: Vec<String>,
    shapes: Vec<Option<Shape>>,
    /// For each convolution folded into the batch norm after it: that batch norm.
    folded_into: Vec<Option<NodeId>>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    initializer_names: HashSet<String>,
}

impl<'a> Exporter<'a> {
    fn new(graph: &'a Graph, weights: &'a Weights, manifest: &'a Manifest, input_size: u32, path: &'a Path) -> Self {
        let n = graph.nodes.len();
        let uses = graph.use_counts();
        let mut folded_into = vec![None; n];
        for (id, node) in graph.nodes.iter().enumerate() {
            if let (Op::BatchNorm { .. }, [src]) = (&node.op, node.inputs.as_slice()) {
                if matches!(graph.nodes[*src].op, Op::Conv2d { .. }) && uses[*src] == 1 {
                    folded_into[*src] = Some(id);
                }
            }
        }
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

    fn run(&mut self) -> Result<()> {
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
            Op::Conv2d { name, in_channels, out_channels, kernel, stride, padding, groups, bias } => {
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
                    let weight =
                        self.param(name, "weight", &[*out_channels, in_channels / groups, kernel[0], kernel[1]])?;
                    let bias = if *bias { Some(self.param(name, "bias", &[*out_channels])?) } else { None };
                    self.conv_node(id, &weight.data, bias.map(|b| b.data.as_slice()), &out);
                }
                Ok(shape)
            }
            Op::BatchNorm { name, channels, eps } => {
                self.arity(id, 1, name)?;
                let shape = self.input_shape(id, 0);
                if shape.channels() != *channels {
                    return Err(self.fail(format!(
                        "batch norm `{name}` expects {channels} channels but gets {}",
                        shape.channels()
                    )));
                }
                let gamma = &self.param(name, "weight", &[*channels])?.data;
                let beta = &self.param(name, "bias", &[*channels])?.data;
                let mean = &self.param(name, "running_mean", &[*channels])?.data;
                let var = &self.param(name, "running_var", &[*channels])?.data;
                let src = graph.nodes[id].inputs[0];
                if self.folded_into[src] == Some(id) {
                    let Op::Conv2d { name: conv, in_channels, out_channels, kernel, groups, bias, .. } =
                        &graph.nodes[src].op
                    else {
                        unreachable!("only convolutions are folded")
                    };
                    let weight =
                        self.param(conv, "weight", &[*out_channels, in_channels / groups, kernel[0], kernel[1]])?;
                    let conv_bias =
                        if *bias { Some(self.param(conv, "bias", &[*out_channels])?.data.as_slice()) } else { None };
                    let (w, b) = fold_batch_norm(&weight.data, conv_bias, gamma, beta, mean, var, *eps)
                        .map_err(|reason| self.fail(format!("batch norm `{name}`: {reason}")))?;
                    self.conv_node(src, &w, Some(&b), &out);
                } else {
                    let x = self.input_name(id, 0);
                    let ins = vec![
                        x,
                        self.initializer(&format!("{name}.weight"), &[*channels], gamma),
                        self.initializer(&format!("{name}.bias"), &[*channels], beta),
                        self.initializer(&format!("{name}.running_mean"), &[*channels], mean),
                        self.initializer(&format!("{name}.running_var"), &[*channels], var),
                    ];
                    self.node("BatchNormalization", ins, &out, vec![attr_float("epsilon", *eps as f32)]);
                }
                Ok(shape)
            }
            Op::Relu => {
                self.arity(id, 1, "relu")?;
                let x = self.input_name(id, 0);
                self.node("Relu", vec![x], &out, vec![]);
                Ok(self.input_shape(id, 0))
            }
            Op::Relu6 => {
                self.arity(id, 1, "relu6")?;
                let x = self.input_name(id, 0);
                let lo = self.initializer("const.zero", &[], &[0.0]);
                let hi = self.initializer("const.six", &[], &[6.0]);
                self.node("Clip", vec![x, lo, hi], &out, vec![]);
                Ok(self.input_shape(id, 0))
            }
            Op::MaxPool { kernel, stride, padding, ceil_mode } => {
                self.arity(id, 1, "max pool")?;
                let shape = self.pool_shape(id, kernel, stride, padding, *ceil_mode)?;
                let x = self.input_name(id, 0);
                let attrs = vec![
                    attr_ints("kernel_shape", kernel),
                    attr_ints("strides", stride),
                    attr_ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
                    attr_int("ceil_mode", *ceil_mode as i64),
                ];
                self.node("MaxPool", vec![x], &out, attrs);
                Ok(shape)
            }
            Op::AvgPool { kernel, stride, padding, ceil_mode, count_include_pad } => {
                self.arity(id, 1, "average pool")?;
                let shape = self.pool_shape(id, kernel, stride, padding, *ceil_mode)?;
                let x = self.input_name(id, 0);
                let attrs = vec![
                    attr_ints("kernel_shape", kernel),
                    attr_ints("strides", stride),
                    attr_ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
                    attr_int("ceil_mode", *ceil_mode as i64),
                    attr_int("count_include_pad", *count_include_pad as i64),
                ];
                self.node("AveragePool", vec![x], &out, attrs);
                Ok(shape)
            }
            Op::Lrn { size, alpha, beta, bias } => {
                self.arity(id, 1, "local response norm")?;
                self.map_input(id, "local response norm")?;
                // ONNX centres an even window one channel later than torch does.
                if size % 2 == 0 {
                    return Err(self.fail(format!(
                        "local response norm (node {id}) has an even size {size}, whose window ONNX places differently from torch; use an odd size"
                    )));
                }
                let x = self.input_name(id, 0);
                let attrs = vec![
                    attr_int("size", *size as i64),
                    attr_float("alpha", *alpha as f32),
                    attr_float("beta", *beta as f32),
                    attr_float("bias", *bias as f32),
                ];
                self.node("LRN", vec![x], &out, attrs);
                Ok(self.input_shape(id, 0))
            }
            Op::Add => {
                let k = graph.nodes[id].inputs.len();
                if k == 0 {
                    return Err(self.fail(format!("add (node {id}) has no inputs")));
                }
                let shape = self.input_shape(id, 0);
                if let Some(other) = (1..k).map(|i| self.input_shape(id, i)).find(|&s| s != shape) {
                    return Err(self.fail(format!("add (node {id}) sums {:?} and {:?}", shape.dims(), other.dims())));
                }
                let ins = (0..k).map(|i| self.input_name(id, i)).collect();
                self.node(if k == 2 { "Add" } else { "Sum" }, ins, &out, vec![]);
                Ok(shape)
            }
            Op::Concat => {
                let k = graph.nodes[id].inputs.len();
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
                        return Err(self.fail(format!(
                            "concat (node {id}) joins {:?} and {:?}",
                            first.dims(),
                            s.dims()
                        )));
                    }
                    channels += s.channels();
                }
                let ins = (0..k).map(|i| self.input_name(id, i)).collect();
                self.node("Concat", ins, &out, vec![attr_int("axis", 1)]);
                Ok(match first {
                    Shape::Map { h, w, .. } => Shape::Map { c: channels, h, w },
                    Shape::Vector(_) => Shape::Vector(channels),
                })
            }
            Op::GlobalAvgMaxPool => {
                self.arity(id, 1, "global pool")?;
                let (c, _, _) = self.map_input(id, "global pool")?;
                let x = self.input_name(id, 0);
                let (avg, max, sum) = (format!("{out}.avg"), format!("{out}.max"), format!("{out}.sum"));
                self.node("GlobalAveragePool", vec![x.clone()], &avg, vec![]); // [b, c, 1, 1]
                self.node("GlobalMaxPool", vec![x], &max, vec![]); // [b, c, 1, 1]
                self.node("Add", vec![avg, max], &sum, vec![]);
                self.node("Flatten", vec![sum], &out, vec![attr_int("axis", 1)]); // [b, c]
                Ok(Shape::Vector(c))
            }
            Op::GlobalAvgPool => {
                self.arity(id, 1, "global pool")?;
                let (c, _, _) = self.map_input(id, "global pool")?;
                let x = self.input_name(id, 0);
                let avg = format!("{out}.avg");
                self.node("GlobalAveragePool", vec![x], &avg, vec![]); // [b, c, 1, 1]
                self.node("Flatten", vec![avg], &out, vec![attr_int("axis", 1)]); // [b, c]
                Ok(Shape::Vector(c))
            }
            Op::Linear { name, in_features, out_features, bias, .. } => {
                self.arity(id, 1, name)?;
                match self.input_shape(id, 0) {
                    Shape::Vector(d) if d == *in_features => {}
                    s => {
                        return Err(self.fail(format!(
                            "linear layer `{name}` expects a vector of {in_features} but gets {:?}",
                            s.dims()
                        )))
                    }
                }
                let weight = self.param(name, "weight", &[*out_features, *in_features])?;
                let b = if *bias { Some(self.param(name, "bias", &[*out_features])?) } else { None };
                let x = self.input_name(id, 0);
                let mut ins = vec![x, self.initializer(&format!("{name}.weight"), &weight.shape, &weight.data)];
                if let Some(b) = b {
                    ins.push(self.initializer(&format!("{name}.bias"), &b.shape, &b.data));
                }
                self.node("Gemm", ins, &out, vec![attr_int("transB", 1)]);
                Ok(Shape::Vector(*out_features))
            }
            Op::L2Normalize => {
                self.arity(id, 1, "L2 normalisation")?;
                let shape = self.input_shape(id, 0);
                if !matches!(shape, Shape::Vector(_)) {
                    return Err(
                        self.fail(format!("L2 normalisation (node {id}) needs a vector, gets {:?}", shape.dims()))
                    );
                }
                // x / max(||x||, eps), as torch's F.normalize.
                let x = self.input_name(id, 0);
                let (norm, clamped) = (format!("{out}.norm"), format!("{out}.clamped"));
                let eps = self.initializer("const.l2_eps", &[], &[L2_EPS]);
                let attrs = vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)];
                self.node("ReduceL2", vec![x.clone()], &norm, attrs); // [b, 1]
                self.node("Max", vec![norm, eps], &clamped, vec![]);
                self.node("Div", vec![x, clamped], &out, vec![]); // [b, d]
                Ok(shape)
            }
        }
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
            self.initializers.push(TensorProto {
                name: name.to_string(),
                dims: shape.iter().map(|&d| d as i64).collect(),
                data_type: DataType::FLOAT as i32,
                raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            });
        }
        name.to_string()
    }

    fn node(&mut self, op_type: &str, inputs: Vec<String>, output: &str, attribute: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            name: output.to_string(),
            op_type: op_type.to_string(),
            input: inputs,
            output: vec![output.to_string()],
            attribute,
            ..Default::default()
        });
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

/// Folds an inference-mode batch norm into the convolution before it:
/// `w' = w * gamma / sqrt(var + eps)` per output channel and
/// `b' = (b - mean) * gamma / sqrt(var + eps) + beta`. Computed in f64.
///
/// # Shapes
/// - `weight`: `[out, in/groups, kh, kw]` flattened; `bias`, `gamma`, `beta`, `mean`,
///   `var`: `[out]`. Returns the folded weight (same shape) and bias `[out]`.
fn fold_batch_norm(
    weight: &[f32],
    bias: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> std::result::Result<(Vec<f32>, Vec<f32>), String> {
    let out = gamma.len();
    let per = weight.len() / out.max(1);
    let mut w = Vec::with_capacity(weight.len());
    let mut b = Vec::with_capacity(out);
    for o in 0..out {
        let denom = var[o] as f64 + eps;
        if denom.is_nan() || denom <= 0.0 {
            return Err(format!("running_var[{o}] + eps = {denom} is not positive; the checkpoint is corrupt"));
        }
        let scale = gamma[o] as f64 / denom.sqrt();
        w.extend(weight[o * per..(o + 1) * per].iter().map(|&v| (v as f64 * scale) as f32));
        let b0 = bias.map_or(0.0, |b| b[o] as f64);
        b.push(((b0 - mean[o] as f64) * scale + beta[o] as f64) as f32);
    }
    Ok((w, b))
}

fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim.push(Dimension { value: Some(dimension::Value::DimParam(BATCH_DIM.to_string())), ..Default::default() });
    for &d in dims {
        shape.dim.push(Dimension { value: Some(dimension::Value::DimValue(d as i64)), ..Default::default() });
    }
    let tensor = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
        shape: MessageField::some(shape),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.to_string(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.to_string(), type_: EnumOrUnknown::new(AttributeType::INT), i, ..Default::default() }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        type_: EnumOrUnknown::new(AttributeType::INTS),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.to_string(), type_: EnumOrUnknown::new(AttributeType::FLOAT), f, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{ConvOpts, GraphBuilder, LinearInit};
    use crate::manifest::MANIFEST_FORMAT;
    use crate::{Distance, Preprocess, Provenance};

    const SIZE: u32 = 16;
    const EPS: f64 = 1e-3;

    /// conv-bn-relu6 (foldable), a conv feeding both a bn and a residual add (not
    /// foldable), pools, LRN, concat, global pool, linear, L2 normalisation.
    fn tiny_graph() -> Graph {
        let mut b = GraphBuilder::new();
        let x = b.input();
        let y = b.conv_bn(x, "c1", "b1", 3, 4, ConvOpts::k(3), EPS);
        let y = b.relu6(y);
        let c2 = b.conv(y, "c2", 4, 4, ConvOpts::k(1).bias(true));
        let n2 = b.bn(c2, "b2", 4, EPS);
        let y = b.add(n2, c2);
        let y = b.relu(y);
        let y = b.max_pool(y, 3, 2, 1, true);
        let y = b.lrn(y, 5, 1e-4, 0.75, 1.0);
        let y = b.avg_pool(y, 2, 2, 0, true, false);
        let y = b.concat(&[y, y]);
        let y = b.global_avg_max_pool(y);
        let y = b.linear(y, "fc", 8, 5, true, LinearInit::Default);
        let y = b.l2_normalize(y);
        b.output("embedding", y);
        b.finish()
    }

    /// Deterministic weights; running variances stay positive.
    fn tiny_weights(graph: &Graph) -> Weights {
        let mut w = Weights::default();
        for (k, spec) in graph.params().into_iter().enumerate() {
            let n: usize = spec.shape.iter().product();
            let data = (0..n)
                .map(|i| {
                    let v = ((i * 7 + k * 3) % 13) as f32 / 13.0 - 0.5;
                    if spec.name.ends_with("running_var") {
                        1.0 + v
                    } else {
                        v
                    }
                })
                .collect();
            w.tensors.insert(spec.name, Tensor { shape: spec.shape, data });
        }
        w
    }

    fn manifest(dim: usize, normalized: bool) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.to_string(),
            arch: "tiny".to_string(),
            embedding_dim: dim,
            normalized,
            distance: Distance::Cosine,
            input_name: "image".to_string(),
            output_name: "embedding".to_string(),
            preprocess: Preprocess::imagenet(20, SIZE),
            provenance: Provenance { run_id: "test".into(), ..Default::default() },
        }
    }

    fn export_tiny(manifest: &Manifest) -> (tempfile::TempDir, std::path::PathBuf, Result<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.onnx");
        let g = tiny_graph();
        let r = export(&g, &tiny_weights(&g), manifest, SIZE, &path);
        (dir, path, r)
    }

    fn dims(v: &ValueInfoProto) -> Vec<String> {
        v.type_
            .tensor_type()
            .shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(x)) => x.to_string(),
                Some(dimension::Value::DimParam(p)) => p.clone(),
                _ => "?".to_string(),
            })
            .collect()
    }

    fn floats(t: &TensorProto) -> Vec<f32> {
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    #[test]
    fn tiny_graph_has_the_expected_onnx_structure() {
        let m = manifest(5, true);
        let (_dir, path, r) = export_tiny(&m);
        r.unwrap();
        let model = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(model.ir_version, IR_VERSION);
        assert_eq!(model.producer_name, PRODUCER_NAME);
        assert_eq!(model.opset_import.len(), 1);
        assert_eq!(model.opset_import[0].version, OPSET_VERSION);
        let g = model.graph.as_ref().unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Conv",
                "Clip",
                "Conv",
                "BatchNormalization",
                "Add",
                "Relu",
                "MaxPool",
                "LRN",
                "AveragePool",
                "Concat",
                "GlobalAveragePool",
                "GlobalMaxPool",
                "Add",
                "Flatten",
                "Gemm",
                "ReduceL2",
                "Max",
                "Div"
            ]
        );
        // The only BatchNormalization left reads a convolution that has another user.
        let bn = g.node.iter().find(|n| n.op_type == "BatchNormalization").unwrap();
        let readers = g.node.iter().filter(|n| n.input.contains(&bn.input[0])).count();
        assert_eq!(readers, 2);
        assert!(g.initializer.iter().all(|t| !t.name.starts_with("b1.")), "b1 is folded away");

        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name, "image");
        assert_eq!(dims(&g.input[0]), ["batch", "3", "16", "16"]);
        assert_eq!(g.output.len(), 1);
        assert_eq!(g.output[0].name, "embedding");
        assert_eq!(dims(&g.output[0]), ["batch", "5"]);
        assert_eq!(g.node.last().unwrap().output, ["embedding"]);

        let entry = model.metadata_props.iter().find(|p| p.key == MANIFEST_KEY).expect("manifest in metadata");
        assert_eq!(Manifest::from_json(&entry.value).unwrap(), m);
        assert_eq!(read_manifest(&path).unwrap(), m);
    }

    #[test]
    fn folded_convolution_carries_the_batch_norm() {
        let (_dir, path, r) = export_tiny(&manifest(5, true));
        r.unwrap();
        let model = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
        let g = model.graph.as_ref().unwrap();
        let init = |name: &str| floats(g.initializer.iter().find(|t| t.name == name).unwrap());
        let src = tiny_weights(&tiny_graph());
        let p = |name: &str| src.get(name).unwrap().data.clone();
        let (w, gamma, beta, mean, var) =
            (p("c1.weight"), p("b1.weight"), p("b1.bias"), p("b1.running_mean"), p("b1.running_var"));
        let (folded_w, folded_b) = (init("c1.weight"), init("c1.bias"));
        assert_eq!(folded_w.len(), w.len());
        let per = w.len() / 4;
        for o in 0..4 {
            let scale = gamma[o] / (var[o] + EPS as f32).sqrt();
            for i in 0..per {
                assert!((folded_w[o * per + i] - w[o * per + i] * scale).abs() < 1e-6);
            }
            assert!((folded_b[o] - ((0.0 - mean[o]) * scale + beta[o])).abs() < 1e-6);
        }
        // The unfolded conv keeps its own weights untouched.
        assert_eq!(init("c2.weight"), p("c2.weight"));
    }

    #[test]
    fn inconsistent_manifest_or_weights_are_export_errors() {
        for (m, needle) in [
            (manifest(7, true), "embedding_dim"),
            (manifest(5, false), "normalized"),
            (Manifest { output_name: "logits".into(), ..manifest(5, true) }, "logits"),
            (Manifest { preprocess: Preprocess::imagenet(40, 32), ..manifest(5, true) }, "crops 32"),
        ] {
            let (_dir, path, r) = export_tiny(&m);
            match r {
                Err(Error::Export { reason, .. }) => assert!(reason.contains(needle), "{reason}"),
                other => panic!("expected an export error about {needle}, got {other:?}"),
            }
            assert!(!path.exists());
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.onnx");
        let g = tiny_graph();
        let mut w = tiny_weights(&g);
        w.tensors.remove("b2.running_var");
        let err = export(&g, &w, &manifest(5, true), SIZE, &path).unwrap_err().to_string();
        assert!(err.contains("b2.running_var") && err.contains("tiny.onnx"), "{err}");
        let mut w = tiny_weights(&g);
        w.tensors.get_mut("fc.weight").unwrap().shape = vec![8, 5];
        let err = export(&g, &w, &manifest(5, true), SIZE, &path).unwrap_err().to_string();
        assert!(err.contains("fc.weight") && err.contains("[5, 8]"), "{err}");
    }

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
