//! `clampnet predict`: classify image files with a checkpoint, on the GPU.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::{count, load_model, run_model, softmax, GpuArgs};
use clampnet::data;
use clampnet::{Error, Result};

#[derive(Args)]
pub struct PredictArgs {
    /// a checkpoint written by `clampnet train --save` (.safetensors or .keras), or any Keras .keras file
    checkpoint: PathBuf,
    /// image files (any format the image crate reads); converted to the model's input
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// how many classes to print per image
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    top_k: i64,
    /// invert the pixels first (dark-on-light photos; Fashion-MNIST is light-on-dark)
    #[arg(long)]
    invert: bool,
    /// one JSON object per image on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// An image file as the model's input: grayscale or RGB, resized (with a notice), inverted if asked.
fn read_image(path: &Path, [h, w, c]: [usize; 3], invert: bool) -> Result<Vec<u8>> {
    let img = image::open(path).map_err(|e| Error::Data {
        path: path.into(),
        msg: format!("cannot read this image: {e}"),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Data {
            path: path.into(),
            msg: "the image is empty (0 pixels)".into(),
        });
    }
    if (img.width() as usize, img.height() as usize) != (w, h) {
        eprintln!(
            "note: {} is {}x{}: resized to the model's {w}x{h}",
            path.display(),
            img.width(),
            img.height()
        );
    }
    let img = img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle);
    let mut px: Vec<u8> = if c == 1 {
        img.to_luma8().into_raw()
    } else {
        img.to_rgb8().into_raw()
    };
    if invert {
        px.iter_mut().for_each(|v| *v = 255 - *v);
    }
    Ok(px)
}

pub fn run(p: PredictArgs) -> Result<()> {
    // --top-k 0 prints the most likely class, as 1 does
    let top_k = count("--top-k", Some(p.top_k), 0)?.unwrap_or(1).max(1);
    let (plan, weights, names) = load_model(&p.checkpoint)?;
    let [h, w, c] = plan.spec.input;
    let mut images = Vec::new();
    for path in &p.images {
        images.extend(read_image(path, plan.spec.input, p.invert)?);
    }
    let split = data::Split {
        images,
        labels: vec![0; p.images.len()],
        height: h,
        width: w,
        channels: c,
    };
    let logits = run_model(&p.gpu, &plan, &weights, &split)?;
    for (i, path) in p.images.iter().enumerate() {
        let probs = softmax(&logits[i * plan.classes..(i + 1) * plan.classes]);
        let mut order: Vec<usize> = (0..plan.classes).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top: Vec<(usize, f64)> = order
            .into_iter()
            .take(top_k)
            .map(|k| (k, probs[k]))
            .collect();
        if p.json {
            let preds: Vec<_> = top
                .iter()
                .map(|&(k, pr)| json!({ "class": k, "label": names[k], "probability": pr }))
                .collect();
            println!(
                "{}",
                json!({ "image": path.display().to_string(), "predictions": preds })
            );
        } else {
            let text: Vec<String> = top
                .iter()
                .map(|&(k, pr)| format!("{} {:.3}", names[k], pr))
                .collect();
            println!("{}: {}", path.display(), text.join(", "));
        }
    }
    Ok(())
}
