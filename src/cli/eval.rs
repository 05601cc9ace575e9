//! `clampnet eval`: a checkpoint's accuracy, cross-entropy, per-class accuracy and confusion matrix on a
//! test set, on the GPU, optionally drawn as a PNG heatmap.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::{count, load_model, run_model, softmax, GpuArgs};
use clampnet::checkpoint;
use clampnet::data;
use clampnet::{Error, Result};

#[derive(Args)]
pub struct EvalArgs {
    /// a checkpoint written by `clampnet train --save` (.safetensors or .keras), or any Keras .keras file
    checkpoint: PathBuf,
    /// dataset folder (default: as `train` finds it)
    #[arg(long)]
    data: Option<PathBuf>,
    /// use only the first N test examples
    #[arg(long, allow_negative_numbers = true)]
    limit_test: Option<i64>,
    /// also write the confusion matrix as a PNG heatmap here
    #[arg(long)]
    heatmap: Option<PathBuf>,
    /// one JSON object on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run(e: EvalArgs) -> Result<()> {
    let limit_test = count("--limit-test", e.limit_test, 1)?;
    let (plan, weights, names) = load_model(&e.checkpoint)?;
    let mut ds = data::find_dataset(e.data.as_deref(), plan.spec.input)?;
    if ds.classes != plan.classes {
        return Err(Error::Config(format!(
            "the dataset ({}) has {} classes but the checkpoint's model has {} outputs: evaluate it on data of its own classes (--data)",
            ds.source, ds.classes, plan.classes
        )));
    }
    if let Some(n) = limit_test {
        ds.test.truncate(n);
    }
    let logits = run_model(&e.gpu, &plan, &weights, &ds.test)?;
    let k = plan.classes;
    let mut confusion = vec![vec![0usize; k]; k];
    let mut loss = 0.0;
    for (i, &y) in ds.test.labels.iter().enumerate() {
        let row = &logits[i * k..(i + 1) * k];
        let pred = (0..k).fold(0, |a, j| if row[j] > row[a] { j } else { a });
        confusion[y as usize][pred] += 1;
        loss -= softmax(row)[y as usize].max(1e-300).ln();
    }
    let n = ds.test.len();
    let correct: usize = (0..k).map(|j| confusion[j][j]).sum();
    let per_class: Vec<f64> = (0..k)
        .map(|j| confusion[j][j] as f64 / confusion[j].iter().sum::<usize>().max(1) as f64)
        .collect();
    if let Some(path) = &e.heatmap {
        heatmap(path, &confusion)?;
        if !e.json {
            eprintln!("heatmap: {} (rows: true class, columns: predicted; darker = larger share of the row)", path.display());
        }
    }
    let (accuracy, cross_entropy) = (correct as f64 / n as f64, loss / n as f64);
    if e.json {
        println!(
            "{}",
            json!({
                "examples": n, "accuracy": accuracy, "cross_entropy": cross_entropy,
                "classes": names, "per_class_accuracy": per_class, "confusion": confusion,
            })
        );
        return Ok(());
    }
    println!("{n} test examples: accuracy {accuracy:.4}, cross-entropy {cross_entropy:.4}");
    println!("per class:");
    for (j, name) in names.iter().enumerate() {
        println!("  {:>2} {:<14} {:.4}", j, name, per_class[j]);
    }
    println!("confusion matrix (rows: true class, columns: predicted):");
    print!("    ");
    for j in 0..k {
        print!("{j:>6}");
    }
    println!();
    for (j, row) in confusion.iter().enumerate() {
        print!("  {j:>2}");
        for v in row {
            print!("{v:>6}");
        }
        println!();
    }
    Ok(())
}

/// The confusion matrix as a PNG: one cell per (true, predicted) pair, 24 px, shaded by the fraction of
/// the true class's examples; written atomically.
fn heatmap(path: &Path, confusion: &[Vec<usize>]) -> Result<()> {
    let k = confusion.len();
    let cell = 24u32;
    let mut img = image::RgbImage::from_pixel(
        cell * k as u32,
        cell * k as u32,
        image::Rgb([255, 255, 255]),
    );
    for (t, row) in confusion.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        for (p, &v) in row.iter().enumerate() {
            let f = v as f64 / total;
            let shade = |full: f64| (255.0 - (255.0 - full) * f.sqrt()) as u8;
            let color = image::Rgb([shade(8.0), shade(48.0), shade(107.0)]);
            for y in 0..cell - 1 {
                for x in 0..cell - 1 {
                    img.put_pixel(p as u32 * cell + x, t as u32 * cell + y, color);
                }
            }
        }
    }
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|err| Error::Data {
        path: path.into(),
        msg: format!("encoding the heatmap: {err}"),
    })?;
    checkpoint::write_atomic(path, &bytes)
}
