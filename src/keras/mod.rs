//! Keras 3 files in and out: a model's JSON (`model.to_json()`, the `config.json` of a `.keras` file)
//! read into clampnet's `Config` and written from one, the weights file (`model.weights.h5`, `h5`),
//! and the `.keras` zip that holds both (`archive`).
//!
//! Reading refuses, before any GPU work, whatever clampnet cannot train exactly as Keras would: the
//! error names the layer and the setting, and lists what is supported. Each layer kind maps its own
//! Keras keys (`FromKeras` and `Layer::keras_config` in its file under `src/layers/`); the restrictions,
//! the optimizer and the loss are mapped here.
//!
//! clip_by_value has no Keras class: clampnet reads and writes it as the serializable class
//! `clampnet>ClipByValue` (`min_value`, `max_value`), which `tools/clampnet_keras.py` registers in Keras.

pub mod archive;
pub mod h5;
mod layer_config;

use serde_json::{json, Map, Value};

pub use layer_config::{
    activation_name, base, default_initializers, object, FromKeras, LayerConfig,
};

use crate::config::{Config, ConstraintConfig, OptimizerSection, RegularizerConfig};
use crate::layers::LayerSpec;
use crate::losses::{LossKind, LossSpec};
use crate::model::{ModelPlan, ModelSpec};
use crate::optim::{GradClip, Method, Schedule, Settings};
use crate::restrict::{Constraint, Regularizer};

/// The Keras version whose format clampnet writes (`metadata.json`), the one its fixtures were made with.
pub const KERAS_VERSION: &str = "3.15.1";

/// clip_by_value's registered Keras name.
pub const CLIP_CLASS: &str = "clampnet>ClipByValue";

const REGULARIZERS: &str = "L1, L2, L1L2";
const OPTIMIZERS: &str = "Adam, AdamW, SGD, RMSprop";
const SCHEDULES: &str = "ExponentialDecay, InverseTimeDecay, CosineDecay, PiecewiseConstantDecay";
const CONSTRAINTS: &str = "MaxNorm, MinMaxNorm, UnitNorm, NonNeg, clampnet>ClipByValue";

/// A Keras model read from its JSON.
#[derive(Clone, Debug)]
pub struct KerasModel {
    /// the model's name ("sequential")
    pub name: String,
    /// the architecture, restrictions and (when the file was compiled) optimizer
    pub config: Config,
    /// the file had a `compile_config` (its optimizer and loss were read)
    pub compiled: bool,
}

/// Read a model's JSON text (`model.to_json()` or a `.keras` file's `config.json`).
pub fn parse_model(text: &str) -> Result<KerasModel, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("not a Keras model JSON: {e}"))?;
    read_model(&v)
}

/// Read a model's JSON value.
pub fn read_model(v: &Value) -> Result<KerasModel, String> {
    let class = v.get("class_name").and_then(Value::as_str).unwrap_or("");
    let config = v
        .get("config")
        .and_then(Value::as_object)
        .ok_or("not a Keras model JSON: no `config` object")?;
    let layers = config
        .get("layers")
        .and_then(Value::as_array)
        .ok_or("not a Keras model JSON: its config has no `layers` list")?;
    match class {
        "Sequential" => {}
        "Functional" | "Model" => check_chain(config, layers)?,
        c => {
            return Err(format!(
                "the model class \"{c}\" is not supported (supported: Sequential, and Functional models whose layers form one chain)"
            ))
        }
    }
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("sequential")
        .to_string();
    let Layers {
        input,
        specs,
        names,
        restrictions,
    } = read_layers(layers)?;
    let input = match input {
        Some(s) => s,
        None => config
            .get("build_input_shape")
            .or_else(|| v.get("build_config").and_then(|b| b.get("input_shape")))
            .map(dims)
            .transpose()?
            .ok_or("the model has no input shape: add keras.Input((H, W, C)) as its first layer")?,
    };
    let model = ModelSpec {
        input,
        layers: specs,
        names,
    };
    let mut cfg = Config::reference();
    cfg.model = model;
    let plan = ModelPlan::new(&cfg.model).map_err(|e| e.to_string())?;
    restrict(&mut cfg, &plan, restrictions)?;
    cfg.restrictions
        .validate(&plan)
        .map_err(|e| e.to_string())?;
    let compiled = match v.get("compile_config").filter(|c| !c.is_null()) {
        Some(cc) => {
            compile(&mut cfg, cc)?;
            true
        }
        None => false,
    };
    Ok(KerasModel {
        name,
        config: cfg,
        compiled,
    })
}

/// Per layer, what the model's `layers` list says (but the InputLayer): the input shape when given,
/// the layer kinds, their names, and their restriction settings (`<param>_regularizer` /
/// `<param>_constraint`, resolved once the plan knows the parameters' shapes).
fn read_layers(layers: &[Value]) -> Result<Layers, String> {
    let mut input = None;
    let mut specs = Vec::new();
    let mut names = Vec::new();
    let mut restrictions = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let class = l.get("class_name").and_then(Value::as_str).unwrap_or("");
        let empty = Map::new();
        let map = l.get("config").and_then(Value::as_object).unwrap_or(&empty);
        let lname = map.get("name").and_then(Value::as_str).unwrap_or("");
        let c = LayerConfig {
            class,
            name: lname,
            map,
        };
        let at = |msg: String| format!("layer {i} '{lname}' ({class}): {msg}");
        if class == "InputLayer" {
            if i != 0 {
                return Err(at(
                    "an InputLayer after the first layer is not supported".into()
                ));
            }
            input = Some(input_shape(map).map_err(at)?);
            continue;
        }
        if input.is_none() {
            // a Keras 2 style first layer with its own input shape
            if let Some(s) = map
                .get("batch_input_shape")
                .or_else(|| l.get("build_config").and_then(|b| b.get("input_shape")))
            {
                input = Some(dims(s).map_err(at)?);
            }
        }
        common_keys(&c, l).map_err(at)?;
        let spec = match LayerSpec::from_keras(class, &c) {
            Some(r) => r.map_err(at)?,
            None => {
                return Err(at(format!(
                    "this layer class is not supported (clampnet trains: {})",
                    LayerSpec::keras_classes().join(", ")
                )))
            }
        };
        if lname.is_empty() {
            return Err(at("the layer has no name".into()));
        }
        restrictions.push(collect_restrictions(map));
        specs.push(spec);
        names.push(lname.to_string());
    }
    Ok(Layers {
        input,
        specs,
        names,
        restrictions,
    })
}

/// What `read_layers` found.
struct Layers {
    input: Option<[usize; 3]>,
    specs: Vec<LayerSpec>,
    names: Vec<String>,
    /// per layer, its set `<param>_regularizer` / `<param>_constraint` keys
    restrictions: Vec<Vec<(String, Value)>>,
}

/// The layers' restriction settings, resolved against the plan's parameters into `cfg.restrictions`.
fn restrict(
    cfg: &mut Config,
    plan: &ModelPlan,
    restrictions: Vec<Vec<(String, Value)>>,
) -> Result<(), String> {
    for (layer, mut raw) in plan.layers.iter().zip(restrictions) {
        let at = |key: &str, m: String| {
            format!(
                "layer '{}' ({}): {key}: {m}",
                layer.name,
                layer.spec.kind().keras_class()
            )
        };
        // in the layer's parameter order (kernel, then bias), as a TOML config resolves them
        for &pi in &layer.params {
            let p = &plan.params[pi];
            let suffix = p.name.rsplit('.').next().unwrap_or("");
            let mut take = |kind: &str| {
                let key = format!("{suffix}_{kind}");
                let v = raw
                    .iter()
                    .position(|(k, _)| *k == key)
                    .map(|i| raw.remove(i).1);
                (key, v)
            };
            let (rkey, reg) = take("regularizer");
            let (ckey, cons) = take("constraint");
            let reg = reg
                .map(|v| regularizer(&v).map_err(|m| at(&rkey, m)))
                .transpose()?;
            let cons = cons
                .map(|v| constraint(&v, p.shape.len()).map_err(|m| at(&ckey, m)))
                .transpose()?;
            if reg.is_some() || cons.is_some() {
                cfg.restrict(p, reg, cons)?;
            }
        }
        if let Some((key, _)) = raw.first() {
            return Err(at(key, "the layer has no such parameter".into()));
        }
    }
    Ok(())
}

/// `[null, H, W, C]` (or `[H, W, C]`) as (H, W, C).
fn dims(v: &Value) -> Result<[usize; 3], String> {
    let a = v
        .as_array()
        .ok_or_else(|| format!("input shape {v} is not a list"))?;
    let a = if a.len() == 4 { &a[1..] } else { &a[..] };
    let n: Vec<Option<usize>> = a
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
        })
        .collect();
    match n.as_slice() {
        [Some(h), Some(w), Some(c)] => Ok([*h, *w, *c]),
        _ => Err(format!(
            "input shape {v} is not supported: clampnet trains images of a fixed (H, W, C), such as [null, 28, 28, 1]"
        )),
    }
}

fn input_shape(map: &Map<String, Value>) -> Result<[usize; 3], String> {
    let s = map
        .get("batch_shape")
        .or_else(|| map.get("batch_input_shape"))
        .ok_or("the InputLayer has no batch_shape")?;
    if let Some(d) = map.get("dtype").and_then(Value::as_str) {
        if d != "float32" {
            return Err(format!("input dtype \"{d}\" is not supported (float32)"));
        }
    }
    if map.get("sparse").and_then(Value::as_bool) == Some(true) {
        return Err("sparse inputs are not supported".into());
    }
    dims(s)
}

/// What every layer may carry that clampnet does not train: frozen layers, other dtypes, activity
/// regularizers, a layer's own custom class.
fn common_keys(c: &LayerConfig, l: &Value) -> Result<(), String> {
    if let Some(r) = l.get("registered_name").and_then(Value::as_str) {
        if !r.is_empty() && r != c.class {
            return Err(format!(
                "the custom class \"{r}\" is not supported: clampnet cannot run a custom object's Python code (clampnet trains: {})",
                LayerSpec::keras_classes().join(", ")
            ));
        }
    }
    c.only("trainable", &[json!(true)])
        .map_err(|_| "trainable = false (a frozen layer) is not supported".to_string())?;
    let dtype = match c.get("dtype") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Object(o)) => o
            .get("config")
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str),
        Some(v) => return Err(format!("dtype {v} is not a known form")),
    };
    if let Some(d) = dtype.filter(|d| *d != "float32") {
        return Err(format!(
            "dtype policy \"{d}\" is not supported: clampnet trains float32"
        ));
    }
    c.only("activity_regularizer", &[])?;
    c.only("quantization_config", &[])?;
    Ok(())
}

/// The layer config's `<param>_regularizer` / `<param>_constraint` keys that are set.
fn collect_restrictions(map: &Map<String, Value>) -> Vec<(String, Value)> {
    map.iter()
        .filter(|(k, v)| {
            !v.is_null()
                && k.as_str() != "activity_regularizer"
                && (k.ends_with("_regularizer") || k.ends_with("_constraint"))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A Keras object reference: `{class_name, config, registered_name}`, or a bare name.
struct Object {
    class: String,
    config: Map<String, Value>,
    /// set for a custom (registered) class: "package>Class"
    registered: Option<String>,
}

/// Read a Keras object reference.
fn class_and_config(v: &Value) -> Result<Object, String> {
    match v {
        Value::String(s) => Ok(Object {
            class: s.clone(),
            config: Map::new(),
            registered: None,
        }),
        Value::Object(o) => {
            let class = o
                .get("class_name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{v} has no class_name"))?;
            let config = o
                .get("config")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let registered = o
                .get("registered_name")
                .and_then(Value::as_str)
                .map(str::to_string);
            Ok(Object {
                class: class.to_string(),
                config,
                registered,
            })
        }
        _ => Err(format!("{v} is not a Keras object")),
    }
}

fn number(config: &Map<String, Value>, key: &str, default: f64) -> Result<f64, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("{key} must be a number, got {v}")),
    }
}

fn regularizer(v: &Value) -> Result<RegularizerConfig, String> {
    let Object {
        class,
        config: c,
        registered,
    } = class_and_config(v)?;
    let custom = registered.as_deref().is_some_and(|r| r != class);
    let (l1, l2) = match class.as_str() {
        _ if custom => (f64::NAN, f64::NAN),
        "L1" | "l1" => (number(&c, "l1", 0.01)?, 0.0),
        "L2" | "l2" => (0.0, number(&c, "l2", 0.01)?),
        "L1L2" | "l1_l2" => (number(&c, "l1", 0.0)?, number(&c, "l2", 0.0)?),
        _ => (f64::NAN, f64::NAN),
    };
    if l1.is_nan() {
        return Err(format!(
            "the regularizer {} is not supported (supported: {REGULARIZERS}){}",
            registered.unwrap_or(class),
            if custom {
                "; clampnet cannot run a custom object's Python code"
            } else {
                ""
            }
        ));
    }
    let checked = |x: f64, k: &str| {
        if x >= 0.0 && x.is_finite() {
            Ok(x)
        } else {
            Err(format!("{k} must be a number >= 0, got {x}"))
        }
    };
    Ok(RegularizerConfig {
        l1: checked(l1, "l1")? as f32,
        l2: checked(l2, "l2")? as f32,
        proximal: false,
    })
}

/// Keras' `axis` (an int, negative from the end, or a list) for a tensor of rank `rank`.
fn axis(c: &Map<String, Value>, rank: usize) -> Result<Value, String> {
    let one = |v: &Value| -> Result<usize, String> {
        let a = v
            .as_i64()
            .ok_or_else(|| format!("axis {v} is not a whole number"))?;
        let r = rank as i64;
        if a >= r || a < -r {
            return Err(format!(
                "axis {a} is out of range for a tensor of rank {rank}"
            ));
        }
        Ok(if a < 0 { (a + r) as usize } else { a as usize })
    };
    Ok(match c.get("axis") {
        None | Some(Value::Null) => json!([0]),
        Some(Value::Array(a)) => json!(a.iter().map(one).collect::<Result<Vec<_>, _>>()?),
        Some(v) => json!([one(v)?]),
    })
}

fn constraint(v: &Value, rank: usize) -> Result<ConstraintConfig, String> {
    let Object {
        class,
        config: c,
        registered,
    } = class_and_config(v)?;
    let custom = registered.as_deref().filter(|r| *r != class);
    let table = match (class.as_str(), custom) {
        (_, Some(CLIP_CLASS)) => json!({ "clip": {
            "min": number(&c, "min_value", f64::NAN)?,
            "max": number(&c, "max_value", f64::NAN)?,
        } }),
        (_, Some(_)) => Value::Null,
        ("MaxNorm" | "max_norm", _) => json!({ "max_norm": {
            "max_value": number(&c, "max_value", 2.0)?, "axis": axis(&c, rank)?,
        } }),
        ("MinMaxNorm" | "min_max_norm", _) => json!({ "min_max_norm": {
            "min_value": number(&c, "min_value", 0.0)?,
            "max_value": number(&c, "max_value", 1.0)?,
            "rate": number(&c, "rate", 1.0)?,
            "axis": axis(&c, rank)?,
        } }),
        ("UnitNorm" | "unit_norm", _) => json!({ "unit_norm": { "axis": axis(&c, rank)? } }),
        ("NonNeg" | "non_neg", _) => json!("non_neg"),
        _ => Value::Null,
    };
    if table.is_null() {
        return Err(format!(
            "the constraint {} is not supported (supported: {CONSTRAINTS}){}",
            custom.unwrap_or(&class),
            if custom.is_some() {
                "; clampnet cannot run a custom object's Python code"
            } else {
                ""
            }
        ));
    }
    serde_json::from_value(table).map_err(|e| e.to_string())
}

/// `compile_config`: the optimizer (Adam) and the loss (sparse categorical cross-entropy on the
/// softmax's probabilities).
fn compile(cfg: &mut Config, cc: &Value) -> Result<(), String> {
    if let Some(opt) = cc.get("optimizer").filter(|o| !o.is_null()) {
        let Object {
            class,
            config: c,
            registered,
        } = class_and_config(opt)?;
        let name = class.to_lowercase();
        let method = Method::keras_default(&name)
            .filter(|_| registered.as_deref().is_none_or(|r| r == class));
        let Some(method) = method else {
            return Err(format!(
                "compile_config: the optimizer {} is not supported (supported: {OPTIMIZERS})",
                registered.unwrap_or(class)
            ));
        };
        let at = |m: String| format!("compile_config: optimizer {class}: {m}");
        let flag = |k: &str, ok: Value| match c.get(k) {
            None | Some(Value::Null) => Ok(()),
            Some(v) if *v == ok => Ok(()),
            Some(v) => Err(at(format!("{k} = {v} is not supported"))),
        };
        flag("amsgrad", json!(false))?;
        flag("use_ema", json!(false))?;
        flag("gradient_accumulation_steps", json!(1))?;
        flag("loss_scale_factor", json!(1.0))?;
        let own: &[&str] = match method {
            Method::Adam { .. } | Method::AdamW { .. } => &["beta_1", "beta_2", "epsilon"],
            Method::Sgd { .. } => &["momentum", "nesterov"],
            Method::RmsProp { .. } => &["rho", "momentum", "epsilon", "centered"],
        };
        let known = [
            "name",
            "learning_rate",
            "weight_decay",
            "clipnorm",
            "global_clipnorm",
            "clipvalue",
            "use_ema",
            "ema_momentum",
            "ema_overwrite_frequency",
            "loss_scale_factor",
            "gradient_accumulation_steps",
            "amsgrad",
        ];
        if let Some(k) = c
            .keys()
            .find(|k| !known.contains(&k.as_str()) && !own.contains(&k.as_str()))
        {
            return Err(at(format!(
                "`{k}` is not a setting of {class} (its settings: {})",
                own.join(", ")
            )));
        }
        let mut table = Map::new();
        table.insert("type".into(), json!(name));
        for &k in ["weight_decay", "clipnorm", "global_clipnorm", "clipvalue"]
            .iter()
            .chain(own)
        {
            if let Some(v) = c.get(k).filter(|v| !v.is_null()) {
                table.insert(k.into(), v.clone());
            }
        }
        if let Some(lr) = c.get("learning_rate").filter(|v| !v.is_null()) {
            table.insert("learning_rate".into(), learning_rate(lr).map_err(at)?);
        }
        let section: OptimizerSection = serde_json::from_value(Value::Object(table.clone()))
            .map_err(|e| {
                // name the key: the value checks' messages do not
                let culprit = table.iter().find(|(k, v)| {
                    let one = json!({ "type": name, k.as_str(): v });
                    *k != "type" && serde_json::from_value::<OptimizerSection>(one).is_err()
                });
                match culprit {
                    Some((k, _)) => at(format!("{k}: {e}")),
                    None => at(e.to_string()),
                }
            })?;
        cfg.optimizer = crate::config::optimizer(section).map_err(at)?;
    }
    if let Some(w) = cc.get("loss_weights").filter(|w| !w.is_null()) {
        if w.as_f64() != Some(1.0) {
            return Err(format!("compile_config: loss_weights {w} is not supported"));
        }
    }
    if let Some(l) = cc.get("loss").filter(|l| !l.is_null()) {
        cfg.loss = loss(l)?;
    }
    cfg.check_loss().map_err(|e| format!("compile_config: {e}"))
}

/// A Keras loss: a name, `{"class_name": "function", "config": name}` or a loss object.
fn loss(l: &Value) -> Result<LossSpec, String> {
    let Object {
        class,
        config: c,
        registered,
    } = class_and_config(l)?;
    let name = if class == "function" {
        l.get("config")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    } else {
        class.clone()
    };
    let kind = match name.as_str() {
        _ if registered.as_deref().is_some_and(|r| r != class) => None,
        "sparse_categorical_crossentropy" | "SparseCategoricalCrossentropy" => {
            Some(LossKind::Sparse)
        }
        "categorical_crossentropy" | "CategoricalCrossentropy" => Some(LossKind::Categorical),
        _ => None,
    };
    let Some(kind) = kind else {
        return Err(format!(
            "compile_config: the loss {} is not supported (supported: sparse_categorical_crossentropy, categorical_crossentropy)",
            registered.unwrap_or(name)
        ));
    };
    let bad = |k: &str, ok: &[Value]| match c.get(k) {
        None | Some(Value::Null) => None,
        Some(v) if ok.contains(v) => None,
        Some(v) => Some(format!(
            "compile_config: loss {name}: {k} = {v} is not supported"
        )),
    };
    if let Some(e) = bad("ignore_class", &[])
        .or_else(|| bad("axis", &[json!(-1)]))
        .or_else(|| bad("reduction", &[json!("sum_over_batch_size"), json!("auto")]))
    {
        return Err(e);
    }
    let from_logits = c
        .get("from_logits")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let label_smoothing = number(&c, "label_smoothing", 0.0)? as f32;
    Ok(LossSpec {
        kind,
        from_logits,
        label_smoothing,
    })
}

/// A Keras `learning_rate`: a number, or a schedule object as clampnet's `[optimizer.learning_rate]`
/// table.
fn learning_rate(v: &Value) -> Result<Value, String> {
    if v.is_number() {
        return Ok(v.clone());
    }
    let Object {
        class,
        config: mut c,
        registered,
    } = class_and_config(v)?;
    let kind = match class.as_str() {
        _ if registered.as_deref().is_some_and(|r| r != class) => None,
        "ExponentialDecay" => Some("exponential_decay"),
        "InverseTimeDecay" => Some("inverse_time_decay"),
        "CosineDecay" => Some("cosine_decay"),
        "PiecewiseConstantDecay" => Some("piecewise_constant_decay"),
        _ => None,
    };
    let Some(kind) = kind else {
        return Err(format!(
            "the learning-rate schedule {} is not supported (supported: {SCHEDULES})",
            registered.unwrap_or(class)
        ));
    };
    c.remove("name");
    c.retain(|_, v| !v.is_null());
    c.insert("type".into(), json!(kind));
    Ok(Value::Object(c))
}

/// Keras' `learning_rate` of `s`: the number, or the schedule object.
fn learning_rate_json(s: &Settings) -> Value {
    let lr = f64::from(s.lr);
    let f = f64::from;
    let (class, config) = match s.schedule {
        Schedule::Constant => return json!(lr),
        Schedule::ExponentialDecay {
            decay_steps,
            decay_rate,
            staircase,
        } => (
            "ExponentialDecay",
            json!({ "initial_learning_rate": lr, "decay_steps": f(decay_steps), "decay_rate": f(decay_rate), "staircase": staircase }),
        ),
        Schedule::InverseTimeDecay {
            decay_steps,
            decay_rate,
            staircase,
        } => (
            "InverseTimeDecay",
            json!({ "initial_learning_rate": lr, "decay_steps": f(decay_steps), "decay_rate": f(decay_rate), "staircase": staircase }),
        ),
        Schedule::CosineDecay {
            decay_steps,
            alpha,
            warmup_target,
            warmup_steps,
        } => (
            "CosineDecay",
            json!({ "initial_learning_rate": lr, "decay_steps": f(decay_steps), "alpha": f(alpha),
                    "warmup_target": warmup_target.map(f), "warmup_steps": f(warmup_steps) }),
        ),
        Schedule::PiecewiseConstantDecay {
            n,
            boundaries,
            values,
        } => (
            "PiecewiseConstantDecay",
            json!({ "boundaries": boundaries[..n], "values": values[..=n].iter().map(|&v| f(v)).collect::<Vec<_>>() }),
        ),
    };
    let mut config = config;
    config["name"] = json!(class);
    object("keras.optimizers.schedules", class, config)
}

/// Keras' loss object of `l`.
fn loss_json(l: &LossSpec) -> Value {
    let mut c = json!({ "name": l.keras_name(), "reduction": "sum_over_batch_size", "from_logits": l.from_logits });
    match l.kind {
        LossKind::Sparse => c["ignore_class"] = Value::Null,
        LossKind::Categorical => {
            c["label_smoothing"] = json!(f64::from(l.label_smoothing));
            c["axis"] = json!(-1);
        }
    }
    object("keras.losses", l.keras_class(), c)
}

/// Keras' optimizer object of `s`.
fn optimizer_json(s: &Settings) -> Value {
    let (clipnorm, global_clipnorm, clipvalue) = match s.clip {
        GradClip::None => (None, None, None),
        GradClip::Norm(v) => (Some(v), None, None),
        GradClip::GlobalNorm(v) => (None, Some(v), None),
        GradClip::Value(v) => (None, None, Some(v)),
    };
    let class = s.method.keras_class();
    let mut c = json!({
        "name": class.to_lowercase(), "learning_rate": learning_rate_json(s),
        "weight_decay": if s.weight_decay > 0.0 { Some(s.weight_decay) } else { None },
        "clipnorm": clipnorm, "global_clipnorm": global_clipnorm, "clipvalue": clipvalue,
        "use_ema": false, "ema_momentum": 0.99, "ema_overwrite_frequency": null,
        "loss_scale_factor": null, "gradient_accumulation_steps": null,
    });
    let own = match s.method {
        Method::Adam { beta1, beta2, eps } | Method::AdamW { beta1, beta2, eps } => {
            json!({ "beta_1": beta1, "beta_2": beta2, "epsilon": eps, "amsgrad": false })
        }
        Method::Sgd { momentum, nesterov } => json!({ "momentum": momentum, "nesterov": nesterov }),
        Method::RmsProp {
            rho,
            momentum,
            eps,
            centered,
        } => json!({ "rho": rho, "momentum": momentum, "epsilon": eps, "centered": centered }),
    };
    if let (Some(c), Value::Object(o)) = (c.as_object_mut(), own) {
        c.extend(o);
    }
    object("keras.optimizers", class, c)
}

/// A linear chain of a Functional model: each layer reads the one before it, the last is the output.
fn check_chain(config: &Map<String, Value>, layers: &[Value]) -> Result<(), String> {
    fn histories<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(h) = o.get("keras_history").and_then(Value::as_array) {
                    if let Some(n) = h.first().and_then(Value::as_str) {
                        out.push(n);
                    }
                }
                o.values().for_each(|x| histories(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| histories(x, out)),
            _ => {}
        }
    }
    let name = |l: &Value| {
        l.get("name")
            .or_else(|| l.get("config").and_then(|c| c.get("name")))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let not_chain = || {
        "this Functional model is not one chain of layers (each reading the one before it): clampnet trains sequential stacks".to_string()
    };
    for w in layers.windows(2) {
        let mut h = Vec::new();
        histories(w[1].get("inbound_nodes").unwrap_or(&Value::Null), &mut h);
        if h.len() != 1 || h[0] != name(&w[0]) {
            return Err(not_chain());
        }
    }
    let mut outs = Vec::new();
    histories(
        config.get("output_layers").unwrap_or(&Value::Null),
        &mut outs,
    );
    let listed = config
        .get("output_layers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .flat_map(|x| match x {
                    Value::Array(i) => i.first().and_then(Value::as_str),
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let last = layers.last().map(name).unwrap_or_default();
    if !(listed == [last.as_str()] || outs == [last.as_str()]) {
        return Err(not_chain());
    }
    Ok(())
}

/// The Keras JSON of `cfg`'s model (a Sequential named `name`) with its restrictions and, compiled,
/// its optimizer and loss. What Keras cannot express is written as near as it goes and said in
/// `warnings`.
pub fn model_json(cfg: &Config, name: &str, warnings: &mut Vec<String>) -> crate::Result<Value> {
    let plan = ModelPlan::new(&cfg.model)?;
    let [h, w, c] = cfg.model.input;
    let mut layers = vec![object(
        "keras.layers",
        "InputLayer",
        json!({ "batch_shape": [null, h, w, c], "dtype": "float32", "sparse": false,
                "ragged": false, "name": "input_layer", "optional": false }),
    )];
    for l in &plan.layers {
        let kind = l.spec.kind();
        let mut m = kind.keras_config(&l.name);
        for &pi in &l.params {
            let p = &plan.params[pi];
            if !p.trainable {
                continue;
            }
            let suffix = p.name.rsplit('.').next().unwrap_or("");
            let r = cfg.restrictions.get(&p.name);
            let reg = r.and_then(|r| r.regularizer).map(|g| {
                if g.proximal {
                    warnings.push(format!(
                        "{}: proximal L1 has no Keras equivalent: written as Keras' L1 (a gradient penalty)",
                        p.name
                    ));
                }
                regularizer_json(g)
            });
            let cons = match r.map(|r| r.constraints.as_slice()).unwrap_or(&[]) {
                [] => Value::Null,
                [one, rest @ ..] => {
                    if !rest.is_empty() {
                        warnings.push(format!(
                            "{}: Keras holds one constraint per tensor: only the first is written",
                            p.name
                        ));
                    }
                    constraint_json(one)
                }
            };
            if r.is_some_and(|r| !r.epoch_constraints.is_empty()) {
                warnings.push(format!(
                    "{}: a constraint applied once per epoch has no Keras equivalent: not written",
                    p.name
                ));
            }
            m.insert(format!("{suffix}_regularizer"), reg.unwrap_or(Value::Null));
            m.insert(format!("{suffix}_constraint"), cons);
        }
        let mut layer = object("keras.layers", kind.keras_class(), Value::Object(m));
        layer["build_config"] = json!({ "input_shape": keras_shape(l.input) });
        layers.push(layer);
    }
    let optimizer = optimizer_json(&cfg.optimizer);
    let input = json!([null, h, w, c]);
    Ok(json!({
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": name,
            "trainable": true,
            "dtype": object("keras", "DTypePolicy", json!({ "name": "float32" })),
            "layers": layers,
            "build_input_shape": input,
        },
        "registered_name": null,
        "build_config": { "input_shape": input },
        "compile_config": {
            "optimizer": optimizer,
            "loss": loss_json(&cfg.loss),
            "loss_weights": null,
            "metrics": ["accuracy"],
            "weighted_metrics": null,
            "run_eagerly": false,
            "steps_per_execution": 1,
            "jit_compile": false,
        },
    }))
}

fn keras_shape(s: crate::model::Shape) -> Value {
    match s {
        crate::model::Shape::Spatial { h, w, c } => json!([null, h, w, c]),
        crate::model::Shape::Flat(n) => json!([null, n]),
    }
}

fn regularizer_json(r: Regularizer) -> Value {
    let (l1, l2) = (f64::from(r.l1), f64::from(r.l2));
    if r.l2 == 0.0 {
        object("keras.regularizers", "L1", json!({ "l1": l1 }))
    } else if r.l1 == 0.0 {
        object("keras.regularizers", "L2", json!({ "l2": l2 }))
    } else {
        object("keras.regularizers", "L1L2", json!({ "l1": l1, "l2": l2 }))
    }
}

fn constraint_json(c: &Constraint) -> Value {
    let f = |x: f32| f64::from(x);
    match c {
        Constraint::ClipByValue { lo, hi } => json!({
            "module": "clampnet_keras", "class_name": "ClipByValue",
            "config": { "min_value": f(*lo), "max_value": f(*hi) },
            "registered_name": CLIP_CLASS,
        }),
        Constraint::UnitNorm { axes } => {
            object("keras.constraints", "UnitNorm", json!({ "axis": axes }))
        }
        Constraint::MaxNorm { max_value, axes } => object(
            "keras.constraints",
            "MaxNorm",
            json!({ "max_value": f(*max_value), "axis": axes }),
        ),
        Constraint::MinMaxNorm {
            min_value,
            max_value,
            rate,
            axes,
        } => object(
            "keras.constraints",
            "MinMaxNorm",
            json!({ "min_value": f(*min_value), "max_value": f(*max_value), "rate": f(*rate), "axis": axes }),
        ),
        Constraint::NonNeg => object("keras.constraints", "NonNeg", json!({})),
    }
}
