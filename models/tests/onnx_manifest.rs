//! Reading the manifest back out of an exported ONNX file, and the errors for files that
//! are not one: plain Rust, as the server uses it (no libtorch, no ONNX Runtime).

use std::path::{Path, PathBuf};

use models::manifest::{MANIFEST_FORMAT, MANIFEST_KEY};
use models::weights::{Tensor, Weights};
use models::{onnx, Arch, Distance, Error, Manifest, ModelConfig, Provenance};
use onnx_protobuf::{Message, ModelProto};

const SIZE: u32 = 32;

fn config() -> ModelConfig {
    ModelConfig { image_size: SIZE, ..ModelConfig::new(Arch::MobilenetV2, 16) }
}

fn manifest(cfg: &ModelConfig) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT.to_string(),
        arch: cfg.arch.name().to_string(),
        embedding_dim: cfg.dim,
        normalized: true,
        distance: Distance::Cosine,
        input_name: "image".to_string(),
        output_name: "embedding".to_string(),
        preprocess: cfg.preprocess(),
        provenance: Provenance {
            run_id: "run-7".into(),
            git_commit: "abc123".into(),
            created: "2024-01-01T00:00:00Z".into(),
            notes: "test".into(),
        },
        weights_sha256: None,
    }
}

/// Exports MobileNetV2 with deterministic (not meaningful) weights to `dir/model.onnx`.
/// Fixed, patterned weights for every parameter of `graph`.
fn weights_for(graph: &models::graph::Graph) -> Weights {
    let mut weights = Weights::default();
    for spec in graph.params() {
        let n: usize = spec.shape.iter().product();
        let data = (0..n).map(|i| 0.5 + (i % 17) as f32 / 34.0).collect();
        weights.tensors.insert(spec.name, Tensor { shape: spec.shape, data });
    }
    weights
}

fn exported(dir: &Path) -> (PathBuf, Manifest) {
    let cfg = config();
    let graph = cfg.export_graph(true);
    let weights = weights_for(&graph);
    let m = manifest(&cfg);
    let path = dir.join("model.onnx");
    let written = onnx::export(&graph, &weights, &m, SIZE, &path).unwrap();
    assert_eq!(Manifest { weights_sha256: None, ..written.clone() }, m, "export adds only the identity");
    (path, written)
}

#[test]
fn the_identity_is_the_weights_not_the_export() {
    let dir = tempfile::tempdir().unwrap();
    let (first, m) = exported(dir.path());
    let again = dir.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    // The same graph and weights exported later, with other provenance: the same identity.
    let graph = config().export_graph(true);
    let mut weights = weights_for(&graph);
    let later = Manifest {
        provenance: Provenance {
            created: "2030-01-01T00:00:00Z".into(),
            notes: "re-export".into(),
            ..m.provenance.clone()
        },
        weights_sha256: None,
        ..m.clone()
    };
    let same = onnx::export(&graph, &weights, &later, SIZE, &again.join("model.onnx")).unwrap();
    let id = m.weights_sha256.clone().expect("export records the identity");
    assert_eq!(id.len(), 64);
    assert_eq!(same.weights_sha256.as_deref(), Some(id.as_str()));
    assert_ne!(std::fs::read(&first).unwrap(), std::fs::read(again.join("model.onnx")).unwrap(), "the files differ");
    // One weight changed: another model.
    let name = weights.tensors.keys().next().unwrap().clone();
    weights.tensors.get_mut(&name).unwrap().data[0] += 1.0;
    let other = onnx::export(&graph, &weights, &later, SIZE, &again.join("other.onnx")).unwrap();
    assert_ne!(other.weights_sha256, same.weights_sha256);
}

fn manifest_error(path: &Path) -> String {
    match onnx::read_manifest(path) {
        Err(e @ Error::Manifest { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "the error names the file: {msg}");
            msg
        }
        other => panic!("expected a manifest error for {}, got {other:?}", path.display()),
    }
}

#[test]
fn manifest_round_trips_through_the_onnx_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m) = exported(dir.path());
    assert_eq!(onnx::read_manifest(&path).unwrap(), m);
    let model = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(model.producer_name, onnx::PRODUCER_NAME);
    assert_eq!(model.metadata_props.iter().filter(|p| p.key == MANIFEST_KEY).count(), 1);
    // Every batch norm of MobileNetV2 follows a convolution with no other user.
    assert!(model.graph.node.iter().all(|n| n.op_type != "BatchNormalization"));
}

#[test]
fn truncated_files_are_manifest_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = exported(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() - 10, bytes.len() / 2, 100, 0] {
        let cut = dir.path().join(format!("cut{keep}.onnx"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let msg = manifest_error(&cut);
        assert!(msg.contains("truncated"), "{msg}");
    }
}

#[test]
fn garbage_and_foreign_files_are_manifest_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("photo.onnx");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\n not a model at all \xff\xff\xff\xff").unwrap();
    manifest_error(&garbage);

    // A valid ONNX model without our metadata.
    let (path, m) = exported(dir.path());
    let mut model = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let props = std::mem::take(&mut model.metadata_props);
    let foreign = dir.path().join("foreign.onnx");
    std::fs::write(&foreign, model.write_to_bytes().unwrap()).unwrap();
    assert!(manifest_error(&foreign).contains(MANIFEST_KEY));

    // A manifest naming an output the graph does not have.
    let wrong = Manifest { output_name: "logits".into(), ..m };
    model.metadata_props = props;
    model.metadata_props[0].value = wrong.to_json();
    let lying = dir.path().join("lying.onnx");
    std::fs::write(&lying, model.write_to_bytes().unwrap()).unwrap();
    assert!(manifest_error(&lying).contains("logits"));

    // A manifest that is not JSON.
    model.metadata_props[0].value = "{ not json".into();
    std::fs::write(&lying, model.write_to_bytes().unwrap()).unwrap();
    assert!(manifest_error(&lying).contains("JSON"));
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let path = Path::new("/nonexistent/model.onnx");
    match onnx::read_manifest(path) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("/nonexistent/model.onnx")),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}
