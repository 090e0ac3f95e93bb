//! The soak test's load (issue 14, item 2; run by `scripts/soak.sh`): `--concurrency`
//! clients over loopback send a seeded mix of searches (by vector, by image, with a
//! filter), inserts (vectors and images), deletes and reads to a running server for
//! `--seconds` or `--max-requests`, whichever ends first. Every insert is matched by a
//! delete of the oldest item it added, so the collection keeps its size. The server's
//! resident memory is sampled from /proc every two seconds.
//!
//! Prints one JSON object: requests and errors by operation, p50/p99 per minute, RSS per
//! minute, and the verdict (0 errors, RSS growth after warm-up under 5 %, every minute's
//! p99 within twice the median minute's); exits 1 when the verdict fails.
//!
//! ```sh
//! cargo run --release -p server --example soak -- --url http://127.0.0.1:8080 --pid PID
//! ```

#[path = "../tests/common/fixtures.rs"]
mod fixtures;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// The server's base URL (loopback).
    #[arg(long)]
    url: String,
    /// The server's process id, to read its resident memory.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stop after this many requests even before --seconds.
    #[arg(long, default_value_t = 20_000_000)]
    max_requests: u64,
    /// Items inserted before the clock starts (the collection's size throughout).
    #[arg(long, default_value_t = 5_000)]
    prefill: usize,
    /// Seconds at the start left out of the memory and latency verdict.
    #[arg(long, default_value_t = 60)]
    warmup: u64,
    /// The embedding dimension of the served model.
    #[arg(long, default_value_t = fixtures::DIM)]
    dim: usize,
    #[arg(long, default_value_t = 14)]
    seed: u64,
}

/// The operations of the mix, with their shares (percent).
const OPS: [(&str, u32); 8] = [
    ("search_vector", 45),
    ("search_image", 10),
    ("search_filter", 10),
    ("insert_vector", 8),
    ("insert_image", 4),
    ("delete", 12),
    ("get", 6),
    ("list", 5),
];
const WINDOW_S: u64 = 60;
/// Items a client may be ahead in inserts before it must delete (and behind before it
/// must insert): the collection's size stays within prefill +- this.
const DRIFT: usize = 64;

struct Shared {
    /// Ids this run added, oldest first (the next to delete).
    added: Mutex<VecDeque<String>>,
    /// Per window, per op: latencies in ms.
    latencies: Mutex<Vec<Vec<Vec<f64>>>>,
    errors: Mutex<Vec<String>>,
    requests: AtomicU64,
    error_count: AtomicU64,
    stop: AtomicBool,
}

fn vector(rng: &mut impl Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading the server's /proc status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

fn insert_vector(
    http: &reqwest::blocking::Client,
    url: &str,
    rng: &mut impl Rng,
    dim: usize,
) -> anyhow::Result<String> {
    let label = format!("l{}", rng.gen_range(0..8));
    let body = json!({ "vector": vector(rng, dim), "metadata": { "label": label, "n": rng.gen_range(0..1000) } });
    let res = http.post(format!("{url}/images")).json(&body).send()?;
    let status = res.status();
    let v: Value = res.json().with_context(|| format!("insert answered {status}"))?;
    if !status.is_success() {
        bail!("insert: {status} {v}");
    }
    Ok(v["ids"][0].as_str().context("insert returned no id")?.to_string())
}

/// One request of kind `op`; the id it added, if any.
fn request(
    op: &str,
    http: &reqwest::blocking::Client,
    args: &Args,
    rng: &mut impl Rng,
    images: &[Vec<u8>],
    shared: &Shared,
) -> anyhow::Result<Option<String>> {
    let url = &args.url;
    let check = |res: reqwest::blocking::Response| -> anyhow::Result<()> {
        let status = res.status();
        let body = res.bytes()?;
        if !status.is_success() {
            bail!("{op}: {status} {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        Ok(())
    };
    match op {
        "search_vector" => {
            check(http.post(format!("{url}/search?k=10")).json(&json!({ "vector": vector(rng, args.dim) })).send()?)?
        }
        "search_filter" => check(
            http.post(format!("{url}/search?k=10&filter=label:l{}", rng.gen_range(0..8)))
                .json(&json!({ "vector": vector(rng, args.dim) }))
                .send()?,
        )?,
        "search_image" => {
            let png = images[rng.gen_range(0..images.len())].clone();
            check(http.post(format!("{url}/search?k=10")).header("Content-Type", "image/png").body(png).send()?)?
        }
        "insert_vector" => return Ok(Some(insert_vector(http, url, rng, args.dim)?)),
        "insert_image" => {
            let png = images[rng.gen_range(0..images.len())].clone();
            let res = http
                .post(format!("{url}/images?metadata=%7B%22label%22%3A%22l{}%22%7D", rng.gen_range(0..8)))
                .header("Content-Type", "image/png")
                .body(png)
                .send()?;
            let status = res.status();
            let v: Value = res.json()?;
            if !status.is_success() {
                bail!("insert_image: {status} {v}");
            }
            return Ok(Some(v["ids"][0].as_str().context("no id")?.to_string()));
        }
        "delete" => {
            let id = shared.added.lock().unwrap().pop_front();
            if let Some(id) = id {
                let res = http.delete(format!("{url}/images/{id}")).send()?;
                check(res)?;
            }
        }
        "get" => {
            let id = shared.added.lock().unwrap().back().cloned();
            if let Some(id) = id {
                let res = http.get(format!("{url}/images/{id}")).send()?;
                // Another client may have deleted it meanwhile.
                if res.status() != reqwest::StatusCode::NOT_FOUND {
                    check(res)?;
                }
            }
        }
        "list" => check(http.get(format!("{url}/images?limit=50&filter=label:l{}", rng.gen_range(0..8))).send()?)?,
        other => bail!("unknown op {other}"),
    }
    Ok(None)
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if args.seconds < args.warmup + 2 * WINDOW_S {
        bail!(
            "--seconds {} leaves under two whole minutes after the {} s warm-up to judge; give more, or a shorter --warmup",
            args.seconds,
            args.warmup
        );
    }
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let images: Arc<Vec<Vec<u8>>> = Arc::new((0..64).map(|i| fixtures::png(1000 + i, 64, 48)).collect());
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    eprintln!("prefilling {} items", args.prefill);
    for _ in 0..args.prefill {
        insert_vector(&http, &args.url, &mut rng, args.dim)?;
    }
    let count = |http: &reqwest::blocking::Client| -> anyhow::Result<u64> {
        let v: Value = http.post(format!("{}/images/count", args.url)).json(&json!({})).send()?.json()?;
        v["count"].as_u64().context("count")
    };
    let size_before = count(&http)?;
    let windows = (args.seconds / WINDOW_S + 1) as usize;
    let shared = Arc::new(Shared {
        added: Mutex::new(VecDeque::new()),
        latencies: Mutex::new(vec![vec![Vec::new(); OPS.len()]; windows]),
        errors: Mutex::new(Vec::new()),
        requests: AtomicU64::new(0),
        error_count: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..args.concurrency {
        let (args, shared, images) = (args.clone(), shared.clone(), images.clone());
        clients.push(std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed * 1000 + c as u64);
            let total: u32 = OPS.iter().map(|o| o.1).sum();
            let mut ahead = 0i64;
            while !shared.stop.load(Ordering::Relaxed) {
                if shared.requests.fetch_add(1, Ordering::Relaxed) >= args.max_requests {
                    break;
                }
                let mut pick = rng.gen_range(0..total);
                let mut op = OPS
                    .iter()
                    .position(|o| {
                        pick < o.1 || {
                            pick -= o.1;
                            false
                        }
                    })
                    .unwrap();
                // Keep this client's inserts and deletes level.
                if OPS[op].0.starts_with("insert") && ahead >= DRIFT as i64 {
                    op = 5;
                } else if OPS[op].0 == "delete" && ahead <= -(DRIFT as i64) {
                    op = 3;
                }
                let t = Instant::now();
                let result = request(OPS[op].0, &http, &args, &mut rng, &images, &shared);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let window = (started.elapsed().as_secs() / WINDOW_S) as usize;
                match result {
                    Ok(added) => {
                        if let Some(id) = added {
                            shared.added.lock().unwrap().push_back(id);
                            ahead += 1;
                        } else if OPS[op].0 == "delete" {
                            ahead -= 1;
                        }
                        if let Some(w) = shared.latencies.lock().unwrap().get_mut(window) {
                            w[op].push(ms);
                        }
                    }
                    Err(e) => {
                        shared.error_count.fetch_add(1, Ordering::Relaxed);
                        let mut errors = shared.errors.lock().unwrap();
                        if errors.len() < 20 {
                            errors.push(format!("{e:#}"));
                        }
                    }
                }
            }
        }));
    }
    // Memory samples until the clients are done.
    let mut rss: Vec<(f64, u64)> = Vec::new();
    while started.elapsed() < Duration::from_secs(args.seconds) && clients.iter().any(|c| !c.is_finished()) {
        rss.push((started.elapsed().as_secs_f64(), rss_kib(args.pid)?));
        let done = shared.requests.load(Ordering::Relaxed);
        eprint!(
            "\r{:>4.0} s, {done} requests, {} errors, RSS {} MiB   ",
            started.elapsed().as_secs_f64(),
            shared.error_count.load(Ordering::Relaxed),
            rss.last().unwrap().1 / 1024
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    rss.push((elapsed, rss_kib(args.pid)?));
    eprintln!();
    // Leave the collection as it was found.
    let left: Vec<String> = shared.added.lock().unwrap().drain(..).collect();
    for id in &left {
        http.delete(format!("{}/images/{id}", args.url)).send()?;
    }
    let size_after = count(&http)?;

    // Verdict.
    let mean_rss = |from: f64, to: f64| -> f64 {
        let v: Vec<f64> = rss.iter().filter(|(t, _)| *t >= from && *t < to).map(|&(_, k)| k as f64).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let warm = args.warmup as f64;
    let rss_after_warmup = mean_rss(warm, warm + 30.0);
    let rss_end = mean_rss(elapsed - 30.0, elapsed + 1.0);
    let growth = (rss_end - rss_after_warmup) / rss_after_warmup.max(1.0);
    let latencies = shared.latencies.lock().unwrap();
    let mut minutes = Vec::new();
    let mut p99s = Vec::new();
    for (w, ops) in latencies.iter().enumerate() {
        let mut all: Vec<f64> = ops.iter().flatten().copied().collect();
        if all.is_empty() {
            continue;
        }
        let n = all.len();
        let (p50, p99) = (percentile(&mut all, 0.5), percentile(&mut all, 0.99));
        let full = (w as u64 + 1) * WINDOW_S <= elapsed as u64;
        if (w as u64) * WINDOW_S >= args.warmup && full {
            p99s.push(p99);
        }
        let by_op: serde_json::Map<String, Value> = ops
            .iter()
            .zip(OPS)
            .map(|(v, (name, _))| {
                let mut v = v.clone();
                (
                    name.to_string(),
                    json!({ "n": v.len(), "p50_ms": percentile(&mut v, 0.5), "p99_ms": percentile(&mut v, 0.99) }),
                )
            })
            .collect();
        let rss_mib = mean_rss((w as u64 * WINDOW_S) as f64, ((w as u64 + 1) * WINDOW_S) as f64) / 1024.0;
        minutes.push(json!({ "minute": w + 1, "requests": n, "p50_ms": p50, "p99_ms": p99, "rss_mib": rss_mib, "full": full, "ops": by_op }));
    }
    let mut sorted = p99s.clone();
    let median_p99 = percentile(&mut sorted, 0.5);
    let worst_p99 = p99s.iter().copied().fold(0.0, f64::max);
    let errors = shared.error_count.load(Ordering::Relaxed);
    let requests = latencies.iter().flatten().map(Vec::len).sum::<usize>() as u64 + errors;
    let pass = errors == 0 && growth < 0.05 && worst_p99 <= 2.0 * median_p99 && size_after == size_before;
    let out = json!({
        "seconds": elapsed, "concurrency": args.concurrency, "requests": requests, "errors": errors,
        "first_errors": *shared.errors.lock().unwrap(), "requests_per_second": requests as f64 / elapsed,
        "collection_size": { "before": size_before, "after": size_after },
        "rss_mib": { "after_warmup": rss_after_warmup / 1024.0, "end": rss_end / 1024.0, "growth_percent": 100.0 * growth },
        "p99_ms": { "median_minute": median_p99, "worst_minute": worst_p99 },
        "minutes": minutes, "pass": pass,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !pass {
        bail!("the soak failed its verdict (errors, memory growth, p99 or collection size): see above");
    }
    Ok(())
}
