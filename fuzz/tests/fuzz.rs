//! Every input the fuzzer ever found (fuzz/regressions/<target>/) runs without a panic or
//! a hang, and a short fuzzing run of every target finds nothing. The benchmark runs a
//! million executions a target: `cargo run -p fuzz -- --execs 1e6`.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// Runs `input` through `target` on a thread; the panic message, or "hang".
fn run_bounded(target: &'static fuzz::Target, input: Vec<u8>) -> Result<bool, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(fuzz::run_one(target, &input));
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| Err("hang: no answer in 60 s".into()))
}

#[test]
fn every_input_found_so_far_is_handled() {
    fuzz::quiet_panics();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut count = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let target = fuzz::by_name(&name).unwrap_or_else(|| panic!("{} names no fuzz target", dir.display()));
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let input = std::fs::read(&file).unwrap();
            if let Err(e) = run_bounded(target, input) {
                panic!("{}: {e}", file.display());
            }
            count += 1;
        }
    }
    assert!(count >= 9, "only {count} regression inputs found under {}", root.display());
}

#[test]
fn a_short_run_of_every_target_finds_nothing() {
    for target in fuzz::all() {
        let report = fuzz::fuzz(target, 3_000, 7, None, &|_| {});
        assert!(report.crashes.is_empty(), "{}: {:?}", target.name, report.crashes);
        assert!(report.accepted > 0, "{}: no input was accepted, the seeds are broken", target.name);
    }
}

#[test]
fn every_seed_is_accepted() {
    fuzz::quiet_panics();
    for target in fuzz::all() {
        for (i, seed) in (target.seeds)().into_iter().enumerate() {
            assert_eq!(fuzz::run_one(target, &seed), Ok(true), "{} seed {i} is refused", target.name);
        }
    }
}
