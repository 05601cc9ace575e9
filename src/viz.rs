//! Pictures of a checkpoint and of a run: the conv filters as a tile grid (one shared colour scale, with a
//! scale bar), a histogram of each kernel's weights (clipping and L1 sparsity show at a glance), and the
//! training curves of a `train --metrics` log. PNG, drawn with plotters; text in the embedded DejaVu Sans
//! Mono (so nothing depends on the system's fonts).

use std::path::Path;

use plotters::prelude::*;

use crate::checkpoint::Weights;
use crate::error::{Error, Result};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// Register the embedded font as "sans-serif" (once), so that no plot needs system fonts.
pub(crate) fn font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Config(
            "the embedded font could not be loaded".into(),
        ))
    }
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.into(),
        msg: format!("drawing: {e}"),
    }
}

/// Blue (negative) - white (0) - red (positive), for `v` in [-1, 1].
fn diverging(v: f64) -> RGBColor {
    let v = v.clamp(-1.0, 1.0);
    let (r, g, b) = if v < 0.0 {
        (1.0 + v, 1.0 + v, 1.0)
    } else {
        (1.0, 1.0 - v, 1.0 - v)
    };
    RGBColor((r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8)
}

/// One tile per filter of a conv kernel (kh, kw, in, out): input channel 0, upscaled, all tiles on one
/// colour scale (symmetric around 0), with a labelled scale bar.
pub fn filter_grid(path: &Path, name: &str, shape: &[usize], w: &[f32]) -> Result<()> {
    font()?;
    let [kh, kw, cin, cout] = shape else {
        return Err(Error::Model(format!(
            "{name}: a conv kernel has 4 axes, this one {shape:?}"
        )));
    };
    let (kh, kw, cin, cout) = (*kh, *kw, *cin, *cout);
    let cols = (cout as f64).sqrt().ceil() as usize;
    let rows = cout.div_ceil(cols);
    let tile = (96 / kh.max(kw)).max(8) * kh.max(kw);
    let pad = 10;
    let (width, height) = (
        (cols * (tile + pad) + pad) as u32 + 90,
        (rows * (tile + pad) + pad) as u32 + 40,
    );
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12) as f64;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let title = format!("{name}: {cout} filters, input channel 0 of {cin}, shared scale");
    root.draw(&Text::new(
        title,
        (pad as i32, 8),
        ("sans-serif", 14).into_font(),
    ))
    .map_err(|e| draw_err(path, e))?;
    let px = tile / kh.max(kw);
    for o in 0..cout {
        let (r, c) = (o / cols, o % cols);
        let (x0, y0) = (
            (pad + c * (tile + pad)) as i32,
            (30 + r * (tile + pad)) as i32,
        );
        for i in 0..kh {
            for j in 0..kw {
                let v = w[((i * kw + j) * cin) * cout + o] as f64 / scale;
                let (x, y) = (x0 + (j * px) as i32, y0 + (i * px) as i32);
                root.draw(&Rectangle::new(
                    [(x, y), (x + px as i32, y + px as i32)],
                    diverging(v).filled(),
                ))
                .map_err(|e| draw_err(path, e))?;
            }
        }
        root.draw(&Rectangle::new(
            [(x0, y0), (x0 + (kw * px) as i32, y0 + (kh * px) as i32)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| draw_err(path, e))?;
    }
    // scale bar
    let bx = width as i32 - 70;
    let (top, bottom) = (40, height as i32 - 30);
    for y in top..bottom {
        let v = 1.0 - 2.0 * (y - top) as f64 / (bottom - top) as f64;
        root.draw(&Rectangle::new(
            [(bx, y), (bx + 16, y + 1)],
            diverging(v).filled(),
        ))
        .map_err(|e| draw_err(path, e))?;
    }
    for (y, v) in [
        (top, scale),
        ((top + bottom) / 2, 0.0),
        (bottom - 10, -scale),
    ] {
        root.draw(&Text::new(
            format!("{v:+.2}"),
            (bx + 20, y),
            ("sans-serif", 12).into_font(),
        ))
        .map_err(|e| draw_err(path, e))?;
    }
    root.present().map_err(|e| draw_err(path, e))
}

/// A histogram of a tensor's weights, with the count of exact zeros in the title.
pub fn histogram(path: &Path, name: &str, w: &[f32]) -> Result<()> {
    font()?;
    let lo = w.iter().fold(f32::INFINITY, |m, &v| m.min(v)) as f64;
    let hi = w.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    };
    let bins = 60usize;
    let mut counts = vec![0usize; bins];
    for &v in w {
        let b = (((v as f64 - lo) / (hi - lo)) * bins as f64)
            .floor()
            .clamp(0.0, (bins - 1) as f64) as usize;
        counts[b] += 1;
    }
    let zeros = w.iter().filter(|&&v| v == 0.0).count();
    let top = *counts.iter().max().unwrap_or(&1) as f64;
    let root = BitMapBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let caption = format!("{name}: {} weights, {zeros} exactly 0", w.len());
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..hi, 0f64..top * 1.05)
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("weight value")
        .y_desc("count")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    let width = (hi - lo) / bins as f64;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x0 = lo + i as f64 * width;
            Rectangle::new(
                [(x0, 0.0), (x0 + width, c as f64)],
                RGBColor(31, 119, 180).filled(),
            )
        }))
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))
}

/// Loss and accuracy per epoch, training and test, from `train --metrics` lines.
pub fn curves(path: &Path, epochs: &[serde_json::Value]) -> Result<()> {
    font()?;
    let get = |k: &str| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|e| Some((e["epoch"].as_f64()?, e[k].as_f64()?)))
            .collect()
    };
    let n = epochs.len().max(1) as f64;
    let root = BitMapBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let (left, right) = root.split_horizontally(500);
    for (area, what, keys) in [
        (left, "loss", ["train_loss", "test_loss"]),
        (right, "accuracy", ["train_accuracy", "test_accuracy"]),
    ] {
        let series: Vec<Vec<(f64, f64)>> = keys.iter().map(|k| get(k)).collect();
        let (lo, hi) = series
            .iter()
            .flatten()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, y)| {
                (a.min(y), b.max(y))
            });
        let (lo, hi) = if hi > lo {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        } else {
            (lo - 0.1, hi + 0.1)
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(format!("{what} per epoch"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.8f64..n + 0.2, lo..hi)
            .map_err(|e| draw_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(what)
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| draw_err(path, e))?;
        for (s, (label, color)) in series.iter().zip([
            ("train", RGBColor(31, 119, 180)),
            ("test", RGBColor(214, 39, 40)),
        ]) {
            chart
                .draw_series(LineSeries::new(s.clone(), color.stroke_width(2)))
                .map_err(|e| draw_err(path, e))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(s.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| draw_err(path, e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|e| draw_err(path, e))?;
    }
    root.present().map_err(|e| draw_err(path, e))
}

/// Every picture of a checkpoint (and of a metrics log) into `dir`; returns the files written.
pub fn render(
    dir: &Path,
    weights: &Weights,
    metrics: Option<&[serde_json::Value]>,
) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for (name, shape, w) in weights.iter().filter(|t| !t.0.starts_with("optimizer/")) {
        let stem = name.replace('.', "_");
        if shape.len() == 4 {
            let p = dir.join(format!("{stem}_filters.png"));
            filter_grid(&p, name, shape, w)?;
            out.push(p);
        }
        if shape.len() >= 2 {
            let p = dir.join(format!("{stem}_histogram.png"));
            histogram(&p, name, w)?;
            out.push(p);
        }
    }
    if let Some(m) = metrics {
        let p = dir.join("training_curves.png");
        curves(&p, m)?;
        out.push(p);
    }
    Ok(out)
}
