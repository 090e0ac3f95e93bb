//! A tiny graph, deterministic weights and a matching manifest for the export tests.

use crate::graph::{ConvOpts, Graph, GraphBuilder, LinearInit};
use crate::manifest::MANIFEST_FORMAT;
use crate::weights::{Tensor, Weights};
use crate::{Distance, Manifest, Preprocess, Provenance, Result};

use super::export;

pub(super) const SIZE: u32 = 16;
pub(super) const EPS: f64 = 1e-3;

/// conv-bn-relu6 (foldable), a conv feeding both a bn and a residual add (not
/// foldable), pools, LRN, concat, global pool, linear, L2 normalisation.
pub(super) fn tiny_graph() -> Graph {
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
pub(super) fn tiny_weights(graph: &Graph) -> Weights {
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

pub(super) fn manifest(dim: usize, normalized: bool) -> Manifest {
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
        weights_sha256: None,
    }
}

pub(super) fn export_tiny(manifest: &Manifest) -> (tempfile::TempDir, std::path::PathBuf, Result<Manifest>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.onnx");
    let g = tiny_graph();
    let r = export(&g, &tiny_weights(&g), manifest, SIZE, &path);
    (dir, path, r)
}
