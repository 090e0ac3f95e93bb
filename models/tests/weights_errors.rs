//! Broken weight files must give an error that names the file, the offending tensors and
//! the fix, never a panic: truncated, mis-shaped, incomplete, with extra tensors, or not a
//! safetensors file at all. With the `tch` feature the same holds for loading into a
//! [`Network`](models::net::Network).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use models::graph::{ConvOpts, Graph, GraphBuilder, ParamSpec};
use models::weights::{Tensor, Weights};
use models::{Arch, Error, ModelConfig};

const ARCH: &str = "tiny";

/// Conv + BN + ReLU + pooled output: enough named tensors to get every error.
fn tiny_graph() -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.input();
    let y = b.conv_bn(x, "stem.conv", "stem.bn", 3, 4, ConvOpts::k(3), 1e-5);
    let y = b.relu(y);
    let y = b.global_avg_max_pool(y);
    b.output("embedding", y);
    b.finish()
}

/// Weights that fit `tiny_graph` exactly, every value `0.5`.
fn good_weights(specs: &[ParamSpec]) -> BTreeMap<String, Tensor> {
    specs
        .iter()
        .map(|s| {
            let len = s.shape.iter().product();
            (s.name.clone(), Tensor { shape: s.shape.clone(), data: vec![0.5; len] })
        })
        .collect()
}

fn write(dir: &Path, name: &str, tensors: BTreeMap<String, Tensor>) -> PathBuf {
    let path = dir.join(name);
    Weights { tensors, source: PathBuf::new() }.write(&path, None).expect("write weights");
    path
}

/// Reads and checks `path` against `tiny_graph`, as loading a backbone does.
fn read_and_check(path: &Path) -> Result<(), Error> {
    let w = Weights::read(path)?;
    w.check(ARCH, &tiny_graph().params(), &[], &|_| false)
}

fn message(path: &Path) -> String {
    let err = read_and_check(path).expect_err("a broken file must be rejected");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "the error does not name the file: {msg}");
    msg
}

fn assert_mentions(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "expected `{n}` in the error:\n{msg}");
    }
}

/// The fix a mismatch error proposes.
const MISMATCH_FIX: &str = "Use a file saved from the same architecture";

/// One of each broken file, next to a good one.
struct Files {
    dir: tempfile::TempDir,
    good: PathBuf,
    truncated: PathBuf,
    misshaped: PathBuf,
    incomplete: PathBuf,
    extra: PathBuf,
    not_safetensors: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("temp dir");
    let specs = tiny_graph().params();
    let good = write(dir.path(), "good.safetensors", good_weights(&specs));

    let bytes = std::fs::read(&good).expect("read back");
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 40]).expect("write truncated");

    let mut t = good_weights(&specs);
    t.insert("stem.conv.weight".into(), Tensor { shape: vec![4, 3, 5, 5], data: vec![0.5; 300] });
    let misshaped = write(dir.path(), "misshaped.safetensors", t);

    let mut t = good_weights(&specs);
    t.remove("stem.bn.running_var");
    t.remove("stem.conv.weight");
    let incomplete = write(dir.path(), "incomplete.safetensors", t);

    let mut t = good_weights(&specs);
    t.insert("head.extra.weight".into(), Tensor { shape: vec![2, 2], data: vec![0.5; 4] });
    let extra = write(dir.path(), "extra.safetensors", t);

    // A legacy torch checkpoint starts with a zip or pickle header, not a safetensors one.
    let not_safetensors = dir.path().join("model.pth");
    std::fs::write(&not_safetensors, b"PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl\x80\x02}q\x00")
        .expect("write pth");

    Files { dir, good, truncated, misshaped, incomplete, extra, not_safetensors }
}

#[test]
fn a_matching_file_is_accepted() {
    let f = files();
    read_and_check(&f.good).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn truncated_file_is_reported_with_its_path() {
    let f = files();
    let msg = message(&f.truncated);
    assert_mentions(&msg, &["truncated", "scripts/"]);
}

#[test]
fn misshaped_tensor_is_named_with_both_shapes() {
    let f = files();
    let msg = message(&f.misshaped);
    assert_mentions(&msg, &["mis-shaped", "stem.conv.weight", "[4, 3, 5, 5]", "[4, 3, 3, 3]", MISMATCH_FIX]);
}

#[test]
fn missing_tensors_are_named() {
    let f = files();
    let msg = message(&f.incomplete);
    assert_mentions(&msg, &["2 missing", "stem.bn.running_var", "stem.conv.weight", MISMATCH_FIX]);
}

#[test]
fn unexpected_tensor_is_named() {
    let f = files();
    let msg = message(&f.extra);
    assert_mentions(&msg, &["unexpected", "head.extra.weight", MISMATCH_FIX]);
}

#[test]
fn other_formats_point_to_the_converter() {
    let f = files();
    let msg = message(&f.not_safetensors);
    assert_mentions(&msg, &["not a valid safetensors file", "scripts/convert_weights.py"]);
    let empty = f.dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").expect("write empty");
    assert_mentions(&message(&empty), &["not a valid safetensors file"]);
}

#[test]
fn missing_file_points_to_setup() {
    let f = files();
    let absent = f.dir.path().join("absent.safetensors");
    assert_mentions(&message(&absent), &["scripts/setup.sh"]);
}

/// A real pretrained file offered to the wrong architecture lists both sides by name.
#[test]
fn wrong_architecture_lists_missing_and_unexpected_names() {
    let deps = std::env::var("STML_DEPS").unwrap_or_else(|_| env!("STML_DEPS").to_string());
    let file = Path::new(&deps).join("weights").join("efficientnet_lite0.safetensors");
    assert!(file.exists(), "{} is missing: run scripts/setup.sh", file.display());
    let w = Weights::read(&file).unwrap_or_else(|e| panic!("{e}"));
    let arch = Arch::Resnet18;
    let err = w
        .check(arch.name(), &ModelConfig::pooled_graph(arch).params(), arch.classifier_prefixes(), &|_| false)
        .expect_err("EfficientNet weights do not fit ResNet-18");
    let msg = err.to_string();
    assert_mentions(
        &msg,
        &["resnet18", "missing", "conv1.weight", "unexpected", "_blocks.0._depthwise_conv.weight", "... and"],
    );
    assert!(msg.contains(&file.display().to_string()), "{msg}");
}

#[cfg(feature = "tch")]
mod network {
    use tch::{nn, Device, Kind};

    use super::*;
    use models::net::Network;

    fn network() -> Network {
        let vs = nn::VarStore::new(Device::Cpu);
        Network::new(&vs.root(), tiny_graph())
    }

    fn conv_weight_sum(net: &Network) -> f64 {
        f64::try_from(net.param("stem.conv.weight").expect("conv weight").sum(Kind::Double)).expect("f64")
    }

    /// Every broken file fails to load, with the same message, and leaves the
    /// network's parameters as they were.
    #[test]
    fn broken_files_do_not_load_and_change_nothing() {
        let f = files();
        let net = network();
        let before = conv_weight_sum(&net);
        for path in [&f.truncated, &f.misshaped, &f.incomplete, &f.extra, &f.not_safetensors] {
            let err = net.load_file(path, ARCH, &[], &|_| false).expect_err("broken file must not load");
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
            assert_eq!(conv_weight_sum(&net), before, "{}: a failed load changed the weights", path.display());
        }
        net.load_file(&f.good, ARCH, &[], &|_| false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(conv_weight_sum(&net), 0.5 * 4.0 * 27.0);
    }

    /// Tensors a caller declares optional (fresh heads) may be absent; others may not.
    #[test]
    fn optional_tensors_may_be_missing() {
        let f = files();
        let net = network();
        let optional = |name: &str| name.starts_with("stem.bn.") || name == "stem.conv.weight";
        net.load_file(&f.incomplete, ARCH, &[], &optional).unwrap_or_else(|e| panic!("{e}"));
        let err = net
            .load_file(&f.incomplete, ARCH, &[], &|n| n.starts_with("stem.bn."))
            .expect_err("conv weight is required");
        assert!(err.to_string().contains("stem.conv.weight"), "{err}");
    }
}
