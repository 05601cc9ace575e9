//! The commands: `train`, `info`, `bench`, `predict`, `eval`, `viz`, `inspect`, `make-sample`, each in
//! its own file; here the argument types they share and the entry point, which prints an error and
//! exits non-zero (1; 2 for usage errors, 130 after Ctrl-C) instead of panicking.

mod bench;
mod convert;
mod eval;
mod info;
mod inspect;
mod make_sample;
mod predict;
mod sweep;
mod train;
mod viz;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use std::path::Path;

use clampnet::checkpoint;
use clampnet::config::Config;
use clampnet::data;
use clampnet::files::{self, Source};
use clampnet::gpu::{self, Context, GpuOptions};
use clampnet::infer::Predictor;
use clampnet::model::ModelPlan;
use clampnet::{Error, Result};

#[derive(Parser)]
#[command(
    name = "clampnet",
    version,
    about = "Train CNNs on any GPU (wgpu + WGSL) with Keras-exact kernel regularizers and constraints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct GpuArgs {
    /// Graphics backend: vulkan, gl, metal, dx12 (default: WGPU_BACKEND, else the best available)
    #[arg(long)]
    backend: Option<String>,
    /// Pick the adapter whose name contains this text (default: WGPU_ADAPTER_NAME)
    #[arg(long)]
    adapter: Option<String>,
    /// Kernel shapes: cpu (tuned for CPU adapters such as lavapipe), gpu (tuned for GPUs), or auto (by
    /// the adapter's type; default: CLAMPNET_KERNEL_SET). Both compute the same results; for benchmarks and debugging
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    kernel_set: String,
    /// Opt in to subgroup operations (WebGPU's optional `subgroup` feature) where the adapter has them:
    /// the gpu kernel set's dense forward then sums across invocations with subgroupAdd (not where
    /// --gpu-tiles tiles it). Results agree with the baseline kernels to rounding, not bit for bit
    /// (default: CLAMPNET_SUBGROUPS=1, else off)
    #[arg(long)]
    subgroups: bool,
    /// The gpu kernel set's tiled kernels, for large batches (dense forward: 4 examples per workgroup;
    /// dense weight gradient: the gradient staged in workgroup memory; conv + pool forward: its input
    /// rows staged): bit-identical to the untiled ones, not yet measured on a GPU (default:
    /// CLAMPNET_GPU_TILES=1, else off)
    #[arg(long)]
    gpu_tiles: bool,
}

impl GpuArgs {
    pub fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            timestamps: false,
            kernel_set: gpu::KernelSet::parse(&self.kernel_set).unwrap_or(None),
            subgroups: self.subgroups,
            gpu_tiles: self.gpu_tiles,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train a CNN: the reference model (Conv2D(32,3x3,relu) -> MaxPool2D(2) -> Flatten -> Dense(10,softmax)), or any --config
    Train(train::TrainArgs),
    /// List the GPU adapters and the one `train` would pick
    Info(GpuArgs),
    /// Time training steps of the reference model (or a config) with the data on the GPU
    Bench(bench::BenchArgs),
    /// Classify images (PNG, JPEG, ...) with a trained checkpoint
    Predict(predict::PredictArgs),
    /// Accuracy, loss, per-class accuracy and the confusion matrix of a checkpoint on a test set
    Eval(eval::EvalArgs),
    /// Pictures of a checkpoint: conv filter grids, weight histograms, and training curves (PNG)
    Viz(viz::VizArgs),
    /// Print per-tensor statistics of a checkpoint: max |w|, fraction of exact zeros, filter norms
    Inspect(inspect::InspectArgs),
    /// Convert a model between .safetensors, .keras and .weights.h5 (by extension), weights and Adam's state
    Convert(convert::ConvertArgs),
    /// Restriction sweeps: a grid of trials run here or as a Slurm array, and their report
    #[command(subcommand)]
    Sweep(sweep::SweepCommand),
    /// Cut the embedded sample (first N train / test images, gzip IDX) from a full Fashion-MNIST folder
    MakeSample(make_sample::MakeSampleArgs),
}

pub fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away (`clampnet eval | head`)
    // instead of panicking on the broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("clampnet=info"))
        .init();
    let result = match Cli::parse().command {
        Command::Train(a) => match train::run(a) {
            Ok(train::Outcome::Interrupted) => return ExitCode::from(130),
            other => other.map(|_| ()),
        },
        Command::Sweep(s) => match sweep::run(s) {
            Ok(train::Outcome::Interrupted) => return ExitCode::from(130),
            other => other.map(|_| ()),
        },
        Command::Info(g) => info::run(g),
        Command::Bench(b) => bench::run(b),
        Command::Predict(p) => predict::run(p),
        Command::Eval(e) => eval::run(e),
        Command::Viz(v) => viz::run(v),
        Command::Inspect(i) => inspect::run(i),
        Command::MakeSample(m) => make_sample::run(m),
        Command::Convert(c) => convert::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A whole-number flag (taken as a signed number, so that `--epochs -1` reaches this check instead of
/// failing to parse): at least `min`, else an error naming the flag.
pub fn count(flag: &str, value: Option<i64>, min: i64) -> Result<Option<usize>> {
    match value {
        Some(v) if v < min => Err(Error::Config(format!(
            "{flag} must be at least {min}, got {v}"
        ))),
        v => Ok(v.map(|v| v as usize)),
    }
}

/// Peak resident memory of this process (VmHWM), in bytes; None where /proc is absent.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// The model a checkpoint was trained as (its stored config, else the reference model), its weights and
/// its class names.
pub fn load_model(path: &Path) -> Result<(ModelPlan, Vec<Vec<f32>>, Vec<String>)> {
    if files::Format::of(path) == files::Format::WeightsH5 {
        return Err(Error::Checkpoint {
            path: path.into(),
            msg: "a .weights.h5 file holds no architecture: use the .keras file, or make one with `clampnet convert WEIGHTS.weights.h5 MODEL.keras --config MODEL.json`".into(),
        });
    }
    let (tensors, meta) = files::load_checkpoint(path, None)?;
    let cfg = match Source::from_meta(&meta) {
        Some(s) => s
            .parse("the checkpoint's stored config")
            .map_err(|e| Error::Checkpoint {
                path: path.into(),
                msg: e.to_string(),
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
