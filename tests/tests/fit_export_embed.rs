//! The product end to end, small: fit STML for a few steps on a labelled folder (labels
//! unused by training) with a second labelled folder of unseen classes to evaluate on,
//! evaluate, export to ONNX, and check that the server's embedding
//! path (decode, manifest preprocessing, ONNX Runtime) gives the same vectors as the
//! trainer's own evaluation for the same image files.

use std::sync::Arc;

use models::net::Network;
use tch::{nn::VarStore, Device};
use trainer::config::DeviceKind;
use trainer::data::{self, Split, Transform};
use trainer::embed::{embed, EmbedOptions};

#[test]
fn fit_eval_export_and_server_embeds_like_the_trainer() {
    let dir = tempfile::tempdir().unwrap();
    let train_dir = dir.path().join("shapes");
    let data_dir = dir.path().join("shapes-unseen");
    // 6 classes: 3 to train on, 3 unseen ones (a folder of their own) to evaluate on.
    e2e::write_shapes(&train_dir, 6, 12, 48);
    std::fs::create_dir_all(&data_dir).unwrap();
    for c in 3..6 {
        let name = format!("class_{c}");
        std::fs::rename(train_dir.join(&name), data_dir.join(&name)).unwrap();
    }

    let mut cfg = e2e::tiny_config(&train_dir, 2);
    cfg.data.eval_data = Some(data_dir.clone());
    let run_dir = dir.path().join("run");
    let summary = trainer::commands::fit::fit(cfg.clone(), &run_dir).expect("fit");
    assert_eq!(summary.epochs, 2);
    assert_eq!(summary.steps, 4);
    assert!(summary.final_loss.is_finite() && summary.final_loss > 0.0);
    assert!(summary.baseline.is_some(), "the pretrained baseline is measured beside the run");
    let eval = summary.eval.expect("labelled data is evaluated");
    assert_eq!(eval.queries, 36);
    assert_eq!(eval.classes, 3);
    for f in ["config.toml", "metrics.jsonl", "loss.png", "recall.png", "retrieval.png", "LATEST", "summary.json"] {
        assert!(run_dir.join(f).exists(), "{f} missing from the run directory");
    }

    // `trainer eval` on the run gives the same figures as the last epoch's evaluation.
    let opts = trainer::commands::eval::EvalOptions {
        data: data_dir.clone(),
        format: data::Format::Auto,
        split: None,
        limit: 0,
        ks: vec![],
        cosine: false,
        threads: 2,
        device: DeviceKind::Cpu,
        image_size: None,
        head: None,
    };
    let report = trainer::commands::eval::eval_run(&run_dir, &opts).expect("eval");
    assert_eq!(report.recall, eval.recall);

    // Export, then embed the test images with ONNX Runtime through the manifest only.
    let onnx_path = dir.path().join("model.onnx");
    let manifest = trainer::commands::export::export_run(&run_dir, &onnx_path, false, None).expect("export");
    assert_eq!(models::onnx::read_manifest(&onnx_path).expect("manifest"), manifest);
    // The default preset serves the wide head g (tiny_config: f 16-d, g 32-d); f on request.
    assert_eq!(manifest.embedding_dim, 32);
    let f_path = dir.path().join("model-f.onnx");
    let f = trainer::commands::export::export_run(&run_dir, &f_path, false, Some(models::Head::F)).expect("export f");
    assert_eq!(f.embedding_dim, 16);
    assert_eq!(manifest.preprocess.crop, 32);

    let test = Arc::new(data::load(&data_dir, data::Format::Auto, Split::All).unwrap());
    let vs = VarStore::new(Device::Cpu);
    let net = Network::new(&vs.root(), cfg.model.student_graph());
    let ck = trainer::run::RunDir::open(&run_dir).unwrap().latest_checkpoint().unwrap();
    net.load_file(&ck.join(trainer::run::STUDENT), "mobilenet_v2", &[], &|_| false).unwrap();
    let ours = embed(
        &net,
        &test,
        &EmbedOptions {
            output: contract::Output::G,
            transform: Transform::eval(&cfg.model.preprocess()),
            batch_size: 7,
            threads: 2,
            device: Device::Cpu,
            cache: None,
            label: None,
        },
    )
    .unwrap();
    assert_eq!(ours.kept.len(), test.len());

    // The server's path: bytes -> decode_image -> manifest preprocessing -> ONNX Runtime.
    let env = server::runtime::environment(&server::runtime::resolve_dylib(None))
        .expect("ONNX Runtime (run scripts/setup.sh)");
    let model = server::runtime::OnnxModel::open(&env, &onnx_path, 1, (0, 0), server::settings::Spinning::default())
        .expect("server opens the exported model");
    assert_eq!(model.manifest(), &manifest);
    let mut worst = 0f32;
    let mut scale = 0f32;
    for (row, &i) in ours.kept.iter().enumerate() {
        let data::ImageSource::File(path) = &test.samples[i].source else { panic!("files expected") };
        let bytes = std::fs::read(path).unwrap();
        let img = server::embed::decode_image(&bytes, 1 << 24, server::embed::min_side(&manifest.preprocess)).unwrap();
        let x = model.manifest().preprocess.apply(&img);
        let y = model.embed(x, 1).unwrap().remove(0);
        let expect = &ours.vectors[row * 32..(row + 1) * 32];
        assert_eq!(y.len(), expect.len());
        for (a, b) in y.iter().zip(expect) {
            worst = worst.max((a - b).abs());
            scale = scale.max(b.abs());
        }
    }
    assert!(
        worst <= 1e-4 * scale.max(1.0),
        "server and trainer embeddings disagree: max |diff| {worst} (output scale {scale})"
    );
}
