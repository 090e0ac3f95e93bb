//! What query-time re-ranking (`rerank=true`) buys and costs on a labelled index: for every
//! item (or a fixed sample), more like it (itself left out) without and with re-ranking,
//! interleaved; Recall@1 by the `label` metadata (as `server index --label-from-folder`
//! records it) and the median time of each search.
//!
//!   cargo run --release -p server --example bench_rerank -- --model M --index DIR \
//!       [--queries 1000] [--configs 50:10:1,20:5:0.1,...]   (depth:k:weight)
//!
//! Prints one JSON line per configuration. `scripts/bench_rerank.sh` runs it on the
//! development domains.

use std::time::Instant;

use server::gallery::{IndexKind, Query};
use server::rerank::Rerank;
use server::settings::Settings;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut settings = Settings::load(None, std::env::vars())?;
    settings.model = arg(&args, "--model").ok_or_else(|| anyhow::anyhow!("--model M is required"))?.into();
    settings.index_dir = arg(&args, "--index").ok_or_else(|| anyhow::anyhow!("--index DIR is required"))?.into();
    let queries: usize = arg(&args, "--queries").map_or(Ok(1000), |q| q.parse())?;
    let configs: Vec<Rerank> = arg(&args, "--configs")
        .unwrap_or_else(|| {
            let d = Rerank::default();
            format!("{}:{}:{}", d.depth, d.k, d.weight)
        })
        .split(',')
        .map(|c| {
            let parts: Vec<&str> = c.split(':').collect();
            anyhow::ensure!(parts.len() == 3, "config `{c}` is not depth:k:weight");
            Ok(Rerank::new(Some(parts[0].parse()?), Some(parts[1].parse()?), Some(parts[2].parse()?))?)
        })
        .collect::<anyhow::Result<_>>()?;
    let model = server::serve::open_model(&settings)?;
    let gallery = server::serve::open_gallery(&settings, &model, IndexKind::Hnsw)?;
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = gallery.list(None, cursor.as_deref(), 1000)?;
        items.extend(page.items.into_iter().filter_map(|i| Some((i.id, i.metadata["label"].as_str()?.to_string()))));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    anyhow::ensure!(items.len() > 1, "the index holds {} labelled items; index with --label-from-folder", items.len());
    let labels: std::collections::HashMap<String, String> = items.iter().cloned().collect();
    let step = (items.len() / queries.max(1)).max(1);
    let sample: Vec<&(String, String)> = items.iter().step_by(step).take(queries).collect();
    for cfg in configs {
        let (mut hit_plain, mut hit_rerank) = (0usize, 0usize);
        let (mut t_plain, mut t_rerank) = (Vec::new(), Vec::new());
        for (id, label) in &sample {
            let plain = Query::nearest(Vec::new(), 1);
            let t = Instant::now();
            let a = gallery.similar(id, &plain)?.expect("listed item");
            t_plain.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let b = gallery.similar(id, &Query { rerank: Some(cfg), ..plain })?.expect("listed item");
            t_rerank.push(t.elapsed().as_secs_f64() * 1e3);
            let right = |hits: &[server::gallery::Hit]| hits.first().is_some_and(|h| labels.get(&h.id) == Some(label));
            hit_plain += usize::from(right(&a.hits));
            hit_rerank += usize::from(right(&b.hits));
        }
        let n = sample.len() as f64;
        let line = serde_json::json!({
            "index": settings.index_dir, "items": items.len(), "queries": sample.len(),
            "depth": cfg.depth, "k": cfg.k, "weight": cfg.weight,
            "r1_plain": 100.0 * hit_plain as f64 / n, "r1_rerank": 100.0 * hit_rerank as f64 / n,
            "gain": 100.0 * (hit_rerank as f64 - hit_plain as f64) / n,
            "ms_plain_p50": median(t_plain), "ms_rerank_p50": median(t_rerank),
        });
        println!("{line}");
    }
    Ok(())
}
