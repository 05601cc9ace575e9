//! Model and checkpoint files by extension, in and out:
//!
//! | file                | holds                                                                       |
//! |---------------------|-----------------------------------------------------------------------------|
//! | `.safetensors`      | clampnet's native checkpoint: weights, Adam's state, the run's settings    |
//! | `.keras`            | Keras 3's model file: config, weights, Adam's state (Keras' layout); clampnet adds its run settings to `metadata.json` |
//! | `.weights.h5` `.h5` | Keras 3's weights file (`model.load_weights`): weights and Adam's state, no architecture |
//! | `.json`             | a Keras model's JSON (`model.to_json()`): architecture, restrictions, optimizer; no weights |
//! | `.toml`             | clampnet's config                                                          |
//!
//! Whatever the format, a checkpoint reads as clampnet's tensors (`<layer>.<variable>`, Keras layouts,
//! the optimizer's state as `optimizer/<slot>/<tensor>`: Adam's `m` and `v`, SGD's `momentum`, ...) and
//! its `RunMeta`.

use std::path::Path;

use crate::checkpoint::{self, RunMeta, Weights};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keras;
use crate::keras::h5::{self, OptimizerLayout, OptimizerVars};
use crate::model::ModelPlan;
use crate::optim::{Schedule, Settings};
/// What a path's extension says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    Keras,
    WeightsH5,
    KerasJson,
    Toml,
}

impl Format {
    pub fn of(path: &Path) -> Format {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".keras") {
            Format::Keras
        } else if name.ends_with(".h5") || name.ends_with(".hdf5") {
            Format::WeightsH5
        } else if name.ends_with(".json") {
            Format::KerasJson
        } else if name.ends_with(".toml") {
            Format::Toml
        } else {
            Format::Safetensors
        }
    }
}

/// The text a model was described by: clampnet's TOML or a Keras model JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Toml(String),
    Keras(String),
}

impl Source {
    /// The config it describes (`what` names it in errors).
    pub fn parse(&self, what: &str) -> Result<Config> {
        match self {
            Source::Toml(t) => Config::parse(t),
            Source::Keras(j) => keras::parse_model(j).map(|m| m.config),
        }
        .map_err(|msg| Error::Config(format!("{what}: {msg}")))
    }

    /// The Keras model name (a TOML config's model is "sequential").
    pub fn keras_name(&self) -> String {
        match self {
            Source::Keras(j) => keras::parse_model(j)
                .map(|m| m.name)
                .unwrap_or_else(|_| "sequential".into()),
            Source::Toml(_) => "sequential".into(),
        }
    }

    /// Where a checkpoint's metadata keeps it.
    pub fn to_meta(&self, meta: &mut RunMeta) {
        match self {
            Source::Toml(t) => meta.config_toml = Some(t.clone()),
            Source::Keras(j) => meta.keras_config = Some(j.clone()),
        }
    }

    /// A checkpoint's stored model description, if any.
    pub fn from_meta(meta: &RunMeta) -> Option<Source> {
        meta.config_toml
            .clone()
            .map(Source::Toml)
            .or_else(|| meta.keras_config.clone().map(Source::Keras))
    }
}

/// A model description given to `--config`: TOML, a Keras JSON or a `.keras` file (whose weights come
/// with it).
pub struct ModelFile {
    pub source: Source,
    pub config: Config,
    /// a `.keras` file's weights, in the plan's order
    pub weights: Option<Vec<Vec<f32>>>,
}

fn config_err(path: &Path, msg: String) -> Error {
    Error::Config(format!("{}: {msg}", path.display()))
}

/// Read `--config PATH`.
pub fn load_config(path: &Path) -> Result<ModelFile> {
    match Format::of(path) {
        Format::Keras => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let a = keras::archive::read(&bytes).map_err(|m| config_err(path, m))?;
            let m = keras::parse_model(&a.config).map_err(|m| config_err(path, m))?;
            let plan = ModelPlan::new(&m.config.model)?;
            let weights = match a.weights {
                Some(w) => Some(
                    h5::read_weights(w, &plan)
                        .map_err(|msg| config_err(path, format!("model.weights.h5: {msg}")))?,
                ),
                None => None,
            };
            Ok(ModelFile {
                source: Source::Keras(a.config),
                config: m.config,
                weights,
            })
        }
        Format::KerasJson => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let m = keras::parse_model(&text).map_err(|m| config_err(path, m))?;
            Ok(ModelFile {
                source: Source::Keras(text),
                config: m.config,
                weights: None,
            })
        }
        Format::WeightsH5 | Format::Safetensors => Err(config_err(
            path,
            "a weights file holds no architecture: give --config a .toml, a Keras .json or a .keras file (weights go to --init)".into(),
        )),
        Format::Toml => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let config = Config::parse(&text).map_err(|m| config_err(path, m))?;
            Ok(ModelFile {
                source: Source::Toml(text),
                config,
                weights: None,
            })
        }
    }
}

/// A checkpoint in any format, as named tensors (with `optimizer/<slot>/<tensor>`) and its metadata.
/// A `.weights.h5` file has no architecture: `model` says which (else the reference model).
pub fn load_checkpoint(path: &Path, model: Option<&Source>) -> Result<(Weights, RunMeta)> {
    let err = |msg: String| Error::Checkpoint {
        path: path.into(),
        msg,
    };
    match Format::of(path) {
        Format::Safetensors => {
            let (w, meta) = checkpoint::load(path)?;
            Ok((w, RunMeta::from_map(&meta)))
        }
        Format::Keras => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let a = keras::archive::read(&bytes).map_err(err)?;
            let mut meta = a
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
                .and_then(|v| serde_json::from_value(v.get("clampnet")?.clone()).ok())
                .map(|m| RunMeta::from_map(&m))
                .unwrap_or_default();
            let source = Source::from_meta(&meta).unwrap_or(Source::Keras(a.config.clone()));
            if meta.config_toml.is_none() {
                meta.keras_config = Some(a.config.clone());
            }
            let cfg = source.parse("config.json")?;
            let plan = ModelPlan::new(&cfg.model)?;
            let h5 = a
                .weights
                .ok_or_else(|| err("the zip has no model.weights.h5".into()))?;
            named(&plan, &cfg.optimizer, h5, &mut meta)
                .map_err(|m| err(format!("model.weights.h5: {m}")))
        }
        Format::WeightsH5 => {
            let cfg = match model {
                Some(s) => s.parse("the model")?,
                None => Config::reference(),
            };
            let plan = ModelPlan::new(&cfg.model)?;
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let mut meta = RunMeta::default();
            if let Some(s) = model {
                s.to_meta(&mut meta);
            }
            named(&plan, &cfg.optimizer, bytes, &mut meta).map_err(|m| {
                let hint = if model.is_none() {
                    " (a .weights.h5 file holds no architecture: this read it as the reference model; give the model with --config)"
                } else {
                    ""
                };
                err(format!("{m}{hint}"))
            })
        }
        Format::KerasJson | Format::Toml => Err(err(
            "a model description, not a checkpoint: it holds no weights".into(),
        )),
    }
}

/// A Keras weights file's tensors, named by `plan`, with the optimizer's state (`settings`') when it has
/// it.
fn named(
    plan: &ModelPlan,
    settings: &Settings,
    h5: Vec<u8>,
    meta: &mut RunMeta,
) -> std::result::Result<(Weights, RunMeta), String> {
    let (weights, optimizer) = h5::read(h5, plan, OptimizerLayout::of(settings))?;
    let mut out: Weights = plan
        .params
        .iter()
        .zip(weights)
        .map(|(p, w)| (p.name.clone(), p.shape.clone(), w))
        .collect();
    if let Some(o) = optimizer {
        for (slot, tensors) in settings.method.slot_names().into_iter().zip(o.slots) {
            for (p, t) in plan.params.iter().zip(tensors) {
                out.push((format!("optimizer/{slot}/{}", p.name), p.shape.clone(), t));
            }
        }
        meta.optimizer_steps = meta.optimizer_steps.or(Some(o.iterations));
        meta.learning_rate = meta.learning_rate.or(o.learning_rate);
    }
    Ok((out, meta.clone()))
}

/// Write a checkpoint in the format `path`'s extension names: `tensors` (named, with
/// `optimizer/<slot>/<tensor>` when there is Adam state), the run's `meta`, and the model (`source`,
/// else the reference model) for the Keras formats. Atomic. Returns what the format could not hold.
pub fn save_checkpoint(
    path: &Path,
    tensors: &Weights,
    meta: &RunMeta,
    source: Option<&Source>,
) -> Result<Vec<String>> {
    let (bytes, warnings) = checkpoint_bytes(path, tensors, meta, source)?;
    checkpoint::write_atomic(path, &bytes)?;
    Ok(warnings)
}

/// `save_checkpoint`'s bytes, in the format `path`'s extension names, and what the format could not
/// hold; nothing is written (the page's downloads).
pub fn checkpoint_bytes(
    path: &Path,
    tensors: &Weights,
    meta: &RunMeta,
    source: Option<&Source>,
) -> Result<(Vec<u8>, Vec<String>)> {
    let err = |msg: String| Error::Checkpoint {
        path: path.into(),
        msg,
    };
    let format = Format::of(path);
    if format == Format::Safetensors {
        let bytes = checkpoint::serialize(path, tensors, Some(meta.to_map()))?;
        return Ok((bytes, Vec::new()));
    }
    if matches!(format, Format::KerasJson | Format::Toml) {
        return Err(err(
            "cannot write weights to a .json or .toml file: save as .keras, .weights.h5 or .safetensors".into(),
        ));
    }
    let cfg = match source {
        Some(s) => s.parse("the model")?,
        None => Config::reference(),
    };
    let plan = ModelPlan::new(&cfg.model)?;
    let weights = checkpoint::match_model(path, tensors, &plan)?;
    let slot = |s: &str| -> Option<Vec<Vec<f32>>> {
        plan.params
            .iter()
            .map(|p| {
                let n = format!("optimizer/{s}/{}", p.name);
                tensors.iter().find(|t| t.0 == n).map(|t| t.2.clone())
            })
            .collect()
    };
    let method = cfg.optimizer.method;
    let slots: Option<Vec<_>> = method.slot_names().into_iter().map(slot).collect();
    let optimizer = match (slots, meta.optimizer_steps) {
        (Some(slots), Some(steps)) => Some(OptimizerVars {
            iterations: steps,
            learning_rate: (cfg.optimizer.schedule == Schedule::Constant)
                .then(|| meta.learning_rate.unwrap_or(cfg.optimizer.lr)),
            slots,
            interleaved: method.keras_interleaved(),
        }),
        _ => None,
    };
    let optimizer_name = method.keras_class().to_lowercase();
    let name = source.map_or("sequential".into(), Source::keras_name);
    let h5 = h5::write(&plan, &name, &optimizer_name, &weights, optimizer.as_ref()).map_err(err)?;
    let mut warnings = Vec::new();
    let bytes = if format == Format::Keras {
        let json = keras::model_json(&cfg, &name, &mut warnings)?;
        let mut meta = meta.clone();
        // the model is in config.json; a TOML source stays too (what Keras cannot hold: proximal L1, clips per epoch)
        meta.keras_config = None;
        keras::archive::write(&json.to_string(), &h5, Some(&meta.to_map())).map_err(err)?
    } else {
        h5
    };
    Ok((bytes, warnings))
}
