//! Points where a test may kill the trainer: with `STML_TRAINER_PAUSE_AT=<point>[:<n>]` in
//! its environment, the `n`-th time (1-based, default 1) the trainer reaches `<point>` it
//! prints `paused at <point>` on stderr and waits there, to be killed with SIGKILL. Without
//! the variable, [`reached`] does nothing. The crash test (`trainer/tests/crash_resume.rs`)
//! kills at every point of a checkpoint write this way, and at random moments besides.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The environment variable naming the point to pause at.
pub const PAUSE_AT: &str = "STML_TRAINER_PAUSE_AT";

/// The points of a checkpoint write, in order.
pub const CHECKPOINT_POINTS: [&str; 4] =
    ["checkpoint.student", "checkpoint.files", "checkpoint.renamed", "checkpoint.latest"];

fn target() -> Option<&'static (String, usize)> {
    static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let v = std::env::var(PAUSE_AT).ok()?;
            let (name, n) = match v.rsplit_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().ok()?),
                None => (v, 1),
            };
            Some((name, n))
        })
        .as_ref()
}

/// Marks that the trainer reached `point`; pauses for good when the environment asks.
pub fn reached(point: &str) {
    let Some((name, n)) = target() else { return };
    if name != point {
        return;
    }
    static SEEN: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
    let count = {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let c = seen.get_or_insert_with(HashMap::new).entry(point.to_string()).or_insert(0);
        *c += 1;
        *c
    };
    if count == *n {
        eprintln!("paused at {point}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
