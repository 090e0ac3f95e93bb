//! Fuzzing on stable Rust, of everything the product parses from its users: uploaded
//! images and their preprocessing, query strings, JSON bodies, multipart forms, filters
//! and the model manifest of an ONNX file.
//!
//! Each [`Target`] feeds one input to the product's own parsing and checking functions
//! and asserts what must hold of the result (for example: an accepted manifest's
//! preprocessing gives finite numbers). Inputs are seeds (valid examples written by the
//! target) mutated by [`mutate::Mutator`]: bit flips, interesting numbers, dictionary
//! tokens, repeated and deleted ranges, splices of two seeds; the structured parts of an
//! input (a preprocessing size, a boundary) are drawn from its bytes with `arbitrary`.
//! A panic is caught, counted and its input saved; an abort ends the process, which
//! `fuzz` (the command) reports with the seed that replays it.

pub mod mutate;
pub mod targets;

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use sha2::{Digest, Sha256};

pub use self::mutate::Mutator;
pub use self::targets::{all, by_name};

/// One fuzzing target: what it is called and covers, the valid inputs it starts from,
/// the tokens the mutator inserts (keywords, operators, magic numbers), and `run`, which
/// feeds one input to the product and panics when a property fails. `run` returns true
/// when the product accepted the input (it went all the way through), a measure of how
/// deep the mutated inputs reach.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub dictionary: fn() -> Vec<&'static [u8]>,
    pub run: fn(&[u8]) -> bool,
}

/// A panic found: the input's SHA-256 (its file name under `crashes/`) and the message.
#[derive(Debug, Clone)]
pub struct Crash {
    pub hash: String,
    pub message: String,
}

/// What one target's run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub execs: u64,
    /// Inputs the product accepted.
    pub accepted: u64,
    pub seconds: f64,
    pub crashes: Vec<Crash>,
}

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
    static IN_RUN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that keeps the message of a panic inside [`run_one`] for
/// it, printing nothing (a fuzzer provokes panics by design); other panics are reported
/// as before.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let before = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_RUN.with(|r| r.get()) {
                return before(info);
            }
            let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            LAST_PANIC.with(|l| *l.borrow_mut() = format!("{text}{place}"));
        }));
    });
}

/// Runs one input: whether the product accepted it, or the panic message. Call
/// [`quiet_panics`] first to keep the output clean.
pub fn run_one(target: &Target, input: &[u8]) -> Result<bool, String> {
    IN_RUN.with(|r| r.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    IN_RUN.with(|r| r.set(false));
    result.map_err(|_| LAST_PANIC.with(|l| std::mem::take(&mut *l.borrow_mut())))
}

/// Hex SHA-256 of an input.
pub fn input_hash(input: &[u8]) -> String {
    hex::encode(Sha256::digest(input))
}

/// An execution taking longer than this is a hang: the input is saved and the process
/// ends (exit code [`HANG_EXIT`]).
pub const HANG_SECONDS: u64 = 20;
/// Exit code of a process stopped by the hang watchdog.
pub const HANG_EXIT: i32 = 86;

/// Runs `execs` mutated inputs against `target` (seeds first), from RNG `seed`. Crashing
/// inputs are written to `crashes/<target>/<sha256>` when `crashes` is given (a hanging
/// one to `hang-<sha256>`, before the watchdog ends the process); `progress(done)` is
/// called every 4096 executions.
pub fn fuzz(target: &Target, execs: u64, seed: u64, crashes: Option<&Path>, progress: &dyn Fn(u64)) -> Report {
    quiet_panics();
    let seeds = (target.seeds)();
    let mut mutator = Mutator::new(seeds.clone(), (target.dictionary)(), rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let started = Instant::now();
    let mut found: Vec<Crash> = Vec::new();
    let mut input = Vec::new();
    let mut accepted = 0u64;
    let current = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicU64::new(0));
    let dir = crashes.map(|d| d.join(target.name));
    watchdog(target.name, current.clone(), done.clone(), dir.clone());
    for i in 0..execs {
        if (i as usize) < seeds.len() {
            input.clear();
            input.extend_from_slice(&seeds[i as usize]);
        } else {
            mutator.next_into(&mut input);
        }
        current.lock().unwrap_or_else(|e| e.into_inner()).clone_from(&input);
        let result = run_one(target, &input);
        accepted += u64::from(result == Ok(true));
        if let Err(message) = result {
            let hash = input_hash(&input);
            if !found.iter().any(|c| c.hash == hash) {
                if let Some(dir) = &dir {
                    let _ = std::fs::create_dir_all(dir);
                    let _ = std::fs::write(dir.join(&hash), &input);
                }
                found.push(Crash { hash, message });
            }
        }
        done.store(i + 1, Ordering::Relaxed);
        if i % 4096 == 4095 {
            progress(i + 1);
        }
    }
    done.store(u64::MAX, Ordering::Relaxed);
    Report { target: target.name, execs, accepted, seconds: started.elapsed().as_secs_f64(), crashes: found }
}

/// Ends the process when no execution finishes for [`HANG_SECONDS`], saving the input.
pub fn watchdog(name: &'static str, current: Arc<Mutex<Vec<u8>>>, done: Arc<AtomicU64>, dir: Option<PathBuf>) {
    std::thread::spawn(move || {
        let (mut last, mut since) = (u64::MAX - 1, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = done.load(Ordering::Relaxed);
            if now == u64::MAX {
                return;
            }
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed().as_secs() >= HANG_SECONDS {
                let input = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let hash = input_hash(&input);
                if let Some(dir) = &dir {
                    let _ = std::fs::create_dir_all(dir);
                    let _ = std::fs::write(dir.join(format!("hang-{hash}")), &input);
                }
                println!("hang {hash} execution {} of {name} ran {HANG_SECONDS} s", now + 1);
                std::process::exit(HANG_EXIT);
            }
        }
    });
}
