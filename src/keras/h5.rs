//! Keras 3's weights file (`model.weights.h5`, inside a `.keras` zip or alone as `.weights.h5`), through
//! the pure-Rust `hdf5-pure` crate. The layout Keras 3 writes:
//!
//! ```text
//! layers/<layer name>/vars/<i>   float32, the layer's variables in Keras' order (kernel, bias)
//! optimizer/vars/0               int64 scalar, `iterations`
//! optimizer/vars/1               float32 scalar, `learning_rate` (absent with a schedule)
//! optimizer/vars/2, 3, ...       the slots: Adam's momentum, velocity of each trainable variable in
//!                                turn (interleaved); SGD's and RMSprop's one slot after the other

//! vars                           the model's own (none)
//! ```
//! every `vars` group with a string attribute `name` (a layer's: its own name). A layer's group is not
//! its name but its class's, snake_case, numbered in order (`conv2d`, `conv2d_1`, `max_pooling2d`, ...):
//! Keras' auto-names, which clampnet's plan gives layers that have no name of their own. Shapes are checked against the model before any
//! tensor is read, so a file cannot make clampnet allocate more than the model's own size.

use hdf5_pure::{AttrValue, Datatype, File, FileBuilder, GroupBuilder};

use crate::model::ModelPlan;

/// An optimizer's state in Keras' form.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerVars {
    /// optimizer steps done
    pub iterations: u64,
    /// the `learning_rate` variable (None: a schedule, which has none)
    pub learning_rate: Option<f32>,
    /// [slot][parameter], slots in `Method::slot_names` order, parameters in the plan's
    pub slots: Vec<Vec<Vec<f32>>>,
    /// Keras' variable order: the slots interleaved per parameter (Adam) or one after the other
    pub interleaved: bool,
}

/// Where the optimizer variable of `slot` of parameter `p` is, after the `base` variables.
fn slot_index(
    base: usize,
    slot: usize,
    p: usize,
    slots: usize,
    params: usize,
    interleaved: bool,
) -> usize {
    if interleaved {
        base + p * slots + slot
    } else {
        base + slot * params + p
    }
}

fn open(bytes: Vec<u8>) -> Result<File, String> {
    if bytes.len() < 8 || &bytes[..8] != b"\x89HDF\r\n\x1a\n" {
        return Err("not an HDF5 file (no HDF5 signature)".into());
    }
    File::from_bytes(bytes).map_err(|e| {
        format!("not a readable HDF5 file ({e}); was it truncated or written by another tool?")
    })
}

/// Each layer's group under `layers/`, in the plan's order.
pub fn layer_paths(plan: &ModelPlan) -> Vec<String> {
    let mut counts = std::collections::HashMap::new();
    plan.layers
        .iter()
        .map(|l| {
            let base = l.spec.kind().keras_name();
            let n = counts.entry(base).or_insert(0usize);
            let path = if *n == 0 {
                base.to_string()
            } else {
                format!("{base}_{n}")
            };
            *n += 1;
            path
        })
        .collect()
}

/// An HDF5 error on reading `what`, with the usual cause.
fn unreadable(what: &str, e: hdf5_pure::Error) -> String {
    format!("{what}: not readable ({e}); was the file truncated or written by another tool?")
}

fn is_group(f: &File, path: &str) -> bool {
    f.group(path).is_ok()
}

/// One float32 dataset of shape `shape`.
fn tensor(f: &File, path: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
    let d = f.dataset(path).map_err(|e| unreadable(path, e))?;
    let got: Vec<usize> = d
        .shape()
        .map_err(|e| unreadable(path, e))?
        .iter()
        .map(|&n| n as usize)
        .collect();
    if got != shape {
        return Err(format!(
            "{path} has shape {got:?}, the model needs {shape:?}"
        ));
    }
    match d.datatype() {
        Ok(Datatype::FloatingPoint { size: 4, .. }) => {}
        Ok(t) => return Err(format!("{path} is {t:?}, expected float32")),
        Err(e) => return Err(unreadable(path, e)),
    }
    let v = d.read_f32().map_err(|e| unreadable(path, e))?;
    if v.len() != shape.iter().product::<usize>() {
        return Err(format!("{path}: {} values for shape {shape:?}", v.len()));
    }
    Ok(v)
}

/// The model's weights (the plan's parameter order) from a Keras weights file.
pub fn read_weights(bytes: Vec<u8>, plan: &ModelPlan) -> Result<Vec<Vec<f32>>, String> {
    let f = open(bytes)?;
    read_weights_from(&f, plan)
}

fn read_weights_from(f: &File, plan: &ModelPlan) -> Result<Vec<Vec<f32>>, String> {
    if is_group(f, "model_weights")
        || f.root()
            .attrs()
            .is_ok_and(|a| a.contains_key("layer_names"))
    {
        return Err("a Keras 2 (legacy) HDF5 file: load it in Keras 3 and save it again with `model.save(\"model.keras\")` or `model.save_weights(\"model.weights.h5\")`".into());
    }
    let layers = f
        .group("layers")
        .map_err(|_| "not a Keras 3 weights file: it has no `layers` group".to_string())?;
    let in_file = layers.groups().map_err(|e| unreadable("layers", e))?;
    let paths = layer_paths(plan);
    for name in &in_file {
        let known = paths.contains(name);
        let has_vars = f
            .group(&format!("layers/{name}/vars"))
            .and_then(|g| g.datasets())
            .is_ok_and(|d| !d.is_empty());
        if !known && has_vars {
            return Err(format!(
                "the file has weights for a layer '{name}', which the model does not have (its layers, by class: {})",
                paths.join(", ")
            ));
        }
    }
    let mut out = Vec::new();
    for (l, path) in plan.layers.iter().zip(&paths) {
        if l.params.is_empty() {
            continue;
        }
        let vars = format!("layers/{path}/vars");
        let g = f.group(&vars).map_err(|_| {
            format!(
                "the file has no weights for layer '{}' (at layers/{path}; it has: {})",
                l.name,
                in_file.join(", ")
            )
        })?;
        let n = g.datasets().map_err(|e| unreadable(&vars, e))?.len();
        if n != l.params.len() {
            return Err(format!(
                "layer '{}' has {n} weights in the file, the model's layer has {}",
                l.name,
                l.params.len()
            ));
        }
        for (i, &pi) in l.params.iter().enumerate() {
            let p = &plan.params[pi];
            out.push(
                tensor(f, &format!("{vars}/{i}"), &p.shape)
                    .map_err(|e| format!("{}: {e}", p.name))?,
            );
        }
    }
    Ok(out)
}

/// What the optimizer's variables in a file look like: its slot count, their order, whether there is
/// a `learning_rate` variable (a constant rate).
#[derive(Clone, Copy, Debug)]
pub struct OptimizerLayout {
    pub slots: usize,
    pub interleaved: bool,
    pub learning_rate: bool,
}

impl OptimizerLayout {
    pub fn of(s: &crate::optim::Settings) -> Self {
        OptimizerLayout {
            slots: s.method.slot_names().len(),
            interleaved: s.method.keras_interleaved(),
            learning_rate: s.schedule == crate::optim::Schedule::Constant,
        }
    }
}

/// The model's weights and, when the file holds it for this model and optimizer, the optimizer's
/// state: one parse.
pub fn read(
    bytes: Vec<u8>,
    plan: &ModelPlan,
    layout: OptimizerLayout,
) -> Result<(Vec<Vec<f32>>, Option<OptimizerVars>), String> {
    let f = open(bytes)?;
    Ok((
        read_weights_from(&f, plan)?,
        optimizer_from(&f, plan, layout)?,
    ))
}

/// The optimizer's state, when the file holds it for this model (None: no optimizer variables, or
/// another optimizer's).
pub fn read_optimizer(
    bytes: Vec<u8>,
    plan: &ModelPlan,
    layout: OptimizerLayout,
) -> Result<Option<OptimizerVars>, String> {
    optimizer_from(&open(bytes)?, plan, layout)
}

fn optimizer_from(
    f: &File,
    plan: &ModelPlan,
    layout: OptimizerLayout,
) -> Result<Option<OptimizerVars>, String> {
    let Ok(g) = f.group("optimizer/vars") else {
        return Ok(None);
    };
    let n = g
        .datasets()
        .map_err(|e| unreadable("optimizer/vars", e))?
        .len();
    let base = 1 + layout.learning_rate as usize;
    // Keras keeps slots for the trainable variables only (not BatchNormalization's moving statistics)
    let params = plan.params.iter().filter(|p| p.trainable).count();
    if n != base + layout.slots * params {
        return Ok(None);
    }
    let d = f
        .dataset("optimizer/vars/0")
        .map_err(|e| unreadable("optimizer/vars/0", e))?;
    let iterations = match (d.shape(), d.datatype()) {
        (Ok(s), Ok(Datatype::FixedPoint { size: 8, .. })) if s.is_empty() => d
            .read_i64()
            .ok()
            .and_then(|v| v.first().copied())
            .and_then(|i| u64::try_from(i).ok())
            .ok_or("optimizer/vars/0 (iterations) is not readable")?,
        _ => return Err("optimizer/vars/0 (iterations) is not an int64 scalar".into()),
    };
    let learning_rate = match layout.learning_rate {
        true => Some(tensor(f, "optimizer/vars/1", &[])?[0]),
        false => None,
    };
    let mut slots = Vec::new();
    for slot in 0..layout.slots {
        let mut tensors = Vec::new();
        let mut i = 0;
        for p in &plan.params {
            if !p.trainable {
                tensors.push(vec![0.0; p.len]);
                continue;
            }
            let k = slot_index(base, slot, i, layout.slots, params, layout.interleaved);
            tensors.push(tensor(f, &format!("optimizer/vars/{k}"), &p.shape)?);
            i += 1;
        }
        slots.push(tensors);
    }
    Ok(Some(OptimizerVars {
        iterations,
        learning_rate,
        slots,
        interleaved: layout.interleaved,
    }))
}

fn vars(parent: &mut GroupBuilder, name: &str) -> GroupBuilder {
    let mut v = parent.create_group("vars");
    v.set_attr("name", AttrValue::VarLenString(name.into()));
    v
}

fn dims(shape: &[usize]) -> Vec<u64> {
    shape.iter().map(|&n| n as u64).collect()
}

/// A Keras weights file of the model `model_name` (`weights` in the plan's order), with the optimizer's
/// state (named `optimizer_name`: Keras' "adam", "sgd", ...) when given: `model.load_weights` takes it,
/// and so does a `.keras` file.
pub fn write(
    plan: &ModelPlan,
    model_name: &str,
    optimizer_name: &str,
    weights: &[Vec<f32>],
    optimizer: Option<&OptimizerVars>,
) -> Result<Vec<u8>, String> {
    if weights.len() != plan.params.len() {
        return Err(format!(
            "{} tensors for a model of {}",
            weights.len(),
            plan.params.len()
        ));
    }
    let mut b = FileBuilder::new();
    let mut layers = b.create_group("layers");
    for (l, path) in plan.layers.iter().zip(layer_paths(plan)) {
        let mut g = layers.create_group(&path);
        let mut v = vars(&mut g, &l.name);
        for (i, &pi) in l.params.iter().enumerate() {
            let p = &plan.params[pi];
            v.create_dataset(&i.to_string())
                .with_f32_data(&weights[pi])
                .with_shape(&dims(&p.shape));
        }
        g.add_group(v.finish());
        layers.add_group(g.finish());
    }
    b.add_group(layers.finish());
    if let Some(o) = optimizer {
        let mut g = b.create_group("optimizer");
        let mut v = vars(&mut g, optimizer_name);
        v.create_dataset("0")
            .with_i64_data(&[o.iterations.min(i64::MAX as u64) as i64])
            .with_shape(&[]);
        if let Some(lr) = o.learning_rate {
            v.create_dataset("1").with_f32_data(&[lr]).with_shape(&[]);
        }
        let base = 1 + o.learning_rate.is_some() as usize;
        let params = plan.params.iter().filter(|p| p.trainable).count();
        for (slot, tensors) in o.slots.iter().enumerate() {
            let trainable = plan.params.iter().zip(tensors).filter(|(p, _)| p.trainable);
            for (i, (p, t)) in trainable.enumerate() {
                let k = slot_index(base, slot, i, o.slots.len(), params, o.interleaved);
                v.create_dataset(&k.to_string())
                    .with_f32_data(t)
                    .with_shape(&dims(&p.shape));
            }
        }
        g.add_group(v.finish());
        b.add_group(g.finish());
    }
    let mut root = b.create_group("vars");
    root.set_attr("name", AttrValue::VarLenString(model_name.into()));
    b.add_group(root.finish());
    b.finish().map_err(|e| format!("writing HDF5: {e}"))
}
