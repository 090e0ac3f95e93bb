//! Folding inference-mode batch norms into the convolution before them: which
//! convolutions can take their batch norm, and the folded weights and bias.

use crate::graph::{Graph, NodeId, Op};

/// For each node: the batch norm it is folded into, if it is a convolution whose only
/// user is a batch norm reading nothing else.
pub(super) fn fold_targets(graph: &Graph) -> Vec<Option<NodeId>> {
    let uses = graph.use_counts();
    let mut folded_into = vec![None; graph.nodes.len()];
    for (id, node) in graph.nodes.iter().enumerate() {
        if let (Op::BatchNorm { .. }, [src]) = (&node.op, node.inputs.as_slice()) {
            if matches!(graph.nodes[*src].op, Op::Conv2d { .. }) && uses[*src] == 1 {
                folded_into[*src] = Some(id);
            }
        }
    }
    folded_into
}

/// Folds an inference-mode batch norm into the convolution before it:
/// `w' = w * gamma / sqrt(var + eps)` per output channel and
/// `b' = (b - mean) * gamma / sqrt(var + eps) + beta`. Computed in f64.
///
/// # Shapes
/// - `weight`: `[out, in/groups, kh, kw]` flattened; `bias`, `gamma`, `beta`, `mean`,
///   `var`: `[out]`. Returns the folded weight (same shape) and bias `[out]`.
pub(super) fn fold_batch_norm(
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

#[cfg(test)]
mod tests {
    use onnx_protobuf::{Message, ModelProto, TensorProto};

    use super::super::testutil::{export_tiny, manifest, tiny_graph, tiny_weights, EPS};

    fn floats(t: &TensorProto) -> Vec<f32> {
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
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
}
