//! `clampnet predict`: classify image files with a checkpoint, on the GPU.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::{count, GpuArgs};
use clampnet::checkpoint::{self, RunMeta};
use clampnet::config::Config;
use clampnet::data;
use clampnet::gpu::Context;
use clampnet::infer::Predictor;
use clampnet::model::ModelPlan;
use clampnet::{Error, Result};

#[derive(Args)]
pub struct PredictArgs {
    /// a checkpoint written by `clampnet train --save`
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

/// The model a checkpoint was trained as (its stored config, else the reference model), its weights and
/// its class names.
pub fn load_model(path: &Path) -> Result<(ModelPlan, Vec<Vec<f32>>, Vec<String>)> {
    let (tensors, meta) = checkpoint::load(path)?;
    let meta = RunMeta::from_map(&meta);
    let cfg = match &meta.config_toml {
        Some(text) => Config::parse(text).map_err(|msg| Error::Checkpoint {
            path: path.into(),
            msg: format!("stored config: {msg}"),
        })?,
        None => Config::reference(),
    };
    let plan = ModelPlan::new(&cfg.model)?;
    let weights = checkpoint::match_model(path, &tensors, &plan)?;
    let names: Vec<String> = match meta.class_names {
        Some(n) if n.len() == plan.classes => n,
        _ if plan.classes == 10 => data::FASHION_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        _ => (0..plan.classes).map(|i| format!("class {i}")).collect(),
    };
    Ok((plan, weights, names))
}

/// Logits of `split` through the model on the GPU.
pub fn run_model(
    gpu: &GpuArgs,
    plan: &ModelPlan,
    weights: &[Vec<f32>],
    split: &data::Split,
) -> Result<Vec<f32>> {
    let ctx = Context::new(&gpu.options())?;
    let batch = split.len().clamp(1, 256);
    Predictor::new(&ctx, plan.clone(), weights, batch)?.logits(split)
}

pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let mx = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = logits.iter().map(|&l| (l as f64 - mx).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
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
    let top_k = count("--top-k", Some(p.top_k), 1)?.unwrap_or(1);
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
