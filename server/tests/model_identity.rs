//! A model is its weights: the same weights exported again (another run name, another
//! time) open the index they built; other weights are refused; an index that named its
//! model the old way (run and export time) is recognised and renamed.

mod common;

use common::{tiny_model_with, DIM};
use server::gallery::IndexKind;
use server::store::{IndexSpec, Store};
use server::{serve, Error, NewImage, Settings};

#[test]
fn same_weights_same_model_other_weights_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = tiny_model_with(dir.path(), "first.onnx", DIM, 7, "run-a");
    let again = tiny_model_with(dir.path(), "again.onnx", DIM, 7, "run-b");
    let other = tiny_model_with(dir.path(), "other.onnx", DIM, 8, "run-a");
    let settings = Settings::default();
    let index = dir.path().join("index");
    let open = |model: &std::path::Path| {
        let m = serve::open_model_file(&settings, model).unwrap();
        serve::open_gallery_dir(&settings, &index, &m, IndexKind::Exact).map(|g| (g, m))
    };
    let (g, m) = open(&first).unwrap();
    assert!(m.manifest().weights_sha256.is_some());
    g.insert(vec![NewImage {
        id: Some("x".into()),
        metadata: serde_json::json!({}),
        content_hash: None,
        vector: vec![0.5; DIM],
        thumbnail: None,
        original: None,
    }])
    .unwrap();
    drop(g);
    let (g, m2) = open(&again).expect("the same weights exported again are the same model");
    assert_eq!(m2.manifest().weights_sha256, m.manifest().weights_sha256);
    assert_eq!(g.stats().images, 1);
    drop(g);
    assert!(matches!(open(&other), Err(Error::IndexModelMismatch { .. })), "other weights are another model");

    // An index whose spec names the model the pre-identity way opens and is renamed.
    let legacy = dir.path().join("legacy");
    let store = Store::open(&legacy).unwrap();
    let old = IndexSpec { model: IndexSpec::legacy_model(m.manifest()), ..IndexSpec::for_manifest(m.manifest()) };
    store.check_spec(&old, None).unwrap();
    drop(store);
    let g = serve::open_gallery_dir(&settings, &legacy, &m, IndexKind::Exact).expect("the legacy name is recognised");
    drop(g);
    let store = Store::open(&legacy).unwrap();
    store.check_spec(&IndexSpec::for_manifest(m.manifest()), None).expect("renamed to the identity");
}
