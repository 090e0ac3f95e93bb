//! Pictures a person would rather look at than read: loss and Recall@1 curves, and a
//! retrieval grid (queries beside their top results, right ones green, wrong ones red).

use std::path::Path;

use image::{imageops::FilterType, Rgb, RgbImage};
use plotters::prelude::*;

use crate::error::{Result, TrainError};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn plot_err(path: &Path) -> impl Fn(String) -> TrainError + '_ {
    move |reason| TrainError::Plot { path: path.into(), reason }
}

/// One named curve: (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Draws curves against epochs into a PNG.
pub fn line_chart(path: &Path, title: &str, y_label: &str, series: &[Series<'_>]) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return Ok(()); // nothing to draw yet
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// One row of the retrieval grid: a query image and its top results.
pub struct GridRow {
    pub query: RgbImage,
    pub query_label: String,
    /// (image, caption, correct?) for each retrieved neighbour, nearest first.
    pub results: Vec<(RgbImage, String, Option<bool>)>,
}

/// Draws queries (blue frame) beside their nearest neighbours: green frame = same class,
/// red = different class, grey = unknown.
pub fn retrieval_grid(path: &Path, rows: &[GridRow], cell: u32) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let cols = 1 + rows.iter().map(|r| r.results.len()).max().unwrap_or(0) as u32;
    let gap = 10;
    let caption = 20;
    let header = 30;
    let w = cols * (cell + gap) + gap + 12;
    let h = header + rows.len() as u32 * (cell + caption + gap) + gap;
    let mut canvas = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let frame = 4;
    let mut captions = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let y = header + r as u32 * (cell + caption + gap);
        let mut put = |col: u32, img: &RgbImage, color: Rgb<u8>, text: &str, extra: u32| {
            let x = gap + col * (cell + gap) + extra;
            for yy in 0..cell {
                for xx in 0..cell {
                    canvas.put_pixel(x + xx, y + yy, color);
                }
            }
            let inner = cell - 2 * frame;
            let thumb = image::imageops::resize(img, inner, inner, FilterType::Triangle);
            image::imageops::overlay(&mut canvas, &thumb, (x + frame) as i64, (y + frame) as i64);
            captions.push((x as i32, (y + cell + 3) as i32, text.to_string()));
        };
        put(0, &row.query, Rgb([40, 90, 220]), &row.query_label, 0);
        for (c, (img, text, ok)) in row.results.iter().enumerate() {
            let color = match ok {
                Some(true) => Rgb([30, 170, 60]),
                Some(false) => Rgb([220, 40, 40]),
                None => Rgb([150, 150, 150]),
            };
            put(1 + c as u32, img, color, text, 12);
        }
    }
    let mut buf = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let style = ("sans-serif", 13).into_font().color(&BLACK);
        root.draw_text(
            "query (blue)  |  nearest results: green = same class, red = different class",
            &("sans-serif", 15).into_font().color(&BLACK),
            (gap as i32, 8),
        )
        .map_err(|e| err(e.to_string()))?;
        for (x, y, t) in &captions {
            let t: String = t.chars().take((cell / 7) as usize).collect();
            root.draw_text(&t, &style, (*x, *y)).map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    let img = RgbImage::from_raw(w, h, buf).expect("buffer size");
    let tmp = path.with_extension("tmp.png");
    img.save(&tmp).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_and_grids_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        line_chart(&p, "loss", "loss", &[Series { name: "total", points: vec![(0.0, 1.0), (1.0, 0.5)] }]).unwrap();
        assert!(image::open(&p).unwrap().width() == 900);
        let img = RgbImage::from_pixel(20, 20, Rgb([1, 2, 3]));
        let rows = vec![GridRow {
            query: img.clone(),
            query_label: "q".into(),
            results: vec![(img.clone(), "a".into(), Some(true)), (img, "b".into(), Some(false))],
        }];
        let g = dir.path().join("grid.png");
        retrieval_grid(&g, &rows, 64).unwrap();
        let out = image::open(&g).unwrap().to_rgb8();
        // The second result's frame is red.
        let x = 10 + 2 * (64 + 10) + 12 + 1;
        assert_eq!(out.get_pixel(x, 30 + 1), &Rgb([220, 40, 40]));
    }
}
