//! The run's pictures: loss and Recall@1 curves from metrics.jsonl, and a retrieval grid
//! of test queries beside their nearest neighbours.

use std::sync::Arc;

use contract::{Distance, Output, Preprocess};
use models::net::Network;
use tch::Device;

use super::plots::{line_chart, retrieval_grid as draw_grid, GridRow, Series};
use super::RunDir;
use crate::data::{decode, Dataset};
use crate::embed::embed_eval;
use crate::error::Result;
use crate::eval::{knn, SCRATCH_FLOATS};

/// Redraws `loss.png` and (when evaluated) `recall.png` from the run's metrics.
pub fn curves(run: &RunDir) -> Result<()> {
    let metrics = run.metrics();
    let series = |key: &str| -> Vec<(f64, f64)> {
        metrics.iter().filter_map(|m| Some((m.get("epoch")?.as_f64()?, m.get(key)?.as_f64()?))).collect()
    };
    line_chart(
        &run.path("loss.png"),
        "STML training loss (epoch means)",
        "loss",
        &[
            Series { name: "total", points: series("loss") },
            Series { name: "RC(f, W)", points: series("rc_f") },
            Series { name: "RC(g, W)", points: series("rc_g") },
            Series { name: "KL(f || g)", points: series("kl") },
        ],
    )?;
    let recall: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|m| {
            let e = m.get("epoch")?.as_f64()?;
            let r = m.get("eval")?.get("recall")?.as_array()?.first()?.get(1)?.as_f64()?;
            Some((e, 100.0 * r))
        })
        .collect();
    if !recall.is_empty() {
        line_chart(
            &run.path("recall.png"),
            "Recall@1 on the held-out classes (monitoring only)",
            "Recall@1 (%)",
            &[Series { name: "Recall@1", points: recall }],
        )?;
    }
    Ok(())
}

/// Draws `retrieval.png`: 8 test queries (spread over classes) and their top-5 results in
/// the student's `head` embedding.
pub fn retrieval_grid(
    run: &RunDir,
    student: &Network,
    head: Output,
    test: &Arc<Dataset>,
    pre: &Preprocess,
    threads: usize,
    device: Device,
) -> Result<()> {
    let e = embed_eval(student, test, pre, head, threads, device, None)?;
    let n = e.kept.len();
    if n < 2 {
        return Ok(());
    }
    let neighbors = knn(&e.vectors, e.dim, 5, Distance::Euclidean, SCRATCH_FLOATS)?;
    let queries: Vec<usize> = (0..8).map(|q| (q * n) / 8 + (n / 16).min(n - 1 - (q * n) / 8)).collect();
    let mut rows = Vec::new();
    for &q in &queries {
        let qs = &test.samples[e.kept[q]];
        let Ok(qimg) = decode(qs) else { continue };
        let mut results = Vec::new();
        let k = neighbors.k;
        for (&j, &dist) in neighbors.row(q).iter().zip(&neighbors.distances[q * k..(q + 1) * k]) {
            let s = &test.samples[e.kept[j as usize]];
            if let Ok(img) = decode(s) {
                let ok = match (qs.label, s.label) {
                    (Some(a), Some(b)) => Some(a == b),
                    _ => None,
                };
                results.push((img, format!("d={:.2}", dist.sqrt()), ok));
            }
        }
        let label = qs.label.and_then(|l| test.classes.get(l as usize).cloned()).unwrap_or_else(|| qs.name.clone());
        rows.push(GridRow { query: qimg, query_label: label, results });
    }
    draw_grid(&run.path("retrieval.png"), &rows, 96)
}
