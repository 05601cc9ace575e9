//! Restriction sweeps: a grid of trials (`sweep plan`, `sweep run`), sharded over processes or a Slurm
//! array, each trial's result kept in its own folder, and the report over them all (`report`).
//!
//! A grid file names a base config, seeds, and axes: dotted keys into the base config, each with its
//! values. Its trials are the product of the axes (the first axis slowest, as written), then the
//! explicit `[[trials]]`, each run once per seed (the seed fastest). A configuration's id is a hash of
//! its settings, a trial's id that id and its seed: both stay the same when the grid grows.
//!
//! ```toml
//! base = "configs/none.toml"
//! seeds = [0, 1, 2]
//! [axes]
//! "model.layers.0.kernel_regularizer.l1" = [0.0, 1e-4, 1e-3]
//! "model.layers.0.kernel_constraint" = ["none", { max_norm = { max_value = 2.0, axis = [0, 1, 2] } }]
//! [[trials]]
//! "model.layers.0.kernel_constraint" = { unit_norm = { axis = [0, 1, 2] } }
//! ```
//! A value `"none"` removes the key (Keras' `None`); a `[[trials]]` table may name itself with
//! `label = "..."` for the reports. The base may also be a Keras model JSON or a
//! `.keras` file; its keys are then those of Keras' JSON (`config.layers.1.config.kernel_constraint`).

pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::files::Format;

/// One training run of the sweep: a configuration of the grid and a seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// its place in the grid's order (sharding: trial `index` goes to shard `index mod N`)
    pub index: usize,
    /// `<config_id>-s<seed>`
    pub id: String,
    pub config_id: String,
    /// the settings in short words, e.g. `kernel_regularizer.l1=0.001, kernel_constraint=none`
    pub label: String,
    /// dotted key -> value, as the grid gives them
    pub settings: BTreeMap<String, Value>,
    pub seed: u64,
}

/// The base model of a grid: clampnet's TOML, or a Keras model (JSON or `.keras`).
#[derive(Clone, Debug)]
pub enum Base {
    Toml(toml::Table),
    /// the model JSON, and the `.keras` file when its weights are the trials' initial weights
    Keras(Value, Option<PathBuf>),
}

/// A parsed grid file.
#[derive(Clone, Debug)]
pub struct Grid {
    pub path: PathBuf,
    pub base_path: PathBuf,
    pub base: Base,
    pub seeds: Vec<u64>,
    pub trials: Vec<Trial>,
}

/// The grid file as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    base: PathBuf,
    #[serde(default)]
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    axes: toml::Table,
    #[serde(default)]
    trials: Vec<toml::Table>,
}

fn grid_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {msg}", path.display()))
}

/// 64-bit FNV-1a: a stable hash (the same on every machine and release) for ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The id of a configuration: 10 hex digits of the hash of its settings (keys sorted, JSON).
pub fn config_id(settings: &BTreeMap<String, Value>) -> String {
    let canonical = serde_json::to_string(settings).unwrap_or_default();
    format!("{:010x}", fnv1a(canonical.as_bytes()) >> 24)
}

/// A value in a label: numbers and strings bare, lists in brackets, a table `key(k=v, ...)` as
/// Keras' constructors read (`max_norm(axis=[0,1,2], max_value=2.0)`).
fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(short).collect::<Vec<_>>().join(",")
        ),
        Value::Object(map) if map.len() == 1 => {
            let (k, inner) = map.iter().next().expect("one entry");
            match inner {
                Value::Object(args) => format!(
                    "{k}({})",
                    args.iter()
                        .map(|(a, v)| format!("{a}={}", short(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => format!("{k}({})", short(other)),
            }
        }
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(a, v)| format!("{a}={}", short(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// The label of a configuration: `key=value` per setting, each key shortened to its part after the
/// layer index (`kernel_regularizer.l1`) unless two settings would then read the same.
fn label(settings: &BTreeMap<String, Value>, order: &[String]) -> String {
    let shorten = |k: &str| -> String {
        let parts: Vec<&str> = k.split('.').collect();
        match parts.iter().rposition(|p| p.parse::<usize>().is_ok()) {
            Some(i) if i + 1 < parts.len() => parts[i + 1..].join("."),
            _ => k.to_string(),
        }
    };
    let keys: Vec<&String> = order
        .iter()
        .filter(|k| settings.contains_key(*k))
        .chain(settings.keys().filter(|k| !order.contains(k)))
        .collect();
    let shorts: Vec<String> = keys.iter().map(|k| shorten(k)).collect();
    let unique = (0..shorts.len()).all(|i| shorts.iter().filter(|s| **s == shorts[i]).count() == 1);
    if keys.is_empty() {
        return "base".into();
    }
    keys.iter()
        .zip(&shorts)
        .map(|(k, s)| {
            let name = if unique {
                s.as_str()
            } else {
                k.strip_prefix("model.").unwrap_or(k)
            };
            format!("{name}={}", short(&settings[*k]))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Grid {
    /// Read a grid file; `base` is found beside it, else from the working folder.
    pub fn load(path: &Path) -> Result<Grid> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: GridFile = toml::from_str(&text).map_err(|e| grid_err(path, e.message()))?;
        let (base_path, base) = load_base(path, &file.base)?;
        let seeds = file.seeds.clone().unwrap_or_else(|| vec![0]);
        if seeds.is_empty() {
            return Err(grid_err(path, "seeds is empty: give at least one seed"));
        }
        let (configs, labels, order) = configurations(path, &file)?;
        let mut trials = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for settings in configs {
            let cid = config_id(&settings);
            if !seen.insert(cid.clone()) {
                continue;
            }
            for &seed in &seeds {
                trials.push(Trial {
                    index: trials.len(),
                    id: format!("{cid}-s{seed}"),
                    config_id: cid.clone(),
                    label: labels
                        .get(&cid)
                        .cloned()
                        .unwrap_or_else(|| label(&settings, &order)),
                    settings: settings.clone(),
                    seed,
                });
            }
        }
        let grid = Grid {
            path: path.to_path_buf(),
            base_path,
            base,
            seeds,
            trials,
        };
        // every trial's config must be one `train` accepts: refuse a bad key before any run
        for t in &grid.trials {
            grid.trial_config(t)?;
        }
        Ok(grid)
    }

    /// Trial `t`'s config: the base with its settings applied, as the text of a file `train --config`
    /// reads, with that file's extension (`toml` or `json`).
    pub fn trial_config(&self, t: &Trial) -> Result<(String, &'static str)> {
        let err =
            |msg: String| grid_err(&self.path, format!("trial {} ({}): {msg}", t.id, t.label));
        match &self.base {
            Base::Toml(table) => {
                let mut v = Value::Object(
                    serde_json::to_value(table)
                        .map_err(|e| err(e.to_string()))?
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                );
                for (k, val) in &t.settings {
                    set_dotted(&mut v, k, val).map_err(err)?;
                }
                let table: toml::Table =
                    serde_json::from_value(v).map_err(|e| err(e.to_string()))?;
                let text = toml::to_string(&table).map_err(|e| err(e.to_string()))?;
                crate::config::Config::parse(&text).map_err(err)?;
                Ok((text, "toml"))
            }
            Base::Keras(json, _) => {
                let mut v = json.clone();
                for (k, val) in &t.settings {
                    set_dotted(&mut v, k, val).map_err(err)?;
                }
                let text = v.to_string();
                crate::keras::parse_model(&text).map_err(err)?;
                Ok((text, "json"))
            }
        }
    }

    /// The `.keras` file whose weights every trial starts from, when the base is one.
    pub fn init_weights(&self) -> Option<&Path> {
        match &self.base {
            Base::Keras(_, Some(p)) => Some(p),
            _ => None,
        }
    }

    /// What `sweep.json` records of the grid: its files and every trial.
    pub fn to_json(&self, shards: Option<usize>) -> Value {
        json!({
            "grid": self.path.display().to_string(),
            "base": self.base_path.display().to_string(),
            "shards": shards,
            "trials": self.trials.iter().map(|t| json!({
                "index": t.index,
                "id": t.id,
                "config_id": t.config_id,
                "label": t.label,
                "settings": t.settings,
                "seed": t.seed,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The base of a grid file at `path`: `base` beside it, else from the working folder, parsed.
fn load_base(path: &Path, base: &Path) -> Result<(PathBuf, Base)> {
    let beside = path.parent().unwrap_or(Path::new(".")).join(base);
    let base_path = if base.is_relative() && beside.exists() {
        beside
    } else {
        base.to_path_buf()
    };
    let base = match Format::of(&base_path) {
        Format::Toml => {
            let t = std::fs::read_to_string(&base_path)
                .map_err(|e| grid_err(path, format!("base {}: {e}", base_path.display())))?;
            Base::Toml(toml::from_str(&t).map_err(|e| {
                grid_err(
                    path,
                    format!("base {}: {}", base_path.display(), e.message()),
                )
            })?)
        }
        Format::KerasJson => {
            let t = std::fs::read_to_string(&base_path).map_err(|e| Error::io(&base_path, e))?;
            Base::Keras(
                serde_json::from_str(&t)
                    .map_err(|e| grid_err(path, format!("base {}: {e}", base_path.display())))?,
                None,
            )
        }
        Format::Keras => {
            let bytes = std::fs::read(&base_path).map_err(|e| Error::io(&base_path, e))?;
            let a = crate::keras::archive::read(&bytes)
                .map_err(|m| grid_err(path, format!("base {}: {m}", base_path.display())))?;
            let json: Value = serde_json::from_str(&a.config)
                .map_err(|e| grid_err(path, format!("base {}: {e}", base_path.display())))?;
            Base::Keras(json, a.weights.is_some().then(|| base_path.clone()))
        }
        _ => {
            return Err(grid_err(
                path,
                format!(
                    "base {}: give a train config (.toml, a Keras .json or a .keras file)",
                    base_path.display()
                ),
            ))
        }
    };
    Ok((base_path, base))
}

/// The configurations of a grid file, in order (the product of the axes, then the explicit trials),
/// the labels the explicit ones give themselves (by configuration id), and the axes' order.
#[allow(clippy::type_complexity)]
fn configurations(
    path: &Path,
    file: &GridFile,
) -> Result<(
    Vec<BTreeMap<String, Value>>,
    BTreeMap<String, String>,
    Vec<String>,
)> {
    let mut configs: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
    let order: Vec<String> = file.axes.keys().cloned().collect();
    // the first axis slowest: extend each configuration by the next axis' values
    for (key, values) in &file.axes {
        let values = values.as_array().filter(|v| !v.is_empty()).ok_or_else(|| {
            grid_err(
                path,
                format!("axes: \"{key}\" must be a non-empty list of values"),
            )
        })?;
        configs = configs
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(key.clone(), to_json(v));
                    c
                })
            })
            .collect();
    }
    if file.axes.is_empty() && !file.trials.is_empty() {
        configs.clear();
    }
    // a [[trials]] table's `label` names it in reports (it is not a setting)
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for t in &file.trials {
        let settings: BTreeMap<String, Value> = t
            .iter()
            .filter(|(k, _)| *k != "label")
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect();
        if let Some(l) = t.get("label") {
            let l = l.as_str().ok_or_else(|| {
                grid_err(
                    path,
                    "trials: `label` must be a string, e.g. label = \"combo\"",
                )
            })?;
            labels.insert(config_id(&settings), l.to_string());
        }
        configs.push(settings);
    }
    Ok((configs, labels, order))
}

/// Set `key` (dotted; numbers index arrays) in `root` to `value`, creating tables on the way; the
/// value `"none"` removes the key.
fn set_dotted(root: &mut Value, key: &str, value: &Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut at = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let here = parts[..=i].join(".");
        match at {
            Value::Array(items) => {
                let n = part.parse::<usize>().map_err(|_| {
                    format!(
                        "`{key}`: {} is a list: index it with a number",
                        parts[..i].join(".")
                    )
                })?;
                let len = items.len();
                let item = items
                    .get_mut(n)
                    .ok_or_else(|| format!("`{key}`: {here} is past the end of a list of {len}"))?;
                if last {
                    *item = value.clone();
                    return Ok(());
                }
                at = item;
            }
            Value::Object(map) => {
                if last {
                    if value.as_str() == Some("none") {
                        map.remove(*part);
                    } else {
                        map.insert(part.to_string(), value.clone());
                    }
                    return Ok(());
                }
                let next = map
                    .entry(part.to_string())
                    .or_insert_with(|| Value::Object(Default::default()));
                if next.is_string() || next.is_number() || next.is_boolean() {
                    // a setting given as a bare value (e.g. "non_neg") becomes a table to set a key in
                    *next = Value::Object(Default::default());
                }
                at = next;
            }
            _ => return Err(format!("`{key}`: {here} is not a table or a list")),
        }
    }
    Ok(())
}

/// Which trials this process runs: trial `t` goes to shard `t mod count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `--shard I/N`, else a Slurm array task (`SLURM_ARRAY_TASK_ID`: with `--shards N` the task id
    /// is the shard, so that a resubmitted subset of the array keeps its shards; without, the task's
    /// place in the array, `(ID − MIN) / STEP` of `SLURM_ARRAY_TASK_COUNT`), else an indexed job's
    /// `JOB_COMPLETION_INDEX` with `--shards N`; else the whole grid. `env` reads the environment.
    pub fn resolve(
        shard: Option<&str>,
        shards: Option<usize>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Shard> {
        let bad = |msg: String| Err(Error::Config(msg));
        let num = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Config(format!("{name}={v} is not a whole number"))),
            }
        };
        let s = if let Some(text) = shard {
            let parsed = text
                .split_once('/')
                .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
            let Some((index, count)) = parsed else {
                return bad(format!("--shard {text}: give I/N, e.g. --shard 0/4"));
            };
            Shard { index, count }
        } else if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            match shards {
                Some(count) => Shard { index: id, count },
                None => {
                    let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                    let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
                    let Some(count) = num("SLURM_ARRAY_TASK_COUNT")? else {
                        return bad("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: give --shards N".into());
                    };
                    if id < min || (id - min) % step != 0 {
                        return bad(format!("SLURM_ARRAY_TASK_ID {id} is not in the array {min}..step {step}: give --shards N"));
                    }
                    Shard {
                        index: (id - min) / step,
                        count,
                    }
                }
            }
        } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
            let Some(count) = shards else {
                return bad(format!(
                    "JOB_COMPLETION_INDEX={i} is set: give --shards N (the job's completions)"
                ));
            };
            Shard { index: i, count }
        } else {
            Shard {
                index: 0,
                count: shards.unwrap_or(1),
            }
        };
        if s.count == 0 || s.index >= s.count {
            return bad(format!(
                "shard {} of {} does not exist: the index runs from 0 to N − 1",
                s.index, s.count
            ));
        }
        Ok(s)
    }

    pub fn owns(&self, t: &Trial) -> bool {
        t.index % self.count == self.index
    }
}

/// Sorted, deduplicated indices with runs of consecutive ones as ranges: `[3, 0, 2]` gives `0,2-3`
/// (the syntax of `sbatch --array`).
pub fn array_spec(indices: &[usize]) -> String {
    let set: BTreeSet<usize> = indices.iter().copied().collect();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in set {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == i => *hi = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A trial's folder in a sweep's `--out`.
pub fn trial_dir(out: &Path, t: &Trial) -> PathBuf {
    out.join("trials").join(&t.id)
}

/// The per-epoch lines of a metrics log, the last of each epoch kept (a run killed between writing
/// an epoch's line and its checkpoint trains that epoch again); a torn last line is skipped.
pub fn read_epochs(text: &str) -> Vec<Value> {
    let mut by_epoch: BTreeMap<u64, Value> = BTreeMap::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            if let Some(e) = v.get("epoch").and_then(|e| e.as_u64()) {
                by_epoch.insert(e, v);
            }
        }
    }
    by_epoch.into_values().collect()
}
