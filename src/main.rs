//! The `clampnet` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use clampnet::checkpoint;
use clampnet::config::Config;
use clampnet::data;
use clampnet::gpu::{self, Context, GpuOptions};
use clampnet::model::ModelPlan;
use clampnet::restrict::{Preset, Restrictions};
use clampnet::train::{epoch_order, init_weights, Trainer};
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
struct GpuArgs {
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
}

impl GpuArgs {
    fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            timestamps: false,
            kernel_set: gpu::KernelSet::parse(&self.kernel_set).unwrap_or(None),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train a CNN: the reference model (Conv2D(32,3x3,relu) -> MaxPool2D(2) -> Flatten -> Dense(10,softmax)), or any --config
    Train(TrainArgs),
    /// List the GPU adapters and the one `train` would pick
    Info(GpuArgs),
    /// Time training steps of the reference model (or a config) with the data on the GPU
    Bench(BenchArgs),
    /// Classify images (PNG, JPEG, ...) with a trained checkpoint
    Predict(PredictArgs),
    /// Accuracy, loss, per-class accuracy and the confusion matrix of a checkpoint on a test set
    Eval(EvalArgs),
    /// Pictures of a checkpoint: conv filter grids, weight histograms, and training curves (PNG)
    Viz {
        /// a safetensors checkpoint
        checkpoint: PathBuf,
        /// folder for the PNG files
        #[arg(long)]
        out: PathBuf,
        /// a `train --metrics` log, for the training curves
        #[arg(long)]
        metrics: Option<PathBuf>,
    },
    /// Print per-tensor statistics of a checkpoint: max |w|, fraction of exact zeros, filter norms
    Inspect {
        /// a safetensors checkpoint
        file: PathBuf,
        /// {"tensors": [{"name", "shape", "max_abs", "zero_fraction", "filter_norm_min", "filter_norm_max"}]}
        #[arg(long)]
        json: bool,
    },
    /// Cut the embedded sample (first N train / test images, gzip IDX) from a full Fashion-MNIST folder
    MakeSample {
        /// folder with the four IDX files
        #[arg(long, default_value = data::DEBIAN_DIR)]
        from: PathBuf,
        #[arg(long, default_value_t = 4000)]
        train: usize,
        #[arg(long, default_value_t = 1000)]
        test: usize,
        #[arg(long, default_value = "assets/fashion-mnist-sample")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct PredictArgs {
    /// a checkpoint written by `clampnet train --save`
    checkpoint: PathBuf,
    /// image files (any format the image crate reads); converted to the model's input
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// how many classes to print per image
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// invert the pixels first (dark-on-light photos; Fashion-MNIST is light-on-dark)
    #[arg(long)]
    invert: bool,
    /// one JSON object per image on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// a checkpoint written by `clampnet train --save`
    checkpoint: PathBuf,
    /// dataset folder (default: as `train` finds it)
    #[arg(long)]
    data: Option<PathBuf>,
    /// use only the first N test examples
    #[arg(long)]
    limit_test: Option<usize>,
    /// also write the confusion matrix as a PNG heatmap here
    #[arg(long)]
    heatmap: Option<PathBuf>,
    /// one JSON object on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct BenchArgs {
    /// Batch sizes to time
    #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
    batch_sizes: Vec<usize>,
    /// Timed steps per batch size (after the warm-up)
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Untimed warm-up steps (pipeline compilation, caches)
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Conv filters of the reference model (32 is the reference; 64, 128 show how cost grows)
    #[arg(long, default_value_t = 32, conflicts_with = "config")]
    filters: usize,
    /// A model/restriction config instead of the reference model
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also time each kernel of a step on its own
    #[arg(long)]
    kernels: bool,
    /// One JSON object on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct TrainArgs {
    /// Model, restrictions, optimizer and training settings (TOML, Keras vocabulary; see configs/).
    /// Flags given beside it override its values
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder with the four IDX files (raw or .gz), or with images in train/<class>/ and test/<class>/.
    /// Default: $CLAMPNET_DATA, then /usr/share/datasets/fashion-mnist, then the embedded 4,000-image sample
    #[arg(long)]
    data: Option<PathBuf>,
    /// Kernel restrictions on the reference model: none, l1l2, clip, unitnorm, combo [default: none]
    #[arg(long, value_enum, conflicts_with = "config")]
    preset: Option<Preset>,
    /// Epochs to train [default: 3]
    #[arg(long)]
    epochs: Option<usize>,
    /// [default: 32]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Adam learning rate [default: 0.001]
    #[arg(long)]
    lr: Option<f32>,
    /// Seed for the initial weights and the epoch shuffles [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the file order (no shuffling between epochs)
    #[arg(long)]
    no_shuffle: bool,
    /// Use only the first N training examples
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use only the first N test examples
    #[arg(long)]
    limit_test: Option<usize>,
    /// Start from these weights (safetensors, Keras names and layouts)
    #[arg(long)]
    init: Option<PathBuf>,
    /// Write the trained weights here (safetensors, Keras names and layouts; with Adam's state and the
    /// run's settings, for --resume), atomically
    #[arg(long)]
    save: Option<PathBuf>,
    /// Also save after every N epochs
    #[arg(long)]
    save_every: Option<usize>,
    /// Continue a run from a checkpoint written by --save (or by Ctrl-C); --epochs is the total to reach
    #[arg(long, conflicts_with_all = ["config", "preset"])]
    resume: Option<PathBuf>,
    /// One JSON object per epoch on stdout
    #[arg(long)]
    json: bool,
    /// Also write the per-epoch JSON lines to this file (appended when resuming), for `clampnet viz`
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// No per-epoch text on stderr
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away (`clampnet eval | head`)
    // instead of panicking on the broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("clampnet=info"))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => match train(a) {
            Ok(Outcome::Interrupted) => return ExitCode::from(130),
            other => other.map(|_| ()),
        },
        Command::Info(g) => info(g),
        Command::Bench(b) => bench(b),
        Command::Predict(p) => predict(p),
        Command::Viz {
            checkpoint,
            out,
            metrics,
        } => viz(&checkpoint, &out, metrics.as_deref()),
        Command::Eval(e) => eval(e),
        Command::Inspect { file, json } => inspect(&file, json),
        Command::MakeSample {
            from,
            train,
            test,
            out,
        } => make_sample(from, train, test, out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How a training run ended.
enum Outcome {
    Done,
    /// Ctrl-C: a checkpoint was written
    Interrupted,
}

/// What a checkpoint records so that `--resume` continues exactly where it stopped.
struct RunState<'a> {
    cfg: &'a Config,
    config_text: Option<&'a str>,
    preset: Option<Preset>,
    limit_train: Option<usize>,
    limit_test: Option<usize>,
    /// an image-folder dataset's class names
    class_names: Option<&'a [String]>,
    /// epochs completed, and steps done in the next one
    epoch: usize,
    epoch_step: usize,
}

/// Weights (Keras names), Adam's moments (`optimizer/m/<name>`, `optimizer/v/<name>`) and the run's
/// settings as metadata, written atomically.
fn save_checkpoint(
    path: &std::path::Path,
    trainer: &Trainer,
    what: &str,
    s: &RunState,
) -> Result<()> {
    let mut tensors = trainer.weights()?;
    let (m, v) = trainer.optimizer_state()?;
    for (p, (m, v)) in trainer.model.params.iter().zip(m.into_iter().zip(v)) {
        tensors.push((format!("optimizer/m/{}", p.name), p.shape.clone(), m));
        tensors.push((format!("optimizer/v/{}", p.name), p.shape.clone(), v));
    }
    let mut meta = std::collections::HashMap::new();
    let mut put = |k: &str, v: String| {
        meta.insert(k.to_string(), v);
    };
    put("format", "clampnet-keras-v1".into());
    put("trained_with", what.into());
    put("optimizer_steps", trainer.step.to_string());
    put("epoch", s.epoch.to_string());
    put("epoch_step", s.epoch_step.to_string());
    put("epochs", s.cfg.epochs.to_string());
    put("seed", s.cfg.seed.to_string());
    put("batch_size", s.cfg.batch_size.to_string());
    put("learning_rate", s.cfg.hyper.lr.to_string());
    put("shuffle", s.cfg.shuffle.to_string());
    if let Some(t) = s.config_text {
        put("config_toml", t.to_string());
    }
    if let Some(p) = s.preset {
        put("preset", format!("{p:?}").to_lowercase());
    }
    if let Some(n) = s.limit_train {
        put("limit_train", n.to_string());
    }
    if let Some(names) = s.class_names {
        put(
            "class_names",
            serde_json::to_string(names).unwrap_or_default(),
        );
    }
    if let Some(n) = s.limit_test {
        put("limit_test", n.to_string());
    }
    checkpoint::save(path, &tensors, Some(meta))
}

fn train(a: TrainArgs) -> Result<Outcome> {
    // Settings: a resumed run takes them from its checkpoint (--epochs is the total to reach);
    // otherwise the config file (or the reference model with a preset), then the flags.
    let resumed = match &a.resume {
        Some(path) => Some(checkpoint::load(path)?),
        None => None,
    };
    let meta = resumed.as_ref().map(|r| &r.1);
    let meta_get = |k: &str| meta.and_then(|m| m.get(k)).cloned();
    let bad_meta = |k: &str| {
        Error::Checkpoint {
        path: a.resume.clone().unwrap_or_default(),
        msg: format!("metadata `{k}` is missing or invalid: only checkpoints written by `clampnet train --save` can be resumed"),
    }
    };
    let config_text = match (&a.config, meta_get("config_toml")) {
        (Some(path), _) => Some(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?),
        (None, t) => t,
    };
    let mut cfg = match &config_text {
        Some(text) => Config::parse(text).map_err(|msg| {
            Error::Config(format!(
                "{}: {msg}",
                a.config
                    .as_ref()
                    .map_or("the checkpoint's config".into(), |p| p
                        .display()
                        .to_string())
            ))
        })?,
        None => Config::reference(),
    };
    let plan = ModelPlan::new(&cfg.model)?;
    let preset = a.preset.or_else(|| {
        meta_get("preset").and_then(|p| <Preset as clap::ValueEnum>::from_str(&p, true).ok())
    });
    if let Some(p) = preset {
        cfg.restrictions = Restrictions::preset(p, &plan);
    }
    let (mut limit_train, mut limit_test) = (a.limit_train, a.limit_test);
    let mut start = (1usize, 0usize);
    if let Some(m) = meta {
        let num = |k: &str| {
            m.get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| bad_meta(k))
        };
        cfg.batch_size = num("batch_size")? as usize;
        cfg.seed = num("seed")?;
        cfg.hyper.lr = m
            .get("learning_rate")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad_meta("learning_rate"))?;
        cfg.shuffle = m
            .get("shuffle")
            .map(|v| v == "true")
            .ok_or_else(|| bad_meta("shuffle"))?;
        cfg.epochs = num("epochs")? as usize;
        limit_train = limit_train.or(m.get("limit_train").and_then(|v| v.parse().ok()));
        limit_test = limit_test.or(m.get("limit_test").and_then(|v| v.parse().ok()));
        start = (num("epoch")? as usize + 1, num("epoch_step")? as usize);
    }
    cfg.epochs = a.epochs.unwrap_or(cfg.epochs);
    if a.resume.is_none() {
        cfg.batch_size = a.batch_size.unwrap_or(cfg.batch_size);
        cfg.hyper.lr = a.lr.unwrap_or(cfg.hyper.lr);
        cfg.seed = a.seed.unwrap_or(cfg.seed);
        cfg.shuffle = cfg.shuffle && !a.no_shuffle;
    } else if a.batch_size.is_some()
        || a.lr.is_some()
        || a.seed.is_some()
        || a.no_shuffle
        || a.init.is_some()
    {
        return Err(Error::Config(
            "--resume continues with the checkpoint's own settings: drop --batch-size, --lr, --seed, --no-shuffle and --init".into(),
        ));
    }
    if cfg.epochs == 0 {
        return Err(Error::Config("--epochs must be at least 1".into()));
    }
    if cfg.batch_size == 0 {
        return Err(Error::Config("--batch-size must be at least 1".into()));
    }
    if !(cfg.hyper.lr > 0.0 && cfg.hyper.lr.is_finite()) {
        return Err(Error::Config(format!(
            "--lr must be a positive number, got {}",
            cfg.hyper.lr
        )));
    }
    if a.save_every == Some(0) {
        return Err(Error::Config(
            "--save-every must be at least 1 (epochs)".into(),
        ));
    }
    for w in &cfg.warnings {
        log::warn!("{w}");
    }
    let restrictions = cfg.restrictions.clone();
    let what = match (&a.config, preset) {
        (Some(p), _) => format!("config {}", p.display()),
        (None, _) if config_text.is_some() => "the checkpoint's config".to_string(),
        (None, p) => format!("preset {:?}", p.unwrap_or(Preset::None)).to_lowercase(),
    };
    let mut ds = data::find_dataset(a.data.as_deref(), cfg.model.input)?;
    if ds.classes != plan.classes {
        return Err(Error::Config(format!(
            "the dataset ({}) has {} classes but the model's last layer has {} units: set `units = {}` on the last dense layer of a --config",
            ds.source, ds.classes, plan.classes, ds.classes
        )));
    }
    if let Some(n) = limit_train {
        ds.train.truncate(n);
    }
    if let Some(n) = limit_test {
        ds.test.truncate(n);
    }
    log::info!(
        "data: {} ({} train, {} test)",
        ds.source,
        ds.train.len(),
        ds.test.len()
    );
    let weights = match (&a.init, &resumed) {
        (Some(path), _) => {
            let (w, _) = checkpoint::load(path)?;
            checkpoint::match_model(path, &w, &plan)?
        }
        (None, Some((w, _))) => checkpoint::match_model(a.resume.as_ref().unwrap(), w, &plan)?,
        (None, None) => init_weights(&plan, cfg.seed),
    };
    let ctx = Context::new(&a.gpu.options())?;
    let mut trainer = Trainer::new(
        &ctx,
        plan,
        restrictions,
        cfg.hyper,
        cfg.batch_size,
        &ds.train,
        &ds.test,
        &weights,
    )?;
    // the images live on the GPU now: free the host copy (host memory stays near the GPU working set)
    ds.train.images = Vec::new();
    ds.test.images = Vec::new();
    if let (Some((tensors, m)), Some(path)) = (&resumed, &a.resume) {
        let moment = |kind: &str| -> Result<Vec<Vec<f32>>> {
            trainer
                .model
                .params
                .iter()
                .map(|p| {
                    let name = format!("optimizer/{kind}/{}", p.name);
                    tensors.iter().find(|t| t.0 == name).map(|t| t.2.clone()).ok_or_else(|| Error::Checkpoint {
                        path: path.clone(),
                        msg: format!("no tensor {name}: only checkpoints written by `clampnet train --save` can be resumed"),
                    })
                })
                .collect()
        };
        let steps: u64 = m
            .get("optimizer_steps")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad_meta("optimizer_steps"))?;
        let (mm, vv) = (moment("m")?, moment("v")?);
        trainer.set_optimizer_state(&mm, &vv, steps)?;
        if start.1 >= trainer.steps_per_epoch() {
            return Err(bad_meta("epoch_step"));
        }
    }
    if !a.quiet {
        let from = if a.resume.is_some() {
            format!(", resuming at epoch {} step {}", start.0, start.1)
        } else {
            String::new()
        };
        eprintln!(
            "training {} parameters ({what}), batch {}, {} steps/epoch on {} ({} kernels){from}",
            trainer.model.param_count(),
            cfg.batch_size,
            trainer.steps_per_epoch(),
            ctx.info.name,
            ctx.kernel_set.name()
        );
    }
    // Ctrl-C: stop at the next chunk boundary, save, exit 130
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    }
    let state = |epoch: usize, epoch_step: usize| RunState {
        cfg: &cfg,
        config_text: config_text.as_deref(),
        preset,
        limit_train,
        limit_test,
        class_names: ds.class_names.as_deref(),
        epoch,
        epoch_step,
    };
    let mut report = Vec::new();
    for epoch in start.0..=cfg.epochs {
        let first = if epoch == start.0 { start.1 } else { 0 };
        let order = epoch_order(trainer.train_examples(), cfg.seed, epoch, cfg.shuffle);
        let started = std::time::Instant::now();
        let bar = if a.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::new(trainer.steps_per_epoch() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} steps | {msg} | {elapsed_precise} < {eta_precise}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(format!("{epoch}/{}", cfg.epochs));
            b.set_position(first as u64);
            b
        };
        // the trainer reads metrics once per 64 steps; the bar shows those ticks
        let stop = || interrupted.load(std::sync::atomic::Ordering::SeqCst);
        let stats = trainer.train_range(epoch, &order, first, usize::MAX, &stop, &mut |p| {
            bar.set_position(p.step as u64);
            bar.set_message(format!(
                "loss {:.4} accuracy {:.4} | {:.0} images/s",
                p.metrics.loss, p.metrics.accuracy, p.images_per_second
            ));
        })?;
        bar.finish_and_clear();
        if !stats.completed {
            let path = a
                .save
                .clone()
                .unwrap_or_else(|| PathBuf::from("clampnet-interrupted.safetensors"));
            save_checkpoint(&path, &trainer, &what, &state(epoch - 1, stats.next_step))?;
            eprintln!(
                "interrupted in epoch {epoch} at step {}: saved {}; continue with `clampnet train --resume {} --epochs {}`",
                stats.next_step,
                path.display(),
                path.display(),
                cfg.epochs
            );
            return Ok(Outcome::Interrupted);
        }
        let test = trainer.evaluate()?;
        let seconds = started.elapsed().as_secs_f64();
        let ips = stats.train.count as f64 / stats.train_seconds.max(1e-9);
        report = clampnet::report::restriction_report(&trainer.weights()?, &trainer.restrictions);
        let line = json!({
                    "epoch": epoch,
                    "train_loss": stats.train.loss,
                    "train_accuracy": stats.train.accuracy,
                    "test_loss": test.loss,
                    "test_accuracy": test.accuracy,
                    "seconds": seconds,
                    "train_seconds": stats.train_seconds,
                    "images_per_second": ips,
                    "steps": stats.steps,
                    "restrictions": report,
        });
        if a.json {
            println!("{line}");
        }
        if let Some(path) = &a.metrics {
            use std::io::Write;
            let append = epoch > 1 || a.resume.is_some();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            writeln!(f, "{line}").map_err(|e| Error::io(path, e))?;
        }
        if !a.quiet {
            eprintln!(
                "epoch {epoch}/{}: loss {:.4} accuracy {:.4} | test loss {:.4} accuracy {:.4} | {:.1} s ({:.1} s training, {:.0} images/s)",
                cfg.epochs, stats.train.loss, stats.train.accuracy, test.loss, test.accuracy, seconds, stats.train_seconds, ips
            );
        }
        if let (Some(path), Some(n)) = (&a.save, a.save_every) {
            if epoch % n == 0 && epoch < cfg.epochs {
                save_checkpoint(path, &trainer, &what, &state(epoch, 0))?;
                log::info!("saved {} after epoch {epoch}", path.display());
            }
        }
    }
    if !a.quiet && !report.is_empty() {
        eprint!(
            "restrictions after training:\n{}",
            clampnet::report::table(&report)
        );
    }
    if let Some(path) = &a.save {
        save_checkpoint(path, &trainer, &what, &state(cfg.epochs, 0))?;
        if !a.quiet {
            eprintln!("saved {}", path.display());
        }
    }
    Ok(Outcome::Done)
}

/// Peak resident memory of this process (VmHWM), in bytes; None where /proc is absent.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

fn bench(b: BenchArgs) -> Result<()> {
    let mut cfg = match &b.config {
        Some(p) => Config::load(p)?,
        None => Config::reference(),
    };
    if b.config.is_none() {
        if let Some(clampnet::model::LayerSpec::Conv2d { filters, .. }) =
            cfg.model.layers.first_mut()
        {
            *filters = b.filters;
        }
    }
    let plan = ModelPlan::new(&cfg.model)?;
    if b.steps == 0 || b.batch_sizes.is_empty() || b.batch_sizes.contains(&0) {
        return Err(Error::Config(
            "--steps and every --batch-sizes value must be at least 1".into(),
        ));
    }
    // synthetic images of the model's input shape: timing does not depend on their values
    let [h, w, c] = cfg.model.input;
    let largest = *b.batch_sizes.iter().max().unwrap();
    let n = largest * (b.steps + b.warmup).min(64);
    let mut rng = 0x9e37_79b9u32;
    let images: Vec<u8> = (0..n * h * w * c)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            (rng >> 24) as u8
        })
        .collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % plan.classes as u32).collect();
    let split = data::Split {
        images,
        labels,
        height: h,
        width: w,
        channels: c,
    };
    // per-kernel times from timestamp queries where the adapter has them (the only optional feature
    // clampnet ever requests, and only here)
    let ctx = Context::new(&GpuOptions {
        timestamps: b.kernels,
        ..b.gpu.options()
    })?;
    let flops = plan.train_flops_per_image();
    let mut rows = Vec::new();
    for &bs in &b.batch_sizes {
        let weights = init_weights(&plan, 0);
        let mut t = Trainer::new(
            &ctx,
            plan.clone(),
            cfg.restrictions.clone(),
            cfg.hyper,
            bs,
            &split,
            &split,
            &weights,
        )?;
        let order: Vec<u32> = (0..n as u32).collect();
        let per_epoch = t.steps_per_epoch();
        let run = |t: &mut Trainer, mut steps: usize| -> Result<f64> {
            let start = std::time::Instant::now();
            let mut e = 1;
            while steps > 0 {
                let k = steps.min(per_epoch);
                t.train_steps(e, &order, k, &mut |_| {})?;
                steps -= k;
                e += 1;
            }
            Ok(start.elapsed().as_secs_f64())
        };
        run(&mut t, b.warmup.max(1))?;
        let secs = run(&mut t, b.steps)?;
        let ms_step = 1e3 * secs / b.steps as f64;
        let ips = (b.steps * bs) as f64 / secs;
        let (kernels, timing) = if !b.kernels {
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
        let (encode_s, gpu_step_s) = if b.kernels {
            let (e, g) = t.profile_step_overheads(64)?;
            (Some(e), g)
        } else {
            (None, None)
        };
        let kernels: Vec<_> = kernels
            .into_iter()
            .map(|(k, s)| json!({ "kernel": format!("{k:?}"), "microseconds": s * 1e6 }))
            .collect();
        rows.push(json!({
            "batch_size": bs,
            "images_per_second": ips,
            "ms_per_step": ms_step,
            "seconds_per_60k_epoch": 60_000.0 / ips,
            "gflops": flops * ips / 1e9,
            "dispatches_per_step": t.dispatches_per_step(),
            "submits_per_step": 1.0 / t.steps_per_submit() as f64,
            "kernels": kernels,
            "kernel_timing": timing,
            "host_record_us_per_step": encode_s.map(|s| s * 1e6),
            "gpu_us_per_step": gpu_step_s.map(|s| s * 1e6),
        }));
    }
    let out = json!({
        "adapter": gpu::describe(&ctx.info),
        "kernel_set": ctx.kernel_set.name(),
        "model_parameters": plan.param_count(),
        "train_mflops_per_image": flops / 1e6,
        "steps": b.steps,
        "warmup": b.warmup,
        "gpu_bytes_allocated": ctx.allocated_bytes(),
        "host_peak_rss_bytes": peak_rss(),
        "results": rows,
    });
    if b.json {
        println!("{out}");
    } else {
        println!(
            "adapter: {}, {} kernels",
            out["adapter"].as_str().unwrap_or("?"),
            ctx.kernel_set.name()
        );
        println!(
            "model: {} parameters, {:.2} MFLOP per image per training step; {} timed steps after {} warm-up",
            plan.param_count(),
            flops / 1e6,
            b.steps,
            b.warmup
        );
        println!(
            "{:>6} {:>12} {:>10} {:>12} {:>8} {:>11} {:>13}",
            "batch", "images/s", "ms/step", "s/60k epoch", "GFLOP/s", "dispatches", "submits/step"
        );
        for r in &rows {
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
    Ok(())
}

/// The model a checkpoint was trained as (its stored config, else the reference model) and its weights.
fn load_model(path: &std::path::Path) -> Result<(ModelPlan, Vec<Vec<f32>>, Vec<String>)> {
    let (tensors, meta) = checkpoint::load(path)?;
    let cfg = match meta.get("config_toml") {
        Some(text) => Config::parse(text).map_err(|msg| Error::Checkpoint {
            path: path.into(),
            msg: format!("stored config: {msg}"),
        })?,
        None => Config::reference(),
    };
    let plan = ModelPlan::new(&cfg.model)?;
    let weights = checkpoint::match_model(path, &tensors, &plan)?;
    let names: Vec<String> = match meta
        .get("class_names")
        .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
    {
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
fn run_model(
    gpu: &GpuArgs,
    plan: &ModelPlan,
    weights: &[Vec<f32>],
    split: &data::Split,
) -> Result<Vec<f32>> {
    let ctx = Context::new(&gpu.options())?;
    let batch = split.len().clamp(1, 256);
    let mut t = Trainer::new(
        &ctx,
        plan.clone(),
        Restrictions::default(),
        clampnet::train::Hyper::default(),
        batch,
        split,
        split,
        weights,
    )?;
    t.predict_test()
}

fn softmax(logits: &[f32]) -> Vec<f64> {
    let mx = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = logits.iter().map(|&l| (l as f64 - mx).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn predict(p: PredictArgs) -> Result<()> {
    let (plan, weights, names) = load_model(&p.checkpoint)?;
    let [h, w, c] = plan.spec.input;
    let mut images = Vec::new();
    for path in &p.images {
        let img = image::open(path).map_err(|e| Error::Data {
            path: path.clone(),
            msg: format!("cannot read this image: {e}"),
        })?;
        if img.width() == 0 || img.height() == 0 {
            return Err(Error::Data {
                path: path.clone(),
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
        if p.invert {
            px.iter_mut().for_each(|v| *v = 255 - *v);
        }
        images.extend(px);
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
            .take(p.top_k.max(1))
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

fn eval(e: EvalArgs) -> Result<()> {
    let (plan, weights, names) = load_model(&e.checkpoint)?;
    let mut ds = data::find_dataset(e.data.as_deref(), plan.spec.input)?;
    if let Some(n) = e.limit_test {
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
        // one cell per (true, predicted) pair, 24 px, shaded by the fraction of the true class's examples
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
            path: path.clone(),
            msg: format!("encoding the heatmap: {err}"),
        })?;
        checkpoint::write_atomic(path, &bytes)?;
        if !e.json {
            eprintln!("heatmap: {} (rows: true class, columns: predicted; darker = larger share of the row)", path.display());
        }
    }
    if e.json {
        println!(
            "{}",
            json!({
                "examples": n, "accuracy": correct as f64 / n as f64, "cross_entropy": loss / n as f64,
                "classes": names, "per_class_accuracy": per_class, "confusion": confusion,
            })
        );
    } else {
        println!(
            "{} test examples: accuracy {:.4}, cross-entropy {:.4}",
            n,
            correct as f64 / n as f64,
            loss / n as f64
        );
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
    }
    Ok(())
}

fn viz(
    file: &std::path::Path,
    out: &std::path::Path,
    metrics: Option<&std::path::Path>,
) -> Result<()> {
    let (weights, _) = checkpoint::load(file)?;
    let log = match metrics {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            let lines: std::result::Result<Vec<serde_json::Value>, _> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect();
            let lines = lines.map_err(|e| Error::Data {
                path: p.into(),
                msg: format!("not a `train --metrics` log: {e}"),
            })?;
            if lines.is_empty() {
                return Err(Error::Data {
                    path: p.into(),
                    msg: "the metrics log has no epochs".into(),
                });
            }
            Some(lines)
        }
        None => None,
    };
    for p in clampnet::viz::render(out, &weights, log.as_deref())? {
        println!("{}", p.display());
    }
    Ok(())
}

fn inspect(file: &std::path::Path, as_json: bool) -> Result<()> {
    let (weights, meta) = checkpoint::load(file)?;
    // the model's tensors (a `train --save` checkpoint also holds Adam's state under optimizer/)
    let stats: Vec<_> = weights
        .iter()
        .filter(|(n, _, _)| !n.starts_with("optimizer/"))
        .map(|(n, s, w)| clampnet::report::tensor_stats(n, s, w))
        .collect();
    if as_json {
        println!("{}", json!({ "tensors": stats }));
    } else {
        if let Some(t) = meta.get("trained_with") {
            println!(
                "{}: trained with {t}, {} optimizer steps",
                file.display(),
                meta.get("optimizer_steps").map_or("?", |s| s)
            );
        }
        print!("{}", clampnet::report::table(&stats));
    }
    Ok(())
}

fn info(g: GpuArgs) -> Result<()> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if let Some(b) = &g.backend {
        desc.backends = gpu::parse_backends(b)?;
    }
    let backends = desc.backends;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    println!("adapters ({backends:?}):");
    for a in &adapters {
        let l = a.limits();
        println!("  {}", gpu::describe(&a.get_info()));
        println!(
            "    limits: storage binding {} MiB (needs the data: 47 MiB for Fashion-MNIST), uniform binding {} KiB (needs 64), \
             buffer {} MiB, {} storage buffers per stage (needs 8), {} workgroups per dimension, \
             {} invocations per workgroup (needs 256), {} KiB workgroup memory (needs 16)",
            l.max_storage_buffer_binding_size / (1 << 20),
            l.max_uniform_buffer_binding_size / 1024,
            l.max_buffer_size / (1 << 20),
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroups_per_dimension,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_storage_size / 1024,
        );
        let f = a.features();
        let optional = [
            (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
            (wgpu::Features::SUBGROUP, "subgroup"),
            (wgpu::Features::SHADER_F16, "shader-f16"),
        ];
        let found: Vec<&str> = optional
            .iter()
            .filter(|(flag, _)| f.contains(*flag))
            .map(|(_, n)| *n)
            .collect();
        println!(
            "    optional features present: {} (clampnet requests none: baseline WebGPU only)",
            if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            }
        );
    }
    match gpu::portability::check_all() {
        Ok(n) => println!(
            "shaders: {n} kernel variants validated by naga and translated to {}",
            gpu::portability::TARGETS.join(", ")
        ),
        Err(errors) => println!(
            "shaders: {} kernel variants fail to translate:\n  {}",
            errors.len(),
            errors.join("\n  ")
        ),
    }
    match Context::new(&g.options()) {
        Ok(ctx) => println!(
            "train would use: {}, {} kernels",
            gpu::describe(&ctx.info),
            ctx.kernel_set.name()
        ),
        Err(e) => println!("train would fail: {e}"),
    }
    Ok(())
}

fn make_sample(from: PathBuf, train: usize, test: usize, out: PathBuf) -> Result<()> {
    let ds = data::load_idx_dir(&from, 10)?;
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    data::write_idx_gz(
        &ds.train,
        train,
        &out.join("train-images-idx3-ubyte.gz"),
        &out.join("train-labels-idx1-ubyte.gz"),
    )?;
    data::write_idx_gz(
        &ds.test,
        test,
        &out.join("t10k-images-idx3-ubyte.gz"),
        &out.join("t10k-labels-idx1-ubyte.gz"),
    )?;
    eprintln!(
        "wrote {} train and {} test images to {}",
        train.min(ds.train.len()),
        test.min(ds.test.len()),
        out.display()
    );
    Ok(())
}
