//! The product end to end, small: fit STML for a few steps on a labelled folder (labels
//! unused by training), evaluate, export to ONNX, and check that ONNX Runtime embeds the
//! test images exactly as the trainer's own evaluation does.

use std::sync::Arc;

use models::net::Network;
use ort::session::Session;
use tch::{nn::VarStore, Device};
use trainer::config::{DeviceKind, TrainConfig};
use trainer::data::{self, Split, Transform};
use trainer::embed::{embed, EmbedOptions};

#[test]
fn fit_eval_export_and_onnx_embeds_like_the_trainer() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("shapes");
    // 6 classes: 3 train, 3 test (labelled folders split by class halves).
    e2e::write_shapes(&data_dir, 6, 12, 48);

    let mut cfg = TrainConfig::defaults(data_dir.clone());
    cfg.model.dim = 16;
    cfg.model.g_dim = 32;
    cfg.model.image_size = 32;
    cfg.sampling_size = 36;
    cfg.optim.batch_size = 10;
    cfg.stml.num_neighbors = 5;
    cfg.optim.epochs = 2;
    cfg.optim.max_steps_per_epoch = 2;
    cfg.threads = 2;
    cfg.device = DeviceKind::Cpu;
    let run_dir = dir.path().join("run");
    let summary = trainer::train::fit(cfg.clone(), &run_dir).expect("fit");
    assert_eq!(summary.epochs, 2);
    assert_eq!(summary.steps, 4);
    assert!(summary.final_loss.is_finite() && summary.final_loss > 0.0);
    let eval = summary.eval.expect("labelled data is evaluated");
    assert_eq!(eval.queries, 36);
    assert_eq!(eval.classes, 3);
    for f in ["config.toml", "metrics.jsonl", "loss.png", "recall.png", "retrieval.png", "LATEST", "summary.json"] {
        assert!(run_dir.join(f).exists(), "{f} missing from the run directory");
    }

    // `trainer eval` on the run gives the same figures as the last epoch's evaluation.
    let opts = trainer::evaluate::EvalOptions {
        data: data_dir.clone(),
        format: data::Format::Auto,
        limit: 0,
        ks: vec![],
        cosine: false,
        threads: 2,
        device: DeviceKind::Cpu,
        image_size: None,
    };
    let report = trainer::evaluate::eval_run(&run_dir, &opts).expect("eval");
    assert_eq!(report.recall, eval.recall);

    // Export, then embed the test images with ONNX Runtime through the manifest only.
    let onnx_path = dir.path().join("model.onnx");
    let manifest = trainer::export::export_run(&run_dir, &onnx_path, false).expect("export");
    assert_eq!(models::onnx::read_manifest(&onnx_path).expect("manifest"), manifest);
    assert_eq!(manifest.embedding_dim, 16);
    assert_eq!(manifest.preprocess.crop, 32);

    let test = Arc::new(data::load(&data_dir, data::Format::Auto, Split::Test).unwrap());
    let vs = VarStore::new(Device::Cpu);
    let net = Network::new(&vs.root(), cfg.model.student_graph());
    let ck = trainer::run::RunDir::open(&run_dir).unwrap().latest_checkpoint().unwrap();
    net.load_file(&ck.join(trainer::run::STUDENT), "mobilenet_v2", &[], &|_| false).unwrap();
    let ours = embed(
        &net,
        &test,
        &EmbedOptions {
            output: "f",
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

    let lib = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH is set by .cargo/config.toml");
    let env = ort::init_from(&lib).expect("ONNX Runtime library (run scripts/setup.sh)").build().unwrap();
    let mut session = Session::builder(&env).unwrap().commit_from_file(&onnx_path).unwrap();
    let s = manifest.preprocess.crop as usize;
    let mut worst = 0f32;
    let mut scale = 0f32;
    for (row, &i) in ours.kept.iter().enumerate() {
        let data::ImageSource::File(path) = &test.samples[i].source else { panic!("files expected") };
        let img = image::open(path).unwrap();
        let x = manifest.preprocess.apply(&img);
        let x = ort::value::Tensor::from_array(([1usize, 3, s, s], x)).unwrap();
        let out = session.run(ort::inputs![manifest.input_name.as_str() => x]).unwrap();
        let (_, y) = out[manifest.output_name.as_str()].try_extract_tensor::<f32>().unwrap();
        let expect = &ours.vectors[row * 16..(row + 1) * 16];
        for (a, b) in y.iter().zip(expect) {
            worst = worst.max((a - b).abs());
            scale = scale.max(b.abs());
        }
    }
    assert!(
        worst <= 1e-4 * scale.max(1.0),
        "ONNX Runtime and the trainer disagree: max |diff| {worst} (output scale {scale})"
    );
}
