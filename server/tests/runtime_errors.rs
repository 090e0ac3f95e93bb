//! Start-up failures are clear errors, never panics: a missing or broken ONNX Runtime
//! library names the path and the fix; a missing model names the model.

mod common;

use std::process::Command;

use common::{binary, tiny_model};

fn serve_stderr(model: &std::path::Path, index: &std::path::Path, ort: &std::path::Path) -> String {
    let out = Command::new(binary())
        .args(["serve", "--port", "0", "--model"])
        .arg(model)
        .arg("--index")
        .arg(index)
        .env("ORT_DYLIB_PATH", ort)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn missing_or_broken_onnx_runtime_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let index = dir.path().join("index");

    let missing = dir.path().join("nowhere/libonnxruntime.so");
    let err = serve_stderr(&model, &index, &missing);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("scripts/setup.sh") && err.contains("ORT_DYLIB_PATH"), "{err}");

    let broken = dir.path().join("libonnxruntime.so");
    std::fs::write(&broken, b"this is not a shared library").unwrap();
    let err = serve_stderr(&model, &index, &broken);
    assert!(err.contains(&broken.display().to_string()), "{err}");
    assert!(err.contains("scripts/setup.sh"), "{err}");

    // With a working library a missing model is named.
    let ort = server::runtime::resolve_dylib(None);
    let err = serve_stderr(&dir.path().join("absent.onnx"), &index, &ort);
    assert!(err.contains("absent.onnx") && err.contains("trainer export"), "{err}");
}
