//! `clampnet bench`: training steps of the reference model (or a config) timed with the data on the
//! GPU, per batch size; with --kernels, each kernel of a step on its own and the step's overheads.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{count, peak_rss, GpuArgs};
use clampnet::config::Config;
use clampnet::data;
use clampnet::gpu::{self, Context, GpuOptions};
use clampnet::model::{init_weights, ModelPlan};
use clampnet::trainer::{Setup, Trainer};
use clampnet::{Error, Result};

#[derive(Args)]
pub struct BenchArgs {
    /// Batch sizes to time
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "32,128,512",
        allow_negative_numbers = true
    )]
    batch_sizes: Vec<i64>,
    /// Timed steps per batch size (after the warm-up)
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    steps: i64,
    /// Untimed warm-up steps (pipeline compilation, caches)
    #[arg(long, default_value_t = 20, allow_negative_numbers = true)]
    warmup: i64,
    /// Conv filters of the reference model (32 is the reference; 64, 128 show how cost grows)
    #[arg(
        long,
        default_value_t = 32,
        conflicts_with = "config",
        allow_negative_numbers = true
    )]
    filters: i64,
    /// A model/restriction config instead of the reference model
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also time each kernel of a step on its own
    #[arg(long)]
    kernels: bool,
    /// Step this many models at once in one set of dispatches (a sweep's trials per pass); images per
    /// second count every model's
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    models: i64,
    /// One JSON object on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run(b: BenchArgs) -> Result<()> {
    let steps = count("--steps", Some(b.steps), 1)?.unwrap_or(1);
    let warmup = count("--warmup", Some(b.warmup), 0)?.unwrap_or(0);
    let filters = count("--filters", Some(b.filters), 1)?.unwrap_or(32);
    let models = count("--models", Some(b.models), 1)?.unwrap_or(1);
    let batch_sizes = b
        .batch_sizes
        .iter()
        .map(|&v| count("--batch-sizes", Some(v), 1).map(|v| v.unwrap_or(1)))
        .collect::<Result<Vec<usize>>>()?;
    if batch_sizes.is_empty() {
        return Err(Error::Config(
            "--batch-sizes needs at least one value".into(),
        ));
    }
    let mut cfg = match &b.config {
        Some(p) => Config::load(p)?,
        None => Config::reference(),
    };
    if b.config.is_none() {
        if let Some(clampnet::model::LayerSpec::Conv2d(c)) = cfg.model.layers.first_mut() {
            c.filters = filters;
        }
    }
    let plan = ModelPlan::new(&cfg.model)?;
    // per-kernel times from timestamp queries where the adapter has them (requested only here; the
    // other optional feature clampnet requests is `subgroup`, opted in to with --subgroups)
    let ctx = Context::new(&GpuOptions {
        timestamps: b.kernels,
        ..b.gpu.options()
    })?;
    // checked before the synthetic data is made for it
    let largest = *batch_sizes.iter().max().expect("checked non-empty");
    let max_rows = ctx.limits.max_compute_workgroups_per_dimension as usize;
    if largest > max_rows {
        return Err(Error::Config(format!(
            "--batch-sizes {largest} is above the adapter's max_compute_workgroups_per_dimension ({max_rows}), which bounds a batch"
        )));
    }
    let split = synthetic(&plan, largest * (steps + warmup).min(64));
    let mut rows = Vec::new();
    for &bs in &batch_sizes {
        rows.push(time_batch(
            &ctx,
            &cfg,
            &plan,
            &split,
            (bs, models),
            (steps, warmup),
            b.kernels,
        )?);
    }
    let flops = plan.train_flops_per_image();
    let out = json!({
        "adapter": gpu::describe(&ctx.info),
        "kernel_set": ctx.kernel_set.name(),
        "subgroups": ctx.subgroups,
        "gpu_tiles": ctx.gpu_tiles,
        "model_parameters": plan.param_count(),
        "train_mflops_per_image": flops / 1e6,
        "steps": steps,
        "warmup": warmup,
        "gpu_bytes_allocated": ctx.allocated_bytes(),
        "host_peak_rss_bytes": peak_rss(),
        "results": rows,
    });
    if b.json {
        println!("{out}");
    } else {
        print_table(&out, &ctx);
    }
    Ok(())
}

/// Synthetic images of the model's input shape (timing does not depend on their values).
fn synthetic(plan: &ModelPlan, n: usize) -> data::Split {
    let [h, w, c] = plan.spec.input;
    let mut rng = 0x9e37_79b9u32;
    let images: Vec<u8> = (0..n * h * w * c)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            (rng >> 24) as u8
        })
        .collect();
    data::Split {
        images,
        labels: (0..n as u32).map(|i| i % plan.classes as u32).collect(),
        height: h,
        width: w,
        channels: c,
    }
}

/// One batch size: steps timed after a warm-up, and (`kernels`) the per-kernel profile; with K
/// `models`, K runs stepping together (`clampnet::group`), each on a thread of its own, the first
/// timing them.
fn time_batch(
    ctx: &Context,
    cfg: &Config,
    plan: &ModelPlan,
    split: &data::Split,
    (bs, models): (usize, usize),
    (steps, warmup): (usize, usize),
    kernels: bool,
) -> Result<serde_json::Value> {
    let group = (models > 1).then(|| clampnet::group::Group::new(models));
    let trainer = |m: usize| {
        let mut setup = Setup::new(plan.clone(), cfg.restrictions.clone(), cfg.optimizer, bs);
        setup.loss = cfg.loss;
        setup.seed = cfg.seed;
        setup.group = group.clone().map(|g| (g, m));
        Trainer::new(ctx, setup, split, split, &init_weights(plan, m as u64))
    };
    std::thread::scope(|s| {
        // the other models: they step with the first, then leave
        for m in 1..models {
            let trainer = &trainer;
            s.spawn(move || -> Result<()> {
                let mut t = trainer(m)?;
                steps_of(&mut t, split, warmup.max(1))?;
                steps_of(&mut t, split, steps)?;
                Ok(())
            });
        }
        let t = trainer(0)?;
        measure(t, split, (bs, models), (steps, warmup), (plan, kernels))
    })
}

/// `steps` training steps of `t` over `split` in order; the seconds they took.
fn steps_of(t: &mut Trainer, split: &data::Split, mut steps: usize) -> Result<f64> {
    let order: Vec<u32> = (0..split.len() as u32).collect();
    let per_epoch = t.steps_per_epoch();
    let start = std::time::Instant::now();
    let mut e = 1;
    while steps > 0 {
        let k = steps.min(per_epoch);
        t.train_steps(e, &order, k, &mut |_| {})?;
        steps -= k;
        e += 1;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `time_batch`'s measurement, on the first model's trainer.
fn measure(
    mut t: Trainer,
    split: &data::Split,
    (bs, models): (usize, usize),
    (steps, warmup): (usize, usize),
    (plan, kernels): (&ModelPlan, bool),
) -> Result<serde_json::Value> {
    steps_of(&mut t, split, warmup.max(1))?;
    let secs = steps_of(&mut t, split, steps)?;
    let ips = (steps * bs * models) as f64 / secs;
    let (per_kernel, timing) = if !kernels {
        (Vec::new(), "")
    } else if let Some(ts) = t.profile_step_timestamps(21)? {
        (
            ts,
            "timestamp queries, each dispatch in its own pass, median of 21 steps",
        )
    } else {
        (
            t.profile_step(10)?,
            "wall clock, each kernel alone and repeated 10 times",
        )
    };
    // host recording time and (timestamps) whole-step GPU time: tells launch-bound from host-bound
    let (encode_s, gpu_step_s) = if kernels {
        let (e, g) = t.profile_step_overheads(64)?;
        (Some(e), g)
    } else {
        (None, None)
    };
    let per_kernel: Vec<_> = per_kernel
        .into_iter()
        .map(|(k, s)| json!({ "kernel": k, "microseconds": s * 1e6 }))
        .collect();
    Ok(json!({
        "batch_size": bs,
        "models_per_pass": t.models_per_pass(),
        "images_per_second": ips,
        "ms_per_step": 1e3 * secs / steps as f64,
        "seconds_per_60k_epoch": 60_000.0 / ips,
        "gflops": plan.train_flops_per_image() * ips / 1e9,
        "dispatches_per_step": t.dispatches_per_step(),
        "submits_per_step": 1.0 / t.steps_per_submit() as f64,
        "kernels": per_kernel,
        "kernel_timing": timing,
        "host_record_us_per_step": encode_s.map(|s| s * 1e6),
        "gpu_us_per_step": gpu_step_s.map(|s| s * 1e6),
    }))
}

fn print_table(out: &serde_json::Value, ctx: &Context) {
    println!(
        "adapter: {}, {} kernels{}{}",
        out["adapter"].as_str().unwrap_or("?"),
        ctx.kernel_set.name(),
        if ctx.subgroups { ", subgroups" } else { "" },
        if ctx.gpu_tiles { ", tiled" } else { "" }
    );
    println!(
        "model: {} parameters, {:.2} MFLOP per image per training step; {} timed steps after {} warm-up",
        out["model_parameters"],
        out["train_mflops_per_image"].as_f64().unwrap_or(0.0),
        out["steps"],
        out["warmup"]
    );
    let k = out["results"][0]["models_per_pass"].as_u64().unwrap_or(1);
    if k > 1 {
        println!("{k} models per step, in one set of dispatches: images/s counts all of them");
    }
    println!(
        "{:>6} {:>12} {:>10} {:>12} {:>8} {:>11} {:>13}",
        "batch", "images/s", "ms/step", "s/60k epoch", "GFLOP/s", "dispatches", "submits/step"
    );
    for r in out["results"].as_array().into_iter().flatten() {
        println!(
            "{:>6} {:>12.0} {:>10.3} {:>12.1} {:>8.2} {:>11} {:>13.4}",
            r["batch_size"].as_u64().unwrap_or(0),
            r["images_per_second"].as_f64().unwrap_or(0.0),
            r["ms_per_step"].as_f64().unwrap_or(0.0),
            r["seconds_per_60k_epoch"].as_f64().unwrap_or(0.0),
            r["gflops"].as_f64().unwrap_or(0.0),
            r["dispatches_per_step"].as_u64().unwrap_or(0),
            r["submits_per_step"].as_f64().unwrap_or(0.0)
        );
        if let Some(t) = r["kernel_timing"].as_str().filter(|t| !t.is_empty()) {
            println!("         per kernel ({t}):");
        }
        for k in r["kernels"].as_array().into_iter().flatten() {
            println!(
                "         {:<28} {:>10.1} us",
                k["kernel"].as_str().unwrap_or(""),
                k["microseconds"].as_f64().unwrap_or(0.0)
            );
        }
        if let Some(g) = r["gpu_us_per_step"].as_f64() {
            println!(
                "         {:<28} {:>10.1} us",
                "whole step, one pass (GPU)", g
            );
        }
        if let Some(e) = r["host_record_us_per_step"].as_f64() {
            println!("         {:<28} {:>10.1} us", "recording a step (host)", e);
        }
    }
    println!(
        "GPU memory allocated: {:.1} MiB; host peak RSS: {}",
        ctx.allocated_bytes() as f64 / (1 << 20) as f64,
        peak_rss().map_or("unknown".into(), |b| format!(
            "{:.0} MiB",
            b as f64 / (1 << 20) as f64
        ))
    );
}
