//! The exported ONNX file computes what the libtorch network computes: every
//! architecture with random weights (batch-norm statistics randomised so that folding
//! matters), batch 1 and 3, through ONNX Runtime; and EfficientNet-Lite0 with its
//! pretrained weights classifies two photos correctly through its exported file.
#![cfg(feature = "tch")]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use models::manifest::MANIFEST_FORMAT;
use models::net::Network;
use models::weights::Weights;
use models::{onnx, Arch, Distance, Head, Manifest, ModelConfig, Output, Preprocess, Provenance};
use ort::session::Session;
use tch::{nn, Device, Kind, Tensor};

const INPUT: &str = "image";
const DIM: usize = 32;

/// The process-wide ONNX Runtime environment, loaded from `ORT_DYLIB_PATH`.
fn ort_env() -> &'static ort::environment::Environment {
    static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib =
            std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH is set by .cargo/config.toml; run scripts/setup.sh");
        ort::init_from(&lib)
            .unwrap_or_else(|e| panic!("cannot load ONNX Runtime from {lib}: {e}; run scripts/setup.sh"))
            .build()
            .expect("ONNX Runtime environment")
    })
}

fn session(path: &Path) -> Session {
    Session::builder(ort_env())
        .expect("session builder")
        .with_intra_threads(1)
        .expect("thread count")
        .commit_from_file(path)
        .unwrap_or_else(|e| panic!("ONNX Runtime rejects {}: {e}", path.display()))
}

/// Runs one input through a session and returns the named output's shape and values.
///
/// # Shapes
/// - `input`: `[batch, 3, s, s]` flattened, `shape` its dimensions.
fn run(session: &mut Session, output: &str, input: Vec<f32>, shape: [usize; 4]) -> (Vec<usize>, Vec<f32>) {
    let x = ort::value::Tensor::from_array((shape, input)).expect("input tensor");
    let outputs = session.run(ort::inputs![INPUT => x]).expect("ONNX Runtime run");
    let (s, data) = outputs[output].try_extract_tensor::<f32>().expect("f32 output");
    (s.iter().map(|&d| d as usize).collect(), data.to_vec())
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).expect("f32 tensor")
}

/// Gives every batch norm non-trivial statistics and affine parameters, and every bias
/// some noise, so that a wrong fold or a dropped bias shows in the output.
fn randomise(net: &Network) {
    let bn: HashSet<String> = net.bn_param_names().into_iter().collect();
    let opts = (Kind::Float, Device::Cpu);
    tch::no_grad(|| {
        for spec in net.specs() {
            let shape: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
            let new = if spec.name.ends_with(".running_var") {
                Tensor::rand(&shape, opts) * 1.5 + 0.5 // uniform(0.5, 2)
            } else if spec.name.ends_with(".running_mean") {
                Tensor::randn(&shape, opts) * 0.1
            } else if bn.contains(&spec.name) && spec.name.ends_with(".weight") {
                Tensor::rand(&shape, opts) + 0.5 // uniform(0.5, 1.5)
            } else if spec.name.ends_with(".bias") {
                Tensor::randn(&shape, opts) * 0.1
            } else {
                continue;
            };
            let mut t = net.param(&spec.name).expect("parameter exists").shallow_clone();
            t.copy_(&new);
        }
    });
}

/// max |a - b| <= 1e-4 * max(1, max |a|), everything finite.
fn assert_close(what: &str, want: &[f32], got: &[f32]) {
    assert_eq!(want.len(), got.len(), "{what}: output lengths differ");
    assert!(want.iter().chain(got).all(|v| v.is_finite()), "{what}: non-finite output");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = want.iter().zip(got).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-4 * scale, "{what}: tch and ONNX Runtime differ by {diff} (output scale {scale})");
}

fn manifest(arch: Arch, cfg: &ModelConfig, normalized: bool) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT.to_string(),
        arch: arch.name().to_string(),
        embedding_dim: cfg.served_dim(),
        normalized,
        distance: if normalized { Distance::Cosine } else { Distance::Euclidean },
        input_name: INPUT.to_string(),
        output_name: "embedding".to_string(),
        preprocess: cfg.preprocess(),
        provenance: Provenance { run_id: "parity-test".into(), ..Default::default() },
        weights_sha256: None,
    }
}

/// Must-show 1 for one architecture at input size `size`, serving `f`.
fn parity(arch: Arch, size: u32) {
    parity_of(ModelConfig { image_size: size, ..ModelConfig::new(arch, DIM) });
}

/// The exported file of `cfg` (its served head) computes what libtorch computes.
fn parity_of(cfg: ModelConfig) {
    let (arch, size, dim) = (cfg.arch, cfg.image_size, cfg.served_dim());
    let dir = tempfile::tempdir().expect("temporary folder");
    for normalize in [false, true] {
        let graph = cfg.export_graph(normalize);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), graph.clone());
        randomise(&net);
        let m = manifest(arch, &cfg, normalize);
        let path = dir.path().join(format!("{arch}-{normalize}.onnx"));
        let written = onnx::export(&graph, &net.to_weights(), &m, size, &path).expect("export");
        assert_eq!(Manifest { weights_sha256: None, ..written.clone() }, m, "export adds only the identity");
        assert_eq!(onnx::read_manifest(&path).expect("manifest"), written);
        let mut session = session(&path);
        for batch in [1usize, 3] {
            let what = format!("{arch} normalize={normalize} batch={batch}");
            let s = size as usize;
            let xs = Tensor::randn([batch as i64, 3, s as i64, s as i64], (Kind::Float, Device::Cpu));
            let want = net.forward(&xs, false).expect("tch forward");
            let want = to_vec(want.get(Output::Embedding).expect("embedding"));
            let (shape, got) = run(&mut session, "embedding", to_vec(&xs), [batch, 3, s, s]);
            assert_eq!(shape, [batch, dim], "{what}: output shape");
            assert_close(&what, &want, &got);
            // Guard against a vacuous pass: real, per-image outputs.
            assert!(want.iter().any(|v| v.abs() > 1e-3), "{what}: output is all zeros");
            if batch > 1 {
                assert_ne!(want[..dim], want[dim..2 * dim], "{what}: images give the same output");
            }
            if normalize {
                for row in got.chunks(dim) {
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    assert!((norm - 1.0).abs() < 1e-4, "{what}: row norm {norm}");
                }
            }
        }
    }
}

#[test]
fn mobilenet_v2_onnx_matches_tch() {
    parity(Arch::MobilenetV2, 64);
}

/// The default preset serves the wide head `g`: the file holds `g` (and not `f`) and
/// outputs its `g_dim` values.
#[test]
fn mobilenet_v2_serving_g_onnx_matches_tch() {
    let cfg =
        ModelConfig { image_size: 64, g_dim: 48, served_head: Head::G, ..ModelConfig::new(Arch::MobilenetV2, DIM) };
    let heads: Vec<String> =
        cfg.export_graph(false).params().into_iter().map(|p| p.name).filter(|n| n.starts_with("head_")).collect();
    assert_eq!(heads, ["head_g.weight", "head_g.bias"]);
    parity_of(cfg);
}

#[test]
fn efficientnet_lite0_onnx_matches_tch() {
    parity(Arch::EfficientnetLite0, 64);
}

#[test]
fn resnet18_onnx_matches_tch() {
    parity(Arch::Resnet18, 64);
}

#[test]
fn resnet50_onnx_matches_tch() {
    parity(Arch::Resnet50, 64);
}

#[test]
fn googlenet_onnx_matches_tch() {
    parity(Arch::Googlenet, 64);
}

#[test]
fn bn_inception_onnx_matches_tch() {
    parity(Arch::BnInception, 64);
}

fn deps() -> PathBuf {
    std::env::var_os("STML_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../deps"))
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Must-show 2, ONNX half: the pretrained EfficientNet-Lite0 with its classifier,
/// exported, sees a cat (ImageNet 281-285) in chelsea.png and an espresso (967) in coffee.png.
#[test]
fn efficientnet_lite0_pretrained_onnx_classifies_photos() {
    let arch = Arch::EfficientnetLite0;
    let deps = deps();
    let weights_path = deps.join("weights").join(arch.pretrained_file().expect("pretrained file"));
    let weights = Weights::read(&weights_path).expect("pretrained weights; run scripts/setup.sh");
    let graph = ModelConfig::classifier_graph(arch, 1000).expect("EfficientNet-Lite0 has a classifier");
    let pre = Preprocess::imagenet(256, 224);
    let m = Manifest {
        format: MANIFEST_FORMAT.to_string(),
        arch: arch.name().to_string(),
        embedding_dim: 1000,
        normalized: false,
        distance: Distance::Euclidean,
        input_name: INPUT.to_string(),
        output_name: "logits".to_string(),
        preprocess: pre.clone(),
        provenance: Provenance::default(),
        weights_sha256: None,
    };
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("efficientnet_lite0_classifier.onnx");
    onnx::export(&graph, &weights, &m, 224, &path).expect("export");

    let mut input = Vec::new();
    for photo in ["chelsea.png", "coffee.png"] {
        let img = image::open(deps.join("photos").join(photo)).expect("photo; run scripts/setup.sh");
        input.extend(pre.apply(&img));
    }
    let (shape, logits) = run(&mut session(&path), "logits", input.clone(), [2, 3, 224, 224]);
    assert_eq!(shape, [2, 1000]);
    let cat = argmax(&logits[..1000]);
    let coffee = argmax(&logits[1000..]);
    assert!((281..=285).contains(&cat), "chelsea.png came out as class {cat}");
    assert_eq!(coffee, 967, "coffee.png came out as class {coffee}");

    // The same logits as the libtorch port, with real (not random) batch-norm statistics.
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs.root(), graph);
    net.load(&weights, arch.name(), arch.classifier_prefixes(), &|_| false).expect("load");
    let xs = Tensor::from_slice(&input).reshape([2, 3, 224, 224]);
    let want = to_vec(net.forward(&xs, false).expect("tch forward").get(Output::Logits).expect("logits"));
    assert_close("efficientnet_lite0 pretrained logits", &want, &logits);
}
