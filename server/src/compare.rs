//! Judging an upgrade before the swap, without labels: for a sample of the collection's
//! own images, the old and the new model's nearest neighbours side by side (a picture),
//! and how much the neighbour lists changed; with labels (`label` in the metadata), the
//! Recall@K of both on the collection itself.

use std::collections::HashSet;

use image::{imageops, RgbImage};
use serde::{Deserialize, Serialize};

use crate::gallery::{Gallery, Query};
use crate::Result;

/// Neighbours compared per query.
pub const K: usize = 5;
/// Queries whose neighbour lists are compared.
const SAMPLE: usize = 50;
/// Queries drawn in the picture.
const ROWS: usize = 8;
/// Side of one picture cell, in pixels.
const CELL: u32 = 72;
/// The metadata key read as a label.
const LABEL: &str = "label";
/// Queries for the Recall@K of each model, when the items have labels.
const RECALL_SAMPLE: usize = 1000;

/// One sampled query: its nearest neighbours under each model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub old: Vec<String>,
    pub new: Vec<String>,
}

/// Recall@1 and Recall@K of one model on the labelled items.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Recall {
    pub r1: f64,
    pub rk: f64,
}

/// The comparison of two galleries of the same items.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub k: usize,
    pub queries: usize,
    /// Mean share of a query's K neighbours that both models agree on (1: unchanged).
    pub mean_overlap: f64,
    /// Queries whose nearest neighbour changed.
    pub top1_changed: usize,
    /// With labels: (old, new), and how many labelled queries they were measured on.
    pub recall: Option<(Recall, Recall)>,
    pub recall_queries: usize,
    pub rows: Vec<Row>,
}

fn neighbours(g: &dyn Gallery, id: &str, k: usize) -> Result<Vec<String>> {
    Ok(g.similar(id, &Query::nearest(Vec::new(), k))?
        .map(|f| f.hits.into_iter().map(|h| h.id).collect())
        .unwrap_or_default())
}

/// Every `n`-th id of `ids`, `n` chosen for about `want` of them.
fn spread(ids: &[String], want: usize) -> Vec<&String> {
    let step = ids.len().div_ceil(want.max(1)).max(1);
    ids.iter().step_by(step).collect()
}

/// Compares `old` and `new` (the same items, embedded by two models).
pub fn compare(old: &dyn Gallery, new: &dyn Gallery) -> Result<Report> {
    let page = new.list(None, None, usize::MAX)?;
    let ids: Vec<String> = page.items.iter().map(|i| i.id.clone()).collect();
    let mut rows = Vec::new();
    let (mut overlap, mut top1_changed) = (0.0, 0usize);
    for id in spread(&ids, SAMPLE) {
        let (a, b) = (neighbours(old, id, K)?, neighbours(new, id, K)?);
        let shared = a.iter().filter(|x| b.contains(x)).count();
        overlap += shared as f64 / K.min(a.len().max(1)) as f64;
        top1_changed += usize::from(a.first() != b.first());
        rows.push(Row { id: id.clone(), old: a, new: b });
    }
    let queries = rows.len();
    let labelled: Vec<(String, String)> = page
        .items
        .iter()
        .filter_map(|i| i.metadata.get(LABEL).and_then(|l| l.as_str()).map(|l| (i.id.clone(), l.to_string())))
        .collect();
    let label_of =
        |id: &str| labelled.binary_search_by(|(i, _)| i.as_str().cmp(id)).ok().map(|p| labelled[p].1.as_str());
    let (recall, recall_queries) = if labelled.len() >= 2 {
        let labelled_ids: Vec<String> = labelled.iter().map(|(i, _)| i.clone()).collect();
        let sample: Vec<&String> = spread(&labelled_ids, RECALL_SAMPLE);
        let recall_of = |g: &dyn Gallery| -> Result<Recall> {
            let (mut r1, mut rk) = (0usize, 0usize);
            for id in &sample {
                let mine = label_of(id);
                let hits = neighbours(g, id, K)?;
                let same: Vec<bool> = hits.iter().map(|h| label_of(h) == mine).collect();
                r1 += usize::from(same.first().copied().unwrap_or(false));
                rk += usize::from(same.iter().any(|s| *s));
            }
            let n = sample.len().max(1) as f64;
            Ok(Recall { r1: r1 as f64 / n, rk: rk as f64 / n })
        };
        (Some((recall_of(old)?, recall_of(new)?)), sample.len())
    } else {
        (None, 0)
    };
    Ok(Report {
        k: K,
        queries,
        mean_overlap: if queries == 0 { 1.0 } else { overlap / queries as f64 },
        top1_changed,
        recall,
        recall_queries,
        rows,
    })
}

/// The picture: per row, the query, its old neighbours, a gap, its new neighbours, drawn
/// from the stored thumbnails (grey where an item has none).
pub fn picture(report: &Report, old: &dyn Gallery, new: &dyn Gallery) -> Result<Vec<u8>> {
    let rows: Vec<&Row> = report.rows.iter().take(ROWS).collect();
    let cols = 1 + K + 1 + K;
    let pad = 4;
    let (w, h) = (cols as u32 * (CELL + pad) + pad, rows.len().max(1) as u32 * (CELL + pad) + pad);
    let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let cell = |g: &dyn Gallery, id: &str| -> RgbImage {
        let thumb = g.thumbnail(id).ok().flatten().and_then(|b| image::load_from_memory(&b).ok());
        match thumb {
            Some(img) => imageops::resize(&img.to_rgb8(), CELL, CELL, imageops::FilterType::Triangle),
            None => RgbImage::from_pixel(CELL, CELL, image::Rgb([200, 200, 200])),
        }
    };
    for (r, row) in rows.iter().enumerate() {
        let y = pad + r as u32 * (CELL + pad);
        let mut place = |c: usize, img: &RgbImage| {
            imageops::overlay(&mut canvas, img, (pad + c as u32 * (CELL + pad)) as i64, y as i64);
        };
        place(0, &cell(new, &row.id));
        for (i, id) in row.old.iter().enumerate() {
            place(1 + i, &cell(old, id));
        }
        let changed: HashSet<&String> = row.new.iter().filter(|id| !row.old.contains(id)).collect();
        for (i, id) in row.new.iter().enumerate() {
            let mut img = cell(new, id);
            if changed.contains(id) {
                // A neighbour the old model did not have: framed in orange.
                for x in 0..CELL {
                    for t in 0..3 {
                        img.put_pixel(x, t, image::Rgb([240, 140, 0]));
                        img.put_pixel(x, CELL - 1 - t, image::Rgb([240, 140, 0]));
                        img.put_pixel(t, x, image::Rgb([240, 140, 0]));
                        img.put_pixel(CELL - 1 - t, x, image::Rgb([240, 140, 0]));
                    }
                }
            }
            place(2 + K + i, &img);
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(canvas)
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| crate::Error::Inference(format!("cannot encode the comparison picture: {e}")))?;
    Ok(out.into_inner())
}

/// The page: the figures, the picture, and every sampled row.
pub fn page(collection: &str, report: &Report, picture_url: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let recall = match &report.recall {
        Some((o, n)) => format!(
            "<p>On the {} labelled images: Recall@1 {:.1} % before, {:.1} % after; Recall@{} {:.1} % before, {:.1} % after.</p>",
            report.recall_queries,
            o.r1 * 100.0,
            n.r1 * 100.0,
            report.k,
            o.rk * 100.0,
            n.rk * 100.0
        ),
        None => "<p>No <code>label</code> in the metadata: no Recall@K; judge by the picture.</p>".into(),
    };
    let rows: String = report
        .rows
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.id),
                esc(&r.old.join(" ")),
                esc(&r.new.join(" "))
            )
        })
        .collect();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Upgrade of {c}</title>\
         <style>body{{font:15px system-ui,sans-serif;margin:2rem auto;max-width:64rem}}td,th{{padding:2px 8px;text-align:left;font:12px ui-monospace,monospace}}</style></head>\
         <body><h1>Upgrade of collection {c}: old and new neighbours</h1>\
         <p>{q} sampled images; on average {ov:.0} % of their {k} nearest neighbours are the same under both models; \
         the nearest one changed for {t}.</p>{recall}\
         <p>Each row: the image, its {k} nearest under the old model, then under the new one (new neighbours framed in orange).</p>\
         <img src=\"{pic}\" alt=\"old and new neighbours\"><table><tr><th>image</th><th>old</th><th>new</th></tr>{rows}</table></body></html>",
        c = esc(collection),
        q = report.queries,
        ov = report.mean_overlap * 100.0,
        k = report.k,
        t = report.top1_changed,
        pic = picture_url,
    )
}
