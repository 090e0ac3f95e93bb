//! ONNX export of a [`Graph`] in plain Rust (no Python, no libtorch), and reading the
//! [`Manifest`] back out of an exported file. Batch norm is folded into the convolution
//! before it; the batch axis is symbolic; the manifest travels in `metadata_props`.
//!
//! Here the manifest is checked against the graph and the model assembled; `emit` turns
//! graph nodes into ONNX nodes, `fold` folds batch norms, `proto` builds and writes
//! protobuf messages and `metadata` stores and reads the manifest.

mod emit;
mod fold;
mod metadata;
mod proto;
#[cfg(test)]
mod testutil;

use std::path::Path;

use onnx_protobuf::{GraphProto, ModelProto, OperatorSetIdProto};
use protobuf::{Message, MessageField};

use crate::graph::{Graph, NodeId, Op};
use crate::weights::Weights;
use crate::{Error, Manifest, Result};

use emit::{Exporter, Shape};
pub use metadata::read_manifest;

/// ONNX operator set the exported files use.
pub const OPSET_VERSION: i64 = 17;
/// ONNX IR version of the exported files.
pub const IR_VERSION: i64 = 8;
/// `producer_name` of the exported files.
pub const PRODUCER_NAME: &str = "stml-trainer";
/// Name of the symbolic batch dimension of the input and outputs.
pub const BATCH_DIM: &str = "batch";

/// Writes `graph` with `weights` as an ONNX model to `path` (atomically), with `manifest`
/// as JSON in `metadata_props` under [`MANIFEST_KEY`](crate::manifest::MANIFEST_KEY).
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
pub fn export(graph: &Graph, weights: &Weights, manifest: &Manifest, input_size: u32, path: &Path) -> Result<Manifest> {
    let (model, written) = build_model(graph, weights, manifest, input_size, path)?;
    proto::write_model(&model, path)?;
    Ok(written)
}

/// Builds the in-memory ONNX model that [`export`] writes.
fn build_model(
    graph: &Graph,
    weights: &Weights,
    manifest: &Manifest,
    input_size: u32,
    path: &Path,
) -> Result<(ModelProto, Manifest)> {
    let fail = |reason: String| Error::Export { path: path.to_path_buf(), reason };
    let output = check_manifest(graph, manifest, input_size, fail)?;

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
    g.input.push(proto::value_info(&manifest.input_name, &[3, input_size as usize, input_size as usize]));
    for (name, id) in &graph.outputs {
        let shape = ex.shapes[*id].ok_or_else(|| fail(format!("output `{name}` was not computed")))?;
        g.output.push(proto::value_info(name, &shape.dims()));
    }
    g.node = ex.nodes;
    g.initializer = ex.initializers;
    // The identity: the graph and its weights as serialised (deterministically), nothing
    // about when or by what they were exported.
    let graph_bytes = g.write_to_bytes().map_err(|e| fail(format!("cannot serialise the graph: {e}")))?;
    let manifest = Manifest { weights_sha256: Some(contract::sha256_hex(&graph_bytes)), ..manifest.clone() };

    let mut model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: PRODUCER_NAME.to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        graph: MessageField::some(g),
        ..Default::default()
    };
    model.opset_import.push(OperatorSetIdProto { domain: String::new(), version: OPSET_VERSION, ..Default::default() });
    metadata::write_manifest(&mut model, &manifest);
    Ok((model, manifest))
}

/// Checks what of `manifest` can be checked before emitting the graph (the crop size, the
/// output's name and normalisation) and returns the node of the manifest's output.
fn check_manifest(
    graph: &Graph,
    manifest: &Manifest,
    input_size: u32,
    fail: impl Fn(String) -> Error,
) -> Result<NodeId> {
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
    Ok(output)
}

#[cfg(test)]
mod tests {
    use onnx_protobuf::{tensor_shape_proto::dimension, Message, ModelProto, ValueInfoProto};

    use super::testutil::{export_tiny, manifest, tiny_graph, tiny_weights, SIZE};
    use super::*;
    use crate::manifest::MANIFEST_KEY;
    use crate::Preprocess;

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
        let written = Manifest::from_json(&entry.value).unwrap();
        assert_eq!(written.weights_sha256.as_ref().map(String::len), Some(64), "the identity is recorded");
        assert_eq!(Manifest { weights_sha256: None, ..written.clone() }, m);
        assert_eq!(read_manifest(&path).unwrap(), written);
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
}
