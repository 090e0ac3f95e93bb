//! Training-step throughput of the Rust trainer: the exact STML step of `train.rs`
//! (student forward in train mode on 2B samples, teacher forward without gradient in eval
//! mode, pseudo labels, loss, zero_grad, backward, EMA update, AdamP step) on a random
//! batch, timed after warm-up. Its PyTorch counterpart is `scripts/bench_step.py`; the two
//! run side by side in `scripts/bench_train_step.sh`.
//!
//! ```text
//! cargo run --release -p trainer --example bench_step -- --batch-size 60 --image-size 64 --threads 2
//! ```
//!
//! Prints `ready` after warm-up, one line per timed step, then `median_images_per_s <value>`
//! (B images per step, as the training loop counts them). `--breakdown` also times each
//! part of the step; `--lockstep` waits for a line on stdin before each timed step.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use contract::Output;
use models::{Arch, ModelConfig};
use tch::{Device, Kind, Tensor};
use trainer::config::TrainConfig;
use trainer::optim::Optimizer;
use trainer::stml::ema::EmaPairs;
use trainer::stml::{loss, similarity};
use trainer::train::{build_networks, build_optimizer, Networks};

#[derive(Parser, Debug)]
#[command(about = "Times the STML training step (forward, pseudo labels, loss, backward, EMA, AdamP)")]
struct Args {
    /// Images per step B (each seen in two views, so 2B samples).
    #[arg(long, default_value_t = 60)]
    batch_size: usize,
    /// Input side S.
    #[arg(long, default_value_t = 64)]
    image_size: u32,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// libtorch threads (0 = all cores).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Backbone weights (default: the pretrained MobileNetV2 of scripts/setup.sh).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Also time each part of the step.
    #[arg(long)]
    breakdown: bool,
    /// Batch norm in eval mode with frozen affine parameters (the trainer's default; the
    /// paper trains it).
    #[arg(long)]
    bn_freeze: bool,
    /// Take each timed step only when a line arrives on stdin (stop at end of input), so
    /// that a driver can alternate steps with another process; prints `ready` after warm-up.
    #[arg(long)]
    lockstep: bool,
}

/// Names of the timed parts of a step, in order.
const PARTS: [&str; 8] =
    ["student forward", "teacher forward", "pseudo labels", "loss", "zero_grad", "backward", "ema", "optimizer"];

/// Records the seconds spent in each part of every step.
struct Clock {
    last: Instant,
    /// `seconds[part]`: one entry per step.
    seconds: [Vec<f64>; PARTS.len()],
}

impl Clock {
    fn new() -> Self {
        Self { last: Instant::now(), seconds: Default::default() }
    }

    fn lap(&mut self, part: usize) {
        let now = Instant::now();
        self.seconds[part].push((now - self.last).as_secs_f64());
        self.last = now;
    }
}

/// One training step exactly as the loop in `trainer::train` runs it. Returns the loss.
///
/// # Shapes
/// - `x`: `[2B, 3, S, S]`, `idx`: `[2B]`
fn step(
    nets: &Networks,
    opt: &mut Optimizer,
    ema: &EmaPairs,
    cfg: &TrainConfig,
    x: &Tensor,
    idx: &Tensor,
    clock: &mut Clock,
) -> Result<f64> {
    let k_context = (cfg.stml.num_neighbors * cfg.stml.view) as i64;
    let out = nets.student.forward(x, true)?;
    let (f, g) = (out.get(Output::F)?, out.get(Output::G)?);
    clock.lap(0);
    let t_g = tch::no_grad(|| nets.teacher.forward(x, false))?;
    clock.lap(1);
    let w = similarity::pseudo_labels(t_g.get(Output::G)?, idx, cfg.stml.sigma, k_context);
    clock.lap(2);
    let parts = loss::stml_loss(f, g, &w, None, cfg.stml.delta);
    clock.lap(3);
    opt.zero_grad();
    clock.lap(4);
    parts.total.backward();
    clock.lap(5);
    ema.momentum_update(cfg.stml.momentum);
    clock.lap(6);
    opt.step();
    clock.lap(7);
    let v = parts.values();
    ensure!(v[0].is_finite(), "the loss became {}", v[0]);
    Ok(v[0])
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.batch_size >= 1 && args.steps >= 1, "--batch-size and --steps must be at least 1");
    let threads = trainer::device::set_threads(args.threads);
    tch::manual_seed(0);

    let mut cfg = TrainConfig::paper(PathBuf::from("unused"));
    cfg.optim.bn_freeze = args.bn_freeze;
    cfg.model = ModelConfig { image_size: args.image_size, ..ModelConfig::new(Arch::MobilenetV2, 128) };
    cfg.model.g_dim = 1024;
    cfg.optim.batch_size = args.batch_size;
    cfg.weights = args.weights.clone();
    let weights = cfg.weights.clone().or_else(|| trainer::train::default_weights(Arch::MobilenetV2));
    ensure!(
        weights.as_ref().is_some_and(|w| w.exists()),
        "no MobileNetV2 weights at {:?}; run scripts/setup.sh or pass --weights",
        weights
    );

    let device = Device::Cpu;
    let nets = build_networks(&cfg, device).context("building student and teacher")?;
    let mut opt = build_optimizer(&cfg, &nets.student)?;
    let ema = EmaPairs::new(&nets.vs_teacher, &nets.vs_student)?;

    // Two views of B images, view-major as the loader lays them out: idx = [0..B, 0..B].
    let b = args.batch_size as i64;
    let s = args.image_size as i64;
    let x = Tensor::randn([2 * b, 3, s, s], (Kind::Float, device));
    let idx = Tensor::arange(b, (Kind::Int64, device)).repeat([2]);

    println!(
        "rust bench_step: MobileNetV2 (pretrained), d = 128, g = 1024, B = {b} ({} samples), S = {s}, {threads} threads, {} warm-up + {} timed steps",
        2 * b,
        args.warmup,
        args.steps
    );
    let mut clock = Clock::new();
    for _ in 0..args.warmup {
        step(&nets, &mut opt, &ema, &cfg, &x, &idx, &mut clock)?;
    }
    println!("ready");
    let mut clock = Clock::new();
    let mut times = Vec::with_capacity(args.steps);
    for i in 0..args.steps {
        if args.lockstep && std::io::stdin().lock().read_line(&mut String::new())? == 0 {
            break;
        }
        let t0 = Instant::now();
        clock.last = t0;
        let loss = step(&nets, &mut opt, &ema, &cfg, &x, &idx, &mut clock)?;
        let dt = t0.elapsed().as_secs_f64();
        times.push(dt);
        println!("step {:>3}: {:8.1} ms  {:7.1} img/s  loss {loss:.4}", i + 1, dt * 1e3, b as f64 / dt);
    }
    ensure!(!times.is_empty(), "no step was timed");
    if args.breakdown {
        // Medians per part: robust to other processes' load, unlike means.
        let parts: Vec<f64> = clock.seconds.iter().map(|v| median(v)).collect();
        let total: f64 = parts.iter().sum();
        println!("breakdown (median per step):");
        for (name, secs) in PARTS.iter().zip(parts) {
            println!("  {name:<16} {:8.2} ms  {:5.1} %", secs * 1e3, 100.0 * secs / total.max(1e-12));
        }
    }
    let med = median(&times);
    println!("median_step_ms {:.2}", med * 1e3);
    println!("median_images_per_s {:.3}", b as f64 / med);
    Ok(())
}
