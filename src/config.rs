//! Model and training configuration files (TOML), in Keras' vocabulary.
//!
//! ```toml
//! [model]
//! input = [28, 28, 1]
//!
//! [[model.layers]]
//! type = "conv2d"
//! filters = 32
//! kernel_size = 3
//! activation = "relu"
//! kernel_regularizer = { l1 = 0.01 }
//! kernel_constraint = { unit_norm = { axis = [0, 1, 2] } }
//!
//! [[model.layers]]
//! type = "max_pool2d"
//! pool_size = 2
//!
//! [[model.layers]]
//! type = "flatten"
//!
//! [[model.layers]]
//! type = "dense"
//! units = 10
//! activation = "softmax"
//!
//! [optimizer]          # Adam, Keras defaults
//! learning_rate = 0.001
//!
//! [training]
//! epochs = 3
//! batch_size = 32
//! ```
//!
//! Unknown keys and bad values are errors naming the key, the line and what is allowed (serde + toml
//! report the position; the value checks run inside deserialization so they carry it too).

use std::path::Path;

use serde::Deserialize;

use crate::callbacks::{Direction, EarlyStopping, Monitor, ReduceLrOnPlateau};
use crate::error::{Error, Result};
use crate::layers::LayerSpec;
use crate::losses::{LossKind, LossSpec};
use crate::model::{ModelPlan, ModelSpec};
use crate::optim::settings::MAX_PIECES;
use crate::optim::{GradClip, Method, Schedule, Settings};
use crate::restrict::{Constraint, Regularizer, Restrictions};
use de::{beta, non_negative_f32, opt_non_negative_f32, opt_positive_f32, opt_positive_usize};

/// Value checks that run while parsing, so their errors carry the key and the line (also used by the
/// layer kinds' settings in `src/layers/`).
pub mod de {
    use serde::{Deserialize, Deserializer};

    use crate::model::{Activation, Padding};

    pub fn positive_f32<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
        let v = f64::deserialize(d)?;
        if v > 0.0 && v.is_finite() {
            Ok(v as f32)
        } else {
            Err(serde::de::Error::custom(format!(
                "must be a positive number, got {v}"
            )))
        }
    }

    pub fn opt_positive_f32<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<f32>, D::Error> {
        positive_f32(d).map(Some)
    }

    pub fn non_negative_f32<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
        let v = f64::deserialize(d)?;
        if v >= 0.0 && v.is_finite() {
            Ok(v as f32)
        } else {
            Err(serde::de::Error::custom(format!(
                "must be a number >= 0, got {v}"
            )))
        }
    }

    pub fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
        let v = usize::deserialize(d)?;
        if v > 0 {
            Ok(v)
        } else {
            Err(serde::de::Error::custom("must be at least 1"))
        }
    }

    pub fn opt_non_negative_f32<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<f32>, D::Error> {
        non_negative_f32(d).map(Some)
    }

    pub fn opt_positive_usize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<usize>, D::Error> {
        positive_usize(d).map(Some)
    }

    pub fn beta<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f32>, D::Error> {
        let v = f64::deserialize(d)?;
        if (0.0..1.0).contains(&v) {
            Ok(Some(v as f32))
        } else {
            Err(serde::de::Error::custom(format!(
                "must be in [0, 1), got {v}"
            )))
        }
    }

    pub fn default_pool() -> usize {
        2
    }

    pub fn one() -> usize {
        1
    }

    pub fn yes() -> bool {
        true
    }

    pub fn valid() -> Padding {
        Padding::Valid
    }

    pub fn linear() -> Activation {
        Activation::Linear
    }
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub model: Option<ModelSection>,
    #[serde(default)]
    pub optimizer: OptimizerSection,
    #[serde(default)]
    pub loss: LossSection,
    #[serde(default)]
    pub training: TrainingSection,
}

/// `[loss]`: Keras' loss by its name, `from_logits` and `label_smoothing`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    /// "sparse_categorical_crossentropy" (default) or "categorical_crossentropy"
    #[serde(default, rename = "type")]
    pub kind: Option<LossName>,
    #[serde(default)]
    pub from_logits: bool,
    #[serde(default, deserialize_with = "non_negative_f32")]
    pub label_smoothing: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossName {
    SparseCategoricalCrossentropy,
    CategoricalCrossentropy,
}

impl LossSection {
    pub fn resolve(&self) -> LossSpec {
        LossSpec {
            kind: match self.kind {
                Some(LossName::CategoricalCrossentropy) => LossKind::Categorical,
                _ => LossKind::Sparse,
            },
            from_logits: self.from_logits,
            label_smoothing: self.label_smoothing,
        }
    }
}

/// `[model]`: the input shape and the layers, each a `[[model.layers]]` table whose `type` names its
/// kind in the registry (`src/layers/`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// (H, W, C)
    #[serde(default = "default_input")]
    pub input: [usize; 3],
    pub layers: Vec<LayerSpec>,
}

fn default_input() -> [usize; 3] {
    [28, 28, 1]
}

/// `{ l1 = .. }`, `{ l2 = .. }`, `{ l1 = .., l2 = .. }`, optionally `proximal = true` (exact-zero L1).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegularizerConfig {
    #[serde(default, deserialize_with = "non_negative_f32")]
    pub l1: f32,
    #[serde(default, deserialize_with = "non_negative_f32")]
    pub l2: f32,
    #[serde(default)]
    pub proximal: bool,
}

/// Keras' `axis`: one axis or a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Axis {
    One(usize),
    Many(Vec<usize>),
}

impl Axis {
    fn axes(&self) -> Vec<usize> {
        match self {
            Axis::One(a) => vec![*a],
            Axis::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Every {
    #[default]
    Step,
    Epoch,
}

fn two() -> f32 {
    2.0
}
fn one() -> f32 {
    1.0
}

/// A Keras constraint: `{ max_norm = { max_value = 3, axis = [0, 1, 2] } }`, `{ unit_norm = {} }`,
/// `{ min_max_norm = { .. } }`, `"non_neg"`, `{ clip = { min = -1, max = 1, every = "epoch" } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ConstraintConfig {
    MaxNorm {
        #[serde(default = "two", deserialize_with = "non_negative_f32")]
        max_value: f32,
        #[serde(default)]
        axis: Option<Axis>,
    },
    MinMaxNorm {
        #[serde(default, deserialize_with = "non_negative_f32")]
        min_value: f32,
        #[serde(default = "one", deserialize_with = "non_negative_f32")]
        max_value: f32,
        #[serde(default = "one", deserialize_with = "non_negative_f32")]
        rate: f32,
        #[serde(default)]
        axis: Option<Axis>,
    },
    UnitNorm {
        #[serde(default)]
        axis: Option<Axis>,
    },
    NonNeg,
    Clip(ClipConfig),
}

/// `{ min = .., max = .., every = "step" | "epoch" }`, checked while parsing (so errors carry the line).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ClipRaw")]
pub struct ClipConfig {
    pub min: f32,
    pub max: f32,
    pub every: Every,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClipRaw {
    min: f32,
    max: f32,
    #[serde(default)]
    every: Every,
}

impl TryFrom<ClipRaw> for ClipConfig {
    type Error = String;
    fn try_from(r: ClipRaw) -> std::result::Result<Self, String> {
        if r.min
            .partial_cmp(&r.max)
            .is_none_or(|o| o == std::cmp::Ordering::Greater)
        {
            return Err(format!(
                "clip min ({}) must not exceed max ({})",
                r.min, r.max
            ));
        }
        Ok(ClipConfig {
            min: r.min,
            max: r.max,
            every: r.every,
        })
    }
}

/// `[optimizer]`: Keras' optimizer classes and their settings, by Keras' names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSection {
    /// "adam" (default), "adamw", "sgd", "rmsprop"
    #[serde(default, rename = "type")]
    pub kind: Option<OptimizerKind>,
    /// a number, or a schedule table (`type = "exponential_decay"`, ...)
    #[serde(default)]
    pub learning_rate: Option<LearningRate>,
    #[serde(default, deserialize_with = "beta")]
    pub beta_1: Option<f32>,
    #[serde(default, deserialize_with = "beta")]
    pub beta_2: Option<f32>,
    #[serde(default, deserialize_with = "opt_positive_f32")]
    pub epsilon: Option<f32>,
    #[serde(default, deserialize_with = "opt_non_negative_f32")]
    pub weight_decay: Option<f32>,
    /// sgd, rmsprop
    #[serde(default, deserialize_with = "opt_non_negative_f32")]
    pub momentum: Option<f32>,
    /// sgd
    #[serde(default)]
    pub nesterov: Option<bool>,
    /// rmsprop
    #[serde(default, deserialize_with = "beta")]
    pub rho: Option<f32>,
    /// rmsprop
    #[serde(default)]
    pub centered: Option<bool>,
    #[serde(default, deserialize_with = "opt_positive_f32")]
    pub clipnorm: Option<f32>,
    #[serde(default, deserialize_with = "opt_positive_f32")]
    pub global_clipnorm: Option<f32>,
    #[serde(default, deserialize_with = "opt_positive_f32")]
    pub clipvalue: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adam,
    Adamw,
    Sgd,
    Rmsprop,
}

/// `learning_rate`: a number or one of Keras' schedules (checked while parsing, so errors carry the line).
#[derive(Debug, Clone)]
pub enum LearningRate {
    Value(f64),
    Schedule(ScheduleConfig),
}

impl<'de> Deserialize<'de> for LearningRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LearningRate;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a positive number or a schedule table (type = \"exponential_decay\", ...)",
                )
            }
            fn visit_f64<E: serde::de::Error>(
                self,
                v: f64,
            ) -> std::result::Result<LearningRate, E> {
                if v > 0.0 && v.is_finite() {
                    Ok(LearningRate::Value(v))
                } else {
                    Err(E::custom(format!("must be a positive number, got {v}")))
                }
            }
            fn visit_i64<E: serde::de::Error>(
                self,
                v: i64,
            ) -> std::result::Result<LearningRate, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: serde::de::Error>(
                self,
                v: u64,
            ) -> std::result::Result<LearningRate, E> {
                self.visit_f64(v as f64)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<LearningRate, A::Error> {
                ScheduleConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(LearningRate::Schedule)
            }
        }
        d.deserialize_any(V)
    }
}

/// Keras' learning-rate schedules, by their snake_case names (`type = "exponential_decay"`), with
/// Keras' argument names and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    ExponentialDecay {
        initial_learning_rate: f64,
        decay_steps: f64,
        decay_rate: f64,
        #[serde(default)]
        staircase: bool,
    },
    InverseTimeDecay {
        initial_learning_rate: f64,
        decay_steps: f64,
        decay_rate: f64,
        #[serde(default)]
        staircase: bool,
    },
    CosineDecay {
        initial_learning_rate: f64,
        decay_steps: f64,
        #[serde(default)]
        alpha: f64,
        #[serde(default)]
        warmup_target: Option<f64>,
        #[serde(default)]
        warmup_steps: f64,
    },
    PiecewiseConstantDecay {
        boundaries: Vec<i64>,
        values: Vec<f64>,
    },
}

impl ScheduleConfig {
    /// (the initial learning rate, the schedule)
    pub fn resolve(&self) -> std::result::Result<(f32, Schedule), String> {
        Ok(match *self {
            ScheduleConfig::ExponentialDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                staircase,
            } => (
                initial_learning_rate as f32,
                Schedule::ExponentialDecay {
                    decay_steps: decay_steps as f32,
                    decay_rate: decay_rate as f32,
                    staircase,
                },
            ),
            ScheduleConfig::InverseTimeDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                staircase,
            } => (
                initial_learning_rate as f32,
                Schedule::InverseTimeDecay {
                    decay_steps: decay_steps as f32,
                    decay_rate: decay_rate as f32,
                    staircase,
                },
            ),
            ScheduleConfig::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => (
                initial_learning_rate as f32,
                Schedule::CosineDecay {
                    decay_steps: decay_steps as f32,
                    alpha: alpha as f32,
                    warmup_target: warmup_target.map(|t| t as f32),
                    warmup_steps: warmup_steps as f32,
                },
            ),
            ScheduleConfig::PiecewiseConstantDecay {
                ref boundaries,
                ref values,
            } => {
                let n = boundaries.len();
                if n == 0 || n > MAX_PIECES || values.len() != n + 1 {
                    return Err(format!(
                        "piecewise_constant_decay needs 1 to {MAX_PIECES} boundaries and one value more than boundaries, got {n} and {}",
                        values.len()
                    ));
                }
                let mut b = [0i64; MAX_PIECES];
                let mut v = [0f32; MAX_PIECES + 1];
                b[..n].copy_from_slice(boundaries);
                for (d, &x) in v.iter_mut().zip(values) {
                    *d = x as f32;
                }
                (
                    v[0],
                    Schedule::PiecewiseConstantDecay {
                        n,
                        boundaries: b,
                        values: v,
                    },
                )
            }
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    #[serde(default, deserialize_with = "opt_positive_usize")]
    pub epochs: Option<usize>,
    #[serde(default, deserialize_with = "opt_positive_usize")]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub shuffle: Option<bool>,
    /// Keras' `validation_split`: the last fraction of the training data, held out before shuffling
    #[serde(default)]
    pub validation_split: Option<f64>,
    /// Keras' `class_weight`: `{ "0" = 1.0, "3" = 2.5 }` (a class not named weighs 1)
    #[serde(default)]
    pub class_weight: Option<std::collections::BTreeMap<String, f64>>,
    #[serde(default)]
    pub early_stopping: Option<EarlyStoppingConfig>,
    #[serde(default)]
    pub reduce_lr_on_plateau: Option<ReduceLrConfig>,
}

/// `[training.early_stopping]`: Keras' `EarlyStopping` arguments and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingConfig {
    #[serde(default = "val_loss")]
    pub monitor: String,
    #[serde(default)]
    pub min_delta: f64,
    #[serde(default)]
    pub patience: usize,
    #[serde(default)]
    pub mode: Direction,
    #[serde(default)]
    pub baseline: Option<f64>,
    #[serde(default)]
    pub restore_best_weights: bool,
    #[serde(default)]
    pub start_from_epoch: usize,
}

/// `[training.reduce_lr_on_plateau]`: Keras' `ReduceLROnPlateau` arguments and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReduceLrConfig {
    #[serde(default = "val_loss")]
    pub monitor: String,
    #[serde(default = "tenth")]
    pub factor: f64,
    #[serde(default = "ten")]
    pub patience: usize,
    #[serde(default)]
    pub mode: Direction,
    #[serde(default = "ten_thousandth")]
    pub min_delta: f64,
    #[serde(default)]
    pub cooldown: usize,
    #[serde(default)]
    pub min_lr: f64,
}

fn val_loss() -> String {
    "val_loss".into()
}
fn tenth() -> f64 {
    0.1
}
fn ten() -> usize {
    10
}
fn ten_thousandth() -> f64 {
    1e-4
}

impl EarlyStoppingConfig {
    pub fn resolve(&self) -> std::result::Result<EarlyStopping, String> {
        Ok(EarlyStopping {
            monitor: Monitor::new(&self.monitor, self.mode, self.min_delta)
                .map_err(|e| format!("early_stopping: {e}"))?,
            patience: self.patience,
            baseline: self.baseline,
            restore_best_weights: self.restore_best_weights,
            start_from_epoch: self.start_from_epoch,
            state: Default::default(),
        })
    }
}

impl ReduceLrConfig {
    pub fn resolve(&self) -> std::result::Result<ReduceLrOnPlateau, String> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(format!(
                "reduce_lr_on_plateau: factor must be in (0, 1), got {} (Keras does not support a factor >= 1)",
                self.factor
            ));
        }
        if !(self.min_lr >= 0.0 && self.min_lr.is_finite()) {
            return Err(format!(
                "reduce_lr_on_plateau: min_lr must be >= 0, got {}",
                self.min_lr
            ));
        }
        Ok(ReduceLrOnPlateau {
            monitor: Monitor::new(&self.monitor, self.mode, self.min_delta)
                .map_err(|e| format!("reduce_lr_on_plateau: {e}"))?,
            factor: self.factor,
            patience: self.patience,
            cooldown: self.cooldown,
            min_lr: self.min_lr,
            state: Default::default(),
        })
    }
}

/// A configuration resolved into what the trainer takes.
#[derive(Debug, Clone)]
pub struct Config {
    /// the architecture (the layers' restriction settings are resolved into `restrictions`)
    pub model: ModelSpec,
    pub restrictions: Restrictions,
    pub optimizer: Settings,
    pub loss: LossSpec,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// Keras' `validation_split` (None: no validation data)
    pub validation_split: Option<f64>,
    /// Keras' `class_weight`: (class, weight) pairs
    pub class_weight: Option<Vec<(usize, f32)>>,
    pub early_stopping: Option<EarlyStopping>,
    pub reduce_lr: Option<ReduceLrOnPlateau>,
    /// notes for the user (e.g. Keras' default constraint axis on a conv kernel)
    pub warnings: Vec<String>,
}

impl Config {
    /// The reference model, no restriction, Keras defaults.
    pub fn reference() -> Self {
        Config {
            model: ModelSpec::reference(),
            restrictions: Restrictions::default(),
            optimizer: Settings::default(),
            loss: LossSpec::default(),
            epochs: 3,
            batch_size: 32,
            seed: 0,
            shuffle: true,
            validation_split: None,
            class_weight: None,
            early_stopping: None,
            reduce_lr: None,
            warnings: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|msg| Error::Config(format!("{}: {msg}", path.display())))
    }

    /// Parse a TOML text; the error names the key and the line. The checks that need the whole model
    /// (a layer's shapes, an optimizer's keys) run after parsing: their errors get the line of the
    /// layer's `[[model.layers]]` table or of the key.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        Self::parse_unlocated(text).map_err(|e| match locate(text, &e) {
            Some(line) => format!("line {line}: {e}"),
            None => e,
        })
    }

    fn parse_unlocated(text: &str) -> std::result::Result<Self, String> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        let mut c = Config::reference();
        if let Some(m) = file.model {
            c.model = ModelSpec {
                input: m.input,
                layers: m.layers,
                names: Vec::new(),
            };
            // each layer's <param>_regularizer / <param>_constraint, taken out of the architecture
            let pending: Vec<_> = c
                .model
                .layers
                .iter_mut()
                .map(|l| l.kind_mut().take_restrictions())
                .collect();
            let plan = ModelPlan::new(&c.model).map_err(|e| e.to_string())?;
            for (layer, restrictions) in plan.layers.iter().zip(pending) {
                for (suffix, reg, cons) in restrictions {
                    let name = format!("{}.{suffix}", layer.name);
                    match plan.param(&name) {
                        Some(p) => c.restrict(p, reg, cons)?,
                        None if reg.is_none() && cons.is_none() => {}
                        None => {
                            return Err(format!(
                                "layer '{}': {suffix}_regularizer / {suffix}_constraint set, but the layer has no {suffix} (use_bias = false)",
                                layer.name
                            ))
                        }
                    }
                }
            }
            c.restrictions.validate(&plan).map_err(|e| e.to_string())?;
        }
        c.optimizer = optimizer(file.optimizer)?;
        c.loss = file.loss.resolve();
        c.check_loss()?;
        let t = file.training;
        c.epochs = t.epochs.unwrap_or(c.epochs);
        c.batch_size = t.batch_size.unwrap_or(c.batch_size);
        c.seed = t.seed.unwrap_or(c.seed);
        c.shuffle = t.shuffle.unwrap_or(c.shuffle);
        c.validation_split = t.validation_split;
        c.class_weight = t
            .class_weight
            .as_ref()
            .map(|m| {
                m.iter()
                    .map(|(k, &v)| {
                        let class = k.parse::<usize>().map_err(|_| {
                            format!("class_weight: key \"{k}\" is not a class index (0, 1, ...)")
                        })?;
                        Ok((class, v as f32))
                    })
                    .collect::<std::result::Result<Vec<_>, String>>()
            })
            .transpose()?;
        c.early_stopping = t.early_stopping.as_ref().map(|e| e.resolve()).transpose()?;
        c.reduce_lr = t
            .reduce_lr_on_plateau
            .as_ref()
            .map(|r| r.resolve())
            .transpose()?;
        c.check_fit()?;
        Ok(c)
    }

    /// Keras' class_weight as one weight per class of the model (1 where not named).
    pub fn class_weights(&self, classes: usize) -> std::result::Result<Option<Vec<f32>>, String> {
        let Some(pairs) = &self.class_weight else {
            return Ok(None);
        };
        let mut w = vec![1.0f32; classes];
        for &(c, v) in pairs {
            if c >= classes {
                return Err(format!(
                    "class_weight names class {c}, but the model has {classes} classes (0..{})",
                    classes - 1
                ));
            }
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!(
                    "class_weight of class {c} must be a number >= 0, got {v}"
                ));
            }
            w[c] = v;
        }
        Ok(Some(w))
    }

    /// The fit options are in range and fit the optimizer.
    pub fn check_fit(&self) -> std::result::Result<(), String> {
        if let Some(v) = self.validation_split {
            if !(v > 0.0 && v < 1.0) {
                return Err(format!("validation_split must be in (0, 1), got {v}"));
            }
        }
        if self.reduce_lr.is_some() && self.optimizer.schedule != Schedule::Constant {
            return Err("reduce_lr_on_plateau needs a constant learning rate: the optimizer's follows a schedule (Keras refuses this too)".into());
        }
        Ok(())
    }

    /// The loss fits the model's last layer (softmax, or logits with from_logits).
    pub fn check_loss(&self) -> std::result::Result<(), String> {
        let plan = ModelPlan::new(&self.model).map_err(|e| e.to_string())?;
        self.loss.validate(plan.softmax).map_err(|e| {
            format!(
                "loss: {}",
                e.to_string().trim_start_matches("invalid setting: ")
            )
        })
    }

    /// Resolve a tensor's regularizer and constraint settings into `restrictions`.
    pub(crate) fn restrict(
        &mut self,
        p: &crate::model::ParamSpec,
        reg: Option<RegularizerConfig>,
        cons: Option<ConstraintConfig>,
    ) -> std::result::Result<(), String> {
        if let Some(r) = reg {
            if r.proximal && r.l1 == 0.0 {
                return Err(format!("{}: `proximal = true` needs an l1 factor", p.name));
            }
            self.restrictions.entry(&p.name).regularizer = Some(Regularizer {
                l1: r.l1,
                l2: r.l2,
                proximal: r.proximal,
            });
        }
        if let Some(cc) = cons {
            let (constraint, every) =
                resolve_constraint(&cc, &p.name, &p.shape, &mut self.warnings)?;
            let e = self.restrictions.entry(&p.name);
            match every {
                Every::Step => e.constraints.push(constraint),
                Every::Epoch => e.epoch_constraints.push(constraint),
            }
        }
        Ok(())
    }
}

/// The line (from 1) an error found after parsing is about: `layer N (...)` -> the N-th
/// `[[model.layers]]` table; "optimizer: `key` ..." -> that key in `[optimizer]`. None: the error
/// already names its line (toml's), or names no place in the text.
fn locate(text: &str, error: &str) -> Option<usize> {
    let lines = || text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let error = error.strip_prefix("model: ").unwrap_or(error);
    if let Some(rest) = error.strip_prefix("layer ") {
        let n: usize = rest.split(' ').next()?.parse().ok()?;
        return lines()
            .filter(|(_, l)| l.starts_with("[[model.layers]]"))
            .nth(n)
            .map(|(i, _)| i);
    }
    let key = error.strip_prefix("optimizer: `")?.split('`').next()?;
    let mut in_optimizer = false;
    for (i, l) in lines() {
        if l.starts_with('[') {
            in_optimizer = l.starts_with("[optimizer]");
        } else if in_optimizer && l.split('=').next().map(str::trim) == Some(key) {
            return Some(i);
        }
    }
    None
}

/// The optimizer section, Keras' defaults where a key is absent.
pub(crate) fn optimizer(o: OptimizerSection) -> std::result::Result<Settings, String> {
    let kind = o.kind.unwrap_or(OptimizerKind::Adam);
    let name = match kind {
        OptimizerKind::Adam => "adam",
        OptimizerKind::Adamw => "adamw",
        OptimizerKind::Sgd => "sgd",
        OptimizerKind::Rmsprop => "rmsprop",
    };
    let not_for = |key: &str, given: bool, ok: &[OptimizerKind], owners: &str| {
        if given && !ok.contains(&kind) {
            Err(format!(
                "optimizer: `{key}` is a setting of {owners}, not of {name}"
            ))
        } else {
            Ok(())
        }
    };
    use OptimizerKind::*;
    not_for(
        "beta_1",
        o.beta_1.is_some(),
        &[Adam, Adamw],
        "adam and adamw",
    )?;
    not_for(
        "beta_2",
        o.beta_2.is_some(),
        &[Adam, Adamw],
        "adam and adamw",
    )?;
    not_for(
        "momentum",
        o.momentum.is_some(),
        &[Sgd, Rmsprop],
        "sgd and rmsprop",
    )?;
    not_for("nesterov", o.nesterov.is_some(), &[Sgd], "sgd")?;
    not_for(
        "epsilon",
        o.epsilon.is_some(),
        &[Adam, Adamw, Rmsprop],
        "adam, adamw and rmsprop",
    )?;
    not_for("rho", o.rho.is_some(), &[Rmsprop], "rmsprop")?;
    not_for("centered", o.centered.is_some(), &[Rmsprop], "rmsprop")?;
    let default = Method::keras_default(name).ok_or("unknown optimizer")?;
    let method = match default {
        Method::Adam { beta1, beta2, eps } | Method::AdamW { beta1, beta2, eps } => {
            let (beta1, beta2, eps) = (
                o.beta_1.unwrap_or(beta1),
                o.beta_2.unwrap_or(beta2),
                o.epsilon.unwrap_or(eps),
            );
            if kind == Adamw {
                Method::AdamW { beta1, beta2, eps }
            } else {
                Method::Adam { beta1, beta2, eps }
            }
        }
        Method::Sgd { momentum, nesterov } => Method::Sgd {
            momentum: o.momentum.unwrap_or(momentum),
            nesterov: o.nesterov.unwrap_or(nesterov),
        },
        Method::RmsProp {
            rho,
            momentum,
            eps,
            centered,
        } => Method::RmsProp {
            rho: o.rho.unwrap_or(rho),
            momentum: o.momentum.unwrap_or(momentum),
            eps: o.epsilon.unwrap_or(eps),
            centered: o.centered.unwrap_or(centered),
        },
    };
    let (lr, schedule) = match &o.learning_rate {
        None => (Settings::default().lr, Schedule::Constant),
        Some(LearningRate::Value(v)) if *v > 0.0 && v.is_finite() => {
            (*v as f32, Schedule::Constant)
        }
        Some(LearningRate::Value(v)) => {
            return Err(format!(
                "optimizer: learning_rate must be a positive number, got {v}"
            ))
        }
        Some(LearningRate::Schedule(s)) => s.resolve().map_err(|e| format!("optimizer: {e}"))?,
    };
    let weight_decay = o
        .weight_decay
        .unwrap_or(if kind == Adamw { 0.004 } else { 0.0 });
    let settings = Settings {
        lr,
        weight_decay,
        schedule,
        method,
        clip: match (o.clipnorm, o.global_clipnorm, o.clipvalue) {
            (None, None, None) => GradClip::None,
            (Some(v), None, None) => GradClip::Norm(v),
            (None, Some(v), None) => GradClip::GlobalNorm(v),
            (None, None, Some(v)) => GradClip::Value(v),
            _ => return Err("optimizer: only one of clipnorm, global_clipnorm, clipvalue can be set (as in Keras)".into()),
        },
    };
    settings.validate().map_err(|e| format!("optimizer: {e}"))?;
    Ok(settings)
}

/// A constraint config for the tensor `name` of Keras `shape`. Keras' default axis is 0; on a conv
/// kernel (kh, kw, in, out) that normalises columns along kh, not filters: say so.
fn resolve_constraint(
    c: &ConstraintConfig,
    name: &str,
    shape: &[usize],
    warnings: &mut Vec<String>,
) -> std::result::Result<(Constraint, Every), String> {
    let mut axes = |axis: &Option<Axis>, what: &str| -> Vec<usize> {
        match axis {
            Some(a) => a.axes(),
            None => {
                if shape.len() == 4 {
                    warnings.push(format!(
                        "{name}: {what} uses Keras' default axis = 0, which on a conv kernel (kh, kw, in, out) normalises each \
                         column along kh, not each filter (a 3x3 filter ends with squared norm 3). For per-filter norms set \
                         axis = [0, 1, 2]."
                    ));
                }
                vec![0]
            }
        }
    };
    Ok(match c {
        ConstraintConfig::MaxNorm { max_value, axis } => (
            Constraint::MaxNorm {
                max_value: *max_value,
                axes: axes(axis, "max_norm"),
            },
            Every::Step,
        ),
        ConstraintConfig::MinMaxNorm {
            min_value,
            max_value,
            rate,
            axis,
        } => {
            if min_value > max_value {
                return Err(format!("{name}: min_max_norm min_value ({min_value}) must not exceed max_value ({max_value})"));
            }
            (
                Constraint::MinMaxNorm {
                    min_value: *min_value,
                    max_value: *max_value,
                    rate: *rate,
                    axes: axes(axis, "min_max_norm"),
                },
                Every::Step,
            )
        }
        ConstraintConfig::UnitNorm { axis } => (
            Constraint::UnitNorm {
                axes: axes(axis, "unit_norm"),
            },
            Every::Step,
        ),
        ConstraintConfig::NonNeg => (Constraint::NonNeg, Every::Step),
        ConstraintConfig::Clip(c) => (
            Constraint::ClipByValue {
                lo: c.min,
                hi: c.max,
            },
            c.every,
        ),
    })
}
