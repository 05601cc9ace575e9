//! Activation layers: Keras' `Activation(name)`, `ReLU()`, `LeakyReLU(negative_slope)`, `ELU(alpha)`
//! and `Softmax()` as one kind, elementwise: relu, linear, tanh, sigmoid, elu, leaky_relu, with their
//! TensorFlow derivatives. A softmax layer may only end the model: it is then a view, and the loss
//! applies the softmax to its input (the logits), as it does for a dense layer's softmax. Shader:
//! shaders/activation.wgsl. Twin: `reference::activation`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Build, Io, Layer, Op, OpOutput, TwinForward};
use crate::error::Result;
use crate::gpu::{KernelDef, Recorder, Shader};
use crate::keras::{self, FromKeras, LayerConfig};
use crate::model::fuse::OpPlan;
use crate::model::{LayerPlan, Shape};
use crate::reference as twin;

/// An elementwise function, by Keras' name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Func {
    Relu,
    Linear,
    Tanh,
    Sigmoid,
    Elu,
    LeakyRelu,
    Softmax,
}

impl Func {
    fn code(self) -> u32 {
        match self {
            Func::Relu => 0,
            Func::Linear => 1,
            Func::Tanh => 2,
            Func::Sigmoid => 3,
            Func::Elu => 4,
            Func::LeakyRelu => 5,
            Func::Softmax => 6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Func::Relu => "relu",
            Func::Linear => "linear",
            Func::Tanh => "tanh",
            Func::Sigmoid => "sigmoid",
            Func::Elu => "elu",
            Func::LeakyRelu => "leaky_relu",
            Func::Softmax => "softmax",
        }
    }
}

/// Which Keras class the layer is (its file name in a `.keras` weights file follows the class).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum KerasClass {
    #[default]
    Activation,
    ReLU,
    LeakyReLU,
    ELU,
    Softmax,
}

/// `type = "activation"`, `activation = "tanh"` (and `alpha`: ELU's alpha, LeakyReLU's
/// negative_slope); `keras_class` the Keras class it is written as.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationLayer {
    pub activation: Func,
    #[serde(default)]
    pub alpha: Option<f32>,
    #[serde(default)]
    pub keras_class: KerasClass,
}

impl ActivationLayer {
    pub fn new(activation: Func) -> Self {
        ActivationLayer {
            activation,
            alpha: None,
            keras_class: KerasClass::Activation,
        }
    }

    /// ELU's alpha (1) or LeakyReLU's negative slope (Keras' layer default 0.3; the `leaky_relu`
    /// function's 0.2).
    pub fn alpha(&self) -> f32 {
        self.alpha.unwrap_or(match (self.activation, self.keras_class) {
            (Func::LeakyRelu, KerasClass::LeakyReLU) => 0.3,
            (Func::LeakyRelu, _) => 0.2,
            _ => 1.0,
        })
    }
}

impl FromKeras for ActivationLayer {
    const CLASS: &'static str = "Activation";
    const ALSO: &'static [&'static str] = &["ReLU", "LeakyReLU", "ELU", "Softmax"];

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        let number = |k: &str, d: f64| -> std::result::Result<f32, String> {
            match c.get(k) {
                None => Ok(d as f32),
                Some(v) => v
                    .as_f64()
                    .map(|x| x as f32)
                    .ok_or(format!("{k} must be a number, got {v}")),
            }
        };
        let (activation, alpha, keras_class) = match c.class {
            "ReLU" => {
                c.only("max_value", &[])?;
                c.only("negative_slope", &[json!(0.0), json!(0)])?;
                c.only("threshold", &[json!(0.0), json!(0)])?;
                (Func::Relu, None, KerasClass::ReLU)
            }
            "LeakyReLU" => {
                let slope = match c.get("negative_slope").or_else(|| c.get("alpha")) {
                    Some(v) => v.as_f64().ok_or(format!("negative_slope must be a number, got {v}"))? as f32,
                    None => 0.3,
                };
                (Func::LeakyRelu, Some(slope), KerasClass::LeakyReLU)
            }
            "ELU" => (Func::Elu, Some(number("alpha", 1.0)?), KerasClass::ELU),
            "Softmax" => {
                c.only("axis", &[json!(-1)])?;
                (Func::Softmax, None, KerasClass::Softmax)
            }
            _ => {
                let name = match c.get("activation") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => return Err(format!("activation {v} is not a known form")),
                    None => "linear".into(),
                };
                let f: Func = serde_json::from_value(json!(name)).map_err(|_| {
                    format!("activation \"{name}\" is not supported (supported: relu, linear, tanh, sigmoid, elu, leaky_relu, softmax)")
                })?;
                (f, None, KerasClass::Activation)
            }
        };
        Ok(ActivationLayer {
            activation,
            alpha,
            keras_class,
        })
    }
}

impl Layer for ActivationLayer {
    fn keras_name(&self) -> &'static str {
        match self.keras_class {
            KerasClass::Activation => "activation",
            KerasClass::ReLU => "re_lu",
            KerasClass::LeakyReLU => "leaky_re_lu",
            KerasClass::ELU => "elu",
            KerasClass::Softmax => "softmax",
        }
    }

    fn keras_class(&self) -> &'static str {
        match self.keras_class {
            KerasClass::Activation => "Activation",
            KerasClass::ReLU => "ReLU",
            KerasClass::LeakyReLU => "LeakyReLU",
            KerasClass::ELU => "ELU",
            KerasClass::Softmax => "Softmax",
        }
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        let mut m = keras::base(name);
        match self.keras_class {
            KerasClass::Activation => {
                m.insert("activation".into(), json!(self.activation.name()));
            }
            KerasClass::ReLU => {
                m.insert("max_value".into(), Value::Null);
                m.insert("negative_slope".into(), json!(0.0));
                m.insert("threshold".into(), json!(0.0));
            }
            KerasClass::LeakyReLU => {
                m.insert("negative_slope".into(), json!(f64::from(self.alpha())));
            }
            KerasClass::ELU => {
                m.insert("alpha".into(), json!(f64::from(self.alpha())));
            }
            KerasClass::Softmax => {
                m.insert("axis".into(), json!(-1));
            }
        }
        m
    }

    fn output(&self, input: Shape, last: bool) -> std::result::Result<Shape, String> {
        if self.activation == Func::Softmax && !last {
            return Err("a softmax activation layer can only end the model".into());
        }
        if self.activation != Func::LeakyRelu && self.activation != Func::Elu && self.alpha.is_some() {
            return Err("alpha is a setting of elu and leaky_relu".into());
        }
        Ok(input)
    }

    fn softmax_units(&self) -> Option<usize> {
        None
    }

    fn logits_output(&self) -> bool {
        self.activation == Func::Softmax
    }

    fn softmax_output(&self) -> bool {
        self.activation == Func::Softmax
    }

    fn is_view(&self) -> bool {
        // the last layer's softmax is the loss'
        self.activation == Func::Softmax
    }

    fn twin_forward(&self, _l: &LayerPlan, _batch: usize, x: &[f64], _w: &[&[f64]]) -> TwinForward {
        TwinForward {
            y: x.iter().map(|&v| twin::activation(self.activation.code(), self.alpha() as f64, v)).collect(),
            ..Default::default()
        }
    }

    fn twin_backward(
        &self,
        _l: &LayerPlan,
        _batch: usize,
        x: &[f64],
        _w: &[&[f64]],
        fwd: &TwinForward,
        dy: &[f64],
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let a = self.alpha() as f64;
        let dx = x
            .iter()
            .zip(&fwd.y)
            .zip(dy)
            .map(|((&v, &y), &d)| d * twin::activation_slope(self.activation.code(), a, v, y))
            .collect();
        (Vec::new(), dx)
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        elementwise_op(plan, b, self.activation.code(), self.alpha())
    }
}

/// The elementwise op of `plan` (an activation layer's, or a dense or conv layer's own tanh, sigmoid,
/// elu or leaky_relu, run after the layer's op).
pub fn elementwise_op(plan: &OpPlan, b: &Build, code: u32, alpha: f32) -> Result<Box<dyn Op>> {
    Ok(Box::new(ActivationOp {
        func: code,
        alpha,
        len: plan.output.len(),
        out: b.outputs(plan, false)?,
    }))
}

pub static SHADER: Shader = crate::shader!("activation.wgsl");

pub static FORWARD: KernelDef = KernelDef {
    name: "ActivationForward",
    shader: &SHADER,
    entry: "activation_forward",
    constants: &[],
    gated: false,
};
pub static BACKWARD: KernelDef = KernelDef {
    name: "ActivationBackward",
    shader: &SHADER,
    entry: "activation_backward",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&FORWARD, &BACKWARD];

/// Field for field with the WGSL `ActivationParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ActivationParams {
    pub n: u32,
    pub func: u32,
    pub alpha: f32,
    pub _pad0: u32,
}
const _: () = assert!(std::mem::size_of::<ActivationParams>() == 16);

struct ActivationOp {
    func: u32,
    alpha: f32,
    /// elements per example
    len: usize,
    out: OpOutput,
}

impl ActivationOp {
    /// The uniform and grid of a pass over `rows` examples.
    fn pass(&self, r: &mut Recorder, rows: usize) -> (crate::gpu::Buffer, (u32, u32, u32)) {
        let p = ActivationParams {
            n: (rows * self.len) as u32,
            func: self.func,
            alpha: self.alpha,
            ..Default::default()
        };
        (r.uniform("activation", &p), r.grid_1d(rows * self.len, 64))
    }
}

impl Op for ActivationOp {
    fn out(&self) -> &OpOutput {
        &self.out
    }

    fn forward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let (u, grid) = self.pass(r, rows);
        r.dispatch(&FORWARD)
            .bind("P", &u)
            .bind("x", io.x)
            .bind("y", &self.out.y)
            .grid(grid);
    }

    fn backward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let Some(dx) = io.dx else {
            return;
        };
        let (u, grid) = self.pass(r, rows);
        r.dispatch(&BACKWARD)
            .bind("P", &u)
            .bind("x", io.x)
            .bind("y", &self.out.y)
            .bind("dy", self.out.dy())
            .bind("dx", dx)
            .grid(grid);
    }
}
