//! `clampnet train`: settings from the flags, a config file or a checkpoint being resumed; the data;
//! the trainer; the epochs, with progress, JSON lines, checkpoints, and a clean stop on Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use serde_json::json;

use super::{count, GpuArgs};
use clampnet::callbacks::{CallbackState, EarlyStopping, ReduceLrOnPlateau};
use clampnet::checkpoint::{self, RunMeta, Weights};
use clampnet::config::Config;
use clampnet::data::{self, Dataset};
use clampnet::files::{self, Source};
use clampnet::gpu::Context;
use clampnet::model::{init_weights, ModelPlan};
use clampnet::restrict::{Preset, Restrictions};
use clampnet::trainer::{epoch_order, EpochStats, PassMetrics, Setup, Trainer};
use clampnet::{Error, Result};

#[derive(Args)]
pub struct TrainArgs {
    /// The model: clampnet's TOML (Keras vocabulary; see configs/), a Keras model JSON (`model.to_json()`)
    /// or a Keras `.keras` file (which also gives the initial weights, unless --init does), with its
    /// restrictions and, when compiled, its optimizer. Flags given beside it override its values
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
    #[arg(long, allow_negative_numbers = true)]
    epochs: Option<i64>,
    /// [default: 32]
    #[arg(long, allow_negative_numbers = true)]
    batch_size: Option<i64>,
    /// Learning rate (with a schedule: its initial_learning_rate) [default: 0.001]
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Seed for the initial weights and the epoch shuffles [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    seed: Option<u64>,
    /// Keep the file order (no shuffling between epochs)
    #[arg(long)]
    no_shuffle: bool,
    /// Hold out this last fraction of the training data, before shuffling, and report val_loss and
    /// val_accuracy after each epoch (Keras' validation_split; what early stopping and
    /// reduce_lr_on_plateau monitor by default)
    #[arg(long, allow_negative_numbers = true)]
    validation_split: Option<f64>,
    /// Weigh each class's training loss (Keras' fit class_weight), e.g. 0:1.0,3:2.5; a class not named
    /// weighs 1
    #[arg(long, allow_hyphen_values = true)]
    class_weight: Option<String>,
    /// Use only the first N training examples
    #[arg(long, allow_negative_numbers = true)]
    limit_train: Option<i64>,
    /// Use only the first N test examples
    #[arg(long, allow_negative_numbers = true)]
    limit_test: Option<i64>,
    /// Start from these weights: a checkpoint (.safetensors), a Keras model (.keras) or Keras weights
    /// (.weights.h5), by layer name
    #[arg(long)]
    init: Option<PathBuf>,
    /// Write the trained model here, atomically, by extension: .safetensors (clampnet's checkpoint), .keras
    /// (loadable by keras.saving.load_model) or .weights.h5 (model.load_weights); each holds Adam's state,
    /// and .safetensors and .keras the run's settings, for --resume
    #[arg(long)]
    save: Option<PathBuf>,
    /// Also save after every N epochs
    #[arg(long, allow_negative_numbers = true)]
    save_every: Option<i64>,
    /// Continue a run from a checkpoint written by --save (or by Ctrl-C); --epochs is the total to reach.
    /// The run keeps the checkpoint's settings: flags that restate them are accepted, flags that differ
    /// are refused
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Resume from --save's file when it exists, else start a new run that saves there: one command
    /// line serves the first start and every restart (a requeued job, a rerun after a crash)
    #[arg(long, requires = "save", conflicts_with = "resume")]
    auto_resume: bool,
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

/// How a training run ended.
pub enum Outcome {
    Done,
    /// Ctrl-C: a checkpoint was written
    Interrupted,
}

/// The settings of a run, resolved from the flags, a config file or a resumed checkpoint.
struct Run {
    cfg: Config,
    plan: ModelPlan,
    /// the model's description (TOML or Keras JSON), stored with checkpoints
    source: Option<Source>,
    /// the weights a `.keras` --config came with
    config_weights: Option<Vec<Vec<f32>>>,
    preset: Option<Preset>,
    limit_train: Option<usize>,
    limit_test: Option<usize>,
    save_every: Option<usize>,
    /// (first epoch, steps already done in it)
    start: (usize, usize),
    /// what the run trains with, as checkpoints and the header say it
    what: String,
    /// the checkpoint being resumed: its tensors and metadata
    resumed: Option<(Weights, RunMeta)>,
    /// its path (--resume, or --save's file under --auto-resume)
    resume_path: Option<PathBuf>,
    /// the learning rate the run started with, and the weights it started from (--init)
    initial_lr: f32,
    init: Option<String>,
}

/// Ctrl-C: set by the handler, read at chunk boundaries (one handler per process: a sweep trains many
/// runs in turn).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn catch_ctrl_c() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    });
}

impl TrainArgs {
    /// The flags of a `train` command line (without the program and command names).
    pub fn parse_from(args: &[String]) -> std::result::Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            train: TrainArgs,
        }
        use clap::Parser;
        let mut all = vec!["train".to_string()];
        all.extend_from_slice(args);
        Line::try_parse_from(all).map(|l| l.train)
    }
}

pub fn run(a: TrainArgs) -> Result<Outcome> {
    run_on(a, None)
}

/// What the runs of a sweep share: the device, and the datasets read so far (by folder and input
/// shape), so that each run starts without reopening or rereading them.
pub struct Shared {
    pub ctx: Context,
    datasets: std::sync::Mutex<Vec<(DataKey, Dataset)>>,
}

type DataKey = (Option<PathBuf>, [usize; 3]);

impl Shared {
    pub fn new(ctx: Context) -> Self {
        Shared {
            ctx,
            datasets: Default::default(),
        }
    }

    fn dataset(&self, data: Option<&Path>, input: [usize; 3]) -> Result<Dataset> {
        let key = (data.map(Path::to_path_buf), input);
        // held while reading, so that the runs of a group read a dataset once
        let mut sets = self.datasets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, d)) = sets.iter().find(|(k, _)| *k == key) {
            return Ok(d.clone());
        }
        let d = data::find_dataset(data, input)?;
        sets.push((key, d.clone()));
        Ok(d)
    }
}

/// A run on `shared`'s device (and its datasets), else on the device the flags pick.
pub fn run_on(a: TrainArgs, shared: Option<&Shared>) -> Result<Outcome> {
    run_in_group(a, shared, None)
}

/// `run_on`, as member `group.1` of runs stepping together (`clampnet::group`): the same run, its
/// model one of the group's step.
pub fn run_in_group(
    a: TrainArgs,
    shared: Option<&Shared>,
    group: Option<(std::sync::Arc<clampnet::group::Group>, usize)>,
) -> Result<Outcome> {
    let run = resolve(&a)?;
    let mut ds = match shared {
        Some(s) => s.dataset(a.data.as_deref(), run.cfg.model.input)?,
        None => data::find_dataset(a.data.as_deref(), run.cfg.model.input)?,
    };
    if ds.classes != run.plan.classes {
        return Err(Error::Config(format!(
            "the dataset ({}) has {} classes but the model's last layer has {} units: set `units = {}` on the last dense layer of a --config",
            ds.source, ds.classes, run.plan.classes, ds.classes
        )));
    }
    if let Some(n) = run.limit_train {
        ds.train.truncate(n);
    }
    if let Some(n) = run.limit_test {
        ds.test.truncate(n);
    }
    let validation = match run.cfg.validation_split {
        Some(v) => Some(ds.train.hold_out(v)?),
        None => None,
    };
    log::info!(
        "data: {} ({} train, {} test)",
        ds.source,
        ds.train.len(),
        ds.test.len()
    );
    let weights = match (&run.resumed, &run.resume_path, &a.init, &run.config_weights) {
        (Some((w, _)), Some(path), _, _) => checkpoint::match_model(path, w, &run.plan)?,
        (_, _, Some(path), _) => {
            let (w, _) = files::load_checkpoint(path, run.source.as_ref())?;
            checkpoint::match_model(path, &w, &run.plan)?
        }
        (_, _, None, Some(w)) => w.clone(),
        _ => init_weights(&run.plan, run.cfg.seed),
    };
    let opened;
    let ctx = match shared {
        Some(s) => &s.ctx,
        None => {
            opened = Context::new(&a.gpu.options())?;
            &opened
        }
    };
    let mut setup = Setup::new(
        run.plan.clone(),
        run.cfg.restrictions.clone(),
        run.cfg.optimizer,
        run.cfg.batch_size,
    );
    setup.seed = run.cfg.seed;
    setup.loss = run.cfg.loss;
    setup.validation = validation;
    setup.group = group;
    setup.class_weight = run
        .cfg
        .class_weights(run.plan.classes)
        .map_err(Error::Config)?;
    let mut trainer = Trainer::new(ctx, setup, &ds.train, &ds.test, &weights)?;
    // the images live on the GPU now: free the host copy (host memory stays near the GPU working set)
    ds.train.images = Vec::new();
    ds.test.images = Vec::new();
    if let (Some((tensors, meta)), Some(path)) = (&run.resumed, &run.resume_path) {
        restore_optimizer(&mut trainer, path, tensors, meta)?;
        if run.start.1 >= trainer.steps_per_epoch() {
            return Err(RunMeta::invalid(path, "epoch_step"));
        }
    }
    if !a.quiet {
        let from = if run.resumed.is_some() {
            format!(", resuming at epoch {} step {}", run.start.0, run.start.1)
        } else {
            String::new()
        };
        eprintln!(
            "training {} parameters ({}), batch {}, {} steps/epoch on {} ({} kernels){from}",
            trainer.model.param_count(),
            run.what,
            run.cfg.batch_size,
            trainer.steps_per_epoch(),
            ctx.info.name,
            trainer.kernel_set.name()
        );
    }
    epochs(&a, &run, &mut trainer, &ds)
}

/// What runs must share to step together as the models of one step (`clampnet::group`): all but
/// their restrictions, learning rate, seed (dropout masks included), shuffling and starting weights
/// (runs resumed from different points do not share). With the key, the run's restrictions: the constraints on each tensor must also be
/// compatible (`optim::constraints::compatible`).
pub fn group_key(a: &TrainArgs) -> Result<(String, clampnet::restrict::Restrictions)> {
    let run = resolve(a)?;
    let cfg = &run.cfg;
    let mut optimizer = cfg.optimizer;
    optimizer.lr = 0.0;
    let steps = run.resumed.as_ref().map(|(_, m)| m.optimizer_steps);
    let key = format!(
        "{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}",
        cfg.model,
        cfg.batch_size,
        optimizer,
        cfg.loss,
        cfg.class_weight,
        cfg.validation_split,
        (run.start, steps),
        (run.limit_train, run.limit_test, &a.data),
        (cfg.epochs, &cfg.early_stopping, &cfg.reduce_lr),
        (&a.gpu.backend, &a.gpu.adapter, &a.gpu.kernel_set),
        run.plan.flat_len,
        run.plan.params.len(),
    );
    Ok((key, run.cfg.restrictions))
}

/// The most models one step of `a`'s run may hold on `ctx` (`sweep run` groups at most this many):
/// its per-model buffers (the largest op output or parameter buffer, as the ops are lowered here, with
/// room for the partial sums beside it) must fit one storage binding K times, the penalty tables of K
/// models one uniform window, and K copies of a grid's z the grid. wgpu reports no memory size, so the
/// binding limit is what bounds memory. A group larger than this still runs: its build fails, and its
/// trials train alone.
pub fn max_models(ctx: &Context, a: &TrainArgs) -> Result<usize> {
    let run = resolve(a)?;
    let plan = &run.plan;
    let batch = run.cfg.batch_size;
    let ops = clampnet::model::fuse::lower(plan, ctx.kernel_set, true);
    let largest = ops
        .iter()
        .map(|o| o.output.len() * batch)
        .chain([plan.flat_len, plan.input_len() * batch])
        .max()
        .unwrap_or(1) as u64
        * 4;
    let part = |bytes: u64| bytes.div_ceil(256) * 256;
    let by_binding = ctx.limits.max_storage_buffer_binding_size / (2 * part(largest)).max(1);
    let by_window = clampnet::gpu::UNIFORM_WINDOW / part(plan.params.len() as u64 * 32);
    let by_grid = ctx.limits.max_compute_workgroups_per_dimension as u64 / 64;
    Ok(by_binding.min(by_window).min(by_grid).max(1) as usize)
}

/// `--class-weight 0:1.0,3:2.5`: (class, weight) pairs.
fn parse_class_weight(text: &str) -> Result<Vec<(usize, f32)>> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (c, w) = p.split_once(':').ok_or_else(|| {
                Error::Config(format!(
                    "--class-weight: \"{p}\" is not class:weight (e.g. 0:1.0,3:2.5)"
                ))
            })?;
            let c = c.trim().parse::<usize>().map_err(|_| {
                Error::Config(format!("--class-weight: \"{c}\" is not a class index"))
            })?;
            let w = w
                .trim()
                .parse::<f32>()
                .map_err(|_| Error::Config(format!("--class-weight: \"{w}\" is not a number")))?;
            Ok((c, w))
        })
        .collect()
}

/// The run's settings: a resumed run takes them from its checkpoint (--epochs is the total to reach);
/// otherwise the config file (or the reference model with a preset), then the flags.
fn resolve(a: &TrainArgs) -> Result<Run> {
    let resume_path = match (&a.resume, a.auto_resume, &a.save) {
        (Some(path), _, _) => Some(path.clone()),
        (None, true, Some(save)) if save.exists() => Some(save.clone()),
        _ => None,
    };
    let resumed = match &resume_path {
        Some(path) => Some(files::load_checkpoint(path, None)?),
        None => None,
    };
    let meta = resumed.as_ref().map(|r| &r.1);
    if let (Some(m), Some(path)) = (meta, &resume_path) {
        check_resume_flags(a, path, m)?;
    }
    let stored = meta.and_then(Source::from_meta);
    let (source, mut cfg, config_weights) = match (&a.config, stored) {
        (_, Some(s)) => {
            let cfg = s.parse("the checkpoint's config")?;
            (Some(s), cfg, None)
        }
        (Some(path), None) => {
            let m = files::load_config(path)?;
            (Some(m.source), m.config, m.weights)
        }
        (None, None) => (None, Config::reference(), None),
    };
    let plan = ModelPlan::new(&cfg.model)?;
    let preset = a.preset.or_else(|| {
        meta.and_then(|m| m.preset.as_deref())
            .and_then(|p| <Preset as clap::ValueEnum>::from_str(p, true).ok())
    });
    if let Some(p) = preset {
        cfg.restrictions = Restrictions::preset(p, &plan);
    }
    let mut limit_train = count("--limit-train", a.limit_train, 1)?;
    let mut limit_test = count("--limit-test", a.limit_test, 1)?;
    let mut start = (1usize, 0usize);
    if let (Some(m), Some(path)) = (meta, &resume_path) {
        cfg.batch_size = RunMeta::required(path, "batch_size", m.batch_size)?;
        cfg.seed = RunMeta::required(path, "seed", m.seed)?;
        cfg.optimizer.lr = RunMeta::required(path, "learning_rate", m.learning_rate)?;
        cfg.shuffle = RunMeta::required(path, "shuffle", m.shuffle)?;
        cfg.epochs = RunMeta::required(path, "epochs", m.epochs)?;
        limit_train = limit_train.or(m.limit_train);
        cfg.validation_split = m.validation_split.or(cfg.validation_split);
        if let Some(text) = &m.class_weight {
            cfg.class_weight = Some(parse_class_weight(text)?);
        }
        limit_test = limit_test.or(m.limit_test);
        start = (
            RunMeta::required(path, "epoch", m.epoch)? + 1,
            RunMeta::required(path, "epoch_step", m.epoch_step)?,
        );
    }
    apply_flags(a, &mut cfg, meta.is_some())?;
    for w in &cfg.warnings {
        log::warn!("{w}");
    }
    let what = match (meta.and_then(|m| m.trained_with.clone()), &a.config, preset) {
        (Some(w), _, _) => w,
        (None, Some(p), _) => format!("config {}", p.display()),
        (None, None, _) if source.is_some() => "the checkpoint's config".to_string(),
        (None, None, p) => format!("preset {:?}", p.unwrap_or(Preset::None)).to_lowercase(),
    };
    let (initial_lr, init) = match meta {
        Some(m) => (
            m.initial_learning_rate.unwrap_or(cfg.optimizer.lr),
            m.init.clone(),
        ),
        None => (
            cfg.optimizer.lr,
            a.init.as_ref().map(|p| p.display().to_string()),
        ),
    };
    Ok(Run {
        cfg,
        plan,
        source,
        config_weights,
        preset,
        limit_train,
        limit_test,
        save_every: count("--save-every", a.save_every, 1)?,
        start,
        what,
        resumed,
        resume_path,
        initial_lr,
        init,
    })
}

/// A resumed run keeps its checkpoint's settings. Flags that restate them are accepted, so that a
/// requeued job can run its command line again; flags that differ are refused, each named.
fn check_resume_flags(a: &TrainArgs, path: &Path, m: &RunMeta) -> Result<()> {
    let mut conflicts: Vec<String> = Vec::new();
    let mut check = |differs: bool, flag: String, has: String| {
        if differs {
            conflicts.push(format!("{flag} (the checkpoint has {has})"));
        }
    };
    let shown = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    let stored = Source::from_meta(m);
    if let Some(c) = &a.config {
        let given = files::load_config(c)?.source;
        let same = stored.as_ref().is_some_and(|s| {
            *s == given
                || matches!((s.parse("a"), given.parse("b")), (Ok(x), Ok(y)) if format!("{x:?}") == format!("{y:?}"))
        });
        let has = match &stored {
            Some(_) => "another model or restrictions".to_string(),
            None => format!(
                "the reference model with preset {}",
                m.preset.as_deref().unwrap_or("none")
            ),
        };
        check(!same, format!("--config {}", c.display()), has);
    }
    if let Some(p) = a.preset {
        let name = format!("{p:?}").to_lowercase();
        let has = m.preset.clone().or_else(|| {
            // a run without --preset and --config trained the reference model unrestricted
            stored.is_none().then(|| "none".to_string())
        });
        check(
            has.as_deref() != Some(name.as_str()),
            format!("--preset {name}"),
            shown(
                has.map(|h| format!("preset {h}"))
                    .or(stored.as_ref().map(|_| "a config".into())),
            ),
        );
    }
    if let Some(b) = count("--batch-size", a.batch_size, 1)? {
        check(
            m.batch_size != Some(b),
            format!("--batch-size {b}"),
            shown(m.batch_size.map(|v| v.to_string())),
        );
    }
    if let Some(lr) = a.lr {
        let started = m.initial_learning_rate.or(m.learning_rate);
        check(
            started != Some(lr),
            format!("--lr {lr}"),
            shown(started.map(|v| format!("learning rate {v}"))),
        );
    }
    if let Some(seed) = a.seed {
        check(
            m.seed != Some(seed),
            format!("--seed {seed}"),
            shown(m.seed.map(|v| format!("seed {v}"))),
        );
    }
    if a.no_shuffle {
        check(
            m.shuffle != Some(false),
            "--no-shuffle".into(),
            "shuffling on".into(),
        );
    }
    if let Some(v) = a.validation_split {
        check(
            m.validation_split != Some(v),
            format!("--validation-split {v}"),
            shown(m.validation_split.map(|v| format!("validation_split {v}"))),
        );
    }
    if let Some(text) = &a.class_weight {
        let stored_weights = match &m.class_weight {
            Some(t) => Some(parse_class_weight(t)?),
            None => None,
        };
        check(
            stored_weights != Some(parse_class_weight(text)?),
            format!("--class-weight {text}"),
            shown(m.class_weight.clone()),
        );
    }
    if let Some(n) = count("--limit-train", a.limit_train, 1)? {
        check(
            m.limit_train != Some(n),
            format!("--limit-train {n}"),
            shown(m.limit_train.map(|v| format!("limit_train {v}"))),
        );
    }
    if let Some(init) = &a.init {
        let given = init.display().to_string();
        check(
            m.init.as_deref() != Some(given.as_str()),
            format!("--init {given}"),
            shown(m.init.as_ref().map(|i| format!("init {i}"))),
        );
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "resuming {}: {} conflict{} with the run being resumed, which keeps its own settings: drop {}, or start a new run (another --save)",
        path.display(),
        conflicts.join(", "),
        if conflicts.len() == 1 { "s" } else { "" },
        if conflicts.len() == 1 { "it" } else { "them" },
    )))
}

/// The flags over the config's values (a resumed run keeps its own, but for --epochs), checked.
fn apply_flags(a: &TrainArgs, cfg: &mut Config, resuming: bool) -> Result<()> {
    cfg.epochs = count("--epochs", a.epochs, 1)?.unwrap_or(cfg.epochs);
    let batch_size = count("--batch-size", a.batch_size, 1)?;
    if !resuming {
        cfg.batch_size = batch_size.unwrap_or(cfg.batch_size);
        if a.lr.is_some()
            && matches!(
                cfg.optimizer.schedule,
                clampnet::optim::Schedule::PiecewiseConstantDecay { .. }
            )
        {
            return Err(Error::Config(
                "--lr sets a schedule's initial_learning_rate, and a piecewise_constant_decay has none: set its values in the config".into(),
            ));
        }
        cfg.optimizer.lr = a.lr.unwrap_or(cfg.optimizer.lr);
        cfg.seed = a.seed.unwrap_or(cfg.seed);
        cfg.shuffle = cfg.shuffle && !a.no_shuffle;
        if a.validation_split.is_some() {
            cfg.validation_split = a.validation_split;
        }
        if let Some(text) = &a.class_weight {
            cfg.class_weight = Some(parse_class_weight(text)?);
        }
    }
    cfg.check_fit().map_err(Error::Config)?;
    if cfg.epochs == 0 {
        return Err(Error::Config("--epochs must be at least 1".into()));
    }
    if cfg.batch_size == 0 {
        return Err(Error::Config("--batch-size must be at least 1".into()));
    }
    if !(cfg.optimizer.lr > 0.0 && cfg.optimizer.lr.is_finite()) {
        return Err(Error::Config(format!(
            "--lr must be a positive number, got {}",
            cfg.optimizer.lr
        )));
    }
    Ok(())
}

/// The optimizer's slots (`optimizer/<slot>/<tensor>`) and the step count of a resumed checkpoint.
fn restore_optimizer(
    trainer: &mut Trainer,
    path: &Path,
    tensors: &Weights,
    meta: &RunMeta,
) -> Result<()> {
    let slot = |kind: &str| -> Result<Vec<Vec<f32>>> {
        trainer
            .model
            .params
            .iter()
            .map(|p| {
                let name = format!("optimizer/{kind}/{}", p.name);
                tensors.iter().find(|t| t.0 == name).map(|t| t.2.clone()).ok_or_else(|| Error::Checkpoint {
                    path: path.into(),
                    msg: format!("no tensor {name}: only checkpoints written by `clampnet train --save` can be resumed"),
                })
            })
            .collect()
    };
    let steps = RunMeta::required(path, "optimizer_steps", meta.optimizer_steps)?;
    let slots = trainer
        .optimizer_slot_names()
        .into_iter()
        .map(slot)
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&[Vec<f32>]> = slots.iter().map(|s| s.as_slice()).collect();
    trainer.set_optimizer_slots(&refs, steps)
}

/// The epochs of a run, from its start: train, evaluate, report, save.
fn epochs(a: &TrainArgs, run: &Run, trainer: &mut Trainer, ds: &Dataset) -> Result<Outcome> {
    let cfg = &run.cfg;
    // Ctrl-C: stop at the next chunk boundary, save, exit 130
    catch_ctrl_c();
    let mut report = Vec::new();
    let mut fit = Fit::new(run)?;
    for epoch in run.start.0..=cfg.epochs {
        let first = if epoch == run.start.0 { run.start.1 } else { 0 };
        let order = epoch_order(trainer.train_examples(), cfg.seed, epoch, cfg.shuffle);
        let started = std::time::Instant::now();
        let bar = progress_bar(a.quiet, trainer.steps_per_epoch(), epoch, cfg.epochs, first);
        // the trainer reads metrics once per 64 steps; the bar shows those ticks
        let stop = interrupted;
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
            save(&path, trainer, run, ds, (epoch - 1, stats.next_step), &fit)?;
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
        let val = trainer.validate()?;
        report = clampnet::report::restriction_report(&trainer.weights()?, &trainer.restrictions);
        let seconds = started.elapsed().as_secs_f64();
        let mut line = epoch_line(epoch, &stats, &test, seconds, &report);
        if let Some(v) = &val {
            line["val_loss"] = json!(v.loss);
            line["val_accuracy"] = json!(v.accuracy);
        }
        line["learning_rate"] = json!(trainer.optimizer.lr);
        write_epoch(a, epoch, run.resumed.is_some(), &line)?;
        if !a.quiet {
            let val_text = val.as_ref().map_or(String::new(), |v| {
                format!(" | val loss {:.4} accuracy {:.4}", v.loss, v.accuracy)
            });
            eprintln!(
                "epoch {epoch}/{}: loss {:.4} accuracy {:.4}{val_text} | test loss {:.4} accuracy {:.4} | {:.1} s ({:.1} s training, {:.0} images/s)",
                cfg.epochs, stats.train.loss, stats.train.accuracy, test.loss, test.accuracy, seconds,
                stats.train_seconds, stats.train.count as f64 / stats.train_seconds.max(1e-9)
            );
        }
        let stop = fit.on_epoch_end(a, trainer, epoch, &line)?;
        if let (Some(path), Some(n)) = (&a.save, run.save_every) {
            if epoch % n == 0 && epoch < cfg.epochs && !stop {
                save(path, trainer, run, ds, (epoch, 0), &fit)?;
                log::info!("saved {} after epoch {epoch}", path.display());
            }
        }
        if stop {
            break;
        }
    }
    fit.on_train_end(a, trainer)?;
    if !a.quiet && !report.is_empty() {
        eprint!(
            "restrictions after training:\n{}",
            clampnet::report::table(&report)
        );
    }
    if let Some(path) = &a.save {
        save(
            path,
            trainer,
            run,
            ds,
            (fit.last_epoch.unwrap_or(cfg.epochs), 0),
            &fit,
        )?;
        if !a.quiet {
            eprintln!("saved {}", path.display());
        }
    }
    Ok(Outcome::Done)
}

fn progress_bar(
    quiet: bool,
    steps: usize,
    epoch: usize,
    epochs: usize,
    at: usize,
) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(steps as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} steps | {msg} | {elapsed_precise} < {eta_precise}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    b.set_prefix(format!("{epoch}/{epochs}"));
    b.set_position(at as u64);
    b
}

/// The JSON line of an epoch.
fn epoch_line(
    epoch: usize,
    stats: &EpochStats,
    test: &PassMetrics,
    seconds: f64,
    report: &[clampnet::report::TensorStats],
) -> serde_json::Value {
    json!({
        "epoch": epoch,
        "train_loss": stats.train.loss,
        "train_accuracy": stats.train.accuracy,
        "test_loss": test.loss,
        "test_accuracy": test.accuracy,
        "seconds": seconds,
        "train_seconds": stats.train_seconds,
        "images_per_second": stats.train.count as f64 / stats.train_seconds.max(1e-9),
        "steps": stats.steps,
        "restrictions": report,
    })
}

/// An epoch's line on stdout (--json) and in the metrics log (--metrics).
fn write_epoch(a: &TrainArgs, epoch: usize, resumed: bool, line: &serde_json::Value) -> Result<()> {
    if a.json {
        println!("{line}");
    }
    if let Some(path) = &a.metrics {
        use std::io::Write;
        let append = epoch > 1 || resumed;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        writeln!(f, "{line}").map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Weights (Keras names), the optimizer's slots (`optimizer/<slot>/<name>`) and the run's settings
/// (`RunMeta`) at (`epoch` completed, `epoch_step` steps into the next), written atomically.
fn save(
    path: &Path,
    trainer: &Trainer,
    run: &Run,
    ds: &Dataset,
    (epoch, epoch_step): (usize, usize),
    fit: &Fit,
) -> Result<()> {
    let tensors = trainer.checkpoint_tensors()?;
    let cfg = &run.cfg;
    let meta = RunMeta {
        trained_with: Some(run.what.clone()),
        optimizer_steps: Some(trainer.step),
        epoch: Some(epoch),
        epoch_step: Some(epoch_step),
        epochs: Some(cfg.epochs),
        seed: Some(cfg.seed),
        batch_size: Some(cfg.batch_size),
        // the current rate (ReduceLROnPlateau may have lowered it)
        learning_rate: Some(trainer.optimizer.lr),
        initial_learning_rate: Some(run.initial_lr),
        init: run.init.clone(),
        shuffle: Some(cfg.shuffle),
        config_toml: None,
        keras_config: None,
        callbacks: fit.state(),
        validation_split: cfg.validation_split,
        class_weight: cfg.class_weight.as_ref().map(|pairs| {
            pairs
                .iter()
                .map(|(c, w)| format!("{c}:{w}"))
                .collect::<Vec<_>>()
                .join(",")
        }),
        preset: run.preset.map(|p| format!("{p:?}").to_lowercase()),
        limit_train: run.limit_train,
        limit_test: run.limit_test,
        class_names: ds.class_names.clone(),
    };
    let mut meta = meta;
    if let Some(s) = &run.source {
        s.to_meta(&mut meta);
    }
    for w in files::save_checkpoint(path, &tensors, &meta, run.source.as_ref())? {
        log::warn!("{}: {w}", path.display());
    }
    Ok(())
}

/// Keras' fit callbacks of a run (`[training.early_stopping]`, `[training.reduce_lr_on_plateau]`),
/// their state restored from a resumed checkpoint.
struct Fit {
    early_stopping: Option<EarlyStopping>,
    reduce_lr: Option<ReduceLrOnPlateau>,
    /// restore_best_weights: the best epoch's weights
    best_weights: Option<Vec<Vec<f32>>>,
    /// the epoch training stopped after, when early stopping stopped it
    last_epoch: Option<usize>,
    /// a missing monitored value was reported
    warned: bool,
}

impl Fit {
    fn new(run: &Run) -> Result<Self> {
        let mut early_stopping = run.cfg.early_stopping.clone();
        let mut reduce_lr = run.cfg.reduce_lr.clone();
        if let Some(text) = run.resumed.as_ref().and_then(|r| r.1.callbacks.as_ref()) {
            let state: CallbackState = serde_json::from_str(text).map_err(|_| {
                RunMeta::invalid(
                    run.resume_path
                        .as_deref()
                        .unwrap_or(Path::new("the checkpoint")),
                    "callbacks",
                )
            })?;
            if let (Some(e), Some(s)) = (early_stopping.as_mut(), state.early_stopping) {
                e.state = s;
            }
            if let (Some(r), Some(s)) = (reduce_lr.as_mut(), state.reduce_lr) {
                r.state = s;
            }
        }
        Ok(Fit {
            early_stopping,
            reduce_lr,
            best_weights: None,
            last_epoch: None,
            warned: false,
        })
    }

    /// The state a checkpoint keeps (None without callbacks).
    fn state(&self) -> Option<String> {
        if self.early_stopping.is_none() && self.reduce_lr.is_none() {
            return None;
        }
        let s = CallbackState {
            early_stopping: self.early_stopping.as_ref().map(|e| e.state.clone()),
            reduce_lr: self.reduce_lr.as_ref().map(|r| r.state.clone()),
        };
        serde_json::to_string(&s).ok()
    }

    /// After epoch `epoch` (1-based) with its JSON line: the callbacks in order; true: stop training.
    fn on_epoch_end(
        &mut self,
        a: &TrainArgs,
        trainer: &mut Trainer,
        epoch: usize,
        line: &serde_json::Value,
    ) -> Result<bool> {
        let logs = |name: &str| -> Option<f64> {
            let key = match name {
                "loss" => "train_loss",
                "accuracy" => "train_accuracy",
                other => other,
            };
            line.get(key).and_then(|v| v.as_f64())
        };
        let mut missing = Vec::new();
        let mut stop = false;
        if let Some(e) = self.early_stopping.as_mut() {
            let current = logs(&e.monitor.name);
            if current.is_none() {
                missing.push(e.monitor.name.clone());
            }
            let d = e.on_epoch_end(epoch - 1, current, self.best_weights.is_some());
            if d.save_weights {
                let w = trainer.weights()?;
                self.best_weights = Some(w.into_iter().map(|t| t.2).collect());
            }
            if d.stop {
                stop = true;
                self.last_epoch = Some(epoch);
                if !a.quiet {
                    eprintln!(
                        "early stopping after epoch {epoch}: {} did not improve for {} epochs",
                        e.monitor.name, e.patience
                    );
                }
            }
        }
        if let Some(r) = self.reduce_lr.as_mut() {
            let current = logs(&r.monitor.name);
            if current.is_none() {
                missing.push(r.monitor.name.clone());
            }
            if let Some(lr) = r.on_epoch_end(epoch - 1, current, trainer.optimizer.lr) {
                trainer.set_learning_rate(lr)?;
                if !a.quiet {
                    eprintln!("epoch {epoch}: ReduceLROnPlateau reducing learning rate to {lr}");
                }
            }
        }
        if !missing.is_empty() && !self.warned {
            self.warned = true;
            log::warn!(
                "{} not logged: the callbacks that monitor it do nothing (as in Keras); val_* needs --validation-split",
                missing.join(", ")
            );
        }
        Ok(stop)
    }

    /// EarlyStopping's restore_best_weights, at the end of training (as Keras' on_train_end).
    fn on_train_end(&mut self, a: &TrainArgs, trainer: &mut Trainer) -> Result<()> {
        if let (Some(e), Some(w)) = (&self.early_stopping, &self.best_weights) {
            if e.restore_best_weights {
                trainer.set_weights(w)?;
                if !a.quiet {
                    eprintln!(
                        "restored the weights of the best epoch: {}",
                        e.state.best_epoch + 1
                    );
                }
            }
        }
        Ok(())
    }
}
