//! The `trainer` command line: clear errors before any work, `--json` output, corrupt
//! images skipped and counted, `--resume`.

use std::path::{Path, PathBuf};
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
    for bad in ["0", "1.5", "NaN"] {
        let o = small_fit(dir.path(), &dir.path().join("run")).args(["--crop-scale", bad]).output().unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("--crop-scale must be in (0, 1], got {bad}")), "{err}");
    }
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
    let v = eval_json(&out, &data, &[]);
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

/// Runs `trainer eval --json` on a run (with `extra` flags) and returns its one JSON object.
fn eval_json(run: &Path, data: &Path, extra: &[&str]) -> serde_json::Value {
    let o = trainer()
        .args(["eval", "--json", "--threads", "2", "--device", "cpu", "--run"])
        .arg(run)
        .arg("--data")
        .arg(data)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON object")
}

/// Runs `trainer export` (with `extra` flags) and returns what it printed.
fn export(run: &Path, out: &Path, extra: &[&str]) -> String {
    let o = trainer().args(["export", "--run"]).arg(run).arg("--out").arg(out).args(extra).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The fixture in `dir/data` and a finished `small_fit` of it in `dir/run`; returns both
/// paths and the fit's log.
fn fitted(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (data, out) = (dir.join("data"), dir.join("run"));
    fixture(&data);
    let o = small_fit(&data, &out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    (data, out, err)
}

#[test]
fn the_served_head_is_g_unless_told_and_the_other_is_at_hand() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out, log) = fitted(dir.path());
    assert!(log.contains("(f 8-d, g 16-d, g served)"), "{log}");
    let o = small_fit(&data, &dir.path().join("run2")).args(["--served-head", "h"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--served-head") && err.contains("unknown head \"h\""), "{err}");

    // small_fit: f 8-d, g 16-d. The default exports g; `--head f` the paper's f.
    assert!(export(&out, &dir.path().join("g.onnx"), &[]).contains("d = 16"));
    assert!(export(&out, &dir.path().join("f.onnx"), &["--head", "f"]).contains("d = 8"));
    let map = |head: &str| eval_json(&out, &data, &["--head", head])["map_at_r"].as_f64().unwrap();
    assert_ne!(map("f"), map("g"), "--head picks another embedding");

    // The run's metrics measure its served head: --resume does not switch it, and says
    // where the other one is.
    let o = trainer().args(["fit", "--resume", "--served-head", "f", "--out"]).arg(&out).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("model.served_head") && err.contains("trainer export --run RUN --head f|g"), "{err}");
    assert!(std::fs::read_to_string(out.join("config.toml")).unwrap().contains("served_head = \"g\""));
}

#[test]
fn resume_applies_more_epochs_and_refuses_other_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out, _) = fitted(dir.path());

    // A changed hyper-parameter would make it another run: refused, naming the setting.
    let o = trainer().args(["fit", "--resume", "--lr", "0.5", "--out"]).arg(&out).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("optim.lr") && err.contains("--out"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // More epochs are applied and saved in the run's config.
    let o = trainer().args(["fit", "--resume", "--epochs", "2", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["epochs"], 2);
    assert!(std::fs::read_to_string(out.join("config.toml")).unwrap().contains("\nepochs = 2"));

    // Fewer epochs than done would undo work: refused.
    let o = trainer().args(["fit", "--resume", "--epochs", "1", "--out"]).arg(&out).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("has done 2 epochs"));
}

#[test]
fn a_labelled_folder_trains_on_all_of_it_and_evaluates_what_it_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixture(&data);
    let unseen = dir.path().join("unseen");
    fixture(&unseen);

    // All four classes are trained on (40 images, 4 broken); no evaluation, and the log says how to get one.
    let o = small_fit(&data, &dir.path().join("all")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["train_images"], 44, "{s}");
    assert!(s["eval"].is_null() && err.contains("--eval-data"), "{err}");

    // --eval-data: all classes of that folder, with the pretrained baseline beside the result.
    let o = small_fit(&data, &dir.path().join("ev")).arg("--eval-data").arg(&unseen).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["eval"]["classes"], 4, "{s}");
    assert_eq!(s["baseline"]["queries"], s["eval"]["queries"], "{s}");
    assert!(err.contains("pretrained pooled feature gives"), "the end of the log compares with the baseline: {err}");

    // --holdout-classes 0.5: two classes trained on, two evaluated.
    let o = small_fit(&data, &dir.path().join("ho")).args(["--holdout-classes", "0.5"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["train_images"], 22, "{s}");
    assert_eq!(s["eval"]["classes"], 2, "{s}");

    // `eval --data` evaluates every class of a labelled folder.
    let o = trainer()
        .args(["eval", "--json", "--threads", "2", "--device", "cpu", "--run"])
        .arg(dir.path().join("ev"))
        .arg("--data")
        .arg(&unseen)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["classes"], 4);
}

#[test]
fn semi_supervised_labels_file_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixture(&data);
    let labels = dir.path().join("labels.tsv");
    std::fs::write(&labels, "path\tclass\nc0/0.png\tround\nc0/1.png\tround\nc1/0.png\tsquare\n# a comment\n\n")
        .unwrap();
    let o = small_fit(&data, &dir.path().join("semi")).arg("--labels").arg(&labels).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("semi-supervised: 3 of 44 training images"), "{err}");

    // A path that is not a training image: the error names the file, the line and the fix.
    std::fs::write(&labels, "c0/0.png\tround\nc9/nope.png\tround\n").unwrap();
    let o = small_fit(&data, &dir.path().join("bad")).arg("--labels").arg(&labels).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("labels.tsv") && err.contains("line 2") && err.contains("relative to the --data"), "{err}");
    assert!(!dir.path().join("bad").exists());

    // A line without a class.
    std::fs::write(&labels, "c0/0.png\n").unwrap();
    let o = small_fit(&data, &dir.path().join("bad2")).arg("--labels").arg(&labels).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 1"));
}
