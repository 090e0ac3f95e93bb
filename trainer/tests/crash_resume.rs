//! Training survives kill -9 (issue 14, item 4). A run is killed at every point of a
//! checkpoint write (held there by `STML_TRAINER_PAUSE_AT`) and at seeded random moments;
//! after every kill `LATEST` names a complete checkpoint, and `fit --resume` ends with
//! weights, teacher and optimiser state byte-identical to an uninterrupted run with the
//! same seed (`--threads 1`: every random draw is keyed by seed, epoch and position, and
//! one-threaded CPU kernels sum in a fixed order).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use trainer::run::killpoint::{CHECKPOINT_POINTS, PAUSE_AT};

const EPOCHS: usize = 5;

/// A flat folder of 60 small images (no labels, so no evaluation: only training runs).
fn fixture(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..60u32 {
        let img = image::RgbImage::from_fn(36, 36, |x, y| {
            let on = (x / (2 + i % 5) + y / (3 + i % 4)).is_multiple_of(2);
            let c = (i * 37 % 200) as u8;
            if on {
                image::Rgb([c, 255 - c, (x * 7) as u8])
            } else {
                image::Rgb([(y * 5) as u8, c / 2, 40])
            }
        });
        img.save(root.join(format!("{i:02}.png"))).unwrap();
    }
}

fn fit(data: &Path, out: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.arg("fit").arg("--out").arg(out);
    if resume {
        cmd.arg("--resume");
    } else {
        cmd.arg("--data").arg(data);
        cmd.args(["--dim", "8", "--g-dim", "16", "--image-size", "32", "--batch-size", "10"]);
        cmd.args(["--num-neighbors", "5", "--max-steps-per-epoch", "3", "--seed", "7"]);
        cmd.args(["--epochs", &EPOCHS.to_string(), "--threads", "1", "--device", "cpu"]);
    }
    cmd.env_remove(PAUSE_AT).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// A started trainer whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, log: Vec::new() }
    }

    /// Waits for a stderr line containing `text`; panics with the log if the trainer
    /// exits first or it takes too long.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let hit = line.contains(text);
                    self.log.push(line);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("the trainer never printed {text:?}; its log:\n{}", self.log.join("\n"));
    }

    /// True while the trainer has not exited.
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill9(mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }

    /// Waits for the trainer to finish; true when it exited with success.
    fn finish(mut self) -> (bool, String) {
        let status = self.child.wait().unwrap();
        self.log.extend(self.lines.iter());
        (status.success(), self.log.join("\n"))
    }
}

/// The folder `LATEST` names, checked complete: every file is there and parses.
fn latest_complete(run: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(run.join("LATEST")).ok()?;
    let dir = run.join("checkpoints").join(name.trim());
    for f in ["student.safetensors", "teacher.safetensors", "optimizer.safetensors"] {
        let w = models::weights::Weights::read(&dir.join(f));
        assert!(w.is_ok(), "LATEST names {} but its {f} does not read: {:?}", dir.display(), w.err());
    }
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap())
        .unwrap_or_else(|e| panic!("LATEST names {} but its state.json does not parse: {e}", dir.display()));
    assert!(state["epochs_done"].as_u64().unwrap() >= 1);
    Some(dir)
}

fn epochs_done(ck: &Path) -> u64 {
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(ck.join("state.json")).unwrap()).unwrap();
    state["epochs_done"].as_u64().unwrap()
}

#[test]
fn kill_9_anywhere_then_resume_ends_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fixture(&data);

    // The uninterrupted run, timed to aim the random kills.
    let reference = dir.path().join("reference");
    let t0 = Instant::now();
    let (ok, log) = Running::start(fit(&data, &reference, false)).finish();
    assert!(ok, "{log}");
    let full = t0.elapsed();

    let run = dir.path().join("crashed");
    let mut started = false;
    let mut start = |pause: Option<String>| {
        let mut cmd = fit(&data, &run, started);
        started = true;
        if let Some(p) = pause {
            cmd.env(PAUSE_AT, p);
        }
        Running::start(cmd)
    };

    // Killed at each point of a checkpoint write, in turn: the first run in its second
    // checkpoint, every resumed run in its first.
    let mut kills = Vec::new();
    for (i, point) in CHECKPOINT_POINTS.iter().enumerate() {
        let nth = if i == 0 { 2 } else { 1 };
        let before = latest_complete(&run);
        let mut r = start(Some(format!("{point}:{nth}")));
        if let Some(ck) = &before {
            r.wait_for(&format!("resumed from {}", ck.display()));
        }
        r.wait_for(&format!("paused at {point}"));
        r.kill9();
        let after = latest_complete(&run).expect("a checkpoint was complete before this kill");
        kills.push(format!("{point}: LATEST {}", after.display()));
        // Only after the rename is the new checkpoint the one to resume from.
        let switched = *point == "checkpoint.latest";
        if let Some(b) = &before {
            assert_eq!(epochs_done(&after) > epochs_done(b), switched, "killed at {point}: {kills:?}");
        }
    }

    // Killed at seeded random moments (whatever part of an epoch they fall in), aimed
    // within the time the epochs left take; a kill only counts if the trainer was running.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
    let mut random_kills = 0;
    for _ in 0..6 {
        let before = epochs_done(&latest_complete(&run).unwrap());
        if before == EPOCHS as u64 {
            break;
        }
        let mut r = start(None);
        let left = (EPOCHS as u64 - before) as f64 / EPOCHS as f64;
        std::thread::sleep(full.mul_f64(left * rng.gen_range(0.1..0.9)));
        random_kills += usize::from(r.running());
        r.kill9();
        let after = latest_complete(&run).expect("LATEST names a complete checkpoint after a random kill");
        assert!(epochs_done(&after) >= before);
        kills.push(format!("random ({} epochs done before): LATEST {}", before, after.display()));
    }

    assert!(random_kills >= 2, "only {random_kills} random kills hit a running trainer: {kills:?}");

    // The last resume runs to the end.
    let (ok, log) = start(None).finish();
    assert!(ok, "{log}");
    let (a, b) = (latest_complete(&reference).unwrap(), latest_complete(&run).unwrap());
    assert_eq!(epochs_done(&b), EPOCHS as u64);
    for f in ["student.safetensors", "teacher.safetensors", "optimizer.safetensors"] {
        let same = std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap();
        assert!(same, "{f} differs from the uninterrupted run's after kills {kills:?}");
    }
    let state = |d: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join("state.json")).unwrap()).unwrap()
    };
    assert_eq!(state(&a)["global_step"], state(&b)["global_step"]);
    // One metrics line per epoch, as in the uninterrupted run, once re-trained epochs
    // replace their earlier lines.
    let epochs = |run: &Path| -> Vec<u64> {
        trainer::run::RunDir::open(run).unwrap().metrics().iter().filter_map(|m| m["epoch"].as_u64()).collect()
    };
    assert_eq!(epochs(&run), epochs(&reference));
    // No temporary folders of cut-short writes are left behind.
    let left: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
