//! BatchNormalization over the channels (the last axis), Keras' semantics with TensorFlow: in a
//! training step the batch's mean and biased variance normalise it and update the moving statistics
//! (moving = moving * momentum + batch * (1 - momentum), in the forward pass); in inference the moving
//! statistics normalise it. gamma and beta are trainable (with `gamma_/beta_` regularizers and
//! constraints); the moving mean and variance are not: the optimizer never touches them, checkpoints
//! and Keras files keep them. Shader: shaders/batch_norm.wgsl. Twin: `reference::batch_norm`.
//!
//! On the GPU, training: bn_stats (one workgroup per channel) -> bn_forward (per element); backward:
//! bn_backward_reduce (per channel: dgamma, dbeta) -> bn_backward_input (per element). Inference:
//! bn_forward alone, from the moving statistics.

use serde::Deserialize;

use super::{Build, Io, Layer, Op, OpOutput, ParamRestriction, TwinForward};
use crate::config::{ConstraintConfig, RegularizerConfig};
use crate::error::Result;
use crate::gpu::{Buffer, KernelDef, Recorder, Shader};
use crate::keras::{self, object, FromKeras, LayerConfig};
use crate::model::fuse::OpPlan;
use crate::model::{Init, LayerPlan, ParamDecl, ParamSpec, Role, Shape};
use crate::reference as twin;
use serde_json::{json, Map, Value};

fn minus_one() -> i64 {
    -1
}
fn momentum() -> f32 {
    0.99
}
fn epsilon() -> f32 {
    1e-3
}
fn yes() -> bool {
    true
}

/// Keras' `BatchNormalization(axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
/// beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNormalization {
    /// the normalised axis: the channels, -1 (or its index counting the batch: 3 on images, 1 on
    /// flat features)
    #[serde(default = "minus_one")]
    pub axis: i64,
    #[serde(default = "momentum")]
    pub momentum: f32,
    #[serde(default = "epsilon")]
    pub epsilon: f32,
    /// learn beta
    #[serde(default = "yes")]
    pub center: bool,
    /// learn gamma
    #[serde(default = "yes")]
    pub scale: bool,
    #[serde(default)]
    pub gamma_regularizer: Option<RegularizerConfig>,
    #[serde(default)]
    pub beta_regularizer: Option<RegularizerConfig>,
    #[serde(default)]
    pub gamma_constraint: Option<ConstraintConfig>,
    #[serde(default)]
    pub beta_constraint: Option<ConstraintConfig>,
}

impl Default for BatchNormalization {
    fn default() -> Self {
        BatchNormalization {
            axis: -1,
            momentum: momentum(),
            epsilon: epsilon(),
            center: true,
            scale: true,
            gamma_regularizer: None,
            beta_regularizer: None,
            gamma_constraint: None,
            beta_constraint: None,
        }
    }
}

impl BatchNormalization {
    pub fn new() -> Self {
        Self::default()
    }

    /// (rows, channels) of `batch` examples of `input`.
    fn rows(input: Shape, batch: usize) -> (usize, usize) {
        let c = channels(input);
        (batch * input.len() / c, c)
    }

    /// The layer's weights (in its weight order) by role.
    fn split<'w>(&self, w: &[&'w [f64]]) -> BnWeights<'w> {
        let mut i = 0;
        let mut next = || {
            i += 1;
            w[i - 1]
        };
        let gamma = self.scale.then(&mut next);
        let beta = self.center.then(&mut next);
        BnWeights {
            gamma,
            beta,
            mean: next(),
            var: next(),
        }
    }

    fn gamma_beta(&self, c: usize, w: &[&[f64]]) -> (Vec<f64>, Vec<f64>) {
        let BnWeights { gamma, beta, .. } = self.split(w);
        (
            gamma.map_or(vec![1.0; c], <[f64]>::to_vec),
            beta.map_or(vec![0.0; c], <[f64]>::to_vec),
        )
    }
}

/// A batch norm's weights by role (gamma and beta absent without `scale` / `center`).
struct BnWeights<'w> {
    gamma: Option<&'w [f64]>,
    beta: Option<&'w [f64]>,
    mean: &'w [f64],
    var: &'w [f64],
}

/// The channels: the last axis.
fn channels(s: Shape) -> usize {
    match s {
        Shape::Spatial { c, .. } => c,
        Shape::Flat(n) => n,
    }
}

/// Keras' `BatchNormalization` over the last axis, not synchronized, without renormalization.
impl FromKeras for BatchNormalization {
    const CLASS: &'static str = "BatchNormalization";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        let axis = match c.get("axis") {
            None => -1,
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_i64() => a[0].as_i64().unwrap_or(-1),
            Some(v) if v.is_i64() => v.as_i64().unwrap_or(-1),
            Some(v) => return Err(format!("axis = {v} is not supported (clampnet normalises one axis: the channels, -1)")),
        };
        let number = |key: &str, default: f32| -> std::result::Result<f32, String> {
            match c.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| format!("{key} must be a number, got {v}")),
            }
        };
        let flag = |key: &str| -> std::result::Result<bool, String> {
            match c.get(key) {
                None => Ok(true),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| format!("{key} must be true or false, got {v}")),
            }
        };
        c.only("synchronized", &[json!(false)])?;
        c.only("renorm", &[json!(false)])?;
        let b = BatchNormalization {
            axis,
            momentum: number("momentum", momentum())?,
            epsilon: number("epsilon", epsilon())?,
            center: flag("center")?,
            scale: flag("scale")?,
            ..Default::default()
        };
        b.check().map(|_| b)
    }
}

impl BatchNormalization {
    /// The settings that do not depend on the input.
    fn check(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(format!(
                "momentum = {} must be in [0, 1] (Keras' default 0.99)",
                self.momentum
            ));
        }
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(format!(
                "epsilon = {} must be > 0 (Keras' default 1e-3)",
                self.epsilon
            ));
        }
        Ok(())
    }
}

impl Layer for BatchNormalization {
    fn keras_name(&self) -> &'static str {
        "batch_normalization"
    }

    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        let mut m = keras::base(name);
        m.insert("axis".into(), json!(-1));
        m.insert("momentum".into(), json!(self.momentum));
        m.insert("epsilon".into(), json!(self.epsilon));
        m.insert("center".into(), json!(self.center));
        m.insert("scale".into(), json!(self.scale));
        let init = |class: &str| object("keras.initializers", class, json!({}));
        m.insert("beta_initializer".into(), init("Zeros"));
        m.insert("gamma_initializer".into(), init("Ones"));
        m.insert("moving_mean_initializer".into(), init("Zeros"));
        m.insert("moving_variance_initializer".into(), init("Ones"));
        m.insert("synchronized".into(), json!(false));
        m
    }

    fn output(&self, input: Shape, _last: bool) -> std::result::Result<Shape, String> {
        self.check()?;
        // the axes of the input with the batch: (N, H, W, C) or (N, F)
        let rank = match input {
            Shape::Spatial { .. } => 4,
            Shape::Flat(_) => 2,
        };
        if self.axis != -1 && self.axis != rank - 1 {
            return Err(format!(
                "axis = {} is not the channel axis of its input of rank {rank} with the batch ({}): clampnet \
                 normalises the last axis (axis = -1{})",
                self.axis,
                match input {
                    Shape::Spatial { h, w, c } => format!("(None, {h}, {w}, {c})"),
                    Shape::Flat(n) => format!("(None, {n})"),
                },
                if rank == 4 { ", or 3" } else { ", or 1" }
            ));
        }
        Ok(input)
    }

    fn params(&self, input: Shape) -> Vec<ParamDecl> {
        let c = channels(input);
        let decl = |suffix, role, init, trainable| ParamDecl {
            suffix,
            role,
            shape: vec![c],
            init,
            trainable,
        };
        let mut p = Vec::new();
        if self.scale {
            p.push(decl("gamma", Role::Scale, Init::Ones, true));
        }
        if self.center {
            p.push(decl("beta", Role::Shift, Init::Zeros, true));
        }
        p.push(decl("moving_mean", Role::Statistic, Init::Zeros, false));
        p.push(decl("moving_variance", Role::Statistic, Init::Ones, false));
        p
    }

    fn macs(&self, input: Shape, _output: Shape) -> f64 {
        input.len() as f64
    }

    fn take_restrictions(&mut self) -> Vec<ParamRestriction> {
        vec![
            (
                "gamma",
                self.gamma_regularizer.take(),
                self.gamma_constraint.take(),
            ),
            (
                "beta",
                self.beta_regularizer.take(),
                self.beta_constraint.take(),
            ),
        ]
    }

    fn twin_forward(&self, l: &LayerPlan, batch: usize, x: &[f64], w: &[&[f64]]) -> TwinForward {
        let (_, c) = Self::rows(l.input, batch);
        let BnWeights { mean, var, .. } = self.split(w);
        let (gamma, beta) = self.gamma_beta(c, w);
        TwinForward {
            y: twin::bn_apply(c, x, (mean, var), (&gamma, &beta), self.epsilon as f64),
            ..Default::default()
        }
    }

    fn twin_forward_train(
        &self,
        l: &LayerPlan,
        batch: usize,
        x: &[f64],
        w: &[&[f64]],
        _step: (u64, u64),
    ) -> TwinForward {
        let (rows, c) = Self::rows(l.input, batch);
        let BnWeights {
            mean: moving_mean,
            var: moving_var,
            ..
        } = self.split(w);
        let (gamma, beta) = self.gamma_beta(c, w);
        let (mean, var) = twin::bn_moments(rows, c, x);
        let m = self.momentum as f64;
        TwinForward {
            y: twin::bn_apply(c, x, (&mean, &var), (&gamma, &beta), self.epsilon as f64),
            state: Some(vec![
                twin::bn_moving(moving_mean, &mean, m),
                twin::bn_moving(moving_var, &var, m),
            ]),
            ..Default::default()
        }
    }

    fn twin_backward(
        &self,
        l: &LayerPlan,
        batch: usize,
        x: &[f64],
        w: &[&[f64]],
        _fwd: &TwinForward,
        dy: &[f64],
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let (rows, c) = Self::rows(l.input, batch);
        let (gamma, _) = self.gamma_beta(c, w);
        let (dgamma, dbeta, dx) = twin::bn_backward(rows, c, x, &gamma, self.epsilon as f64, dy);
        let mut grads = Vec::new();
        if self.scale {
            grads.push(dgamma);
        }
        if self.center {
            grads.push(dbeta);
        }
        grads.push(vec![0.0; c]);
        grads.push(vec![0.0; c]);
        (grads, dx)
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        let c = channels(plan.input);
        Ok(Box::new(BnOp {
            name: plan.name.clone(),
            spec: self.clone(),
            channels: c,
            positions: plan.input.len() / c,
            params: plan.params.clone(),
            out: b.outputs(plan, false)?,
            stats: b
                .ctx
                .storage_checked(&format!("{} batch statistics", plan.name), (4 * c * 4) as u64)?,
        }))
    }
}

pub static SHADER: Shader = crate::shader!("batch_norm.wgsl");

pub static STATS: KernelDef = KernelDef {
    name: "BatchNormStats",
    shader: &SHADER,
    entry: "bn_stats",
    constants: &[],
    gated: false,
};
pub static FORWARD: KernelDef = KernelDef {
    name: "BatchNormForward",
    shader: &SHADER,
    entry: "bn_forward",
    constants: &[],
    gated: false,
};
pub static BACKWARD_REDUCE: KernelDef = KernelDef {
    name: "BatchNormBackwardReduce",
    shader: &SHADER,
    entry: "bn_backward_reduce",
    constants: &[],
    gated: false,
};
pub static BACKWARD_INPUT: KernelDef = KernelDef {
    name: "BatchNormBackwardInput",
    shader: &SHADER,
    entry: "bn_backward_input",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&STATS, &FORWARD, &BACKWARD_REDUCE, &BACKWARD_INPUT];

/// The uniform of batch_norm.wgsl, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BnParams {
    pub rows: u32,
    pub c: u32,
    /// a training step: batch statistics (else the moving ones)
    pub training: u32,
    pub has_gamma: u32,
    pub has_beta: u32,
    /// offsets of the tensors in the layer's span of the parameters (and gradients)
    pub gamma_at: u32,
    pub beta_at: u32,
    pub mean_at: u32,
    pub var_at: u32,
    pub momentum: f32,
    /// 1 - momentum, computed in f64 as Keras' Python does
    pub one_minus_momentum: f32,
    pub epsilon: f32,
}
const _: () = assert!(std::mem::size_of::<BnParams>() == 48);

struct BnOp {
    name: String,
    spec: BatchNormalization,
    channels: usize,
    /// positions per example (height x width; 1 on flat features)
    positions: usize,
    /// the layer's tensors, in its weight order
    params: Vec<ParamSpec>,
    out: OpOutput,
    /// [4, C]: batch mean, 1/sqrt(var + eps), sum(dy), sum(dy * xhat)
    stats: Buffer,
}

impl BnOp {
    /// The layer's span of the flat buffers: (first element, length).
    fn span(&self) -> (usize, usize) {
        let first = self.params[0].offset;
        let last = self.params.last().expect("a batch norm has its statistics");
        (first, last.offset + last.len - first)
    }

    fn uniform(&self, r: &mut Recorder, rows: usize, training: bool) -> Buffer {
        let (first, _) = self.span();
        let at = |role: Role, nth: usize| -> u32 {
            self.params
                .iter()
                .filter(|p| p.role == role)
                .nth(nth)
                .map_or(0, |p| (p.offset - first) as u32)
        };
        let s = &self.spec;
        let p = BnParams {
            rows: (rows * self.positions) as u32,
            c: self.channels as u32,
            training: training as u32,
            has_gamma: s.scale as u32,
            has_beta: s.center as u32,
            gamma_at: at(Role::Scale, 0),
            beta_at: at(Role::Shift, 0),
            mean_at: at(Role::Statistic, 0),
            var_at: at(Role::Statistic, 1),
            momentum: s.momentum,
            one_minus_momentum: (1.0 - s.momentum as f64) as f32,
            epsilon: s.epsilon,
        };
        r.uniform(&self.name, &p)
    }
}

impl Op for BnOp {
    fn out(&self) -> &OpOutput {
        &self.out
    }

    fn forward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let training = io.state.is_some();
        let u = self.uniform(r, rows, training);
        let (first, len) = self.span();
        if training {
            r.dispatch(&STATS)
                .bind("P", &u)
                .bind("x", io.x)
                .span("w", io.params, first, len)
                .bind("stats", &self.stats)
                .grid((self.channels as u32, 1, 1));
        }
        let grid = r.grid_1d(rows * self.positions * self.channels, 64);
        r.dispatch(&FORWARD)
            .bind("P", &u)
            .bind("x", io.x)
            .span("w", io.params, first, len)
            .bind("stats", &self.stats)
            .bind("y", &self.out.y)
            .grid(grid);
    }

    fn backward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let u = self.uniform(r, rows, true);
        let (first, len) = self.span();
        let dy = self.out.dy();
        r.dispatch(&BACKWARD_REDUCE)
            .bind("P", &u)
            .bind("x", io.x)
            .bind("stats", &self.stats)
            .bind("dy", dy)
            .span("g", io.grads(), first, len)
            .grid((self.channels as u32, 1, 1));
        if let Some(dx) = io.dx {
            let grid = r.grid_1d(rows * self.positions * self.channels, 64);
            r.dispatch(&BACKWARD_INPUT)
                .bind("P", &u)
                .bind("x", io.x)
                .span("w", io.params, first, len)
                .bind("stats", &self.stats)
                .bind("dy", dy)
                .bind("dx", dx)
                .grid(grid);
        }
    }
}
