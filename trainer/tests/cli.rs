//! The `trainer` command line: clear errors before any work, `--json` output, corrupt
//! images skipped and counted, `--resume`.

use std::path::Path;
use std::process::Command;

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

/// A labelled folder of tiny images: 4 classes x 10, plus one corrupt file per class.
fn fixture(root: &Path) {
    for c in 0..4u8 {
        let dir = root.join(format!("c{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..10u8 {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let on = (x / 8 + y / 8 + c as u32).is_multiple_of(2) ^ (i.is_multiple_of(3) && x < 4);
                if on {
                    image::Rgb([60 * c, 200, (i * 20)])
                } else {
                    image::Rgb([10, 10 + 40 * c, 30])
                }
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
        std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    }
}

fn small_fit(data: &Path, out: &Path) -> Command {
    let mut cmd = trainer();
    cmd.args(["fit", "--data"]).arg(data).arg("--out").arg(out);
    cmd.args([
        "--dim",
        "8",
        "--g-dim",
        "16",
        "--image-size",
        "32",
        "--batch-size",
        "10",
        "--num-neighbors",
        "5",
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "1",
        "--threads",
        "2",
        "--device",
        "cpu",
    ]);
    cmd
}

#[test]
fn missing_folder_is_a_clear_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = small_fit(&dir.path().join("nope"), &out).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nope"), "error does not name the folder: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "a failed start must not leave a run directory");
}

#[test]
fn bad_hyper_parameters_are_refused_before_work() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let o = small_fit(dir.path(), &dir.path().join("run")).args(["--momentum", "1.5"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--momentum must be in [0, 1], got 1.5"), "{err}");
}

#[test]
fn fit_skips_corrupt_images_eval_json_is_pure_and_resume_continues() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixture(&data);
    let out = dir.path().join("run");
    let o = small_fit(&data, &out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("broken.png"), "the warning names the corrupt file: {err}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(summary["skipped_images"].as_u64().unwrap() >= 2, "{summary}");

    // Refuses to overwrite the run.
    let again = small_fit(&data, &out).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));

    // --json prints exactly one JSON object on stdout.
    let o = trainer()
        .args(["eval", "--json", "--threads", "2", "--device", "cpu", "--run"])
        .arg(&out)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    assert_eq!(v["recall"][0][0], 1);
    let r1 = v["recall"][0][1].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&r1));
    assert!(v["nmi"].as_f64().is_some() && v["map_at_r"].as_f64().is_some());

    // Resume with more epochs continues from the checkpoint.
    let cfg = out.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("epochs = 1", "epochs = 2");
    std::fs::write(&cfg, text).unwrap();
    let o = trainer().args(["fit", "--resume", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["epochs"], 2);
    assert_eq!(summary["steps"], 2);
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count();
    assert_eq!(lines, 2);
}
