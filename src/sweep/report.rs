//! `clampnet sweep report DIR`: the summary of a restriction sweep, written to `DIR/report/`.
//!
//! It reads the plan (`DIR/sweep.json`) and each trial's outcome (`DIR/trials/<id>/result.json`, or
//! `failed.json`), and writes:
//! - `report.md`: the counts, one row per configuration (mean ± sample std of the test accuracy over its
//!   seeds, the mean test loss, the exact-zero fraction and filter-norm range of each restricted tensor),
//!   sorted by mean test accuracy, the Pareto front of accuracy against sparsity, the plots, the failed
//!   and missing trials and how to resubmit them;
//! - `configs.csv`: the configuration table; `trials.csv`: one row per trial of the plan;
//!   `trials.jsonl`: every finished trial's `result.json`, one per line;
//! - `accuracy_vs_zero_fraction.png`, `accuracy_vs_filter_norm.png`, `learning_curves.png`.
//!
//! `report.md` and `configs.csv` depend only on the trials' settings and metrics (no times, hosts,
//! adapters or Slurm ids), so the same sweep run locally or on Slurm reports byte for byte the same.
//! Every file is written atomically. A malformed trial file never stops the report: its trial is
//! listed as failed, with the reason.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};

/// What [`write`] found and wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// trials with a result
    pub done: usize,
    /// ids of the failed trials (a `failed.json`, or a `result.json` that is not a result), in plan order
    pub failed: Vec<String>,
    /// ids of the trials with neither file, in plan order
    pub missing: Vec<String>,
    /// the Slurm array indices owning the failed and missing trials, as `--array=0,2-3`; `None` when
    /// nothing is to be redone or `sweep.json` does not know its shard count
    pub resubmit: Option<String>,
    /// the files written, in `DIR/report/`
    pub files: Vec<PathBuf>,
}

/// Read `DIR/sweep.json` and the trials' outcomes, write the report into `DIR/report/`.
pub fn write(dir: &Path) -> Result<Summary> {
    let sweep = read_sweep(dir)?;
    let outcomes: Vec<Outcome> = sweep.trials.iter().map(|t| read_trial(dir, t)).collect();
    let trials: Vec<(&Trial, &Outcome)> = sweep.trials.iter().zip(&outcomes).collect();
    let done: Vec<(&Trial, &Done)> = trials
        .iter()
        .filter_map(|&(t, o)| match o {
            Outcome::Done(d) => Some((t, &**d)),
            _ => None,
        })
        .collect();
    let ids = |want: fn(&Outcome) -> bool| -> Vec<String> {
        trials
            .iter()
            .filter(|(_, o)| want(o))
            .map(|(t, _)| t.id.clone())
            .collect()
    };
    let failed = ids(|o| matches!(o, Outcome::Failed(_)));
    let missing = ids(|o| matches!(o, Outcome::Missing));
    let redo: Vec<usize> = trials
        .iter()
        .filter(|(_, o)| !matches!(o, Outcome::Done(_)))
        .map(|(t, _)| t.index)
        .collect();
    let resubmit = match sweep.shards {
        Some(n) if !redo.is_empty() => Some(format!(
            "--array={}",
            super::array_spec(&redo.iter().map(|i| i % n).collect::<Vec<_>>())
        )),
        _ => None,
    };

    // the tensor columns: every tensor some trial restricts
    let names: Vec<String> = done
        .iter()
        .flat_map(|(_, d)| d.tensors.iter().filter(|t| t.restricted))
        .map(|t| t.name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let configs = configs(&done, &names);

    let out = dir.join("report");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let file = |name: &str| out.join(name);

    let mut jsonl = String::new();
    for (_, d) in &done {
        jsonl.push_str(&d.json.to_string());
        jsonl.push('\n');
    }
    write_atomic(&file("trials.jsonl"), jsonl.as_bytes())?;
    write_atomic(&file("trials.csv"), trials_csv(&trials, &names).as_bytes())?;
    write_atomic(
        &file("configs.csv"),
        configs_csv(&configs, &names).as_bytes(),
    )?;

    let mut plots = Vec::new();
    for (name, draw) in [
        (PLOT_ZEROS, plot_zeros as PlotFn),
        (PLOT_NORMS, plot_norms),
        (PLOT_CURVES, plot_curves),
    ] {
        let path = file(name);
        if done.is_empty() {
            // no stale picture of an earlier report may stay beside this one
            let _ = std::fs::remove_file(&path);
        } else {
            render(&path, |root| draw(root, &done, &configs))?;
            plots.push(path);
        }
    }

    let md = report_md(&ReportInput {
        dir,
        sweep: &sweep,
        trials: &trials,
        done: done.len(),
        names: &names,
        configs: &configs,
        redo: &redo,
        resubmit: resubmit.as_deref(),
    });
    write_atomic(&file("report.md"), md.as_bytes())?;

    let mut files = ["report.md", "trials.csv", "trials.jsonl", "configs.csv"]
        .map(file)
        .to_vec();
    files.extend(plots);
    Ok(Summary {
        done: done.len(),
        failed,
        missing,
        resubmit,
        files,
    })
}

// ---------------------------------------------------------------------------------------------------
// reading

/// The plan: `sweep.json`.
struct Sweep {
    grid: Option<String>,
    shards: Option<usize>,
    /// in index order
    trials: Vec<Trial>,
}

/// One trial of the plan.
struct Trial {
    index: usize,
    id: String,
    config_id: String,
    label: String,
    /// as written in the plan (a number, usually)
    seed: String,
}

enum Outcome {
    Done(Box<Done>),
    /// the reason
    Failed(String),
    Missing,
}

/// A finished trial: its `result.json` and what the report uses of it.
struct Done {
    json: Value,
    epochs: usize,
    /// (epoch, test accuracy), in file order
    curve: Vec<(i64, f64)>,
    test_accuracy: f64,
    test_loss: Option<f64>,
    train_loss: Option<f64>,
    /// the tensors after the last epoch
    tensors: Vec<Tensor>,
    seconds: Option<f64>,
    host: Option<String>,
}

/// The statistics of one tensor that the report uses.
struct Tensor {
    name: String,
    zero_fraction: Option<f64>,
    norm_min: Option<f64>,
    norm_max: Option<f64>,
    /// a regularizer or constraint applies to it
    restricted: bool,
}

impl Done {
    fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The mean exact-zero fraction of the restricted tensors (0 without any).
    fn sparsity(&self) -> f64 {
        let z: Vec<f64> = self
            .tensors
            .iter()
            .filter(|t| t.restricted)
            .filter_map(|t| t.zero_fraction)
            .collect();
        mean(&z).unwrap_or(0.0)
    }

    /// The largest filter norm of the restricted tensors, or of all tensors when none restricted has one.
    fn max_norm(&self) -> Option<f64> {
        let max = |restricted_only: bool| {
            self.tensors
                .iter()
                .filter(|t| t.restricted || !restricted_only)
                .filter_map(|t| t.norm_max)
                .reduce(f64::max)
        };
        max(true).or_else(|| max(false))
    }
}

fn read_sweep(dir: &Path) -> Result<Sweep> {
    let path = dir.join("sweep.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Config(format!(
                "{} not found: is {} the --out of a `clampnet sweep run`?",
                path.display(),
                dir.display()
            )))
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let bad = |msg: String| {
        Error::Config(format!(
            "{}: {msg}; write it again with `clampnet sweep run GRID --out {}` (finished trials are kept)",
            path.display(),
            dir.display()
        ))
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let list = v
        .get("trials")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"trials\" list".into()))?;
    let shards = match v.get("shards") {
        None | Some(Value::Null) => None,
        Some(s) => match s.as_u64() {
            Some(n) if n >= 1 => Some(n as usize),
            _ => return Err(bad(format!("\"shards\" is {s}, not a count of 1 or more"))),
        },
    };
    let mut trials = Vec::with_capacity(list.len());
    let mut seen = HashSet::new();
    for (i, t) in list.iter().enumerate() {
        let id = t
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("trial {i} has no \"id\"")))?;
        if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\\']) {
            return Err(bad(format!(
                "trial {i} has the id {id:?}, not a folder name"
            )));
        }
        if !seen.insert(id) {
            return Err(bad(format!("the trial {id} is listed twice")));
        }
        let config_id = t.get("config_id").and_then(Value::as_str).unwrap_or(id);
        trials.push(Trial {
            index: t
                .get("index")
                .and_then(Value::as_u64)
                .map_or(i, |x| x as usize),
            id: id.to_string(),
            config_id: config_id.to_string(),
            label: t
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or(config_id)
                .to_string(),
            seed: scalar(t.get("seed")),
        });
    }
    trials.sort_by_key(|t| t.index); // stable: ties keep the file's order
    Ok(Sweep {
        grid: v.get("grid").and_then(Value::as_str).map(str::to_string),
        shards,
        trials,
    })
}

/// A JSON scalar as text (strings unquoted), empty for null or absent.
fn scalar(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn read_trial(dir: &Path, t: &Trial) -> Outcome {
    let folder = dir.join("trials").join(&t.id);
    match std::fs::read(folder.join("result.json")) {
        Ok(bytes) => {
            return match parse_result(t, &bytes) {
                Ok(d) => Outcome::Done(Box::new(d)),
                Err(reason) => Outcome::Failed(reason),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Outcome::Failed(format!("result.json could not be read: {e}")),
    }
    match std::fs::read(folder.join("failed.json")) {
        Ok(bytes) => Outcome::Failed(failure(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Missing,
        Err(e) => Outcome::Failed(format!("failed.json could not be read: {e}")),
    }
}

/// The reason a `failed.json` gives.
fn failure(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => match v.get("error") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(e) if !e.is_null() => e.to_string(),
            _ => "failed.json gives no error".into(),
        },
        Err(e) => format!("failed.json does not parse: {e}"),
    }
}

/// A `result.json`, or why it is not a finished trial's result.
fn parse_result(t: &Trial, bytes: &[u8]) -> std::result::Result<Done, String> {
    let json: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("result.json does not parse: {e}"))?;
    if !json.is_object() {
        return Err("result.json is not a JSON object".into());
    }
    if let Some(status) = json.get("status").and_then(Value::as_str) {
        if status != "done" {
            let why = json
                .get("error")
                .map(|e| scalar(Some(e)))
                .unwrap_or_default();
            return Err(format!("result.json has status {status:?}: {why}"));
        }
    }
    if let Some(id) = json.get("id").and_then(Value::as_str) {
        if id != t.id {
            return Err(format!("result.json is the result of the trial {id}"));
        }
    }
    let epochs: &[Value] = json
        .get("epochs")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let last = epochs
        .last()
        .ok_or_else(|| "result.json has no epochs".to_string())?;
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
    let test_accuracy = num(last, "test_accuracy")
        .ok_or_else(|| "result.json has no test_accuracy in its last epoch".to_string())?;
    let curve = epochs
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let epoch = e
                .get("epoch")
                .and_then(Value::as_f64)
                .map_or(i as i64 + 1, |x| x.round() as i64);
            Some((epoch, num(e, "test_accuracy")?))
        })
        .collect();
    // every tensor's statistics (`tensors`), else the restricted ones' (`restrictions`)
    let stats = json
        .get("tensors")
        .filter(|r| r.is_array())
        .or_else(|| json.get("restrictions").filter(|r| r.is_array()))
        .or_else(|| last.get("restrictions"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let tensors = stats
        .iter()
        .filter_map(|s| {
            Some(Tensor {
                name: s.get("name")?.as_str()?.to_string(),
                zero_fraction: num(s, "zero_fraction"),
                norm_min: num(s, "filter_norm_min"),
                norm_max: num(s, "filter_norm_max"),
                restricted: s.get("restriction").is_some_and(|r| !r.is_null()),
            })
        })
        .collect();
    Ok(Done {
        epochs: epochs.len(),
        curve,
        test_accuracy,
        test_loss: num(last, "test_loss"),
        train_loss: num(last, "train_loss"),
        tensors,
        seconds: num(&json, "seconds"),
        host: json.get("host").and_then(Value::as_str).map(str::to_string),
        json,
    })
}

// ---------------------------------------------------------------------------------------------------
// the configuration table

/// One configuration over its finished seeds.
struct Config<'a> {
    config_id: &'a str,
    label: &'a str,
    /// position of the configuration in the plan (its colour in the plots)
    order: usize,
    /// its finished trials, in plan order
    trials: Vec<&'a Done>,
    accuracy: f64,
    /// sample std; `None` with one seed
    accuracy_std: Option<f64>,
    loss: Option<f64>,
    /// per tensor column
    tensors: Vec<TensorSummary>,
    /// mean over its restricted tensors of their mean exact-zero fraction (0 without any)
    sparsity: f64,
    pareto: bool,
}

/// A tensor of a configuration: the mean exact-zero fraction and the filter-norm range over seeds.
struct TensorSummary {
    zero_fraction: Option<f64>,
    norm_min: Option<f64>,
    norm_max: Option<f64>,
}

/// The configurations with a finished trial, best mean test accuracy first (ties by label), Pareto front
/// marked.
fn configs<'a>(done: &[(&'a Trial, &'a Done)], names: &[String]) -> Vec<Config<'a>> {
    let mut groups: Vec<(&'a Trial, Vec<&'a Done>)> = Vec::new();
    for &(t, d) in done {
        match groups.iter_mut().find(|(g, _)| g.config_id == t.config_id) {
            Some((_, members)) => members.push(d),
            None => groups.push((t, vec![d])),
        }
    }
    let mut configs: Vec<Config> = groups
        .into_iter()
        .enumerate()
        .map(|(order, (first, trials))| {
            let acc: Vec<f64> = trials.iter().map(|d| d.test_accuracy).collect();
            let losses: Vec<f64> = trials.iter().filter_map(|d| d.test_loss).collect();
            let tensors = names
                .iter()
                .map(|n| {
                    let of = || trials.iter().filter_map(|d| d.tensor(n));
                    TensorSummary {
                        zero_fraction: mean(
                            &of().filter_map(|t| t.zero_fraction).collect::<Vec<_>>(),
                        ),
                        norm_min: of().filter_map(|t| t.norm_min).reduce(f64::min),
                        norm_max: of().filter_map(|t| t.norm_max).reduce(f64::max),
                    }
                })
                .collect();
            // the restricted tensors of this configuration, by name, in column order
            let restricted: BTreeSet<&str> = trials
                .iter()
                .flat_map(|d| d.tensors.iter().filter(|t| t.restricted))
                .map(|t| t.name.as_str())
                .collect();
            let zeros: Vec<f64> = restricted
                .iter()
                .filter_map(|n| {
                    mean(
                        &trials
                            .iter()
                            .filter_map(|d| d.tensor(n).filter(|t| t.restricted)?.zero_fraction)
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            Config {
                config_id: &first.config_id,
                label: &first.label,
                order,
                accuracy: mean(&acc).unwrap_or(0.0),
                accuracy_std: sample_std(&acc),
                loss: mean(&losses),
                tensors,
                sparsity: mean(&zeros).unwrap_or(0.0),
                pareto: false,
                trials,
            }
        })
        .collect();
    let points: Vec<(f64, f64)> = configs.iter().map(|c| (c.accuracy, c.sparsity)).collect();
    for c in &mut configs {
        c.pareto = !points.iter().any(|&(a, s)| {
            a >= c.accuracy && s >= c.sparsity && (a > c.accuracy || s > c.sparsity)
        });
    }
    configs.sort_by(|a, b| {
        b.accuracy
            .total_cmp(&a.accuracy)
            .then_with(|| a.label.cmp(b.label))
            .then_with(|| a.config_id.cmp(b.config_id))
    });
    configs
}

/// The Pareto front, by sparsity (then best accuracy first).
fn front<'c, 'a>(configs: &'c [Config<'a>]) -> Vec<&'c Config<'a>> {
    let mut front: Vec<&Config> = configs.iter().filter(|c| c.pareto).collect();
    front.sort_by(|a, b| {
        a.sparsity
            .total_cmp(&b.sparsity)
            .then_with(|| b.accuracy.total_cmp(&a.accuracy))
            .then_with(|| a.label.cmp(b.label))
    });
    front
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The sample standard deviation (n - 1); `None` below two values.
fn sample_std(xs: &[f64]) -> Option<f64> {
    let m = mean(xs).filter(|_| xs.len() >= 2)?;
    Some((xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt())
}

/// Four decimals, never `-0.0000`.
fn f4(x: f64) -> String {
    let s = format!("{x:.4}");
    if s.starts_with('-') && s[1..].bytes().all(|b| b == b'0' || b == b'.') {
        s[1..].to_string()
    } else {
        s
    }
}

fn f4_or(x: Option<f64>, none: &str) -> String {
    x.map_or(none.to_string(), f4)
}

// ---------------------------------------------------------------------------------------------------
// tables

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn csv_line(fields: impl IntoIterator<Item = String>) -> String {
    let mut line = fields
        .into_iter()
        .map(|f| csv(&f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// A number as written (shortest exact form), empty when unknown.
fn num(x: Option<f64>) -> String {
    x.map_or(String::new(), |x| x.to_string())
}

fn trials_csv(trials: &[(&Trial, &Outcome)], names: &[String]) -> String {
    let mut head: Vec<String> = [
        "index",
        "id",
        "config_id",
        "label",
        "seed",
        "status",
        "epochs",
        "test_accuracy",
        "test_loss",
        "train_loss",
    ]
    .map(String::from)
    .to_vec();
    for n in names {
        for k in ["zero_fraction", "filter_norm_min", "filter_norm_max"] {
            head.push(format!("{n}.{k}"));
        }
    }
    head.extend(["seconds", "host", "error"].map(String::from));
    let mut out = csv_line(head);
    for &(t, o) in trials {
        let mut row = vec![
            t.index.to_string(),
            t.id.clone(),
            t.config_id.clone(),
            t.label.clone(),
            t.seed.clone(),
        ];
        match o {
            Outcome::Done(d) => {
                row.push("done".into());
                row.push(d.epochs.to_string());
                row.extend([Some(d.test_accuracy), d.test_loss, d.train_loss].map(num));
                for n in names {
                    let s = d.tensor(n);
                    row.push(num(s.and_then(|s| s.zero_fraction)));
                    row.push(num(s.and_then(|s| s.norm_min)));
                    row.push(num(s.and_then(|s| s.norm_max)));
                }
                row.push(num(d.seconds));
                row.push(d.host.clone().unwrap_or_default());
                row.push(String::new());
            }
            Outcome::Failed(_) | Outcome::Missing => {
                let (status, error) = match o {
                    Outcome::Failed(e) => ("failed", e.as_str()),
                    _ => ("missing", ""),
                };
                row.push(status.into());
                row.resize(row.len() + 4 + 3 * names.len() + 2, String::new());
                // one line per row: the error's lines joined
                let lines: Vec<&str> = error
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                row.push(lines.join(" "));
            }
        }
        out.push_str(&csv_line(row));
    }
    out
}

fn configs_csv(configs: &[Config], names: &[String]) -> String {
    let mut head: Vec<String> = [
        "rank",
        "config_id",
        "label",
        "seeds",
        "test_accuracy_mean",
        "test_accuracy_std",
        "test_loss_mean",
        "zero_fraction_mean",
    ]
    .map(String::from)
    .to_vec();
    for n in names {
        for k in ["zero_fraction_mean", "filter_norm_min", "filter_norm_max"] {
            head.push(format!("{n}.{k}"));
        }
    }
    head.push("pareto".into());
    let mut out = csv_line(head);
    for (rank, c) in configs.iter().enumerate() {
        let mut row = vec![
            (rank + 1).to_string(),
            c.config_id.to_string(),
            c.label.to_string(),
            c.trials.len().to_string(),
            f4(c.accuracy),
            f4_or(c.accuracy_std, ""),
            f4_or(c.loss, ""),
            f4(c.sparsity),
        ];
        for s in &c.tensors {
            row.extend([s.zero_fraction, s.norm_min, s.norm_max].map(|x| f4_or(x, "")));
        }
        row.push(if c.pareto { "yes" } else { "" }.into());
        out.push_str(&csv_line(row));
    }
    out
}

/// Text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn table_row(cells: impl IntoIterator<Item = String>) -> String {
    let cells: Vec<String> = cells.into_iter().collect();
    format!("| {} |\n", cells.join(" | "))
}

struct ReportInput<'r, 'a> {
    dir: &'r Path,
    sweep: &'r Sweep,
    trials: &'r [(&'a Trial, &'a Outcome)],
    done: usize,
    names: &'r [String],
    configs: &'r [Config<'a>],
    /// plan indices of the failed and missing trials
    redo: &'r [usize],
    resubmit: Option<&'r str>,
}

fn report_md(r: &ReportInput) -> String {
    let total = r.trials.len();
    let failed: Vec<(&Trial, &str)> = r
        .trials
        .iter()
        .filter_map(|&(t, o)| match o {
            Outcome::Failed(e) => Some((t, e.as_str())),
            _ => None,
        })
        .collect();
    let missing: Vec<&Trial> = r
        .trials
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Missing))
        .map(|&(t, _)| t)
        .collect();
    let mut md = String::from("# Restriction sweep report\n\n");
    let _ = writeln!(
        md,
        "{} of {total} trials done, {} failed, {} missing; {} configurations with a finished trial.\n",
        r.done,
        failed.len(),
        missing.len(),
        r.configs.len()
    );

    md_configurations(&mut md, r);
    md_plots(&mut md, r);
    md_redo(&mut md, r, &failed, &missing);
    md
}

/// The configurations table and the Pareto front.
fn md_configurations(md: &mut String, r: &ReportInput) {
    md.push_str("## Configurations\n\n");
    if r.configs.is_empty() {
        md.push_str("No trial has finished yet.\n\n");
    } else {
        md.push_str(
            "Best mean test accuracy first. *test accuracy*: the mean ± the sample standard deviation \
             over the finished seeds (– with one seed). *zeros*: the fraction of exactly-zero weights, the \
             mean over the restricted tensors (0 without any) and the seeds. Per restricted tensor: its \
             mean fraction of exact zeros, and the range of its filter norms (the L2 norm of each output \
             filter) over the seeds. *Pareto*: no other configuration has at least its mean test accuracy \
             and at least its zeros, with one of them higher.\n\n",
        );
        let mut head = [
            "#",
            "configuration",
            "config",
            "seeds",
            "test accuracy",
            "test loss",
            "zeros",
        ]
        .map(String::from)
        .to_vec();
        let mut align = ["---:", "---", "---", "---:", "---:", "---:", "---:"]
            .map(String::from)
            .to_vec();
        // a tensor without filters (a bias) has no filter-norm column
        let has_norms: Vec<bool> = (0..r.names.len())
            .map(|i| r.configs.iter().any(|c| c.tensors[i].norm_max.is_some()))
            .collect();
        for (n, &norms) in r.names.iter().zip(&has_norms) {
            head.push(format!("`{}` zeros", cell(n)));
            align.push("---:".into());
            if norms {
                head.push(format!("`{}` filter norms", cell(n)));
                align.push("---:".into());
            }
        }
        head.push("Pareto".into());
        align.push("---".into());
        md.push_str(&table_row(head));
        md.push_str(&table_row(align));
        for (rank, c) in r.configs.iter().enumerate() {
            let mut row = vec![
                (rank + 1).to_string(),
                cell(c.label),
                format!("`{}`", cell(c.config_id)),
                c.trials.len().to_string(),
                format!("{} ± {}", f4(c.accuracy), f4_or(c.accuracy_std, "–")),
                f4_or(c.loss, "–"),
                f4(c.sparsity),
            ];
            for (s, &norms) in c.tensors.iter().zip(&has_norms) {
                row.push(f4_or(s.zero_fraction, "–"));
                if norms {
                    row.push(match (s.norm_min, s.norm_max) {
                        (Some(lo), Some(hi)) => format!("[{}, {}]", f4(lo), f4(hi)),
                        _ => "–".into(),
                    });
                }
            }
            row.push(if c.pareto { "yes" } else { "" }.into());
            md.push_str(&table_row(row));
        }
        md.push('\n');

        md.push_str("## Pareto front\n\n");
        md.push_str(
            "The configurations no other one beats on both mean test accuracy and zeros, by zeros:\n\n",
        );
        md.push_str("| zeros | test accuracy | configuration | config |\n|---:|---:|---|---|\n");
        for c in front(r.configs) {
            md.push_str(&table_row([
                f4(c.sparsity),
                f4(c.accuracy),
                cell(c.label),
                format!("`{}`", cell(c.config_id)),
            ]));
        }
        md.push('\n');
    }
}

/// Links to the three plots.
fn md_plots(md: &mut String, r: &ReportInput) {
    md.push_str("## Plots\n\n");
    if r.done == 0 {
        md.push_str("None: no trial has finished yet.\n\n");
    } else {
        for (what, file) in [
            (
                "Test accuracy against the fraction of exact zeros in the restricted tensors: one small \
                 point per trial, one large per configuration, the Pareto front as a line",
                PLOT_ZEROS,
            ),
            (
                "Test accuracy against the largest filter norm, one point per trial",
                PLOT_NORMS,
            ),
            (
                "Test accuracy per epoch, the mean over seeds per configuration, shaded from the lowest \
                 to the highest seed",
                PLOT_CURVES,
            ),
        ] {
            let _ = writeln!(md, "![{what}]({file})\n");
        }
    }
}

/// The failed and missing trials, and how to run them again.
fn md_redo(md: &mut String, r: &ReportInput, failed: &[(&Trial, &str)], missing: &[&Trial]) {
    md.push_str("## Failed trials\n\n");
    if failed.is_empty() {
        md.push_str("None.\n\n");
    } else {
        md.push_str("| id | configuration | seed | error |\n|---|---|---:|---|\n");
        for (t, e) in failed {
            let first = e.lines().next().unwrap_or("").trim();
            md.push_str(&table_row([
                format!("`{}`", cell(&t.id)),
                cell(&t.label),
                cell(&t.seed),
                cell(first),
            ]));
        }
        md.push('\n');
    }

    md.push_str("## Missing trials\n\n");
    if missing.is_empty() {
        md.push_str("None.\n\n");
    } else {
        md.push_str("| id | configuration | seed |\n|---|---|---:|\n");
        for t in missing {
            md.push_str(&table_row([
                format!("`{}`", cell(&t.id)),
                cell(&t.label),
                cell(&t.seed),
            ]));
        }
        md.push('\n');
    }

    md.push_str("## Resubmitting\n\n");
    if r.redo.is_empty() {
        md.push_str("Every trial has finished: nothing to resubmit.\n");
    } else if let (Some(array), Some(shards)) = (r.resubmit, r.sweep.shards) {
        let _ = writeln!(
            md,
            "{} trials to redo. The Slurm array tasks owning them (trial index mod {shards}): \
             `{array}`\n\n```sh\nsbatch {array} {}\n```",
            r.redo.len(),
            r.dir.join("sweep.sbatch").display()
        );
    } else {
        let _ = writeln!(
            md,
            "{} trials to redo. Run the sweep again (it retries the failed trials and resumes the \
             interrupted ones):\n\n```sh\nclampnet sweep run {} --out {}\n```",
            r.redo.len(),
            r.sweep.grid.as_deref().unwrap_or("GRID"),
            r.dir.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// plots

const PLOT_ZEROS: &str = "accuracy_vs_zero_fraction.png";
const PLOT_NORMS: &str = "accuracy_vs_filter_norm.png";
const PLOT_CURVES: &str = "learning_curves.png";

/// The size of every plot, and the width of its legend panel on the right.
const SIZE: (u32, u32) = (900, 600);
const LEGEND_WIDTH: u32 = 290;

type Root<'b> = DrawingArea<BitMapBackend<'b>, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;
type PlotFn = fn(&Root, &[(&Trial, &Done)], &[Config]) -> DrawResult;

/// Draw into an RGB buffer, encode it as PNG, write it atomically.
fn render(path: &Path, draw: impl FnOnce(&Root) -> DrawResult) -> Result<()> {
    crate::viz::font()?;
    let err = |e: &dyn std::fmt::Display| Error::Data {
        path: path.into(),
        msg: format!("drawing: {e}"),
    };
    let (w, h) = SIZE;
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        draw(&root).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &pixels,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| err(&e))?;
    write_atomic(path, &png)
}

/// The colour of the `i`-th configuration of the plan: Tableau's ten, then plotters' 99.
fn colour(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = match TAB10.get(i) {
        Some(&c) => c,
        None => Palette99::COLORS[(i - TAB10.len()) % Palette99::COLORS.len()],
    };
    RGBColor(r, g, b)
}

/// `s` cut to `max` characters, an ellipsis marking the cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The range of the finite values, padded by 5% (or around a single value): never empty.
fn span(values: impl IntoIterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .into_iter()
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let width = hi - lo;
    let pad = if width > 1e-9 * hi.abs().max(lo.abs()).max(1.0) {
        0.05 * width
    } else {
        0.05 * lo.abs().max(1.0)
    };
    lo - pad..hi + pad
}

/// The chart area (left) and the legend of the configurations (right, in plan order).
fn split<'b>(
    root: &Root<'b>,
    configs: &[Config],
) -> std::result::Result<Root<'b>, Box<dyn std::error::Error>> {
    let (chart, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let mut entries: Vec<&Config> = configs.iter().collect();
    entries.sort_by_key(|c| c.order);
    legend.draw(&Text::new(
        "configurations",
        (8, 16),
        ("sans-serif", 14).into_font(),
    ))?;
    let line = 18;
    let room = ((SIZE.1 as i32 - 60) / line).max(1) as usize;
    for (i, c) in entries.iter().enumerate() {
        let y = 48 + i as i32 * line;
        if i + 1 == room && entries.len() > room {
            legend.draw(&Text::new(
                format!("… and {} more", entries.len() - i),
                (8, y - 7),
                ("sans-serif", 12).into_font(),
            ))?;
            break;
        }
        legend.draw(&Circle::new((14, y), 5, colour(c.order).filled()))?;
        legend.draw(&Text::new(
            truncate(c.label, 36),
            (26, y - 7),
            ("sans-serif", 12).into_font(),
        ))?;
    }
    Ok(chart)
}

/// The colour index of each finished trial: its configuration's plan order.
fn colours_of(done: &[(&Trial, &Done)], configs: &[Config]) -> Vec<usize> {
    done.iter()
        .map(|(t, _)| {
            configs
                .iter()
                .find(|c| c.config_id == t.config_id)
                .map_or(0, |c| c.order)
        })
        .collect()
}

/// A chart of test accuracy (y) against `x_desc` over the ranges, its mesh drawn.
fn scatter_chart<'a, 'b>(
    area: &'a Root<'b>,
    caption: &str,
    x_desc: &str,
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
) -> std::result::Result<
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    Box<dyn std::error::Error>,
> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("test accuracy")
        .label_style(("sans-serif", 12))
        .draw()?;
    Ok(chart)
}

/// Test accuracy against the exact-zero fraction: trials, configuration means, the Pareto front.
fn plot_zeros(root: &Root, done: &[(&Trial, &Done)], configs: &[Config]) -> DrawResult {
    let area = split(root, configs)?;
    let points: Vec<(f64, f64)> = done
        .iter()
        .map(|(_, d)| (d.sparsity(), d.test_accuracy))
        .collect();
    let x = span(points.iter().map(|p| p.0));
    let y = span(points.iter().map(|p| p.1));
    let mut chart = scatter_chart(
        &area,
        "Test accuracy vs exact zeros",
        "zero fraction (mean over restricted tensors)",
        (x, y),
    )?;
    // the front as the edge of what it dominates: down at each point, then right to the next
    let front = front(configs);
    let mut steps = Vec::new();
    for (i, c) in front.iter().enumerate() {
        if i > 0 {
            steps.push((front[i - 1].sparsity, c.accuracy));
        }
        steps.push((c.sparsity, c.accuracy));
    }
    chart.draw_series(LineSeries::new(steps, BLACK.mix(0.5).stroke_width(1)))?;
    let colours = colours_of(done, configs);
    chart.draw_series(
        points
            .iter()
            .zip(&colours)
            .map(|(&p, &c)| Circle::new(p, 3, colour(c).mix(0.8).filled())),
    )?;
    chart.draw_series(
        configs
            .iter()
            .map(|c| Circle::new((c.sparsity, c.accuracy), 7, colour(c.order).filled())),
    )?;
    chart.draw_series(
        configs
            .iter()
            .map(|c| Circle::new((c.sparsity, c.accuracy), 7, BLACK.stroke_width(1))),
    )?;
    Ok(())
}

/// Test accuracy against the largest filter norm, one point per trial.
fn plot_norms(root: &Root, done: &[(&Trial, &Done)], configs: &[Config]) -> DrawResult {
    let area = split(root, configs)?;
    let colours = colours_of(done, configs);
    let points: Vec<((f64, f64), usize)> = done
        .iter()
        .zip(colours)
        .filter_map(|((_, d), c)| Some(((d.max_norm()?, d.test_accuracy), c)))
        .collect();
    let x = span(points.iter().map(|p| p.0 .0));
    let y = span(points.iter().map(|p| p.0 .1));
    let mut chart = scatter_chart(
        &area,
        "Test accuracy vs largest filter norm",
        "max filter L2 norm (restricted tensors)",
        (x, y),
    )?;
    chart.draw_series(
        points
            .iter()
            .map(|&(p, c)| Circle::new(p, 4, colour(c).mix(0.85).filled())),
    )?;
    Ok(())
}

/// Test accuracy per epoch: per configuration the mean over its seeds, shaded from min to max.
fn plot_curves(root: &Root, _: &[(&Trial, &Done)], configs: &[Config]) -> DrawResult {
    let area = split(root, configs)?;
    // per configuration (its colour): per epoch (epoch, mean, min, max)
    type Curve = Vec<(i64, f64, f64, f64)>;
    let curves: Vec<(usize, Curve)> = configs
        .iter()
        .map(|c| {
            let mut by_epoch: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
            for d in &c.trials {
                for &(e, a) in &d.curve {
                    by_epoch.entry(e).or_default().push(a);
                }
            }
            let points = by_epoch
                .into_iter()
                .map(|(e, a)| {
                    let lo = a.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (e, mean(&a).unwrap_or(lo), lo, hi)
                })
                .collect();
            (c.order, points)
        })
        .collect();
    let all = || curves.iter().flat_map(|(_, p)| p.iter());
    // whole epochs on the x axis, a margin either side
    let (first, last) = all().fold((i64::MAX, i64::MIN), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let x = if first > last {
        0..2
    } else {
        let pad = ((last - first) / 20).max(1);
        first.saturating_sub(pad)..last.saturating_add(pad)
    };
    let y = span(all().flat_map(|p| [p.2, p.3]));
    let mut chart = ChartBuilder::on(&area)
        .caption("Test accuracy per epoch", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("test accuracy (mean over seeds)")
        .label_style(("sans-serif", 12))
        .draw()?;
    for (order, points) in &curves {
        let c = colour(*order);
        if points.len() >= 2 && points.iter().any(|p| p.3 > p.2) {
            let band: Vec<(i64, f64)> = points
                .iter()
                .map(|p| (p.0, p.3))
                .chain(points.iter().rev().map(|p| (p.0, p.2)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.15).filled())))?;
        }
        chart.draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, p.1)),
            c.stroke_width(2),
        ))?;
        if points.len() <= 20 {
            chart.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 3, c.filled())),
            )?;
        }
    }
    Ok(())
}
