//! `clampnet sweep plan|run|slurm|report`: a grid of training runs (`clampnet::sweep`), each trial a
//! `train` of its own config and seed in its own folder, sharded over processes or a Slurm array.
//!
//! A trial is `train --config DIR/trials/<id>/config.toml --seed S --save .../checkpoint.safetensors
//! --auto-resume --save-every 1 --metrics .../metrics.jsonl` with the sweep's shared flags, run in this
//! process on one device: it equals a solo `clampnet train` of that command line, bit for bit. When
//! it ends, `result.json` is written atomically; a failure writes `failed.json`. A rerun skips the
//! finished trials, resumes the interrupted ones from their last epoch and retries the failed ones.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::train::{self, Outcome, Shared, TrainArgs};
use super::GpuArgs;
use clampnet::checkpoint::write_atomic;
use clampnet::gpu::Context;
use clampnet::optim::constraints::compatible;
use clampnet::restrict::Restrictions;
use clampnet::sweep::{self, trial_dir, Grid, Shard, Trial};
use clampnet::{Error, Result};

#[derive(Subcommand)]
pub enum SweepCommand {
    /// Print the trials of a grid in order: index, id, shard, seed, settings
    Plan(PlanArgs),
    /// Run the trials of a grid (this shard's), skipping finished ones and resuming interrupted ones
    Run(RunArgs),
    /// Write a Slurm array script (DIR/sweep.sbatch) whose tasks run the grid's shards
    Slurm(SlurmArgs),
    /// Summarise a sweep: Markdown report, CSV/JSONL of all trials, plots, missing and failed trials
    Report(ReportArgs),
}

#[derive(Args)]
pub struct PlanArgs {
    /// The grid file (TOML: base, seeds, [axes], [[trials]])
    grid: PathBuf,
    /// Show each trial's shard out of N
    #[arg(long)]
    shards: Option<usize>,
}

/// The flags of `train` that are not settings of the model: the same for every trial.
#[derive(Args, Clone)]
pub struct TrialFlags {
    /// Data folder (as train's --data)
    #[arg(long)]
    data: Option<PathBuf>,
    /// Use only the first N training examples
    #[arg(long, allow_negative_numbers = true)]
    limit_train: Option<i64>,
    /// Use only the first N test examples
    #[arg(long, allow_negative_numbers = true)]
    limit_test: Option<i64>,
    /// Epochs per trial (default: the base config's)
    #[arg(long, allow_negative_numbers = true)]
    epochs: Option<i64>,
    /// Batch size of every trial (default: the base config's)
    #[arg(long, allow_negative_numbers = true)]
    batch_size: Option<i64>,
    #[command(flatten)]
    gpu: GpuArgs,
}

impl TrialFlags {
    /// The counts checked once, before any trial (each would fail on them alone).
    fn check(&self) -> Result<()> {
        super::count("--limit-train", self.limit_train, 1)?;
        super::count("--limit-test", self.limit_test, 1)?;
        super::count("--epochs", self.epochs, 1)?;
        super::count("--batch-size", self.batch_size, 1)?;
        Ok(())
    }

    /// As `train` flags; absolute paths, so that any folder can run them.
    fn train_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut put = |flag: &str, value: Option<String>| {
            if let Some(x) = value {
                v.push(flag.to_string());
                v.push(x);
            }
        };
        put("--data", self.data.as_deref().map(absolute));
        put("--limit-train", self.limit_train.map(|n| n.to_string()));
        put("--limit-test", self.limit_test.map(|n| n.to_string()));
        put("--epochs", self.epochs.map(|n| n.to_string()));
        put("--batch-size", self.batch_size.map(|n| n.to_string()));
        put("--backend", self.gpu.backend.clone());
        put("--adapter", self.gpu.adapter.clone());
        if self.gpu.kernel_set != "auto" {
            put("--kernel-set", Some(self.gpu.kernel_set.clone()));
        }
        v
    }
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

#[derive(Args)]
pub struct RunArgs {
    /// The grid file
    grid: PathBuf,
    /// The sweep's folder: sweep.json, trials/<id>/{config, checkpoint, metrics, result}
    #[arg(long)]
    out: PathBuf,
    /// Run shard I of N (trial t goes to shard t mod N); default: SLURM_ARRAY_TASK_ID, else
    /// JOB_COMPLETION_INDEX, else all trials
    #[arg(long)]
    shard: Option<String>,
    /// The number of shards, N, for SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX as the shard index
    /// (without it, a Slurm task's place in its array, of SLURM_ARRAY_TASK_COUNT)
    #[arg(long)]
    shards: Option<usize>,
    /// Train this many of the shard's trials at once, each in a process of its own on the same device
    /// (a software adapter or a GPU that one small trial leaves partly idle)
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// (internal) one of --jobs' processes: J/N takes every N-th of the shard's trials from the J-th
    #[arg(long, hide = true)]
    job: Option<String>,
    /// Train up to K trials that share an architecture, batch size and data as the K models of one
    /// step: one set of dispatches steps them all, and each trial's result equals its solo run. Default:
    /// as many as the adapter's binding limits allow, at most 32; 1 trains each trial on its own
    #[arg(long)]
    models_per_pass: Option<usize>,
    #[command(flatten)]
    flags: TrialFlags,
}

#[derive(Args)]
pub struct SlurmArgs {
    /// The grid file
    grid: PathBuf,
    /// The sweep's folder (the script is written to DIR/sweep.sbatch, task logs to DIR/logs/)
    #[arg(long)]
    out: PathBuf,
    /// Array tasks (shards) [default: the number of trials, at most 16]
    #[arg(long)]
    array_size: Option<usize>,
    /// Run at most this many tasks at once (the array's %K throttle)
    #[arg(long)]
    throttle: Option<usize>,
    /// Time limit per task (sbatch --time)
    #[arg(long, default_value = "01:00:00")]
    time: String,
    /// GPUs per task (sbatch --gres=gpu:N); 0: none
    #[arg(long, default_value_t = 0)]
    gpus_per_task: usize,
    /// CPUs per task (sbatch --cpus-per-task)
    #[arg(long)]
    cpus_per_task: Option<usize>,
    /// Partition (sbatch --partition)
    #[arg(long)]
    partition: Option<String>,
    #[command(flatten)]
    flags: TrialFlags,
}

#[derive(Args)]
pub struct ReportArgs {
    /// The sweep's folder (--out of `sweep run`)
    dir: PathBuf,
}

pub fn run(c: SweepCommand) -> Result<Outcome> {
    match c {
        SweepCommand::Plan(a) => plan(a).map(|_| Outcome::Done),
        SweepCommand::Run(a) => run_trials(a),
        SweepCommand::Slurm(a) => slurm(a).map(|_| Outcome::Done),
        SweepCommand::Report(a) => report(a).map(|_| Outcome::Done),
    }
}

fn plan(a: PlanArgs) -> Result<()> {
    let grid = Grid::load(&a.grid)?;
    let configs = grid.trials.len() / grid.seeds.len();
    println!(
        "{} trials: {configs} configurations x {} seeds, base {}",
        grid.trials.len(),
        grid.seeds.len(),
        grid.base_path.display()
    );
    for t in &grid.trials {
        let shard = a
            .shards
            .map_or(String::new(), |n| format!("  shard {}", t.index % n.max(1)));
        println!(
            "{:>4}  {}{shard}  seed {}  {}",
            t.index, t.id, t.seed, t.label
        );
    }
    Ok(())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// The ids a scheduler gave this process (Slurm, Kubernetes), for the result files.
fn scheduler_ids() -> Value {
    let var = |k: &str| std::env::var(k).ok();
    if let Some(job) = var("SLURM_JOB_ID") {
        return json!({
            "job_id": job,
            "array_job_id": var("SLURM_ARRAY_JOB_ID"),
            "array_task_id": var("SLURM_ARRAY_TASK_ID"),
        });
    }
    match var("JOB_COMPLETION_INDEX") {
        Some(i) => json!({ "job_completion_index": i }),
        None => Value::Null,
    }
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    write_atomic(path, text.as_bytes())
}

/// A hash of the base config, kept in sweep.json: a folder holds the trials of one base.
fn base_fingerprint(grid: &Grid) -> String {
    let text = match &grid.base {
        sweep::Base::Toml(t) => serde_json::to_string(t).unwrap_or_default(),
        sweep::Base::Keras(j, _) => j.to_string(),
    };
    sweep::config_id(
        &[("base".to_string(), Value::String(text))]
            .into_iter()
            .collect(),
    )
}

/// DIR/sweep.json: the grid's trials (written by every shard, the same content, atomically).
fn write_sweep_json(grid: &Grid, out: &Path, shards: Option<usize>) -> Result<()> {
    std::fs::create_dir_all(out.join("trials")).map_err(|e| Error::io(out, e))?;
    let path = out.join("sweep.json");
    let fingerprint = base_fingerprint(grid);
    let mut shards = shards;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let old: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // a local rerun keeps the Slurm array's shard count, for the report's resubmission spec
        shards = shards.or_else(|| old["shards"].as_u64().map(|n| n as usize));
        if let Some(f) = old.get("base_fingerprint").and_then(|f| f.as_str()) {
            if f != fingerprint {
                return Err(Error::Config(format!(
                    "{} holds a sweep of another base config than {}'s ({}): give --out another folder",
                    out.display(),
                    grid.path.display(),
                    grid.base_path.display()
                )));
            }
        }
    }
    let mut v = grid.to_json(shards);
    v["base_fingerprint"] = json!(fingerprint);
    write_json(&path, &v)
}

fn run_trials(a: RunArgs) -> Result<Outcome> {
    a.flags.check()?;
    if a.jobs == 0 {
        return Err(Error::Config("--jobs must be at least 1".into()));
    }
    if a.models_per_pass == Some(0) {
        return Err(Error::Config("--models-per-pass must be at least 1".into()));
    }
    let grid = Grid::load(&a.grid)?;
    let shard = Shard::resolve(a.shard.as_deref(), a.shards, &|k| std::env::var(k).ok())?;
    write_sweep_json(&grid, &a.out, a.shards.filter(|_| shard.count > 1))?;
    let flags = a.flags.train_args();
    let mut mine: Vec<&Trial> = grid.trials.iter().filter(|t| shard.owns(t)).collect();
    if a.jobs > 1 && a.job.is_none() {
        return run_jobs(&a, &mine);
    }
    if let Some(job) = &a.job {
        let (j, n) = job
            .split_once('/')
            .and_then(|(j, n)| Some((j.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
            .filter(|(j, n)| j < n)
            .ok_or_else(|| Error::Config(format!("--job {job}: give J/N")))?;
        mine = mine.into_iter().skip(j).step_by(n).collect();
    }
    eprintln!(
        "sweep {}: {} of {} trials in shard {}/{}",
        grid.path.display(),
        mine.len(),
        grid.trials.len(),
        shard.index,
        shard.count
    );
    let (mut done, mut skipped, mut failed) = (0, 0, Vec::new());
    let mut pending: Vec<(usize, &Trial)> = Vec::new();
    for (n, t) in mine.iter().enumerate() {
        let dir = trial_dir(&a.out, t);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        if finished(&dir.join("result.json"), &flags) {
            skipped += 1;
            continue;
        }
        let _ = std::fs::remove_file(dir.join("failed.json"));
        pending.push((n, *t));
    }
    let shared = match pending.is_empty() {
        true => None,
        false => Some(Shared::new(Context::new(&a.flags.gpu.options())?)),
    };
    let groups = match &shared {
        Some(sh) => plan_groups(
            &grid,
            &pending,
            (&a.out, &flags),
            a.models_per_pass,
            &sh.ctx,
        )?,
        None => Vec::new(),
    };
    for group in groups {
        let sh = shared.as_ref().expect("opened for the pending trials");
        let started = std::time::Instant::now();
        let (outcomes, k) = run_group(&grid, &group, (&a.out, &flags), sh);
        let seconds = started.elapsed().as_secs_f64();
        let mut interrupted = false;
        for ((n, t), outcome) in group.iter().zip(outcomes) {
            let dir = trial_dir(&a.out, t);
            let head = format!("trial {}/{} {} ({})", n + 1, mine.len(), t.id, t.label);
            let together = if k > 1 {
                format!(", {k} trials per pass")
            } else {
                String::new()
            };
            match outcome {
                Ok(Outcome::Done) => {
                    let mut v = result(t, &dir, &flags, &sh.ctx, seconds)?;
                    v["models_per_pass"] = json!(k);
                    write_json(&dir.join("result.json"), &v)?;
                    done += 1;
                    eprintln!(
                        "{head}: test accuracy {:.4} after {} epochs, {seconds:.1} s{together}",
                        v["test_accuracy"].as_f64().unwrap_or(f64::NAN),
                        v["epochs"].as_array().map_or(0, |e| e.len())
                    );
                }
                Ok(Outcome::Interrupted) => {
                    eprintln!("{head}: interrupted; the same command resumes the sweep");
                    interrupted = true;
                }
                Err(e) => {
                    eprintln!("{head}: failed: {e}");
                    write_json(
                        &dir.join("failed.json"),
                        &json!({
                            "id": t.id, "index": t.index, "label": t.label, "seed": t.seed,
                            "error": e.to_string(), "host": host(), "scheduler": scheduler_ids(),
                            "version": env!("CARGO_PKG_VERSION"),
                        }),
                    )?;
                    failed.push(t.id.clone());
                }
            }
        }
        if interrupted {
            return Ok(Outcome::Interrupted);
        }
    }
    eprintln!(
        "sweep: {done} trials trained, {skipped} already finished, {} failed; results in {}",
        failed.len(),
        a.out.join("trials").display()
    );
    if !failed.is_empty() {
        return Err(failed_error(&a.out, &failed));
    }
    Ok(Outcome::Done)
}

/// The pending trials (place in the shard, trial) in groups that train together: trials whose runs
/// can share a step (`train::group_key`), in order, at most `models_per_pass` (default: what the
/// adapter allows, at most 32) to a group. A trial whose key cannot be computed (a config error)
/// goes alone, to fail with its own error.
fn plan_groups<'g>(
    grid: &Grid,
    pending: &[(usize, &'g Trial)],
    (out, flags): (&Path, &[String]),
    models_per_pass: Option<usize>,
    ctx: &Context,
) -> Result<Vec<Vec<(usize, &'g Trial)>>> {
    // open groups: (key, models per pass, trials with their restrictions)
    type Open<'t> = (String, usize, Vec<(usize, &'t Trial, Restrictions)>);
    let mut groups: Vec<Open<'g>> = Vec::new();
    for (i, &(n, t)) in pending.iter().enumerate() {
        let dir = trial_dir(out, t);
        let args = trial_train_args(grid, t, &dir, flags)
            .ok()
            .and_then(|args| TrainArgs::parse_from(&args).ok());
        let keyed = args.as_ref().and_then(|a| {
            let (key, restrictions) = train::group_key(a).ok()?;
            let k = match models_per_pass {
                Some(k) => k,
                None => train::max_models(ctx, a).ok()?.min(32),
            };
            Some((key, k, restrictions))
        });
        let (key, k, restrictions) =
            keyed.unwrap_or_else(|| (format!("alone {i}"), 1, Restrictions::default()));
        // the first open group of the same key with room, whose constraints agree with this trial's
        let fits = |(gk, gk_models, members): &Open| {
            *gk == key
                && members.len() < *gk_models
                && restrictions.tensors.iter().all(|(name, r)| {
                    members.iter().all(|(_, _, other)| {
                        let o = other
                            .tensors
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, t)| t);
                        let empty = Vec::new();
                        let (oc, oe) =
                            o.map_or((&empty, &empty), |t| (&t.constraints, &t.epoch_constraints));
                        compatible([&r.constraints[..], &oc[..]])
                            && compatible([&r.epoch_constraints[..], &oe[..]])
                    })
                })
        };
        match groups.iter_mut().find(|g| fits(g)) {
            Some((_, _, members)) => members.push((n, t, restrictions)),
            None => groups.push((key, k.max(1), vec![(n, t, restrictions)])),
        }
    }
    Ok(groups
        .into_iter()
        .map(|(_, _, members)| members.into_iter().map(|(n, t, _)| (n, t)).collect())
        .collect())
}

/// Train the trials of `group`: one alone, or several as the models of one step, each on a thread
/// of its own (`clampnet::group`). Every trial's outcome, in order, and the models that trained
/// together (1 where the step could not be built and each trained alone).
fn run_group(
    grid: &Grid,
    group: &[(usize, &Trial)],
    (out, flags): (&Path, &[String]),
    shared: &Shared,
) -> (Vec<Result<Outcome>>, usize) {
    if let [(_, t)] = group {
        let outcome = run_trial(grid, t, &trial_dir(out, t), flags, shared, None);
        return (vec![outcome], 1);
    }
    let g = clampnet::group::Group::new(group.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .iter()
            .enumerate()
            .map(|(m, (_, t))| {
                let g = g.clone();
                s.spawn(move || {
                    let dir = trial_dir(out, t);
                    let r = run_trial(grid, t, &dir, flags, shared, Some((g.clone(), m)));
                    // done or failed: the others no longer wait for this one
                    g.leave(m);
                    r
                })
            })
            .collect();
        let outcomes = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Config("a trial's thread panicked".into())))
            })
            .collect();
        (outcomes, g.models())
    })
}

/// `--jobs N`: this command again as N processes, each taking every N-th of the shard's trials; the
/// trials that failed are named from their `failed.json`.
fn run_jobs(a: &RunArgs, mine: &[&Trial]) -> Result<Outcome> {
    let exe = std::env::current_exe().map_err(|e| Error::io("clampnet", e))?;
    let mut args: Vec<String> = Vec::new();
    let mut skip = false;
    for arg in std::env::args().skip(1) {
        if skip {
            skip = false;
        } else if arg == "--jobs" {
            skip = true;
        } else if !arg.starts_with("--jobs=") {
            args.push(arg);
        }
    }
    eprintln!("{} trials in {} processes at once", mine.len(), a.jobs);
    let children = (0..a.jobs)
        .map(|j| {
            std::process::Command::new(&exe)
                .args(&args)
                .arg("--job")
                .arg(format!("{j}/{}", a.jobs))
                .spawn()
                .map_err(|e| Error::io(&exe, e))
        })
        .collect::<Vec<_>>();
    let mut interrupted = false;
    for c in children {
        let status = c?.wait().map_err(|e| Error::io(&exe, e))?;
        interrupted |= status.code() == Some(130);
    }
    if interrupted {
        return Ok(Outcome::Interrupted);
    }
    let failed: Vec<&str> = mine
        .iter()
        .filter(|t| trial_dir(&a.out, t).join("failed.json").exists())
        .map(|t| t.id.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(failed_error(&a.out, &failed));
    }
    Ok(Outcome::Done)
}

/// The error of a sweep with failed trials, naming each.
fn failed_error(out: &Path, failed: &[impl AsRef<str>]) -> Error {
    let ids: Vec<&str> = failed.iter().map(|f| f.as_ref()).collect();
    Error::Config(format!(
        "{} trial{} failed: {} (each has its error in {}/trials/<id>/failed.json); the same command retries them",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
        ids.join(", "),
        out.display()
    ))
}

/// A trial is finished when its result exists and was trained with the same shared flags.
fn finished(result: &Path, flags: &[String]) -> bool {
    let Ok(text) = std::fs::read_to_string(result) else {
        return false;
    };
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("flags").cloned())
        == Some(json!(flags))
}

/// The `train` flags of trial `t` (its config file written into `dir` first).
pub fn trial_train_args(
    grid: &Grid,
    t: &Trial,
    dir: &Path,
    flags: &[String],
) -> Result<Vec<String>> {
    let (text, ext) = grid.trial_config(t)?;
    let config = dir.join(format!("config.{ext}"));
    if std::fs::read_to_string(&config).ok().as_deref() != Some(text.as_str()) {
        write_atomic(&config, text.as_bytes())?;
    }
    let path = |name: &str| absolute(&dir.join(name));
    let mut args: Vec<String> = [
        "--config",
        &absolute(&config),
        "--seed",
        &t.seed.to_string(),
        "--save",
        &path("checkpoint.safetensors"),
        "--auto-resume",
        "--save-every",
        "1",
        "--metrics",
        &path("metrics.jsonl"),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(init) = grid.init_weights() {
        args.extend(["--init".to_string(), absolute(init)]);
    }
    args.extend_from_slice(flags);
    Ok(args)
}

fn run_trial(
    grid: &Grid,
    t: &Trial,
    dir: &Path,
    flags: &[String],
    shared: &Shared,
    group: Option<(std::sync::Arc<clampnet::group::Group>, usize)>,
) -> Result<Outcome> {
    let args = trial_train_args(grid, t, dir, flags)?;
    std::fs::write(
        dir.join("command.txt"),
        format!("clampnet train {}\n", args.join(" ")),
    )
    .map_err(|e| Error::io(dir, e))?;
    let a =
        TrainArgs::parse_from(&args).map_err(|e| Error::Config(format!("trial {}: {e}", t.id)))?;
    // a panic in one trial (a driver's, say) fails that trial, not the sweep
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train::run_in_group(a, Some(shared), group)
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(Error::Config(format!("trial {} panicked: {msg}", t.id)))
    })
}

/// A finished trial's result.json.
fn result(t: &Trial, dir: &Path, flags: &[String], ctx: &Context, seconds: f64) -> Result<Value> {
    let metrics = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| Error::io(&metrics, e))?;
    let epochs = sweep::read_epochs(&text);
    let last = epochs.last().cloned().unwrap_or(Value::Null);
    // every weight tensor's statistics, from the trial's checkpoint: the restricted ones as the
    // restriction report gives them, the others too, so that a baseline can be compared with them
    let (weights, _) = clampnet::checkpoint::load(&dir.join("checkpoint.safetensors"))?;
    let restricted = last["restrictions"].as_array().cloned().unwrap_or_default();
    let tensors: Vec<Value> = weights
        .iter()
        .filter(|(name, _, _)| !name.starts_with("optimizer/"))
        .map(|(name, shape, w)| {
            restricted
                .iter()
                .find(|r| r["name"].as_str() == Some(name.as_str()))
                .cloned()
                .unwrap_or_else(|| json!(clampnet::report::tensor_stats(name, shape, w)))
        })
        .collect();
    Ok(json!({
        "id": t.id,
        "config_id": t.config_id,
        "index": t.index,
        "label": t.label,
        "settings": t.settings,
        "seed": t.seed,
        "status": "done",
        "flags": flags,
        "test_accuracy": last["test_accuracy"],
        "test_loss": last["test_loss"],
        "train_loss": last["train_loss"],
        "train_accuracy": last["train_accuracy"],
        "epochs": epochs,
        "restrictions": last["restrictions"],
        "tensors": tensors,
        "adapter": clampnet::gpu::describe(&ctx.info),
        "kernel_set": ctx.kernel_set.name(),
        "version": env!("CARGO_PKG_VERSION"),
        "host": host(),
        "scheduler": scheduler_ids(),
        "seconds": seconds,
        "train_seconds": epochs.iter().filter_map(|e| e["seconds"].as_f64()).sum::<f64>(),
    }))
}

fn slurm(a: SlurmArgs) -> Result<()> {
    a.flags.check()?;
    let grid = Grid::load(&a.grid)?;
    let n = a
        .array_size
        .unwrap_or_else(|| grid.trials.len().min(16))
        .max(1);
    write_sweep_json(&grid, &a.out, Some(n))?;
    let logs = a.out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("clampnet", e))?;
    let throttle = a.throttle.map_or(String::new(), |k| format!("%{k}"));
    let mut s = String::from("#!/bin/bash\n");
    s += &format!(
        "# clampnet sweep: {} trials of {} in {n} array tasks; task I runs trials I, I+{n}, ...\n",
        grid.trials.len(),
        grid.path.display()
    );
    s += "# Resubmit only some tasks with `sbatch --array=1,3 THIS_FILE` (`clampnet sweep report` prints the list).\n";
    s += "#SBATCH --job-name=clampnet-sweep\n";
    s += &format!("#SBATCH --array=0-{}{throttle}\n", n - 1);
    s += &format!("#SBATCH --time={}\n", a.time);
    s += &format!("#SBATCH --output={}/%A_%a.out\n", absolute(&logs));
    s += "#SBATCH --ntasks=1\n";
    if let Some(c) = a.cpus_per_task {
        s += &format!("#SBATCH --cpus-per-task={c}\n");
    }
    if let Some(p) = &a.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if a.gpus_per_task > 0 {
        s += &format!("#SBATCH --gres=gpu:{}\n", a.gpus_per_task);
        s += "# Vulkan ignores CUDA_VISIBLE_DEVICES: with ConstrainDevices=yes in cgroup.conf each task sees only\n";
        s += "# its own GPU; otherwise pick one per task with --adapter or WGPU_ADAPTER_NAME (see the README).\n";
    }
    s += "set -euo pipefail\n";
    let mut cmd = vec![
        absolute(&exe),
        "sweep".into(),
        "run".into(),
        absolute(&a.grid),
        "--out".into(),
        absolute(&a.out),
        "--shards".into(),
        n.to_string(),
    ];
    cmd.extend(a.flags.train_args());
    s += &format!(
        "exec {}\n",
        cmd.iter()
            .map(|c| shell_quote(c))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let path = a.out.join("sweep.sbatch");
    write_atomic(&path, s.as_bytes())?;
    println!("{}", path.display());
    eprintln!(
        "wrote {}: {} trials in {n} array tasks; submit with `sbatch {}` (add --wait to block until it ends), then `clampnet sweep report {}`",
        path.display(),
        grid.trials.len(),
        path.display(),
        a.out.display()
    );
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+%@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn report(a: ReportArgs) -> Result<()> {
    let s = clampnet::sweep::report::write(&a.dir)?;
    eprintln!(
        "{} trials done, {} failed, {} missing",
        s.done,
        s.failed.len(),
        s.missing.len()
    );
    for f in &s.files {
        println!("{}", f.display());
    }
    if let Some(r) = &s.resubmit {
        eprintln!("resubmit the failed and missing trials: {r}");
    } else if !s.failed.is_empty() || !s.missing.is_empty() {
        eprintln!("rerun `clampnet sweep run` with the same grid and --out to finish them");
    }
    Ok(())
}
