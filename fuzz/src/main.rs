//! `fuzz`: runs every target (or those named) for a number of executions each and prints
//! a table; exits non-zero when any input panicked or a target aborted. Each target runs
//! in a child process, so an abort (a stack overflow, an allocation failure) is reported
//! with the seed that replays it instead of ending the whole run.
//!
//! ```text
//! cargo run -p fuzz -- --execs 1000000            # the benchmark: every target, 1M each
//! cargo run -p fuzz -- --target image --execs 1e5  # one target
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Fuzz what the product parses from users (see the `fuzz` crate's docs)")]
struct Args {
    /// Targets to run (all when none): image, query, json, multipart, filter, manifest.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Executions per target (`1e6` is accepted).
    #[arg(long, default_value = "1000000", value_parser = parse_count)]
    execs: u64,
    /// RNG seed of the mutator (a run is replayed exactly by its seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where crashing inputs are written (`<dir>/<target>/<sha256>`).
    #[arg(long, default_value = "target/fuzz/crashes")]
    crashes: PathBuf,
    /// Run one input file through the (one) --target and say what happened: `ok`, or the
    /// panic; a hang is stopped by the watchdog (exit code 86).
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Run one target in this process (what the parent starts).
    #[arg(long, hide = true)]
    child: bool,
}

fn parse_count(s: &str) -> Result<u64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of executions"))?;
    if !(1.0..=1e12).contains(&v) {
        return Err(format!("--execs {s} is out of range; give 1 to 1e12"));
    }
    Ok(v as u64)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let targets: Vec<_> = if args.targets.is_empty() {
        fuzz::all().to_vec()
    } else {
        args.targets
            .iter()
            .map(|n| {
                fuzz::by_name(n).with_context(|| {
                    let names: Vec<_> = fuzz::all().iter().map(|t| t.name).collect();
                    format!("no fuzz target `{n}`; the targets are {}", names.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    if let Some(file) = &args.replay {
        let [t] = targets.as_slice() else { bail!("--replay runs exactly one --target") };
        let input = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        fuzz::quiet_panics();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        fuzz::watchdog(t.name, std::sync::Arc::new(std::sync::Mutex::new(input.clone())), done.clone(), None);
        let result = fuzz::run_one(t, &input);
        done.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(accepted) => println!("ok ({})", if accepted { "accepted" } else { "refused" }),
            Err(message) => bail!("panic: {message}"),
        }
        return Ok(());
    }
    if args.child {
        let [t] = targets.as_slice() else { bail!("--child runs exactly one --target") };
        let bar = contract::progress::bar(args.execs, t.name, "exec");
        let report = fuzz::fuzz(t, args.execs, args.seed, Some(&args.crashes), &|done| bar.set_position(done));
        bar.finish_and_clear();
        for c in &report.crashes {
            println!("crash {} {}", c.hash, c.message.replace('\n', " "));
        }
        println!("done {} {:.3} {}", report.execs, report.seconds, report.accepted);
        return Ok(());
    }

    let exe = std::env::current_exe()?;
    let mut failed = false;
    let mut rows = Vec::new();
    let started = Instant::now();
    for t in &targets {
        let out = Command::new(&exe)
            .args(["--child", "--target", t.name, "--execs", &args.execs.to_string(), "--seed", &args.seed.to_string()])
            .arg("--crashes")
            .arg(&args.crashes)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let crashes: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("crash ")).collect();
        let done = stdout.lines().find_map(|l| l.strip_prefix("done "));
        match (out.status.success(), done) {
            (true, Some(done)) => {
                let mut it = done.split(' ');
                let execs: u64 = it.next().unwrap_or("0").parse().unwrap_or(0);
                let secs: f64 = it.next().unwrap_or("0").parse().unwrap_or(0.0);
                let accepted: u64 = it.next().unwrap_or("0").parse().unwrap_or(0);
                rows.push(format!(
                    "| {} | {} | {execs} | {:.1} % | {secs:.1} | {:.0} | {} | 0 |",
                    t.name,
                    t.about,
                    100.0 * accepted as f64 / execs.max(1) as f64,
                    execs as f64 / secs.max(1e-9),
                    crashes.len()
                ));
                for c in &crashes {
                    eprintln!("PANIC in {}: input {}/{}/{c}", t.name, args.crashes.display(), t.name);
                }
                failed |= !crashes.is_empty();
            }
            _ => {
                failed = true;
                rows.push(format!("| {} | {} | ? | ? | ? | ? | {} | 1 |", t.name, t.about, crashes.len()));
                if let Some(hang) = stdout.lines().find_map(|l| l.strip_prefix("hang ")) {
                    eprintln!("HANG in {}: {hang} (input under {}/{})", t.name, args.crashes.display(), t.name);
                    continue;
                }
                eprintln!(
                    "ABORT in {} ({}); replay with `fuzz --target {} --execs {} --seed {}` under a debugger",
                    t.name, out.status, t.name, args.execs, args.seed
                );
            }
        }
    }
    println!("| target | covers | executions | accepted | seconds | per second | panics | aborts or hangs |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!("seed {}, {:.0} s in all", args.seed, started.elapsed().as_secs_f64());
    if failed {
        bail!("fuzzing found panics or aborts (inputs under {})", args.crashes.display());
    }
    Ok(())
}
